# -*- test-case-name: ross.test.integration.test_cri_containers -*-
"""
A pod's containers: CreateContainer, StartContainer, StopContainer,
RemoveContainer, ListContainers, ContainerStatus and ExecSync over the
engine's containers, with Kubernetes' semantics: they join their
sandbox's network, IPC and UTS namespaces, log in the CRI's format where
kubelet says, and run with the security context they are given.
"""

from __future__ import annotations

import json
import os
import signal as signals
from typing import Any

import attrs
import grpc
from twisted.internet.defer import CancelledError, Deferred, DeferredQueue
from twisted.internet.threads import deferToThreadPool

from ross.cri.cni import CNI
from ross.cri.meta import CONTAINER, META_LABEL, NAMESPACE, SANDBOX, Meta, engine_name, meta_of, strings
from ross.cri.sandboxes import cri_records, find, labels_match, sandbox_status
from ross.cri.v1 import api_pb2
from ross.engine.containers import config as container_config
from ross.engine.containers.store import ContainerRecord
from ross.engine.containers.filters import NAMESPACE_LABEL
from ross.engine.engine import Engine
from ross.engine.events import Event, EventFilter
from ross.engine.runtime.spec import ExecProcess, Resources
from ross.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument, NotFound, Unimplemented
from ross.protocols.bridge import CallInfo, Outbound, Status
from ross.protocols.shim import ContainerStartError

#: The CFS period the CRI's quotas are of, in microseconds.
CPU_PERIOD = 100_000
#: The CRI caps what ExecSync returns of each stream (CVE-2022-1708).
EXEC_OUTPUT_LIMIT = 16 * 1024 * 1024
_PROPAGATION = {
    api_pb2.PROPAGATION_PRIVATE: "rprivate",
    api_pb2.PROPAGATION_HOST_TO_CONTAINER: "rslave",
    api_pb2.PROPAGATION_BIDIRECTIONAL: "rshared",
}
#: Events queued for a GetContainerEvents client before it is let go.
EVENTS_BEHIND = 4096
#: The engine's container events the CRI reports, and as what.
_EVENT_TYPES = {"create": api_pb2.CONTAINER_CREATED_EVENT, "start": api_pb2.CONTAINER_STARTED_EVENT,
                "die": api_pb2.CONTAINER_STOPPED_EVENT, "destroy": api_pb2.CONTAINER_DELETED_EVENT}
_STATES = {"created": api_pb2.CONTAINER_CREATED, "running": api_pb2.CONTAINER_RUNNING,
           "paused": api_pb2.CONTAINER_RUNNING, "restarting": api_pb2.CONTAINER_RUNNING,
           "exited": api_pb2.CONTAINER_EXITED, "dead": api_pb2.CONTAINER_EXITED}


def user_of(sc: api_pb2.LinuxContainerSecurityContext) -> str:
    """
    The engine's user ("name", "uid", "uid:gid") of a security context.
    """
    user = sc.run_as_username or (str(sc.run_as_user.value) if sc.HasField("run_as_user") else "")
    if sc.HasField("run_as_group"):
        if not user:
            raise InvalidArgument("run_as_group needs run_as_user or run_as_username")
        user += f":{sc.run_as_group.value}"
    return user


def _security_options(sc: api_pb2.LinuxContainerSecurityContext, localhost_profile: str | None) -> tuple[str, ...]:
    """
    no_new_privs as asked (Kubernetes' allowPrivilegeEscalation), and the
    seccomp profile: none unless asked for (kubelet's default) or for a
    privileged container (whatever its profile, as containerd), the
    builtin for RuntimeDefault, a file's for Localhost.
    """
    options = [f"no-new-privileges={'true' if sc.no_new_privs else 'false'}"]
    if sc.privileged:
        options.append("seccomp=unconfined")
    elif localhost_profile is not None:
        options.append(f"seccomp={localhost_profile}")
    elif not sc.HasField("seccomp") or sc.seccomp.profile_type == api_pb2.SecurityProfile.Unconfined:
        options.append("seccomp=unconfined")
    return tuple(options)


