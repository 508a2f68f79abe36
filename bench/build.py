"""
``ross build`` next to docker's classic builder (DOCKER_BUILDKIT=0), each
against a daemon of its own started here, in the same run:

  1. a 10-step Dockerfile with 5 RUNs and a 50 MB COPY, cold (--no-cache)
     and fully cached (every step from the cache), whole CLI invocations;
  2. a context of 20,000 small files: sent and copied whole (COPY . /ctx),
     in MB/s of context, and not used at all (LABEL only: docker sends it
     anyway, Ross only its manifest);
  3. interop: a set of Dockerfiles built by both give the same config
     (Env, Cmd, Entrypoint, WorkingDir, User, Labels, ExposedPorts,
     Volumes), layer count and file trees (names, types, modes, owners,
     sizes, contents; not times).

    .venv/bin/python bench/build.py [--runs 5] [--no-docker]

Targets (issue 13): cold at most 0.8x docker, fully cached at most 0.5x
docker, context upload at least docker's MB/s. Figures are medians; runs
of Ross and docker alternate, so load on the machine hits both alike.
dockerd gets a bridge of its own (removed after) and touches no firewall.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import random
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

from bench.dockerd import private_dockerd  # noqa: E402
from ross.testing.daemon import DaemonProcess, short_tempdir  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402

ROSS = os.path.join(os.path.dirname(sys.executable), "ross")
BASE = "bench-busybox:latest"

STEPS = f"""FROM {BASE}
ENV APP=/app
COPY big.bin /data/big.bin
RUN echo one > /one
WORKDIR $APP
RUN echo two > two
LABEL bench=yes
RUN for i in 1 2 3; do echo $i; done > three
RUN ls -l /data/big.bin > size
RUN echo five > five
"""

# Dockerfiles both builders must agree on.
INTEROP: dict[str, dict[str, str | bytes]] = {
    "metadata": {"Dockerfile": (
        f"FROM {BASE}\n"
        "ENV A=1 B=\"two words\"\n"
        "LABEL org.example.a=1 org.example.b=\"x y\"\n"
        "EXPOSE 80 53/udp 8000-8001\n"
        "VOLUME /data /logs\n"
        "USER nobody\n"
        "WORKDIR /srv/app\n"
        "ENTRYPOINT [\"sh\", \"-c\"]\n"
        "CMD [\"echo hi\"]\n"
        "STOPSIGNAL SIGINT\n")},
    "files": {
        "Dockerfile": (
            f"FROM {BASE}\n"
            "COPY a.txt /app/\n"
            "COPY dir /app/dir/\n"
            "COPY --chown=33:33 a.txt /owned/a.txt\n"
            "ADD archive.tar /unpacked/\n"
            "WORKDIR /work/deep\n"
            "RUN echo made > made.txt && mkdir -p /var/x && chmod 700 /var/x && ln -s /app/a.txt /link\n"
            "RUN rm /bin/vi\n"
            "COPY *.md /docs/\n"),
        "a.txt": "a\n",
        "dir/b.txt": "b\n",
        "dir/sub/c.txt": "c\n",
        "one.md": "1\n",
        "two.md": "2\n",
        "archive.tar": b"",
    },
    "multistage": {"Dockerfile": (
        "ARG V=1\n"
        f"FROM {BASE} AS build\n"
        "ARG V\n"
        "RUN mkdir /out && echo \"v$V\" > /out/v && echo art > /out/artifact\n"
        f"FROM {BASE}\n"
        "COPY --from=build /out/ /opt/\n"
        "ENV V=final\n"
        "CMD [\"cat\", \"/opt/v\"]\n")},
}


def archive_bytes() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data, mode in (("inner/x.txt", b"x\n", 0o640), ("inner/y.sh", b"#!/bin/sh\n", 0o755)):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime, info.uid, info.gid = len(data), mode, 1700000000, 5, 6
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def write_files(directory: Path, files: dict[str, str | bytes]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == "archive.tar":
            data = archive_bytes()
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return directory


def run(argv: list[str], env: dict[str, str] | None = None, input: bytes | None = None) -> bytes:
    r = subprocess.run(argv, capture_output=True, env=env, input=input)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {r.stderr.decode(errors='replace')[-2000:]}")
    return r.stdout


def timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


class Builder:
    """One engine's CLI: ross or docker."""

    def __init__(self, name: str, cli: str, env: dict[str, str]) -> None:
        self.name = name
        self.cli = cli
        self.env = env

    def __call__(self, *args: str) -> bytes:
        return run([self.cli, *args], env=self.env)

    def build(self, context: Path, *args: str) -> bytes:
        return self("build", *args, str(context))


def image_facts(builder: Builder, image: str, base_layers: int) -> dict[str, Any]:
    """What interop compares: the config's fields, the layer count, the new layers' files."""
    inspect = json.loads(builder("image", "inspect", image))[0]
    config = inspect.get("Config") or {}
    keys = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "Labels", "ExposedPorts", "Volumes", "StopSignal")
    facts: dict[str, Any] = {k: config.get(k) or None for k in keys}
    with tempfile.TemporaryDirectory(prefix="ross-bench-save-", dir="/var/tmp") as tmp:
        path = os.path.join(tmp, "image.tar")
        builder("save", "-o", path, image)
        with tarfile.open(path) as outer:
            manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
            layers = manifest[0]["Layers"]
            facts["layers"] = len(layers)
            trees = []
            for name in layers[base_layers:]:
                member = outer.extractfile(name)
                assert member is not None
                trees.append(layer_tree(member.read()))
            facts["trees"] = trees
    return facts


