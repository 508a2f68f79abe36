"""
Every comparison of bench/ in one run, Ross and docker taking turns, one
table at the end (row, Ross, docker, ratio, target, met):

    ./dev bench [--quick] [--report DIR] [NAME...]     (NAME: a group, --list)
    ./dev bench --compare A.json B.json [--report DIR]

Ross runs as a private daemon of the bench (its own root, bridge, nftables
table and cgroup parent). docker is the host's dockerd when one answers
(the bench touches only the containers and images it made, all named
rossbench-<run>); otherwise a private dockerd of bench/dockerd.py (its own
bridge on a free /24, no firewall rules, never --bridge=none). Everything
the bench made goes on every way out, Ctrl-C and SIGTERM included, and the
end of the run checks that it did: nothing of it left, the host's docker
with the same containers, images and bridges as before, and still able to
run a container on its default network (its dockerd started for that check
if it was not running, and stopped again).

Both engines keep their stores on a fresh ext4 with a journal made for the
run (bench/store.py says why: this machine's root file system has none,
which makes extraction right after a deletion up to 13 times slower);
`--store root` puts them on the root file system, as when the host's
dockerd is the one compared.

Timings are medians of runs that alternate between the two engines, so
load on the machine hits both alike; a busy machine still widens them.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import attrs

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import network as netbench  # noqa: E402
from bench.dockerd import docker_bridges, private_dockerd  # noqa: E402
from bench.health import cpu_seconds, pids_where, wait_healthy  # noqa: E402
from bench.interactive import echo_once, ready_for_echo  # noqa: E402
from bench.store import JournaledStore, Unavailable, add_option  # noqa: E402
from ross.testing.benchreport import (  # noqa: E402
    Row, Target, from_json, render_compare, render_html, render_methods, render_table, to_json)
from ross.testing.daemon import DaemonProcess, short_tempdir, test_network  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402
from ross.testing.terminal import Terminal  # noqa: E402

ROSS = os.path.join(os.path.dirname(sys.executable), "ross")
#: Seconds the daemon is left quiet before its idle memory is read.
IDLE_SETTLE = 5.0
ISSUE16, ISSUE15, ISSUE13, ISSUE10, ISSUE3 = "issue 16", "issue 15", "issue 13", "issue 10", "issue 3"


@dataclass(frozen=True)
class Sizes:
    """How much each group does: --quick, or the issues' own sizes."""

    runs: int          # alternating runs of a latency
    rounds: int        # runs of a heavy step (cp, commit, pull, load, build)
    mb: int            # payload of logs, cp, commit, pull, load, network
    keys: int          # keystrokes of the echo
    pty_mb: int
    many: int          # containers of the memory-at-N row
    scale: int         # containers of the created-then-started row
    health_seconds: float


QUICK = Sizes(runs=10, rounds=2, mb=50, keys=60, pty_mb=30, many=20, scale=60, health_seconds=8)
FULL = Sizes(runs=20, rounds=3, mb=200, keys=200, pty_mb=100, many=100, scale=500, health_seconds=30)


class Interrupted(BaseException):
    """SIGTERM or SIGHUP: leave as Ctrl-C does, through every cleanup."""


def timed(argv: list[str], env: dict[str, str] | None, stdout: Any = subprocess.DEVNULL) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=stdout, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed: {result.stderr.decode(errors='replace')[-500:]}")
    return elapsed


def run(argv: list[str], env: dict[str, str] | None, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(argv, env=env, capture_output=True, **kwargs)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:6])} failed: {result.stderr.decode(errors='replace')[-500:]}")
    return result


