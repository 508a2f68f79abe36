"""
HTTP connections a handler can take over: after its answer (docker's
C{101 UPGRADED}, a WebSocket's or SPDY's upgrade) the connection is a raw
byte stream both ways, and a client's half-close is the end of its input.
Shared by the Docker API (attach, exec) and the CRI's streaming server.
"""

from __future__ import annotations

from typing import Any, Protocol

from twisted.internet.interfaces import IHalfCloseableProtocol
from twisted.python.failure import Failure
from twisted.web.http import HTTPChannel
from twisted.web.resource import Resource
from twisted.web.server import Site
from zope.interface import implementer


class Hijacker(Protocol):
    """
    What a hijacked connection delivers its input to.
    """

    def dataReceived(self, data: bytes) -> None: ...

    def readConnectionLost(self) -> None: ...

    def connectionLost(self, reason: Failure) -> None: ...


@implementer(IHalfCloseableProtocol)
class HijackChannel(HTTPChannel):
    """
    An HTTP channel that a handler can take over (L{hijack}) for a raw
    stream in both directions. Half-closeable, because docker's clients
    close their writing side to say their input has ended.
    """

    _hijacker: Hijacker | None = None
    #: The longest request line and all headers together: Go's net/http's
    #: default (docker's and kubelet's servers), not twisted.web's 16 KB,
    #: which closed the connection on a docker client's long filters.
    MAX_LENGTH = totalHeadersSize = 1 << 20

    def hijack(self, hijacker: Hijacker) -> None:
        """
        From now on, what the client sends goes to C{hijacker}, what
        arrived after the request included.
        """
        self._hijacker = hijacker
        self.setTimeout(None)  # type: ignore[no-untyped-call]
        buffered, self._dataBuffer = b"".join(self._dataBuffer), []
        # The channel stops reading while it answers a request once input
        # piles up; the hijacker reads on.
        if not self._waitingForTransport:
            self._networkProducer.resumeProducing()
        if buffered:
            hijacker.dataReceived(buffered)

    def rawDataReceived(self, data: bytes) -> None:
        if self._hijacker is not None:
            self._hijacker.dataReceived(data)
            return
        super().rawDataReceived(data)

    def readConnectionLost(self) -> None:
        if self._hijacker is not None:
            self._hijacker.readConnectionLost()
            return
        # Plain HTTP: a client done sending is done.
        if self.transport is not None:
            self.transport.loseConnection()

    def writeConnectionLost(self) -> None:
        if self.transport is not None:
            self.transport.loseConnection()

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        hijacker, self._hijacker = self._hijacker, None
        if hijacker is not None:
            hijacker.connectionLost(reason)
        if isinstance(self.factory, HijackSite):
            self.factory.channels.discard(self)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]


class HijackSite(Site):
    """
    A site whose connections can be hijacked (docker's attach and exec,
    the CRI's streams); keeps its open connections, so that a stopping
    daemon can end the streams that would keep them open.
    """

    # The channel itself, not twisted's HTTP/2-negotiating wrapper, which
    # would hide the half-close the hijacked streams need.
    protocol = HijackChannel  # type: ignore[assignment]
    noisy = False

    def __init__(self, resource: Resource) -> None:
        super().__init__(resource)  # type: ignore[no-untyped-call]
        self.channels: set[HijackChannel] = set()

    def buildProtocol(self, addr: Any) -> Any:
        channel = super().buildProtocol(addr)  # type: ignore[no-untyped-call]
        if isinstance(channel, HijackChannel):
            self.channels.add(channel)
        return channel

    def abort_connections(self) -> None:
        """
        End every open connection now (the daemon is stopping).
        """
        for channel in list(self.channels):
            transport: Any = channel.transport
            if transport is not None:
                transport.abortConnection()

    def log(self, request: Any) -> None:
        # No access log: the daemon's log is for what happened, not for
        # every ps a client polls.
        pass
