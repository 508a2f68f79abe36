"""
Health checks for real: busybox containers whose checks run through the
shim every 200 ms, seen through the CLI (ps, inspect, events) and the API.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

import grpc
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.engine.containers.health import exec_check
from ross.engine.events import Event
from ross.engine.runtime.shim import MAX_FINISHED_EXECS
from ross.testing.containers import ContainerTestCase, sleep
from ross.testing.images import busybox_layer, docker_archive, image_config, load_archive
from ross.testing.leaks import processes_mentioning
from ross.v1 import common_pb2, container_pb2

FAST = ("--health-interval", "200ms")


class HealthTests(ContainerTestCase):
    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        self.events: list[Event] = []
        self.addCleanup(self.daemon.engine.events.subscribe(self.events.append))

    @inlineCallbacks
    def run_d(self, *args: str) -> Any:
        result = yield self.ross("run", "-d", *args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.decode().strip()

    @inlineCallbacks
    def inspect(self, name: str) -> Any:
        result = yield self.ross("inspect", name)
        self.assertEqual(result.returncode, 0, result.stderr)
        return json.loads(result.stdout)[0]

    @inlineCallbacks
    def health_until(self, name: str, predicate: Any, timeout: float = 20.0) -> Any:
        """
        Poll inspect until C{predicate(State.Health)} holds; that Health.
        """
        deadline = time.monotonic() + timeout
        while True:
            container = yield self.inspect(name)
            health = container["State"].get("Health")
            if health is not None and predicate(health):
                return health
            if time.monotonic() > deadline:
                self.fail(f"health of {name} never got there: {health}")
            yield sleep(0.1)

    @inlineCallbacks
    def ps(self, *filters: str) -> Any:
        argv = ["ps"]
        for f in filters:
            argv += ["--filter", f]
        result = yield self.ross(*argv)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.decode()

    def health_events(self, cid: str) -> list[str]:
        return [e.action for e in self.events if e.actor_id == cid and e.action.startswith("health_status")]

    @inlineCallbacks
    def test_passing(self) -> Any:
        """
        A passing check makes the container healthy: inspect shows docker's
        State.Health, ps the status and filter, one health_status event;
        the checks leave no exec events nor exec IDs.
        """
        cid = yield self.run_d("--name", "good", "--health-cmd", "echo ok; echo err >&2", *FAST,
                               "busybox", "sleep", "1000")
        health = yield self.health_until("good", lambda h: h["Status"] == "healthy" and len(h["Log"]) >= 2)
        self.assertEqual(health["FailingStreak"], 0)
        self.assertEqual(set(health), {"Status", "FailingStreak", "Log"})
        entry = health["Log"][0]
        self.assertEqual(set(entry), {"Start", "End", "ExitCode", "Output"})
        self.assertEqual((entry["ExitCode"], entry["Output"]), (0, "ok\nerr\n"))
        self.assertLessEqual(entry["Start"], entry["End"])
        container = yield self.inspect("good")
        self.assertEqual(container["Config"]["Healthcheck"], {"Test": ["CMD-SHELL", "echo ok; echo err >&2"],
                                                             "Interval": 200_000_000})
        self.assertNotIn("healthcheck", container["Config"])
        self.assertIsNone(container["ExecIDs"])
        out = yield self.ps()
        self.assertRegex(out, r"Up .* \(healthy\)")
        out = yield self.ps("health=healthy")
        self.assertIn("good", out)
        for other in ("unhealthy", "starting", "none"):
            out = yield self.ps(f"health={other}")
            self.assertNotIn("good", out)
        self.assertEqual(self.health_events(cid), ["health_status: healthy"])
        self.assertEqual([e.action for e in self.events if e.actor_id == cid and e.action.startswith("exec")], [])

    @inlineCallbacks
    def test_failing(self) -> Any:
        """
        `retries` failures in a row make it unhealthy; the streak and the
        last five results with their output are kept.
        """
        cid = yield self.run_d("--name", "bad", "--health-cmd", "echo broken >&2; exit 3", *FAST,
                               "--health-retries", "2", "busybox", "sleep", "1000")
        health = yield self.health_until("bad", lambda h: h["Status"] == "unhealthy" and len(h["Log"]) == 5)
        self.assertGreaterEqual(health["FailingStreak"], 5)
        self.assertEqual({(e["ExitCode"], e["Output"]) for e in health["Log"]}, {(3, "broken\n")})
        out = yield self.ps("health=unhealthy")
        self.assertRegex(out, r"Up .* \(unhealthy\)\s+bad")
        self.assertEqual(self.health_events(cid), ["health_status: unhealthy"])

    @inlineCallbacks
    def test_output_truncated(self) -> Any:
        """
        Output beyond 4096 bytes is cut, with "...".
        """
        yield self.run_d("--name", "chatty", "--health-cmd", "yes | head -c 10000", *FAST, "busybox", "sleep", "1000")
        health = yield self.health_until("chatty", lambda h: h["Status"] == "healthy")
        self.assertEqual(health["Log"][0]["Output"], "y\n" * 2048 + "...")

    @inlineCallbacks
    def test_timeout_kills(self) -> Any:
        """
        A check past its timeout fails with -1 and docker's message, and is
        killed with what it started: hung checks never pile up.
        """
        yield self.run_d("--name", "hung", "--health-cmd", "sleep 7777; echo never", *FAST,
                         "--health-timeout", "300ms", "--health-retries", "1", "busybox", "sleep", "1000")
        health = yield self.health_until("hung", lambda h: len(h["Log"]) >= 4)
        self.assertEqual(health["Status"], "unhealthy")
        self.assertEqual({(e["ExitCode"], e["Output"]) for e in health["Log"]},
                         {(-1, "Health check exceeded timeout (300ms)")})
        # At most the check in flight.
        self.assertLessEqual(len([p for p, cmd in processes_mentioning("sleep 7777") if cmd.startswith("sleep ")]), 1)
        result = yield self.ross("stop", "-t", "0", "hung")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.wait_for(lambda: not processes_mentioning("sleep 7777"))

    @inlineCallbacks
    def test_start_period(self) -> Any:
        """
        Failures within the start period do not count while starting.
        """
        yield self.run_d("--name", "slow", "--health-cmd", "exit 1", *FAST, "--health-retries", "1",
                         "--health-start-period", "1h", "busybox", "sleep", "1000")
        health = yield self.health_until("slow", lambda h: len(h["Log"]) >= 3)
        self.assertEqual((health["Status"], health["FailingStreak"]), ("starting", 0))
        out = yield self.ps("health=starting")
        self.assertRegex(out, r"Up .* \(health: starting\)\s+slow")

    @inlineCallbacks
    def test_cannot_run(self) -> Any:
        """
        An exec-form check whose command does not exist fails with 127 and
        the reason.
        """
        request = container_pb2.CreateContainerRequest(name="lost", config=container_pb2.ContainerConfig(
            image="busybox", cmd=common_pb2.StringList(values=["sleep", "1000"]),
            healthcheck=container_pb2.HealthConfig(test=["CMD", "nosuchcheck"], interval_ns=200_000_000,
                                                   retries=1)))
        yield self.daemon.call(self.api.containers.CreateContainer, request)
        result = yield self.ross("start", "lost")
        self.assertEqual(result.returncode, 0, result.stderr)
        health = yield self.health_until("lost", lambda h: h["Status"] == "unhealthy")
        self.assertEqual(health["Log"][0]["ExitCode"], 127)
        self.assertIn("nosuchcheck", health["Log"][0]["Output"])

    @inlineCallbacks
    def test_image_healthcheck_and_none(self) -> Any:
        """
        An image's HEALTHCHECK runs; flags override it field by field;
        --no-healthcheck disables it (no Health, ps health=none).
        """
        layer = yield deferToThread(busybox_layer)
        config = image_config(["sha256:" + hashlib.sha256(layer).hexdigest()], cmd=["sleep", "1000"], extra={
            "Healthcheck": {"Test": ["CMD-SHELL", "echo from-image"], "Interval": 200_000_000, "Retries": 1}})
        tmp = Path(self.mktemp())
        tmp.mkdir()
        built = docker_archive(tmp / "checked.tar", tags=["checked:latest"], layers=[layer], config=config)
        yield self.daemon.call(load_archive, self.api, built.path)
        yield self.run_d("--name", "inherits", "checked")
        health = yield self.health_until("inherits", lambda h: h["Status"] == "healthy")
        self.assertEqual(health["Log"][0]["Output"], "from-image\n")
        container = yield self.inspect("inherits")
        self.assertEqual(container["Config"]["Healthcheck"],
                         {"Test": ["CMD-SHELL", "echo from-image"], "Interval": 200_000_000, "Retries": 1})
        yield self.run_d("--name", "overrides", "--health-cmd", "exit 1", "checked")
        health = yield self.health_until("overrides", lambda h: h["Status"] == "unhealthy")
        self.assertEqual(health["Log"][0]["ExitCode"], 1)
        yield self.run_d("--name", "unchecked", "--no-healthcheck", "checked")
        # Long enough for several checks of the others.
        yield self.health_until("inherits", lambda h: len(h["Log"]) == 5)
        container = yield self.inspect("unchecked")
        self.assertNotIn("Health", container["State"])
        # docker's merge: NONE replaces the image's test, its other settings stay.
        self.assertEqual(container["Config"]["Healthcheck"], {"Test": ["NONE"], "Interval": 200_000_000, "Retries": 1})
        self.assertFalse(self.daemon.engine.containers.health.monitoring(container["Id"]))
        out = yield self.ps("health=none")
        self.assertIn("unchecked", out)
        self.assertNotIn("inherits", out)

    @inlineCallbacks
    def test_paused_skips(self) -> Any:
        """
        No checks run while paused; they resume on unpause.
        """
        cid = yield self.run_d("--name", "napping", "--health-cmd", "true", *FAST, "busybox", "sleep", "1000")
        yield self.health_until("napping", lambda h: h["Status"] == "healthy")
        result = yield self.ross("pause", "napping")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertFalse(self.daemon.engine.containers.health.monitoring(cid))
        before = yield self.inspect("napping")
        yield sleep(1.0)
        after = yield self.inspect("napping")
        self.assertEqual(after["State"]["Health"], before["State"]["Health"])
        out = yield self.ps()
        self.assertRegex(out, r"Up .* \(Paused\)\s+napping")
        result = yield self.ross("unpause", "napping")
        self.assertEqual(result.returncode, 0, result.stderr)
        last = before["State"]["Health"]["Log"][-1]["End"]
        yield self.health_until("napping", lambda h: h["Log"][-1]["Start"] > last)

    @inlineCallbacks
    def test_stop_and_restart(self) -> Any:
        """
        Stopping ends the checks and keeps the last health; a start resets
        it to starting (a second health_status: healthy follows).
        """
        cid = yield self.run_d("--name", "cycle", "--health-cmd", "true", *FAST, "busybox", "sleep", "1000")
        yield self.health_until("cycle", lambda h: h["Status"] == "healthy")
        result = yield self.ross("stop", "-t", "0", "cycle")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertFalse(self.daemon.engine.containers.health.monitoring(cid))
        container = yield self.inspect("cycle")
        self.assertEqual(container["State"]["Health"]["Status"], "healthy")
        out = yield self.ross("ps", "-a")
        self.assertRegex(out.stdout.decode(), r"Exited \(137\) .* ago\s+cycle")
        result = yield self.ross("start", "cycle")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.wait_for(lambda: self.health_events(cid) == ["health_status: healthy"] * 2)
        result = yield self.ross("rm", "-f", "cycle")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertFalse(self.daemon.engine.containers.health.monitoring(cid))

    @inlineCallbacks
    def test_bad_settings_refused(self) -> Any:
        """
        Durations under 1 ms, negative ones and negative retries are
        INVALID_ARGUMENT at create, with docker's messages; nothing is
        created. The CLI refuses negatives itself, as docker's.
        """
        cases = [
            (container_pb2.HealthConfig(test=["CMD", "true"], interval_ns=500_000),
             "Interval in Healthcheck cannot be less than 1ms"),
            (container_pb2.HealthConfig(test=["CMD", "true"], interval_seconds=-1),
             "Interval in Healthcheck cannot be less than 1ms"),
            (container_pb2.HealthConfig(test=["CMD", "true"], timeout_ns=-5), "Timeout in Healthcheck cannot be less than 1ms"),
            (container_pb2.HealthConfig(start_period_ns=1), "StartPeriod in Healthcheck cannot be less than 1ms"),
            (container_pb2.HealthConfig(test=["CMD", "true"], retries=-1), "Retries in Healthcheck cannot be negative"),
            (container_pb2.HealthConfig(test=["WGET", "x"]), "invalid health check type"),
        ]
        for health, message in cases:
            request = container_pb2.CreateContainerRequest(name="refused", config=container_pb2.ContainerConfig(
                image="busybox", healthcheck=health))
            error = yield self.assertFailure(self.daemon.call(self.api.containers.CreateContainer, request),
                                             grpc.RpcError)
            self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn(message, error.details())
        result = yield self.ross("create", "--health-cmd", "true", "--health-interval", "0.5ms", "busybox")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"Error: Interval in Healthcheck cannot be less than 1ms", result.stderr)
        result = yield self.ross("create", "--health-cmd", "true", "--health-retries=-1", "busybox")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"--health-retries cannot be negative", result.stderr)
        result = yield self.ross("ps", "--filter", "health=sick")
        self.assertEqual(result.returncode, 125)
        self.assertIn(b"Unrecognised filter value for health: sick", result.stderr)
        self.assertEqual(list(self.daemon.engine.containers.records), [])

    @inlineCallbacks
    def test_finished_sessions_bounded(self) -> Any:
        """
        The shim keeps only the recent finished exec sessions: checks run
        for a container's whole life without growing it.
        """
        cid = yield self.run_d("--name", "many", "busybox", "sleep", "1000")
        shim = self.daemon.engine.containers.supervisor.shims[cid]
        for _ in range(MAX_FINISHED_EXECS + 6):
            check = yield Deferred.fromCoroutine(exec_check(shim, ("true",)))
            status = yield check.done
            self.assertEqual(status.exit_code, 0)
        state = yield shim.state()
        self.assertEqual(len(state.execs), MAX_FINISHED_EXECS)