class Engine:
    """One side of the comparison: its CLI, the environment it needs, how its containers are named."""

    def __init__(self, label: str, cli: str, env: dict[str, str], prefix: str) -> None:
        self.label = label
        self.cli = cli
        self.env = env
        self.prefix = prefix

    def argv(self, *args: str) -> list[str]:
        return [self.cli, *args]

    def __call__(self, *args: str, **kwargs: Any) -> subprocess.CompletedProcess[bytes]:
        return run(self.argv(*args), self.env, **kwargs)

    def timed(self, *args: str) -> float:
        return timed(self.argv(*args), self.env)

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def quiet(self, *args: str, timeout: float = 300) -> None:
        """
        A clean-up step: its failure (already gone) is no news, and one
        that runs out of time is said, not raised (the end of the run
        checks what is left).
        """
        try:
            subprocess.run(self.argv(*args), env=self.env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            print(f"   {self.label} {' '.join(args)[:60]}... did not end within {timeout:.0f} s", flush=True)


@dataclass
class Bench:
    sizes: Sizes
    work: Path
    run_id: str
    ross: Engine
    daemon: DaemonProcess
    docker: Engine | None
    docker_why: str
    image: str
    archive: Path
    #: Ross daemons started by a group (pull, load): checked for leftovers at the end.
    daemons: list[DaemonProcess] = field(default_factory=list)
    #: The daemon's RSS (KiB) right after start and one image load.
    idle_rss: int = 0
    #: Where the engines' stores are made (bench/store.py).
    store: Path = Path("/tmp")
    _big: Path | None = None

    def engines(self) -> list[Engine]:
        return [self.ross] + ([self.docker] if self.docker else [])

    def big_archive(self) -> Path:
        """The ~MB, 3-layer image archive of load.py (made once, for load and pull)."""
        if self._big is None:
            from bench.load import make_layers

            layers = make_layers(self.work, self.sizes.mb)
            self._big = self.work / "big.tar"
            docker_archive(self._big, tags=[f"rossbench-{self.run_id}/big:latest"], layers=layers)
        return self._big

    def fresh_daemon(self, extra: list[str] | None = None) -> DaemonProcess:
        daemon = DaemonProcess(short_tempdir("ross-bench-", self.store), extra=extra, own_session=True)
        self.daemons.append(daemon)
        return daemon


# ------------------------------------------------------------- the groups

Measure = Callable[[Bench, dict[str, Row]], None]


@dataclass
class Group:
    name: str
    about: str
    rows: Callable[[Sizes], list[Row]]
    measure: Measure


GROUPS: dict[str, Group] = {}


def group(name: str, about: str, rows: Callable[[Sizes], list[Row]]) -> Callable[[Measure], Measure]:
    def register(measure: Measure) -> Measure:
        GROUPS[name] = Group(name, about, rows, measure)
        return measure
    return register


def alternate(b: Bench, n: int, step: Callable[[Engine], float], rows: Row, warm: int = 2) -> None:
    """C{n} samples of C{step} per engine, taking turns, after C{warm} unrecorded turns each."""
    for _ in range(warm):
        for engine in b.engines():
            step(engine)
    for _ in range(n):
        for engine in b.engines():
            getattr(rows, "ross" if engine is b.ross else "docker").append(step(engine))


def side(b: Bench, engine: Engine, row: Row) -> list[float]:
    return row.ross if engine is b.ross else row.docker


@group("start", "run --rm busybox true", lambda s: [
    Row("run --rm busybox true", f"wall of `run --rm IMAGE true` through the installed CLI, {s.runs} runs taking "
        "turns after 2 warm-ups, median", "ms", Target("<=", 0.45, source=ISSUE16))])
def start(b: Bench, rows: dict[str, Row]) -> None:
    alternate(b, b.sizes.runs, lambda e: e.timed("run", "--rm", b.image, "true") * 1e3,
              rows["run --rm busybox true"])


@group("concurrent", "20 detached starts at once", lambda s: [
    Row("20 detached starts at once", f"wall from launching 20 `run -d` at once until all 20 returned, "
        f"{s.rounds + 1} rounds taking turns, median", "s", Target("<=", 0.6, source=ISSUE16)),
    Row("rm -f of those 20", "wall of one `rm -f` naming the 20 running containers, median of the rounds", "s")])
def concurrent(b: Bench, rows: dict[str, Row]) -> None:
    for round_ in range(b.sizes.rounds + 1):
        for engine in b.engines():
            names = [engine.name(f"burst{round_}-{i}") for i in range(20)]
            t = time.perf_counter()
            with ThreadPoolExecutor(20) as pool:
                list(pool.map(lambda n: engine("run", "-d", "--name", n, b.image, "sleep", "1000"), names))
            side(b, engine, rows["20 detached starts at once"]).append(time.perf_counter() - t)
            side(b, engine, rows["rm -f of those 20"]).append(engine.timed("rm", "-f", *names))


@group("exec", "exec CTR true", lambda s: [
    Row("exec CTR true", f"wall of `exec CTR true` in a running container, {s.runs} runs taking turns after 2 "
        "warm-ups, median", "ms", Target("<=", 0.8, source=ISSUE16))])
def exec_(b: Bench, rows: dict[str, Row]) -> None:
    for engine in b.engines():
        engine("run", "-d", "--name", engine.name("exec"), b.image, "sleep", "100000")
    try:
        alternate(b, b.sizes.runs, lambda e: e.timed("exec", e.name("exec"), "true") * 1e3, rows["exec CTR true"])
    finally:
        for engine in b.engines():
            engine.quiet("rm", "-f", engine.name("exec"))


@group("echo", "keystroke echo and PTY throughput", lambda s: [
    Row("keystroke echo (exec -it)", f"key to echo through `exec -it CTR sh` running cat, {s.keys} keys taking "
        "turns key by key, median (p90 in the report)", "ms", Target("<=", 0.8, source=ISSUE15)),
    Row(f"PTY throughput (cat {s.pty_mb} MB, exec -t)", f"MB/s of `exec -t CTR cat FILE` of {s.pty_mb} MB to "
        f"/dev/null, {s.rounds} runs taking turns, median", "MB/s", Target(">=", 2, source=ISSUE15))])
def echo(b: Bench, rows: dict[str, Row]) -> None:
    mb = b.sizes.pty_mb
    prepare = f"head -c {mb * 1000 * 1000} /dev/zero | tr '\\0' x > /tmp/big; touch /tmp/ready; sleep 100000"
    for engine in b.engines():
        engine("run", "-d", "--name", engine.name("tty"), b.image, "sh", "-c", prepare)
    try:
        for engine in b.engines():
            deadline = time.monotonic() + 60
            while subprocess.run(engine.argv("exec", engine.name("tty"), "test", "-e", "/tmp/ready"),
                                 env=engine.env, capture_output=True).returncode:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{engine.label}: the PTY container did not get ready")
                time.sleep(0.2)
        terms = [Terminal(e.argv("exec", "-it", e.name("tty"), "sh"), env=dict(e.env, TERM="xterm"), rows=40,
                          cols=120) for e in b.engines()]
        row = rows["keystroke echo (exec -it)"]
        try:
            for term in terms:
                ready_for_echo(term)
            time.sleep(0.3)
            for i in range(b.sizes.keys):
                key = b"abcdefghijklmnopqrstuvwxyz"[i % 26:i % 26 + 1]
                for engine, term in zip(b.engines(), terms):
                    side(b, engine, row).append(echo_once(term, key) * 1e3)
                    time.sleep(0.01)
        finally:
            for term in terms:
                term.close()
        pty = rows[f"PTY throughput (cat {mb} MB, exec -t)"]
        for _ in range(b.sizes.rounds):
            for engine in b.engines():
                side(b, engine, pty).append(mb / engine.timed("exec", "-t", engine.name("tty"), "cat", "/tmp/big"))
    finally:
        for engine in b.engines():
            engine.quiet("rm", "-f", engine.name("tty"))


@group("cli", "ps, inspect, version", lambda s: [
    Row("ps, 20 running", f"wall of `ps` with 20 running containers, {s.runs} runs taking turns, median", "ms",
        Target("<=", 70, of="ross", source=ISSUE16)),
    Row("inspect CTR", f"wall of `inspect CTR`, {s.runs} runs taking turns, median", "ms",
        Target("<=", 70, of="ross", source=ISSUE16)),
    Row("version", f"wall of `version` (client and daemon), {s.runs} runs taking turns, median", "ms",
        Target("<=", 70, of="ross", source=ISSUE16))])
def cli(b: Bench, rows: dict[str, Row]) -> None:
    names = {e.label: [e.name(f"cli{i}") for i in range(20)] for e in b.engines()}
    try:
        for engine in b.engines():
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda n: engine("run", "-d", "--name", n, b.image, "sleep", "100000"),
                              names[engine.label]))
        alternate(b, b.sizes.runs, lambda e: e.timed("ps") * 1e3, rows["ps, 20 running"])
        alternate(b, b.sizes.runs, lambda e: e.timed("inspect", names[e.label][0]) * 1e3, rows["inspect CTR"])
        alternate(b, b.sizes.runs, lambda e: e.timed("version") * 1e3, rows["version"])
    finally:
        for engine in b.engines():
            engine.quiet("rm", "-f", *names[engine.label])


