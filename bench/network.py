"""
Container networking, Ross next to docker (when a docker daemon answers):

  - ``run --rm busybox true`` on the default bridge (and Ross with
    ``--network none``, the cost of the bridge), median of N alternating runs;
  - published port, connections: HTTP GETs one after another to busybox
    httpd through ``-p`` on 127.0.0.1 and on the host's own address;
  - published port, throughput: MB/s of a stream sent into ``nc -l`` in the
    container through ``-p`` on 127.0.0.1 and on the host's address;
  - container to container on one bridge: MB/s of ``dd | nc`` (dd's figure).

    .venv/bin/python bench/network.py [--runs 20] [--requests 300] [--mb 300]
        [--private-host [--dockerd | --bare] [--ipv6]]

``--private-host`` runs it all in a network namespace of its own (a veth to
a second one stands for the outside world), so its firewall can be a docker
host's without touching the real one; ``--dockerd`` starts a private dockerd
there with its networking on, which sets FORWARD DROP as on a fresh host
(it turns forwarding on itself) and is the docker compared with.
``--bare`` turns br_netfilter off there, as on a host without docker.
``--ipv6`` makes both daemons' default bridges dual-stack and adds the IPv6
figures next to the IPv4 ones: [::1] and the host's IPv6 address through
``-p``, container to container by IPv6 address.

Ross publishes ports with DNAT in the kernel (127.0.0.1 included, and [::1]
where br_netfilter does not see bridged IPv6; where it does, as on a docker
host, the daemon answers [::1] itself); docker runs docker-proxy, a
userland copy, for loopback connections.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.containers import ROSS, docker_available, timed  # noqa: E402
from bench.dockerd import private_dockerd  # noqa: E402
from ross.testing.daemon import DaemonProcess  # noqa: E402
from ross.testing.images import docker_archive  # noqa: E402
from ross.testing.netns import PrivateHost  # noqa: E402


def host_address() -> str:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.connect(("192.0.2.254", 9))
        return str(s.getsockname()[0])
    finally:
        s.close()


def host_address6() -> str:
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        s.connect(("2001:db8:ffff::1", 9))
        return str(s.getsockname()[0])
    finally:
        s.close()


# The dual-stack bridges' IPv6 subnets, with --ipv6.
ROSS6, DOCKER6 = "fd0e:b:1::/64", "fd0e:b:2::/64"


def free_port() -> int:
    s = socket.socket()
    s.bind(("0.0.0.0", 0))
    port = int(s.getsockname()[1])
    s.close()
    return port


def get(address: str, port: int) -> bytes:
    with socket.create_connection((address, port), timeout=5) as s:
        s.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def wait_answer(address: str, port: int) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            if get(address, port).endswith(b"hello\n"):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer on {address}:{port}")
        time.sleep(0.05)


def connection_rate(address: str, port: int, n: int) -> float:
    wait_answer(address, port)
    t = time.perf_counter()
    for _ in range(n):
        get(address, port)
    return n / (time.perf_counter() - t)


def throughput(cli: list[str], env: dict[str, str] | None, image: str, name: str, mb: int,
               address: str = "127.0.0.1") -> float:
    port = free_port()
    subprocess.run(cli + ["run", "-d", "--name", name, "-p", f"{port}:5000", image, "sh", "-c", SINK],
                   env=env, check=True, capture_output=True)
    try:
        chunk = b"x" * (1 << 20)
        deadline = time.monotonic() + 20
        while True:
            # docker-proxy accepts before the container listens, then drops
            # the connection: a stream cut short starts over.
            try:
                with socket.create_connection((address, port), timeout=5) as s:
                    t = time.perf_counter()
                    for _ in range(mb):
                        s.sendall(chunk)
                    s.shutdown(socket.SHUT_WR)
                    s.recv(1)
                return mb * 1.048576 / (time.perf_counter() - t)
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        subprocess.run(cli + ["rm", "-f", name], env=env, capture_output=True)


# A sink for nc streams: nc -l again after each one, its stdin a FIFO held
# open (busybox nc drops the connection at EOF on stdin).
SINK = "mkfifo /f && exec 3<>/f && while true; do nc -l -p 5000 <&3 > /dev/null; done"


def throughput_between(cli: list[str], env: dict[str, str] | None, image: str, mb: int, field: str = "IPAddress",
                       name: str = "benchsink") -> float:
    """
    MB/s from one container to another on the default bridge, to its
    address C{field} of NetworkSettings: the time (busybox's, 10 ms steps)
    of dd | nc in the sender.
    """
    subprocess.run(cli + ["run", "-d", "--name", name, image, "sh", "-c", SINK],
                   env=env, check=True, capture_output=True)
    try:
        inspect = subprocess.run(cli + ["inspect", "-f", f"{{{{.NetworkSettings.{field}}}}}", name], env=env,
                                 check=True, capture_output=True, text=True)
        address = inspect.stdout.strip()
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection((address, 5000), timeout=2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        result = subprocess.run(
            cli + ["run", "--rm", image, "sh", "-c",
                   f"time sh -c 'dd if=/dev/zero bs=1M count={mb} | nc {address} 5000'"],
            env=env, capture_output=True, text=True, timeout=300)
        # "real\t0m 1.23s"
        real = next(line for line in result.stderr.splitlines() if line.startswith("real"))
        minutes, seconds = real.split()[1:3]
        return mb * 1.048576 / (int(minutes.rstrip("m")) * 60 + float(seconds.rstrip("s")))
    finally:
        subprocess.run(cli + ["rm", "-f", name], env=env, capture_output=True)


def measure(args: argparse.Namespace, docker_env: dict[str, str] | None, docker: bool) -> None:
    daemon = DaemonProcess(extra=["--ipv6", "--fixed-cidr-v6", ROSS6] if args.ipv6 else [])
    env = dict(os.environ, ROSS_HOST=daemon.address)
    ross = [ROSS]
    image = "ross-bench-busybox"
    try:
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar", tags=(f"{image}:latest",))
        subprocess.run(ross + ["load", "-i", str(archive.path)], env=env, check=True, capture_output=True)
        if docker:
            subprocess.run(["docker", "load", "-i", str(archive.path)], env=docker_env, check=True,
                           capture_output=True)

        # -- run latency
        kinds = {"ross bridge": (ross + ["run", "--rm", image, "true"], env),
                 "ross none": (ross + ["run", "--rm", "--network", "none", image, "true"], env)}
        if docker:
            kinds["docker bridge"] = (["docker", "run", "--rm", image, "true"], docker_env)
        times: dict[str, list[float]] = {k: [] for k in kinds}
        for _ in range(2):
            for argv, e in kinds.values():
                timed(argv, e)
        for _ in range(args.runs):
            for kind, (argv, e) in kinds.items():
                times[kind].append(timed(argv, e))
        print(f"run --rm {image} true, median of {args.runs}:")
        for kind, values in times.items():
            print(f"  {kind:14} {statistics.median(values) * 1e3:7.1f} ms  (min {min(values) * 1e3:.1f})")
        if docker:
            ratio = statistics.median(times["ross bridge"]) / statistics.median(times["docker bridge"])
            print(f"  ratio ross/docker (both on a bridge) = {ratio:.2f}")

        # -- published port: connections
        html = "echo hello > /index.html && exec httpd -f -p 80 -h /"
        addresses = ["127.0.0.1", host_address()] + (["::1", host_address6()] if args.ipv6 else [])
        rows: dict[str, list[float]] = {}
        clis = [("ross", ross, env)] + ([("docker", ["docker"], docker_env)] if docker else [])
        for label, cli, e in clis:
            port = free_port()
            subprocess.run(cli + ["run", "-d", "--name", "benchweb", "-p", f"{port}:80", image, "sh", "-c", html],
                           env=e, check=True, capture_output=True)
            try:
                rows[label] = [connection_rate(address, port, args.requests) for address in addresses]
            finally:
                subprocess.run(cli + ["rm", "-f", "benchweb"], env=e, capture_output=True)
        print(f"\npublished port, {args.requests} HTTP GETs one after another (connections/s):")
        table(addresses, rows, "{:.0f}")

        # -- published port: throughput
        print(f"\npublished port, {args.mb} MiB into nc -l (MB/s):")
        results = {label: [throughput(cli, e, image, "benchnc", args.mb, address) for address in addresses]
                   for label, cli, e in clis}
        table(addresses, results, "{:.0f}")

        # -- container to container
        print(f"\ncontainer to container on one bridge, {args.mb} MiB (MB/s):")
        fields = ["IPAddress"] + (["GlobalIPv6Address"] if args.ipv6 else [])
        between = {label: [throughput_between(cli, e, image, args.mb, field) for field in fields]
                   for label, cli, e in clis}
        table(["IPv4", "IPv6"][:len(fields)], between, "{:.0f}")
    finally:
        daemon.stop()
        daemon.cleanup()


def table(columns: list[str], rows: dict[str, list[float]], number: str) -> None:
    """
    Print C{rows} (label -> a figure per column), and ross/docker ratios
    when there are both.
    """
    widths = [max(10, len(c)) for c in columns]
    print("  " + " " * 8 + "".join(f" {c:>{w}}" for c, w in zip(columns, widths)))
    for label, values in rows.items():
        print(f"  {label:8}" + "".join(f" {number.format(v):>{w}}" for v, w in zip(values, widths)))
    if "ross" in rows and "docker" in rows:
        print(f"  {'ratio':8}" + "".join(f" {r / d:>{w}.2f}" for r, d, w in zip(rows["ross"], rows["docker"], widths))
              + "  (ross/docker)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--private-host", action="store_true", help="run in a network namespace of its own")
    parser.add_argument("--dockerd", action="store_true", help="with --private-host: start a dockerd there")
    parser.add_argument("--bare", action="store_true",
                        help="with --private-host: br_netfilter off there, as on a host without docker")
    parser.add_argument("--ipv6", action="store_true",
                        help="with --private-host: dual-stack bridges (Ross turns IPv6 forwarding on), IPv6 figures")
    parser.add_argument("--inside", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.dockerd and not args.private_host:
        parser.error("--dockerd changes the host's firewall: only with --private-host")
    if args.bare and (args.dockerd or not args.private_host):
        parser.error("--bare is a private host without docker: --private-host, not --dockerd")
    if args.ipv6 and not args.private_host:
        parser.error("--ipv6 turns the host's IPv6 forwarding on: only with --private-host")
    if args.private_host and not args.inside:
        host = PrivateHost()
        try:
            host.create()
            if args.bare:
                host.bridge_filtering(False)
            if args.dockerd:
                # A fresh docker host: dockerd turns forwarding on itself,
                # and so sets the FORWARD policy to DROP.
                host.run("sh", "-c", "echo 0 > /proc/sys/net/ipv4/ip_forward")
            subprocess.run(host.command(sys.executable, __file__, *sys.argv[1:], "--inside"), check=True)
        finally:
            host.destroy()
        return
    if args.dockerd:
        with private_dockerd(networking=True, ipv6=DOCKER6 if args.ipv6 else "") as docker_env:
            if isinstance(docker_env, str):
                raise SystemExit(docker_env)
            print("dockerd running here; FORWARD chain:\n  " + "\n  ".join(
                subprocess.run(["iptables", "-S", "FORWARD"], capture_output=True, text=True).stdout.splitlines()))
            measure(args, docker_env, True)
        return
    measure(args, None, docker_available())


if __name__ == "__main__":
    main()
