# -*- test-case-name: ross.test.test_system -*-
"""
The engine root: owns every subsystem and their order of start and stop.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ross.engine.events import EventBus
from ross.engine.snapshots import OverlaySnapshotter


@attrs.frozen
class EngineConfig:
    """
    Daemon-wide settings the engine runs with.

    @ivar root: persistent state (content, snapshots, metadata, logs).
    @ivar exec_root: runtime state (sockets, shim state), usually on tmpfs.
    @ivar listen: addresses the API is served on, for Info.
    @ivar cgroup_parent: cgroup directory containers are created under.
    """

    root: Path
    exec_root: Path
    listen: tuple[str, ...] = ()
    cgroup_parent: str = "ross"
    insecure_registries: tuple[str, ...] = ()


class Engine:
    """
    Everything the daemon does, reachable only from the reactor thread.
    """

    _log = Logger()

    def __init__(self, reactor: object, config: EngineConfig) -> None:
        self.reactor = reactor
        self.config = config
        self.events = EventBus(reactor)  # type: ignore[arg-type]
        self.snapshotter = OverlaySnapshotter(reactor, config.root / "snapshots" / "overlayfs", events=self.events)

    def start(self) -> Deferred[None]:
        for path in (self.config.root, self.config.exec_root):
            path.mkdir(parents=True, exist_ok=True)
        d = self.snapshotter.start()

        def started(_: object) -> None:
            self._log.info("engine started (root {root}, exec-root {exec_root})",
                           root=str(self.config.root), exec_root=str(self.config.exec_root))
            self.events.publish("daemon", "start", "ross")

        return d.addCallback(started)

    def counts(self) -> dict[str, int]:
        """
        Object counts for Info: containers by state and images.
        """
        return {
            "containers": 0,
            "containers_running": 0,
            "containers_paused": 0,
            "containers_stopped": 0,
            "images": 0,
        }

    def stop(self) -> Deferred[None]:
        self.events.publish("daemon", "stop", "ross")
        return self.snapshotter.stop()