@group("logs", "logs throughput and --tail", lambda s: [
    Row(f"logs, {s.mb} MB", f"MB/s of `logs CTR` > /dev/null of {s.mb} MB written by the container in 100-byte "
        f"lines, {s.rounds} runs taking turns, median", "MB/s", Target(">=", 5, source=ISSUE16)),
    Row(f"logs --tail 10, {s.mb} MB log", f"wall of `logs --tail 10 CTR` on that log (the target is for 1 GB), "
        f"{s.runs} runs taking turns, median", "ms", Target("<=", 50, of="ross", source=ISSUE16))])
def logs(b: Bench, rows: dict[str, Row]) -> None:
    mb = b.sizes.mb
    script = f"head -c {mb * 1000 * 1000} /dev/zero | tr '\\0' 'x' | fold -w 99"
    try:
        for engine in b.engines():
            engine.timed("run", "--name", engine.name("logs"), b.image, "sh", "-c", script)
        row = rows[f"logs, {mb} MB"]
        for _ in range(b.sizes.rounds):
            for engine in b.engines():
                side(b, engine, row).append(mb / engine.timed("logs", engine.name("logs")))
        alternate(b, b.sizes.runs, lambda e: e.timed("logs", "--tail", "10", e.name("logs")) * 1e3,
                  rows[f"logs --tail 10, {mb} MB log"], warm=1)
    finally:
        for engine in b.engines():
            engine.quiet("rm", "-f", engine.name("logs"))


@group("cp", "cp of one file in and out", lambda s: [
    Row(f"cp {s.mb} MB file in", f"wall of `cp FILE CTR:/` of one {s.mb} MiB random file, {s.rounds} runs taking "
        "turns, median", "s", Target("<=", 0.8, source=ISSUE16)),
    Row(f"cp {s.mb} MB file out", f"wall of `cp CTR:/FILE DIR` of that file, {s.rounds} runs taking turns, "
        "median", "s", Target("<=", 0.8, source=ISSUE16))])
def cp(b: Bench, rows: dict[str, Row]) -> None:
    mb = b.sizes.mb
    big = b.work / "cp.bin"
    with open(big, "wb") as f:
        for _ in range(mb):
            f.write(os.urandom(1 << 20))
    out = b.work / "cp-out"
    try:
        for engine in b.engines():
            engine("run", "-d", "--name", engine.name("cp"), b.image, "sleep", "100000")
        for _ in range(b.sizes.rounds):
            for engine in b.engines():
                side(b, engine, rows[f"cp {mb} MB file in"]).append(
                    engine.timed("cp", str(big), f"{engine.name('cp')}:/big.bin"))
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                side(b, engine, rows[f"cp {mb} MB file out"]).append(
                    engine.timed("cp", f"{engine.name('cp')}:/big.bin", str(out / "big.bin")))
    finally:
        for engine in b.engines():
            engine.quiet("rm", "-f", engine.name("cp"))
        shutil.rmtree(out, ignore_errors=True)
        big.unlink(missing_ok=True)


@group("commit", "commit of a container that wrote MB", lambda s: [
    Row(f"commit, {s.mb} MB written", f"wall of `commit CTR` of a stopped container that wrote {s.mb} MB (half "
        f"random: a new layer each run, a container each), {s.rounds} runs taking turns, median", "s",
        Target("<=", 0.6, source=ISSUE16))])
def commit(b: Bench, rows: dict[str, Row]) -> None:
    from bench.commit import writer_script

    made: list[tuple[Engine, str, str]] = []
    try:
        for i in range(b.sizes.rounds):
            for engine in b.engines():
                container, image = engine.name(f"commit{i}"), f"rossbench-{b.run_id}/commit:{i}"
                made.append((engine, container, image))
                engine("run", "--name", container, b.image, "sh", "-c", writer_script(b.sizes.mb))
                side(b, engine, rows[f"commit, {b.sizes.mb} MB written"]).append(
                    engine.timed("commit", container, image))
    finally:
        for engine, container, image in made:
            engine.quiet("rm", "-f", container)
            engine.quiet("rmi", image)


@group("pull", "pull and push against a local registry", lambda s: [
    Row(f"pull {s.mb} MB, 3 layers", f"MB/s of `pull` (unpack included) from a local docker-registry into an empty "
        f"store, {s.rounds} runs taking turns, median (the target says every run)", "MB/s",
        Target(">=", 1.5, source=ISSUE16)),
    Row(f"push {s.mb} MB, 3 layers", f"MB/s of `push` to a fresh local docker-registry (every blob uploaded), "
        f"{s.rounds} runs taking turns, median (the target says every run)", "MB/s",
        Target(">=", 3, source=ISSUE16))])
def pull(b: Bench, rows: dict[str, Row]) -> None:
    from bench.pull import registry

    archive = b.big_archive()
    repo = f"rossbench-{b.run_id}/big:latest"
    with registry(b.work / "registry") as host:
        run(["skopeo", "copy", "-q", "--dest-tls-verify=false", f"docker-archive:{archive}",
             f"docker://{host}/{repo}"], None)
        raw = json.loads(run(["skopeo", "inspect", "--raw", "--tls-verify=false", f"docker://{host}/{repo}"],
                             None).stdout)
        size = (sum(layer["size"] for layer in raw["layers"]) + raw["config"]["size"]) / 1e6
        pulls, pushes = rows[f"pull {b.sizes.mb} MB, 3 layers"], rows[f"push {b.sizes.mb} MB, 3 layers"]
        for i in range(b.sizes.rounds):
            with registry(b.work / f"ross-push-{i}") as target:
                daemon = b.fresh_daemon(["--insecure-registry", host, "--insecure-registry", target])
                try:
                    daemon.start()
                    ross = Engine("ross", ROSS, dict(os.environ, ROSS_HOST=daemon.address), "x")
                    pulls.ross.append(size / ross.timed("pull", "-q", f"{host}/{repo}"))
                    ross("tag", f"{host}/{repo}", f"{target}/{repo}")
                    pushes.ross.append(size / ross.timed("push", "-q", f"{target}/{repo}"))
                finally:
                    daemon.stop()
                    daemon.cleanup()
            if b.docker is None:
                continue
            docker = b.docker
            try:
                pulls.docker.append(size / docker.timed("pull", "-q", f"{host}/{repo}"))
                with registry(b.work / f"docker-push-{i}") as target:
                    docker("tag", f"{host}/{repo}", f"{target}/{repo}")
                    try:
                        pushes.docker.append(size / docker.timed("push", f"{target}/{repo}"))
                    finally:
                        docker.quiet("rmi", f"{target}/{repo}")
            finally:
                docker.quiet("rmi", f"{host}/{repo}")


