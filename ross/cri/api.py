# -*- test-case-name: ross.test.integration.test_cri_runtime -*-
"""
The CRI's two services over one engine, as generic handlers for the gRPC
server (through the same bridge and error table as ross.v1).
"""

from __future__ import annotations

from typing import Any, Sequence

from ross.cri.cni import CNI
from ross.cri.images import ImageAPI
from ross.cri.runtime import RuntimeAPI
from ross.cri.streaming import StreamServer
from ross.cri.v1 import api_pb2
from ross.engine.engine import Engine
from ross.protocols.bridge import Bridge


def cri_handlers(engine: Engine, bridge: Bridge, cni_conf_dir: str, cni_bin_dirs: Sequence[str],
                 streams: StreamServer | None = None) -> list[Any]:
    """
    Generic handlers of runtime.v1.RuntimeService and ImageService; pods
    join the CNI network configured in C{cni_conf_dir} (plugins from
    C{cni_bin_dirs}), or Ross's bridge when there is none; Exec, Attach
    and PortForward hand out URLs on C{streams}.
    """
    network = CNI(engine.reactor, cni_conf_dir, cni_bin_dirs, engine.config.root / "cri" / "cni")
    services = api_pb2.DESCRIPTOR.services_by_name
    return [bridge.service(services["RuntimeService"], RuntimeAPI(engine, network, streams)),
            bridge.service(services["ImageService"], ImageAPI(engine))]
