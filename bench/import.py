"""
Import a ~200 MB root filesystem tarball (plain and gzip) into the image
store in-process, from a fresh root each run: MB/s of uncompressed tar,
median of the runs. Import reads, hashes and unpacks the layer; the figure
covers all three.

    .venv/bin/python bench/import.py [--size-mb 200] [--runs 3]
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import statistics
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from isal import igzip  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402
from twisted.internet.task import react  # noqa: E402

from ross.engine.content.store import ContentStore  # noqa: E402
from ross.engine.events import EventBus  # noqa: E402
from ross.engine.images.store import ImageStore  # noqa: E402
from ross.engine.snapshots import OverlaySnapshotter  # noqa: E402


def make_tar(total_mb: int) -> bytes:
    """
    A layer of about total_mb: small and large files, half random (like
    binaries), half repetitive text (like configs and scripts).
    """
    rng = random.Random(42)
    buffer = io.BytesIO()
    words = [bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(500)]
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        written = n = 0
        while written < total_mb * 1_000_000:
            size = rng.choice((4_000, 60_000, 2_000_000))
            if n % 2:
                data = rng.randbytes(size)
            else:
                data = b" ".join(rng.choice(words) for _ in range(size // 5))[:size]
            info = tarfile.TarInfo(f"d{n % 40:02d}/f{n:06d}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
            written += len(data)
            n += 1
    return buffer.getvalue()


async def import_once(reactor: Any, path: Path) -> float:
    root = Path(tempfile.mkdtemp(prefix="ross-bench-import-"))
    try:
        events = EventBus(reactor)
        snapshotter = OverlaySnapshotter(reactor, root / "snapshots", events)
        await snapshotter.start()
        store = ImageStore(reactor, root / "images", ContentStore(reactor, root / "content"), snapshotter, events)
        await store.start()
        try:
            with open(path, "rb") as f:
                start = time.perf_counter()
                await store.import_image(f, "bench:1")
                elapsed = time.perf_counter() - start
        finally:
            await store.stop()
            await snapshotter.stop()
        return elapsed
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def main(reactor: Any, size_mb: int, runs: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="ross-bench-tar-"))
    try:
        tar = make_tar(size_mb)
        plain = work / "layer.tar"
        plain.write_bytes(tar)
        compressed = work / "layer.tar.gz"
        compressed.write_bytes(igzip.compress(tar, 3))
        print(f"layer: {len(tar) / 1e6:.0f} MB tar, {compressed.stat().st_size / 1e6:.0f} MB gzip")
        for name, path in (("plain", plain), ("gzip", compressed)):
            times = [await import_once(reactor, path) for _ in range(runs)]
            median = statistics.median(times)
            print(f"import {name:5}: {median:6.2f} s  {len(tar) / 1e6 / median:7.1f} MB/s (median of {runs})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    react(lambda reactor: Deferred.fromCoroutine(main(reactor, args.size_mb, args.runs)))


if __name__ == "__main__":
    run()
