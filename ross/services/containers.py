# -*- test-case-name: ross.test.integration.test_containers -*-
"""
ContainerService: the adapter between ross.v1 and the container manager.
Validation first, explicit conversions, no logic of its own.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, Collection

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.task import deferLater

from ross.dockerapi.schema import container_inspect, endpoint_settings
from ross.engine.containers import config as container_config
from ross.engine.containers.copy import PathStat
from ross.engine.containers.filters import listed
from ross.engine.containers.logs import CONTEXT, GAP, Entry, InvalidFilter, LogFilter, LogQuery
from ross.engine.containers.manager import ContainerManager
from ross.engine.containers.run import run, start as start_container
from ross.engine.containers.store import ContainerRecord, MountPoint
from ross.engine.runtime.runtime import ExitStatus
from ross.engine.runtime.spec import Resources
from ross.errors import FailedPrecondition, InvalidArgument
from ross.humanize import docker_status, parse_time
from ross.protocols.attach import DetachScanner, parse_detach_keys
from ross.protocols.bridge import CallInfo, Inbound, Outbound
from ross.protocols.shim import ContainerStartError
from ross.services.convert import time_ns_of, timestamp
from ross.services.direct import DirectChannels
from ross.services.networks import settings_of
from ross.services.relay import SessionRelay
from ross.v1 import common_pb2, container_pb2

_STATUS = {
    "created": container_pb2.CONTAINER_STATUS_CREATED,
    "running": container_pb2.CONTAINER_STATUS_RUNNING,
    "paused": container_pb2.CONTAINER_STATUS_PAUSED,
    "restarting": container_pb2.CONTAINER_STATUS_RESTARTING,
    "exited": container_pb2.CONTAINER_STATUS_EXITED,
    "removing": container_pb2.CONTAINER_STATUS_REMOVING,
    "dead": container_pb2.CONTAINER_STATUS_DEAD,
}


#: The engine's wait conditions (L{ContainerManager.wait}) by the proto's.
_WAIT_CONDITIONS = {
    container_pb2.WAIT_CONDITION_NOT_RUNNING: "not-running",
    container_pb2.WAIT_CONDITION_NEXT_EXIT: "next-exit",
    container_pb2.WAIT_CONDITION_REMOVED: "removed",
}

_STREAMS = {"stdout": common_pb2.STD_STREAM_STDOUT, "stderr": common_pb2.STD_STREAM_STDERR}

# ---------------------------------------------------------------- proto -> domain


def _strings(field: Any, present: bool) -> tuple[str, ...] | None:
    return tuple(field.values) if present else None


def config_from_proto(c: container_pb2.ContainerConfig) -> container_config.ContainerConfig:
    health = None
    if c.HasField("healthcheck"):
        h = c.healthcheck
        health = container_config.HealthConfig(
            test=tuple(h.test),
            interval_ns=h.interval_ns or h.interval_seconds * 1_000_000_000,
            timeout_ns=h.timeout_ns or h.timeout_seconds * 1_000_000_000,
            start_period_ns=h.start_period_ns,
            retries=h.retries,
        )
    return container_config.ContainerConfig(
        image=c.image,
        cmd=_strings(c.cmd, c.HasField("cmd")),
        entrypoint=_strings(c.entrypoint, c.HasField("entrypoint")),
        env=tuple(c.env),
        working_dir=c.working_dir,
        user=c.user,
        hostname=c.hostname,
        domainname=c.domainname,
        labels=dict(c.labels),
        tty=c.tty,
        open_stdin=c.open_stdin,
        stdin_once=c.stdin_once,
        stop_signal=c.stop_signal,
        stop_timeout=c.stop_timeout if c.HasField("stop_timeout") else None,
        healthcheck=health,
        exposed_ports=tuple(c.exposed_ports),
        group_add=tuple(c.group_add),
    )


def resources_from_proto(r: container_pb2.ResourceLimits) -> Resources:
    return Resources(memory=r.memory, nano_cpus=r.nano_cpus, pids_limit=r.pids_limit,
                         memory_swap=r.memory_swap, cpu_shares=r.cpu_shares, cpuset_cpus=r.cpuset_cpus,
                         cpuset_mems=r.cpuset_mems, hugepage_limits=tuple(sorted(r.hugepage_limits.items())),
                         memory_reservation=r.memory_reservation, oom_kill_disable=r.oom_kill_disable)


def host_from_proto(h: container_pb2.HostConfig) -> container_config.HostConfig:
    return container_config.HostConfig(
        binds=tuple(h.binds),
        mounts=tuple(
            container_config.MountSpec(type=m.type, source=m.source, target=m.target, read_only=m.read_only,
                          propagation=m.propagation, tmpfs_size=m.tmpfs_size, tmpfs_mode=m.tmpfs_mode,
                          volume_nocopy=m.volume_nocopy, non_recursive=m.bind_non_recursive,
                          volume_labels=tuple(sorted(m.volume_labels.items())),
                          volume_options=tuple(sorted(m.volume_options.items())))
            for m in h.mounts
        ),
        tmpfs=dict(h.tmpfs),
        auto_remove=h.auto_remove,
        restart_policy=container_config.RestartPolicy(h.restart_policy.name or "no",
                                                      h.restart_policy.maximum_retry_count),
        init=h.init,
        network_mode=h.network_mode,
        port_bindings=tuple(container_config.PortBinding(p.container_port, p.host_ip, p.host_port)
                            for p in h.port_bindings),
        publish_all_ports=h.publish_all_ports,
        dns=tuple(h.dns),
        extra_hosts=tuple(h.extra_hosts),
        resources=resources_from_proto(h.resources),
        readonly_rootfs=h.readonly_rootfs,
        cap_add=tuple(h.cap_add),
        cap_drop=tuple(h.cap_drop),
        privileged=h.privileged,
        security_opt=tuple(h.security_opt),
        log_config=container_config.LogConfig(type=h.log_config.type or "json-file", max_size=h.log_config.max_size,
                                 max_file=h.log_config.max_file or 1),
        ip=h.ip,
        network_aliases=tuple(h.network_aliases),
        dns_search=tuple(h.dns_search),
        dns_options=tuple(h.dns_options),
        mac_address=h.mac_address,
        userns_mode=h.userns_mode,
        oom_score_adj=h.oom_score_adj,
        ip6=h.ip6,
        shm_size=h.shm_size,
        ulimits=tuple(container_config.Ulimit(u.name, u.soft, u.hard) for u in h.ulimits),
        devices=tuple(container_config.Device(d.path_on_host, d.path_in_container, d.cgroup_permissions or "rwm")
                      for d in h.devices),
        ipc_mode=h.ipc_mode,
        pid_mode=h.pid_mode,
        uts_mode=h.uts_mode,
        volumes_from=tuple(h.volumes_from),
        sysctls=dict(h.sysctls),
    )


# ---------------------------------------------------------------- domain -> proto


def config_to_proto(c: container_config.ContainerConfig) -> container_pb2.ContainerConfig:
    p = container_pb2.ContainerConfig(
        image=c.image, env=list(c.env), working_dir=c.working_dir, user=c.user, hostname=c.hostname,
        domainname=c.domainname, labels=dict(c.labels), tty=c.tty, open_stdin=c.open_stdin,
        stdin_once=c.stdin_once, stop_signal=c.stop_signal, exposed_ports=list(c.exposed_ports),
        group_add=list(c.group_add),
    )
    if c.cmd is not None:
        p.cmd.SetInParent()
        p.cmd.values.extend(c.cmd)
    if c.entrypoint is not None:
        p.entrypoint.SetInParent()
        p.entrypoint.values.extend(c.entrypoint)
    if c.stop_timeout is not None:
        p.stop_timeout = c.stop_timeout
    if c.healthcheck is not None:
        h = c.healthcheck
        p.healthcheck.test.extend(h.test)
        p.healthcheck.interval_ns, p.healthcheck.timeout_ns = h.interval_ns, h.timeout_ns
        p.healthcheck.start_period_ns, p.healthcheck.retries = h.start_period_ns, h.retries
        p.healthcheck.interval_seconds = h.interval_ns // 1_000_000_000
        p.healthcheck.timeout_seconds = h.timeout_ns // 1_000_000_000
    return p


def host_to_proto(h: container_config.HostConfig) -> container_pb2.HostConfig:
    p = container_pb2.HostConfig(
        binds=list(h.binds),
        mounts=[container_pb2.MountSpec(type=m.type, source=m.source, target=m.target, read_only=m.read_only,
                                        propagation=m.propagation, tmpfs_size=m.tmpfs_size,
                                        tmpfs_mode=m.tmpfs_mode, volume_nocopy=m.volume_nocopy,
                                        bind_non_recursive=m.non_recursive, volume_labels=dict(m.volume_labels),
                                        volume_options=dict(m.volume_options)) for m in h.mounts],
        tmpfs=dict(h.tmpfs), auto_remove=h.auto_remove, init=h.init, network_mode=h.network_mode or "default",
        port_bindings=[container_pb2.PortBinding(container_port=b.container_port, host_ip=b.host_ip,
                                                 host_port=b.host_port) for b in h.port_bindings],
        publish_all_ports=h.publish_all_ports, dns=list(h.dns), extra_hosts=list(h.extra_hosts),
        readonly_rootfs=h.readonly_rootfs, cap_add=list(h.cap_add), cap_drop=list(h.cap_drop),
        privileged=h.privileged, security_opt=list(h.security_opt), ip=h.ip,
        network_aliases=list(h.network_aliases), dns_search=list(h.dns_search), dns_options=list(h.dns_options),
        mac_address=h.mac_address, userns_mode=h.userns_mode, ip6=h.ip6, oom_score_adj=h.oom_score_adj,
        shm_size=h.shm_size,
        ulimits=[container_pb2.Ulimit(name=u.name, soft=u.soft, hard=u.hard) for u in h.ulimits],
        devices=[container_pb2.DeviceMapping(path_on_host=d.path_on_host, path_in_container=d.path_in_container,
                                             cgroup_permissions=d.cgroup_permissions) for d in h.devices],
        ipc_mode=h.ipc_mode, pid_mode=h.pid_mode, uts_mode=h.uts_mode, sysctls=dict(h.sysctls),
        volumes_from=list(h.volumes_from),
    )
    p.restart_policy.name = h.restart_policy.name
    p.restart_policy.maximum_retry_count = h.restart_policy.maximum_retry_count
    r = h.resources
    p.resources.memory, p.resources.nano_cpus, p.resources.pids_limit = r.memory, r.nano_cpus, r.pids_limit
    p.resources.memory_swap, p.resources.cpu_shares = r.memory_swap, r.cpu_shares
    p.resources.cpuset_cpus, p.resources.cpuset_mems = r.cpuset_cpus, r.cpuset_mems
    p.resources.hugepage_limits.update(r.hugepage_limits)
    p.resources.memory_reservation, p.resources.oom_kill_disable = r.memory_reservation, r.oom_kill_disable
    p.log_config.type, p.log_config.max_size = h.log_config.type, h.log_config.max_size
    p.log_config.max_file = h.log_config.max_file
    return p


def mount_to_proto(m: MountPoint) -> container_pb2.MountPoint:
    return container_pb2.MountPoint(type=m.type, name=m.name, source=m.source, destination=m.destination,
                                    read_write=m.read_write, propagation=m.propagation)


def status_text(record: ContainerRecord, now_ns: int) -> str:
    """
    docker's STATUS column.
    """
    s = record.state
    return docker_status(s.status, s.exit_code, s.health, s.started_ns / 1e9, s.finished_ns / 1e9, now_ns / 1e9)


def container_to_proto(view: Any) -> container_pb2.Container:
    """
    A container's message without what moves on its own (docker's STATUS
    text and the exec sessions): L{ContainerProtos.encoded} adds those.
    """
    record: ContainerRecord = view.record
    s = record.state
    args = list(record.config.entrypoint or ()) + list(record.config.cmd or ())
    return container_pb2.Container(
        id=record.id,
        name=record.name,
        image=record.image,
        image_id=record.image_id,
        command=" ".join(args),
        created=timestamp(record.created_ns),
        state=container_pb2.ContainerState(
            status=_STATUS[s.status], pid=s.pid, exit_code=s.exit_code, error=s.error,
            started_at=timestamp(s.started_ns), finished_at=timestamp(s.finished_ns),
            oom_killed=s.oom_killed, health=s.health, health_failing_streak=s.failing_streak,
            health_log=[container_pb2.HealthCheckResult(start=timestamp(r.start_ns), end=timestamp(r.end_ns),
                                                        exit_code=r.exit_code, output=r.output)
                        for r in s.health_log],
        ),
        labels=dict(record.config.labels),
        config=config_to_proto(record.config),
        host_config=host_to_proto(record.host),
        mounts=[mount_to_proto(m) for m in record.mounts],
        restart_count=s.restart_count,
        log_path=view.log_path,
        snapshot_key=record.snapshot_key,
        driver="overlayfs",
        size_rw=view.size_rw,
        path=args[0] if args else "",
        args=args[1:],
        network_settings=settings_of(view),
    )


_LISTED = container_pb2.ListContainersResponse.DESCRIPTOR.fields_by_name["containers"].number
_INSPECTED = container_pb2.InspectContainerResponse.DESCRIPTOR.fields_by_name["container"].number
_DOCKER_JSON = container_pb2.InspectContainerResponse.DESCRIPTOR.fields_by_name["docker_json"].number


class ContainerProtos:
    """
    Each container's message, kept serialized while nothing it shows
    changes.

    A listing converts every container on every call, and the conversion
    (config, host config, mounts, network settings) and then the
    serialization of the whole answer were most of what a busy daemon spent
    on C{ps}: records and views are immutable, so the bytes built for the
    same record and the same run-time view are reused, and only docker's
    STATUS text (which moves with the clock) and the exec sessions (which
    come and go while a busy container runs) are appended as the fields
    they are (protobuf merges fields in any order). A listing's answer is
    then those bytes joined, handed to gRPC as they are (L{ross.protocols.
    bridge} passes bytes through).
    """

    _STATUS_TEXT = container_pb2.Container.DESCRIPTOR.fields_by_name["status_text"].number
    _EXEC_IDS = container_pb2.Container.DESCRIPTOR.fields_by_name["exec_ids"].number

    def __init__(self) -> None:
        self._built: dict[str, tuple[Any, bytes]] = {}

    def encoded(self, view: Any, now_ns: int) -> bytes:
        """
        C{view}'s container as of C{now_ns}, serialized.
        """
        record = view.record
        found = self._built.get(record.id)
        if found is None or not _same_view(found[0], view):
            found = (view, container_to_proto(view).SerializeToString())
            self._built[record.id] = found
        parts = [found[1], _field(self._STATUS_TEXT, status_text(record, now_ns).encode())]
        parts += [_field(self._EXEC_IDS, eid.encode()) for eid in view.exec_ids]
        return b"".join(parts)

    def forget_others(self, keep: Collection[str]) -> None:
        """
        Drop the messages of containers not in C{keep} (removed ones).
        """
        for cid in [cid for cid in self._built if cid not in keep]:
            del self._built[cid]


def _field(number: int, payload: bytes) -> bytes:
    """
    A length-delimited protobuf field (a string, bytes or a message).
    """
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _same_view(a: Any, b: Any) -> bool:
    return a.record is b.record and a.size_rw == b.size_rw and a.log_path == b.log_path and a.networks == b.networks


def path_stat_to_proto(st: PathStat) -> container_pb2.PathStat:
    return container_pb2.PathStat(name=st.name, size=st.size, mode=st.mode, mtime=timestamp(st.mtime_ns),
                                  link_target=st.link_target)


def _copy_options(first: Any, rpc: str = "CopyTo") -> Any:
    """The options a CopyTo stream starts with (C{rpc}'s request), checked."""
    if first is None or first.WhichOneof("request") != "options":
        raise InvalidArgument(f"{rpc}: the first message must carry the options")
    if not first.options.path:
        raise InvalidArgument(f"{rpc}: the destination path is empty")
    return first.options


def _drop(d: Deferred[Any]) -> None:
    """
    Cancel a wait nobody needs any more, quietly.
    """
    if not d.called:
        d.addErrback(lambda f: f.trap(CancelledError))
        d.cancel()


def _window(size: Any) -> tuple[int, int]:
    """
    (rows, cols) of a WindowSize; (0, 0) when unset; InvalidArgument when a
    terminal could not have that size.
    """
    rows, cols = size.rows, size.cols
    if not rows and not cols:
        return 0, 0
    container_config.validate_window(rows, cols)
    return rows, cols


_INPUT_ID = re.compile(r"[A-Za-z0-9_-]{0,64}")


def _input_id(value: str) -> str:
    """
    A start frame's input_id, checked: InvalidArgument for a name the
    session could not keep.
    """
    if not _INPUT_ID.fullmatch(value):
        raise InvalidArgument(f"invalid input_id {value[:80]!r}: up to 64 letters, digits, '-' and '_'")
    return value


def _started(attachment: Any, **fields: Any) -> Any:
    """
    The C{started} frame of a stream attached by C{attachment} (an
    Attachment or a DirectAttach), with its input's offset when the client
    named its input.
    """
    if attachment.input_offset is not None:
        fields["input_offset"] = attachment.input_offset
    return container_pb2.Started(**fields)


def _scanner(detach_keys: str, tty: bool) -> DetachScanner:
    """
    Detach keys apply to terminals only, as in docker: piped input is data,
    every byte of it.
    """
    keys = parse_detach_keys(detach_keys)
    return DetachScanner(keys if tty else b"")


def stats_to_proto(record: ContainerRecord, previous: Any, current: Any) -> Any:
    """
    A stats sample as docker computes it: CPU % from the change in the
    container's and the host's CPU time.
    """
    response = container_pb2.StatsResponse(container_id=record.id, name=record.name)
    if current is None:
        return response
    percent = 0.0
    if previous is not None:
        cpu_delta = current.cpu_usage_ns - previous.cpu_usage_ns
        system_delta = current.system_cpu_ns - previous.system_cpu_ns
        if cpu_delta > 0 and system_delta > 0:
            percent = cpu_delta / system_delta * current.online_cpus * 100.0
    response.read.CopyFrom(timestamp(current.read_ns))
    response.cpu_usage_ns = current.cpu_usage_ns
    response.system_cpu_ns = current.system_cpu_ns
    response.online_cpus = current.online_cpus
    response.memory_usage = current.memory_usage
    response.memory_limit = current.memory_limit
    response.pids = current.pids
    response.net_rx_bytes = current.net_rx_bytes
    response.net_tx_bytes = current.net_tx_bytes
    response.block_read_bytes = current.block_read_bytes
    response.block_write_bytes = current.block_write_bytes
    response.cpu_percent = percent
    return response


class OutputFrames:
    """
    Turns a session's output into data frames. Output that finds the gRPC
    thread idle goes out at once (a keystroke's echo); while frames wait to
    be sent, what arrives is merged until the next reactor turn, as a frame
    per PTY read would make gRPC, not the container, the limit. Call it as
    the attachment's C{on_output}; L{flush} before the last frame.
    """

    MAX = 1 << 20

    def __init__(self, reactor: Any, out: Outbound) -> None:
        self._reactor = reactor
        self._out = out
        self._pending: list[tuple[str, bytearray]] = []
        self._call: Any = None

    def __call__(self, stream: str, data: bytes) -> None:
        if not self._pending and not self._out.pending():
            self._send(stream, data)
            return
        if self._pending and self._pending[-1][0] == stream and len(self._pending[-1][1]) < self.MAX:
            self._pending[-1][1].extend(data)
        else:
            self._pending.append((stream, bytearray(data)))
        if self._call is None:
            self._call = self._reactor.callLater(0, self.flush)

    def flush(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        pending, self._pending = self._pending, []
        for stream, data in pending:
            self._send(stream, bytes(data))

    def _send(self, stream: str, data: bytes) -> None:
        self._out.write(container_pb2.InteractiveOutput(data=container_pb2.OutputData(
            stream=_STREAMS.get(stream, common_pb2.STD_STREAM_STDOUT), data=data)))


class ContainerAPI:
    """
    Reactor-side implementation of ross.v1.ContainerService.
    """

    def __init__(self, manager: ContainerManager, reactor: Any, direct: DirectChannels | None = None) -> None:
        self._manager = manager
        self._reactor = reactor
        self._direct = direct
        self._protos = ContainerProtos()

    def _direct_for(self, asked: bool, call: CallInfo) -> DirectChannels | None:
        """
        Where to hand out a direct channel: for a client that asked, on
        this host's unix socket (a remote client could not use one).
        """
        if asked and self._direct is not None and self._direct.serves(call):
            return self._direct
        return None

    def _started_direct(self, direct: DirectChannels, channel: Any, container_id: str,
                        exec_id: str = "", warnings: Any = ()) -> Any:
        """
        The C{started} frame that hands C{channel} to the client.
        """
        ticket = direct.issue(channel)
        return container_pb2.InteractiveOutput(started=container_pb2.Started(
            container_id=container_id, exec_id=exec_id, warnings=list(warnings),
            direct_socket=direct.path, direct_ticket=ticket))

    def _now(self) -> int:
        return int(self._reactor.seconds() * 1e9)

    # -- lifecycle

    async def CreateContainer(self, request: Any, call: CallInfo) -> Any:
        host = host_from_proto(request.host_config)
        record = await self._manager.create(request.name, config_from_proto(request.config), host)
        return container_pb2.CreateContainerResponse(id=record.id, warnings=container_config.create_warnings(host))

    async def StartContainer(self, request: Any, call: CallInfo) -> Any:
        # An auto-remove container whose command cannot run is removed,
        # as dockerd's start does.
        await start_container(self._manager, request.container_id)
        return container_pb2.StartContainerResponse()

    async def StopContainer(self, request: Any, call: CallInfo) -> Any:
        timeout = request.timeout if request.HasField("timeout") else None
        await self._manager.stop_container(request.container_id, timeout, request.signal)
        return container_pb2.StopContainerResponse()

    async def RestartContainer(self, request: Any, call: CallInfo) -> Any:
        timeout = request.timeout if request.HasField("timeout") else None
        await self._manager.restart_container(request.container_id, timeout)
        return container_pb2.RestartContainerResponse()

    async def KillContainer(self, request: Any, call: CallInfo) -> Any:
        await self._manager.kill_container(request.container_id, request.signal)
        return container_pb2.KillContainerResponse()

    async def PauseContainer(self, request: Any, call: CallInfo) -> Any:
        await self._manager.pause_container(request.container_id)
        return container_pb2.PauseContainerResponse()

    async def UnpauseContainer(self, request: Any, call: CallInfo) -> Any:
        await self._manager.unpause_container(request.container_id)
        return container_pb2.UnpauseContainerResponse()

    async def RemoveContainer(self, request: Any, call: CallInfo) -> Any:
        await self._manager.remove(request.container_id, request.force, request.remove_volumes)
        return container_pb2.RemoveContainerResponse()

    async def PublishPort(self, request: Any, call: CallInfo) -> Any:
        b = request.binding
        published = await self._manager.publish_port(
            request.container_id, container_config.PortBinding(b.container_port, b.host_ip, b.host_port))
        return container_pb2.PublishPortResponse(ports=[_mapping_to_proto(p) for p in published])

    async def UnpublishPort(self, request: Any, call: CallInfo) -> Any:
        removed = await self._manager.unpublish_port(request.container_id, request.container_port, request.host_ip,
                                                     request.host_port)
        return container_pb2.UnpublishPortResponse(ports=[_mapping_to_proto(p) for p in removed])

    async def RenameContainer(self, request: Any, call: CallInfo) -> Any:
        await self._manager.rename(request.container_id, request.new_name)
        return container_pb2.RenameContainerResponse()

    async def UpdateContainer(self, request: Any, call: CallInfo) -> Any:
        record = self._manager.resolve(request.container_id)
        given = resources_from_proto(request.resources)
        policy = None
        if request.HasField("restart_policy"):
            p = request.restart_policy
            policy = container_config.RestartPolicy(p.name or "no", p.maximum_retry_count)
        await self._manager.update(record.id, record.host.resources.updated(given), policy)
        return container_pb2.UpdateContainerResponse()

    async def PruneContainers(self, request: Any, call: CallInfo) -> Any:
        until = None
        labels = []
        for f in request.filters:
            if f.key == "until":
                until = int(parse_time(f.value, self._reactor.seconds()) * 1e9)
            elif f.key == "label":
                k, _, v = f.value.partition("=")
                labels.append((k, v))
            else:
                raise InvalidArgument(f"invalid filter '{f.key}'")
        removed = await self._manager.prune(until, labels)
        return container_pb2.PruneContainersResponse(containers_deleted=removed)

    # -- listing

    async def ListContainers(self, request: Any, call: CallInfo) -> Any:
        records = listed(self._manager, [(f.key, f.value) for f in request.filters], request.all, request.limit,
                         request.all_namespaces)
        views = [await self._manager.view(r, request.size) for r in records]
        now = self._now()
        # ListContainersResponse, serialized: its containers field, repeated.
        answer = b"".join(_field(_LISTED, self._protos.encoded(view, now)) for view in views)
        self._protos.forget_others(self._manager.records)
        return answer

    async def InspectContainer(self, request: Any, call: CallInfo) -> Any:
        record = self._manager.resolve(request.container_id)
        view = await self._manager.view(record, request.size)
        # InspectContainerResponse, serialized.
        encoded = _field(_INSPECTED, self._protos.encoded(view, self._now()))
        if request.docker:
            network = self._manager.network
            doc = container_inspect(view, endpoint_settings(view, network.members if network is not None else {}),
                                    request.size)
            encoded += _field(_DOCKER_JSON, json.dumps(doc).encode())
        return encoded

    # -- waiting

    async def Wait(self, request: Any, out: Outbound, call: CallInfo) -> None:
        if request.condition not in _WAIT_CONDITIONS:
            raise InvalidArgument(f"invalid wait condition {request.condition}")
        condition = _WAIT_CONDITIONS[request.condition]
        waiting = self._manager.wait(request.container_id, condition)
        try:
            await out.send(container_pb2.WaitContainerOutput(waiting=True))
            status = await waiting
        finally:
            # A client that leaves takes its waiter with it.
            _drop(waiting)
        # A removed container's last exit is told without its signal.
        signal = status.signal if condition != "removed" else 0
        await out.send(container_pb2.WaitContainerOutput(exit=container_pb2.ExitResult(
            status_code=status.exit_code, signal=signal, oom_killed=status.oom_killed)))

    # -- logs

    async def GetLogs(self, request: Any, out: Outbound, call: CallInfo) -> None:
        both = not request.stdout and not request.stderr
        search = None
        if request.HasField("filter"):
            f = request.filter
            search = LogFilter(pattern=f.pattern, regex=f.regex, ignore_case=f.ignore_case, before=f.before,
                               after=f.after)
            try:
                search.matcher()
            except InvalidFilter as e:
                raise InvalidArgument(str(e)) from None
        query = LogQuery(
            stdout=request.stdout or both,
            stderr=request.stderr or both,
            since_ns=time_ns_of(request.since),
            until_ns=time_ns_of(request.until),
            tail=request.tail if request.HasField("tail") and request.tail >= 0 else None,
            follow=request.follow,
            filter=search,
            merged=search is None and not request.timestamps,
        )

        def deliver(entries: list[Entry]) -> Deferred[None]:
            if search is not None:
                return out.send(container_pb2.GetLogsResponse(entries=[
                    container_pb2.LogEntry(stream=_STREAMS[stream], time=timestamp(ns) if request.timestamps else None,
                                           line=data, context=bool(mark & CONTEXT), gap=bool(mark & GAP))
                    for stream, ns, data, mark in entries]))
            if request.timestamps:
                return out.send(container_pb2.GetLogsResponse(entries=[
                    container_pb2.LogEntry(stream=_STREAMS[stream], time=timestamp(ns), line=data)
                    for stream, ns, data, _ in entries]))
            # Runs of one stream, merged in the pool thread (query.merged).
            return out.send(container_pb2.GetLogsResponse(entries=[
                container_pb2.LogEntry(stream=_STREAMS[stream], line=data) for stream, _, data, _ in entries]))

        await self._manager.logs(request.container_id, query, deliver)

    # -- interactive streams

    def _output(self, out: Outbound) -> OutputFrames:
        return OutputFrames(self._reactor, out)

    async def RunInteractive(self, inbound: Inbound, out: Outbound, call: CallInfo) -> None:
        first = await inbound.receive()
        if first is None or first.WhichOneof("input") != "start":
            raise InvalidArgument("RunInteractive: the first frame must be 'start'")
        start = first.start
        config = config_from_proto(start.create.config)
        scanner = _scanner(start.detach_keys, config.tty)
        window = _window(start.window)
        host = host_from_proto(start.create.host_config)
        warnings = container_config.create_warnings(host)
        attached: list[Any] = []
        input_id = _input_id(start.input_id)
        output = self._output(out)
        direct = self._direct_for(start.direct, call)
        # A gRPC client's interactive session is relayed (see Exec).
        relayed = direct is None and (config.tty or start.attach_stdin)

        async def attach(shim: Any) -> None:
            if direct is not None or relayed:
                attached.append(await shim.attach_direct(stdin=start.attach_stdin,
                                                         window=window if config.tty else (0, 0),
                                                         input_id=input_id if relayed else ""))
                if relayed:
                    # As below: the client learns its container first.
                    out.write(container_pb2.InteractiveOutput(started=_started(
                        attached[0], container_id=shim.id, warnings=warnings)))
                return
            attachment = await shim.attach(output, stdin=start.attach_stdin, input_id=input_id)
            attached.append(attachment)
            # The client learns its container before the first byte of its
            # output: should the daemon go away from then on, it can attach
            # to it again.
            out.write(container_pb2.InteractiveOutput(started=_started(attachment, container_id=shim.id,
                                                                       warnings=warnings)))
            if config.tty and window[0]:
                await attachment.resize(*window)

        ran = await run(self._manager, start.create.name, config, host, before=attach)
        cid = ran.record.id
        if ran.start_error is not None:
            if direct is not None or relayed:
                for held in attached:
                    held.channel.close()
            if direct is not None or not attached:
                await out.send(container_pb2.InteractiveOutput(started=container_pb2.Started(container_id=cid)))
            await out.send(container_pb2.InteractiveOutput(exit=container_pb2.ExitResult(
                status_code=ran.start_error.exit_code, error=ran.start_error.message)))
            return
        if direct is not None:
            # The session is the client's now; the stream ends here.
            await out.send(self._started_direct(direct, attached[0].channel, cid, warnings=warnings))
            return
        if relayed:
            await self._relay(inbound, out, attached[0].channel, scanner, config.tty, start.attach_stdin,
                              ran.removed)
            return
        if out.closed:
            # The client left before the session began: let go of its
            # attachment (its stdin would never see EOF otherwise).
            attached[0].detach()
            raise CancelledError("stream closed")
        await self._session(inbound, out, output, attached[0], scanner, config.tty, start.attach_stdin,
                            ran.removed)

    async def Attach(self, inbound: Inbound, out: Outbound, call: CallInfo) -> None:
        first = await inbound.receive()
        if first is None or first.WhichOneof("input") != "start":
            raise InvalidArgument("Attach: the first frame must be 'start'")
        start = first.start
        keys = parse_detach_keys(start.detach_keys)
        window = _window(start.window)
        input_id = _input_id(start.input_id)
        # A client re-attaching after it lost its stream (SPEC 3: sessions
        # survive a daemon restart) is told how its session ended, if it did.
        since = start.since if start.HasField("since") else None
        record, tty, ended = self._manager.session_of(start.container_id, start.exec_id, since)
        if ended is not None:
            await self._ended(out, record.id, start.exec_id, ended)
            return
        on_output = self._output(out)
        if not start.exec_id and not record.state.running:
            # ``start -a``: attach as the container starts, before its command.
            attaching = Deferred.fromCoroutine(
                self._manager.attach_next_start(record.id, on_output, start.attach_stdin))
            try:
                await out.send(container_pb2.InteractiveOutput(started=container_pb2.Started(container_id=record.id)))
                attachment = await attaching
            finally:
                # Gone before the start: the hook is taken back.
                attaching.cancel()
        else:
            shim = self._manager.running_shim(record.id)
            direct = self._direct_for(start.direct, call)
            # A gRPC client's interactive session is relayed (see Exec).
            relayed = direct is None and (tty or start.attach_stdin)
            if direct is not None:
                held = await shim.attach_direct(session=start.exec_id, stdin=start.attach_stdin,
                                                replay=start.replay, window=window if tty else (0, 0))
                await out.send(self._started_direct(direct, held.channel, record.id, start.exec_id))
                return
            if relayed:
                held = await shim.attach_direct(session=start.exec_id, stdin=start.attach_stdin,
                                                replay=start.replay, window=window if tty else (0, 0),
                                                since=since, input_id=input_id)
                out.write(container_pb2.InteractiveOutput(started=_started(
                    held, container_id=record.id, exec_id=start.exec_id, output_offset=held.offset)))
                await self._relay(inbound, out, held.channel, DetachScanner(keys if tty else b""), tty,
                                  start.attach_stdin, None)
                return
            attachment = await shim.attach(on_output, session=start.exec_id, stdin=start.attach_stdin,
                                           replay=start.replay, since=since, input_id=input_id)
            await out.send(container_pb2.InteractiveOutput(started=_started(
                attachment, container_id=record.id, exec_id=start.exec_id, output_offset=attachment.offset)))
        if tty and window[0]:
            try:
                await attachment.resize(*window)
            except FailedPrecondition:
                # Re-attached to a session that has ended: its exit frame
                # follows (the shim said so before it refused the resize).
                if not attachment.done.called:
                    raise
        await self._session(inbound, out, on_output, attachment, DetachScanner(keys if tty else b""), tty,
                            start.attach_stdin, None)

    async def _ended(self, out: Outbound, container_id: str, exec_id: str, status: ExitStatus) -> None:
        """
        Answer a re-attach to a session that ended while its client was
        away: C{started}, then its exit status.
        """
        await out.send(container_pb2.InteractiveOutput(
            started=container_pb2.Started(container_id=container_id, exec_id=exec_id)))
        await out.send(container_pb2.InteractiveOutput(exit=_exit_result(status)))

    async def Exec(self, inbound: Inbound, out: Outbound, call: CallInfo) -> None:
        from ross.engine.runtime.spec import ExecProcess

        first = await inbound.receive()
        if first is None or first.WhichOneof("input") != "start":
            raise InvalidArgument("Exec: the first frame must be 'start'")
        c = first.start
        scanner = _scanner(c.detach_keys, c.tty)
        input_id = _input_id(c.input_id)
        size = _window(c.window)
        if not size[0]:
            size = (24, 80)
        process = ExecProcess(args=tuple(c.cmd), env=tuple(c.env), cwd=c.working_dir, user=c.user, tty=c.tty,
                              open_stdin=c.attach_stdin, privileged=c.privileged, console_size=size)
        output = self._output(out)
        direct = None if c.detach else self._direct_for(c.direct, call)
        # A gRPC client's interactive session is relayed in the gRPC loop,
        # through a direct channel of the daemon's own: its keystrokes
        # cross fewer threads. (Output alone gains nothing by it, and a
        # short exec's start costs a little more.)
        relayed = not c.detach and direct is None and (c.tty or c.attach_stdin)
        try:
            info, session = await self._manager.exec(
                c.container_id, process, None if c.detach or direct or relayed else output, c.attach_stdin,
                direct=direct is not None or relayed, input_id=input_id)
        except ContainerStartError as e:
            await out.send(container_pb2.InteractiveOutput(started=container_pb2.Started()))
            await out.send(container_pb2.InteractiveOutput(
                exit=container_pb2.ExitResult(status_code=e.exit_code, error=e.message)))
            return
        if direct is not None:
            await out.send(self._started_direct(direct, session.channel, info.container_id, info.id))
            return
        if c.detach:
            await out.send(container_pb2.InteractiveOutput(
                started=container_pb2.Started(container_id=info.container_id, exec_id=info.id)))
            return
        if relayed:
            started = container_pb2.Started(container_id=info.container_id, exec_id=info.id)
            if input_id:
                # (Attached from the first byte: nothing taken in yet.)
                started.input_offset = 0
            out.write(container_pb2.InteractiveOutput(started=started))
            await self._relay(inbound, out, session.channel, scanner, c.tty, c.attach_stdin, None)
            return
        await out.send(container_pb2.InteractiveOutput(
            started=_started(session.attachment, container_id=info.container_id, exec_id=info.id)))
        await self._session(inbound, out, output, session.attachment, scanner, c.tty, c.attach_stdin, None)

    async def _relay(self, inbound: Inbound, out: Outbound, channel: Any, scanner: DetachScanner, tty: bool,
                     stdin: bool, removed: Deferred[Any] | None) -> None:
        """
        Serve an interactive session's bytes in the gRPC loop, through its
        direct C{channel} (L{SessionRelay}), its C{started} frame queued
        already; then its last frame, once a ``--rm`` container is
        C{removed}.
        """
        relay = SessionRelay(channel, scanner, tty, stdin)
        last = await out.hand_over(relay, inbound, relay.discard)
        if removed is not None and last.WhichOneof("output") == "exit":
            await removed
        await out.send(last)

    async def _session(self, inbound: Inbound, out: Outbound, output: OutputFrames, attachment: Any,
                       scanner: DetachScanner, tty: bool, stdin: bool, removed: Deferred[Any] | None) -> None:
        """
        Pump one attached session: input frames to the process, its output
        to the client (the shim pauses when the client is slow), then the
        exit frame, or ``detached`` when the client typed the detach keys.
        A client that goes away leaves the process running.
        """
        out.registerProducer(attachment.producer, True)
        detached: Deferred[None] = Deferred()

        async def read_input() -> None:
            while True:
                message = await inbound.receive()
                if message is None:
                    if stdin and not tty:
                        await attachment.close_stdin()
                    return
                kind = message.WhichOneof("input")
                if kind == "stdin" and stdin:
                    data, hit = scanner.feed(message.stdin)
                    if data:
                        attachment.write(data)
                    if hit:
                        detached.callback(None)
                        return
                elif kind == "resize":
                    rows, cols = _window(message.resize)
                    # Resizing a session without a terminal means nothing
                    # (docker ignores it too).
                    if tty and rows:
                        await attachment.resize(rows, cols)
                elif kind == "start":
                    raise InvalidArgument("a second 'start' frame in one stream")
                elif kind == "close_stdin" and stdin:
                    held = scanner.flush()
                    if held:
                        attachment.write(held)
                    await attachment.close_stdin()

        reader = Deferred.fromCoroutine(read_input())
        # The first of: the session ended, or the client detached. A
        # cancelled session (client gone) cancels only this, never the
        # attachment's own Deferred.
        first: Deferred[tuple[int, Any]] = Deferred()

        def settle(result: Any, index: int) -> Any:
            if not first.called:
                first.callback((index, result))
            return result

        def input_failed(failure: Any) -> None:
            # Bad input ends the session with its error; a cancelled reader
            # (the session ending) is no error.
            if not failure.check(CancelledError) and not first.called:
                first.errback(failure)

        attachment.done.addBoth(settle, 0)
        detached.addCallback(settle, 1)
        reader.addErrback(input_failed)
        try:
            index, status = await first
            output.flush()
            if index == 1:
                attachment.detach()
                await out.send(container_pb2.InteractiveOutput(detached=True))
                return
            if status is None:
                # The shim went away under us: report what the manager knows.
                raise FailedPrecondition("the container's session ended unexpectedly")
            if removed is not None:
                await removed
            await out.send(container_pb2.InteractiveOutput(exit=_exit_result(status)))
        finally:
            out.unregisterProducer()
            if not reader.called:
                reader.cancel()
            attachment.detach()

    def InspectExec(self, request: Any, call: CallInfo) -> Any:
        info = self._manager.exec_info(request.exec_id)
        response = container_pb2.InspectExecResponse(
            id=info.id, container_id=info.container_id, running=info.exit is None, pid=info.pid,
            cmd=list(info.args), tty=info.tty)
        if info.exit is not None:
            response.exit_code = info.exit.exit_code
        return response

    async def Resize(self, request: Any, call: CallInfo) -> Any:
        await self._manager.resize(request.container_id, request.size.rows, request.size.cols, request.exec_id)
        return container_pb2.ResizeResponse()

    # -- inspection

    async def Top(self, request: Any, call: CallInfo) -> Any:
        titles, rows = await self._manager.processes(request.container_id, request.ps_args)
        return container_pb2.TopResponse(
            titles=titles, processes=[container_pb2.TopResponse.Row(values=row) for row in rows])

    async def Stats(self, request: Any, out: Outbound, call: CallInfo) -> None:
        """
        One sample (CPU % over a short interval), or one a second while the
        client stays.
        """
        record = self._manager.resolve(request.container_id)
        previous = await self._manager.stats(record.id)
        if not request.stream:
            await deferLater(self._reactor, 0.25, lambda: None)
        while True:
            if request.stream:
                await deferLater(self._reactor, 1.0, lambda: None)
            current = await self._manager.stats(record.id)
            await out.send(stats_to_proto(record, previous, current))
            if not request.stream:
                return
            previous = current

    async def Diff(self, request: Any, call: CallInfo) -> Any:
        kinds = {"A": container_pb2.Change.ADDED, "C": container_pb2.Change.MODIFIED,
                 "D": container_pb2.Change.DELETED}
        found = await self._manager.changes(request.container_id)
        return container_pb2.DiffResponse(
            changes=[container_pb2.Change(kind=kinds[kind], path=path) for kind, path in found])

    async def Commit(self, request: Any, call: CallInfo) -> Any:
        image_id = await self._manager.commit(
            request.container_id, request.reference, request.comment, request.author, tuple(request.changes),
            request.pause)
        return container_pb2.CommitResponse(id=image_id)

    async def Export(self, request: Any, out: Outbound, call: CallInfo) -> None:
        flow = await self._manager.export(request.container_id)
        try:
            while True:
                chunk = await flow.get()
                if chunk is None:
                    return
                await out.send(common_pb2.Chunk(data=chunk))
        finally:
            flow.cancel()

    async def CopyFrom(self, request: Any, out: Outbound, call: CallInfo) -> None:
        copier = self._manager.copier
        path, follow = request.path, request.follow_link
        if request.stat_only:
            # Only asking what a path is: no event, as docker's HEAD.
            st = await self._manager.copying(request.container_id, "",
                                             lambda target: copier.stat(target, path, follow))
            await out.send(container_pb2.CopyFromResponse(stat=path_stat_to_proto(st)))
            return

        async def deliver(item: PathStat | bytes) -> None:
            if isinstance(item, PathStat):
                await out.send(container_pb2.CopyFromResponse(stat=path_stat_to_proto(item)))
            else:
                await out.send(container_pb2.CopyFromResponse(data=item))

        direct = self._direct_for(request.direct, call)
        hand = None
        if direct is not None:
            async def hand(pipe: io.FileIO) -> None:
                await out.send(container_pb2.CopyFromResponse(ticket=direct.ticket(pipe)))

        await self._manager.copying(request.container_id, "archive-path",
                                    lambda target: copier.archive(target, path, follow, deliver, hand))

    async def CopyTo(self, inbound: Inbound, call: CallInfo) -> Any:
        options = _copy_options(await inbound.receive())

        async def receive() -> bytes | None:
            while True:
                message = await inbound.receive()
                if message is None:
                    return None
                if message.WhichOneof("request") != "data":
                    raise InvalidArgument("CopyTo: the options come once, first")
                if message.data:
                    return bytes(message.data)

        copier = self._manager.copier
        await self._manager.copying(
            options.container_id, "extract-to-dir",
            lambda target: copier.extract(target, options.path, options.copy_uid_gid,
                                          options.no_overwrite_dir_non_dir, receive))
        return container_pb2.CopyToResponse()

    async def CopyToDirect(self, request: Any, out: Outbound, call: CallInfo) -> None:
        options = _copy_options(container_pb2.CopyToRequest(options=request), "CopyToDirect")
        direct = self._direct_for(True, call)
        if direct is None:
            raise FailedPrecondition("CopyToDirect: a direct channel is only for a client on this host's unix "
                                     "socket; use CopyTo")

        async def hand(pipe: io.FileIO) -> None:
            await out.send(container_pb2.CopyToDirectResponse(ticket=direct.ticket(pipe)))

        copier = self._manager.copier
        await self._manager.copying(
            options.container_id, "extract-to-dir",
            lambda target: copier.extract(target, options.path, options.copy_uid_gid,
                                          options.no_overwrite_dir_non_dir, hand=hand))
        await out.send(container_pb2.CopyToDirectResponse(done=container_pb2.CopyToResponse()))


def _exit_result(status: ExitStatus) -> Any:
    return container_pb2.ExitResult(status_code=status.exit_code, signal=status.signal,
                                    oom_killed=status.oom_killed, error=status.error)


def _mapping_to_proto(p: Any) -> container_pb2.PortMapping:
    return container_pb2.PortMapping(container_port=p.container_port, host_ip=p.host_ip, host_port=p.host_port)