@group("load", "load (and unpack) of a 3-layer archive", lambda s: [
    Row(f"load {s.mb} MB, 3 layers", f"MB/s of `load -i` of a {s.mb} MB 3-layer docker-save archive into an empty "
        f"store (unpack included), {s.rounds} runs taking turns, median", "MB/s", Target(">=", 1, source=ISSUE3))])
def load(b: Bench, rows: dict[str, Row]) -> None:
    archive = b.big_archive()
    size = archive.stat().st_size / 1e6
    row = rows[f"load {b.sizes.mb} MB, 3 layers"]
    for _ in range(b.sizes.rounds):
        daemon = b.fresh_daemon()
        try:
            daemon.start()
            ross = Engine("ross", ROSS, dict(os.environ, ROSS_HOST=daemon.address), "x")
            row.ross.append(size / ross.timed("load", "-i", str(archive)))
        finally:
            daemon.stop()
            daemon.cleanup()
        if b.docker:
            try:
                row.docker.append(size / b.docker.timed("load", "-i", str(archive)))
            finally:
                b.docker.quiet("rmi", f"rossbench-{b.run_id}/big:latest")


@group("network", "bridge and published-port throughput", lambda s: [
    Row(f"container to container, {s.mb} MiB", f"MB/s of `dd | nc` between two containers on the default bridge "
        f"(busybox time), {s.rounds} runs taking turns, median", "MB/s", Target(">=", 1, source=ISSUE10)),
    Row(f"-p 127.0.0.1 stream, {s.mb} MiB", f"MB/s of {s.mb} MiB sent into nc -l in a container through -p on "
        f"127.0.0.1, {s.rounds} runs taking turns, median", "MB/s", Target(">=", 1, source=ISSUE10)),
    Row("-p 127.0.0.1 connections/s", "HTTP GETs one after another to busybox httpd through -p on 127.0.0.1, "
        f"100 per run, {s.rounds} runs taking turns, median", "conn/s", Target(">=", 1, source=ISSUE10))])
def network(b: Bench, rows: dict[str, Row]) -> None:
    mb = b.sizes.mb
    html = "echo hello > /index.html && exec httpd -f -p 80 -h /"
    ports = {}
    try:
        for engine in b.engines():
            ports[engine.label] = port = netbench.free_port()
            engine("run", "-d", "--name", engine.name("web"), "-p", f"{port}:80", b.image, "sh", "-c", html)
        for _ in range(b.sizes.rounds):
            for engine in b.engines():
                side(b, engine, rows[f"container to container, {mb} MiB"]).append(netbench.throughput_between(
                    [engine.cli], engine.env, b.image, mb, name=engine.name("sink")))
                side(b, engine, rows[f"-p 127.0.0.1 stream, {mb} MiB"]).append(netbench.throughput(
                    [engine.cli], engine.env, b.image, engine.name("nc"), mb))
                side(b, engine, rows["-p 127.0.0.1 connections/s"]).append(
                    netbench.connection_rate("127.0.0.1", ports[engine.label], 100))
    finally:
        for engine in b.engines():
            engine.quiet("rm", "-f", engine.name("web"), engine.name("sink"), engine.name("nc"))


def docker_daemon_pids() -> list[int]:
    return pids_where(lambda c: Path(c[0].decode(errors="replace")).name in ("dockerd", "containerd"))


def container_ids(engine: Engine, names: list[str]) -> list[str]:
    return engine("inspect", "-f", "{{.Id}}", *names).stdout.decode().split()


def docker_shims(ids: list[str]) -> list[int]:
    wanted = {i.encode() for i in ids}
    return pids_where(lambda c: Path(c[0].decode(errors="replace")).name == "containerd-shim-runc-v2"
                      and bool(wanted & set(c)))


def ross_shims(b: Bench) -> list[int]:
    root = str(b.daemon.exec_root).encode()
    return pids_where(lambda c: any(b"ross.engine.runtime.shim" in a for a in c) and any(root in a for a in c))


@group("health", "CPU of 20 containers with a 1 s health check", lambda s: [
    Row("health checks: daemon CPU", f"CPU of the daemon (dockerd + containerd for docker) over {s.health_seconds:g} "
        "s with 20 containers checked every 1 s, once all healthy; one window each", "% CPU",
        Target("<=", 1, source="bench/health.py")),
    Row("health checks: engine CPU", "the same plus the shims and what they reaped (checks, runc)", "% CPU",
        Target("<=", 1, source="bench/health.py"))])
def health(b: Bench, rows: dict[str, Row]) -> None:
    flags = ["--health-cmd", "true", "--health-interval", "1s"]
    seconds = b.sizes.health_seconds
    for engine in b.engines():
        names = [engine.name(f"health{i}") for i in range(20)]
        try:
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda n: engine("run", "-d", "--name", n, *flags, b.image, "sleep", "100000"), names))
            wait_healthy([engine.cli], engine.env, names)
            if engine is b.ross:
                assert b.daemon.process is not None
                daemons, shims = [b.daemon.process.pid], ross_shims(b)
            else:
                daemons, shims = docker_daemon_pids(), docker_shims(container_ids(engine, names))
            d0 = sum(cpu_seconds(p, False) for p in daemons)
            e0 = d0 + sum(cpu_seconds(p, True) for p in shims)
            time.sleep(seconds)
            d1 = sum(cpu_seconds(p, False) for p in daemons)
            e1 = d1 + sum(cpu_seconds(p, True) for p in shims)
            side(b, engine, rows["health checks: daemon CPU"]).append((d1 - d0) / seconds * 100)
            side(b, engine, rows["health checks: engine CPU"]).append((e1 - e0) / seconds * 100)
        finally:
            engine.quiet("rm", "-f", *names)


