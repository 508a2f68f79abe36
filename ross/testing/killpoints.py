# -*- test-case-name: ross.test.integration.test_killpoints -*-
"""
A real daemon that SIGKILLs itself at a chosen state-writing step.

L{KillableDaemon} runs ``twistd ross`` through a launcher that wraps the
calls that change state on disk: directory and file creation, renames,
unlinks, tree removals (one step each), links, and SQLite's writing
statements. While the arm file exists, the Nth such call (N is the file's
content) kills the daemon before it happens; without it they run as usual. So a test arms
the daemon, runs one operation through the API, and finds the daemon dead
at that step (or the operation done, when it had fewer steps), then starts
the daemon again and checks what it finds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from ross.testing.daemon import DaemonProcess

LAUNCHER = r"""
import os, signal, sqlite3, sys, threading

arm_path = sys.argv[1]
state = {"armed": False, "n": 0, "count": 0}
inside = threading.local()


def step(what):
    if getattr(inside, "removal", False):
        return
    if not os.path.exists(arm_path):
        state["armed"] = False
        return
    if not state["armed"]:
        with open(arm_path) as f:
            state.update(armed=True, n=int(f.read()), count=0)
    state["count"] += 1
    if state["count"] == state["n"]:
        with open(arm_path + ".hit", "w") as f:
            f.write(what)
        os.kill(os.getpid(), signal.SIGKILL)


def wrap(module, name):
    real = getattr(module, name)

    def wrapper(*args, **kwargs):
        step(name)
        return real(*args, **kwargs)

    setattr(module, name, wrapper)


for name in ("mkdir", "rename", "replace", "unlink", "rmdir", "link", "symlink"):
    wrap(os, name)


# A tree's removal is one step (its unlinks and rmdirs are not counted).
from ross.engine import fsutil

real_remove_tree = fsutil.remove_tree


def remove_tree(*args, **kwargs):
    step("remove_tree")
    inside.removal = True
    try:
        return real_remove_tree(*args, **kwargs)
    finally:
        inside.removal = False


fsutil.remove_tree = remove_tree
WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE", "COMMIT")


class Connection(sqlite3.Connection):
    def execute(self, sql, *args):
        if sql.lstrip().upper().startswith(WRITES):
            step("sql " + sql.split(None, 1)[0])
        return super().execute(sql, *args)

    def executemany(self, sql, *args):
        if sql.lstrip().upper().startswith(WRITES):
            step("sql " + sql.split(None, 1)[0])
        return super().executemany(sql, *args)


real_connect = sqlite3.connect
sqlite3.connect = lambda *a, **k: real_connect(*a, factory=Connection, **k)

sys.argv = ["twistd", *sys.argv[2:]]
from twisted.scripts.twistd import run

run()
"""


class KillableDaemon(DaemonProcess):
    """
    A L{DaemonProcess} that dies at the Nth state-writing step once armed.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.arm_path = self.base / "arm"

    def command(self) -> list[str]:
        assert not self.netns, "the launcher runs twistd itself, in this network namespace"
        twistd = super().command()
        return [sys.executable, "-c", LAUNCHER, str(self.arm_path), *twistd[1:]]

    def arm(self, n: int) -> None:
        self.hit_path.unlink(missing_ok=True)
        self.arm_path.write_text(str(n))

    def disarm(self) -> None:
        self.arm_path.unlink(missing_ok=True)

    @property
    def hit_path(self) -> Path:
        return Path(str(self.arm_path) + ".hit")

    def hit(self) -> str:
        """
        The step the daemon died at ("" when it did not).
        """
        try:
            return self.hit_path.read_text()
        except FileNotFoundError:
            return ""

    def died(self) -> bool:
        assert self.process is not None
        return self.process.poll() is not None


def listing(path: Path) -> set[str]:
    try:
        return set(os.listdir(path))
    except FileNotFoundError:
        return set()
