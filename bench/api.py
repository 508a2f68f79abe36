"""
API latency: Ping through the daemon's reactor over the unix socket and over
TCP with TLS, with 1 and 32 concurrent clients; ``ross version`` wall time
next to ``docker version`` (when a docker daemon answers).

    .venv/bin/python bench/api.py [--calls N]

Targets (issue 2): Ping p50 < 1 ms and p99 < 5 ms at 32 clients on the unix
socket; ``ross version`` < 150 ms (median of 10).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ross.testing import certs  # noqa: E402
from ross.testing.daemon import DaemonProcess, short_tempdir  # noqa: E402


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p / 100))]


CLIENT = r"""
import asyncio, random, sys, time, grpc
from ross.v1 import system_pb2, system_pb2_grpc
target, clients, calls, rate = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
tls = sys.argv[5:]

def channel():
    if tls:
        ca, key, cert = (open(p, "rb").read() for p in tls)
        return grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(ca, key, cert))
    return grpc.aio.insecure_channel(target)

async def client(stub, out):
    if rate:
        # Spread the clients over the period so they do not fire in lockstep.
        await asyncio.sleep(random.random() / rate)
    next_at = time.perf_counter()
    for _ in range(calls):
        if rate:
            next_at += 1.0 / rate
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        t = time.perf_counter()
        await stub.Ping(system_pb2.PingRequest())
        out.append(time.perf_counter() - t)

async def main():
    channels = [channel() for _ in range(clients)]
    stubs = [system_pb2_grpc.SystemServiceStub(c) for c in channels]
    for stub in stubs:
        await stub.Ping(system_pb2.PingRequest())
    out = []
    start = time.perf_counter()
    await asyncio.gather(*(client(stub, out) for stub in stubs))
    elapsed = time.perf_counter() - start
    print(elapsed, " ".join("%.7f" % x for x in out))

asyncio.run(main())
"""


def ping_latencies(target: str, tls: list[str], clients: int, calls: int, rate: float) -> tuple[list[float], float]:
    """
    C{clients} concurrent clients, each on its own channel (connection),
    each making C{calls} Pings paced at C{rate} per second (0: back to
    back). They run in one asyncio process: 32 Python processes on two
    cores would measure the scheduler, not the daemon. Returns the
    latencies and the calls/second achieved.
    """
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    out = subprocess.run([sys.executable, "-c", CLIENT, target, str(clients), str(calls), str(rate), *tls],
                         capture_output=True, env=env, check=True).stdout.split()
    elapsed, latencies = float(out[0]), [float(x) for x in out[1:]]
    return latencies, len(latencies) / elapsed


def wall(command: list[str], env: dict[str, str], runs: int = 10) -> float | None:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        result = subprocess.run(command, env=env, capture_output=True)
        times.append(time.perf_counter() - t)
        if result.returncode != 0:
            return None
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=500)
    args = parser.parse_args()

    base = short_tempdir("ross-bench-")
    ca = certs.authority()
    cert, key = ca.issue("ross", server=True).write(base, "server")
    client_cert, client_key = ca.issue("bench").write(base, "client")
    (base / "ca.pem").write_bytes(ca.pem)
    daemon = DaemonProcess(base=base, extra=[
        "--listen", "tcp://127.0.0.1:23761", "--tls-cert", cert, "--tls-key", key, "--tls-ca", str(base / "ca.pem"),
    ])
    try:
        daemon.start()
        transports = [
            ("unix", f"unix:{daemon.socket}", []),
            ("tcp+mtls", "localhost:23761", [str(base / "ca.pem"), client_key, client_cert]),
        ]
        print("Ping, each client on its own connection; 'rate' is calls/s per client (max = back to back)")
        print(f"{'transport':<10}{'clients':>8}{'rate':>6}{'calls':>7}{'p50 ms':>9}{'p99 ms':>9}{'total/s':>9}")
        for name, target, tls in transports:
            for clients, rate in ((1, 0), (32, 0), (32, 10)):
                lat, throughput = ping_latencies(target, tls, clients,
                                                 args.calls if clients == 1 else (100 if rate == 0 else 50), rate)
                print(f"{name:<10}{clients:>8}{rate or 'max':>6}{len(lat):>7}{percentile(lat, 50) * 1e3:>9.3f}"
                      f"{percentile(lat, 99) * 1e3:>9.3f}{throughput:>9.0f}")

        env = dict(os.environ, ROSS_HOST=daemon.address)
        ross_bin = os.path.join(os.path.dirname(sys.executable), "ross")
        ross_version = wall([ross_bin, "version"], env)
        print(f"\nross version: median of 10 = {ross_version * 1e3:.1f} ms" if ross_version else "ross version failed")
        docker = shutil.which("docker")
        docker_version = wall([docker, "version"], dict(os.environ)) if docker else None
        if docker_version and ross_version:
            print(f"docker version: median of 10 = {docker_version * 1e3:.1f} ms; "
                  f"ratio ross/docker = {ross_version / docker_version:.2f}")
        else:
            print("docker version: no docker daemon answering; no comparison")
    finally:
        daemon.stop()
        daemon.cleanup()


if __name__ == "__main__":
    main()
