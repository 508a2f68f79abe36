# -*- test-case-name: ross.test.test_daemon -*-
"""
The engine root: owns every subsystem and their order of start and stop.
"""

from __future__ import annotations

from pathlib import Path

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ross.engine.build.cache import BuildCache
from ross.engine.build.manager import BuildManager
from ross.engine.events import EventBus
from ross.engine.fsutil import private_children, private_dir
from ross.engine.containers.manager import ContainerManager
from ross.engine.containers.queries import ContainerQueries
from ross.engine.containers.store import ContainerRecord
from ross.engine.content.store import ContentStore
from ross.engine.images.store import ImageStore
from ross.engine.journal import EventJournal
from ross.engine.network.manager import NetworkConfig, NetworkManager
from ross.engine.reactors import IEngineReactor
from ross.engine.registry.manager import DEFAULT_CERTS_DIR, Registry
from ross.engine.runtime.runtime import Runtime
from ross.engine.runtime.userns import Remap, map_text
from ross.engine.snapshots import OverlaySnapshotter
from ross.engine.volumes import VolumeStore


#: Seconds after its start before the engine warms up for later container
#: starts (a spare shim, the default seccomp profile compiled): both take
#: CPU, a process's start and a compile, that the first answers of a
#: restarted daemon need. Under 50 containers logging 1 MB/s each (20
#: SIGKILLs, bench/reliability.py), the first answer came a median 0.93 s
#: after a restart with them waiting, 1.02 s with them at once.
WARM_UP_DELAY = 1.0


@attrs.frozen
class EngineConfig:
    """
    Daemon-wide settings the engine runs with.

    @ivar root: persistent state (content, snapshots, metadata, logs).
    @ivar exec_root: runtime state (sockets, shim state), usually on tmpfs.
    @ivar listen: addresses the API is served on, for Info.
    @ivar cgroup_parent: cgroup directory containers are created under.
    @ivar network: the default bridge and the nftables table.
    @ivar insecure_registries: registries (HOST:PORT) reached over plain http.
    @ivar userns_remap: the host ids containers' ids become (--userns-remap);
        None runs them in the host's user namespace.
    """

    root: Path
    exec_root: Path
    listen: tuple[str, ...] = ()
    cgroup_parent: str = "ross"
    insecure_registries: tuple[str, ...] = ()
    network: NetworkConfig = NetworkConfig()
    #: Where a registry's CA is looked for: C{HOST:PORT/ca.crt}.
    registry_certs_dir: Path = DEFAULT_CERTS_DIR
    userns_remap: Remap | None = None
    #: (registry, mirror HOST:PORT) pairs pulls from the registry go to.
    registry_mirrors: tuple[tuple[str, str], ...] = ()


class Engine:
    """
    Everything the daemon does, reachable only from the reactor thread.
    """

    _log = Logger()

    def __init__(self, reactor: IEngineReactor, config: EngineConfig) -> None:
        self.reactor = reactor
        self._warming: IDelayedCall | None = None
        self.config = config
        # The container manager's records, asked about by the pieces made
        # before it (container events carry their container's labels, as
        # dockerd's).
        records: dict[str, ContainerRecord] = {}
        queries = ContainerQueries(records)
        self.events = EventBus(reactor, journal=EventJournal(config.root / "events"),
                               common_attributes={"container": queries.labels_of})
        self.snapshotter = OverlaySnapshotter(reactor, config.root / "snapshots" / "overlayfs", events=self.events)
        self.content = ContentStore(reactor, config.root / "content")
        build_cache = BuildCache(reactor, config.root / "build" / "cache.db")
        self.images = ImageStore(reactor, config.root / "images", self.content, self.snapshotter, self.events,
                                 in_use=queries.image_users, lineage=build_cache.lineage)
        self.runtime = Runtime(reactor, config.exec_root / "containers")
        self.volumes = VolumeStore(reactor, config.root, self.events, users_of=queries.volume_users)
        self.network = NetworkManager(reactor, config.root, config.network, self.events, names_of=queries.names_of,
                                      dns_of=queries.dns_of)
        self.containers = ContainerManager(
            reactor, config.root, config.exec_root, self.events, self.images, self.snapshotter,
            self.runtime, self.volumes, cgroup_parent=config.cgroup_parent, network=self.network,
            remap=config.userns_remap, records=records)
        self.registry = Registry(reactor, self.images, self.events, config.insecure_registries,
                                 config.registry_certs_dir, dict(config.registry_mirrors))
        self.builds = BuildManager(reactor, config.root, self.images, self.containers, build_cache, self.registry)

    def start(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        await deferToThreadPool(self.reactor, self.reactor.getThreadPool(), self._make_private)
        await self.events.open()
        await self.snapshotter.start()
        await self.images.start()
        await self.volumes.start()
        await self.network.start()
        await self.containers.start()
        await self.builds.start()
        # Now that the containers that still run are known, free what the
        # others held (a daemon killed mid-way leaves such).
        await self.network.reconcile([r.id for r in self.containers.records.values() if r.state.running])
        self._warming = self.reactor.callLater(WARM_UP_DELAY, self._warm_up)
        self._log.info("engine started (root {root}, exec-root {exec_root})",
                       root=str(self.config.root), exec_root=str(self.config.exec_root))
        remap = self.config.userns_remap
        if remap is not None:
            self._log.info("containers run in user namespaces: uids {uids}, gids {gids} ({user}:{group})",
                           uids=map_text(remap.uid_map).strip(), gids=map_text(remap.gid_map).strip(),
                           user=remap.user, group=remap.group)
        self.events.publish("daemon", "start", "ross")

    def _warm_up(self) -> None:
        """
        What makes later container starts faster, done once the daemon
        serves (L{WARM_UP_DELAY}).
        """
        self._warming = None
        # A shim ready in advance takes the interpreter's start-up off the
        # next container start.
        self.runtime.keep_spare()
        # Likewise the builtin seccomp profile for docker's default
        # capabilities (in a thread; most containers run with it).
        self.runtime.seccomp.prepare()

    def _make_private(self) -> None:
        # Before anything is written into them, and fixing what an older
        # version left looser; the stores do the same for theirs.
        for path in (self.config.root, self.config.root / "snapshots", self.config.exec_root):
            private_dir(path)
        private_children(self.runtime.state_root)

    def counts(self) -> dict[str, int]:
        """
        Object counts for Info: containers by state and images.
        """
        return {**self.containers.counts(), "images": self.images.count}

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if self._warming is not None and self._warming.active():
            self._warming.cancel()
        self._warming = None
        self.events.publish("daemon", "stop", "ross")
        # Containers run on without the daemon; their shims wait for the next one.
        await self.containers.stop()
        await self.network.stop()
        await self.runtime.close()
        await self.volumes.stop()
        await self.registry.stop()
        await self.builds.stop()
        await self.images.stop()
        await self.snapshotter.stop()
        self.events.close()
