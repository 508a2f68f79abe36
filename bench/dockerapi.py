"""
The Docker API against dockerd's: ``GET /containers/json`` with 20 running
containers (HTTP over each daemon's unix socket, one connection), and
docker's CLI (``docker ps``, ``docker run --rm busybox true``) with only
DOCKER_HOST changed. Ross is a real ``twistd ross``; dockerd the private
one of bench/dockerd.py (its own bridge, nothing of the host's touched).

    .venv/bin/python bench/dockerapi.py [--calls 200] [--runs 10] [--containers 20]

Targets (issue 14): the list call at most 0.5x dockerd's time; the CLI
runs at most dockerd's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dockerd import private_dockerd  # noqa: E402
from ross.testing.daemon import DaemonProcess, short_tempdir  # noqa: E402
from ross.testing.dockerapi import UnixHTTPConnection  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402


def list_latencies(path: str, calls: int) -> list[float]:
    """
    C{calls} back-to-back C{GET /containers/json} on one kept-alive
    connection, as docker's clients make them (at the version the daemon
    announces); each call's seconds.
    """
    connection = UnixHTTPConnection(path, timeout=60)
    times = []
    try:
        connection.request("GET", "/_ping")
        response = connection.getresponse()
        response.read()
        version = response.getheader("Api-Version")
        for _ in range(calls + 5):
            start = time.perf_counter()
            connection.request("GET", f"/v{version}/containers/json")
            response = connection.getresponse()
            body = response.read()
            elapsed = time.perf_counter() - start
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {body[:200]!r}")
            times.append(elapsed)
    finally:
        connection.close()
    # The first calls warm caches and the connection.
    return times[5:]


def wall(argv: list[str], env: dict[str, str], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        result = subprocess.run(argv, env=env, capture_output=True, timeout=120)
        times.append(time.perf_counter() - start)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {result.stderr.decode(errors='replace')}")
    return times


def populate(env: dict[str, str], archive: Path, count: int) -> None:
    """busybox loaded, and C{count} containers running."""
    subprocess.run(["docker", "load", "-i", str(archive)], env=env, capture_output=True, check=True, timeout=120)
    for n in range(count):
        subprocess.run(["docker", "run", "-d", "--name", f"bench{n}", "busybox", "sleep", "3600"], env=env,
                       capture_output=True, check=True, timeout=60)


def remove_all(env: dict[str, str]) -> None:
    names = subprocess.run(["docker", "ps", "-aq"], env=env, capture_output=True, text=True, timeout=60).stdout.split()
    if names:
        subprocess.run(["docker", "rm", "-f", *names], env=env, capture_output=True, timeout=300)


def measure(env: dict[str, str], socket_path: str, archive: Path, args: argparse.Namespace) -> dict[str, float]:
    populate(env, archive, args.containers)
    try:
        listed = subprocess.run(["docker", "ps", "-q"], env=env, capture_output=True, text=True, timeout=60)
        assert len(listed.stdout.split()) == args.containers, listed.stdout
        return {
            "list": statistics.median(list_latencies(socket_path, args.calls)),
            "ps": statistics.median(wall(["docker", "ps"], env, args.runs)),
            "run": statistics.median(wall(["docker", "run", "--rm", "busybox", "true"], env, args.runs)),
        }
    finally:
        remove_all(env)


def measure_both(scratch: Path, args: argparse.Namespace) -> dict[str, dict[str, float]]:
    """Ross's figures, then a private dockerd's (when one can start)."""
    archive = docker_archive(scratch / "busybox.tar", tags=["busybox:latest"]).path
    results: dict[str, dict[str, float]] = {}
    daemon = DaemonProcess(short_tempdir("ross-bench-"))
    try:
        daemon.start()
        ross_socket = str(daemon.exec_root / "docker.sock")
        ross_env = dict(os.environ, DOCKER_HOST=f"unix://{ross_socket}", DOCKER_CONFIG=str(scratch / "config"))
        results["ross"] = measure(ross_env, ross_socket, archive, args)
    finally:
        daemon.stop()
        daemon.cleanup()
    with private_dockerd() as env:
        if isinstance(env, str):
            print(f"no dockerd to compare with: {env}")
        else:
            docker_env = dict(env, DOCKER_CONFIG=str(scratch / "config"))
            results["dockerd"] = measure(docker_env, env["DOCKER_HOST"].removeprefix("unix://"), archive, args)
    return results


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200, help="list calls per daemon")
    parser.add_argument("--runs", type=int, default=10, help="runs of each CLI command per daemon")
    parser.add_argument("--containers", type=int, default=20, help="containers running while measuring")
    args = parser.parse_args()
    if not shutil.which("docker"):
        raise SystemExit("docker's CLI is not installed")
    scratch = Path(tempfile.mkdtemp(prefix="ross-bench-dockerapi-"))
    try:
        results = measure_both(scratch, args)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    version = subprocess.run(["docker", "version", "--format", "{{.Client.Version}}"], capture_output=True,
                             text=True).stdout.strip()
    print(f"{args.containers} containers running; docker CLI {version}; medians "
          f"({args.calls} list calls on one connection, {args.runs} CLI runs)")
    print(f"{'':<34}{'Ross':>10}{'dockerd':>10}{'ratio':>8}{'target':>8}")
    rows = [("GET /containers/json (ms)", "list", 0.5), ("docker ps (ms)", "ps", 1.0),
            ("docker run --rm busybox true (ms)", "run", 1.0)]
    for label, key, target in rows:
        ross = results["ross"][key] * 1e3
        if "dockerd" in results:
            theirs = results["dockerd"][key] * 1e3
            ratio = ross / theirs
            print(f"{label:<34}{ross:>10.1f}{theirs:>10.1f}{ratio:>8.2f}{'<=' + str(target):>8}"
                  f"{'' if ratio <= target else '  MISSED'}")
        else:
            print(f"{label:<34}{ross:>10.1f}{'-':>10}")


if __name__ == "__main__":
    main()
