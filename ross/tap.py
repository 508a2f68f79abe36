# -*- test-case-name: ross.test.test_daemon -*-
"""
``twistd ross``: the daemon's options and service tree.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any, Callable, TypeVar

from twisted.python import usage

#: grpcio's I/O for the daemon's server: its older poller, not the
#: EventEngine that grpcio 1.80 turned on for Python. With the EventEngine
#: a message from a client crosses three threads before the gRPC loop sees
#: it (the EventEngine's poller, a worker that reads the socket, the aio
#: completion thread); with the poller, the completion thread reads it
#: itself. Measured with two daemons taking turns key by key: keystroke
#: echo on the gRPC path 1.10 against 1.25 ms on the unix socket, 1.36
#: against 1.50 ms over TCP and TLS; a unary call 479 against 529 us. A
#: GRPC_EXPERIMENTS the daemon is started with is kept as it is.
GRPC_EXPERIMENTS = "-event_engine_listener,-event_engine_for_all_other_endpoints"
os.environ.setdefault("GRPC_EXPERIMENTS", GRPC_EXPERIMENTS)

# Before anything imports protobuf: see ross.v1.defer_unused.
import ross.v1  # noqa: F401
from ross.errors import InvalidArgument

_F = TypeVar("_F", bound=Callable[..., Any])


def _install_reactor() -> None:
    """
    Install Twisted's epoll reactor without pyOpenSSL, unless one is
    installed already (twistd's --reactor, or a test's) or pyOpenSSL is
    loaded anyway.

    Twisted's TCP transports offer C{startTLS}, and for it importing the
    reactor imports pyOpenSSL and cryptography: 12 MiB of an idle daemon's
    memory and 20 ms of its start. Ross never calls C{startTLS} nor
    C{listenSSL}: where it speaks TLS through Twisted (the registry client,
    the Docker API's TCP listener) it wraps its protocol in
    C{TLSMemoryBIOFactory}, which imports pyOpenSSL when first used. So
    while the reactor is imported, pyOpenSSL cannot be: Twisted's modules
    are written for its absence and leave C{startTLS} out.
    """
    import sys

    if "twisted.internet.reactor" in sys.modules or "OpenSSL" in sys.modules:
        return
    sys.modules["OpenSSL"] = None  # type: ignore[assignment]
    try:
        from twisted.internet import epollreactor

        epollreactor.install()
    finally:
        del sys.modules["OpenSSL"]


_install_reactor()


def _without_collection(function: _F) -> _F:
    """
    C{function} (the daemon's making: only twistd calls it) runs with the
    cyclic collector off, and what it made leaves the collector's sight
    (as L{ross.services.memory.settle_gc} does once the daemon is up): its
    objects live as long as the daemon, and collecting while they are made
    (some 100 passes, 15-25 ms of an idle start, more under load) found
    nothing to free.
    """
    import functools
    import gc

    @functools.wraps(function)
    def run(*args: Any, **kwargs: Any) -> Any:
        enabled = gc.isenabled()
        gc.disable()
        try:
            return function(*args, **kwargs)
        finally:
            gc.freeze()
            if enabled:
                gc.enable()

    return run  # type: ignore[return-value]


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = "Run the Ross container engine daemon (run it with twistd -n)."

    optParameters = [
        ["root", None, "/var/lib/ross", "Persistent state: content, snapshots, metadata, logs."],
        ["exec-root", None, "/run/ross", "Runtime state: sockets and shim state."],
        ["tls-cert", None, None, "Server certificate (PEM) for TCP listeners."],
        ["tls-key", None, None, "Server private key (PEM)."],
        ["tls-ca", None, None, "CA (PEM) that client certificates must chain to; enables mutual TLS."],
        ["auth-token-file", None, None, "File holding the bearer token every client must send."],
        ["log-level", None, "info", "Lowest level logged: debug, info, warn, error."],
        ["cgroup-parent", None, "ross", "cgroup directory that container cgroups are created under."],
        ["bridge-name", None, "ross0", "Bridge device of the default network (docker's --bridge)."],
        ["bridge-subnet", None, "", "Subnet (CIDR) of the default network; default: the first free /16 from 10.88.0.0."],
        ["fixed-cidr-v6", None, "",
         "IPv6 subnet (CIDR) of the default network, with --ipv6; default: a /64 of a unique local prefix."],
        ["nft-table", None, "ross", "nftables table (family inet) holding Ross's NAT and isolation rules."],
        ["registry-certs-dir", None, "/etc/ross/certs.d",
         "Directory of per-registry CA certificates (HOST:PORT/ca.crt)."],
        ["userns-remap", None, "",
         "Run containers in user namespaces of their own, their ids those of the subordinate ranges of "
         "USER[:GROUP] (names or numbers), or of the user ross-remap, made when missing, for 'default'."],
        ["subuid-file", None, "/etc/subuid", "Subordinate uid ranges for --userns-remap (subuid(5))."],
        ["subgid-file", None, "/etc/subgid", "Subordinate gid ranges for --userns-remap (subgid(5))."],
        ["cni-conf-dir", None, "/etc/cni/net.d",
         "CNI network configuration of the CRI's pods (the first file by name); none there: Ross's bridge."],
        ["cni-bin-dir", None, "/opt/cni/bin:/usr/lib/cni", "Directories (':'-separated) holding CNI plugins."],
        ["cri-stream-address", None, "127.0.0.1",
         "IP[:PORT] (loopback) of the CRI's streaming server for exec, attach and port-forward; "
         "no port or 0: any free port."],
    ]

    optFlags = [
        ["ipv6", None, "IPv6 on the default network too (docker's --ipv6)."],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []
        self["docker-listen"] = []
        self["cri-listen"] = []
        self["insecure-registry"] = []
        self["registry-mirror"] = []

    def opt_listen(self, address: str) -> None:
        """
        Address to serve the API on: unix:///path or tcp://HOST:PORT
        (repeatable; default unix:///run/ross/ross.sock).
        """
        self["listen"].append(address)

    def opt_docker_listen(self, address: str) -> None:
        """
        Address to serve docker's Engine API on: unix:///path or
        tcp://HOST:PORT (repeatable; default docker.sock in --exec-root,
        unix:///run/ross/docker.sock; 'none' turns it off).
        """
        self["docker-listen"].append(address)

    def opt_cri_listen(self, address: str) -> None:
        """
        Unix socket to serve Kubernetes' CRI on: unix:///path (repeatable;
        default cri.sock in --exec-root, unix:///run/ross/cri.sock; 'none'
        turns it off). The CRI asks for no token: keep its socket root's.
        """
        self["cri-listen"].append(address)

    def opt_insecure_registry(self, host: str) -> None:
        """
        Registry (HOST:PORT) to reach over plain HTTP (repeatable).
        """
        self["insecure-registry"].append(host)

    def opt_registry_mirror(self, pair: str) -> None:
        """
        REGISTRY=HOST:PORT: pull REGISTRY's images from the registry at
        HOST:PORT instead, the repository path kept and the names as asked
        (containerd's mirrors; repeatable). Pushes go where they name.
        """
        registry, sep, mirror = pair.partition("=")
        if not sep or not registry or not mirror or "/" in registry + mirror:
            raise usage.UsageError(f"invalid --registry-mirror {pair!r}: use REGISTRY=HOST:PORT")
        self["registry-mirror"].append((registry, mirror))

    def postOptions(self) -> None:
        from ross.address import DEFAULT_LISTEN, parse_listen, parse_stream_address
        from ross.services.grpc_server import TLSFiles

        self._twistd_options()
        if self["log-level"] not in ("debug", "info", "warn", "error"):
            raise usage.UsageError(f"invalid --log-level {self['log-level']!r}: use debug, info, warn or error")
        try:
            self["listeners"] = [parse_listen(a) for a in (self["listen"] or [DEFAULT_LISTEN])]
            self["docker-listeners"] = self._optional_listeners("docker-listen", "the Docker API")
            self["cri-listeners"] = self._optional_listeners("cri-listen", "the CRI")
            for listener in self["cri-listeners"] or ():
                if listener.scheme != "unix":
                    # As containerd's: a kubelet brings no token, so the
                    # socket's mode is the CRI's only guard.
                    raise InvalidArgument(f"--cri-listen {listener}: the CRI is served on unix sockets only")
            self["cri-stream"] = parse_stream_address(self["cri-stream-address"])
        except InvalidArgument as e:
            raise usage.UsageError(str(e))
        if bool(self["tls-cert"]) != bool(self["tls-key"]):
            raise usage.UsageError("--tls-cert and --tls-key go together")
        if self["tls-ca"] and not self["tls-cert"]:
            raise usage.UsageError("--tls-ca needs --tls-cert and --tls-key")
        tls = None
        if self["tls-cert"]:
            tls = TLSFiles(
                cert=_read(self["tls-cert"], "--tls-cert"),
                key=_read(self["tls-key"], "--tls-key", secret=True),
                ca=_read(self["tls-ca"], "--tls-ca") if self["tls-ca"] else None,
            )
        self["tls"] = tls
        for listener in [*self["listeners"], *(self["docker-listeners"] or ())]:
            if listener.scheme == "tcp" and not listener.is_loopback and tls is None:
                raise usage.UsageError(
                    f"refusing to listen on {listener} without TLS: anyone who can reach it "
                    "would control this host; give --tls-cert and --tls-key"
                )
        from ross.engine.network.manager import NetworkConfig, check_device_name, check_table_name
        from ross.engine.network.ipam import parse_subnet

        try:
            check_device_name(self["bridge-name"], "--bridge-name")
            check_table_name(self["nft-table"])
            if self["bridge-subnet"]:
                parse_subnet(self["bridge-subnet"])
            if self["fixed-cidr-v6"]:
                if not self["ipv6"]:
                    raise InvalidArgument("--fixed-cidr-v6 needs --ipv6")
                parse_subnet(self["fixed-cidr-v6"], 6)
        except InvalidArgument as e:
            raise usage.UsageError(str(e))
        self["network"] = NetworkConfig(bridge=self["bridge-name"], subnet=self["bridge-subnet"],
                                        table=self["nft-table"], ipv6=bool(self["ipv6"]),
                                        subnet6=self["fixed-cidr-v6"])
        self["token"] = None
        if self["auth-token-file"]:
            token = _read(self["auth-token-file"], "--auth-token-file", secret=True).decode().strip()
            if not token:
                raise usage.UsageError(f"--auth-token-file {self['auth-token-file']} is empty")
            self["token"] = token

    def _twistd_options(self) -> None:
        """
        What of twistd's own options (given before C{ross}) the daemon
        heeds. It runs in the foreground, as dockerd and containerd do:
        twistd daemonizes by forking after the service is made, and the
        daemon's threads, child processes (the spare shims) and directory
        locks would be left in the parent that exits. Its logging replaces
        twistd's (for --log-level), so it takes twistd's --logfile and
        --syslog over.
        """
        twistd = self.parent
        self["logfile"] = self["syslog-prefix"] = None
        if twistd is None or "nodaemon" not in twistd:
            return
        if not (twistd["nodaemon"] or twistd.get("debug")):
            raise usage.UsageError(
                "Ross runs in the foreground, as dockerd does: start it with 'twistd -n ross' "
                "(a service manager such as systemd keeps it in the background)")
        self["logfile"] = twistd.get("logfile")
        if twistd.get("syslog"):
            self["syslog-prefix"] = twistd["prefix"]

    def _optional_listeners(self, option: str, what: str) -> Any:
        """
        The listeners of --docker-listen or --cri-listen (C{option}): None
        for the default (a socket in --exec-root), none for "none".
        """
        from ross.address import parse_listen

        given = self[option]
        if not given:
            return None
        if "none" in given:
            if len(given) > 1:
                raise InvalidArgument(f"--{option} none turns {what} off: give no other address")
            return []
        return [parse_listen(a) for a in given]


def _read(path: str, flag: str, secret: bool = False) -> bytes:
    """
    The contents of C{path}; a C{secret} (a key, a token) that other users
    can read is refused, as ssh refuses such a key: anyone who read it
    could control this host.
    """
    try:
        with open(path, "rb") as f:
            mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
            if secret and mode & 0o077:
                raise usage.UsageError(
                    f"{flag} {path} is open to other users (mode {mode:04o}): make it 0600")
            return f.read()
    except OSError as e:
        raise usage.UsageError(f"cannot read {flag} {path}: {e.strerror}")


@_without_collection
def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from ross.engine.reactors import engine_reactor
    from ross.services.daemon import ClaimError, claim_directory
    from ross.services.wiring import build_daemon

    # Before anything is created: whatever the daemon and the shims and
    # helpers it spawns write without an explicit mode is theirs alone
    # (containers set their own umask). An explicit twistd --umask, applied
    # after this, would loosen only that: the state has explicit modes.
    os.umask(0o077)
    from ross.services.memory import cap_arenas

    cap_arenas()
    remap = None
    if options["userns-remap"]:
        from ross.engine.runtime.userns import RemapError, resolve_remap

        try:
            remap = resolve_remap(options["userns-remap"], options["subuid-file"], options["subgid-file"])
        except RemapError as e:
            raise SystemExit(f"ross: --userns-remap: {e}")
    root = Path(options["root"]).absolute()
    exec_root = Path(options["exec-root"]).absolute()
    try:
        locks = [claim_directory(root, "--root"), claim_directory(exec_root, "--exec-root")]
    except ClaimError as e:
        raise SystemExit(f"ross: {e}")
    daemon = build_daemon(
        engine_reactor(reactor),
        root=root,
        exec_root=exec_root,
        listeners=options["listeners"],
        tls=options["tls"],
        token=options["token"],
        cgroup_parent=options["cgroup-parent"],
        insecure_registries=tuple(options["insecure-registry"]),
        registry_certs_dir=Path(options["registry-certs-dir"]),
        log_level=options["log-level"],
        log_file=options["logfile"],
        syslog_prefix=options["syslog-prefix"],
        network=options["network"],
        userns_remap=remap,
        docker_listeners=options["docker-listeners"],
        cri_listeners=options["cri-listeners"],
        registry_mirrors=tuple(options["registry-mirror"]),
        cni_conf_dir=options["cni-conf-dir"],
        cni_bin_dirs=tuple(d for d in options["cni-bin-dir"].split(":") if d),
        cri_stream_address=options["cri-stream"],
    )
    daemon.locks = locks
    # Last: the start-up's objects leave the collector's sight once the
    # daemon is up, and its free memory goes back once it is quiet.
    from ross.services.memory import MemoryTrim, settle_gc

    MemoryTrim(reactor, settle=settle_gc).setServiceParent(daemon)
    return daemon