def memory_kib(pid: int, field_: str) -> int:
    """C{field_} ("Rss", "Pss") of C{pid} in KiB, from smaps_rollup; 0 once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith(field_ + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


@group("memory", "memory at N containers", lambda s: [
    Row("idle daemon RSS", f"RSS of the daemon at rest: started, one image loaded, {IDLE_SETTLE:.0f} s quiet "
        "(dockerd + containerd for docker, as found)", "MiB", Target("<=", 70, of="ross", source=ISSUE16)),
    Row(f"memory per container at {s.many}", f"PSS of the shims (containerd-shim-runc-v2 for docker) over "
        f"{s.many} running containers, per container", "MiB", Target("<=", 1, source=ISSUE16)),
    Row(f"daemon RSS at {s.many} containers", f"RSS of the daemon (dockerd + containerd) with {s.many} running",
        "MiB", Target("<=", 120, of="ross", source=ISSUE16)),
    Row(f"ps with {s.many} running", f"wall of `ps` with {s.many} running, {s.runs} runs taking turns, median",
        "ms", Target("<=", 100, of="ross", source=ISSUE16))])
def memory(b: Bench, rows: dict[str, Row]) -> None:
    many = b.sizes.many
    assert b.daemon.process is not None
    rows["idle daemon RSS"].ross.append(b.idle_rss / 1024)
    if b.docker:
        rows["idle daemon RSS"].docker.append(sum(memory_kib(p, "Rss") for p in docker_daemon_pids()) / 1024)
    names = {e.label: [e.name(f"many{i}") for i in range(many)] for e in b.engines()}
    try:
        for engine in b.engines():
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda n: engine("run", "-d", "--name", n, b.image, "sleep", "100000"),
                              names[engine.label]))
        time.sleep(1)
        for engine in b.engines():
            if engine is b.ross:
                daemons, shims = [b.daemon.process.pid], ross_shims(b)
            else:
                daemons, shims = docker_daemon_pids(), docker_shims(container_ids(engine, names[engine.label]))
            side(b, engine, rows[f"memory per container at {many}"]).append(
                sum(memory_kib(p, "Pss") for p in shims) / 1024 / many)
            side(b, engine, rows[f"daemon RSS at {many} containers"]).append(
                sum(memory_kib(p, "Rss") for p in daemons) / 1024)
        alternate(b, b.sizes.runs, lambda e: e.timed("ps") * 1e3, rows[f"ps with {many} running"], warm=1)
    finally:
        for engine in b.engines():
            engine.quiet("rm", "-f", *names[engine.label])


@group("scale", "N containers created, then started 20 at a time", lambda s: [
    Row(f"{s.scale} created, then started 20 at a time", f"wall of `create` of {s.scale} containers (4 at a time) "
        "plus `start` of them 20 at a time, one run each (the target is for 500)", "s",
        Target("<=", 0.6, source=ISSUE16)),
    Row(f"slowest of {s.scale // 20} start batches vs first", "the slowest batch of 20 starts over the first "
        "(1 is linear: no batch slower as the count grows)", "x"),
    Row("last 5 start batches vs first 5", "mean wall of the last 5 batches of 20 starts over the first 5's: "
        "how a batch's cost grows with the containers running (1 is linear; one slow batch, the VM's "
        "hiccup, moves the row above but hardly this one)", "x")])
def scale(b: Bench, rows: dict[str, Row]) -> None:
    n = b.sizes.scale
    for engine in b.engines():
        names = [engine.name(f"scale{i}") for i in range(n)]
        try:
            t = time.perf_counter()
            with ThreadPoolExecutor(4) as pool:
                list(pool.map(lambda name: engine("create", "--name", name, b.image, "sleep", "100000"), names))
            batches = []
            for i in range(0, n, 20):
                s = time.perf_counter()
                engine("start", *names[i:i + 20])
                batches.append(time.perf_counter() - s)
            side(b, engine, rows[f"{n} created, then started 20 at a time"]).append(time.perf_counter() - t)
            side(b, engine, rows[f"slowest of {n // 20} start batches vs first"]).append(max(batches) / batches[0])
            print(f"   {engine.label} start batches (s): {' '.join(f'{x:.2f}' for x in batches)}", flush=True)
            k = min(5, len(batches) // 2) or 1
            side(b, engine, rows["last 5 start batches vs first 5"]).append(sum(batches[-k:]) / sum(batches[:k]))
        finally:
            # 500 at once: docker's took over 300 s once on this VM.
            engine.quiet("rm", "-f", *names, timeout=1200)


@group("build", "build: cold and fully cached", lambda s: [
    Row("build cold (10 steps, 50 MB COPY)", f"wall of `build --no-cache` of bench/build.py's 10-step Dockerfile "
        f"(docker: classic builder), {s.rounds} runs taking turns, median", "s", Target("<=", 0.8, source=ISSUE13)),
    Row("build fully cached", f"wall of the same build with every step from the cache, {s.rounds} runs taking "
        "turns, median", "s", Target("<=", 0.5, source=ISSUE13))])
def build(b: Bench, rows: dict[str, Row]) -> None:
    import random

    from bench.build import BASE, STEPS

    context = b.work / "build"
    context.mkdir()
    (context / "Dockerfile").write_text(STEPS.replace(BASE, b.image))
    (context / "big.bin").write_bytes(random.Random(7).randbytes(50_000_000))
    tag = f"rossbench-{b.run_id}/steps"
    env = {"DOCKER_BUILDKIT": "0"}
    # Each cold build leaves the previous one's image untagged: all go at the end.
    built: set[tuple[Engine, str]] = set()
    try:
        for _ in range(b.sizes.rounds):
            for engine in b.engines():
                cold = timed(engine.argv("build", "--no-cache", "-t", tag, str(context)), dict(engine.env, **env))
                side(b, engine, rows["build cold (10 steps, 50 MB COPY)"]).append(cold)
                built.add((engine, engine("image", "inspect", "-f", "{{.Id}}", tag).stdout.decode().strip()))
            for engine in b.engines():
                cached = timed(engine.argv("build", "-t", tag, str(context)), dict(engine.env, **env))
                side(b, engine, rows["build fully cached"]).append(cached)
    finally:
        for engine in b.engines():
            engine.quiet("rmi", tag)
        for engine, image in built:
            engine.quiet("rmi", image)
        shutil.rmtree(context, ignore_errors=True)


@group("dockerapi", "the Docker Engine API", lambda s: [
    Row("Docker API: GET /containers/json, 20 running", f"one kept-alive connection to each daemon's socket, "
        f"{s.runs} rounds of 20 calls taking turns, median of the round medians", "ms",
        Target("<=", 0.5, source="issue 14")),
    Row("docker ps through the API, 20 running", f"wall of docker's own `docker ps` with DOCKER_HOST at Ross's "
        f"docker.sock vs at dockerd, {s.runs} runs taking turns, median", "ms", Target("<=", 1, source="issue 14")),
    Row("docker run --rm busybox true through the API", f"wall of docker's `run --rm IMAGE true`, DOCKER_HOST at "
        f"each daemon, {s.runs} runs taking turns, median", "ms", Target("<=", 1, source="issue 14"))])
def dockerapi(b: Bench, rows: dict[str, Row]) -> None:
    from bench.dockerapi import list_latencies

    if b.docker is None:
        for row in rows.values():
            row.skipped = f"docker's CLI and a dockerd are needed on both sides: {b.docker_why}"
        return
    ross_socket = str(b.daemon.exec_root / "docker.sock")
    docker_socket = b.docker.env.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
    # docker's CLI on both sides: the Ross side is Ross's Docker API.
    sockets = {b.ross: ross_socket, b.docker: docker_socket}
    clis = {b.ross: Engine("ross (Docker API)", "docker", dict(b.docker.env, DOCKER_HOST=f"unix://{ross_socket}"),
                           b.ross.prefix),
            b.docker: b.docker}
    names = {e: [e.name(f"api{i}") for i in range(20)] for e in b.engines()}
    try:
        for engine in b.engines():
            for name in names[engine]:
                engine("run", "-d", "--name", name, b.image, "sleep", "100000")
        alternate(b, b.sizes.runs, lambda e: statistics.median(list_latencies(sockets[e], 20)) * 1e3,
                  rows["Docker API: GET /containers/json, 20 running"], warm=1)
        alternate(b, b.sizes.runs, lambda e: clis[e].timed("ps") * 1e3,
                  rows["docker ps through the API, 20 running"])
        alternate(b, b.sizes.runs, lambda e: clis[e].timed("run", "--rm", b.image, "true") * 1e3,
                  rows["docker run --rm busybox true through the API"])
    finally:
        for engine in b.engines():
            engine.quiet("rm", "-f", *names[engine])


@group("cri", "Kubernetes CRI: a pod started as kubelet starts one", lambda s: [
    Row("CRI pod start, median of 20", "wall of RunPodSandbox + CreateContainer + StartContainer (one busybox "
        "container) over cri.sock per pod, 20 pods one after another, median; docker: `run -d IMAGE sleep` per "
        "container (it has no CRI here)", "ms", Target("<=", 1, source="issue 18")),
    Row("CRI pod start, p99 of 20", "the same walls, nearest-rank p99", "ms")])
def cri(b: Bench, rows: dict[str, Row]) -> None:
    from bench.cri import pod_walls
    from ross.testing.benchreport import percentile

    median_row, p99_row = rows["CRI pod start, median of 20"], rows["CRI pod start, p99 of 20"]
    for engine in b.engines():
        if engine is b.ross:
            walls = [w * 1e3 for w in pod_walls(str(b.daemon.exec_root / "cri.sock"), b.image, 20, b.work / "pods")]
        else:
            names = [engine.name(f"pod{i}") for i in range(20)]
            try:
                walls = [engine.timed("run", "-d", "--name", n, b.image, "sleep", "100000") * 1e3 for n in names]
            finally:
                engine.quiet("rm", "-f", *names)
        side(b, engine, median_row).append(statistics.median(walls))
        side(b, engine, p99_row).append(percentile(walls, 0.99) or 0.0)


# ---------------------------------------------------------- host and docker

def docker_answers(env: dict[str, str]) -> bool:
    return bool(shutil.which("docker")) and subprocess.run(
        ["docker", "info"], env=env, capture_output=True, timeout=60).returncode == 0


def host_env() -> dict[str, str]:
    """The environment of the host's docker: its default socket, whatever this shell points at."""
    env = dict(os.environ)
    for key in ("DOCKER_HOST", "DOCKER_CONTEXT"):
        env.pop(key, None)
    return env


