"""
Tests for L{ross.testing.leaks.sweep}, the harness's last resort after a
daemon killed with its containers up.
"""

from __future__ import annotations

import os
import subprocess
import time

from twisted.trial.unittest import SynchronousTestCase

from ross.testing.leaks import cgroups_under, sweep


class SweepTests(SynchronousTestCase):
    def test_paused_container(self) -> None:
        """
        A paused container's process (its freezer group frozen) is thawed,
        killed and its groups removed: frozen, it took no SIGKILL and
        outlived the sweep in D state.
        """
        parent = f"ross-test-sweep-{os.getpid()}"
        group = os.path.join("/sys/fs/cgroup/freezer", parent, "c1")
        os.makedirs(group)
        self.addCleanup(lambda: sweep(self.mktemp(), parent))
        sleeper = subprocess.Popen(["sleep", "60"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

        def thaw_and_kill() -> None:
            # Whatever the sweep did: a frozen process left behind would
            # hold the run up (and its output pipe open).
            try:
                with open(os.path.join(group, "freezer.state"), "w") as f:
                    f.write("THAWED")
            except OSError:
                pass
            sleeper.kill()
            sleeper.wait(10)

        self.addCleanup(thaw_and_kill)
        with open(os.path.join(group, "tasks"), "w") as f:
            f.write(str(sleeper.pid))
        with open(os.path.join(group, "freezer.state"), "w") as f:
            f.write("FROZEN")
        for _ in range(100):
            with open(os.path.join(group, "freezer.state")) as f:
                if f.read().strip() == "FROZEN":
                    break
            time.sleep(0.01)
        sweep(self.mktemp(), parent)
        self.assertEqual(sleeper.wait(10), -9)
        self.assertEqual(cgroups_under(parent), [])
        self.assertFalse(os.path.exists(os.path.dirname(group)))
