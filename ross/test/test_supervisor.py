# -*- test-case-name: ross.test.test_supervisor -*-
"""
The supervisor of running containers on its own, on a Clock: which shim
is a container's, which exits it hands on, and when restarts are
scheduled and cancelled (the manager's use of it is in
L{ross.test.test_container_lifecycle}).
"""

from __future__ import annotations

from typing import Any

from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.internet.testing import EventLoggingObserver
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import SynchronousTestCase

from ross.engine.containers import config as cfg
from ross.engine.containers.store import ContainerRecord, State
from ross.engine.containers.supervisor import BACKOFF_MAX, BACKOFF_RESET, BACKOFF_START, Supervisor
from ross.engine.runtime.runtime import ExitStatus
from ross.errors import NotFound
from ross.testing.fakes import FakeRuntime, FakeShim


def _record(policy: str = "always", retries: int = 0, ran: float = 1.0, **state: Any) -> ContainerRecord:
    """
    A record of container "c1" with that restart policy, that ran C{ran}
    seconds before it exited.
    """
    host = cfg.HostConfig(restart_policy=cfg.RestartPolicy(name=policy, maximum_retry_count=retries))
    return ContainerRecord(id="c1", name="one", created_ns=0, image="busybox", image_id="sha256:0",
                           config=cfg.ContainerConfig(image="busybox"), host=host,
                           state=State(status="exited", started_ns=1, finished_ns=1 + int(ran * 1e9), **state))


class SupervisorTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.exits: list[tuple[str, ExitStatus]] = []
        self.restarts: list[str] = []
        self.restart_result: Deferred[None] = succeed(None)
        self.supervisor = Supervisor(self.clock, self.exited, self.restart)
        self.runtime = FakeRuntime(self)

    async def exited(self, cid: str, status: ExitStatus) -> None:
        self.exits.append((cid, status))

    def restart(self, cid: str) -> Deferred[None]:
        self.restarts.append(cid)
        return self.restart_result

    def logged(self) -> EventLoggingObserver:
        """
        What is logged from now to the end of the test.
        """
        observer = EventLoggingObserver()
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        return observer

    def shim(self) -> FakeShim:
        return self.runtime.shim("c1")

    def test_watch_hands_on_exit(self) -> None:
        """
        A watched shim is the container's until its container exits; its
        exit status is then handed on.
        """
        shim = self.shim()
        self.supervisor.watch("c1", shim)
        self.assertIs(self.supervisor.shims["c1"], shim)
        status = shim.exit(3)
        self.assertEqual(self.exits, [("c1", status)])
        self.assertNotIn("c1", self.supervisor.shims)

    def test_exit_of_old_run_keeps_new_shim(self) -> None:
        """
        The exit of a container's earlier run, heard late, does not drop
        the shim of its current run.
        """
        old, new = self.shim(), self.shim()
        self.supervisor.watch("c1", old)
        self.supervisor.watch("c1", new)
        old.exit(0)
        self.assertIs(self.supervisor.shims["c1"], new)

    def test_let_go(self) -> None:
        """
        A shim let go of (the daemon stopping) is dropped, with no exit
        handed on and nothing logged.
        """
        logged = self.logged()
        shim = self.shim()
        self.supervisor.watch("c1", shim)
        shim.close()
        self.assertEqual((self.exits, self.supervisor.shims, len(logged)), ([], {}, 0))

    def test_stopping(self) -> None:
        """
        A container is being stopped within L{Supervisor.stopping} only,
        also when what it wraps fails.
        """
        with self.supervisor.stopping("c1"):
            self.assertTrue(self.supervisor.is_stopping("c1"))
        self.assertFalse(self.supervisor.is_stopping("c1"))
        with self.assertRaises(ValueError):
            with self.supervisor.stopping("c1"):
                raise ValueError()
        self.assertFalse(self.supervisor.is_stopping("c1"))

    def test_policies(self) -> None:
        """
        No restart without a policy, for a container stopped by hand, for
        on-failure after a clean exit or its retries; else one is
        scheduled.
        """
        failed = ExitStatus(exit_code=1)
        for record, status in [(_record(""), failed), (_record("no"), failed),
                               (_record(manually_stopped=True), failed),
                               (_record("on-failure"), ExitStatus(exit_code=0)),
                               (_record("on-failure", retries=2, restart_count=2), failed)]:
            self.assertFalse(self.supervisor.restart_later(record, status))
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(self.supervisor.restart_later(_record("on-failure", retries=2, restart_count=1), failed))
        self.assertTrue(self.supervisor.restart_later(_record("unless-stopped"), ExitStatus(exit_code=0)))

    def test_backoff(self) -> None:
        """
        Restarts come a delay after the exit that doubles up to the
        maximum, and is the first again after a run long enough.
        """
        delays = []
        for ran in [1.0] * 12 + [BACKOFF_RESET]:
            self.assertTrue(self.supervisor.restart_later(_record(ran=ran), ExitStatus(exit_code=1)))
            (call,) = self.clock.getDelayedCalls()
            # (The clock's seconds are a float sum: the delay read back is rounded.)
            delays.append(round(call.getTime() - self.clock.seconds(), 9))
            self.clock.advance(delays[-1])
        self.assertEqual(delays[:3], [BACKOFF_START, BACKOFF_START * 2, BACKOFF_START * 4])
        self.assertEqual(delays[-2:], [BACKOFF_MAX, BACKOFF_START])
        self.assertEqual(self.restarts, ["c1"] * 13)

    def test_failed_restart_logged(self) -> None:
        """
        A restart that fails is logged.
        """
        logged = self.logged()
        self.restart_result = fail(RuntimeError("no"))
        self.supervisor.restart_later(_record(), ExitStatus(exit_code=1))
        self.clock.advance(BACKOFF_START)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        self.assertEqual(logged[0]["log_format"], "restart of {id} failed")

    def test_refused_restart_logged(self) -> None:
        """
        A restart the engine refuses (its network removed meanwhile) is
        logged as a warning with the reason, not as a failure with a
        traceback.
        """
        logged = self.logged()
        self.restart_result = fail(NotFound("network nb not found"))
        self.supervisor.restart_later(_record(), ExitStatus(exit_code=1))
        self.clock.advance(BACKOFF_START)
        self.assertEqual(self.flushLoggedErrors(), [])
        self.assertEqual((logged[0]["log_level"], logged[0]["error"]), (LogLevel.warn, "network nb not found"))

    def test_cancel_forget(self) -> None:
        """
        A cancelled restart does not come; a forgotten container's next
        delay is the first again.
        """
        self.supervisor.restart_later(_record(), ExitStatus(exit_code=1))
        self.supervisor.cancel("c1")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.supervisor.restart_later(_record(), ExitStatus(exit_code=1))
        self.supervisor.forget("c1")
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.supervisor.restart_later(_record(), ExitStatus(exit_code=1))
        (call,) = self.clock.getDelayedCalls()
        self.assertEqual(call.getTime() - self.clock.seconds(), BACKOFF_START)
        self.clock.advance(BACKOFF_MAX)
        self.assertEqual(self.restarts, ["c1"])

    def test_stop(self) -> None:
        """
        Stopping cancels every pending restart and lets go of every shim.
        """
        shim = self.shim()
        self.supervisor.watch("c1", shim)
        self.supervisor.restart_later(_record(), ExitStatus(exit_code=1))
        self.supervisor.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.assertTrue(shim.closed)
        self.assertEqual(self.supervisor.shims, {})
