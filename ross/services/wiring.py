# -*- test-case-name: ross.test.test_daemon -*-
"""
Assembles the daemon: engine, bridge, servicers and the gRPC server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from twisted.logger import ILogObserver

from ross.engine.engine import Engine, EngineConfig
from ross.engine.network.manager import NetworkConfig
from ross.engine.reactors import IEngineReactor
from ross.engine.registry.manager import DEFAULT_CERTS_DIR
from ross.engine.runtime.userns import Remap
from ross.protocols.bridge import Bridge
from ross.protocols.firstuse import FirstCallHandler
from ross.services.daemon import EngineService, OrderedMultiService
from ross.services.direct import DirectChannels
from ross.address import Listener
from ross.dockerapi.server import DockerAPIService
from ross.services.grpc_server import GrpcServerService, TLSFiles
from ross.v1 import (
    container_pb2,
    image_pb2,
    network_pb2,
    snapshot_pb2,
    system_pb2,
    volume_pb2,
)


#: The Docker API's socket in the exec root.
DOCKER_SOCKET = "docker.sock"
#: The CRI's socket in the exec root (SPEC 15: unix:///run/ross/cri.sock).
CRI_SOCKET = "cri.sock"
#: Where interactive sessions' direct channels are handed out (SPEC 3).
DIRECT_SOCKET = "direct.sock"


class RossDaemon(OrderedMultiService):
    """
    The daemon's root service.

    @ivar engine: the engine.
    @ivar api: the gRPC server service.
    @ivar docker: the Docker API's listeners (None when turned off).
    @ivar cri: the CRI's gRPC server (None when turned off).
    @ivar cri_streams: the CRI's streaming server (None with the CRI off).
    @ivar direct: where interactive sessions' direct channels are handed out.
    """

    def __init__(self, engine: Engine, api: GrpcServerService, log_level: str = "info",
                 docker: DockerAPIService | None = None, cri: GrpcServerService | None = None,
                 cri_streams: Any = None, direct: DirectChannels | None = None,
                 log_file: str | None = None, syslog_prefix: str | None = None) -> None:
        super().__init__()
        self.engine = engine
        self.api = api
        self.docker = docker
        self.cri = cri
        self.cri_streams = cri_streams
        self.direct = direct
        self.locks: list[int] = []
        self._log_to = (log_level, log_file, syslog_prefix)
        EngineService(engine).setServiceParent(self)
        if direct is not None:
            # Listening before the RPCs that hand out its tickets.
            direct.setServiceParent(self)
        api.setServiceParent(self)
        if cri_streams is not None:
            # Before the CRI's RPCs, which hand out its URLs; stopped
            # after them, before the engine.
            cri_streams.setServiceParent(self)
        if cri is not None:
            cri.setServiceParent(self)
        if docker is not None:
            docker.setServiceParent(self)

    def setServiceParent(self, parent: Any) -> None:
        # twistd makes the Application our parent; it logs through the
        # observer the application names, so --log-level applies (and
        # twistd's --logfile or --syslog, which this observer replaces).
        from twisted.python.components import Componentized

        if isinstance(parent, Componentized):
            from ross.tlog import observer_for

            parent.setComponent(ILogObserver, observer_for(*self._log_to))
        super().setServiceParent(parent)


def service_handlers(engine: Engine, bridge: Bridge, listen: tuple[str, ...],
                     direct: DirectChannels | None = None) -> list[Any]:
    """
    One generic handler per service of the API; interactive sessions hand
    out direct channels through C{direct} (None: never).
    """
    from ross.services.containers import ContainerAPI
    from ross.services.images import ImageAPI
    from ross.services.networks import NetworkAPI
    from ross.services.snapshots import SnapshotterAPI
    from ross.services.system import SystemAPI
    from ross.services.volumes import VolumeAPI

    apis: list[tuple[Any, object]] = [
        (system_pb2.DESCRIPTOR.services_by_name["SystemService"], SystemAPI(engine, listen)),
        (container_pb2.DESCRIPTOR.services_by_name["ContainerService"], ContainerAPI(engine.containers, engine.reactor, direct)),
        (image_pb2.DESCRIPTOR.services_by_name["ImageService"], ImageAPI(engine.images, engine.registry, engine.builds, direct)),
        (snapshot_pb2.DESCRIPTOR.services_by_name["SnapshotterService"], SnapshotterAPI(engine)),
        (volume_pb2.DESCRIPTOR.services_by_name["VolumeService"], VolumeAPI(engine.volumes)),
        (network_pb2.DESCRIPTOR.services_by_name["NetworkService"], NetworkAPI(engine.network, engine.containers)),
    ]
    return [bridge.service(descriptor, impl) for descriptor, impl in apis]


def build_daemon(
    reactor: IEngineReactor,
    root: Path,
    exec_root: Path,
    listeners: Sequence[Listener],
    tls: TLSFiles | None = None,
    token: str | None = None,
    cgroup_parent: str = "ross",
    insecure_registries: tuple[str, ...] = (),
    registry_certs_dir: Path = DEFAULT_CERTS_DIR,
    log_level: str = "info",
    log_file: str | None = None,
    syslog_prefix: str | None = None,
    unary_timeout: float = 300.0,
    workers: int = 1024,
    max_streams: int = 512,
    network: NetworkConfig = NetworkConfig(),
    userns_remap: Remap | None = None,
    docker_listeners: Sequence[Listener] | None = None,
    cri_listeners: Sequence[Listener] | None = None,
    registry_mirrors: tuple[tuple[str, str], ...] = (),
    cni_conf_dir: str = "/etc/cni/net.d",
    cni_bin_dirs: Sequence[str] = ("/opt/cni/bin", "/usr/lib/cni"),
    cri_stream_address: tuple[str, int] = ("127.0.0.1", 0),
) -> RossDaemon:
    """
    The whole daemon, bound to its listeners but not started. The Docker
    API listens on C{docker_listeners}; None means the default,
    docker.sock beside ross.sock in C{exec_root}. The CRI is served on
    C{cri_listeners} (unix sockets; None means cri.sock in C{exec_root},
    empty none) by a gRPC server of its own on the same bridge: a kubelet
    sends no bearer token, and the CRI's socket serves the CRI only. Its
    pods join the CNI network configured in C{cni_conf_dir} (plugins from
    C{cni_bin_dirs}), Ross's bridge when there is none. Its
    streams (exec, attach, port-forward) are served on
    C{cri_stream_address} (host, port; port 0 is any free one). It logs
    from C{log_level} up, where L{ross.tlog.observer_for} says.
    """
    listen = tuple(str(listener) for listener in listeners)
    engine = Engine(
        reactor,
        EngineConfig(
            root=root,
            exec_root=exec_root,
            listen=listen,
            cgroup_parent=cgroup_parent,
            insecure_registries=insecure_registries,
            network=network,
            registry_certs_dir=registry_certs_dir,
            userns_remap=userns_remap,
            registry_mirrors=registry_mirrors,
        ),
    )
    bridge = Bridge(reactor, unary_timeout=unary_timeout, max_streams=max_streams)
    if cri_listeners is None:
        cri_listeners = [default_cri_listener(exec_root)]
    direct = DirectChannels(reactor, str(exec_root / DIRECT_SOCKET))
    api = GrpcServerService(
        reactor,
        bridge,
        service_handlers(engine, bridge, listen, direct),
        listeners,
        tls=tls,
        token=token,
        workers=workers,
    )
    api.bind()
    cri = cri_streams = None
    if cri_listeners:
        from ross.cri.streaming import StreamServer

        cri_streams = StreamServer(reactor, engine, *cri_stream_address)

        def cri_handlers() -> Any:
            from ross.cri.api import cri_handlers

            return cri_handlers(engine, bridge, cni_conf_dir, cni_bin_dirs, cri_streams)

        cri = GrpcServerService(reactor, bridge, [FirstCallHandler(cri_handlers)],
                                cri_listeners, workers=workers, what="CRI")
        cri.bind()
    if docker_listeners is None:
        docker_listeners = [default_docker_listener(exec_root)]
    docker = None
    if docker_listeners:
        def docker_site() -> Any:
            from ross.dockerapi.api import docker_site

            return docker_site(engine, token)

        docker = DockerAPIService(reactor, docker_site, docker_listeners, tls)
    return RossDaemon(engine, api, log_level, docker, cri, cri_streams, direct, log_file, syslog_prefix)


def default_docker_listener(exec_root: Path) -> Listener:
    """
    Where the Docker API listens by default: docker.sock in the daemon's
    run directory (/run/ross/docker.sock), as ross.sock.
    """
    return Listener("unix", path=str(exec_root / DOCKER_SOCKET))


def default_cri_listener(exec_root: Path) -> Listener:
    """
    Where the Kubernetes CRI listens by default: cri.sock in the daemon's
    run directory (/run/ross/cri.sock), as ross.sock.
    """
    return Listener("unix", path=str(exec_root / CRI_SOCKET))