def _read_profile(path: str) -> str:
    if not os.path.isabs(path):
        raise InvalidArgument(f"invalid seccomp profile path {path[:256]!r}: must be absolute")
    try:
        with open(path) as f:
            return f.read()
    except OSError as e:
        raise InvalidArgument(f"cannot read seccomp profile {path[:256]}: {e.strerror}")


def _log_path(directory: str, name: str) -> str:
    """
    Where kubelet wants the container's log: C{name} inside the pod's log
    directory, never outside it ("" when either is not given).
    """
    if not directory or not name:
        return ""
    path = os.path.normpath(os.path.join(directory, name))
    if os.path.isabs(name) or not path.startswith(os.path.normpath(directory).rstrip("/") + "/"):
        raise InvalidArgument(f"invalid log path {name[:256]!r}: it must stay inside the pod's log directory")
    return path


def _mounts(mounts: Any) -> tuple[container_config.MountSpec, ...]:
    """
    The CRI's mounts as the engine's binds. Read-only is of the mount
    itself (its submounts keep their flags) unless recursive_read_only,
    which needs read-only and private propagation (kubelet's rules).
    """
    specs = []
    for m in mounts:
        if m.HasField("image") and m.image.image:
            # Kubernetes' image volumes (an image's files mounted
            # read-only): said so, not mistaken for a bad bind.
            raise Unimplemented(f"image volumes ({m.container_path[:256]!r}) are not supported")
        if not m.container_path or not m.host_path:
            raise InvalidArgument("a mount needs a container_path and a host_path")
        if m.propagation not in _PROPAGATION:
            raise InvalidArgument(f"invalid mount propagation {m.propagation}")
        if m.recursive_read_only and not m.readonly:
            raise InvalidArgument(f"invalid mount {m.container_path[:256]!r}: recursive read-only needs read-only")
        if m.recursive_read_only and m.propagation != api_pb2.PROPAGATION_PRIVATE:
            raise InvalidArgument(f"invalid mount {m.container_path[:256]!r}: "
                                  "recursive read-only needs private propagation")
        specs.append(container_config.MountSpec(type="bind", source=os.path.normpath(m.host_path),
                                                target=m.container_path,
                                   read_only=m.readonly, propagation=_PROPAGATION[m.propagation],
                                   read_only_non_recursive=m.readonly and not m.recursive_read_only))
    return tuple(specs)


def _make_sources(mounts: tuple[container_config.MountSpec, ...]) -> None:
    """
    Make the missing host paths of binds, as directories (containerd's
    rule; blocking).
    """
    for m in mounts:
        if not os.path.lexists(m.source):
            os.makedirs(m.source, 0o755, exist_ok=True)


def _resources(r: api_pb2.LinuxContainerResources) -> Resources:
    nano_cpus = 0
    if r.cpu_quota > 0:
        # No period: the kernel's default one, as runc leaves it.
        nano_cpus = r.cpu_quota * 1_000_000_000 // (r.cpu_period or CPU_PERIOD)
    return Resources(memory=r.memory_limit_in_bytes, nano_cpus=nano_cpus, cpu_shares=r.cpu_shares,
                         cpuset_cpus=r.cpuset_cpus, cpuset_mems=r.cpuset_mems,
                         memory_swap=r.memory_swap_limit_in_bytes,
                         hugepage_limits=tuple((h.page_size, h.limit) for h in r.hugepage_limits))


def resources_of(r: Resources) -> api_pb2.LinuxContainerResources:
    """
    The CRI's view of a container's limits (CPU as a quota of the
    default 100 ms period).
    """
    quota = r.nano_cpus * CPU_PERIOD // 1_000_000_000 if r.nano_cpus else 0
    return api_pb2.LinuxContainerResources(
        cpu_period=CPU_PERIOD if quota else 0, cpu_quota=quota, cpu_shares=r.cpu_shares,
        memory_limit_in_bytes=r.memory, memory_swap_limit_in_bytes=max(0, r.memory_swap),
        cpuset_cpus=r.cpuset_cpus, cpuset_mems=r.cpuset_mems,
        hugepage_limits=[api_pb2.HugepageLimit(page_size=size, limit=limit) for size, limit in r.hugepage_limits])


