"""
The daemon out of file descriptors or processes (issue 11, item 5).

File descriptors: a daemon limited to
160 open files, flooded by 200 idle connections to its Docker API socket
for longer than its firewall check's period. It must live through it
(libnftables calls exit() when it cannot open its netlink socket: that
ended the daemon), refuse what it cannot do with RESOURCE_EXHAUSTED rather
than INTERNAL, and serve everyone again once the connections are gone.

Processes: a daemon in a pids cgroup a few processes above what it uses:
the containers that find no room are refused with a reason, the daemon
logs no traceback, and starts containers again once the limit is raised.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing.daemon import DaemonProcess
from ross.testing.images import docker_archive

LIMIT = 160
FLOOD = 200


class LimitedDaemon(DaemonProcess):
    def command(self) -> list[str]:
        return ["prlimit", f"--nofile={LIMIT}:{LIMIT}", "--", *super().command()]


class DescriptorExhaustionTests(TestCase):
    timeout = 240

    def test_flood_of_connections(self) -> Any:
        daemon = LimitedDaemon()
        self.addCleanup(daemon.cleanup)
        return deferToThread(self._scenario, daemon)

    def _scenario(self, daemon: LimitedDaemon) -> None:
        daemon.start()
        result = daemon.ross("load", "-i", str(docker_archive(daemon.base / "busybox.tar").path))
        self.assertEqual(result.returncode, 0, result.stderr)
        result = daemon.ross("run", "-d", "--name", "steady", "busybox", "sleep", "1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.addCleanup(daemon.ross, "rm", "-f", "steady")
        flood = []
        try:
            for _ in range(FLOOD):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.settimeout(5)
                try:
                    s.connect(str(daemon.exec_root / "docker.sock"))
                except OSError:
                    s.close()
                    break
                flood.append(s)
            # Longer than the firewall's 5 s check, which runs libnftables.
            time.sleep(7)
            self.assertIsNone(daemon.process.poll() if daemon.process else 0,
                              f"the daemon died:\n{daemon.read_log()[-3000:]}")
            # A container with a published port needs nftables: it runs or
            # is refused as a limit, never as a bug.
            result = daemon.ross("run", "-d", "-p", "127.0.0.1::80", "busybox", "sleep", "1000", timeout=90)
            if result.returncode != 0:
                self.assertNotIn(b"internal error", result.stderr)
        finally:
            for s in flood:
                s.close()
        time.sleep(1)
        self.assertIsNone(daemon.process.poll() if daemon.process else 0, daemon.read_log()[-3000:])
        result = daemon.ross("run", "--rm", "busybox", "echo", "served again")
        self.assertEqual((result.returncode, result.stdout), (0, b"served again\n"), result.stderr)
        result = daemon.ross("exec", "steady", "true")
        self.assertEqual(result.returncode, 0, result.stderr)
        ids = daemon.ross("ps", "-aq").stdout.split()
        daemon.ross("rm", "-f", *[i.decode() for i in ids])


class PidsExhaustionTests(TestCase):
    timeout = 240

    def setUp(self) -> None:
        self.cgroup = f"/sys/fs/cgroup/pids/rosspids-{os.getpid()}"
        os.makedirs(self.cgroup)
        self.addCleanup(self._remove_cgroup)

    def _remove_cgroup(self) -> None:
        with open(f"{self.cgroup}/cgroup.procs") as f:
            left = f.read().split()
        for pid in left:
            try:
                with open("/sys/fs/cgroup/pids/cgroup.procs", "w") as f:
                    f.write(pid)
            except OSError:
                pass
        os.rmdir(self.cgroup)

    def _limit(self, value: str) -> None:
        with open(f"{self.cgroup}/pids.max", "w") as f:
            f.write(value)

    def test_out_of_processes(self) -> Any:
        cgroup = self.cgroup

        class Confined(DaemonProcess):
            def spawn(self) -> Any:
                process = super().spawn()
                with open(f"{cgroup}/cgroup.procs", "w") as f:
                    f.write(str(process.pid))
                return process

        daemon = Confined()
        self.addCleanup(daemon.cleanup)
        return deferToThread(self._scenario, daemon)

    def _scenario(self, daemon: DaemonProcess) -> None:
        daemon.start()
        result = daemon.ross("load", "-i", str(docker_archive(daemon.base / "busybox.tar").path))
        self.assertEqual(result.returncode, 0, result.stderr)
        with open(f"{self.cgroup}/pids.current") as f:
            self._limit(str(int(f.read()) + 6))
        outcomes = [daemon.ross("run", "-d", "busybox", "sleep", "1000") for _ in range(8)]
        refused = [o for o in outcomes if o.returncode != 0]
        self.assertTrue(refused, "no run was refused under the limit")
        for o in refused:
            self.assertEqual(o.returncode, 125)
            # Said as the limit reached, not as a bare errno: fork's EAGAIN
            # at the limit; or, when a container's init died of it first,
            # ENOMEM from a fork into its PID namespace, which no longer
            # takes processes (seen once under the full suite's load).
            self.assertRegex(o.stderr.decode(), r"^Error: (the shim failed: )?cannot start the container's (shim|process): "
                                                r"out of (processes: a pids limit .* is reached \(Resource temporarily"
                                                r" unavailable\)|memory or processes: .*\(Cannot allocate memory\))\n$")
            self.assertNotIn(b"internal error", o.stderr)
        self.assertIsNone(daemon.process.poll() if daemon.process else 0)
        self._limit("max")
        result = daemon.ross("run", "--rm", "busybox", "echo", "room again")
        self.assertEqual((result.returncode, result.stdout), (0, b"room again\n"), result.stderr)
        self.assertNotIn("Traceback", daemon.read_log())
        ids = daemon.ross("ps", "-aq").stdout.split()
        daemon.ross("rm", "-f", *[i.decode() for i in ids])
