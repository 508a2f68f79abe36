# -*- test-case-name: ross.test.integration.test_cri_runtime -*-
"""
runtime.v1.RuntimeService: the runtime's own RPCs (Version, Status,
RuntimeConfig) with the pod sandbox (L{ross.cri.sandboxes}), container
(L{ross.cri.containers}) and stats (L{ross.cri.stats}) RPCs; what Ross does not serve yet answers
UNIMPLEMENTED (the bridge's rule for a missing method).
"""

from __future__ import annotations

import ross
from ross.cri.cni import CNI
from ross.cri.containers import ContainerAPI
from ross.cri.sandboxes import SandboxAPI
from ross.cri.stats import StatsAPI
from ross.cri.streams import StreamAPI
from ross.cri.streaming import StreamServer
from ross.cri.v1 import api_pb2
from ross.engine.engine import Engine
from ross.protocols.bridge import CallInfo

#: The version of the CRI's Version RPC itself (kubelet sends "v1").
KUBELET_API_VERSION = "0.1.0"
RUNTIME_NAME = "ross"
RUNTIME_API_VERSION = "v1"


class RuntimeAPI(SandboxAPI, ContainerAPI, StatsAPI, StreamAPI):
    """
    Reactor-side runtime.v1.RuntimeService.
    """

    def __init__(self, engine: Engine, network: CNI | None = None, streams: StreamServer | None = None) -> None:
        SandboxAPI.__init__(self, engine, network)
        ContainerAPI.__init__(self, engine, network)
        StatsAPI.__init__(self, engine)
        StreamAPI.__init__(self, engine, streams)

    async def Version(self, request: api_pb2.VersionRequest, call: CallInfo) -> api_pb2.VersionResponse:
        return api_pb2.VersionResponse(version=KUBELET_API_VERSION, runtime_name=RUNTIME_NAME,
                                       runtime_version=ross.__version__, runtime_api_version=RUNTIME_API_VERSION)

    async def Status(self, request: api_pb2.StatusRequest, call: CallInfo) -> api_pb2.StatusResponse:
        network = self._engine.network
        network_ready = network is not None
        conditions = [
            api_pb2.RuntimeCondition(type="RuntimeReady", status=True),
            api_pb2.RuntimeCondition(
                type="NetworkReady", status=network_ready,
                reason="" if network_ready else "NoNetwork",
                message="" if network_ready else "the daemon runs without its network manager"),
        ]
        return api_pb2.StatusResponse(
            status=api_pb2.RuntimeStatus(conditions=conditions),
            # Read-only binds can be made so through their submounts
            # (mount_setattr's AT_RECURSIVE, which the runtime needs).
            runtime_handlers=[api_pb2.RuntimeHandler(name="", features=api_pb2.RuntimeHandlerFeatures(
                recursive_read_only_mounts=True))],
            features=api_pb2.RuntimeFeatures())

    async def RuntimeConfig(self, request: api_pb2.RuntimeConfigRequest,
                            call: CallInfo) -> api_pb2.RuntimeConfigResponse:
        # Ross writes cgroupfs itself (no systemd scopes): kubelet must agree.
        return api_pb2.RuntimeConfigResponse(linux=api_pb2.LinuxRuntimeConfiguration(cgroup_driver=api_pb2.CGROUPFS))