#: The exit code and reason of a container whose start failed (containerd's).
START_ERROR_CODE = 128
START_ERROR = "StartError"


def _start_failed(record: ContainerRecord) -> bool:
    """
    Whether the container's start failed (the engine keeps it "created",
    as docker, with the error): the CRI's view is an exited container, as
    containerd's, so that kubelet applies the pod's restart policy and its
    back-off rather than restarting a "created" container at once, always.
    """
    return record.state.status == "created" and bool(record.state.error)


def _state_of(record: ContainerRecord) -> api_pb2.ContainerState:
    """The CRI's state of a container (one whose start failed is exited)."""
    if _start_failed(record):
        return api_pb2.CONTAINER_EXITED
    return _STATES.get(record.state.status, api_pb2.CONTAINER_UNKNOWN)


def _reason(record: ContainerRecord) -> str:
    state = record.state
    if _start_failed(record):
        return START_ERROR
    if state.status != "exited":
        return ""
    if state.oom_killed:
        return "OOMKilled"
    return "Completed" if state.exit_code == 0 else "Error"


class ContainerAPI:
    """
    The container RPCs of runtime.v1.RuntimeService.
    """

    def __init__(self, engine: Engine, network: CNI | None = None) -> None:
        self._engine = engine
        self._cni = network

    def _thread(self, fn: Any, *args: Any) -> Deferred[Any]:
        reactor = self._engine.reactor
        return deferToThreadPool(reactor, reactor.getThreadPool(), fn, *args)

    async def CreateContainer(self, request: api_pb2.CreateContainerRequest,
                              call: CallInfo) -> api_pb2.CreateContainerResponse:
        sandbox, pod = find(self._engine, SANDBOX, request.pod_sandbox_id)
        c = request.config
        if not c.metadata.name:
            raise InvalidArgument("CreateContainer: the metadata needs a name")
        if not c.image.image:
            raise InvalidArgument("CreateContainer: no image given")
        name = engine_name(c.metadata.name, pod.name, pod.namespace, pod.uid, c.metadata.attempt)
        mounts = _mounts(c.mounts)
        log_path = _log_path(pod.log_directory, c.log_path)
        meta = Meta(kind=CONTAINER, name=c.metadata.name, attempt=c.metadata.attempt,
                    labels=strings(c.labels), annotations=strings(c.annotations), sandbox_id=sandbox.id,
                    log_path=log_path, image=c.image.image)
        sc = c.linux.security_context
        profile = None
        if (sc.HasField("seccomp") and sc.seccomp.profile_type == api_pb2.SecurityProfile.Localhost
                and not sc.privileged):
            profile = await self._thread(_read_profile, sc.seccomp.localhost_ref)
        pid = self._pid_mode(sc.namespace_options, sandbox)
        joined = "host" if pod.host_network else f"{container_config.CONTAINER_MODE}{sandbox.id}"
        ipc = "host" if pod.namespace_modes[2] == api_pb2.NODE else f"{container_config.CONTAINER_MODE}{sandbox.id}"
        config = container_config.ContainerConfig(
            image=c.image.image,
            entrypoint=tuple(c.command) or None,
            cmd=tuple(c.args) or None,
            env=tuple(f"{kv.key}={kv.value.decode('utf-8', 'surrogateescape')}" for kv in c.envs),
            working_dir=c.working_dir,
            user=user_of(sc),
            group_add=tuple(str(g) for g in sc.supplemental_groups),
            labels=meta.engine_labels(),
            tty=c.tty,
            open_stdin=c.stdin,
            stdin_once=c.stdin_once,
            stop_signal=api_pb2.Signal.Name(c.stop_signal) if c.stop_signal != api_pb2.RUNTIME_DEFAULT else "",
        )
        host = container_config.HostConfig(
            mounts=mounts,
            network_mode=joined,
            ipc_mode=ipc,
            uts_mode="" if pod.host_network else f"{container_config.CONTAINER_MODE}{sandbox.id}",
            pid_mode=pid,
            oom_score_adj=c.linux.resources.oom_score_adj,
            resources=_resources(c.linux.resources),
            readonly_rootfs=sc.readonly_rootfs,
            cap_add=tuple(sc.capabilities.add_capabilities),
            cap_drop=tuple(sc.capabilities.drop_capabilities),
            privileged=sc.privileged,
            security_opt=_security_options(sc, profile),
            # kubelet sends the lists it wants (its defaults, or none for
            # an unmasked /proc); none sent means the runtime's.
            masked_paths=tuple(sc.masked_paths) or None,
            readonly_paths=tuple(sc.readonly_paths) or None,
            log_config=(container_config.LogConfig(type="cri", path=log_path) if log_path
                        else container_config.LogConfig(type="none")),
        )
        await self._thread(_make_sources, mounts)
        record = await self._engine.containers.create(name, config, host)
        return api_pb2.CreateContainerResponse(container_id=record.id)

    def _pid_mode(self, options: api_pb2.NamespaceOption, sandbox: ContainerRecord) -> str:
        """
        The engine's PID mode of a container's namespace options, as
        containerd reads them: POD (the proto's default) shares the pod's
        namespace (the sandbox's, unless that is the host's), CONTAINER is
        one of its own, NODE the host's, TARGET another container's of
        the pod.
        """
        mode = options.pid
        if mode == api_pb2.NODE or (mode == api_pb2.POD and sandbox.host.pid_mode == "host"):
            return "host"
        if mode == api_pb2.POD:
            return f"{container_config.CONTAINER_MODE}{sandbox.id}"
        if mode == api_pb2.TARGET:
            target, meta = find(self._engine, CONTAINER, options.target_id)
            if meta.sandbox_id != sandbox.id:
                raise InvalidArgument(f"container {target.id} is not in pod {sandbox.id}")
            return f"{container_config.CONTAINER_MODE}{target.id}"
        return ""

    async def UpdateContainerResources(self, request: api_pb2.UpdateContainerResourcesRequest,
                                       call: CallInfo) -> api_pb2.UpdateContainerResourcesResponse:
        record, _ = find(self._engine, CONTAINER, request.container_id)
        if request.HasField("linux"):
            # What the request leaves at zero stays, as containerd merges an
            # update into the container's spec (and as the cgroups keep
            # what is not written), so the status shows the limits the
            # kernel applies; huge page limits are merged per page size.
            # What the CRI has no word for (the PID limit) stays too.
            old = record.host.resources
            given = _resources(request.linux)
            hugepages = dict(old.hugepage_limits)
            hugepages.update(given.hugepage_limits)
            resources = attrs.evolve(old.updated(given), hugepage_limits=tuple(sorted(hugepages.items())),
                                     pids_limit=old.pids_limit)
            await self._engine.containers.update(record.id, resources=resources)
        return api_pb2.UpdateContainerResourcesResponse()

    async def GetContainerEvents(self, request: api_pb2.GetEventsRequest, out: Outbound, call: CallInfo) -> None:
        """
        The CRI's container events (kubelet's evented PLEG, crictl events)
        from the engine's event bus, until the client goes: created,
        started, stopped, deleted, for pods' sandboxes and containers, each
        with the pod's status and its containers' as they are then.
        """
        queue: DeferredQueue[Event] = DeferredQueue()

        def heard(event: Event) -> None:
            if len(queue.pending) >= EVENTS_BEHIND:
                # The bus cannot wait: a client this far behind is let go.
                out.abort(Status(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                 f"client is more than {EVENTS_BEHIND} events behind; stream ended"))
                unsubscribe()
                return
            queue.put(event)

        unsubscribe = self._engine.containers.events.subscribe(
            heard, EventFilter(types=frozenset({"container"}), actions=frozenset(_EVENT_TYPES)))
        try:
            while True:
                event = await queue.get()
                response = await self._container_event(event)
                if response is not None:
                    await out.send(response)
        finally:
            unsubscribe()

    async def _container_event(self, event: Event) -> api_pb2.ContainerEventResponse | None:
        record = self._engine.containers.records.get(event.actor_id)
        if record is not None:
            meta = meta_of(record)
        else:
            # Deleted: its labels ride on the event.
            text = event.attributes.get(META_LABEL)
            meta = Meta.from_json(text) if text and event.attributes.get(NAMESPACE_LABEL) == NAMESPACE else None
        if meta is None:
            return None
        sandbox_id = event.actor_id if meta.kind == SANDBOX else meta.sandbox_id
        sandbox = self._engine.containers.records.get(sandbox_id)
        sandbox_meta = meta_of(sandbox) if sandbox is not None else None
        pod_status = None
        if sandbox is not None and sandbox_meta is not None:
            pod_status = sandbox_status(self._engine, sandbox, sandbox_meta, self._cni)
        statuses = [container_status(r, m) for r, m in cri_records(self._engine, CONTAINER)
                    if m.sandbox_id == sandbox_id]
        return api_pb2.ContainerEventResponse(
            container_id=event.actor_id, container_event_type=_EVENT_TYPES[event.action],
            created_at=event.time_ns, pod_sandbox_status=pod_status, containers_statuses=statuses)

    async def StartContainer(self, request: api_pb2.StartContainerRequest,
                             call: CallInfo) -> api_pb2.StartContainerResponse:
        record, meta = find(self._engine, CONTAINER, request.container_id)
        if meta.log_path:
            # kubelet makes the pod's log directory; crictl and others may not.
            await self._thread(os.makedirs, os.path.dirname(meta.log_path), 0o755, True)
        await self._engine.containers.start_container(record.id)
        return api_pb2.StartContainerResponse()

    async def StopContainer(self, request: api_pb2.StopContainerRequest,
                            call: CallInfo) -> api_pb2.StopContainerResponse:
        if request.timeout < 0:
            raise InvalidArgument("StopContainer: the timeout cannot be negative")
        try:
            record, _ = find(self._engine, CONTAINER, request.container_id)
        except NotFound:
            # Stopping is idempotent in the CRI: one removed is stopped.
            return api_pb2.StopContainerResponse()
        if record.state.running:
            await self._engine.containers.stop_container(record.id, timeout=request.timeout)
        return api_pb2.StopContainerResponse()

    async def RemoveContainer(self, request: api_pb2.RemoveContainerRequest,
                              call: CallInfo) -> api_pb2.RemoveContainerResponse:
        try:
            record, _ = find(self._engine, CONTAINER, request.container_id)
        except NotFound:
            # Already removed: the CRI asks for no error.
            return api_pb2.RemoveContainerResponse()
        await self._engine.containers.remove(record.id, force=True)
        return api_pb2.RemoveContainerResponse()

    async def ListContainers(self, request: api_pb2.ListContainersRequest,
                             call: CallInfo) -> api_pb2.ListContainersResponse:
        f = request.filter
        found = []
        for record, meta in sorted(cri_records(self._engine, CONTAINER), key=lambda rm: rm[0].created_ns):
            state = _state_of(record)
            if f.id and not record.id.startswith(f.id):
                continue
            if f.pod_sandbox_id and not meta.sandbox_id.startswith(f.pod_sandbox_id):
                continue
            if f.HasField("state") and state != f.state.state:
                continue
            if not labels_match(meta.labels, f.label_selector):
                continue
            found.append(api_pb2.Container(
                id=record.id, pod_sandbox_id=meta.sandbox_id,
                metadata=api_pb2.ContainerMetadata(name=meta.name, attempt=meta.attempt),
                image=api_pb2.ImageSpec(image=meta.image), image_ref=record.image_id, image_id=record.image_id,
                state=state, created_at=record.created_ns, labels=meta.labels, annotations=meta.annotations))
        return api_pb2.ListContainersResponse(containers=found)

    async def ContainerStatus(self, request: api_pb2.ContainerStatusRequest,
                              call: CallInfo) -> api_pb2.ContainerStatusResponse:
        record, meta = find(self._engine, CONTAINER, request.container_id)
        info = {"info": verbose_info(record, sandboxID=meta.sandbox_id)} if request.verbose else {}
        return api_pb2.ContainerStatusResponse(status=container_status(record, meta), info=info)

    async def ReopenContainerLog(self, request: api_pb2.ReopenContainerLogRequest,
                                 call: CallInfo) -> api_pb2.ReopenContainerLogResponse:
        record, meta = find(self._engine, CONTAINER, request.container_id)
        if not meta.log_path:
            raise FailedPrecondition(f"container {record.id} has no log")
        await self._engine.containers.reopen_log(record.id)
        return api_pb2.ReopenContainerLogResponse()

    async def ExecSync(self, request: api_pb2.ExecSyncRequest, call: CallInfo) -> api_pb2.ExecSyncResponse:
        record, _ = find(self._engine, CONTAINER, request.container_id)
        if request.timeout < 0:
            raise InvalidArgument("ExecSync: the timeout cannot be negative")
        output: dict[str, list[bytes]] = {"stdout": [], "stderr": []}
        sizes = {"stdout": 0, "stderr": 0}

        def collect(kind: str, data: bytes) -> None:
            room = EXEC_OUTPUT_LIMIT - sizes.get(kind, EXEC_OUTPUT_LIMIT)
            if room > 0:
                output[kind].append(data[:room])
                sizes[kind] += min(room, len(data))

        try:
            _, session = await self._engine.containers.exec(record.id, ExecProcess(args=tuple(request.cmd)),
                                                            collect, False)
        except ContainerStartError as e:
            return api_pb2.ExecSyncResponse(stderr=e.message.encode(), exit_code=e.exit_code)
        done: Deferred[Any] = session.attachment.done
        timer = None
        if request.timeout:
            timer = self._engine.reactor.callLater(
                request.timeout, done.cancel)
        try:
            status = await done
        except CancelledError:
            session.attachment.detach()
            shim = self._engine.containers.supervisor.shims.get(record.id)
            if shim is not None:
                await shim.kill(signals.SIGKILL, session=session.exec_id)
            raise DeadlineExceeded(f"command {list(request.cmd)[:8]} timed out after {request.timeout}s")
        finally:
            if timer is not None and timer.active():
                timer.cancel()
        return api_pb2.ExecSyncResponse(stdout=b"".join(output["stdout"]), stderr=b"".join(output["stderr"]),
                                        exit_code=status.exit_code if status is not None else 137)


