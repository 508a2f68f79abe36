"""
Snapshot and layer benchmarks.

    .venv/bin/python bench/snapshots.py [--iterations N] [--no-docker] [--keep]

1. prepare / commit / remove latency of the overlay snapshotter through
   the reactor (Deferreds, worker pool, SQLite with fsync): median and p99.
   Target: under 10 ms each.
2. Unpacking a ~200 MB, 3-layer image built from files of this host
   (small Python files; docs and Perl modules; big shared libraries, plus
   whiteouts): Ross (prepare + apply_layer + commit per layer) on plain and
   gzip layers, vs `umoci unpack` of the same gzip layers as an OCI layout,
   vs `docker load` of the same layers as a docker-archive (a private
   dockerd started for the run when docker is installed). MB/s of
   uncompressed layer bytes, and ratios.

Runs as root. Everything lives under a temporary directory (a tmpfs by
default, see --storage), removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from twisted.internet import reactor  # noqa: E402
from twisted.internet.defer import inlineCallbacks, maybeDeferred  # noqa: E402

from bench.dockerd import private_dockerd  # noqa: E402
from ross.engine.snapshots import OverlaySnapshotter  # noqa: E402

LAYER_SOURCES: list[tuple[list[str], int]] = [
    (["/usr/lib/python3.11"], 60 << 20),
    (["/usr/share/perl", "/usr/share/doc", "/usr/share/locale"], 70 << 20),
    (
        [
            "/usr/lib/x86_64-linux-gnu/libicudata.so.72.1",
            "/usr/lib/x86_64-linux-gnu/libz3.so.4",
            "/usr/lib/x86_64-linux-gnu/libx265.so.199",
            "/usr/lib/x86_64-linux-gnu/librsvg-2.so.2.48.0",
        ],
        75 << 20,
    ),
]


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def build_layers(work: Path) -> list[bytes]:
    """
    Three uncompressed layer tars from host files, each up to its budget;
    the third also deletes some files of the first (whiteouts).
    """
    layers = []
    first_names: list[str] = []
    for index, (sources, budget) in enumerate(LAYER_SOURCES):
        out = io.BytesIO()
        used = 0
        with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for source in sources:
                paths = [source] if os.path.isfile(source) else sorted(
                    os.path.join(d, f) for d, _, files in os.walk(source) for f in files
                )
                for path in paths:
                    if not os.path.isfile(path) or os.path.islink(path):
                        continue
                    size = os.path.getsize(path)
                    if used + size > budget:
                        continue
                    arcname = f"layer{index}" + path
                    tar.add(path, arcname=arcname, recursive=False)
                    used += size
                    if index == 0:
                        first_names.append(arcname)
            if index == 2:
                for name in first_names[:: max(1, len(first_names) // 50)]:
                    parent, _, base = name.rpartition("/")
                    info = tarfile.TarInfo(f"{parent}/.wh.{base}")
                    tar.addfile(info)
        layers.append(out.getvalue())
    return layers


def blocking(command: list[str], env: dict[str, str] | None = None) -> float:
    """
    Wall time of a command (run on the reactor thread: the bench has
    nothing else to do meanwhile).
    """
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def write_oci_layout(path: Path, gz_layers: list[bytes], diff_ids: list[str]) -> None:
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return "sha256:" + digest

    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": put(config), "size": len(config)},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": put(layer), "size": len(layer)}
            for layer in gz_layers
        ],
    }).encode()
    index = {
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": put(manifest), "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": "bench"},
        }],
    }
    (path / "index.json").write_text(json.dumps(index))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def write_docker_archive(path: Path, layers: list[bytes], diff_ids: list[str]) -> None:
    with tarfile.open(path, "w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))

        config = json.dumps({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }).encode()
        add("config.json", config)
        names = []
        for i, layer in enumerate(layers):
            add(f"layer{i}.tar", layer)
            names.append(f"layer{i}.tar")
        add("manifest.json", json.dumps([{"Config": "config.json", "RepoTags": ["rossbench:latest"], "Layers": names}]).encode())


class ReactorLag:
    """
    How late a 5 ms repeating timer fires while the reactor is busy: the
    reactor thread must stay responsive while layers extract in threads.
    """

    def __init__(self, interval: float = 0.005) -> None:
        from twisted.internet.task import LoopingCall

        self.worst = 0.0
        self._interval = interval
        self._last = time.perf_counter()
        self._call = LoopingCall(self._tick)
        self._call.start(interval, now=False)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.worst = max(self.worst, now - self._last - self._interval)
        self._last = now

    def stop(self) -> None:
        self._call.stop()


@inlineCallbacks
def latency(snapshotter: OverlaySnapshotter, iterations: int) -> Any:
    yield snapshotter.prepare("lat-base-x")
    yield snapshotter.commit("lat-base", "lat-base-x")
    times: dict[str, list[float]] = {"prepare": [], "commit": [], "remove": []}
    for i in range(iterations):
        start = time.perf_counter()
        yield snapshotter.prepare(f"lat-{i}-x", "lat-base")
        times["prepare"].append(time.perf_counter() - start)
        start = time.perf_counter()
        yield snapshotter.commit(f"lat-{i}", f"lat-{i}-x")
        times["commit"].append(time.perf_counter() - start)
        start = time.perf_counter()
        yield snapshotter.remove(f"lat-{i}")
        times["remove"].append(time.perf_counter() - start)
    yield snapshotter.remove("lat-base")
    return times


@inlineCallbacks
def remove_chain(snapshotter: OverlaySnapshotter, tag: str, count: int) -> Any:
    for i in reversed(range(count)):
        yield snapshotter.remove(f"{tag}-{i}")


@inlineCallbacks
def ross_unpack(snapshotter: OverlaySnapshotter, blobs: list[Path], tag: str) -> Any:
    start = time.perf_counter()
    parent = ""
    for i, blob in enumerate(blobs):
        key = f"{tag}-{i}-x"
        yield snapshotter.prepare(key, parent)
        yield snapshotter.apply_layer(key, blob)
        yield snapshotter.commit(f"{tag}-{i}", key)
        parent = f"{tag}-{i}"
    return time.perf_counter() - start


@inlineCallbacks
def main_async(args: argparse.Namespace, work: Path) -> Any:
    # Latency on the disk whatever --storage says: fsync is the point.
    disk = Path(tempfile.mkdtemp(prefix="ross-bench-latency-", dir="/var/tmp"))
    on_disk = OverlaySnapshotter(reactor, disk / "snapshots" / "overlayfs")
    yield on_disk.start()
    try:
        times = yield latency(on_disk, args.iterations)
    finally:
        yield on_disk.stop()
        shutil.rmtree(disk)
    print(f"snapshot latency on disk over {args.iterations} iterations (target < 10 ms):")
    for op, values in times.items():
        print(f"  {op:8s} median {statistics.median(values) * 1e3:6.2f} ms   p99 {percentile(values, 99) * 1e3:6.2f} ms")

    snapshotter = OverlaySnapshotter(reactor, work / "ross" / "snapshots" / "overlayfs")
    yield snapshotter.start()
    try:

        print("building the layer set from host files ...")
        layers = build_layers(work)
        diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
        gz_layers = [gzip.compress(layer, 6, mtime=0) for layer in layers]
        total = sum(len(layer) for layer in layers)
        print(f"  {len(layers)} layers, {total / 1e6:.1f} MB uncompressed, {sum(map(len, gz_layers)) / 1e6:.1f} MB gzip")
        plain_blobs, gz_blobs = [], []
        for i, (layer, gz) in enumerate(zip(layers, gz_layers)):
            (work / f"layer{i}.tar").write_bytes(layer)
            (work / f"layer{i}.tar.gz").write_bytes(gz)
            plain_blobs.append(work / f"layer{i}.tar")
            gz_blobs.append(work / f"layer{i}.tar.gz")
        # Every tool runs once per round; rounds alternate the order, so
        # that a disk slowing down as it fills (a VM's I/O budget) or other
        # load on the machine does not favour whoever runs first.
        tools: list[tuple[str, Callable[[], Any], Callable[[], Any]]] = []
        for name, blobs, tag in (("ross (plain tar)", plain_blobs, "plain"), ("ross (gzip)", gz_blobs, "gz")):
            tools.append((
                name,
                lambda blobs=blobs, tag=tag: ross_unpack(snapshotter, blobs, tag),
                lambda blobs=blobs, tag=tag: remove_chain(snapshotter, tag, len(blobs)),
            ))
        if shutil.which("umoci"):
            layout = work / "oci"
            write_oci_layout(layout, gz_layers, diff_ids)
            bundle = work / "bundle"
            tools.append((
                "umoci unpack (gzip)",
                lambda: blocking(["umoci", "unpack", "--image", f"{layout}:bench", str(bundle)]),
                lambda: shutil.rmtree(bundle),
            ))
        docker = contextlib.ExitStack()
        if not args.no_docker:
            docker_env = docker.enter_context(private_dockerd(extra=(
                "--containerd-namespace", "rossbench", "--containerd-plugins-namespace", "rossbench-plugins")))
            if isinstance(docker_env, str):
                print(f"  ({docker_env}; docker load not measured)")
            else:
                for name, layer_blobs in (("docker load (plain tar)", layers), ("docker load (gzip)", gz_layers)):
                    archive = work / f"{name.split('(')[1][:-1].replace(' ', '-')}.docker.tar"
                    write_docker_archive(archive, layer_blobs, diff_ids)
                    tools.append((
                        name,
                        lambda archive=archive, env=docker_env: blocking(["docker", "load", "-i", str(archive)], env),
                        lambda env=docker_env: blocking(["docker", "rmi", "rossbench:latest"], env),
                    ))
        runs: dict[str, list[float]] = {name: [] for name, _, _ in tools}
        worst_lag = 0.0
        try:
            for rep in range(args.repeat):
                for name, run, undo in tools if rep % 2 == 0 else tools[::-1]:
                    subprocess.run(["sync"], check=True)
                    lag = ReactorLag() if name.startswith("ross") else None
                    runs[name].append((yield maybeDeferred(run)))
                    if lag is not None:
                        lag.stop()
                        worst_lag = max(worst_lag, lag.worst)
                    if rep < args.repeat - 1 or not name.startswith("ross"):
                        yield maybeDeferred(undo)
        finally:
            docker.close()
        results = {name: statistics.median(values) for name, values in runs.items()}

        diff_results = {}
        for compression in ("none", "gzip"):
            sink = open(work / f"diff-{compression}", "wb")
            start = time.perf_counter()
            diff = yield snapshotter.diff("gz-1", sink, compression)
            diff_results[compression] = (time.perf_counter() - start, diff)
            sink.close()

        print(f"unpack of {total / 1e6:.1f} MB in 3 layers (median of {args.repeat} runs):")
        for name, seconds in results.items():
            spread = ", ".join(f"{v:.2f}" for v in runs[name])
            print(f"  {name:26s} {seconds:7.3f} s  {total / seconds / 1e6:8.1f} MB/s   (runs: {spread} s)")
        print(f"  reactor: worst delay of a 5 ms timer while Ross unpacked {worst_lag * 1e3:.1f} ms")
        layer1 = len(layers[1])
        for compression, (seconds, diff) in diff_results.items():
            print(f"  ross diff of layer 2 ({compression:4s})   {seconds:7.3f} s  {layer1 / seconds / 1e6:8.1f} MB/s"
                  f"  (diff ID {'matches' if diff.diff_id == diff_ids[1] else 'differs from'} the layer's: the tar is rebuilt)")
        for ross_name, other, label in (
            ("ross (gzip)", "umoci unpack (gzip)", "ross/umoci (gzip)"),
            ("ross (plain tar)", "docker load (plain tar)", "ross/docker load (plain)"),
            ("ross (gzip)", "docker load (gzip)", "ross/docker load (gzip)"),
        ):
            if other in results:
                print(f"  speed ratio {label:26s} {results[other] / results[ross_name]:.2f}x")
    finally:
        yield snapshotter.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3, help="unpack runs per tool (median reported)")
    parser.add_argument("--no-docker", action="store_true", help="do not start dockerd for docker load")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--storage", choices=("tmpfs", "disk"), default="tmpfs",
                        help="tmpfs (default): every tool writes to memory, so the figures compare the tools' "
                             "own work; disk: /var/tmp, closer to real use but noisy on a VM whose disk slows "
                             "as it is written")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ross-bench-", dir="/var/tmp"))
    if args.storage == "tmpfs":
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6g,mode=0700", "ross-bench", str(work)], check=True)
    print(f"storage: {args.storage} ({work})")
    failure: list[Any] = []

    def run() -> None:
        d = main_async(args, work)
        d.addErrback(failure.append)
        d.addBoth(lambda _: reactor.stop())

    reactor.callWhenRunning(run)
    reactor.run()
    if args.storage == "tmpfs":
        subprocess.run(["umount", str(work)], check=True)
        os.rmdir(work)
    elif not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    if failure:
        failure[0].printTraceback()
        sys.exit(1)


if __name__ == "__main__":
    main()
