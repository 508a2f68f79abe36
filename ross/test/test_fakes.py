"""
The verified fakes of L{ross.testing.fakes} keep the contracts they stand
for: the in-memory snapshotter passes the snapshotter conformance suite;
the scripted runtime and shim give what a test scripts and fail it on any
call it did not.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import SynchronousTestCase, TestCase

from ross.engine.runtime.runtime import ExitStatus, ShimDetached
from ross.errors import FailedPrecondition
from ross.test.snapshotter_suite import SnapshotterSuite
from ross.testing.fakes import ANY, FakeRuntime, MemorySnapshotter


class MemorySnapshotterTests(SnapshotterSuite, TestCase):
    """
    The in-memory snapshotter passes the ISnapshotter conformance suite
    (what does not need real mounts).
    """

    def make_snapshotter(self) -> Deferred[Any]:
        snapshotter = MemorySnapshotter()
        self.addCleanup(snapshotter.close)
        return succeed(snapshotter)


class _Cleanups:
    """
    What FakeRuntime needs of a test case, keeping its cleanups for the
    test to run.
    """

    def __init__(self) -> None:
        self.cleanups: list[Callable[..., object]] = []

    def addCleanup(self, f: Callable[..., object], *args: object) -> None:
        self.cleanups.append(lambda: f(*args))


@attrs.frozen
class _Spec:
    id: str


class FakeRuntimeTests(SynchronousTestCase):
    """
    The scripted runtime gives what the test scripted, in order, and fails
    the test on any other call or on a scripted call that never came.
    """

    def setUp(self) -> None:
        self.case = _Cleanups()
        self.runtime = FakeRuntime(self.case)

    def assert_verdict(self, problem: str | None) -> None:
        (cleanup,) = self.case.cleanups
        if problem is None:
            cleanup()
        else:
            error = self.assertRaises(AssertionError, cleanup)
            self.assertIn(problem, str(error))

    def test_scripted_calls(self) -> None:
        """
        Expected calls get their scripted results: a shim, its PID, a
        failure; with every one made, the cleanup passes.
        """
        shim = self.runtime.expect_create("c1")
        shim.expect_start().expect_kill(15).expect_kill(9, result=FailedPrecondition("gone"))
        self.runtime.expect_delete("c1")
        created = self.successResultOf(self.runtime.create(_Spec("c1")))
        self.assertIs(created, shim)
        self.assertEqual(self.runtime.specs, [_Spec("c1")])
        self.assertEqual(self.successResultOf(shim.start()), shim.pid)
        self.assertEqual(shim.status, "running")
        self.successResultOf(shim.kill(15))
        self.failureResultOf(shim.kill(9), FailedPrecondition)
        self.successResultOf(self.runtime.delete("c1"))
        self.assert_verdict(None)

    def test_deferred_result(self) -> None:
        """
        A Deferred as the result is what the call returns: the test fires it.
        """
        answer: Deferred[None] = Deferred()
        self.runtime.expect_delete("c1", answer)
        d = self.runtime.delete("c1")
        self.assertNoResult(d)
        answer.callback(None)
        self.successResultOf(d)

    def test_unexpected_call(self) -> None:
        """
        A call nobody expected fails, and fails the test at cleanup.
        """
        self.failureResultOf(self.runtime.reconnect("c1"), AssertionError)
        self.assert_verdict("runtime.reconnect(container_id='c1'), expecting nothing more")

    def test_wrong_arguments(self) -> None:
        """
        A call with other arguments than the next expected one fails.
        """
        shim = self.runtime.expect_start("c1")
        self.assertIs(self.successResultOf(self.runtime.start(_Spec("c1"))), shim)
        shim.expect_kill(15)
        self.failureResultOf(shim.kill(9), AssertionError)
        self.assert_verdict("c1.kill(signal=9, all=False, session=''), expecting c1.kill(signal=15")

    def test_any(self) -> None:
        """
        An argument expected as ANY takes any value; the others still count.
        """
        self.runtime.expect_check(ANY)
        self.runtime.expect_check(ANY)
        self.successResultOf(self.runtime.check(_Spec("c1")))
        self.successResultOf(self.runtime.check(_Spec("c2")))
        self.runtime.expect_delete(ANY)
        self.failureResultOf(self.runtime.reconnect("c3"), AssertionError)
        self.assert_verdict("expecting runtime.delete(container_id=ANY)")

    def test_out_of_order(self) -> None:
        """
        Calls come in the order they were expected.
        """
        self.runtime.expect_check("c1")
        self.runtime.expect_delete("c1")
        self.failureResultOf(self.runtime.delete("c1"), AssertionError)
        self.assert_verdict("expecting runtime.check(container_id='c1')")

    def test_missing_call(self) -> None:
        """
        An expected call that never came fails the test at cleanup.
        """
        self.runtime.expect_delete("c1")
        self.assert_verdict("never came: [\"runtime.delete(container_id='c1')\"]")

    def test_exit(self) -> None:
        """
        The test ends the container: exited and every wait fire with the
        status, and a wait after that too.
        """
        shim = self.runtime.shim("c1")
        waiting = shim.wait()  # bounded: a fake's Deferred, checked synchronously
        self.assertNoResult(shim.exited)
        status = shim.exit(137, signal=9)
        self.assertEqual(status, ExitStatus(exit_code=137, signal=9))
        self.assertEqual(self.successResultOf(shim.exited), status)
        self.assertEqual(self.successResultOf(waiting), status)
        self.assertEqual(self.successResultOf(shim.wait()), status)  # bounded: synchronous
        self.assertEqual((shim.status, shim.exit_status), ("stopped", status))
        self.assert_verdict(None)

    def test_close(self) -> None:
        """
        Letting go of a shim fails its exited with ShimDetached, as the real
        handle does; it is not a request the test scripts.
        """
        shim = self.runtime.shim("c1")
        shim.close()
        self.failureResultOf(shim.exited, ShimDetached)
        self.assertTrue(shim.closed)
        self.assert_verdict(None)