def container_status(record: ContainerRecord, meta: Meta) -> api_pb2.ContainerStatus:
    state = record.state
    mounts = [api_pb2.Mount(container_path=m.destination, host_path=m.source, readonly=not m.read_write,
                            recursive_read_only=not m.read_write and not m.read_only_non_recursive,
                            propagation=_propagation_of(m.propagation))
              for m in record.mounts if m.type == "bind"]
    if _start_failed(record):
        # The engine has no time for the failure: the creation's stands in
        # (kubelet starts what it creates at once).
        finished_at, exit_code = record.created_ns, START_ERROR_CODE
    else:
        finished_at = state.finished_ns if state.status == "exited" else 0
        exit_code = state.exit_code if state.status == "exited" else 0
    return api_pb2.ContainerStatus(
        id=record.id,
        metadata=api_pb2.ContainerMetadata(name=meta.name, attempt=meta.attempt),
        state=_state_of(record),
        created_at=record.created_ns,
        started_at=state.started_ns,
        finished_at=finished_at,
        exit_code=exit_code,
        image=api_pb2.ImageSpec(image=meta.image),
        image_ref=record.image_id,
        image_id=record.image_id,
        reason=_reason(record),
        message=state.error,
        labels=meta.labels,
        annotations=meta.annotations,
        mounts=mounts,
        log_path=meta.log_path,
        resources=api_pb2.ContainerResources(linux=resources_of(record.host.resources)),
    )


def verbose_info(record: ContainerRecord, **more: str) -> str:
    """
    What a verbose status adds, as JSON (the keys containerd gives that
    tools read: crictl inspect's info.pid).
    """
    return json.dumps({"pid": record.state.pid if record.state.running else 0, "snapshotKey": record.snapshot_key,
                       "runtimeType": "ross", "privileged": record.host.privileged, **more}, sort_keys=True)


def _propagation_of(text: str) -> Any:
    if text in ("rslave", "slave"):
        return api_pb2.PROPAGATION_HOST_TO_CONTAINER
    if text in ("rshared", "shared"):
        return api_pb2.PROPAGATION_BIDIRECTIONAL
    return api_pb2.PROPAGATION_PRIVATE
