"""
Tests for health checks' pure parts: settings, docker's status rules, and
the monitor's scheduling on a fake clock.
"""

from __future__ import annotations

from typing import Any

import attrs
from twisted.internet.defer import Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.trial.unittest import SynchronousTestCase

from ross.cli.containers import _duration_ns, create_request
from ross.client.base import CliError
from ross.engine.containers import config as cfg
from ross.engine.containers.health import (
    DEFAULT_INTERVAL_NS,
    DEFAULT_RETRIES,
    DEFAULT_TIMEOUT_NS,
    KILL_GRACE,
    HealthMonitor,
    LimitedOutput,
    Probe,
    RunningCheck,
    fold,
    go_duration,
    probe_of,
)
from ross.engine.containers.store import HealthResult, State
from ross.engine.events import Event, EventFilter
from ross.errors import FailedPrecondition, InvalidArgument
from ross.protocols.shim import ContainerStartError

S = 1_000_000_000


class ProbeTests(SynchronousTestCase):
    def test_defaults(self) -> None:
        """
        What the config leaves unset takes docker's defaults: 30 s interval
        and timeout, no start period, 3 retries.
        """
        probe = probe_of(cfg.HealthConfig(test=("CMD", "true")))
        self.assertEqual(probe, Probe(args=("true",), interval_ns=DEFAULT_INTERVAL_NS, timeout_ns=DEFAULT_TIMEOUT_NS,
                                      start_period_ns=0, retries=DEFAULT_RETRIES))
        self.assertEqual((DEFAULT_INTERVAL_NS, DEFAULT_TIMEOUT_NS, DEFAULT_RETRIES), (30 * S, 30 * S, 3))

    def test_forms(self) -> None:
        """
        CMD runs its arguments as they are; CMD-SHELL under /bin/sh -c.
        """
        shell = probe_of(cfg.HealthConfig(test=("CMD-SHELL", "exit 1"), interval_ns=S // 5, timeout_ns=S,
                                          start_period_ns=2 * S, retries=2))
        assert shell is not None
        self.assertEqual(shell.args, ("/bin/sh", "-c", "exit 1"))
        self.assertEqual((shell.interval_ns, shell.timeout_ns, shell.start_period_ns, shell.retries),
                         (S // 5, S, 2 * S, 2))
        exec_form = probe_of(cfg.HealthConfig(test=("CMD", "cat", "/etc/hostname")))
        assert exec_form is not None
        self.assertEqual(exec_form.args, ("cat", "/etc/hostname"))

    def test_none(self) -> None:
        """
        No config, an empty test (only settings) and NONE run nothing.
        """
        self.assertIsNone(probe_of(None))
        self.assertIsNone(probe_of(cfg.HealthConfig(interval_ns=S)))
        self.assertIsNone(probe_of(cfg.HealthConfig(test=("NONE",))))


def result(exit_code: int, start_s: float = 100.0) -> HealthResult:
    return HealthResult(start_ns=int(start_s * S), end_ns=int(start_s * S) + 1000, exit_code=exit_code,
                        output=f"code {exit_code}")


def apply(state: State, r: HealthResult, probe: Probe) -> State:
    return attrs.evolve(state, **fold(state, r, probe))


class FoldTests(SynchronousTestCase):
    probe = Probe(args=("true",), interval_ns=S, timeout_ns=S, start_period_ns=0, retries=2)
    starting = State(status="running", started_ns=100 * S, health="starting")

    def test_success_makes_healthy(self) -> None:
        """
        One success makes the container healthy and ends a failing streak.
        """
        state = apply(self.starting, result(1), self.probe)
        self.assertEqual((state.health, state.failing_streak), ("starting", 1))
        state = apply(state, result(0), self.probe)
        self.assertEqual((state.health, state.failing_streak), ("healthy", 0))

    def test_retries_failures_make_unhealthy(self) -> None:
        """
        C{retries} consecutive failures make it unhealthy, from starting or
        healthy; the streak goes on counting.
        """
        state = apply(self.starting, result(0), self.probe)
        state = apply(state, result(1), self.probe)
        self.assertEqual((state.health, state.failing_streak), ("healthy", 1))
        state = apply(state, result(-1), self.probe)
        self.assertEqual((state.health, state.failing_streak), ("unhealthy", 2))
        state = apply(state, result(3), self.probe)
        self.assertEqual((state.health, state.failing_streak), ("unhealthy", 3))
        state = apply(state, result(0), self.probe)
        self.assertEqual((state.health, state.failing_streak), ("healthy", 0))

    def test_start_period(self) -> None:
        """
        Failures of checks started within the start period do not count
        while the container is starting; later ones do.
        """
        probe = attrs.evolve(self.probe, start_period_ns=5 * S, retries=1)
        state = self.starting
        for t in (101, 102, 104.9):
            state = apply(state, result(1, t), probe)
        self.assertEqual((state.health, state.failing_streak), ("starting", 0))
        state = apply(state, result(1, 105), probe)
        self.assertEqual((state.health, state.failing_streak), ("unhealthy", 1))

    def test_start_period_after_healthy(self) -> None:
        """
        Once it was healthy, failures count even within the start period.
        """
        probe = attrs.evolve(self.probe, start_period_ns=60 * S, retries=1)
        state = apply(self.starting, result(0, 101), probe)
        state = apply(state, result(1, 102), probe)
        self.assertEqual((state.health, state.failing_streak), ("unhealthy", 1))

    def test_log_keeps_last_five(self) -> None:
        state = self.starting
        for code in range(7):
            state = apply(state, result(code, 100 + code), self.probe)
        self.assertEqual([r.exit_code for r in state.health_log], [2, 3, 4, 5, 6])
        self.assertEqual(state.health_log[-1].output, "code 6")


class FormatTests(SynchronousTestCase):
    def test_go_duration(self) -> None:
        """
        Durations print as Go's, as docker's timeout message shows them.
        """
        for ns, text in ((200_000_000, "200ms"), (S, "1s"), (30 * S, "30s"), (1_500_000_000, "1.5s"),
                         (90 * S, "1m30s"), (3600 * S, "1h0m0s"), (1_500_000, "1.5ms"), (0, "0s"),
                         (2500, "2.5µs"), (7, "7ns"), (-S, "-1s")):
            self.assertEqual(go_duration(ns), text)

    def test_limited_output(self) -> None:
        """
        The first 4096 bytes are kept, "..." marks the cut; invalid UTF-8
        is replaced.
        """
        out = LimitedOutput()
        out.write("stdout", b"a" * 4000)
        out.write("stderr", b"b" * 200)
        out.write("stdout", b"c")
        self.assertEqual(out.text(), "a" * 4000 + "b" * 96 + "...")
        small = LimitedOutput()
        small.write("stdout", b"ok\xff\n")
        self.assertEqual(small.text(), "ok\ufffd\n")
        exact = LimitedOutput()
        exact.write("stdout", b"x" * 4096)
        self.assertEqual(exact.text(), "x" * 4096)


class ConfigTests(SynchronousTestCase):
    def test_bad_durations_refused(self) -> None:
        """
        docker's messages for durations under 1 ms and negative retries;
        zero means "not given".
        """
        cases = [
            (cfg.HealthConfig(test=("CMD", "true"), interval_ns=-S), "Interval in Healthcheck cannot be less than 1ms"),
            (cfg.HealthConfig(test=("CMD", "true"), interval_ns=999_999), "Interval in Healthcheck cannot be less than 1ms"),
            (cfg.HealthConfig(test=("CMD", "true"), timeout_ns=1), "Timeout in Healthcheck cannot be less than 1ms"),
            (cfg.HealthConfig(start_period_ns=-5), "StartPeriod in Healthcheck cannot be less than 1ms"),
            (cfg.HealthConfig(test=("CMD", "true"), retries=-1), "Retries in Healthcheck cannot be negative"),
            (cfg.HealthConfig(test=("HTTP", "x")), "invalid health check type 'HTTP'"),
            (cfg.HealthConfig(test=("CMD-SHELL",)), "invalid health check: CMD-SHELL needs a command"),
            (cfg.HealthConfig(test=("CMD", "a\0b")), "contains a NUL byte"),
        ]
        for health, message in cases:
            e = self.assertRaises(InvalidArgument, cfg.validate, cfg.ContainerConfig(image="x", healthcheck=health),
                                  cfg.HostConfig(), 1)
            self.assertIn(message, str(e))
        cfg.validate_healthcheck(cfg.HealthConfig(test=("CMD", "true"), interval_ns=1_000_000))
        cfg.validate_healthcheck(cfg.HealthConfig(test=("NONE",)))

    def test_image_healthcheck_merged(self) -> None:
        """
        The image's HEALTHCHECK is the default; each setting the container
        gives overrides only itself; NONE disables it.
        """
        image = cfg.ImageDefaults.from_oci({"Cmd": ["sh"], "Healthcheck": {
            "Test": ["CMD-SHELL", "true"], "Interval": 2 * S, "Timeout": 3 * S, "StartPeriod": 4 * S, "Retries": 5}})
        assert image.healthcheck is not None
        effective = cfg.merge(cfg.ContainerConfig(image="x"), image, "c" * 64).healthcheck
        self.assertEqual(effective, cfg.HealthConfig(("CMD-SHELL", "true"), 2 * S, 3 * S, 4 * S, 5))
        flags = cfg.ContainerConfig(image="x", healthcheck=cfg.HealthConfig(interval_ns=S // 5, retries=1))
        effective = cfg.merge(flags, image, "c" * 64).healthcheck
        self.assertEqual(effective, cfg.HealthConfig(("CMD-SHELL", "true"), S // 5, 3 * S, 4 * S, 1))
        none = cfg.ContainerConfig(image="x", healthcheck=cfg.HealthConfig(test=("NONE",)))
        self.assertIsNone(probe_of(cfg.merge(none, image, "c" * 64).healthcheck))

    def test_bad_image_healthcheck_ignored(self) -> None:
        """
        Values of the wrong type in an image's Healthcheck count as unset.
        """
        image = cfg.ImageDefaults.from_oci({"Healthcheck": {"Test": "true", "Interval": "5s", "Retries": True}})
        self.assertEqual(image.healthcheck, cfg.HealthConfig())


class CliTests(SynchronousTestCase):
    def request(self, *argv: str) -> Any:
        from ross.client.base import ArgumentParser
        from ross.cli.containers import _add_create_flags

        parser = ArgumentParser(prog="ross create", add_help=False)
        _add_create_flags(parser, False)
        return create_request(parser.parse_args([*argv, "busybox"])).config.healthcheck

    def test_flags(self) -> None:
        """
        Go durations in nanoseconds; settings without a command are sent
        (they override the image's); nothing given sends nothing.
        """
        h = self.request("--health-cmd", "true", "--health-interval", "200ms", "--health-timeout", "1m30s",
                         "--health-start-period", "1.5s", "--health-retries", "2")
        self.assertEqual((list(h.test), h.interval_ns, h.timeout_ns, h.start_period_ns, h.retries),
                         (["CMD-SHELL", "true"], S // 5, 90 * S, 1_500_000_000, 2))
        h = self.request("--health-interval", "1s")
        self.assertEqual((list(h.test), h.interval_ns), ([], S))
        self.assertEqual(list(self.request("--no-healthcheck").test), ["NONE"])
        self.assertEqual(list(self.request().test), [])
        self.assertEqual(_duration_ns("0", "--x"), 0)

    def test_bad_flags(self) -> None:
        """
        docker's CLI refusals: negative values, bad durations, and
        --no-healthcheck with other health flags.
        """
        for argv, message in (
            (("--health-cmd", "true", "--health-interval=-1s"), "--health-interval cannot be negative"),
            (("--health-start-period=-2s",), "--health-start-period cannot be negative"),
            (("--health-retries=-1",), "--health-retries cannot be negative"),
            (("--health-interval", "5"), 'invalid argument "5" for "--health-interval" flag'),
            (("--no-healthcheck", "--health-cmd", "true"), "--no-healthcheck conflicts with --health-* options"),
        ):
            e = self.assertRaises(CliError, self.request, *argv)
            self.assertIn(message, str(e))


class FakeChecks:
    """
    Checks that start when asked and end when the test says.
    """

    def __init__(self) -> None:
        self.started: list[RunningCheck] = []
        self.killed: list[RunningCheck] = []
        self.fail_with: Exception | None = None

    def start(self, args: tuple[str, ...]) -> Deferred[RunningCheck]:
        if self.fail_with is not None:
            return fail(self.fail_with)
        check = RunningCheck(done=Deferred(), kill=lambda: None, abandon=lambda: None, output=LimitedOutput())
        check.kill = lambda: self.killed.append(check)
        check.abandon = lambda: check.done.callback(None)
        self.started.append(check)
        return succeed(check)


@attrs.frozen
class Status:
    exit_code: int


class MonitorTests(SynchronousTestCase):
    probe = Probe(args=("true",), interval_ns=10 * S, timeout_ns=3 * S, start_period_ns=0, retries=3)

    def setUp(self) -> None:
        self.clock = Clock()
        self.checks = FakeChecks()
        self.results: list[HealthResult] = []
        self.monitor = HealthMonitor(self.clock, self.probe, self.checks.start, self.results.append)
        self.monitor.start()

    def test_interval_from_the_end(self) -> None:
        """
        The first check runs an interval after the start; the next an
        interval after the previous one ended, never two at once.
        """
        self.clock.advance(9.9)
        self.assertEqual(self.checks.started, [])
        self.clock.advance(0.1)
        self.assertEqual(len(self.checks.started), 1)
        self.assertTrue(self.monitor.checking)
        self.clock.advance(2)
        check = self.checks.started[0]
        check.output.write("stdout", b"fine\n")
        check.done.callback(Status(0))
        self.assertFalse(self.monitor.checking)
        self.assertEqual(self.results, [HealthResult(10 * S, 12 * S, 0, "fine\n")])
        self.clock.advance(9.9)
        self.assertEqual(len(self.checks.started), 1)
        self.clock.advance(0.1)
        self.assertEqual(len(self.checks.started), 2)

    def test_timeout(self) -> None:
        """
        A check past its timeout counts as failed (-1, docker's message) at
        once and is killed; the next waits for it to end.
        """
        self.clock.advance(10)
        check = self.checks.started[0]
        self.clock.advance(3)
        self.assertEqual(self.results, [HealthResult(10 * S, 13 * S, -1, "Health check exceeded timeout (3s)")])
        self.assertEqual(self.checks.killed, [check])
        self.clock.advance(KILL_GRACE - 1)
        self.assertEqual(len(self.checks.started), 1)
        check.done.callback(Status(137))
        self.assertEqual(len(self.results), 1)
        self.clock.advance(10)
        self.assertEqual(len(self.checks.started), 2)

    def test_unkillable_let_go(self) -> None:
        """
        A check that does not end after its kill is let go after a grace
        period, and checks go on.
        """
        self.clock.advance(10)
        self.clock.advance(3)
        self.clock.advance(KILL_GRACE)
        self.assertFalse(self.monitor.checking)
        self.clock.advance(10)
        self.assertEqual(len(self.checks.started), 2)

    def test_stop(self) -> None:
        """
        Stopping kills the running check, ignores its result and runs no
        more.
        """
        self.clock.advance(10)
        check = self.checks.started[0]
        self.monitor.stop()
        self.assertEqual(self.checks.killed, [check])
        check.done.callback(Status(137))
        self.clock.advance(100)
        self.assertEqual(self.results, [])
        self.assertEqual(len(self.checks.started), 1)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_stop_while_idle(self) -> None:
        self.monitor.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_cannot_start(self) -> None:
        """
        A command that cannot run is a failed check with the reason; the
        container not running is one too.
        """
        self.checks.fail_with = ContainerStartError(127, "exec: \"nosuch\": executable file not found in $PATH")
        self.clock.advance(10)
        self.checks.fail_with = FailedPrecondition("the container is not running")
        self.clock.advance(10)
        self.assertEqual([(r.exit_code, r.output) for r in self.results], [
            (127, "exec: \"nosuch\": executable file not found in $PATH"),
            (-1, "the container is not running"),
        ])

    def test_lost_session_not_counted(self) -> None:
        """
        A check whose session was lost (the container going away) reports
        nothing; checks go on.
        """
        self.clock.advance(10)
        self.checks.started[0].done.callback(None)
        self.assertEqual(self.results, [])
        self.clock.advance(10)
        self.assertEqual(len(self.checks.started), 2)


class EventFilterTests(SynchronousTestCase):
    def test_health_status_prefix(self) -> None:
        """
        event=health_status matches every "health_status: STATUS", as in
        docker.
        """
        event = Event(type="container", action="health_status: healthy", actor_id="a", attributes={}, time_ns=0)
        self.assertTrue(EventFilter(actions=frozenset({"health_status"})).matches(event))
        self.assertTrue(EventFilter(actions=frozenset({"health_status: healthy"})).matches(event))
        self.assertFalse(EventFilter(actions=frozenset({"health_status: unhealthy"})).matches(event))
