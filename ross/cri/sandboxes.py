# -*- test-case-name: ross.test.integration.test_cri_pods -*-
"""
Pod sandboxes: RunPodSandbox, StopPodSandbox, RemovePodSandbox,
PodSandboxStatus and ListPodSandbox over the engine's containers.

A sandbox is an engine container of the (empty) pause image whose PID 1
runs no command and holds the pod's network, IPC and UTS namespaces
(HostConfig.pause); it is on Ross's bridge network, with the pod's
hostname, DNS settings and host ports. Its containers join those
namespaces (L{ross.cri.containers}).
"""

from __future__ import annotations

import io
import json
import tarfile
from typing import Any, Iterable, Mapping

from twisted.internet.defer import DeferredLock

from ross.cri import cni
from ross.cri.images import PAUSE_IMAGE
from ross.cri.meta import CONTAINER, SANDBOX, Meta, engine_name, meta_of, strings
from ross.cri.v1 import api_pb2
from ross.engine.containers import config as container_config
from ross.engine.containers.store import ContainerRecord
from ross.engine.engine import Engine
from ross.errors import InvalidArgument, NotFound
from ross.protocols.bridge import CallInfo

#: Runtime handlers served (kubelet's RuntimeClass); "" is the default.
RUNTIME_HANDLERS = ("",)
_PROTOCOLS = {api_pb2.TCP: "tcp", api_pb2.UDP: "udp", api_pb2.SCTP: "sctp"}
#: A stopped pod's containers get no grace: kubelet stopped them first,
#: with the pod's, and what remains is killed (containerd's rule).
KILL_NOW = 0


def _pause_layer() -> io.BytesIO:
    """
    The pause image's one layer: the directories the runtime mounts on,
    and nothing else (the same bytes every time, so the same image).
    """
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("dev", "etc", "proc", "sys"):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
    data.seek(0)
    return data


def cri_records(engine: Engine, kind: str) -> Iterable[tuple[ContainerRecord, Meta]]:
    """
    The engine containers that are the CRI's sandboxes or containers
    (C{kind}), with their metadata.
    """
    for record in list(engine.containers.records.values()):
        meta = meta_of(record)
        if meta is not None and meta.kind == kind:
            yield record, meta


def find(engine: Engine, kind: str, ref: str) -> tuple[ContainerRecord, Meta]:
    """
    The sandbox or container (C{kind}) with ID C{ref} or a unique prefix
    of it; NotFound otherwise (an engine container the CRI did not make
    is not found either).
    """
    if not ref:
        raise InvalidArgument(f"no {kind} ID given")
    matches = [(r, m) for r, m in cri_records(engine, kind) if r.id.startswith(ref)]
    exact = [(r, m) for r, m in matches if r.id == ref]
    if exact:
        return exact[0]
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise InvalidArgument(f"{kind} ID prefix {ref[:64]!r} is ambiguous")
    raise NotFound(f"{'pod sandbox' if kind == SANDBOX else 'container'} {ref[:64]!r} not found")


