"""
Load and unpack a ~200 MB, 3-layer image archive: Ross (through `ross load`
against a real daemon, and the image store in-process) vs `umoci unpack`
(and `docker load` when dockerd can be started here), in MB/s and ratios.

    .venv/bin/python bench/load.py [--size-mb 200] [--runs 3] [--no-docker]

Target (issue 3): Ross's unpack throughput at least docker's.
Each run starts from an empty store; the figure is the median.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.dockerd import private_dockerd  # noqa: E402
from bench.store import add_option, stores  # noqa: E402
from ross.testing.daemon import DaemonProcess, short_tempdir  # noqa: E402
from ross.testing.images import docker_archive, layer_tar  # noqa: E402


def make_layers(base: Path, total_mb: int) -> list[bytes]:
    """
    Three layers of about total_mb/3 each: many small files, medium files,
    a few large ones; incompressible content, like binaries and assets.
    """
    rng = random.Random(42)
    per = total_mb * 1_000_000 // 3
    shapes = [(16_000, "small"), (400_000, "medium"), (8_000_000, "large")]
    layers = []
    for i, (size, kind) in enumerate(shapes):
        root = base / f"layer{i}"
        count = per // size
        for n in range(count):
            d = root / kind / f"d{n % 50:02d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{n:05d}").write_bytes(rng.randbytes(size))
        if i == 1:
            os.symlink("../small", root / "medium" / "link")
        layers.append(layer_tar(root))
        shutil.rmtree(root)
    return layers


def timed(fn) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run(*argv: str, env: dict[str, str] | None = None) -> None:
    r = subprocess.run(argv, capture_output=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.decode(errors='replace')}")


def bench_ross_cli(archive: Path, runs: int, parent: Path) -> list[float]:
    times = []
    for _ in range(runs):
        daemon = DaemonProcess(short_tempdir("ross-bench-", parent))
        try:
            daemon.start()
            r = None

            def load() -> None:
                nonlocal r
                r = daemon.ross("load", "-i", str(archive), timeout=600)

            times.append(timed(load))
            assert r is not None and r.returncode == 0, r.stderr if r else ""
        finally:
            daemon.stop()
            daemon.cleanup()
    return times


def bench_ross_engine(archive: Path, runs: int, parent: Path) -> list[float]:
    script = r"""
import sys, time
from pathlib import Path
from twisted.internet import task, defer
from ross.engine.content.store import ContentStore
from ross.engine.events import EventBus
from ross.engine.images.store import ImageStore
from ross.engine.snapshots import OverlaySnapshotter

async def main(reactor):
    root = Path(sys.argv[2])
    events = EventBus(reactor)
    snap = OverlaySnapshotter(reactor, root / "snapshots" / "overlayfs", events)
    await snap.start()
    store = ImageStore(reactor, root / "images", ContentStore(reactor, root / "content"), snap, events)
    await store.start()
    start = time.perf_counter()
    with open(sys.argv[1], "rb") as f:
        await store.load(f)
    print(time.perf_counter() - start)
    await store.stop()
    await snap.stop()

task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
"""
    times = []
    for _ in range(runs):
        root = Path(tempfile.mkdtemp(prefix="ross-bench-engine-", dir=parent))
        try:
            r = subprocess.run([sys.executable, "-c", script, str(archive), str(root)], capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent)))
            if r.returncode != 0:
                raise RuntimeError(r.stderr)
            times.append(float(r.stdout.strip().splitlines()[-1]))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return times


def bench_umoci(archive: Path, work: Path, runs: int, parent: Path) -> list[float]:
    layout = work / "oci"
    run("skopeo", "copy", f"docker-archive:{archive}", f"oci:{layout}:bench")
    times = []
    for i in range(runs):
        bundle = Path(tempfile.mkdtemp(prefix="ross-bench-umoci-", dir=parent)) / "bundle"
        times.append(timed(lambda: run("umoci", "unpack", "--image", f"{layout}:bench", str(bundle))))
        shutil.rmtree(bundle.parent)
    shutil.rmtree(layout)
    return times


def bench_docker(archive: Path, runs: int, parent: Path) -> list[float] | str:
    times = []
    for _ in range(runs):
        with private_dockerd(parent=parent) as env:
            if isinstance(env, str):
                return env
            times.append(timed(lambda: run("docker", "load", "-i", str(archive), env=env)))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-docker", action="store_true")
    add_option(parser)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ross-bench-load-", dir="/var/tmp"))
    try:
        with stores(args.store, work) as parent:
            measure(args, work, parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path, parent: Path) -> None:
    layers = make_layers(work, args.size_mb)
    archive = work / "bench.tar"
    docker_archive(archive, tags=["bench:latest"], layers=layers)
    size_mb = archive.stat().st_size / 1e6
    print(f"archive: {size_mb:.0f} MB, {len(layers)} layers "
          f"({', '.join(f'{len(layer) / 1e6:.0f}' for layer in layers)} MB), median of {args.runs} runs")
    results: dict[str, float] = {}

    def report(name: str, times: list[float] | str) -> None:
        if isinstance(times, str):
            print(f"  {name:<28} skipped: {times}")
            return
        median = statistics.median(times)
        results[name] = median
        print(f"  {name:<28} {median:7.2f} s  {size_mb / median:7.1f} MB/s")

    report("ross load (CLI, gRPC)", bench_ross_cli(archive, args.runs, parent))
    report("ross image store (engine)", bench_ross_engine(archive, args.runs, parent))
    report("umoci unpack", bench_umoci(archive, work, args.runs, parent))
    if not args.no_docker:
        report("docker load", bench_docker(archive, args.runs, parent))
    ross = results["ross load (CLI, gRPC)"]
    for other in ("umoci unpack", "docker load"):
        if other in results:
            print(f"  ratio ross/{other.split()[0]} throughput: {results[other] / ross:.2f}x")
    print(json.dumps({k: round(size_mb / v, 1) for k, v in results.items()}))


if __name__ == "__main__":
    main()
