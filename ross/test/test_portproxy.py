"""
The [::1] proxy of published ports (ross.protocols.portproxy), against
real sockets on the loopback: a container stands for itself as a server
on [::1].
"""

from __future__ import annotations

import errno
import hashlib
import socket
from typing import Any

from twisted.internet import protocol
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from ross.protocols.portproxy import Proxy

reactor: Any = _reactor


@implementer(IHalfCloseableProtocol)
class _Echo(protocol.Protocol):
    """
    Echoes what it reads; closes once its client has stopped writing (half-
    closeable: otherwise the client's EOF would close it with its answer
    still unsent).
    """

    def dataReceived(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def readConnectionLost(self) -> None:
        self.transport.loseConnection()  # type: ignore[union-attr]

    def writeConnectionLost(self) -> None:
        pass


class _UDPEcho(protocol.DatagramProtocol):
    def datagramReceived(self, data: bytes, address: Any) -> None:
        self.transport.write(b"echo " + data, address)  # type: ignore[union-attr]


def _reserved(kind: int) -> socket.socket:
    """
    A socket bound as the network manager binds one to reserve a port.
    """
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(("::1", 0))
    return s


def _exchange(port: int, data: bytes) -> bytes:
    """
    Send C{data} to [::1]:C{port}, stop writing, read until the end
    (blocking, bounded).
    """
    received = b""
    with socket.create_connection(("::1", port), timeout=10) as c:
        try:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            while chunk := c.recv(1 << 16):
                received += chunk
        except OSError as e:
            # Closed by the proxy (nothing behind it): what came is the answer.
            if e.errno not in (errno.ECONNRESET, errno.EPIPE, errno.ENOTCONN):
                raise
    return received


def _ask(port: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as c:
        c.settimeout(10)
        c.sendto(data, ("::1", port))
        return c.recv(1 << 16)


class ProxyTests(TestCase):
    timeout = 60

    def serve(self, proxy: Proxy, held: socket.socket) -> None:
        def stop() -> None:
            proxy.stop()
            held.close()

        self.addCleanup(stop)

    @inlineCallbacks
    def test_tcp(self) -> Any:
        """
        Connections to the reserved port reach the server, both ways, a
        client's half-close passed on (it still gets the whole answer),
        several at once, more than socket buffers hold.
        """
        server = reactor.listenTCP(0, protocol.ServerFactory.forProtocol(_Echo), interface="::1")
        self.addCleanup(server.stopListening)
        held = _reserved(socket.SOCK_STREAM)
        self.serve(Proxy(reactor, held, "::1", server.getHost().port), held)
        port = held.getsockname()[1]
        big = bytes(range(256)) * 40000
        answers = yield Deferred.fromCoroutine(_gather([deferToThread(_exchange, port, b"hello"),
                                                        deferToThread(_exchange, port, big)]))
        # Lengths and digests: a diff of 10 MB would take minutes to print.
        self.assertEqual([(len(a), hashlib.sha256(a).hexdigest()) for a in answers],
                         [(len(a), hashlib.sha256(a).hexdigest()) for a in (b"hello", big)])

    @inlineCallbacks
    def test_tcp_nothing_there(self) -> Any:
        """
        A client whose container does not answer is closed, not left hanging.
        """
        probe = socket.socket(socket.AF_INET6)
        probe.bind(("::1", 0))
        closed = probe.getsockname()[1]
        probe.close()
        held = _reserved(socket.SOCK_STREAM)
        self.serve(Proxy(reactor, held, "::1", closed), held)
        answer = yield deferToThread(_exchange, held.getsockname()[1], b"hello")
        self.assertEqual(answer, b"")

    @inlineCallbacks
    def test_udp(self) -> Any:
        """
        Datagrams reach the server and its answers come back to each client
        from the published port; stopping lets go of the clients' sockets.
        """
        server = reactor.listenUDP(0, _UDPEcho(), interface="::1")
        self.addCleanup(server.stopListening)
        held = _reserved(socket.SOCK_DGRAM)
        self.addCleanup(held.close)
        proxy = Proxy(reactor, held, "::1", server.getHost().port)
        port = held.getsockname()[1]
        answers = yield Deferred.fromCoroutine(_gather([deferToThread(_ask, port, b"one"),
                                                        deferToThread(_ask, port, b"two")]))
        self.assertEqual(sorted(answers), [b"echo one", b"echo two"])
        clients = proxy._port.protocol.clients
        self.assertEqual(len(clients), 2)
        yield proxy.stop()
        self.assertEqual(clients, {})


async def _gather(waits: list[Deferred[Any]]) -> list[Any]:
    return [await d for d in waits]
