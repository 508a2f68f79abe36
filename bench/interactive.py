"""
Interactive sessions, Ross next to docker (when a docker daemon answers):

  - keystroke-to-echo round trip through ``exec -it ... sh``, median of 50;
  - ``cat`` of 100 MB in a session with a PTY, MB/s.

    .venv/bin/python bench/interactive.py

Targets (issue 5): echo round trip <= docker's; at least 50 MB/s.
"""

from __future__ import annotations

import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ross.testing.daemon import DaemonProcess  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402
from ross.testing.terminal import Terminal  # noqa: E402

ROSS = os.path.join(os.path.dirname(sys.executable), "ross")
KEYS = 50
MB = 100
PREPARE = f"head -c {MB * 1000 * 1000} /dev/zero | tr '\\0' x > /tmp/big; sleep 100000"


def docker_available() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True).returncode == 0


def echo_latencies(term: Terminal) -> list[float]:
    term.expect(rb"# ")
    term.send(b"cat\r")
    term.expect(rb"cat\r\n")
    time.sleep(0.3)
    latencies = []
    for i in range(KEYS):
        key = b"abcdefghijklmnopqrstuvwxyz"[i % 26:i % 26 + 1]
        mark = term.length
        t = time.perf_counter()
        term.send(key)
        term.expect(re.escape(key), start=mark)
        latencies.append(time.perf_counter() - t)
        time.sleep(0.01)
    term.send(b"\x03")
    return latencies


def throughput(cli: list[str], env: dict[str, str] | None, container: str) -> float:
    """
    MB/s of ``cat`` of a 100 MB file in a session with a PTY (exec -t),
    the client's output going to a file: the session's own throughput, not
    that of a terminal emulator in front of it.
    """
    with open(os.devnull, "wb") as sink:
        t = time.perf_counter()
        subprocess.run(cli + ["exec", "-t", container, "cat", "/tmp/big"], env=env, stdout=sink, check=True)
    return MB / (time.perf_counter() - t)


def echo(argv: list[str], env: dict[str, str] | None) -> list[float]:
    term = Terminal(argv, env=env, rows=40, cols=120)
    try:
        return echo_latencies(term)
    finally:
        term.close()


def main() -> None:
    docker = docker_available()
    daemon = DaemonProcess()
    env = dict(os.environ, ROSS_HOST=daemon.address, TERM="xterm")
    try:
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar", tags=("ross-bench-busybox:latest",))
        subprocess.run([ROSS, "load", "-i", str(archive.path)], env=env, check=True, capture_output=True)
        subprocess.run([ROSS, "run", "-d", "--name", "tty-bench", "ross-bench-busybox", "sh", "-c", PREPARE],
                       env=env, check=True, capture_output=True)
        time.sleep(3)
        ross_lat = echo([ROSS, "exec", "-it", "tty-bench", "sh"], env)
        ross_rate = throughput([ROSS], env, "tty-bench")
        print(f"keystroke echo through exec -it, median of {KEYS}:")
        print(f"  ross   {statistics.median(ross_lat) * 1e3:6.2f} ms (p90 {sorted(ross_lat)[int(KEYS * .9)] * 1e3:.2f})")
        docker_lat = docker_rate = None
        if docker:
            subprocess.run(["docker", "load", "-i", str(archive.path)], check=True, capture_output=True)
            subprocess.run(["docker", "run", "-d", "--name", "ross-tty-bench", "ross-bench-busybox", "sh", "-c",
                            PREPARE], check=True, capture_output=True)
            time.sleep(3)
            docker_lat = echo(["docker", "exec", "-it", "ross-tty-bench", "sh"], None)
            docker_rate = throughput(["docker"], None, "ross-tty-bench")
            print(f"  docker {statistics.median(docker_lat) * 1e3:6.2f} ms (p90 "
                  f"{sorted(docker_lat)[int(KEYS * .9)] * 1e3:.2f})")
            print(f"  ratio ross/docker = {statistics.median(ross_lat) / statistics.median(docker_lat):.2f}"
                  "  (target <= 1)")
        print(f"\ncat of {MB} MB in a session with a PTY (exec -t):")
        print(f"  ross   {ross_rate:6.1f} MB/s  (target >= 50)")
        if docker_rate:
            print(f"  docker {docker_rate:6.1f} MB/s")
    finally:
        if docker:
            subprocess.run(["docker", "rm", "-f", "ross-tty-bench"], capture_output=True)
            subprocess.run(["docker", "rmi", "-f", "ross-bench-busybox"], capture_output=True)
        subprocess.run([ROSS, "rm", "-f", "tty-bench"], env=env, capture_output=True)
        daemon.stop()
        daemon.cleanup()


if __name__ == "__main__":
    main()