def docker_inventory(env: dict[str, str]) -> dict[str, set[str]]:
    """What the host's docker has: containers, images (ID and tags), networks."""
    def lines(*args: str) -> set[str]:
        return set(run(["docker", *args], env, timeout=60).stdout.decode().split("\n")) - {""}
    return {"containers": lines("ps", "-a", "--no-trunc", "--format", "{{.ID}} {{.Names}}"),
            "images": lines("images", "-a", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}"),
            "networks": lines("network", "ls", "--no-trunc", "--format", "{{.ID}} {{.Name}}"),
            "bridges": docker_bridges()}


def remove_from_docker(docker: Engine, run_id: str) -> None:
    """Whatever of this run is in a docker: containers by name and by image, then its images."""
    marker = f"rossbench-{run_id}"
    listed = docker("images", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}", timeout=60).stdout.decode()
    ours = [line.split() for line in listed.splitlines() if marker in line]
    found = set(docker("ps", "-aq", "--filter", f"name={marker}", timeout=60).stdout.decode().split())
    for image in {image for image, _ in ours}:
        found |= set(docker("ps", "-aq", "--filter", f"ancestor={image}", timeout=60).stdout.decode().split())
    if found:
        docker.quiet("rm", "-f", *found)
    if ours:
        docker.quiet("rmi", "-f", *(tag for _, tag in ours))


