"""
Containers, Ross next to docker (when a docker daemon answers):

  - ``run --rm busybox true``: 20 alternating runs each, median and ratio,
    and the same with ``--security-opt seccomp=unconfined`` (what the
    default seccomp profile costs; issue 9's budget is 3 ms a start);
  - 20 detached starts at once: time until all run, then their removal;
  - 200 MB of container output read back through ``logs``: MB/s each;
  - shim and daemon memory (RSS).

    .venv/bin/python bench/containers.py [--runs 20] [--log-mb 200]

Targets (issue 4): run latency <= 0.6x docker's; concurrent starts no slower
than docker; logs at least docker's MB/s; shim RSS under 12 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ross.testing.daemon import DaemonProcess  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402

ROSS = os.path.join(os.path.dirname(sys.executable), "ross")


def docker_available() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True).returncode == 0


def timed(argv: list[str], env: dict[str, str] | None = None, stdout: int | None = subprocess.DEVNULL) -> float:
    t = time.perf_counter()
    result = subprocess.run(argv, env=env, stdout=stdout, stderr=subprocess.PIPE)
    elapsed = time.perf_counter() - t
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr.decode()}")
    return elapsed


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def shim_pids(state_root: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if b"ross.engine.runtime.shim" in cmdline and state_root.encode() in cmdline:
            pids.append(int(entry))
    return pids


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--concurrent", type=int, default=20)
    parser.add_argument("--log-mb", type=int, default=200)
    args = parser.parse_args()

    docker = docker_available()
    daemon = DaemonProcess()
    env = dict(os.environ, ROSS_HOST=daemon.address)
    ross = [ROSS]
    try:
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar", tags=("ross-bench-busybox:latest",))
        subprocess.run([ROSS, "load", "-i", str(archive.path)], env=env, check=True, capture_output=True)
        if docker:
            subprocess.run(["docker", "load", "-i", str(archive.path)], check=True, capture_output=True)
        image = "ross-bench-busybox"

        # -- run latency
        for _ in range(2):
            timed(ross + ["run", "--rm", image, "true"], env)
            if docker:
                timed(["docker", "run", "--rm", image, "true"])
        # Each with the default seccomp profile and without, alternately.
        unconfined = ["--security-opt", "seccomp=unconfined"]
        ross_times, docker_times = [], []
        ross_unconfined, docker_unconfined = [], []
        for _ in range(args.runs):
            ross_times.append(timed(ross + ["run", "--rm", image, "true"], env))
            ross_unconfined.append(timed(ross + ["run", "--rm", *unconfined, image, "true"], env))
            if docker:
                docker_times.append(timed(["docker", "run", "--rm", image, "true"]))
                docker_unconfined.append(timed(["docker", "run", "--rm", *unconfined, image, "true"]))
        r, ru = statistics.median(ross_times), statistics.median(ross_unconfined)
        print(f"run --rm {image} true, median of {args.runs}:")
        print(f"  ross   {r * 1e3:7.1f} ms  (min {min(ross_times) * 1e3:.1f})")
        print(f"  ross, seccomp=unconfined {ru * 1e3:7.1f} ms  (min {min(ross_unconfined) * 1e3:.1f}); "
              f"the profile costs {(r - ru) * 1e3:+.1f} ms (budget 3)")
        if docker_times:
            d, du = statistics.median(docker_times), statistics.median(docker_unconfined)
            print(f"  docker {d * 1e3:7.1f} ms  (min {min(docker_times) * 1e3:.1f})")
            print(f"  docker, seccomp=unconfined {du * 1e3:7.1f} ms; the profile costs {(d - du) * 1e3:+.1f} ms")
            print(f"  ratio ross/docker = {r / d:.2f}  (target <= 0.60)")

        # -- concurrent detached starts
        def burst(cli: list[str], env_: dict[str, str] | None, prefix: str) -> tuple[float, float]:
            names = [f"{prefix}{i}" for i in range(args.concurrent)]
            t = time.perf_counter()
            with ThreadPoolExecutor(args.concurrent) as pool:
                list(pool.map(lambda n: timed(cli + ["run", "-d", "--name", n, image, "sleep", "1000"], env_), names))
            started = time.perf_counter() - t
            t = time.perf_counter()
            timed(cli + ["rm", "-f", *names], env_)
            return started, time.perf_counter() - t

        rs, rr = burst(ross, env, "rb")
        print(f"\n{args.concurrent} detached starts at once, until all run / then rm -f of all:")
        print(f"  ross   {rs:6.2f} s / {rr:6.2f} s")
        if docker:
            ds, dr = burst(["docker"], None, "db")
            print(f"  docker {ds:6.2f} s / {dr:6.2f} s")
            print(f"  ratio ross/docker = {rs / ds:.2f} (start), {rr / dr:.2f} (remove)")

        # -- memory
        subprocess.run(ross + ["run", "-d", "--name", "rss", image, "sleep", "1000"], env=env, check=True,
                       capture_output=True)
        time.sleep(0.5)
        shims = shim_pids(str(daemon.exec_root))
        print("\nmemory:")
        if shims:
            print(f"  shim RSS: {statistics.median(rss_kb(p) for p in shims) / 1024:.1f} MiB (target < 12)")
        print(f"  ross daemon RSS: {rss_kb(daemon.process.pid) / 1024:.1f} MiB")
        subprocess.run(ross + ["rm", "-f", "rss"], env=env, capture_output=True)

        # -- logs throughput
        mb = args.log_mb
        script = f"head -c {mb * 1000 * 1000} /dev/zero | tr '\\0' 'x' | fold -w 99"
        subprocess.run(ross + ["run", "--name", "logs", image, "sh", "-c", script], env=env, check=True,
                       stdout=subprocess.DEVNULL)
        rl = timed(ross + ["logs", "logs"], env)
        print(f"\n{mb} MB of output through logs:")
        print(f"  ross   {rl:6.2f} s  {mb / rl:6.1f} MB/s")
        if docker:
            subprocess.run(["docker", "run", "--name", "ross-bench-logs", image, "sh", "-c", script], check=True,
                           stdout=subprocess.DEVNULL)
            dl = timed(["docker", "logs", "ross-bench-logs"])
            print(f"  docker {dl:6.2f} s  {mb / dl:6.1f} MB/s")
            print(f"  ratio ross/docker throughput = {dl / rl:.2f}  (target >= 1)")
            subprocess.run(["docker", "rm", "-f", "ross-bench-logs"], capture_output=True)
        subprocess.run(ross + ["rm", "-f", "logs"], env=env, capture_output=True)
    finally:
        if docker:
            subprocess.run(["docker", "rmi", "-f", "ross-bench-busybox"], capture_output=True)
        daemon.stop()
        daemon.cleanup()


if __name__ == "__main__":
    main()
