# -*- test-case-name: ross.test.test_network_ports -*-
"""
Published ports: the container's port mappings from its -p and -P, and the
host ports held for them.

Host ports are reserved by sockets bound (not listening) in the daemon, as
docker's proxy does: another program cannot take a published port, and a
conflict is refused at start. Traffic itself never goes through the daemon
(see L{ross.engine.network.nft}), but for [::1], which the kernel may not
DNAT: a socket that sees it listens and proxies (see
L{ross.protocols.portproxy}).
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Iterable, Mapping

import attrs

from ross.engine.containers.config import host_port_range
from ross.engine.network import ipam
from ross.engine.network.store import Endpoint, Network, PortMapping
from ross.engine.reactors import IEngineReactor
from ross.errors import FailedPrecondition, InvalidArgument
from ross.protocols.portproxy import Proxy

# Ephemeral ports tried for a port published on IPv4 and IPv6 at once.
EPHEMERAL_TRIES = 16
# Where a socket sees connections to [::1] (what the kernel may not DNAT).
_LOOPBACK6 = (ipaddress.IPv6Address("::"), ipaddress.IPv6Address("::1"))


class PortReservations:
    """
    The sockets that hold each container's published host ports.

    @param networks: the networks by ID, as the network manager keeps them
        (a port's IP versions depend on its endpoint's network).
    """

    def __init__(self, reactor: IEngineReactor, networks: Mapping[str, Network]) -> None:
        self._reactor = reactor
        self._networks = networks
        self._held: dict[str, list[_Held]] = {}

    def reserve_all(self, cid: str, endpoints: Iterable[Endpoint]) -> list[Endpoint]:
        """
        Bind a socket for every published port of C{endpoints}, instead of
        what container C{cid} held (ephemeral ones get their number); the
        endpoints with the numbers. FailedPrecondition when one is taken:
        those bound before it stay held until L{unreserve}.
        """
        self.unreserve(cid)
        self._held[cid] = []
        result = []
        for e in endpoints:
            ports = [self.reserve(cid, p, e) if published(p) else p for p in e.ports]
            result.append(attrs.evolve(e, ports=tuple(ports)))
        return result

    def reserve(self, cid: str, p: PortMapping, endpoint: Endpoint) -> PortMapping:
        """
        Bind the sockets that hold published port C{p} of container C{cid}'s
        C{endpoint}: one per IP version it is published on, the same number
        for both, an IPv6 one that covers [::1] proxying to the container;
        the mapping with its number. FailedPrecondition when it is taken.
        """
        if p.proto == "sctp":
            # Not reserved (no SCTP sockets everywhere); the rule still applies.
            return attrs.evolve(p, host_port=p.host_port if p.host_port > 0 else _free_port(), host_port_end=0)
        held = self._held.setdefault(cid, [])
        network = self._networks[endpoint.network_id]
        hosts = [bind_host(p.host_ip, version) for version in families(p, network, bool(endpoint.address6))]
        wanted = f"{p.host_port}-{p.host_port_end}" if p.host_port_end else str(p.host_port)
        shown = _host_text(hosts[0])
        if p.host_port_end:
            candidates: Iterable[int] = range(p.host_port, p.host_port_end + 1)
        elif p.host_port > 0:
            candidates = [p.host_port]
        else:
            # Ephemeral: the kernel's choice for the first version may be
            # taken in the other; another choice then.
            candidates = [0] * EPHEMERAL_TRIES
        kind = socket.SOCK_DGRAM if p.proto == "udp" else socket.SOCK_STREAM
        for candidate in candidates:
            sockets: list[socket.socket] = []
            try:
                for host in hosts:
                    sockets.append(_bound(host, sockets[0].getsockname()[1] if sockets else candidate, kind))
            except OSError as e:
                # The message names the address that failed, not the first.
                shown = _host_text(hosts[len(sockets)])
                for s in sockets:
                    s.close()
                if e.errno == errno.EADDRINUSE:
                    continue
                if e.errno == errno.EADDRNOTAVAIL:
                    raise FailedPrecondition(
                        f"Bind for {shown}:{wanted} failed: {p.host_ip} is not an address of this host") from None
                raise FailedPrecondition(f"Bind for {shown}:{wanted} failed: {e.strerror}") from None
            for s in sockets:
                proxy = None
                if s.family == socket.AF_INET6 and ipaddress.ip_address(s.getsockname()[0]) in _LOOPBACK6:
                    proxy = Proxy(self._reactor, s, endpoint.address6, p.port)
                held.append(_Held(s, proxy))
            return attrs.evolve(p, host_port=sockets[0].getsockname()[1], host_port_end=0)
        raise FailedPrecondition(f"Bind for {shown}:{wanted} failed: port is already allocated")

    def close(self, cid: str, p: PortMapping) -> None:
        """
        Let go of the sockets that hold container C{cid}'s published port
        C{p}.
        """
        kind = socket.SOCK_DGRAM if p.proto == "udp" else socket.SOCK_STREAM
        hosts = {ipaddress.ip_address(bind_host(p.host_ip, version)) for version in (4, 6)}
        held = self._held.get(cid, [])
        for h in list(held):
            host, port = h.sock.getsockname()[:2]
            if h.sock.type == kind and port == p.host_port and ipaddress.ip_address(host) in hosts:
                held.remove(h)
                h.close()

    def unreserve(self, cid: str) -> None:
        """
        Let go of every host port container C{cid} holds.
        """
        for h in self._held.pop(cid, []):
            h.close()

    def unreserve_all(self) -> None:
        """
        Let go of every host port held.
        """
        for cid in list(self._held):
            self.unreserve(cid)


@attrs.define
class _Held:
    """
    A socket that holds a published port, and the proxy answering [::1]
    on it.
    """

    sock: socket.socket
    proxy: Proxy | None = None

    def close(self) -> None:
        if self.proxy is not None:
            self.proxy.stop()
        self.sock.close()


def _bound(host: str, port: int, kind: int) -> socket.socket:
    """
    A socket of type C{kind} bound to C{host} (IPv4 or IPv6 only) port
    C{port}; OSError when it cannot be. A TCP one that sees [::1] serves
    the proxy: it listens at once, and may be bound while connections the
    proxy closed linger in TIME_WAIT (a daemon restarted moments after
    serving one could not otherwise take its containers' ports back);
    listening, it still keeps every other socket off the port.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, kind)
    proxied = family == socket.AF_INET6 and kind == socket.SOCK_STREAM and ipaddress.ip_address(host) in _LOOPBACK6
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if proxied:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        if proxied:
            s.listen(128)
    except BaseException:
        s.close()
        raise
    return s