@contextlib.contextmanager
def host_dockerd_running(log: Path) -> Iterator[str]:
    """
    The host's own dockerd, answering: as it is, or started here (as its
    service would, default options) and stopped again on the way out.
    Yields how it was found.
    """
    env = host_env()
    if docker_answers(env):
        yield "the host's dockerd was running"
        return
    with open(log, "wb") as out:
        proc = subprocess.Popen(["dockerd"], stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not docker_answers(env):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the host's dockerd would not start: " + log.read_text(errors="replace")[-400:])
            time.sleep(0.3)
        yield "the host's dockerd was not running: started for the check and stopped again"
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def remove_all(daemon: DaemonProcess) -> None:
    """Every container of the bench's own Ross daemon, if it still answers."""
    if daemon.process is None or daemon.process.poll() is not None:
        return
    found = daemon.ross("ps", "-aq").stdout.decode().split()
    if found:
        daemon.ross("rm", "-f", *found, timeout=300)


def check_host_docker(work: Path, run_id: str, archive: Path) -> str:
    """
    The host's docker still runs a container on its default network: the
    harm a --bridge=none dockerd once did (docker0 deleted).
    """
    if not shutil.which("dockerd") or not shutil.which("docker"):
        return "docker is not installed here: nothing to check"
    with host_dockerd_running(work / "host-dockerd.log") as how:
        docker = Engine("docker", "docker", host_env(), f"rossbench-{run_id}")
        image = f"rossbench-{run_id}/check:latest"
        try:
            docker("load", "-i", str(archive), timeout=120)
            docker("tag", f"rossbench-{run_id}/busybox:latest", image)
            address = docker("run", "--rm", "--name", docker.name("check"), image, "ip", "-4", "-o", "addr",
                             "show", "eth0", timeout=120).stdout.decode().split()[3]
        finally:
            remove_from_docker(docker, run_id)
        return f"the host's docker ran a container on its default network ({address}); {how}"


# ------------------------------------------------------------- leftovers

def leftovers(b: Bench | None, paths: list[Path], before: dict[str, set[str]] | None,
              docker_env: dict[str, str] | None) -> list[str]:
    """What of the bench is still there; empty when nothing."""
    found = []
    mounts = Path("/proc/mounts").read_text()
    for path in paths:
        if path.exists():
            found.append(f"directory {path}")
        if f" {path}" in mounts:
            found.append(f"mounts under {path}")
    marker = [str(p) for p in paths]
    for pid in pids_where(lambda c: any(m.encode() in a for a in c for m in marker)):
        found.append(f"process {pid}")
    for daemon in ([b.daemon, *b.daemons] if b else []):
        if subprocess.run(["ip", "link", "show", daemon.network.bridge], capture_output=True).returncode == 0:
            found.append(f"bridge {daemon.network.bridge}")
        if subprocess.run(["nft", "list", "table", "inet", daemon.network.table],
                          capture_output=True).returncode == 0:
            found.append(f"nft table {daemon.network.table}")
        parent = f"ross-test-{daemon.base.name}"
        if Path(f"/sys/fs/cgroup/{parent}").exists() or any(Path("/sys/fs/cgroup").glob(f"*/{parent}")):
            found.append(f"cgroup {parent}")
    if before is not None and docker_env is not None:
        after = docker_inventory(docker_env)
        for kind in before:
            if before[kind] != after[kind]:
                found.append(f"the host's docker {kind} changed: +{sorted(after[kind] - before[kind])} "
                             f"-{sorted(before[kind] - after[kind])}")
    return found


# ------------------------------------------------------------------- main

def machine() -> dict[str, Any]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.machine())
    mem = int(Path("/proc/meminfo").read_text().split()[1]) // 1024
    return {"host": socket.gethostname(), "kernel": platform.release(), "cpu": cpu, "cpus": os.cpu_count(),
            "memory_mib": mem, "load_average_at_start": " ".join(Path("/proc/loadavg").read_text().split()[:3])}


def versions(b: Bench) -> dict[str, str]:
    commit = subprocess.run(["git", "-C", str(HERE.parent), "describe", "--always", "--dirty"], capture_output=True,
                            text=True).stdout.strip()
    found = {"ross": commit or "?", "python": platform.python_version()}
    if b.docker:
        found["docker"] = b.docker("version", "--format", "{{.Server.Version}}").stdout.decode().strip()
        found["docker daemon"] = b.docker_why
    return found


def measure_all(b: Bench, names: list[str]) -> list[Row]:
    all_rows: list[Row] = []
    for name in names:
        g = GROUPS[name]
        rows = {row.name: row for row in (copy.deepcopy(r) for r in g.rows(b.sizes))}
        for row in rows.values():
            row.group = name
        started = time.monotonic()
        print(f"-- {name}: {g.about}", flush=True)
        try:
            g.measure(b, rows)
        except (KeyboardInterrupt, Interrupted):
            raise
        except Exception as e:
            why = f"failed: {str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__}"[:300]
            print(f"   {why}", flush=True)
            if os.environ.get("ROSS_BENCH_DEBUG"):
                traceback.print_exc()
            for row in rows.values():
                if not row.ross or (b.docker and not row.docker):
                    row.skipped = row.skipped or why
        for row in rows.values():
            if not row.skipped and not row.docker:
                row.docker_missing = b.docker_why if b.docker is None else "not measured"
        print(f"   {time.monotonic() - started:.0f} s", flush=True)
        all_rows += rows.values()
    return all_rows


