# -*- test-case-name: ross.test.integration.test_network -*-
"""
The DNS server of one user-defined network (L{ross.engine.network.dns}),
on twisted.names: imported when the first such network is served, so a
daemon without one does not load twisted.names.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable

from twisted.logger import Logger
from twisted.names import client, dns, server

from ross.engine.network.dns import Lookup, Upstreams

# The records of each address family, by query type.
_RECORDS: dict[int, tuple[int, Callable[[str, int], Any]]] = {
    dns.A: (4, dns.Record_A), dns.AAAA: (6, dns.Record_AAAA)}

TTL = 600
# The largest query read over UDP: Twisted's default, which IReactorUDP
# leaves for the caller to give.
UDP_MAX_PACKET = 8192
# Forwarders to containers' own --dns servers kept (one per list of
# servers; the oldest goes first).
MAX_UPSTREAMS = 64


class NamesFactory(server.DNSServerFactory):
    """
    Answers container names from C{lookup}; forwards everything else, to
    the asking container's own servers when C{upstreams} names some.
    """

    _log = Logger()

    def __init__(self, network_id: str, lookup: Lookup, forward: client.Resolver | None,
                 upstreams: Upstreams = lambda network_id, source: (), reactor: Any = None) -> None:
        super().__init__(clients=[forward] if forward is not None else [])  # type: ignore[no-untyped-call]
        self._network_id = network_id
        self._lookup = lookup
        self._upstreams = upstreams
        self._reactor = reactor
        self._forwarders: dict[tuple[str, ...], client.Resolver] = {}

    def _forwarder(self, servers: tuple[str, ...]) -> client.Resolver:
        """
        A forwarder to C{servers} (port 53 each), made once.
        """
        forwarder = self._forwarders.pop(servers, None)
        if forwarder is None:
            forwarder = client.Resolver(servers=[(s, 53) for s in servers], reactor=self._reactor)
            while len(self._forwarders) >= MAX_UPSTREAMS:
                del self._forwarders[next(iter(self._forwarders))]
        self._forwarders[servers] = forwarder
        return forwarder

    def handleQuery(self, message: dns.Message, protocol: Any, address: Any) -> Any:
        source = address[0] if address else protocol.transport.getPeer().host
        if len(message.queries) == 1:
            query = message.queries[0]
            name = query.name.name.decode("ascii", "replace").rstrip(".").lower()
            found = self._lookup(self._network_id, name, source) if query.cls == dns.IN else []
            if found:
                answers = []
                for kind, (version, record) in _RECORDS.items():
                    if query.type in (kind, dns.ALL_RECORDS):
                        answers += [dns.RRHeader(name=query.name.name, type=kind, ttl=TTL, auth=True,
                                                 payload=record(a, TTL))
                                    for a in found if ipaddress.ip_address(a).version == version]
                # A known name with no record of the type asked (AAAA of a
                # container without IPv6): an empty answer, not a forward
                # that would leak the name.
                response = self._responseFromMessage(  # type: ignore[no-untyped-call]
                    message=message, rCode=dns.OK, answers=answers, authority=[], additional=[])
                response.auth = True
                self.sendReply(protocol, response, address)  # type: ignore[no-untyped-call]
                return None
        servers = tuple(self._upstreams(self._network_id, source))
        if servers and message.queries:
            # (DNSServerFactory.handleQuery's, with the container's servers.)
            return (self._forwarder(servers).query(message.queries[0])
                    .addCallback(self.gotResolverResponse, protocol, message, address)
                    .addErrback(self.gotResolverError, protocol, message, address))
        return super().handleQuery(message, protocol, address)  # type: ignore[no-untyped-call]
