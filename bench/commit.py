"""
``commit`` of a container that wrote about 200 MB (half random, like
binaries; half repetitive text), Ross next to docker (when a docker daemon
answers): median of the runs, MB/s of changes, and the time a running
container stays paused for it.

    .venv/bin/python bench/commit.py [--size-mb 200] [--runs 3]

Ross's commit writes the diff gzip-compressed into the content store, then
extracts it as the new image's top snapshot; docker (overlay2) keeps the
layer uncompressed. Both read and copy every changed byte.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ross.testing.daemon import DaemonProcess  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402

ROSS = os.path.join(os.path.dirname(sys.executable), "ross")


def docker_available() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True).returncode == 0


def timed(argv: list[str], env: dict[str, str] | None = None) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def writer_script(mb: int) -> str:
    """Half random bytes, half text, in 2 MB and 60 kB files."""
    half = mb // 2
    return (
        "mkdir -p /data/r /data/t; "
        f"for i in $(seq {half}); do head -c 1000000 /dev/urandom > /data/r/$i; done; "
        f"for i in $(seq {half}); do yes 'the quick brown fox jumps over the lazy dog' | head -c 1000000 > /data/t/$i; done; "
        "for i in $(seq 200); do head -c 60000 /dev/urandom > /data/small$i; done"
    )


def bench(cli: list[str], env: dict[str, str] | None, image: str, mb: int, runs: int, prefix: str) -> list[float]:
    """
    Each run commits a container of its own: its random half makes a new
    layer, as a real commit does (committing the same changes again is
    another case: the layer exists already).
    """
    times = []
    try:
        for i in range(runs):
            subprocess.run(cli + ["rm", "-f", f"{prefix}-src{i}"], env=env, capture_output=True)
            subprocess.run(cli + ["run", "--name", f"{prefix}-src{i}", image, "sh", "-c", writer_script(mb)],
                           env=env, check=True, stdout=subprocess.DEVNULL)
            times.append(timed(cli + ["commit", f"{prefix}-src{i}", f"{prefix}-committed:{i}"], env))
    finally:
        for i in range(runs):
            subprocess.run(cli + ["rmi", f"{prefix}-committed:{i}"], env=env, capture_output=True)
            subprocess.run(cli + ["rm", "-f", f"{prefix}-src{i}"], env=env, capture_output=True)
    return times


def seconds_of(stamp: str) -> float:
    """Seconds since the epoch of an RFC 3339 UTC stamp with up to nanoseconds."""
    whole, _, fraction = stamp.rstrip("Z").partition(".")
    seconds = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    return seconds.timestamp() + float("0." + (fraction or "0"))


def paused_for(env: dict[str, str], image: str, mb: int) -> float:
    """Ross: how long a running container's commit keeps it paused (from the events)."""
    subprocess.run([ROSS, "run", "-d", "--name", "bench-live", image, "sh", "-c",
                    writer_script(mb) + "; exec sleep 1000"], env=env, check=True, stdout=subprocess.DEVNULL)
    while subprocess.run([ROSS, "exec", "bench-live", "test", "-e", "/data/small200"], env=env).returncode:
        time.sleep(0.2)
    events = subprocess.Popen([ROSS, "events", "--filter", "container=bench-live"], env=env,
                              stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(0.5)
        subprocess.run([ROSS, "commit", "bench-live", "bench-live-image"], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        stamps = {}
        assert events.stdout is not None
        for line in events.stdout:
            stamp, _, action = line.split()[:3]
            stamps[action] = seconds_of(stamp)
            if action == "unpause":
                break
        return stamps["unpause"] - stamps["pause"]
    finally:
        events.kill()
        events.wait()
        subprocess.run([ROSS, "rm", "-f", "bench-live"], env=env, capture_output=True)
        subprocess.run([ROSS, "rmi", "bench-live-image"], env=env, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    docker = docker_available()
    daemon = DaemonProcess()
    env = dict(os.environ, ROSS_HOST=daemon.address)
    image = "ross-bench-busybox"
    try:
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar", tags=(f"{image}:latest",))
        subprocess.run([ROSS, "load", "-i", str(archive.path)], env=env, check=True, capture_output=True)
        if docker:
            subprocess.run(["docker", "load", "-i", str(archive.path)], check=True, capture_output=True)
        mb = args.size_mb
        print(f"commit of a container that wrote {mb} MB, median of {args.runs}:")
        ross = statistics.median(bench([ROSS], env, image, mb, args.runs, "bench"))
        print(f"  ross   {ross:6.2f} s  {mb / ross:6.1f} MB/s")
        if docker:
            theirs = statistics.median(bench(["docker"], None, image, mb, args.runs, "ross-bench"))
            print(f"  docker {theirs:6.2f} s  {mb / theirs:6.1f} MB/s")
            print(f"  ratio ross/docker time = {ross / theirs:.2f}")
        print(f"  ross keeps a running container paused {paused_for(env, image, mb):.2f} s")
    finally:
        if docker:
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
        daemon.stop()
        daemon.cleanup()


if __name__ == "__main__":
    main()
