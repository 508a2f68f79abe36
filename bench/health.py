"""
Health checks, Ross next to docker (when a docker daemon answers): the CPU
the engine spends on N containers (default 20) each checked every second
(``--health-cmd true --health-interval 1s``), read from /proc/PID/stat over
a window (default 30 s) once all are healthy.

    .venv/bin/python bench/health.py [--containers 20] [--seconds 30]

"daemon" is ross's daemon, or dockerd + containerd for docker; "engine"
adds the per-container shims and what they reaped (the check processes and,
for docker, a runc per check). Target: ross below docker on both.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.containers import ROSS, docker_available  # noqa: E402
from ross.testing.daemon import DaemonProcess  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402

IMAGE = "ross-health-bench-busybox"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool) -> float:
    """
    User + system CPU of C{pid}; with C{children}, plus its reaped
    children's.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # After "pid (comm)": state is fields[0]; utime, stime, cutime, cstime are 14-17 of stat(5).
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def pids_where(test: object) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if test(cmdline):  # type: ignore[operator]
            found.append(int(entry))
    return found


def measure(daemons: list[int], shims: list[int], seconds: float) -> tuple[float, float]:
    """
    (daemon CPU seconds, engine CPU seconds) spent over C{seconds}.
    """
    def sample() -> tuple[float, float]:
        d = sum(cpu_seconds(p, False) for p in daemons)
        return d, d + sum(cpu_seconds(p, True) for p in shims)

    d0, e0 = sample()
    time.sleep(seconds)
    d1, e1 = sample()
    return d1 - d0, e1 - e0


def wait_healthy(cli: list[str], env: dict[str, str] | None, names: list[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while True:
        out = subprocess.run(cli + ["ps", "--filter", "health=healthy", "-q"], env=env, capture_output=True).stdout
        if len(out.split()) >= len(names):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"not all healthy after {timeout}s")
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--containers", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30.0)
    args = parser.parse_args()

    docker = docker_available()
    daemon = DaemonProcess()
    env = dict(os.environ, ROSS_HOST=daemon.address)
    names = [f"ross-health-bench-{i}" for i in range(args.containers)]
    flags = ["--health-cmd", "true", "--health-interval", "1s"]
    print(f"{args.containers} containers, a 1 s health check each, CPU over {args.seconds:.0f} s once healthy:")
    try:
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar", tags=(f"{IMAGE}:latest",))
        subprocess.run([ROSS, "load", "-i", str(archive.path)], env=env, check=True, capture_output=True)
        for name in names:
            subprocess.run([ROSS, "run", "-d", "--name", name, *flags, IMAGE, "sleep", "100000"], env=env,
                           check=True, capture_output=True)
        wait_healthy([ROSS], env, names)
        assert daemon.process is not None
        shims = pids_where(lambda c: any(b"ross.engine.runtime.shim" in a for a in c))
        rd, re_ = measure([daemon.process.pid], shims, args.seconds)
        print(f"  ross   daemon {rd:6.2f} s CPU ({rd / args.seconds * 100:5.1f} %)   "
              f"engine {re_:6.2f} s ({re_ / args.seconds * 100:5.1f} %)")
        subprocess.run([ROSS, "rm", "-f", *names], env=env, capture_output=True)
        if not docker:
            print("  docker: no daemon answers; no comparison")
            return
        subprocess.run(["docker", "load", "-i", str(archive.path)], check=True, capture_output=True)
        ids = []
        for name in names:
            ids.append(subprocess.run(["docker", "run", "-d", "--name", name, *flags, IMAGE, "sleep", "100000"],
                                      check=True, capture_output=True).stdout.decode().strip())
        try:
            wait_healthy(["docker"], None, names)
            daemons = pids_where(lambda c: Path(c[0].decode()).name in ("dockerd", "containerd"))
            wanted = {i.encode() for i in ids}
            shims = pids_where(lambda c: Path(c[0].decode()).name == "containerd-shim-runc-v2"
                               and bool(wanted & set(c)))
            dd, de = measure(daemons, shims, args.seconds)
            print(f"  docker daemon {dd:6.2f} s CPU ({dd / args.seconds * 100:5.1f} %)   "
                  f"engine {de:6.2f} s ({de / args.seconds * 100:5.1f} %)   ({len(shims)} shims)")
            print(f"  ratio ross/docker = {rd / dd:.2f} (daemon), {re_ / de:.2f} (engine)  (target < 1)")
        finally:
            subprocess.run(["docker", "rm", "-f", *names], capture_output=True)
            subprocess.run(["docker", "rmi", "-f", IMAGE], capture_output=True)
    finally:
        daemon.stop()
        daemon.cleanup()


if __name__ == "__main__":
    main()
