"""
A trial base class for tests that run containers: an in-process daemon with
busybox loaded, the CLI as a user runs it, and a check after each test that
nothing of its containers is left on the host.
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.internet.task import deferLater
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.engine.events import EventFilter
from ross.engine.network.manager import LINK_PREFIX
from ross.errors import NotFound
from ross.testing.daemon import InProcessDaemon, run_cli
from ross.testing.images import load_busybox
from ross.testing.leaks import cgroups_under, mounts_under, network_links, nft_tables, processes_mentioning


def sleep(seconds: float) -> Any:
    return deferLater(reactor, seconds, lambda: None)


class ContainerTestCase(TestCase):
    """
    A daemon with busybox loaded; checks after each test that nothing of
    its containers is left on the host.
    """

    timeout = 120

    # trial runs a Deferred-returning setUp; its TestCase keeps unittest's
    # `-> None` (twisted/twisted#12037).
    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        self.daemon = InProcessDaemon(self)
        # Cleanups run last-in first-out: these run after the daemon stopped.
        self.links_before, self.tables_before = network_links(), nft_tables()
        self.addCleanup(self.check_no_network_left)
        self.addCleanup(self.check_no_processes)
        yield self.daemon.start()
        # What this daemon made is known by the IDs in its events: other
        # daemons (another suite, a user's) may run beside this one.
        self.actor_ids: set[str] = set()
        self.daemon.engine.events.subscribe(lambda event: self.actor_ids.add(event.actor_id),
                                            EventFilter(types=frozenset({"container", "network"})))
        yield load_busybox(self.daemon)
        self.api = self.daemon.clients()
        self.cgroup_parent = self.daemon.daemon.engine.config.cgroup_parent
        self.addCleanup(self.check_nothing_left)

    @inlineCallbacks
    def check_nothing_left(self) -> Any:
        for record in list(self.daemon.engine.containers.records.values()):
            try:
                yield self.daemon.engine.containers.remove(record.id, force=True, volumes=True)
            except NotFound:
                pass
        self.assertEqual(mounts_under(self.daemon.base), [])
        snapshots = yield self.daemon.engine.snapshotter.list(["kind==active"])
        self.assertEqual(snapshots, [])

    @inlineCallbacks
    def check_no_processes(self) -> Any:
        """
        No shim (they name the daemon's state root) outlives the daemon's
        containers and spare, and no cgroup is left.
        """
        yield self.wait_for(lambda: not processes_mentioning(str(self.daemon.base)))
        self.assertEqual(cgroups_under(self.cgroup_parent), [])

    def check_no_network_left(self) -> None:
        """
        No network device or nftables table the test's daemon made is left:
        its default bridge, the host ends of its containers' veths and its
        user networks' bridges (by the IDs in its events), its table.
        """
        mine = (self.daemon.network.bridge,) + tuple(
            prefix for actor in self.actor_ids for prefix in (f"{LINK_PREFIX}{actor[:11]}", f"br-{actor[:12]}"))
        self.assertEqual(sorted(n for n in network_links() - self.links_before if n.startswith(mine)), [])
        self.assertEqual(sorted(t for t in nft_tables() - self.tables_before if t.split()[-1] == self.daemon.network.table), [])

    def ross(self, *args: str, input: bytes | None = None) -> Any:
        return deferToThread(run_cli, self.daemon.address, *args, input=input)

    @inlineCallbacks
    def wait_for(self, predicate: Any, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                self.fail(f"timed out waiting for {predicate}")
            yield sleep(0.05)

    def record(self, ref: str) -> Any:
        return self.daemon.engine.containers.resolve(ref)