def families(p: PortMapping, network: Network, has6: bool) -> list[int]:
    """
    The IP versions port C{p} is published on for a container on
    C{network} (C{has6}: with an IPv6 address there): every address of the
    host means both for a container with IPv6. InvalidArgument for an IPv6
    address for one without.
    """
    if not p.host_ip:
        return [4, 6] if has6 else [4]
    version = ipaddress.ip_address(p.host_ip).version
    if version == 6 and not has6:
        why = (f"network {network.name} has no IPv6" if not network.subnet6 else
               f"the container has no IPv6 address on network {network.name} (it started before the network had "
               "IPv6): restart it")
        raise InvalidArgument(f"{why}: ports cannot be published on {p.host_ip}")
    return [version]


def bind_host(host_ip: str, version: int) -> str:
    """
    The address a port published on C{host_ip} is held on in IP
    C{version}: C{host_ip} itself, or every address.
    """
    return host_ip or ("0.0.0.0" if version == 4 else "::")


def _host_text(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def published(p: PortMapping) -> bool:
    """
    Whether C{p} is published on the host (not only exposed).
    """
    return p.host_port != 0


def port_mappings(bindings: Iterable[tuple[str, str, str]], publish_all: bool,
                  exposed: Iterable[str]) -> list[PortMapping]:
    """
    The container's ports from its -p bindings (container port "80/tcp",
    host IP, host port; an empty or "0" host port asks for an ephemeral
    one), -P (every exposed port gets an ephemeral one) and the ports it
    exposes without publishing them. InvalidArgument for a bad spec.
    """
    result: list[PortMapping] = []
    bound = set()
    for container_port, host_ip, host_port in bindings:
        port, proto = ipam.parse_port(container_port)
        first, last = host_port_range(host_port) if host_port else (0, 0)
        if host_ip:
            try:
                # One spelling per address: mappings are compared by it.
                host_ip = str(ipaddress.ip_address(host_ip.strip("[]")))
            except ValueError:
                raise InvalidArgument(f"invalid host IP {host_ip[:64]!r}: not an IP address") from None
        result.append(PortMapping(port, proto, host_ip, first or -1, last if last > first else 0))
        bound.add((port, proto))
    for spec in sorted(set(exposed), key=lambda s: ipam.parse_port(s)):
        port, proto = ipam.parse_port(spec)
        if (port, proto) not in bound:
            result.append(PortMapping(port, proto, "", -1 if publish_all else 0))
            bound.add((port, proto))
    return result


def _free_port() -> int:
    s = socket.socket()
    try:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])
    finally:
        s.close()
