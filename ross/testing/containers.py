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

from ross.errors import NotFound
from ross.testing.daemon import InProcessDaemon, run_cli
from ross.testing.images import load_busybox
from ross.testing.leaks import (
    cgroups_under,
    firewall_rules_of,
    mounts_under,
    network_links,
    nft_tables,
    processes_mentioning,
)


def catches(pid: int, signum: int) -> bool:
    """
    Whether process C{pid} has a handler for C{signum} (a shell's trap is
    set): before it has, a container's PID 1 ignores the signal.
    """
    try:
        with open(f"/proc/{pid}/status") as f:
            caught = int(next(line for line in f if line.startswith("SigCgt:")).split()[1], 16)
    except (OSError, StopIteration):
        return False
    return bool(caught & (1 << (signum - 1)))


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
        self.daemon = InProcessDaemon(self, **self.daemon_options())
        # Cleanups run last-in first-out: these run after the daemon stopped.
        self.addCleanup(self.check_no_network_left)
        self.addCleanup(self.check_no_processes)
        yield self.daemon.start()
        yield load_busybox(self.daemon)
        self.api = self.daemon.clients()
        self.cgroup_parent = self.daemon.daemon.engine.config.cgroup_parent
        self.addCleanup(self.check_nothing_left)

    def daemon_options(self) -> dict[str, Any]:
        """
        Options of the test's daemon (L{ross.services.wiring.build_daemon}'s).
        """
        return {}

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
        containers and spare, and no cgroup is left under the daemon's
        cgroup parent.
        """
        yield self.wait_for(lambda: not processes_mentioning(str(self.daemon.base)))
        self.assertEqual(cgroups_under(self.cgroup_parent), [])

    def check_no_network_left(self) -> None:
        """
        No network device, nftables table or firewall rule the test's
        daemon made is left: only its own names count (its bridge, device
        prefixes and table), so another daemon or docker at work beside the
        suite does not fail it.
        """
        network = self.daemon.network
        mine = (network.bridge, network.link_prefix, network.bridge_prefix)
        self.assertEqual(sorted(n for n in network_links() if n.startswith(mine)), [])
        self.assertEqual({f"ip {network.table}", f"inet {network.table}"} & nft_tables(), set())
        self.assertEqual(firewall_rules_of(network.table), [])

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
