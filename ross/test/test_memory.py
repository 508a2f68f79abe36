"""
L{ross.services.memory.MemoryTrim}: the daemon's free memory goes back to
the system once it is quiet after doing something, and only then.
"""

from __future__ import annotations

import gc
import subprocess
import sys
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ross.services.memory import (CHECK_INTERVAL, DIRTY_CPU, QUIET_CPU, SETTLE_CHECKS, MemoryTrim, malloc_trim,
                                  settle_gc)
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

    def test_after_small_work(self) -> None:
        """
        Work too small to count as busy but more than an idle daemon's
        (the periodic firewall check, some 6 ms) is followed by a trim at
        that very check; an idle daemon's own bit of CPU time is not.
        """
        self.tick()
        self.assertEqual(self.trims, 1)
        self.tick(cpu=DIRTY_CPU / 2)
        self.assertEqual(self.trims, 1)
        self.tick(cpu=(DIRTY_CPU + QUIET_CPU) / 2)
        self.assertEqual(self.trims, 2)
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


_ARENAS = """
import ctypes, sys, threading
from ross.services.memory import cap_arenas
if sys.argv[1] == "cap":
    assert cap_arenas(2)
barrier = threading.Barrier(7)
held = []
def allocate():
    held.append(bytearray(1 << 16))
    barrier.wait(10)
    barrier.wait(10)
threads = [threading.Thread(target=allocate) for _ in range(6)]
for t in threads:
    t.start()
barrier.wait(10)
ctypes.CDLL(None).malloc_stats()
barrier.wait(10)
for t in threads:
    t.join(10)
"""


class ArenaTests(SynchronousTestCase):
    def arenas(self, mode: str) -> int:
        result = subprocess.run([sys.executable, "-c", _ARENAS, mode], capture_output=True, timeout=60,
                                cwd=str(Path(__file__).resolve().parents[2]))
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stderr.count(b"Arena ")

    def test_capped(self) -> None:
        """
        Six threads allocating at once share two arenas once capped, and
        use more without the cap.
        """
        self.assertEqual(self.arenas("cap"), 2)
        self.assertGreater(self.arenas("default"), 2)


class SettleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = SynchronousReactor()
        self.cpu = 0.0
        self.settled: list[float] = []

        def settle() -> None:
            self.settled.append(self.reactor.seconds())
            # The collection costs CPU time, which is not work of the daemon.
            self.cpu += 0.05

        self.service = MemoryTrim(self.reactor, trim=lambda: None, cpu=lambda: self.cpu, settle=settle)
        self.addCleanup(self.service.stopService)

    def test_settled_once_quiet(self) -> None:
        """
        The settle step waits for the first quiet check after the service
        started (after the daemon's other services), not during start-up's
        work, and runs once.
        """
        self.service.startService()
        self.assertEqual(self.settled, [])
        self.cpu += 0.5
        self.reactor.advance(CHECK_INTERVAL)
        self.assertEqual(self.settled, [])
        for _ in range(5):
            self.reactor.advance(CHECK_INTERVAL)
        self.assertEqual(self.settled, [2 * CHECK_INTERVAL])

    def test_settled_under_constant_work(self) -> None:
        """
        A daemon busy from the start is settled after L{SETTLE_CHECKS}
        checks all the same.
        """
        self.service.startService()
        for _ in range(SETTLE_CHECKS + 5):
            self.cpu += 0.5
            self.reactor.advance(CHECK_INTERVAL)
        self.assertEqual(self.settled, [SETTLE_CHECKS * CHECK_INTERVAL])

    def test_settled_without_trim(self) -> None:
        """
        Where the C library cannot trim, the start-up is settled all the
        same.
        """
        from ross.services import memory

        self.patch(memory, "malloc_trim", lambda: None)
        service = MemoryTrim(self.reactor, cpu=lambda: 0.0, settle=lambda: self.settled.append(0.0))
        service.startService()
        self.addCleanup(service.stopService)
        self.reactor.advance(CHECK_INTERVAL)
        self.assertEqual(self.settled, [0.0])

    def test_settle_gc_freezes(self) -> None:
        """
        L{settle_gc} leaves every object alive out of later collections.
        """
        self.addCleanup(gc.unfreeze)
        gc.unfreeze()
        kept = [object() for _ in range(100)]
        settle_gc()
        self.assertGreater(gc.get_freeze_count(), len(kept))
