"""
The daemon killed with SIGKILL while containers run: they keep running,
their logs stay continuous, and a restarted daemon reconnects, learns the
exit status of a container that exited meanwhile, applies its restart
policy and resumes health checks.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing.daemon import DaemonProcess
from ross.testing.images import docker_archive
from ross.testing.leaks import cgroups_under, mounts_under, processes_mentioning


class DaemonRestartTests(TestCase):
    timeout = 240

    def setUp(self) -> None:
        self.daemon = DaemonProcess()
        self.addCleanup(self.daemon.cleanup)
        self.addCleanup(self.remove_all)

    def remove_all(self) -> Any:
        if self.daemon.process is None or self.daemon.process.poll() is not None:
            return None

        def remove() -> None:
            ids = self.daemon.ross("ps", "-aq", "--no-trunc").stdout.split()
            if ids:
                self.daemon.ross("rm", "-f", "-v", *[i.decode() for i in ids])

        return deferToThread(remove)

    def ross_ok(self, *args: str) -> bytes:
        result = self.daemon.ross(*args)
        if result.returncode != 0:
            raise AssertionError(f"ross {' '.join(args)} failed: {result.stderr.decode()}")
        return result.stdout

    def scenario(self) -> dict[str, Any]:
        """
        Blocking: three containers, SIGKILL the daemon, one exits while it
        is down, restart, look.
        """
        self.daemon.start()
        archive = docker_archive(self.daemon.base / "busybox.tar")
        self.ross_ok("load", "-i", str(archive.path))
        counter = "i=0; while true; do echo $i; i=$((i+1)); sleep 0.05; done"
        for name in ("one", "two"):
            self.ross_ok("run", "-d", "--name", name, "busybox", "sh", "-c", counter)
        # The third exits with 7 once a flag file appears in its volume.
        self.ross_ok("run", "-d", "--name", "three", "-v", f"{self.daemon.base}:/flag", "busybox", "sh", "-c",
                     "while [ ! -e /flag/go ]; do sleep 0.05; done; exit 7")
        # The fourth has a restart policy: it exits (3) while the daemon is
        # down and must be restarted by the next daemon, then it stays up.
        self.ross_ok("run", "-d", "--name", "four", "--restart", "always", "-v", f"{self.daemon.base}:/flag",
                     "busybox", "sh", "-c",
                     "if [ -e /flag/go ]; then exec sleep 1000; fi; "
                     "while [ ! -e /flag/go ]; do sleep 0.05; done; exit 3")
        time.sleep(0.5)
        names = ("one", "two", "three", "four")
        pids = {name: json.loads(self.ross_ok("inspect", name))[0]["State"]["Pid"] for name in names}
        self.daemon.kill()
        (self.daemon.base / "go").write_text("")
        time.sleep(1.0)
        self.daemon.start()
        deadline = time.monotonic() + 15
        while json.loads(self.ross_ok("inspect", "four"))[0]["State"]["Status"] != "running":
            if time.monotonic() > deadline:
                raise AssertionError("the restart policy did not bring 'four' back")
            time.sleep(0.1)
        inspected = {name: json.loads(self.ross_ok("inspect", name))[0] for name in names}
        states = {name: value["State"] for name, value in inspected.items()}
        states["four"]["RestartCount"] = inspected["four"]["RestartCount"]
        logs = self.ross_ok("logs", "one").decode().split()
        return {"pids": pids, "states": states, "logs": logs}

    @inlineCallbacks
    def test_sigkill_and_reconnect(self) -> Any:
        outcome = yield deferToThread(self.scenario)
        states, pids = outcome["states"], outcome["pids"]
        for name in ("one", "two"):
            self.assertEqual(states[name]["Status"], "running", states[name])
            self.assertEqual(states[name]["Pid"], pids[name])
        self.assertEqual(states["three"]["Status"], "exited")
        self.assertEqual(states["three"]["ExitCode"], 7)
        self.assertNotEqual(states["four"]["Pid"], pids["four"])
        self.assertEqual(states["four"]["RestartCount"], 1)
        numbers = [int(n) for n in outcome["logs"]]
        self.assertGreater(len(numbers), 20)
        # Continuous: every number from 0 up, none lost while the daemon was down.
        self.assertEqual(numbers, list(range(len(numbers))))
        # The reconnected daemon still controls its containers.
        result = yield deferToThread(self.daemon.ross, "stop", "-t", "1", "one", "two", "four")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield deferToThread(self.daemon.ross, "rm", "one", "two", "three", "four")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(mounts_under(self.daemon.base), [])
        self.assertEqual(cgroups_under(f"ross-test-{self.daemon.base.name}"), [])
        code = yield deferToThread(self.daemon.stop)
        self.assertIn(code, (0, -signal.SIGTERM))

    def health(self, name: str) -> dict[str, Any]:
        return json.loads(self.ross_ok("inspect", name))[0]["State"].get("Health") or {}

    def health_until(self, name: str, predicate: Any) -> dict[str, Any]:
        deadline = time.monotonic() + 20
        while not predicate(health := self.health(name)):
            if time.monotonic() > deadline:
                raise AssertionError(f"health of {name} never got there: {health}")
            time.sleep(0.1)
        return health

    def health_scenario(self) -> dict[str, Any]:
        """
        Blocking: a healthy container and one whose check hangs, the
        daemon SIGKILLed, the first's check made to fail meanwhile, the
        daemon back.
        """
        self.daemon.start()
        archive = docker_archive(self.daemon.base / "busybox.tar")
        self.ross_ok("load", "-i", str(archive.path))
        self.ross_ok("run", "-d", "--name", "watched", "-v", f"{self.daemon.base}:/flag", "--health-cmd",
                     "test ! -e /flag/sick", "--health-interval", "200ms", "--health-retries", "1",
                     "busybox", "sleep", "1000")
        self.ross_ok("run", "-d", "--name", "hanging", "--health-cmd", "sleep 8888; true", "--health-interval",
                     "200ms", "--health-timeout", "1h", "busybox", "sleep", "1000")
        self.health_until("watched", lambda h: h.get("Status") == "healthy")
        deadline = time.monotonic() + 20
        while not (hung := processes_mentioning("sleep 8888")):
            if time.monotonic() > deadline:
                raise AssertionError("the hanging check never ran")
            time.sleep(0.1)
        self.daemon.kill()
        db = sqlite3.connect(self.daemon.root / "containers.db")
        try:
            stored = json.loads(db.execute("SELECT record FROM containers WHERE name = 'watched'").fetchone()[0])["state"]
        finally:
            db.close()
        (self.daemon.base / "sick").write_text("")
        self.daemon.start()
        after = self.health_until("watched", lambda h: h.get("Status") == "unhealthy")
        # The check the killed daemon left running is killed by the next.
        deadline = time.monotonic() + 20
        while set(hung) & set(processes_mentioning("sleep 8888")):
            if time.monotonic() > deadline:
                raise AssertionError("the left-over health check still runs")
            time.sleep(0.1)
        self.ross_ok("rm", "-f", "watched", "hanging")
        return {"stored": stored, "after": after}

    @inlineCallbacks
    def test_health_checks_resume(self) -> Any:
        """
        The health state is stored with the container; a restarted daemon
        resumes the checks of the containers it re-adopts.
        """
        outcome = yield deferToThread(self.health_scenario)
        stored = outcome["stored"]
        self.assertEqual(stored["health"], "healthy")
        self.assertGreaterEqual(len(stored["health_log"]), 1)
        self.assertEqual(stored["health_log"][0]["exit_code"], 0)
        self.assertEqual(outcome["after"]["Log"][-1]["ExitCode"], 1)
        self.assertEqual(mounts_under(self.daemon.base), [])
        self.assertEqual(cgroups_under(f"ross-test-{self.daemon.base.name}"), [])
        code = yield deferToThread(self.daemon.stop)
        self.assertIn(code, (0, -signal.SIGTERM))



class CleanupTests(TestCase):
    timeout = 120

    def test_cleanup_takes_running_containers(self) -> Any:
        """
        A test's daemon killed with containers still running (a test that
        failed half-way) leaves nothing once cleaned up: their shims and
        processes, mounts and cgroups go with it.
        """
        daemon = DaemonProcess()
        self.addCleanup(daemon.cleanup)

        def scenario() -> None:
            daemon.start()
            archive = docker_archive(daemon.base / "busybox.tar")
            self.assertEqual(daemon.ross("load", "-i", str(archive.path)).returncode, 0)
            for name in ("first", "second"):
                result = daemon.ross("run", "-d", "--name", name, "busybox", "sh", "-c", "sleep 1000 & wait")
                self.assertEqual(result.returncode, 0, result.stderr)
            self.assertTrue(processes_mentioning(str(daemon.base)))
            parent = f"ross-test-{daemon.base.name}"
            self.assertTrue(cgroups_under(parent))
            daemon.cleanup()
            self.assertEqual(processes_mentioning(str(daemon.base)), [])
            self.assertEqual(mounts_under(daemon.base), [])
            self.assertEqual(cgroups_under(parent), [])

        return deferToThread(scenario)