def labels_match(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


class SandboxAPI:
    """
    The pod sandbox RPCs of runtime.v1.RuntimeService.
    """

    def __init__(self, engine: Engine, network: cni.CNI | None = None) -> None:
        self._engine = engine
        self._cni = network
        self._pause_lock = DeferredLock()

    async def _pause_image(self) -> None:
        """
        Make the pause image unless it is there; one at a time, so two
        pods started at once make it once.
        """
        await self._pause_lock.acquire()
        try:
            try:
                await self._engine.images.resolve(PAUSE_IMAGE)
            except NotFound:
                await self._engine.images.import_image(_pause_layer(), PAUSE_IMAGE, message="Ross's pod sandbox")
        finally:
            self._pause_lock.release()

    async def RunPodSandbox(self, request: api_pb2.RunPodSandboxRequest,
                            call: CallInfo) -> api_pb2.RunPodSandboxResponse:
        config = request.config
        md = config.metadata
        if not (md.name and md.namespace and md.uid):
            raise InvalidArgument("RunPodSandbox: the metadata needs a name, a namespace and a uid")
        if request.runtime_handler not in RUNTIME_HANDLERS:
            raise InvalidArgument(f"unknown runtime handler {request.runtime_handler[:64]!r}")
        modes = config.linux.security_context.namespace_options
        if modes.pid == api_pb2.TARGET:
            raise InvalidArgument("a pod's PID namespace cannot be a container's (TARGET)")
        host_network = modes.network == api_pb2.NODE
        meta = Meta(kind=SANDBOX, name=md.name, attempt=md.attempt, uid=md.uid, namespace=md.namespace,
                    labels=strings(config.labels), annotations=strings(config.annotations),
                    log_directory=config.log_directory, runtime_handler=request.runtime_handler,
                    host_network=host_network, namespace_modes=(modes.network, modes.pid, modes.ipc))
        name = engine_name("POD", md.name, md.namespace, md.uid, md.attempt)
        dns = config.dns_config
        bindings = tuple(port_bindings(config.port_mappings))
        network = None
        if not host_network and self._cni is not None:
            network = await self._cni.config()
        container = container_config.ContainerConfig(
            image=PAUSE_IMAGE, cmd=("pause",), hostname="" if host_network else config.hostname,
            labels=meta.engine_labels())
        host = container_config.HostConfig(
            # On a CNI network the pod gets a namespace of its own that the
            # plugins set up; else Ross's bridge, which publishes its ports.
            network_mode="host" if host_network else "none" if network is not None else "",
            ipc_mode="host" if modes.ipc == api_pb2.NODE else "",
            # Its own PID namespace (its PID 1 the pod's, which containers
            # sharing the pod's join), or the host's.
            pid_mode="host" if modes.pid == api_pb2.NODE else "",
            port_bindings=() if host_network or network is not None else bindings,
            dns=tuple(dns.servers), dns_search=tuple(dns.searches), dns_options=tuple(dns.options),
            log_config=container_config.LogConfig(type="none"),
            pause=True,
            # The pod's: set in its network and IPC namespaces, which its
            # containers join.
            sysctls=strings(config.linux.sysctls),
        )
        await self._pause_image()
        record = await self._engine.containers.create(name, container, host)
        try:
            started = await self._engine.containers.start_container(record.id)
            if network is not None:
                assert self._cni is not None
                pod = cni.PodNetwork(namespace=md.namespace, name=md.name, uid=md.uid,
                                     port_mappings=cni.port_mappings(config.port_mappings, _PROTOCOLS))
                await self._cni.add(record.id, f"/proc/{started.state.pid}/ns/net", network, pod)
        except BaseException:
            await self._engine.containers.remove(record.id, force=True)
            raise
        return api_pb2.RunPodSandboxResponse(pod_sandbox_id=record.id)

    async def StopPodSandbox(self, request: api_pb2.StopPodSandboxRequest,
                             call: CallInfo) -> api_pb2.StopPodSandboxResponse:
        try:
            record, _ = find(self._engine, SANDBOX, request.pod_sandbox_id)
        except NotFound:
            # Idempotent in the CRI: a pod already removed is stopped.
            return api_pb2.StopPodSandboxResponse()
        for member, _ in self._members(record.id):
            await self._stop(member.id, KILL_NOW)
        await self._network_down(record)
        await self._stop(record.id, KILL_NOW)
        return api_pb2.StopPodSandboxResponse()

    async def _network_down(self, record: ContainerRecord) -> None:
        """
        Take the pod off its CNI network while its namespace still exists
        (the plugins free its address whether or not it does).
        """
        if self._cni is not None:
            netns = f"/proc/{record.state.pid}/ns/net" if record.state.running else ""
            await self._cni.delete(record.id, netns)

    async def _stop(self, cid: str, timeout: int) -> None:
        record = self._engine.containers.records.get(cid)
        if record is not None and record.state.running:
            await self._engine.containers.stop_container(cid, timeout=timeout)

    def _members(self, sandbox_id: str) -> list[tuple[ContainerRecord, Meta]]:
        return [(r, m) for r, m in cri_records(self._engine, CONTAINER) if m.sandbox_id == sandbox_id]

    async def RemovePodSandbox(self, request: api_pb2.RemovePodSandboxRequest,
                               call: CallInfo) -> api_pb2.RemovePodSandboxResponse:
        try:
            record, _ = find(self._engine, SANDBOX, request.pod_sandbox_id)
        except NotFound:
            # Already removed: the CRI asks for no error.
            return api_pb2.RemovePodSandboxResponse()
        for member, _ in self._members(record.id):
            await self._engine.containers.remove(member.id, force=True)
        await self._network_down(record)
        await self._engine.containers.remove(record.id, force=True)
        return api_pb2.RemovePodSandboxResponse()

    async def PodSandboxStatus(self, request: api_pb2.PodSandboxStatusRequest,
                               call: CallInfo) -> api_pb2.PodSandboxStatusResponse:
        record, meta = find(self._engine, SANDBOX, request.pod_sandbox_id)
        info = {}
        if request.verbose:
            info["info"] = json.dumps({"pid": record.state.pid if record.state.running else 0,
                                       "image": PAUSE_IMAGE, "runtimeHandler": meta.runtime_handler,
                                       "runtimeType": "ross", "snapshotKey": record.snapshot_key}, sort_keys=True)
        return api_pb2.PodSandboxStatusResponse(status=sandbox_status(self._engine, record, meta, self._cni), info=info)

    async def ListPodSandbox(self, request: api_pb2.ListPodSandboxRequest,
                             call: CallInfo) -> api_pb2.ListPodSandboxResponse:
        f = request.filter
        items = []
        for record, meta in sorted(cri_records(self._engine, SANDBOX), key=lambda rm: rm[0].created_ns):
            if f.id and not record.id.startswith(f.id):
                continue
            if f.HasField("state") and _state(record) != f.state.state:
                continue
            if not labels_match(meta.labels, f.label_selector):
                continue
            items.append(api_pb2.PodSandbox(
                id=record.id, metadata=_metadata(meta), state=_state(record), created_at=record.created_ns,
                labels=meta.labels, annotations=meta.annotations, runtime_handler=meta.runtime_handler))
        return api_pb2.ListPodSandboxResponse(items=items)


def sandbox_status(engine: Engine, record: ContainerRecord, meta: Meta,
                   network_plugins: cni.CNI | None = None) -> api_pb2.PodSandboxStatus:
    """
    A pod sandbox's status: its state, metadata, namespaces and address
    (on its CNI network, where C{network_plugins} put it, else Ross's).
    """
    network, pid, ipc = (api_pb2.NamespaceMode.Name(m) for m in meta.namespace_modes)
    return api_pb2.PodSandboxStatus(
        id=record.id,
        metadata=_metadata(meta),
        state=_state(record),
        created_at=record.created_ns,
        network=api_pb2.PodSandboxNetworkStatus(ip=_address(engine, record, meta, network_plugins)),
        linux=api_pb2.LinuxPodSandboxStatus(namespaces=api_pb2.Namespace(
            options=api_pb2.NamespaceOption(network=network, pid=pid, ipc=ipc))),
        labels=meta.labels,
        annotations=meta.annotations,
        runtime_handler=meta.runtime_handler,
    )


def _address(engine: Engine, record: ContainerRecord, meta: Meta, network_plugins: cni.CNI | None) -> str:
    if meta.host_network or not record.state.running:
        return ""
    address = network_plugins.address(record.id) if network_plugins is not None else ""
    if address or engine.network is None:
        return address
    for _, endpoint in engine.network.endpoints_of(record.id):
        if endpoint.address:
            return endpoint.address.partition("/")[0]
    return ""


def port_bindings(mappings: Iterable[api_pb2.PortMapping]) -> Iterable[container_config.PortBinding]:
    """
    The pod's host ports as the engine publishes them; a mapping without
    a host port publishes nothing (Kubernetes' hostPort 0).
    """
    for m in mappings:
        if m.protocol not in _PROTOCOLS:
            raise InvalidArgument(f"invalid port mapping protocol {m.protocol}")
        if not 0 < m.container_port < 65536 or not 0 <= m.host_port < 65536:
            raise InvalidArgument(f"invalid port mapping {m.host_port}:{m.container_port}")
        if m.host_port:
            yield container_config.PortBinding(container_port=f"{m.container_port}/{_PROTOCOLS[m.protocol]}",
                                  host_ip=m.host_ip, host_port=str(m.host_port))


def _metadata(meta: Meta) -> api_pb2.PodSandboxMetadata:
    return api_pb2.PodSandboxMetadata(name=meta.name, uid=meta.uid, namespace=meta.namespace, attempt=meta.attempt)


def _state(record: ContainerRecord) -> Any:
    return api_pb2.SANDBOX_READY if record.state.running else api_pb2.SANDBOX_NOTREADY
