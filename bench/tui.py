"""
``ross-tui`` as a person sees it, in a real terminal (tmux), against a real
daemon:

  - pane throughput: ``cat`` of a 20 MB coloured file in a shell pane, MB/s
    until the end marker is on the screen; next to tmux showing the same
    ``cat`` through ``ross exec -t`` (the same transport, tmux's emulator)
    and a plain local ``cat`` in tmux;
  - key-to-screen latency while a pane floods: a key typed into the
    container filter until tmux shows it, median of ``KEYS`` (default 20),
    next to the same with the pane idle;
  - start-up to the first drawn table with 100 containers.

    .venv/bin/python bench/tui.py

Targets (issue 17): pane >= 20 MB/s, keys < 50 ms during a flood, first
table < 1 s. ``ROSS_TUI_VT=pyte`` measures the fallback emulator.
"""

from __future__ import annotations

import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ross.testing.daemon import REPO, DaemonProcess  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402

BIN = os.path.dirname(sys.executable)
ROSS = os.path.join(BIN, "ross")
TUI = os.path.join(BIN, "ross-tui")
MB = 20
KEYS = int(os.environ.get("KEYS", "20"))
CONTAINERS = 100
COLS, ROWS = 160, 50
# 20 MB of coloured lines, made in the container (busybox's awk).
MAKE_BIG = ("awk 'BEGIN { for (i = 0; n < %d; i++) { s = sprintf(\"\\033[3%%dm%%08d\\033[0m %%s\\n\", i %% 8, i, "
            "\"the quick brown fox jumps over the lazy dog 0123456789\"); printf \"%%s\", s; n += length(s) } }' "
            "> /tmp/big" % (MB * 1000 * 1000))


class Tmux:
    def __init__(self, env: dict[str, str]) -> None:
        self.dir = tempfile.mkdtemp(prefix="ross-bench-tmux-")
        self.socket = os.path.join(self.dir, "sock")
        self.env = env

    def __call__(self, *args: str) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], env=self.env, capture_output=True, text=True,
                              check=True).stdout

    def start(self, name: str, command: str) -> None:
        self("new-session", "-d", "-s", name, "-x", str(COLS), "-y", str(ROWS), command)

    def screen(self, name: str) -> str:
        return self("capture-pane", "-p", "-t", name)

    def wait_for(self, name: str, predicate: Callable[[str], bool], timeout: float = 120,
                 poll: float = 0.002) -> float:
        """
        Seconds until the screen satisfies C{predicate} (polled every
        C{poll} seconds, each poll a tmux client process).
        """
        start = time.perf_counter()
        while True:
            if predicate(self.screen(name)):
                return time.perf_counter() - start
            if time.perf_counter() - start > timeout:
                raise RuntimeError(f"timed out; the screen:\n{self.screen(name)}")
            time.sleep(poll)

    def kill(self, name: str) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-session", "-t", name], env=self.env, capture_output=True)

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], env=self.env, capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def pane_throughput(tmux: Tmux, address: str) -> float:
    tmux.start("tui", shlex.join([TUI, "-H", address]))
    try:
        tmux.wait_for("tui", lambda s: "flood" in s)
        tmux("send-keys", "-t", "tui", "e")
        tmux.wait_for("tui", lambda s: "/ #" in s)
        tmux("send-keys", "-t", "tui", "clear; cat /tmp/big; echo END-$((6*7))", "Enter")
        return MB / tmux.wait_for("tui", lambda s: "END-42" in s)
    finally:
        tmux.kill("tui")


def tmux_throughput(tmux: Tmux, command: str) -> float:
    tmux.start("plain", f"sh -c {shlex.quote(command + '; echo END-$((6*7)); sleep 1000')}")
    try:
        return MB / tmux.wait_for("plain", lambda s: "END-42" in s)
    finally:
        tmux.kill("plain")


def key_latency(tmux: Tmux, address: str, flood: bool) -> list[float]:
    """
    Seconds from a key typed into the container filter to its echo in the
    box, with a pane flooding beside it (C{flood}) or idle.
    """
    tmux.start("keys", shlex.join([TUI, "-H", address]))
    try:
        tmux.wait_for("keys", lambda s: "flood" in s)
        tmux("send-keys", "-t", "keys", "e")
        tmux.wait_for("keys", lambda s: "/ #" in s)
        if flood:
            tmux("send-keys", "-t", "keys", "while :; do cat /tmp/big; done", "Enter")
            time.sleep(1)
        tmux("send-keys", "-t", "keys", "C-]")
        time.sleep(0.3)
        tmux("send-keys", "-t", "keys", "/")
        time.sleep(0.3)
        found = []
        typed = ""
        for i in range(KEYS):
            key = "qwertyuiopasdfghjklzxcvbnm"[i % 26]
            typed += key
            tmux("send-keys", "-t", "keys", key)
            found.append(tmux.wait_for("keys", lambda s: typed in s))
            time.sleep(0.05)
        return found
    finally:
        tmux.kill("keys")


