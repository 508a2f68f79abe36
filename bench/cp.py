"""
``cp`` into and out of a running container, Ross next to docker (when a
docker daemon answers): a 200 MB file and a tree of many small files,
median of the runs, MB/s and the ratio of the times.

    .venv/bin/python bench/cp.py [--size-mb 200] [--files 5000] [--runs 3]

Target: not slower than docker (ratio <= 1).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.commit import ROSS, docker_available, timed  # noqa: E402
from ross.testing.daemon import DaemonProcess  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402


def make_sources(base: Path, mb: int, files: int) -> tuple[Path, Path]:
    big = base / "big.bin"
    with open(big, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    tree = base / "tree"
    for i in range(files):
        directory = tree / f"d{i % 50}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{i}").write_bytes(os.urandom(4096))
    return big, tree


def bench(cli: list[str], env: dict[str, str] | None, image: str, name: str, big: Path, tree: Path,
          out: Path, runs: int) -> dict[str, float]:
    subprocess.run(cli + ["rm", "-f", name], env=env, capture_output=True)
    subprocess.run(cli + ["run", "-d", "--name", name, image, "sleep", "100000"], env=env, check=True,
                   capture_output=True)
    results: dict[str, list[float]] = {"file in": [], "file out": [], "tree in": [], "tree out": []}
    try:
        for _ in range(runs):
            results["file in"].append(timed(cli + ["cp", str(big), f"{name}:/big.bin"], env))
            shutil.rmtree(out, ignore_errors=True)
            out.mkdir()
            results["file out"].append(timed(cli + ["cp", f"{name}:/big.bin", str(out / "big.bin")], env))
            subprocess.run(cli + ["exec", name, "rm", "-rf", "/tree"], env=env, check=True)
            results["tree in"].append(timed(cli + ["cp", str(tree), f"{name}:/tree"], env))
            results["tree out"].append(timed(cli + ["cp", f"{name}:/tree", str(out / "tree")], env))
    finally:
        subprocess.run(cli + ["rm", "-f", name], env=env, capture_output=True)
        shutil.rmtree(out, ignore_errors=True)
    return {k: statistics.median(v) for k, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--runs", type=int, default=3)
    compare(parser.parse_args())


def compare(args: argparse.Namespace) -> None:
    """Ross's and docker's cp, with the sizes and runs of C{args}."""
    docker = docker_available()
    daemon = DaemonProcess()
    env = dict(os.environ, ROSS_HOST=daemon.address)
    image = "ross-bench-busybox"
    work = Path(tempfile.mkdtemp(prefix="ross-bench-cp-"))
    engines: list[tuple[list[str], dict[str, str] | None]] = [([ROSS], env)] + ([(["docker"], None)] if docker else [])
    try:
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar", tags=(f"{image}:latest",))
        for cli, cli_env in engines:
            subprocess.run(cli + ["load", "-i", str(archive.path)], env=cli_env, check=True, capture_output=True)
        big, tree = make_sources(work, args.size_mb, args.files)
        tree_mb = args.files * 4096 / 1e6
        sizes = {"file in": args.size_mb * 1.048576, "file out": args.size_mb * 1.048576,
                 "tree in": tree_mb, "tree out": tree_mb}
        ross = bench([ROSS], env, image, "bench-cp", big, tree, work / "out", args.runs)
        theirs = bench(["docker"], None, image, "ross-bench-cp", big, tree, work / "out", args.runs) if docker else {}
        print(f"cp, a {args.size_mb} MB file and a tree of {args.files} 4 kB files, median of {args.runs}:")
        for what, seconds in ross.items():
            line = f"  {what:9} ross {seconds:6.2f} s {sizes[what] / seconds:7.1f} MB/s"
            if what in theirs:
                d = theirs[what]
                line += f" | docker {d:6.2f} s {sizes[what] / d:7.1f} MB/s | ratio ross/docker time {seconds / d:.2f}"
            print(line)
    finally:
        if docker:
            subprocess.run(["docker", "rmi", "-f", image], capture_output=True)
        daemon.stop()
        daemon.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
