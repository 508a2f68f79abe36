"""
Interactive sessions, Ross next to docker (when a docker daemon answers):

  - keystroke-to-echo round trip through ``exec -it ... sh``, median of 50
    (``KEYS=N`` for more), Ross and docker taking turns key by key;
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
KEYS = int(os.environ.get("KEYS", "50"))
MB = 100
PREPARE = f"head -c {MB * 1000 * 1000} /dev/zero | tr '\\0' x > /tmp/big; sleep 100000"


def docker_available() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True).returncode == 0


def ready_for_echo(term: Terminal) -> None:
    term.expect(rb"# ")
    term.send(b"cat\r")
    term.expect(rb"cat\r\n")


def echo_once(term: Terminal, key: bytes) -> float:
    mark = term.length
    t = time.perf_counter()
    term.send(key)
    term.expect(re.escape(key), start=mark)
    return time.perf_counter() - t


def echo_latencies(terms: list[Terminal]) -> list[list[float]]:
    """
    Keystroke round trips through each of C{terms}, taking turns key by
    key, so that every session sees the same machine: on a small VM the
    cost of waking an idle CPU drifts by half a millisecond within minutes.
    """
    for term in terms:
        ready_for_echo(term)
    time.sleep(0.3)
    latencies: list[list[float]] = [[] for _ in terms]
    for i in range(KEYS):
        key = b"abcdefghijklmnopqrstuvwxyz"[i % 26:i % 26 + 1]
        for term, found in zip(terms, latencies):
            found.append(echo_once(term, key))
            time.sleep(0.01)
    for term in terms:
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
        argvs = [[ROSS, "exec", "-it", "tty-bench", "sh"]]
        envs: list[dict[str, str] | None] = [env]
        if docker:
            subprocess.run(["docker", "load", "-i", str(archive.path)], check=True, capture_output=True)
            subprocess.run(["docker", "run", "-d", "--name", "ross-tty-bench", "ross-bench-busybox", "sh", "-c",
                            PREPARE], check=True, capture_output=True)
            argvs.append(["docker", "exec", "-it", "ross-tty-bench", "sh"])
            envs.append(None)
        time.sleep(3)
        terms = [Terminal(argv, env=e, rows=40, cols=120) for argv, e in zip(argvs, envs)]
        try:
            latencies = echo_latencies(terms)
        finally:
            for term in terms:
                term.close()
        ross_rate = throughput([ROSS], env, "tty-bench")
        docker_rate = throughput(["docker"], None, "ross-tty-bench") if docker else None
        print(f"keystroke echo through exec -it, median of {KEYS}, taking turns:")
        for name, found in zip(("ross", "docker"), latencies):
            print(f"  {name:6s} {statistics.median(found) * 1e3:6.2f} ms (p90 {sorted(found)[int(KEYS * .9)] * 1e3:.2f})")
        if docker:
            ratio = statistics.median(latencies[0]) / statistics.median(latencies[1])
            print(f"  ratio ross/docker = {ratio:.2f}  (target <= 1)")
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