def write_report(directory: Path, runs: list[tuple[str, list[Row], dict[str, Any]]]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    if len(runs) == 1:
        (directory / "bench.json").write_text(to_json(runs[0][1], runs[0][2]))
        (directory / "bench.html").write_text(render_html(runs))
        print(f"report: {directory / 'bench.json'}, {directory / 'bench.html'}")
    else:
        (directory / "compare.html").write_text(render_html(runs))
        print(f"report: {directory / 'compare.html'}")


def compare(paths: list[str], report: str | None) -> None:
    loaded = []
    for label, path in zip("AB", paths):
        rows, meta = from_json(Path(path).read_text())
        print(f"{label}: {path} ({meta.get('date', '?')}, ross {meta.get('versions', {}).get('ross', '?')})")
        loaded.append((label, rows, dict(meta, file=path)))
    print(render_compare(loaded[0][1], loaded[1][1]), end="")
    if report:
        write_report(Path(report), loaded)


def main() -> None:
    parser = argparse.ArgumentParser(prog="./dev bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("names", nargs="*", metavar="NAME", help="groups to run (default: all); see --list")
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer runs (under 10 minutes)")
    parser.add_argument("--report", metavar="DIR", help="write bench.json and bench.html there")
    parser.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="compare two reports")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown too")
    parser.add_argument("--list", action="store_true", help="list the groups and their rows' methods")
    parser.add_argument("--no-docker", action="store_true", help="measure Ross only")
    parser.add_argument("--note", default="", help="a note for the report (what else ran on the machine)")
    add_option(parser)  # --store; "root" always when the host's dockerd is compared
    args = parser.parse_args()
    sizes = QUICK if args.quick else FULL
    if args.compare:
        compare(args.compare, args.report)
        return
    if args.list:
        for g in GROUPS.values():
            print(f"{g.name}: {g.about}")
            print("  " + render_methods(g.rows(sizes)).replace("\n", "\n  ").rstrip())
        return
    unknown = [n for n in args.names if n not in GROUPS]
    if unknown:
        parser.error(f"no group {', '.join(unknown)}; there are {', '.join(GROUPS)}")
    if os.geteuid() != 0:
        parser.error("the bench runs containers (root), like ./dev daemon")
    names = args.names or list(GROUPS)

    def interrupted(signum: int, frame: Any) -> None:
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGHUP, interrupted)
    run_id = os.urandom(3).hex()
    work = Path(tempfile.mkdtemp(prefix="ross-bench-all-", dir="/var/tmp"))
    paths = [work]
    begun = time.monotonic()
    b: Bench | None = None
    before: dict[str, set[str]] | None = None
    host = host_env()
    host_running = docker_answers(host)
    rows: list[Row] = []
    checks: list[str] = []
    meta: dict[str, Any] = {}
    store: JournaledStore | None = None
    try:
        stores = Path("/tmp")
        where = "the root file system" + (" (the host's dockerd keeps its own there)" if host_running else "")
        if args.store == "journal" and not host_running:
            store = JournaledStore(work / "fs")
            try:
                stores = store.make()
                where = f"a fresh ext4 with a journal in a file ({store.image.name}, bench/store.py)"
            except Unavailable as e:
                store = None
                where += f" (no journaled store here: {e})"
        print(f"stores: {where}", flush=True)
        with contextlib.ExitStack() as stack:
            daemon = DaemonProcess(short_tempdir("ross-bench-", stores), own_session=True)
            # A /22 on the bridge, as the private dockerd's: room for the scale row's 500.
            daemon.network = attrs.evolve(daemon.network, subnet=test_network(daemon.base.name, 22).subnet)
            paths.append(daemon.base)
            stack.callback(daemon.cleanup)
            stack.callback(daemon.stop)
            # Containers outlive their daemon by design: whatever a group
            # could not remove (cut short) goes before the daemon stops.
            stack.callback(remove_all, daemon)
            image = f"rossbench-{run_id}/busybox:latest"
            archive = docker_archive(work / "busybox.tar", tags=(image,)).path
            docker: Engine | None = None
            why = ""
            if args.no_docker:
                why = "--no-docker"
            elif not shutil.which("docker"):
                why = "docker is not installed"
            elif host_running:
                before = docker_inventory(host)
                docker = Engine("docker", "docker", host, f"rossbench-{run_id}")
                why = "the host's dockerd (only what the bench made is touched)"
                stack.callback(remove_from_docker, docker, run_id)
            else:
                env = stack.enter_context(private_dockerd(parent=stores))
                if isinstance(env, str):
                    why = env
                else:
                    docker = Engine("docker", "docker", env, f"rossbench-{run_id}")
                    why = "a private dockerd of bench/dockerd.py (the host's was not running)"
            print(f"docker: {why}", flush=True)
            daemon.start()
            ross = Engine("ross", ROSS, dict(os.environ, ROSS_HOST=daemon.address), f"rossbench-{run_id}")
            ross("load", "-i", str(archive))
            if docker:
                docker("load", "-i", str(archive))
            b = Bench(sizes, work, run_id, ross, daemon, docker, why, image, archive, store=stores)
            assert daemon.process is not None
            # Idle: once the daemon has been quiet for a memory check
            # (ross.services.memory.CHECK_INTERVAL), when it gives back what
            # the load freed. Right after the load it holds 2-5 MiB more.
            time.sleep(IDLE_SETTLE)
            b.idle_rss = memory_kib(daemon.process.pid, "Rss")
            meta = {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "machine": machine(), "versions": versions(b),
                "options": {"quick": args.quick, "groups": " ".join(names), "stores": where, **vars(sizes)},
                "notes": args.note}
            rows = measure_all(b, names)
            meta["machine"]["load_average_at_end"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            meta["seconds"] = round(time.monotonic() - begun)
    finally:
        # A second Ctrl-C must not cut the clean-up short.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if b:
                for extra in b.daemons:
                    paths.append(extra.base)
                    extra.cleanup()
            leftover_check = (before, host) if host_running and before is not None else (None, None)
            archive_copy = None
            if not args.no_docker and shutil.which("docker") and (work / "busybox.tar").exists():
                archive_copy = Path(tempfile.mkdtemp(prefix="ross-bench-check-", dir="/var/tmp"))
                shutil.copy(work / "busybox.tar", archive_copy / "busybox.tar")
            if store is not None:
                store.remove()
            shutil.rmtree(work, ignore_errors=True)
            left = leftovers(b, paths, *leftover_check)
            checks.append("left behind: " + ("nothing" if not left else "; ".join(left)))
            if archive_copy:
                try:
                    checks.append(check_host_docker(archive_copy, run_id, archive_copy / "busybox.tar"))
                except Exception as e:
                    checks.append(f"FAILED: the host's docker could not run a container on its default network: {e}")
                finally:
                    shutil.rmtree(archive_copy, ignore_errors=True)
        finally:
            signal.signal(signal.SIGINT, previous)
        for check in checks:
            print(f"check: {check}")
    meta["checks"] = checks
    print()
    print(render_table(rows), end="")
    if args.markdown:
        print()
        print(render_table(rows, markdown=True), end="")
    print(f"\n{len(rows)} rows in {meta['seconds']} s; docker: {b.docker_why if b else '?'}")
    # The issue asks for podman and crun too where installed: say so
    # rather than let their absence from the table pass unnoticed.
    others = [name for name in ("podman", "crun") if shutil.which(name)]
    print("podman, crun: " + (f"{', '.join(others)} installed but not compared yet" if others
                              else "not installed here; only docker is compared"))
    if args.report:
        write_report(Path(args.report), [("", rows, meta)])


if __name__ == "__main__":
    try:
        main()
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\ninterrupted ({type(e).__name__}); everything the bench made is removed", file=sys.stderr)
        sys.exit(130)