def layer_tree(data: bytes) -> list[tuple[Any, ...]]:
    entries = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for m in tar.getmembers():
            content = ""
            if m.isfile():
                f = tar.extractfile(m)
                assert f is not None
                content = hashlib.sha256(f.read()).hexdigest()[:12]
            # Modes without the type bits docker's tar headers add; a
            # whiteout's mode means nothing.
            mode = "" if os.path.basename(m.name).startswith(".wh.") else oct(m.mode & 0o7777)
            entries.append((m.name.rstrip("/"), m.type.decode(), mode, m.uid, m.gid,
                            m.size if m.isfile() else 0, m.linkname, content))
    return sorted(entries)


def interop(ross: Builder, docker: Builder, work: Path, base_layers: int) -> list[str]:
    problems = []
    for name, files in INTEROP.items():
        context = write_files(work / f"interop-{name}", files)
        facts = {}
        for builder in (ross, docker):
            builder.build(context, "-t", f"bench-interop-{name}")
            facts[builder.name] = image_facts(builder, f"bench-interop-{name}", base_layers)
        a, b = facts["ross"], facts["docker"]
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                problems.append(f"{name}: {key} differs:\n  ross:   {a.get(key)}\n  docker: {b.get(key)}")
    return problems


def small_files(root: Path, count: int) -> int:
    rng = random.Random(13)
    total = 0
    for n in range(count):
        path = root / f"d{n % 100:02d}" / f"f{n:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        data = rng.randbytes(rng.randint(200, 4000))
        path.write_bytes(data)
        total += len(data)
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-docker", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="ross-bench-build-", dir="/var/tmp"))
    daemon = DaemonProcess(short_tempdir("ross-bench-"))
    try:
        steps = write_files(work / "steps", {"Dockerfile": STEPS})
        (steps / "big.bin").write_bytes(random.Random(7).randbytes(50_000_000))
        upload = work / "upload"
        size = small_files(upload, 20_000)
        (upload / "Dockerfile").write_text(f"FROM {BASE}\nCOPY . /ctx\n")
        unused = work / "unused"
        shutil.copytree(upload, unused, symlinks=True)
        (unused / "Dockerfile").write_text(f"FROM {BASE}\nLABEL unused=1\n")
        archive = docker_archive(work / "busybox.tar", tags=(BASE,))
        daemon.start()
        builders = [Builder("ross", ROSS, dict(os.environ, ROSS_HOST=daemon.address))]
        with contextlib.ExitStack() as stack:
            docker_env: dict[str, str] | str = "--no-docker"
            if not args.no_docker:
                docker_env = stack.enter_context(private_dockerd())
            if isinstance(docker_env, dict):
                builders.append(Builder("docker", "docker", docker_env))
            else:
                print(f"docker: not measured ({docker_env[:300]})")
            for b in builders:
                b("load", "-i", str(archive.path))
            results: dict[str, dict[str, list[float]]] = {
                b.name: {"cold": [], "cached": [], "upload": [], "unused": []} for b in builders}
            for _ in range(args.runs):
                for b in builders:
                    results[b.name]["cold"].append(timed(lambda: b.build(steps, "--no-cache", "-t", "bench-steps")))
                for b in builders:
                    results[b.name]["cached"].append(timed(lambda: b.build(steps, "-t", "bench-steps")))
                    out = b.build(steps, "-t", "bench-steps")
                    assert out.count(b"Using cache") == 9, out.decode()
                for b in builders:
                    results[b.name]["upload"].append(
                        timed(lambda: b.build(upload, "--no-cache", "-t", "bench-upload")))
                for b in builders:
                    results[b.name]["unused"].append(timed(lambda: b.build(unused, "-t", "bench-unused")))
            print(f"10 steps (5 RUN, 50 MB COPY), context of 20,000 files ({size / 1e6:.1f} MB); "
                  f"median of {args.runs}:")
            med = {name: {k: statistics.median(v) for k, v in r.items()} for name, r in results.items()}
            for name, m in med.items():
                print(f"  {name:6}  cold {m['cold']:6.2f} s   cached {m['cached']:6.2f} s   "
                      f"context sent+copied {size / 1e6 / m['upload']:6.1f} MB/s ({m['upload']:.2f} s)   "
                      f"context unused {m['unused']:.2f} s")
            if "docker" in med:
                r, d = med["ross"], med["docker"]
                print(f"  ratios (ross/docker): cold {r['cold'] / d['cold']:.2f}x (target <= 0.8), "
                      f"cached {r['cached'] / d['cached']:.2f}x (target <= 0.5), "
                      f"context {d['upload'] / r['upload']:.2f}x docker's MB/s (target >= 1), "
                      f"unused context {r['unused'] / d['unused']:.2f}x")
                base_layers = len(json.loads(builders[0]("image", "inspect", BASE))[0]["RootFS"]["Layers"])
                problems = interop(builders[0], builders[1], work, base_layers)
                print("interop: " + ("same config, layer count and file trees for "
                                     f"{len(INTEROP)} Dockerfiles" if not problems else "DIFFERENCES"))
                for problem in problems:
                    print("  " + problem)
    finally:
        daemon.stop()
        daemon.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