def first_table(tmux: Tmux, address: str) -> float:
    start = time.perf_counter()
    tmux.start("start", shlex.join([TUI, "-H", address]))
    try:
        # Polled every 10 ms: a tmux client every 2 ms takes a good part of
        # the 2 CPUs the console is starting on.
        tmux.wait_for("start", lambda s: "many-0099" in s or "many-0000" in s, poll=0.01)
        return time.perf_counter() - start
    finally:
        tmux.kill("start")


def main() -> None:
    if not shutil.which("tmux"):
        raise SystemExit("tmux is needed (./dev setup installs it)")
    daemon = DaemonProcess()
    env = dict(os.environ, ROSS_HOST=daemon.address, TERM="xterm-256color", PYTHONPATH=str(REPO))
    for name in ("ROSS_TLS_CA", "ROSS_TLS_CERT", "ROSS_TLS_KEY", "ROSS_TOKEN"):
        env.pop(name, None)
    tmux = Tmux(env)
    # A session that outlives the others keeps the tmux server up between
    # measurements (a server going away races the next start).
    tmux.start("keep", "sleep 100000")

    def ross(*args: str) -> None:
        subprocess.run([ROSS, *args], env=env, check=True, capture_output=True)

    try:
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar", tags=("ross-bench-busybox:latest",))
        ross("load", "-i", str(archive.path))
        ross("run", "-d", "--name", "flood", "ross-bench-busybox", "sh", "-c", MAKE_BIG + "; sleep 100000")
        ross("exec", "flood", "sh", "-c", f"while [ $(wc -c < /tmp/big) -lt {MB * 1000 * 1000} ]; do sleep 0.2; done")
        local = os.path.join(tmux.dir, "big")
        with open(local, "wb") as f:
            f.write(subprocess.run([ROSS, "exec", "flood", "cat", "/tmp/big"], env=env, check=True,
                                   capture_output=True).stdout)
        pane = pane_throughput(tmux, daemon.address)
        via_exec = tmux_throughput(tmux, f"{shlex.quote(ROSS)} exec -t flood cat /tmp/big")
        plain = tmux_throughput(tmux, f"cat {shlex.quote(local)}")
        idle = key_latency(tmux, daemon.address, flood=False)
        keys = key_latency(tmux, daemon.address, flood=True)
        for i in range(CONTAINERS):
            ross("create", "--name", f"many-{i:04d}", "ross-bench-busybox", "true")
        starts = [first_table(tmux, daemon.address) for _ in range(3)]
        print(f"emulator: {os.environ.get('ROSS_TUI_VT') or 'default'}; terminal {COLS}x{ROWS} (tmux)")
        print(f"\ncat of {MB} MB of coloured lines until the end is on the screen:")
        print(f"  ross-tui shell pane      {pane:6.1f} MB/s  (target >= 20)")
        print(f"  tmux, ross exec -t       {via_exec:6.1f} MB/s")
        print(f"  tmux, local cat          {plain:6.1f} MB/s")
        print(f"\nkey to screen (typed into the filter box), median of {KEYS}:")
        print(f"  while a pane floods {statistics.median(keys) * 1e3:6.1f} ms (max {max(keys) * 1e3:.1f})  (target < 50)")
        print(f"  idle                {statistics.median(idle) * 1e3:6.1f} ms (max {max(idle) * 1e3:.1f})")
        print(f"\nstart-up to the first drawn table, {CONTAINERS + 1} containers, best of 3:")
        print(f"  {min(starts):6.2f} s (all: {', '.join(f'{s:.2f}' for s in starts)})  (target < 1)")
    finally:
        tmux.close()
        subprocess.run([ROSS, "rm", "-f", "flood", *[f"many-{i:04d}" for i in range(CONTAINERS)]], env=env,
                       capture_output=True)
        daemon.stop()
        daemon.cleanup()


if __name__ == "__main__":
    main()
