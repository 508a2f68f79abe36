"""
Interactive sessions, Ross next to docker (a private dockerd of
bench/dockerd.py when the host's does not answer):

  - keystroke-to-echo round trip through ``exec -it ... sh`` running cat,
    median and p90 of 50 (``KEYS=N`` for more), every session taking turns
    key by key: Ross on its direct channel (a local client's default), on
    the gRPC stream over the unix socket (``ROSS_DIRECT=0``) and over TCP
    with TLS (a remote client's path), and docker;
  - ``cat`` of 100 MB in a session with a PTY (``exec -t``), MB/s, direct
    and gRPC, taking turns with docker.

    .venv/bin/python bench/interactive.py

Targets (issue 15): echo on the direct path <= 0.8x docker's (median and
p90), on the gRPC path over TCP + TLS <= 2x; cat >= 2x docker's MB/s on the
direct path.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dockerd import private_dockerd  # noqa: E402
from ross.testing import certs  # noqa: E402
from ross.testing.daemon import DaemonProcess, short_tempdir  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402
from ross.testing.terminal import Terminal  # noqa: E402

ROSS = os.path.join(os.path.dirname(sys.executable), "ross")
KEYS = int(os.environ.get("KEYS", "50"))
MB = 100
PREPARE = f"head -c {MB * 1000 * 1000} /dev/zero | tr '\\0' x > /tmp/big; sleep 100000"


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


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def p90(values: list[float]) -> float:
    return sorted(values)[int(len(values) * .9)]


def docker_env(stack: contextlib.ExitStack) -> dict[str, str] | None:
    """The host's docker when it answers, else a private dockerd; None without docker."""
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return dict(os.environ)
    env = stack.enter_context(private_dockerd())
    if isinstance(env, str):
        print(f"no docker to compare with: {env}")
        return None
    return env


def main() -> None:
    work = short_tempdir("ross-bench-tty-")
    authority = certs.authority()
    server = authority.issue("localhost", server=True)
    cert, key = server.write(work, "server")
    (work / "ca.pem").write_bytes(authority.pem)
    client_cert, client_key = authority.issue("bench").write(work, "client")
    port = free_port()
    daemon = DaemonProcess(extra=["--listen", f"tcp://127.0.0.1:{port}", "--tls-cert", cert, "--tls-key", key,
                                  "--tls-ca", str(work / "ca.pem")])
    env = dict(os.environ, ROSS_HOST=daemon.address, TERM="xterm")
    paths = {
        "ross direct": env,
        "ross gRPC unix": dict(env, ROSS_DIRECT="0"),
        "ross gRPC TCP+TLS": dict(env, ROSS_HOST=f"tcp://127.0.0.1:{port}", ROSS_TLS_CA=str(work / "ca.pem"),
                                  ROSS_TLS_CERT=client_cert, ROSS_TLS_KEY=client_key),
    }
    with contextlib.ExitStack() as stack:
        denv = docker_env(stack)
        try:
            daemon.start()
            archive = docker_archive(work / "busybox.tar", tags=("ross-bench-busybox:latest",))
            subprocess.run([ROSS, "load", "-i", str(archive.path)], env=env, check=True, capture_output=True)
            subprocess.run([ROSS, "run", "-d", "--name", "tty-bench", "ross-bench-busybox", "sh", "-c", PREPARE],
                           env=env, check=True, capture_output=True)
            sessions = [(name, [ROSS, "exec", "-it", "tty-bench", "sh"], e) for name, e in paths.items()]
            if denv is not None:
                subprocess.run(["docker", "load", "-i", str(archive.path)], env=denv, check=True,
                               capture_output=True)
                subprocess.run(["docker", "run", "-d", "--name", "ross-tty-bench", "ross-bench-busybox", "sh",
                                "-c", PREPARE], env=denv, check=True, capture_output=True)
                sessions.append(("docker", ["docker", "exec", "-it", "ross-tty-bench", "sh"], denv))
            time.sleep(3)
            terms = [Terminal(argv, env=dict(e, TERM="xterm"), rows=40, cols=120) for _, argv, e in sessions]
            try:
                latencies = echo_latencies(terms)
            finally:
                for term in terms:
                    term.close()
            rates: dict[str, list[float]] = {"ross direct": [], "ross gRPC unix": [], "docker": []}
            for _ in range(3):
                for name in rates:
                    if name == "docker":
                        if denv is not None:
                            rates[name].append(throughput(["docker"], denv, "ross-tty-bench"))
                    else:
                        rates[name].append(throughput([ROSS], paths[name], "tty-bench"))
            print(f"keystroke echo through exec -it, {KEYS} keys, taking turns key by key:")
            medians = {}
            for (name, _, _), found in zip(sessions, latencies):
                medians[name] = (statistics.median(found), p90(found))
                print(f"  {name:18s} median {medians[name][0] * 1e3:6.2f} ms   p90 {medians[name][1] * 1e3:6.2f} ms")
            if "docker" in medians:
                d = medians["docker"]
                for name, target in (("ross direct", 0.8), ("ross gRPC unix", None), ("ross gRPC TCP+TLS", 2.0)):
                    m = medians[name]
                    goal = f"  (target <= {target})" if target else ""
                    print(f"  {name}/docker: median {m[0] / d[0]:.2f}x, p90 {m[1] / d[1]:.2f}x{goal}")
            print(f"\ncat of {MB} MB in a session with a PTY (exec -t), median of 3 taking turns:")
            for name, found in rates.items():
                if found:
                    print(f"  {name:18s} {statistics.median(found):7.1f} MB/s")
            if rates["docker"]:
                ratio = statistics.median(rates["ross direct"]) / statistics.median(rates["docker"])
                print(f"  ross direct/docker: {ratio:.2f}x  (target >= 2)")
        finally:
            if denv is not None:
                subprocess.run(["docker", "rm", "-f", "ross-tty-bench"], env=denv, capture_output=True)
                subprocess.run(["docker", "rmi", "-f", "ross-bench-busybox"], env=denv, capture_output=True)
            subprocess.run([ROSS, "rm", "-f", "tty-bench"], env=env, capture_output=True)
            daemon.stop()
            daemon.cleanup()
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
