"""
L{ross.services.memory.MemoryTrim}: the daemon's free memory goes back to
the system once it is quiet after doing something, and only then.
"""

from __future__ import annotations

import gc

from twisted.trial.unittest import SynchronousTestCase

from ross.services.memory import CHECK_INTERVAL, MemoryTrim, malloc_trim, settle_gc
from ross.testing.fakes import SynchronousReactor


class MemoryTrimTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = SynchronousReactor()
        self.cpu = 0.0
        self.trims = 0

        def trim() -> None:
            self.trims += 1
            # Trimming costs CPU time, which is not work of the daemon.
            self.cpu += 0.05

        self.service = MemoryTrim(self.reactor, trim=trim, cpu=lambda: self.cpu)
        self.service.startService()
        self.addCleanup(self.service.stopService)

    def tick(self, cpu: float = 0.0) -> None:
        self.cpu += cpu
        self.reactor.advance(CHECK_INTERVAL)

    def test_after_start_once_quiet(self) -> None:
        """
        Start-up counts as work: the first quiet interval trims; quiet
        intervals after that do not.
        """
        self.tick(cpu=0.5)
        self.assertEqual(self.trims, 0)
        self.tick()
        self.assertEqual(self.trims, 1)
        for _ in range(10):
            self.tick()
        self.assertEqual(self.trims, 1)

    def test_after_work(self) -> None:
        """
        A burst of work is followed by one trim once it is over.
        """
        self.tick()
        self.assertEqual(self.trims, 1)
        self.tick(cpu=0.2)
        self.tick(cpu=0.2)
        self.assertEqual(self.trims, 1)
        self.tick()
        self.tick()
        self.assertEqual(self.trims, 2)

    def test_stop(self) -> None:
        """
        A stopped service checks no more.
        """
        self.service.stopService()
        self.tick(cpu=1)
        self.tick()
        self.assertEqual(self.trims, 0)
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_real_trim(self) -> None:
        """
        This system's C library trims (glibc: the daemon's hosts).
        """
        trim = malloc_trim()
        assert trim is not None
        self.assertIn(trim(), (0, 1))


class SettleTests(SynchronousTestCase):
    def test_settled_once_at_start(self) -> None:
        """
        The settle step runs once, when the service starts (after the
        daemon's other services), not at each check.
        """
        reactor = SynchronousReactor()
        settled: list[None] = []
        service = MemoryTrim(reactor, trim=lambda: None, cpu=lambda: 0.0, settle=lambda: settled.append(None))
        self.assertEqual(settled, [])
        service.startService()
        self.addCleanup(service.stopService)
        for _ in range(5):
            reactor.advance(CHECK_INTERVAL)
        self.assertEqual(settled, [None])

    def test_settle_gc_freezes(self) -> None:
        """
        L{settle_gc} leaves every object alive out of later collections.
        """
        self.addCleanup(gc.unfreeze)
        gc.unfreeze()
        kept = [object() for _ in range(100)]
        settle_gc()
        self.assertGreater(gc.get_freeze_count(), len(kept))
