"""
Pull and push of a ~200 MB, 3-layer image (gzip layers, incompressible
content) against a local registry (Debian's docker-registry on loopback):
Ross (`ross pull` / `ross push` against a real daemon, empty store each
run) vs docker (`docker pull` / `docker push` against a private dockerd,
image removed between runs), in MB/s of registry bytes and ratios.

    .venv/bin/python bench/pull.py [--size-mb 200] [--runs 3] [--no-docker] [--no-push]

A pull here includes unpacking the layers, as docker's does. Each push
goes to a fresh registry, so every blob is uploaded.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench.dockerd import private_dockerd  # noqa: E402
from bench.store import add_option, stores  # noqa: E402
from ross.testing.daemon import DaemonProcess, short_tempdir  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402
from ross.testing.registry import RegistryServer, free_port  # noqa: E402


def _load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_load", HERE / "load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    r = subprocess.run(argv, capture_output=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.decode(errors='replace')}")
    return r


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


@contextlib.contextmanager
def registry(base: Path) -> Iterator[str]:
    """A docker-registry process on a free port; yields HOST:PORT."""
    server = RegistryServer(base)
    server.port = free_port()
    base.mkdir(parents=True, exist_ok=True)
    config = base / "config.yml"
    config.write_text(server.config())
    proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        import socket

        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", server.port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("docker-registry did not start")
                time.sleep(0.05)
        yield f"127.0.0.1:{server.port}"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        shutil.rmtree(base, ignore_errors=True)


def bench_ross(host: str, work: Path, runs: int, push: bool, parent: Path) -> tuple[list[float], list[float]]:
    pulls, pushes = [], []
    for i in range(runs):
        with registry(work / f"ross-push-{i}") as target:
            daemon = DaemonProcess(short_tempdir("ross-bench-", parent),
                                   extra=["--insecure-registry", host, "--insecure-registry", target])
            try:
                daemon.start()
                results = []
                pulls.append(timed(lambda: results.append(
                    daemon.ross("pull", "-q", f"{host}/bench:latest", timeout=600))))
                if push:
                    results.append(daemon.ross("tag", f"{host}/bench:latest", f"{target}/bench:latest"))
                    pushes.append(timed(lambda: results.append(
                        daemon.ross("push", "-q", f"{target}/bench:latest", timeout=600))))
                for r in results:
                    assert r.returncode == 0, r.stderr.decode(errors="replace")
            finally:
                daemon.stop()
                daemon.cleanup()
    return pulls, pushes


def bench_docker(host: str, work: Path, runs: int, push: bool,
                 parent: Path) -> tuple[list[float], list[float]] | str:
    pulls, pushes = [], []
    with private_dockerd(parent=parent) as env:
        if isinstance(env, str):
            return env
        for i in range(runs):
            pulls.append(timed(lambda: run("docker", "pull", "-q", f"{host}/bench:latest", env=env)))
            if push:
                with registry(work / f"docker-push-{i}") as target:
                    run("docker", "tag", f"{host}/bench:latest", f"{target}/bench:latest", env=env)
                    pushes.append(timed(lambda: run("docker", "push", f"{target}/bench:latest", env=env)))
                    run("docker", "rmi", f"{target}/bench:latest", env=env)
            run("docker", "rmi", f"{host}/bench:latest", env=env)
            run("docker", "image", "prune", "-f", env=env)
    return pulls, pushes


def interop(work: Path, parent: Path) -> str:
    """
    docker pulls (and runs) what Ross pushed; Ross pulls (and runs) what
    docker pushed, each through a registry of its own.
    """
    with registry(work / "interop-ross") as first, registry(work / "interop-docker") as second, \
            private_dockerd(parent=parent) as env:
        if isinstance(env, str):
            return f"skipped: {env}"
        daemon = DaemonProcess(short_tempdir("ross-bench-", parent),
                               extra=["--insecure-registry", first, "--insecure-registry", second])
        try:
            daemon.start()
            rootfs = subprocess.run([sys.executable, "-m", "ross.testing.busybox"], capture_output=True, check=True,
                                    env=dict(os.environ, PYTHONPATH=str(HERE.parent))).stdout
            steps = [
                daemon.ross("import", "--change", 'CMD ["sh"]', "-", f"{first}/bb:ross", input=rootfs),
                daemon.ross("push", f"{first}/bb:ross"),
            ]
            run("docker", "pull", f"{first}/bb:ross", env=env)
            said = run("docker", "run", "--rm", "--network", "none", f"{first}/bb:ross", "echo", "hi", env=env)
            run("docker", "tag", f"{first}/bb:ross", f"{second}/bb:docker", env=env)
            run("docker", "push", f"{second}/bb:docker", env=env)
            steps += [daemon.ross("pull", f"{second}/bb:docker"),
                      daemon.ross("run", "--rm", f"{second}/bb:docker", "echo", "hi")]
            for r in steps:
                if r.returncode != 0:
                    return f"FAILED: {r.stderr.decode(errors='replace').strip()}"
            if said.stdout != b"hi\n" or steps[-1].stdout != b"hi\n":
                return "FAILED: the images did not run"
            return "docker pulled and ran Ross's push; Ross pulled and ran docker's push"
        finally:
            daemon.stop()
            daemon.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-docker", action="store_true")
    parser.add_argument("--no-push", action="store_true")
    add_option(parser)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ross-bench-pull-", dir="/var/tmp"))
    try:
        with stores(args.store, work) as parent:
            measure(args, work, parent)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(args: argparse.Namespace, work: Path, parent: Path) -> None:
    layers = _load_bench().make_layers(work, args.size_mb)
    archive = work / "bench.tar"
    docker_archive(archive, tags=["bench:latest"], layers=layers)
    del layers
    with registry(work / "registry") as host:
        run("skopeo", "copy", "-q", "--dest-tls-verify=false", f"docker-archive:{archive}",
            f"docker://{host}/bench:latest")
        archive.unlink()
        raw = json.loads(run("skopeo", "inspect", "--raw", "--tls-verify=false",
                             f"docker://{host}/bench:latest").stdout)
        size_mb = (sum(layer["size"] for layer in raw["layers"]) + raw["config"]["size"]) / 1e6
        print(f"image: {size_mb:.0f} MB in {len(raw['layers'])} gzip layers on {host}, "
              f"median of {args.runs} runs")
        results: dict[str, float] = {}

        def report(name: str, times: list[float]) -> None:
            if not times:
                return
            median = statistics.median(times)
            results[name] = median
            print(f"  {name:<14} {median:7.2f} s  {size_mb / median:7.1f} MB/s")

        ross_pulls, ross_pushes = bench_ross(host, work, args.runs, not args.no_push, parent)
        report("ross pull", ross_pulls)
        report("ross push", ross_pushes)
        if not args.no_docker:
            docker = bench_docker(host, work, args.runs, not args.no_push, parent)
            if isinstance(docker, str):
                print(f"  docker         skipped: {docker}")
            else:
                report("docker pull", docker[0])
                report("docker push", docker[1])
            print(f"  interop        {interop(work, parent)}")
        for verb in ("pull", "push"):
            if f"ross {verb}" in results and f"docker {verb}" in results:
                ratio = results[f"docker {verb}"] / results[f"ross {verb}"]
                print(f"  ratio ross/docker {verb} throughput: {ratio:.2f}x")
        print(json.dumps({k: round(size_mb / v, 1) for k, v in results.items()}))


if __name__ == "__main__":
    main()
