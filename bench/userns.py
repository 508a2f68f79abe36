"""
What a user namespace costs a start: ``run --rm busybox true`` on a daemon
with ``--userns-remap``, remapped and with ``--userns host`` (the same
daemon, so only the user namespace differs), on the default bridge and
with ``--network none``, alternating, median and ratio; then docker
(``--network none``: the bench's private dockerd has no bridge) when a
private dockerd can run. ``--docker-remap USER`` adds docker's remapped
runs: USER needs ranges in /etc/subuid and /etc/subgid, which dockerd
reads (and "default" makes dockerd add dockremap to both).

    .venv/bin/python bench/userns.py [--runs 20] [--no-docker] [--docker-remap USER]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.containers import ROSS, timed  # noqa: E402
from bench.dockerd import private_dockerd  # noqa: E402
from ross.testing.daemon import DaemonProcess, short_tempdir  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402

# A host range nothing else uses, given to the user "daemon" in files of
# the bench's own: the system's /etc/subuid is not touched.
BASE = 1_600_000_000


def alternate(runs: int, *commands: tuple[list[str], dict[str, str]]) -> Iterator[list[float]]:
    """Times of each command, run in turn C{runs} times after two warm-ups."""
    for _ in range(2):
        for argv, env in commands:
            timed(argv, env)
    times: list[list[float]] = [[] for _ in commands]
    for _ in range(runs):
        for i, (argv, env) in enumerate(commands):
            times[i].append(timed(argv, env))
    return iter(times)


def report(label: str, times: list[float]) -> float:
    median = statistics.median(times)
    print(f"  {label:<22} {median * 1e3:7.1f} ms  (min {min(times) * 1e3:.1f})")
    return median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--docker-remap", default="", help="also time dockerd --userns-remap USER")
    args = parser.parse_args()

    files = short_tempdir("ross-bench-subid-")
    (files / "subuid").write_text(f"daemon:{BASE}:65536\n")
    (files / "subgid").write_text(f"daemon:{BASE}:65536\n")
    daemon = DaemonProcess(extra=["--userns-remap", "daemon", "--subuid-file", str(files / "subuid"),
                                  "--subgid-file", str(files / "subgid")])
    env = dict(os.environ, ROSS_HOST=daemon.address)
    image = "ross-bench-busybox"
    try:
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar", tags=(f"{image}:latest",))
        subprocess.run([ROSS, "load", "-i", str(archive.path)], env=env, check=True, capture_output=True)
        medians: dict[tuple[str, bool], float] = {}
        for network in ("bridge", "none"):
            remapped, host = alternate(args.runs, ([ROSS, "run", "--rm", "--network", network, image, "true"], env),
                                       ([ROSS, "run", "--rm", "--network", network, "--userns", "host", image,
                                         "true"], env))
            print(f"run --rm --network {network} {image} true, median of {args.runs}:")
            r = medians[network, True] = report("ross --userns-remap", remapped)
            h = medians[network, False] = report("ross --userns host", host)
            print(f"  the user namespace costs {(r - h) * 1e3:.1f} ms a start ({r / h:.2f}x)")
        if args.no_docker:
            return
        docker_times = {}
        for label, extra in (("docker", []), ("docker --userns-remap", ["--userns-remap", args.docker_remap])):
            if extra and not args.docker_remap:
                continue
            with private_dockerd(extra=extra) as denv:
                if isinstance(denv, str):
                    print(f"  {label}: {denv}")
                    continue
                subprocess.run(["docker", "load", "-i", str(archive.path)], env=denv, check=True, capture_output=True)
                docker_times[label] = next(alternate(args.runs, (["docker", "run", "--rm", "--network", "none",
                                                                  image, "true"], denv)))
        if docker_times:
            print(f"docker run --rm --network none {image} true, median of {args.runs}:")
        for label, times in docker_times.items():
            d = report(label, times)
            remap = "remap" in label
            print(f"    ratio ross/docker{', both remapped' if remap else ''}: {medians['none', remap] / d:.2f}")
    finally:
        daemon.stop()
        daemon.cleanup()
        for name in ("subuid", "subgid"):
            (files / name).unlink()
        files.rmdir()


if __name__ == "__main__":
    main()
