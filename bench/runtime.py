"""
The runtime's own figures (no daemon, no CLI, no gRPC): how long a shim
takes to run `true` in a fresh container from spawn to recorded exit, with
the builtin seccomp profile and without (issue 9: it may cost 3 ms a start
at most), how much memory a shim holds, and how fast it logs; the same
`true` with a user namespace of its own (--userns-remap) next to one without.

    .venv/bin/python bench/runtime.py [--runs 20] [--log-mb 200]

Needs root. Uses a busybox root filesystem bound as the container's root.
For comparison, when dockerd is running and has a busybox image, the same
`true` through `docker run --rm` (the whole docker path) is timed too.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from twisted.internet import defer, task

from ross.engine.records import Mount
from ross.engine.runtime import linux, seccomp
from ross.engine.runtime import spec as rs
from ross.engine.runtime.runtime import Runtime
from ross.engine.runtime.userns import IdRange
from ross.protocols import shimwire


def rss_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1])
    return out


def docker_true(runs: int) -> list[float] | None:
    if not shutil.which("docker"):
        return None
    probe = subprocess.run(["docker", "image", "inspect", "busybox"], capture_output=True)
    if probe.returncode != 0:
        return None
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["docker", "run", "--rm", "busybox", "true"], check=True, capture_output=True)
        times.append(time.perf_counter() - t0)
    return times


def seccomp_load_ms(runs: int) -> list[float]:
    """
    What the builtin profile adds in the container's process, alone:
    decoding the program from the wire and loading it (in forked
    children, as the shim's).
    """
    program = seccomp.compile_profile(seccomp.default_profile(), linux.capability_mask(linux.DEFAULT_CAPABILITIES),
                                      platform.machine(), seccomp.kernel_version(platform.release()))
    wire = shimwire.message(rs.to_wire(rs.ContainerSpec(id="x", rootfs=(), process=rs.Process(args=("true",))),
                                       program))
    times = []
    for _ in range(runs):
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:
            t0 = time.perf_counter()
            given = shimwire.decode_message(wire[shimwire.HEADER_SIZE:])["process"]["seccomp"]
            linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
            linux.seccomp_filter(given["code"], given["flags"])
            os.write(write, str(time.perf_counter() - t0).encode())
            os._exit(0)
        os.close(write)
        os.waitpid(pid, 0)
        with os.fdopen(read) as f:
            times.append(float(f.read()) * 1000)
    return times


async def main(reactor: object, args: argparse.Namespace) -> None:
    from ross.testing.busybox import build_rootfs

    base = Path(tempfile.mkdtemp(prefix="ross-bench-runtime-"))
    try:
        rootfs = build_rootfs(base / "rootfs")
        runtime = Runtime(reactor, base / "state")
        if args.spare:
            runtime.keep_spare()
        n = 0

        def spec(*argv: str, **fields: object) -> rs.ContainerSpec:
            nonlocal n
            n += 1
            fields.setdefault("log", rs.LogConfig(path=str(base / f"c{n}.log")))
            return rs.ContainerSpec(id=f"bench{n}", rootfs=(Mount("bind", str(rootfs), "", ("rbind",)),),
                                    process=rs.Process(args=argv), cgroup_parent="ross-bench",
                                    **fields)  # type: ignore[arg-type]

        async def finish(s: rs.ContainerSpec, shim_pid: int) -> None:
            while os.path.exists(f"/proc/{shim_pid}"):
                await task.deferLater(reactor, 0.005, lambda: None)  # type: ignore[arg-type]
            await runtime.delete(s.id)

        # warm-up: page cache, the cgroup parent
        s = spec("true")
        h = await runtime.start(s)
        await h.wait()
        await finish(s, h.shim_pid)

        # The builtin seccomp profile against none, alternately (the
        # profile's program is compiled by the warm-up run).
        starts: dict[str, list[float]] = {"builtin": [], "unconfined": []}
        totals: dict[str, list[float]] = {"builtin": [], "unconfined": []}
        for i in range(args.runs):
            # ABBA: neither mode always runs first.
            for mode in sorted(starts, reverse=bool(i % 2)):
                # Consecutive `ross run`s are a CLI start-up apart; give the
                # spare shim that much time to be ready.
                await task.deferLater(reactor, args.pause, lambda: None)  # type: ignore[arg-type]
                s = spec("true") if mode == "builtin" else spec("true", seccomp=None)
                t0 = time.perf_counter()
                h = await runtime.start(s)
                t1 = time.perf_counter()
                await h.wait()
                t2 = time.perf_counter()
                starts[mode].append(t1 - t0)
                totals[mode].append(t2 - t0)
                await finish(s, h.shim_pid)
        for mode in starts:
            print(f"true, seccomp {mode}: spawn -> running  median {statistics.median(starts[mode]) * 1000:6.1f} ms")
            print(f"true, seccomp {mode}: spawn -> exited   median {statistics.median(totals[mode]) * 1000:6.1f} ms "
                  f"(min {min(totals[mode]) * 1000:.1f}, max {max(totals[mode]) * 1000:.1f}, {args.runs} runs)")
        # Runs next to each other share the machine's load: their
        # differences are steadier than the medians' difference.
        cost = statistics.median(b - u for b, u in zip(totals["builtin"], totals["unconfined"]))
        print(f"seccomp cost per start: {cost * 1000:+.2f} ms (median of paired differences; budget 3 ms)")
        load = seccomp_load_ms(args.runs)
        print(f"seccomp in the container's process (decode + load): median {statistics.median(load):.2f} ms "
              f"(max {max(load):.2f})")

        # The same with a user namespace of its own (--userns-remap),
        # alternating with plain runs so both see the same machine.
        remap = rs.UserNamespace(uid_map=(IdRange(0, 1_600_000_000, 65536),),
                                 gid_map=(IdRange(0, 1_600_000_000, 65536),))
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.runs):
            for remapped in (True, False):
                await task.deferLater(reactor, args.pause, lambda: None)  # type: ignore[arg-type]
                s = spec("true", userns=remap if remapped else None)
                t0 = time.perf_counter()
                h = await runtime.start(s)
                await h.wait()
                times[remapped].append(time.perf_counter() - t0)
                await finish(s, h.shim_pid)
        with_ns, without = statistics.median(times[True]), statistics.median(times[False])
        print(f"true with a user namespace: spawn -> exited median {with_ns * 1000:6.1f} ms, "
              f"without {without * 1000:6.1f} ms: {(with_ns - without) * 1000:+.1f} ms")

        for init in (False, True):
            s = spec("sleep", "100", init=init)
            h = await runtime.start(s)
            await task.deferLater(reactor, 0.2, lambda: None)  # type: ignore[arg-type]
            shim = rss_kb(h.shim_pid)
            line = (f"shim RSS {shim['VmRSS'] / 1024:.1f} MB (anon {shim['RssAnon'] / 1024:.1f} MB, "
                    f"PSS {shim['Pss'] / 1024:.1f} MB)")
            if init:
                reaper = rss_kb(h.pid)
                line += (f"; init reaper (PID 1) RSS {reaper['VmRSS'] / 1024:.1f} MB "
                         f"(anon {reaper['RssAnon'] / 1024:.1f} MB, PSS {reaper['Pss'] / 1024:.1f} MB)")
            print(line)
            await h.kill(9)
            await h.wait()
            await finish(s, h.shim_pid)

        size = args.log_mb * 1_000_000
        line = "a typical log line: GET /index.html 200 0.004s user-agent=bench/1.0"
        s = spec("sh", "-c", f"yes '{line}' | head -c {size}")
        t0 = time.perf_counter()
        h = await runtime.start(s)
        status = await h.wait()
        elapsed = time.perf_counter() - t0
        logged = os.path.getsize(s.log.path)
        print(f"log: {args.log_mb} MB of output in {elapsed:.2f} s = {args.log_mb / elapsed:.0f} MB/s "
              f"({logged / 1e6:.0f} MB of JSON lines, exit {status.exit_code})")
        await finish(s, h.shim_pid)

        docker = docker_true(args.runs) if args.docker else None
        if docker:
            d = statistics.median(docker)
            print(f"docker run --rm busybox true: median {d * 1000:.1f} ms; "
                  f"runtime part / docker = {statistics.median(totals['builtin']) / d:.2f}")
        await runtime.close()
    finally:
        shutil.rmtree(base, ignore_errors=True)
        for hierarchy in Path("/sys/fs/cgroup").iterdir():
            try:
                os.rmdir(hierarchy / "ross-bench")
            except OSError:
                pass


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--log-mb", type=int, default=200)
    parser.add_argument("--pause", type=float, default=0.1, help="seconds between runs")
    parser.add_argument("--no-spare", dest="spare", action="store_false",
                        help="spawn every shim on demand instead of keeping a spare one ready")
    parser.add_argument("--docker", action="store_true", help="also time docker run --rm busybox true")
    options = parser.parse_args()
    task.react(lambda reactor: defer.ensureDeferred(main(reactor, options)))
