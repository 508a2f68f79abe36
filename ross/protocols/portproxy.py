# -*- test-case-name: ross.test.test_portproxy -*-
"""
The daemon's answer to published ports on [::1] where the kernel cannot
DNAT them (see L{ross.engine.network.nft}): a proxy on the socket that
reserves the port, to the container's IPv6 address. Everything else a
published port receives is DNATed before it reaches that socket.

TCP connections are spliced with flow control both ways (neither side can
fill the daemon's memory) and half-closes passed on (a client that shuts
down its writing end still gets its answer); UDP datagrams go out from a
socket per client, which carries the answers back and is closed when the
client has been quiet for a while.
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import protocol
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.logger import Logger
from zope.interface import implementer

# Seconds a UDP client may stay quiet before its socket goes (conntrack's
# UDP stream timeout).
UDP_IDLE = 120.0
# UDP clients served at once; the quietest goes for a new one beyond.
UDP_CLIENTS = 1024
# The largest UDP payload.
MAX_DATAGRAM = 65535
# Seconds to reach the container before a client's connection is closed.
CONNECT_TIMEOUT = 10


@implementer(IHalfCloseableProtocol)
class _Splice(protocol.Protocol):
    """
    One side of a spliced connection; C{peer} is the other, once there.
    """

    peer: _Splice | None = None
    # A TCP transport: half-closes and producers (ITransport has neither).
    transport: Any = None

    def dataReceived(self, data: bytes) -> None:
        assert self.peer is not None
        self.peer.transport.write(data)

    def readConnectionLost(self) -> None:
        if self.peer is not None:
            self.peer.transport.loseWriteConnection()

    def writeConnectionLost(self) -> None:
        pass

    def connectionLost(self, reason: Any = None) -> None:
        peer, self.peer = self.peer, None
        if peer is not None:
            peer.peer = None
            peer.transport.loseConnection()


class _Outbound(_Splice):
    """
    The container's side: once connected, each side reads only as fast as
    the other writes.
    """

    def connectionMade(self) -> None:
        assert self.peer is not None
        self.transport.registerProducer(self.peer.transport, True)
        self.peer.transport.registerProducer(self.transport, True)
        self.peer.transport.resumeProducing()


class _OutboundFactory(protocol.ClientFactory):
    noisy = False

    def __init__(self, inbound: _Inbound) -> None:
        self.inbound = inbound

    def buildProtocol(self, addr: Any) -> _Outbound:
        outbound = _Outbound()
        outbound.peer, self.inbound.peer = self.inbound, outbound
        return outbound

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        self.inbound.transport.loseConnection()


class _Inbound(_Splice):
    """
    A client's connection: not read until the container's side is there.
    """

    def __init__(self, server: _TCPServer) -> None:
        self.server = server

    def connectionMade(self) -> None:
        self.transport.pauseProducing()
        s = self.server
        s.reactor.connectTCP(s.host, s.port, _OutboundFactory(self), timeout=CONNECT_TIMEOUT)


class _TCPServer(protocol.Factory):
    noisy = False

    def __init__(self, reactor: Any, host: str, port: int) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port

    def buildProtocol(self, addr: Any) -> _Inbound:
        return _Inbound(self)


class _Upstream(protocol.DatagramProtocol):
    """
    A UDP client's socket towards the container: its answers go back to
    the client from the published port.
    """

    def __init__(self, server: _UDPServer, client: Any) -> None:
        self.server = server
        self.client = client
        self.timer: Any = None

    def datagramReceived(self, data: bytes, address: Any) -> None:
        self.server.transport.write(data, self.client)
        self.server.touch(self)


class _UDPServer(protocol.DatagramProtocol):
    _log = Logger()
    transport: Any = None

    def __init__(self, reactor: Any, host: str, port: int) -> None:
        self.reactor = reactor
        self.host = host
        self.port = port
        self.clients: dict[Any, tuple[_Upstream, Any]] = {}

    def datagramReceived(self, data: bytes, address: Any) -> None:
        key = address[:2]
        if key not in self.clients:
            if len(self.clients) >= UDP_CLIENTS:
                self.forget(min(self.clients.values(), key=lambda entry: entry[0].timer.getTime())[0])
            upstream = _Upstream(self, address)
            try:
                port = self.reactor.listenUDP(0, upstream, interface="::", maxPacketSize=MAX_DATAGRAM)
                port.connect(self.host, self.port)
            except Exception as e:
                self._log.warn("UDP proxy to [{host}]:{port}: {error}", host=self.host, port=self.port, error=str(e))
                return
            self.clients[key] = (upstream, port)
            upstream.timer = self.reactor.callLater(UDP_IDLE, self.forget, upstream)
        upstream, port = self.clients[key]
        port.write(data)
        self.touch(upstream)

    def touch(self, upstream: _Upstream) -> None:
        if upstream.timer is not None and upstream.timer.active():
            upstream.timer.reset(UDP_IDLE)

    def forget(self, upstream: _Upstream) -> None:
        entry = self.clients.pop(upstream.client[:2], None)
        if upstream.timer is not None and upstream.timer.active():
            upstream.timer.cancel()
        if entry is not None:
            entry[1].stopListening()

    def stopProtocol(self) -> None:
        for upstream, _ in list(self.clients.values()):
            self.forget(upstream)


class Proxy:
    """
    A proxy serving reservation socket C{held} (bound, of family AF_INET6;
    made to listen here when it is TCP) to C{host} (the container's IPv6
    address) port C{port}, until L{stop}.
    """

    def __init__(self, reactor: Any, held: socket.socket, host: str, port: int) -> None:
        # The reactor's copy shares the flag: a blocking one would hang it
        # in accept once the queue is empty.
        held.setblocking(False)
        if held.type == socket.SOCK_STREAM:
            held.listen(128)
            self._port = reactor.adoptStreamPort(held.fileno(), socket.AF_INET6, _TCPServer(reactor, host, port))
        else:
            self._port = reactor.adoptDatagramPort(held.fileno(), socket.AF_INET6, _UDPServer(reactor, host, port),
                                                   maxPacketSize=MAX_DATAGRAM)

    def stop(self) -> Deferred[None]:
        """
        Stop serving (the reactor's copy of the socket closes; the caller
        closes its own); fires once the UDP clients' sockets are gone too.
        """
        return maybeDeferred(self._port.stopListening)
