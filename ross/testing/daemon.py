"""
Daemons for tests: an in-process one on the test's reactor, and a real
``twistd -n ross`` process.

Both use private roots and short socket paths under /tmp (unix socket paths
are limited to 108 bytes, too short for trial's temp directories).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, TypeVar

import attrs
import grpc
from twisted.internet import reactor as global_reactor
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThread

from ross.address import parse_listen
from ross.engine.fsutil import remove_tree
from ross.engine.reactors import engine_reactor
from ross.v1 import (
    container_pb2_grpc,
    image_pb2_grpc,
    network_pb2_grpc,
    snapshot_pb2_grpc,
    system_pb2_grpc,
    volume_pb2_grpc,
)

T = TypeVar("T")

REPO = Path(__file__).resolve().parent.parent.parent


def test_network(name: str, prefix: int = 24) -> Any:
    """
    Networking settings of a test daemon: its own bridge, nftables table,
    subnet (a free /C{prefix} of 10.240.0.0/12, at most a /20) and device
    name prefixes, so it never touches the default ross0, docker's bridge
    or another daemon's, and its leak checks see only what it made.
    """
    import ipaddress
    import random

    from ross.engine.network import netlink
    from ross.engine.network.ipam import choose_subnet
    from ross.engine.network.manager import NetworkConfig

    tag = os.urandom(4).hex()
    taken = netlink.routed_networks()
    pool = list(ipaddress.IPv4Network("10.240.0.0/12").subnets(new_prefix=20))
    subnet = choose_subnet(taken, random.choice(pool), prefix)
    return NetworkConfig(bridge=f"rt{tag}", subnet=str(subnet), table=f"rosstest_{tag}",
                         link_prefix=f"rv{tag[:3]}", bridge_prefix=f"rb{tag[:3]}")


#: Options of a channel to a daemon that is starting: it tries again every
#: 10 ms. With grpcio's default back-off (1 s, then 1.6 s, ...) a daemon
#: that answers 0.45 s after its start is seen after 1 s.
RETRY_OFTEN = [("grpc.initial_reconnect_backoff_ms", 10), ("grpc.min_reconnect_backoff_ms", 10),
               ("grpc.max_reconnect_backoff_ms", 10)]


def short_tempdir(prefix: str = "ross-", parent: str | Path = "/tmp") -> Path:
    """
    A fresh directory with a short path (in C{parent}), for sockets.
    """
    return Path(tempfile.mkdtemp(prefix=prefix, dir=parent))


#: Deadline of a test's gRPC call that names none: a call blocks a thread,
#: which trial's own timeout cannot stop, so every one must end by itself.
DEFAULT_DEADLINE = 120.0


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: Any
    wait_for_ready: Any
    compression: Any


class _DefaultDeadline(grpc.UnaryUnaryClientInterceptor,
                       grpc.UnaryStreamClientInterceptor,
                       grpc.StreamUnaryClientInterceptor,
                       grpc.StreamStreamClientInterceptor):
    """
    Gives every call without a deadline L{DEFAULT_DEADLINE}.
    """

    def _bounded(self, details: Any) -> Any:
        if details.timeout is not None:
            return details
        return _Details(details.method, DEFAULT_DEADLINE, details.metadata, details.credentials,
                        getattr(details, "wait_for_ready", None), getattr(details, "compression", None))

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._bounded(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._bounded(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._bounded(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(self._bounded(details), requests)


def bounded(channel: grpc.Channel) -> grpc.Channel:
    """
    C{channel}, with L{DEFAULT_DEADLINE} on every call that sets none.
    """
    return grpc.intercept_channel(channel, _DefaultDeadline())


class Clients:
    """
    Stubs of every service over one channel (every call bounded: see
    L{bounded}).
    """

    def __init__(self, channel: grpc.Channel) -> None:
        channel = bounded(channel)
        self.channel = channel
        self.system = system_pb2_grpc.SystemServiceStub(channel)
        self.containers = container_pb2_grpc.ContainerServiceStub(channel)
        self.images = image_pb2_grpc.ImageServiceStub(channel)
        self.snapshots = snapshot_pb2_grpc.SnapshotterServiceStub(channel)
        self.volumes = volume_pb2_grpc.VolumeServiceStub(channel)
        self.networks = network_pb2_grpc.NetworkServiceStub(channel)


class InProcessDaemon:
    """
    The whole daemon running on the test's reactor, serving a unix socket.
    Blocking gRPC calls must run in threads: use L{call}.

    Start it with C{yield daemon.start()} in a test (or setUp) and it stops
    itself in cleanup; C{root} and C{exec_root} are private temporary
    directories, removed afterwards.
    """

    def __init__(self, testcase: Any, reactor: Any = None, **options: Any) -> None:
        self.reactor = reactor or global_reactor
        self.testcase = testcase
        self.base = short_tempdir()
        self.root = self.base / "root"
        self.exec_root = self.base / "run"
        self.socket = str(self.exec_root / "ross.sock")
        self.address = f"unix://{self.socket}"
        self.options = options
        self.daemon: Any = None
        self._channels: list[grpc.Channel] = []

    def start(self) -> Deferred[None]:
        from ross.services.wiring import build_daemon

        options = dict(self.options)
        listeners = options.pop("listeners", None) or [parse_listen(self.address)]
        # More addresses beside the unix socket (tcp://127.0.0.1:0: any free port).
        listeners += [parse_listen(a) for a in options.pop("also_listen", ())]
        options.setdefault("cgroup_parent", f"ross-test-{os.getpid()}-{self.base.name}")
        options.setdefault("network", test_network(self.base.name))
        # Pods on the test's bridge unless a test configures CNI: what the
        # host has in /etc/cni/net.d is not the test's.
        options.setdefault("cni_conf_dir", str(self.base / "cni"))
        self.network = options["network"]
        self.daemon = build_daemon(
            engine_reactor(self.reactor),
            root=self.root,
            exec_root=self.exec_root,
            listeners=listeners,
            **options,
        )
        self.testcase.addCleanup(self.stop)
        self.daemon.startService()
        return self.daemon.started

    @property
    def engine(self) -> Any:
        return self.daemon.engine

    def stop(self) -> Deferred[None]:
        for channel in self._channels:
            channel.close()
        self._channels = []
        d: Deferred[None] = self.daemon.stopService() if self.daemon.running else succeed(None)

        def remove(result: Any) -> Any:
            from ross.engine.network.cleanup import purge
            from ross.testing.leaks import remove_cgroup_parent

            purge(self.root, self.network)
            remove_tree(self.base, ignore_errors=True)
            remove_cgroup_parent(self.daemon.engine.config.cgroup_parent)
            return result

        return d.addBoth(remove)

    def clients(self, address: str | None = None, credentials: grpc.ChannelCredentials | None = None,
                options: list[tuple[str, Any]] | None = None) -> Clients:
        """
        Stubs over a new channel to the daemon (closed at cleanup).
        """
        target = parse_listen(address or self.address).grpc_address
        if credentials is None:
            channel = grpc.insecure_channel(target, options or [])
        else:
            channel = grpc.secure_channel(target, credentials, options or [])
        self._channels.append(channel)
        return Clients(channel)

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> Deferred[T]:
        """
        Run a blocking client call in a thread.
        """
        return deferToThread(fn, *args, **kwargs)


class DaemonProcess:
    """
    A real ``twistd -n ross`` in a child process, for tests of the daemon as
    users run it: start-up, signals, locks, restarts.
    """

    def __init__(self, base: Path | None = None, extra: list[str] | None = None, netns: str = "",
                 own_session: bool = False, token: str = "") -> None:
        """
        @param token: the bearer token every client must send
            (C{--auth-token-file}).
        @param netns: a named network namespace (ip netns) to run the daemon
            in instead of the host's.
        @param own_session: start it in a session of its own, so that a
            Ctrl-C in the terminal reaches only the program that started it,
            which can then remove its containers before stopping it (the
            bench).
        """
        self.netns = netns
        self.own_session = own_session
        self.base = base or short_tempdir()
        self.root = self.base / "root"
        self.exec_root = self.base / "run"
        self.socket = str(self.exec_root / "ross.sock")
        self.address = f"unix://{self.socket}"
        self.extra = extra or []
        self.token = token
        if token:
            token_file = self.base / "token"
            token_file.write_text(token + "\n")
            token_file.chmod(0o600)
            self.extra += ["--auth-token-file", str(token_file)]
        # twistd takes no device prefixes: the daemon uses the defaults.
        self.network = attrs.evolve(test_network(self.base.name), link_prefix="vr", bridge_prefix="br-")
        self.log = self.base / "daemon.log"
        #: twistd's own options, before C{ross}.
        self.twistd = ["--pidfile=", "-n"]
        self.process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        enter = ["nsenter", f"--net=/run/netns/{self.netns}"] if self.netns else []
        return [
            *enter, os.path.join(os.path.dirname(sys.executable), "twistd"), *self.twistd, "ross",
            "--root", str(self.root), "--exec-root", str(self.exec_root),
            "--listen", self.address,
            "--cgroup-parent", f"ross-test-{self.base.name}",
            "--bridge-name", self.network.bridge, "--bridge-subnet", self.network.subnet,
            "--nft-table", self.network.table,
            "--cni-conf-dir", str(self.base / "cni"),
            *self.extra,
        ]

    def spawn(self) -> subprocess.Popen[bytes]:
        """
        Start the daemon without waiting for it.
        """
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                            start_new_session=self.own_session)
        return self.process

    def start(self, timeout: float = 20.0) -> None:
        """
        Start the daemon and wait (blocking: call it in a thread from trial
        tests) until it answers Ping.
        """
        self.spawn()
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 20.0) -> None:
        from ross.v1 import system_pb2

        deadline = time.monotonic() + timeout
        channel = grpc.insecure_channel(f"unix:{self.socket}", options=RETRY_OFTEN)
        try:
            stub = system_pb2_grpc.SystemServiceStub(channel)
            while True:
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"daemon exited with {self.process.returncode}:\n{self.read_log()}")
                try:
                    stub.Ping(system_pb2.PingRequest(), timeout=1,
                              metadata=[("authorization", f"Bearer {self.token}")] if self.token else None)
                    return
                except grpc.RpcError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"daemon not ready after {timeout}s:\n{self.read_log()}")
                    time.sleep(0.05)
        finally:
            channel.close()

    def read_log(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self, timeout: float = 30.0) -> int:
        """
        SIGTERM and wait; returns the exit status.
        """
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else 0
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise RuntimeError(f"daemon ignored SIGTERM for {timeout}s:\n{self.read_log()}")

    def kill(self, timeout: float = 30.0) -> None:
        """
        SIGKILL and reap (a process stuck in the kernel can outlive even
        that: then this fails rather than hang the suite).
        """
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout)

    def cleanup(self) -> None:
        """
        Kill the daemon and take away everything it made, containers still
        running included (their shims outlive a daemon by design).
        """
        from ross.testing.leaks import sweep

        if self.process is not None and self.process.poll() is None:
            self.kill()
        sweep(self.base, f"ross-test-{self.base.name}")
        self.purge()
        remove_tree(self.base, ignore_errors=True)

    def purge(self) -> None:
        """
        Remove what the daemon's networks left (links, table, firewall
        rules) in its network namespace (blocking).
        """
        from ross.engine.network.cleanup import purge

        if not self.netns:
            purge(self.root, self.network)
            return
        code = ("import sys; from pathlib import Path; from ross.engine.network.cleanup import purge; "
                "from ross.engine.network.manager import NetworkConfig; "
                "purge(Path(sys.argv[1]), NetworkConfig(bridge=sys.argv[2], subnet=sys.argv[3], table=sys.argv[4]))")
        subprocess.run(["nsenter", f"--net=/run/netns/{self.netns}", sys.executable, "-c", code, str(self.root),
                        self.network.bridge, self.network.subnet, self.network.table],
                       check=True, capture_output=True, timeout=60, env=dict(os.environ, PYTHONPATH=str(REPO)))

    def ross(self, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
             timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
        """
        Run the ``ross`` CLI against this daemon (blocking).
        """
        return run_cli(self.address, *args, input=input, env=env, timeout=timeout)


def run_cli(address: str, *args: str, input: bytes | None = None, env: dict[str, str] | None = None,
            timeout: float = 60.0) -> subprocess.CompletedProcess[bytes]:
    """
    Run the ``ross`` CLI as a user would (a child process), blocking.
    """
    full_env = dict(os.environ, ROSS_HOST=address, PYTHONPATH=str(REPO))
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "ross.cli.main", *args],
        input=input, capture_output=True, env=full_env, timeout=timeout,
    )
