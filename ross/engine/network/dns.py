# -*- test-case-name: ross.test.integration.test_network -*-
"""
The embedded DNS of user-defined networks: a server on each such network's
gateway address (port 53, UDP and TCP), run by the daemon's reactor with
twisted.names. The containers of the network have it as their only name
server.

It answers the names of the containers that share a network with the one
asking (found by the query's source address): container names, network
aliases, short IDs, with their IPv4 (A) and IPv6 (AAAA) addresses, as
docker's embedded DNS does; every other name goes to the asking
container's --dns servers when it has some, as docker's, else to the
host's own name servers (the daemon runs in the host's namespace, so a
loopback resolver such as systemd-resolved works too).

Why on the gateway rather than at 127.0.0.11 inside each container, as
docker: docker's way needs a socket and NAT rules inside every container's
namespace, set up by a process there; the gateway is already an address
of the host that every container of the network reaches, so one listener
per network serves them all, with nothing inside the containers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, cast

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, gatherResults, maybeDeferred
from twisted.logger import Logger

from ross.engine.network.store import Endpoint, Network
from ross.engine.reactors import IEngineReactor

if TYPE_CHECKING:
    from twisted.names import client

# (network ID, name, source) -> the addresses, IPv4 and IPv6, name resolves
# to for a query from C{source} on the network of C{network_id}.
Lookup = Callable[[str, str, str], list[str]]
# (network ID, source) -> the name servers (addresses) the other names a
# query from C{source} asks for go to; none: the daemon's forwarder.
Upstreams = Callable[[str, str], Sequence[str]]


class ContainerNames:
    """
    What container names resolve to, as docker's embedded DNS answers them
    (a L{Lookup}).

    @param networks: the networks by ID, as the network manager keeps them.
    @param endpoints: the endpoints by (network ID, container ID), likewise.
    @param names_of: the names a container answers to besides its aliases
        and short ID (its name, from the container manager's records).
    @param dns_of: the name servers a container was given (--dns).
    """

    def __init__(self, networks: Mapping[str, Network], endpoints: Mapping[tuple[str, str], Endpoint],
                 names_of: Callable[[str], Sequence[str]],
                 dns_of: Callable[[str], Sequence[str]] = lambda cid: ()) -> None:
        self._networks = networks
        self._endpoints = endpoints
        self._names_of = names_of
        self._dns_of = dns_of

    def _asking(self, network_id: str, source: str) -> str | None:
        """
        The container of network C{network_id} at address C{source}.
        """
        return next((e.container_id for e in self._endpoints.values()
                     if e.network_id == network_id and source in (e.address, e.address6)), None)

    def upstreams(self, network_id: str, source: str) -> tuple[str, ...]:
        """
        Where the other names a container asks for go: its --dns servers
        (none: the host's), found by the query's C{source} address on
        network C{network_id}.
        """
        asking = self._asking(network_id, source)
        return tuple(self._dns_of(asking)) if asking is not None else ()

    def resolve(self, network_id: str, name: str, source: str) -> list[str]:
        """
        The addresses, IPv4 and IPv6, C{name} (a container's name, alias or
        short ID) resolves to for a query from address C{source} on network
        C{network_id}: the containers on any name-resolving network the
        asking container is on, that network's first; nothing for a query
        from elsewhere.
        """
        asking = self._asking(network_id, source)
        if asking is None:
            # Not a container of this network: its names are not for it.
            return []
        networks = [network_id] + sorted({
            e.network_id for e in self._endpoints.values()
            if e.container_id == asking and e.network_id != network_id
            and e.network_id in self._networks and self._networks[e.network_id].dns})
        found = []
        for nid in networks:
            for e in self._endpoints.values():
                if e.network_id != nid:
                    continue
                names = {n.lower() for n in self._names_of(e.container_id)}
                names.update(a.lower() for a in e.aliases)
                names.add(e.container_id[:12])
                if name in names:
                    found += [a for a in (e.address, e.address6) if a and a not in found]
        return found


class NetworkDNS:
    """
    The DNS servers of user-defined networks, one per network, on its
    gateway address.

    @param lookup: the addresses a name resolves to for a query from a
        source address on a network (L{ContainerNames.resolve}).
    @param resolv_conf: the host's resolver configuration, whose servers
        get every name that is not a container's.
    @param servers: (address, port) of the servers to forward to instead
        of resolv.conf's.
    @param port: the port to serve on (53; 0 for any, in tests).
    @param upstreams: the name servers a query from a source address on a
        network goes to instead, when it is not a container's name (the
        asking container's --dns: L{ContainerNames.upstreams}).
    """

    _log = Logger()

    def __init__(self, reactor: IEngineReactor, lookup: Lookup, resolv_conf: str = "/etc/resolv.conf",
                 servers: list[tuple[str, int]] | None = None, port: int = 53,
                 upstreams: Upstreams = lambda network_id, source: ()) -> None:
        self._reactor = reactor
        self._lookup = lookup
        self._upstreams = upstreams
        self._resolv_conf = resolv_conf
        self._servers = servers
        self._port = port
        self._forward: client.Resolver | None = None
        self._ports: dict[str, list[Any]] = {}

    def _forwarder(self) -> client.Resolver:
        from twisted.names import client

        if self._forward is None:
            if self._servers is not None:
                self._forward = client.Resolver(servers=self._servers, reactor=self._reactor)
            else:
                self._forward = client.Resolver(resolv=self._resolv_conf, reactor=self._reactor)
        return self._forward

    def address(self, network_id: str) -> tuple[str, int]:
        """
        Where the server of network C{network_id} listens (UDP).
        """
        host = self._ports[network_id][0].getHost()
        return host.host, host.port

    def serve(self, network_id: str, address: str) -> None:
        """
        Answer on C{address} (port 53) for network C{network_id}. A port that
        cannot be bound is logged: the network works, without names.
        """
        if network_id in self._ports:
            return
        from twisted.names import dns

        from ross.engine.network.dnsserver import UDP_MAX_PACKET, NamesFactory

        factory = NamesFactory(network_id, self._lookup, self._forwarder(), self._upstreams, self._reactor)
        ports = []
        try:
            ports.append(self._reactor.listenUDP(self._port, dns.DNSDatagramProtocol(factory), interface=address,
                                                 maxPacketSize=UDP_MAX_PACKET))
            # An IP port: its address is an IPv4Address or IPv6Address.
            bound = cast("IPv4Address | IPv6Address", ports[0].getHost())
            ports.append(self._reactor.listenTCP(bound.port, factory, interface=address))
        except Exception as e:
            self._log.error("no DNS for network {id} on {address}: {error}", id=network_id, address=address,
                            error=str(e))
            for port in ports:
                port.stopListening()
            return
        self._ports[network_id] = ports

    def stop_serving(self, network_id: str) -> Deferred[Any]:
        """
        Stop answering for network C{network_id}.
        """
        return gatherResults([maybeDeferred(p.stopListening) for p in self._ports.pop(network_id, [])])

    def stop(self) -> Deferred[Any]:
        """
        Stop every server and the forwarder's periodic re-reading of
        resolv.conf.
        """
        forward, self._forward = self._forward, None
        call = getattr(forward, "_parseCall", None)
        if call is not None and call.active():
            call.cancel()
        return gatherResults([self.stop_serving(nid) for nid in list(self._ports)])
