"""
Searching a large container log: the daemon's filter (``ross logs --grep``,
the Logs RPC's LogFilter the console's log pane uses) next to shipping the
whole log to the client and searching it there (``ross logs | grep``).

    .venv/bin/python bench/logs.py        (MB=500 by default)

The log is written by a container (busybox awk), a few matching lines among
long plain ones.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ross.testing.daemon import DaemonProcess  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402

ROSS = os.path.join(os.path.dirname(sys.executable), "ross")
MB = int(os.environ.get("MB", "500"))
LINE = 1000
# Every 100000th line has the needle; the rest are LINE characters of hay.
WRITE = ("awk 'BEGIN { hay = sprintf(\"%%%ds\", \"\"); gsub(/ /, \"h\", hay); "
         "for (i = 0; i < %d; i++) { if (i %% 100000 == 4242) print \"needle \" i; else print i \" \" hay } }'"
         % (LINE, MB * 1000 * 1000 // (LINE + 8)))


def timed(command: str, env: dict[str, str]) -> tuple[float, bytes]:
    start = time.perf_counter()
    out = subprocess.run(["sh", "-c", command], env=env, check=True, capture_output=True).stdout
    return time.perf_counter() - start, out


def main() -> None:
    daemon = DaemonProcess()
    env = dict(os.environ, ROSS_HOST=daemon.address)
    try:
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar", tags=("ross-bench-busybox:latest",))
        subprocess.run([ROSS, "load", "-i", str(archive.path)], env=env, check=True, capture_output=True)
        start = time.perf_counter()
        subprocess.run([ROSS, "run", "-d", "--name", "big-log", "ross-bench-busybox", "sh", "-c", WRITE], env=env,
                       check=True, stdout=subprocess.DEVNULL)
        subprocess.run([ROSS, "wait", "big-log"], env=env, check=True, stdout=subprocess.DEVNULL)
        written = time.perf_counter() - start
        log = subprocess.run([ROSS, "inspect", "-f", "{{.LogPath}}", "big-log"], env=env, check=True,
                             capture_output=True, text=True).stdout.strip()
        size = os.path.getsize(log) if log and os.path.exists(log) else 0
        daemon_side, found = timed(f"{ROSS} logs --grep needle big-log", env)
        client_side, shipped = timed(f"{ROSS} logs big-log | grep needle", env)
        assert found == shipped, (found[:200], shipped[:200])
        print(f"a log of {MB} MB of output ({size / 1e6:.0f} MB on disk, written in {written:.1f} s), "
              f"{len(found.splitlines())} matching lines:")
        print(f"  ross logs --grep needle (the daemon searches)   {daemon_side:6.2f} s")
        print(f"  ross logs | grep needle (the client searches)   {client_side:6.2f} s")
        print(f"  ratio {client_side / daemon_side:.1f}x")
    finally:
        subprocess.run([ROSS, "rm", "-f", "big-log"], env=env, capture_output=True)
        daemon.stop()
        daemon.cleanup()


if __name__ == "__main__":
    main()
