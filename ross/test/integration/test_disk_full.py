"""
A full disk (SPEC 11; issue 11, item 5): the daemon's root on a 40 MiB
tmpfs, filled by an image too large for it, by a container writing into
its own filesystem and by a container flooding its log. What must hold:
clean RESOURCE_EXHAUSTED errors ("no space left"), nothing half made,
containers running on (output that cannot be logged is dropped whole,
never a torn line), `rm -f` able to free the space, and everything
working again once there is room; no traceback in the daemon's log.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing.daemon import DaemonProcess, short_tempdir
from ross.testing.images import docker_archive, layer_tar

SIZE_MB = 40


class DiskFullTests(TestCase):
    timeout = 240

    def setUp(self) -> None:
        base = short_tempdir()
        (base / "root").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={SIZE_MB}m,mode=0700", "tmpfs", str(base / "root")],
                       check=True, timeout=30)
        self.daemon = DaemonProcess(base=base)
        # The daemon's cleanup unmounts what is under its base, the tmpfs too.
        self.addCleanup(self.daemon.cleanup)

    def ross(self, *args: str) -> tuple[int, str, str]:
        result = self.daemon.ross(*args)
        return result.returncode, result.stdout.decode(), result.stderr.decode()

    def ok(self, *args: str) -> str:
        code, out, err = self.ross(*args)
        self.assertEqual(code, 0, f"ross {' '.join(args)}: {err}")
        return out

    def used(self) -> int:
        st = os.statvfs(self.daemon.root)
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def state(self, name: str) -> dict[str, Any]:
        state: dict[str, Any] = json.loads(self.ok("inspect", name))[0]["State"]
        return state

    def wait_full(self) -> None:
        deadline = time.monotonic() + 30
        while self.used() < (SIZE_MB - 1) * 2**20:
            if time.monotonic() > deadline:
                self.fail(f"the disk did not fill: {self.used()} bytes used")
            time.sleep(0.2)

    def test_disk_full(self) -> Any:
        return deferToThread(self._scenario)

    def _scenario(self) -> None:
        base = self.daemon.base
        self.daemon.start()
        busybox = docker_archive(base / "busybox.tar")
        self.ok("load", "-i", str(busybox.path))
        images = self.ok("images", "-q")

        # An image larger than the disk: refused whole, nothing kept.
        content = base / "big"
        content.mkdir()
        (content / "blob").write_bytes(os.urandom(60 * 2**20))
        big = docker_archive(base / "big.tar", tags=["big:1"], layers=[layer_tar(content)])
        before = self.used()
        code, out, err = self.ross("load", "-i", str(big.path))
        self.assertEqual(code, 125)
        self.assertIn("no space left", err)
        self.assertEqual(self.ok("images", "-q"), images)
        self.assertLess(self.used() - before, 256 * 1024)

        # A container fills its own filesystem: it runs on; what it says
        # meanwhile cannot be logged; commit is refused and leaves it running.
        self.ok("run", "-d", "--name", "filler", "busybox", "sh", "-c",
                "dd if=/dev/zero of=/fill bs=1M count=100; echo dd=$?; exec sleep 1000")
        self.wait_full()
        time.sleep(0.5)
        self.assertEqual(self.state("filler")["Status"], "running")
        code, out, err = self.ross("commit", "filler", "filled:1")
        self.assertEqual(code, 125)
        self.assertIn("no space left", err)
        self.assertEqual(self.state("filler")["Status"], "running")
        code, out, err = self.ross("run", "-d", "busybox", "true")
        self.assertEqual(code, 125)
        self.assertIn("no space left", err)
        self.ok("exec", "filler", "rm", "/fill")
        self.assertIn("filler", self.ok("ps"))

        # A container floods its log until the disk is full: the daemon
        # answers, the container runs on, rm -f makes room again.
        self.ok("run", "-d", "--name", "logger", "busybox", "sh", "-c",
                "i=0; while true; do echo line $i; i=$((i+1)); done")
        self.wait_full()
        self.assertEqual(self.state("logger")["Status"], "running")
        lines = self.ok("logs", "--tail", "3", "logger").splitlines()
        self.assertEqual(len(lines), 3)
        # Whole lines, in order; those that found no room are gone whole.
        numbers = [int(line.split()[1]) for line in lines if line.startswith("line ")]
        self.assertEqual(len(numbers), 3, lines)
        self.assertEqual(numbers, sorted(set(numbers)), lines)
        self.assertEqual(self.ok("rm", "-f", "logger", "filler").split(), ["logger", "filler"])
        self.assertLess(self.used(), 8 * 2**20)

        # Room again: everything works.
        self.assertEqual(self.ok("run", "--rm", "busybox", "echo", "room again"), "room again\n")
        self.ok("load", "-i", str(busybox.path))
        log = self.daemon.read_log()
        self.assertNotIn("Traceback", log)
        self.assertNotIn("#critical", log)
