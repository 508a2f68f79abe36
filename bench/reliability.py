"""
Reliability under crashes, load and races (issue 11), outside CI: prints
figures, and a list of problems (exit status 1 when there are any).

    .venv/bin/python bench/reliability.py [--quick] [--only crash|load|races]

Crash under load: C{--containers} (50; 10 with --quick) containers write
sequence-numbered log lines at C{--mb-per-s} (1) each while clients list,
inspect, exec and follow logs; the daemon is SIGKILLed and restarted
C{--restarts} (20) times. While it is down each time one more container
exits with a code of its own. At the end: every writer alive with the PID it
started with, every line of its log present once and in order, every exit
recorded with its code, and the time from each restart to the first answer
to ListContainers.

Load: C{--load-containers} (200; 40 with --quick) running containers,
C{--rate} (1000) mixed RPCs a second for C{--seconds} (60; 20 with --quick):
ListContainers, InspectContainer, GetLogs --tail 10, Exec true, with
C{--followers} events followers. Errors, p50/p99 per kind, the daemon's RSS,
fds and threads before and after.

Races: C{--clients} (8) CLI clients run, stop, kill, pause, rename, exec,
commit, copy into and out of, update and remove six shared containers, tag
and remove their images, and connect, create, remove and prune two networks
and two volumes, at random for
C{--seconds}: each refusal must say
why (never an internal error or a timeout), the daemon's log must hold no
traceback, and nothing may be left after. C{--seed} runs a mix again;
C{--via docker} takes the Docker API, with docker's CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import grpc
import grpc.aio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ross.testing.daemon import RETRY_OFTEN, Clients, DaemonProcess  # noqa: E402
from ross.testing.images import docker_archive, load_archive  # noqa: E402
from ross.v1 import container_pb2, container_pb2_grpc, system_pb2  # noqa: E402

IMAGE = "ross-bench-busybox:latest"
#: Bytes of one log line the writers write, newline included.
LINE = 100
#: Lines one writer writes per batch (between two sleeps).
BATCH = 1000
RUNNING = container_pb2.CONTAINER_STATUS_RUNNING
EXITED = container_pb2.CONTAINER_STATUS_EXITED
#: What a client may see while the daemon is down or going: anything else
#: is a problem.
OUTAGE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.DEADLINE_EXCEEDED}


def writer_script(mb_per_s: float) -> str:
    """
    A shell loop that writes lines "SEQ xxx...": a batch of L{BATCH} lines,
    then a pause that makes C{mb_per_s} (the batch's own time aside).
    """
    pause = BATCH * LINE / (mb_per_s * 1e6)
    pad = "x" * (LINE - 10)
    return (f"i=0; while :; do awk -v s=$i 'BEGIN {{ for (j = s; j < s + {BATCH}; j++) "
            f"printf \"%08d {pad}\\n\", j }}'; i=$((i+{BATCH})); sleep {pause:.3f}; done")


LINE_RE = re.compile(rb"(\d{8}) x{%d}" % (LINE - 10))


def problem_list() -> tuple[list[str], Callable[[str], None]]:
    problems: list[str] = []
    lock = threading.Lock()

    def report(text: str) -> None:
        with lock:
            problems.append(text)
            print(f"  PROBLEM: {text}", flush=True)

    return problems, report


def create(c: Clients, name: str, cmd: list[str], binds: list[str] = (), network: str = "none") -> str:  # type: ignore[assignment]
    config = container_pb2.ContainerConfig(image=IMAGE)
    config.cmd.values.extend(cmd)
    host = container_pb2.HostConfig(network_mode=network)
    host.binds.extend(binds)
    cid = c.containers.CreateContainer(container_pb2.CreateContainerRequest(
        name=name, config=config, host_config=host), timeout=60).id
    c.containers.StartContainer(container_pb2.StartContainerRequest(container_id=cid), timeout=60)
    return cid


def inspect(c: Clients, cid: str, timeout: float = 30) -> Any:
    return c.containers.InspectContainer(container_pb2.InspectContainerRequest(container_id=cid),
                                         timeout=timeout).container


def exec_true(c: Clients, cid: str, timeout: float = 30) -> int:
    start = container_pb2.ExecConfig(container_id=cid, cmd=["true"])
    code = None
    for frame in c.containers.Exec(iter([container_pb2.ExecInput(start=start)]), timeout=timeout):
        if frame.WhichOneof("output") == "exit":
            code = frame.exit.status_code
    if code is None:
        raise RuntimeError("exec ended without an exit frame")
    return code


def daemon_figures(pid: int) -> dict[str, int]:
    """RSS (KiB), open fds and threads of a process."""
    rss = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return {"rss_kb": rss, "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": len(os.listdir(f"/proc/{pid}/task"))}


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def start_daemon() -> tuple[DaemonProcess, Clients]:
    daemon = DaemonProcess(own_session=True)
    daemon.start()
    c = Clients(grpc.insecure_channel(f"unix:{daemon.socket}"))
    load_archive(c, docker_archive(daemon.base / "busybox.tar", tags=[IMAGE]).path)
    return daemon, c


def stop_daemon(daemon: DaemonProcess, c: Clients) -> None:
    try:
        listed = c.containers.ListContainers(container_pb2.ListContainersRequest(all=True), timeout=60).containers
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda x: c.containers.RemoveContainer(container_pb2.RemoveContainerRequest(
                container_id=x.id, force=True), timeout=60), listed))
        c.channel.close()
        daemon.stop()
    finally:
        daemon.cleanup()


def log_problems(daemon: DaemonProcess, report: Callable[[str], None]) -> None:
    """
    Report the tracebacks and errors in the daemon's log (the first few
    lines of each).
    """
    lines = daemon.read_log().splitlines()
    for n, line in enumerate(lines):
        if "Traceback (most recent call last)" in line or "#error]" in line or "#critical]" in line:
            report("daemon log: " + " | ".join(lines[max(0, n - 1):n + 40])[-4000:])


# ---------------------------------------------------------------- crash under load


class Clerks:
    """
    The clients at work while the daemon is killed and restarted: a lister,
    an inspector, an exec runner and log followers. Errors of an outage are
    counted; any other is a problem.
    """

    def __init__(self, daemon: DaemonProcess, writers: dict[str, int], followers: int,
                 report: Callable[[str], None]) -> None:
        """
        @param writers: the writers' names and PIDs.
        """
        self.daemon = daemon
        self.writers = writers
        self.report = report
        self.stopping = threading.Event()
        self.calls: Counter[str] = Counter()
        self.outage_errors: Counter[str] = Counter()
        self.followed_lines = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._loop, args=(what,), daemon=True)
                         for what in ("list", "inspect", "exec")]
        self._threads += [threading.Thread(target=self._follow, args=(n,), daemon=True) for n in range(followers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for thread in self._threads:
            thread.join(60)

    def _clients(self) -> Clients:
        return Clients(grpc.insecure_channel(f"unix:{self.daemon.socket}"))

    def _failed(self, what: str, e: grpc.RpcError) -> None:
        code = e.code() if hasattr(e, "code") else None
        if code in OUTAGE:
            with self._lock:
                self.outage_errors[what] += 1
            time.sleep(0.05)
        else:
            self.report(f"{what}: {code}: {e.details() if hasattr(e, 'details') else e}")
            time.sleep(0.5)

    def _loop(self, what: str) -> None:
        c = self._clients()
        rng = random.Random(what)
        names = sorted(self.writers)
        while not self.stopping.is_set():
            name = rng.choice(names)
            try:
                if what == "list":
                    listed = c.containers.ListContainers(container_pb2.ListContainersRequest(), timeout=10).containers
                    running = {x.name.lstrip("/") for x in listed}
                    missing = set(self.writers) - running
                    if missing:
                        self.report(f"list: writers not listed as running: {sorted(missing)[:5]}")
                elif what == "inspect":
                    state = inspect(c, name, timeout=10).state
                    if state.status != RUNNING or state.pid != self.writers[name]:
                        self.report(f"inspect {name}: status {state.status} pid {state.pid}")
                else:
                    code = exec_true(c, name, timeout=20)
                    if code != 0:
                        self.report(f"exec true in {name}: exit {code}")
                with self._lock:
                    self.calls[what] += 1
            except grpc.RpcError as e:
                self._failed(what, e)
            except Exception as e:
                self.report(f"{what}: {e!r}")
                time.sleep(0.5)
        c.channel.close()

    def _follow(self, n: int) -> None:
        """
        Follow one writer's log, from the end, reconnecting after each
        outage: within a connection the lines must come in order with
        none missing.
        """
        c = self._clients()
        name = sorted(self.writers)[n % len(self.writers)]
        while not self.stopping.is_set():
            last = None
            partial = b""
            try:
                stream = c.containers.GetLogs(container_pb2.GetLogsRequest(container_id=name, follow=True, tail=0),
                                              timeout=3600)
                for response in stream:
                    data = partial + b"".join(entry.line for entry in response.entries)
                    lines = data.split(b"\n")
                    partial = lines.pop()
                    for line in lines:
                        seq = int(line[:8])
                        if last is not None and seq != last + 1:
                            self.report(f"follower of {name}: {seq} after {last}")
                        last = seq
                    with self._lock:
                        self.followed_lines += len(lines)
                    if self.stopping.is_set():
                        stream.cancel()
                        break
            except grpc.RpcError as e:
                if not self.stopping.is_set():
                    self._failed("follow", e)
        c.channel.close()


def first_answer(daemon: DaemonProcess, timeout: float = 30.0) -> float:
    """
    Start the daemon; seconds until it answers ListContainers (the channel
    tries again every 10 ms: L{RETRY_OFTEN}).
    """
    channel = grpc.insecure_channel(f"unix:{daemon.socket}", options=RETRY_OFTEN)
    stub = container_pb2_grpc.ContainerServiceStub(channel)
    started = time.monotonic()
    daemon.spawn()
    try:
        while True:
            try:
                stub.ListContainers(container_pb2.ListContainersRequest(), timeout=0.5)
                return time.monotonic() - started
            except grpc.RpcError:
                assert daemon.process is not None
                if daemon.process.poll() is not None:
                    raise RuntimeError(f"daemon exited with {daemon.process.returncode}")
                if time.monotonic() - started > timeout:
                    raise RuntimeError(f"no answer {timeout} s after a restart")
                time.sleep(0.005)
    finally:
        channel.close()


def check_log(c: Clients, name: str) -> tuple[int, str]:
    """
    Lines of a writer's log, and what is wrong with them ("" when every
    number from 0 up is there once, in order).
    """
    expected = 0
    partial = b""
    for response in c.containers.GetLogs(container_pb2.GetLogsRequest(container_id=name), timeout=600):
        data = partial + b"".join(entry.line for entry in response.entries)
        lines = data.split(b"\n")
        partial = lines.pop()
        for line in lines:
            match = LINE_RE.fullmatch(line)
            if match is None:
                return expected, f"line {expected}: malformed {line[:60]!r}"
            seq = int(match.group(1))
            if seq != expected:
                return expected, f"line {expected}: sequence number {seq}"
            expected += 1
    if partial:
        return expected, f"a partial line at the end: {partial[:60]!r}"
    return expected, ""


def crash_under_load(args: argparse.Namespace) -> list[str]:
    problems, report = problem_list()
    print(f"crash under load: {args.containers} writers at {args.mb_per_s} MB/s each, "
          f"{args.restarts} SIGKILL restarts {args.interval} s apart", flush=True)
    daemon, c = start_daemon()
    try:
        flags = daemon.base / "flags"
        flags.mkdir()
        script = writer_script(args.mb_per_s)
        names = [f"w{n}" for n in range(args.containers)]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda name: create(c, name, ["sh", "-c", script], network=args.network), names))
            exiters = [f"e{r}" for r in range(args.restarts)]
            for r in range(args.restarts):
                os.mkfifo(flags / f"e{r}")
            list(pool.map(lambda r: create(c, f"e{r}", ["sh", "-c", f"read x < /flags/e{r}; exit {10 + r}"],
                                           binds=[f"{flags}:/flags"], network=args.network),
                          range(args.restarts)))
        pids = {name: inspect(c, name).state.pid for name in names}
        clerks = Clerks(daemon, pids, args.followers, report)
        clerks.start()
        started = time.monotonic()
        outages: list[float] = []
        for r in range(args.restarts):
            time.sleep(args.interval)
            daemon.kill()
            # This one's exit happens while nobody is watching its shim.
            fd = os.open(flags / f"e{r}", os.O_WRONLY | os.O_NONBLOCK)
            os.write(fd, b"go\n")
            os.close(fd)
            time.sleep(args.down)
            outages.append(first_answer(daemon))
            print(f"  restart {r + 1}: first answer after {outages[-1] * 1000:.0f} ms", flush=True)
        time.sleep(args.interval)
        clerks.stop()
        elapsed = time.monotonic() - started

        alive = 0
        for name in names:
            state = inspect(c, name).state
            if state.status == RUNNING and state.pid == pids[name]:
                alive += 1
            else:
                report(f"{name}: status {state.status}, pid {state.pid} (was {pids[name]})")
        recorded = 0
        for r, name in enumerate(exiters):
            state = inspect(c, name).state
            if state.status == EXITED and state.exit_code == 10 + r:
                recorded += 1
            else:
                report(f"{name}: status {state.status}, exit code {state.exit_code} (exited with {10 + r})")
        total_lines = 0
        read_started = time.monotonic()
        with ThreadPoolExecutor(2) as pool:
            for name, (count, wrong) in zip(names, pool.map(lambda name: check_log(c, name), names)):
                total_lines += count
                if wrong:
                    report(f"log of {name}: {wrong}")
        read_time = time.monotonic() - read_started
        log_problems(daemon, report)
        print(f"  writers alive with their PIDs      {alive}/{len(names)}")
        print(f"  exits while down recorded (codes)  {recorded}/{len(exiters)}")
        print(f"  log lines checked                  {total_lines} ({total_lines * LINE / 1e6:.0f} MB, "
              f"{total_lines * LINE / 1e6 / elapsed / len(names):.2f} MB/s per writer written, "
              f"read back at {total_lines * LINE / 1e6 / read_time:.0f} MB/s)")
        print(f"  log lines lost/duplicated/reordered  {sum(1 for p in problems if p.startswith('log of'))} "
              f"writers with a fault")
        print(f"  restart to first answer            median {statistics.median(outages) * 1000:.0f} ms, "
              f"max {max(outages) * 1000:.0f} ms" if outages else "")
        print(f"  client calls served                {dict(clerks.calls)}, followed lines {clerks.followed_lines}")
        print(f"  client errors during outages       {dict(clerks.outage_errors)}")
    finally:
        stop_daemon(daemon, c)
    return problems


# ---------------------------------------------------------------- load


MIX = (("list", 10), ("inspect", 40), ("logs", 40), ("exec", 10))


async def load_run(daemon: DaemonProcess, ids: list[str], args: argparse.Namespace,
                   report: Callable[[str], None]) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(f"unix:{daemon.socket}") for _ in range(4)]
    stubs = [container_pb2_grpc.ContainerServiceStub(ch) for ch in channels]
    from ross.v1 import system_pb2_grpc

    system = system_pb2_grpc.SystemServiceStub(channels[0])
    latencies: dict[str, list[float]] = defaultdict(list)
    errors: Counter[str] = Counter()
    events = Counter[str]()
    rng = random.Random(11)
    kinds = [k for k, w in MIX for _ in range(w)]
    semaphore = asyncio.Semaphore(args.concurrency)
    behind = 0

    async def one(kind: str, stub: Any) -> None:
        cid = rng.choice(ids)
        t = time.perf_counter()
        try:
            if kind == "list":
                await stub.ListContainers(container_pb2.ListContainersRequest(), timeout=30)
            elif kind == "inspect":
                await stub.InspectContainer(container_pb2.InspectContainerRequest(container_id=cid), timeout=30)
            elif kind == "logs":
                async for _ in stub.GetLogs(container_pb2.GetLogsRequest(container_id=cid, tail=10), timeout=30):
                    pass
            else:
                code = None
                async for frame in stub.Exec(iter([container_pb2.ExecInput(
                        start=container_pb2.ExecConfig(container_id=cid, cmd=["true"]))]), timeout=30):
                    if frame.WhichOneof("output") == "exit":
                        code = frame.exit.status_code
                if code != 0:
                    errors[f"{kind}: exit {code}"] += 1
            latencies[kind].append(time.perf_counter() - t)
        except grpc.aio.AioRpcError as e:
            errors[f"{kind}: {e.code().name}: {e.details()}"[:160]] += 1
        finally:
            semaphore.release()

    async def follow() -> None:
        try:
            async for event in system.Events(system_pb2.EventsRequest(), timeout=args.seconds + 60):
                events["lagging" if event.HasField("lagging") else "events"] += 1
        except grpc.aio.AioRpcError as e:
            if e.code() != grpc.StatusCode.CANCELLED:
                errors[f"events: {e.code().name}: {e.details()}"] += 1

    followers = [asyncio.ensure_future(follow()) for _ in range(args.followers)]
    rss: list[tuple[float, int]] = []
    threads: list[tuple[float, int]] = []
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    sent = 0
    next_sample = 0.0
    while (now := time.perf_counter() - start) < args.seconds:
        if now >= next_sample:
            figures = daemon_figures(daemon.process.pid)  # type: ignore[union-attr]
            rss.append((now, figures["rss_kb"]))
            threads.append((now, figures["threads"]))
            next_sample += 1.0
        due = int(now * args.rate) - sent
        for _ in range(due):
            if semaphore.locked():
                behind += 1
                sent += 1
                continue
            await semaphore.acquire()
            task = asyncio.ensure_future(one(rng.choice(kinds), stubs[sent % len(stubs)]))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            sent += 1
        await asyncio.sleep(0.002)
    if tasks:
        await asyncio.wait(tasks, timeout=60)
    duration = time.perf_counter() - start
    for f in followers:
        f.cancel()
    await asyncio.gather(*followers, return_exceptions=True)
    for ch in channels:
        await ch.close()
    return {"latencies": latencies, "errors": errors, "events": events, "behind": behind, "sent": sent,
            "duration": duration, "rss": rss, "threads": threads}


def load(args: argparse.Namespace) -> list[str]:
    problems, report = problem_list()
    print(f"load: {args.load_containers} containers, {args.rate} RPC/s for {args.seconds} s, "
          f"{args.followers} events followers", flush=True)
    daemon, c = start_daemon()
    try:
        script = "i=0; while [ $i -lt 50 ]; do echo line $i; i=$((i+1)); done; exec sleep 1000000"
        t = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            ids = list(pool.map(lambda n: create(c, f"l{n}", ["sh", "-c", script]), range(args.load_containers)))
        print(f"  {len(ids)} containers started in {time.monotonic() - t:.1f} s", flush=True)
        assert daemon.process is not None
        pid = daemon.process.pid
        time.sleep(3)
        before = daemon_figures(pid)
        outcome = asyncio.run(load_run(daemon, ids, args, report))
        time.sleep(5)
        after = daemon_figures(pid)
        done = sum(len(v) for v in outcome["latencies"].values())
        failed = sum(outcome["errors"].values())
        print(f"  offered {outcome['sent'] / outcome['duration']:.0f} RPC/s, served {done / outcome['duration']:.0f} "
              f"RPC/s ({done} calls, {failed} errors, {outcome['behind']} not sent: {args.concurrency} "
              f"already waiting)")
        for kind, _ in MIX:
            values = outcome["latencies"][kind]
            print(f"  {kind:8} {len(values):6} calls  p50 {percentile(values, 0.5) * 1000:7.1f} ms  "
                  f"p99 {percentile(values, 0.99) * 1000:7.1f} ms")
        for error, count in outcome["errors"].most_common(10):
            report(f"{count} x {error}")
        print(f"  events followers: {dict(outcome['events'])}")
        rss = outcome["rss"]
        half = [kb for s, kb in rss if s >= args.seconds / 2]
        print(f"  daemon RSS: {before['rss_kb'] / 1024:.0f} MiB before, {rss[len(rss) // 2][1] / 1024:.0f} MiB "
              f"half-way, {rss[-1][1] / 1024:.0f} MiB at the end of the load, {after['rss_kb'] / 1024:.0f} MiB after; "
              f"over the second half {min(half) / 1024:.0f}..{max(half) / 1024:.0f} MiB")
        # The gRPC server's pool grows to its size under load and stays
        # there: a leak is growth that goes on, over the second half.
        late = [n for s, n in outcome["threads"] if s >= args.seconds / 2]
        print(f"  daemon fds {before['fds']} -> {after['fds']}, threads {before['threads']} -> {after['threads']} "
              f"(second half of the load {min(late)}..{max(late)})")
        if after["fds"] > before["fds"] + 5:
            report(f"fds grew from {before['fds']} to {after['fds']}")
        # Streams' pump threads come and go with the calls: what is left
        # once the load is over tells a leak.
        if after["threads"] > min(late) + 2:
            report(f"threads kept growing: {min(late)}..{max(late)} over the second half, {after['threads']} after")
        log_problems(daemon, report)
    finally:
        stop_daemon(daemon, c)
    return problems


# ---------------------------------------------------------------- races

#: What a refused step of L{races} may say: a container or network changed
#: by another client in between is an expected refusal, with its reason.
EXPECTED_REFUSAL = re.compile(
    r"[Nn]o such|not found|is not running|already|in use|[Cc]onflict|is running|is paused|is not paused|"
    r"active endpoints|is not connected|same name as its current|cannot start a paused|cannot be connected|"
    r"is restarting|being removed|removal of container|must be stopped|is dead|Could not find the file")


def race_step(rng: random.Random, ross: Callable[..., None]) -> None:
    """
    One random CLI step on a few shared names (the mix of L{races}).
    """
    name = rng.choice(RACE_NAMES)
    network, volume = rng.choice(("race-a", "race-b")), rng.choice(("race-v", "race-w"))
    k = rng.random()
    if k < 0.15:
        extra = []
        if rng.random() < 0.5:
            extra += ["--network", rng.choice((network, "bridge", "none"))]
        if rng.random() < 0.4:
            extra += ["-v", f"{volume}:/data"]
        if rng.random() < 0.2:
            extra += ["-p", "0:80"]
        if rng.random() < 0.2:
            extra += ["--restart", "on-failure:2"]
        image = IMAGE if rng.random() < 0.7 else f"race-{rng.choice(RACE_NAMES)}"
        ross("run", "-d", "--name", name, *extra, image, "sh", "-c",
             rng.choice(("sleep 1000", "sleep 0.3; exit 3", "echo hi")))
        return
    steps: list[tuple[float, tuple[str, ...]]] = [
        (0.25, ("rm", "-f", name)), (0.32, ("stop", "-t", "1", name)), (0.38, ("start", name)),
        (0.43, ("restart", "-t", "1", name)), (0.48, ("kill", name)), (0.52, ("pause", name)),
        (0.56, ("unpause", name)), (0.60, ("rename", name, rng.choice(RACE_NAMES))), (0.66, ("exec", name, "true")),
        (0.70, ("network", "connect", network, name)), (0.74, ("network", "disconnect", network, name)),
        (0.77, ("network", "create", network)), (0.80, ("network", "rm", network)),
        (0.83, ("volume", "create", volume)), (0.86, ("volume", "rm", volume)), (0.89, ("inspect", name)),
        (0.91, ("ps", "-a")), (0.93, ("logs", name)), (0.95, ("commit", name, f"race-{name}")),
        (0.96, ("tag", IMAGE, f"race-{name}")), (0.975, ("rmi", f"race-{name}")),
        (0.985, ("image", "prune", "-f")), (1.0, ("container", "prune", "-f"))]
    if rng.random() < 0.25:
        # Less often: copies, updates, the views of a running container,
        # and the other prunes.
        scratch = os.path.join(tempfile.gettempdir(), f"ross-race-{os.getpid()}-{rng.randrange(1 << 30)}")
        steps = [(0.15, ("cp", __file__, f"{name}:/tmp/")), (0.3, ("cp", f"{name}:/etc/hostname", scratch)),
                 (0.45, ("update", "--memory", "64m", "--memory-swap", "128m", name)), (0.55, ("top", name)),
                 (0.65, ("stats", "--no-stream", name)), (0.75, ("diff", name)),
                 (0.85, ("export", "-o", scratch, name)), (0.92, ("network", "prune", "-f")),
                 (1.0, ("volume", "prune", "-f"))]
        pick = rng.random()
        try:
            ross(*next(step for limit, step in steps if pick < limit))
        finally:
            if os.path.exists(scratch):
                os.unlink(scratch)
        return
    ross(*next(step for limit, step in steps if k < limit))


RACE_NAMES = [f"race{i}" for i in range(6)]


def races(args: argparse.Namespace) -> list[str]:
    """
    C{--clients} CLI clients changing a few shared containers, networks
    and volumes at once for C{--seconds}: every refusal must give its
    reason (no internal error, no timeout), the daemon's log no traceback,
    and nothing may be left once everything is removed.
    """
    problems, report = problem_list()
    print(f"races: {args.clients} {args.via} clients on {len(RACE_NAMES)} names for {args.seconds} s", flush=True)
    daemon, c = start_daemon()
    env = dict(os.environ, ROSS_HOST=daemon.address)
    # The same steps through the Docker API, with docker's own CLI.
    cli = ([os.path.join(os.path.dirname(sys.executable), "ross")] if args.via == "ross"
           else ["docker", "-H", f"unix://{daemon.exec_root / 'docker.sock'}"])
    counts: Counter[str] = Counter()
    lock = threading.Lock()

    def ross(*argv: str) -> None:
        try:
            result = subprocess.run([*cli, *argv], env=env, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            report(f"{args.via} {' '.join(argv)}: no answer in 60 s")
            return
        with lock:
            counts["done" if result.returncode == 0 else "refused"] += 1
        # An exec's own status (137: killed as its container stopped) comes
        # without a message.
        told = result.stderr.strip() or argv[0] != "exec"
        # An export cut short, a stats stream ended (their container
        # removed meanwhile), fail so in docker's CLI.
        if argv[0] in ("export", "stats") and result.stderr.strip() in ("unexpected EOF", "EOF"):
            told = False
        if result.returncode != 0 and told and (not EXPECTED_REFUSAL.search(result.stderr)
                                                or "internal" in result.stderr):
            report(f"{args.via} {' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()[:300]}")

    def client(seed: int) -> None:
        rng = random.Random(seed)
        end = time.monotonic() + args.seconds
        while time.monotonic() < end:
            race_step(rng, ross)

    try:
        seed = args.seed if args.seed is not None else random.randrange(1 << 30)
        with ThreadPoolExecutor(args.clients) as pool:
            list(pool.map(client, range(seed, seed + args.clients)))
        print(f"  seed {seed}: {counts['done']} steps done, {counts['refused']} refused with a reason", flush=True)
        listed = c.containers.ListContainers(container_pb2.ListContainersRequest(all=True), timeout=60).containers
        for x in listed:
            c.containers.RemoveContainer(container_pb2.RemoveContainerRequest(container_id=x.id, force=True),
                                         timeout=60)
        for leftover in ("network rm race-a", "network rm race-b", "volume prune -f"):
            subprocess.run([*cli, *leftover.split()], env=env, capture_output=True, timeout=60)
        log_problems(daemon, report)
    finally:
        stop_daemon(daemon, c)
    mounts = [line for line in Path("/proc/mounts").read_text().splitlines() if str(daemon.base) in line]
    if mounts:
        report(f"mounts left: {mounts[:3]}")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", choices=("crash", "load", "races"))
    parser.add_argument("--containers", type=int)
    parser.add_argument("--restarts", type=int)
    parser.add_argument("--mb-per-s", type=float, default=1.0)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds of work between two kills")
    parser.add_argument("--down", type=float, default=0.3, help="seconds the daemon stays down")
    parser.add_argument("--network", default="none", help="network of the writers")
    parser.add_argument("--load-containers", type=int)
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=200, help="calls in flight at most")
    parser.add_argument("--followers", type=int, default=4)
    parser.add_argument("--clients", type=int, default=8, help="CLI clients of the races run")
    parser.add_argument("--seed", type=int, help="the races run's seed (printed), to run it again")
    parser.add_argument("--via", choices=("ross", "docker"), default="ross",
                        help="the races run's clients: ross's CLI, or docker's through the Docker API")
    args = parser.parse_args()
    args.containers = args.containers or (10 if args.quick else 50)
    args.restarts = args.restarts or (5 if args.quick else 20)
    args.load_containers = args.load_containers or (40 if args.quick else 200)
    args.seconds = args.seconds or (20 if args.quick else 60)
    problems = []
    if args.only in (None, "crash"):
        problems += crash_under_load(args)
    if args.only in (None, "load"):
        problems += load(args)
    if args.only in (None, "races"):
        problems += races(args)
    print(f"{len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
