"""
The host's subnet lock (L{ross.engine.network.claims.lock_subnets}): one
holder at a time, a waiter let in when the holder lets go, and a waiter
that gives up after its timeout rather than hanging.
"""

from __future__ import annotations

import os
import threading
import time

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.network.claims import lock_subnets


class SubnetLockTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.join(self.mktemp(), "subnets.lock")

    def test_one_holder(self) -> None:
        held = lock_subnets(self.path)
        assert held is not None
        self.addCleanup(os.close, held)
        self.assertIsNone(lock_subnets(self.path, timeout=0.1))

    def test_waiter_let_in(self) -> None:
        held = lock_subnets(self.path)
        assert held is not None
        threading.Timer(0.2, os.close, [held]).start()
        started = time.monotonic()
        second = lock_subnets(self.path, timeout=10)
        self.assertIsNotNone(second)
        assert second is not None
        os.close(second)
        self.assertGreaterEqual(time.monotonic() - started, 0.15)
