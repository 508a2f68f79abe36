# -*- test-case-name: ross.test.integration.test_cri_streaming -*-
"""
The streaming server's site (L{stream_site}): made at its first
connection, so an idle daemon does not import twisted.web for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ross.cri.streaming import (
    ATTACH,
    EXEC,
    MAX_COMMAND_STREAMS,
    MAX_FORWARD_STREAMS,
    MAX_SESSIONS,
    PORTFORWARD,
    PORTFORWARD_V1,
    REMOTECOMMAND_V4,
    REMOTECOMMAND_V5,
    REQUEST_TIMEOUT,
    SPDY,
)
from ross.protocols.hijack import HijackSite
from ross.protocols.spdy import SpdySession
from ross.protocols.websocket import WebSocketSession, accept_key, valid_key

if TYPE_CHECKING:
    from ross.cri.streaming import StreamServer, StreamTarget
    from ross.protocols.muxconn import MuxConnection


_PROTOCOLS = {EXEC: (REMOTECOMMAND_V4,), ATTACH: (REMOTECOMMAND_V4,), PORTFORWARD: (PORTFORWARD_V1,)}
_WEBSOCKET_PROTOCOLS = {EXEC: (REMOTECOMMAND_V5, REMOTECOMMAND_V4), ATTACH: (REMOTECOMMAND_V5, REMOTECOMMAND_V4),
                        PORTFORWARD: (SPDY + "+" + PORTFORWARD_V1,)}


def stream_site(server: StreamServer) -> HijackSite:
    """
    The site of C{server}: /exec/TOKEN, /attach/TOKEN, /portforward/TOKEN.
    """
    root = Resource()
    for kind in (EXEC, ATTACH, PORTFORWARD):
        root.putChild(kind.encode(), _StreamResource(server, kind))
    site = HijackSite(root)
    site.timeOut = REQUEST_TIMEOUT
    return site


def _offered(request: Any, header: bytes) -> list[str]:
    return [p.strip() for value in request.requestHeaders.getRawHeaders(header, [])
            for p in value.decode("latin-1").split(",") if p.strip()][:32]


class _StreamResource(Resource):
    """
    /KIND/TOKEN: checks the token, negotiates the protocol and turns the
    connection into a SPDY session (client-go's SPDY executor and dialer),
    or a WebSocket (its WebSocket executor, and port-forward's SPDY
    tunnelled in one).
    """

    isLeaf = True

    def __init__(self, server: StreamServer, kind: str) -> None:
        super().__init__()
        self._server = server
        self._kind = kind

    def render(self, request: Any) -> Any:
        path = request.postpath
        if len(path) != 1 or not path[0] or len(path[0]) > 64:
            return _refuse(request, 404, "not found")
        target = self._server.requests.consume(path[0].decode("latin-1"))
        if target is None or target.kind != self._kind:
            return _refuse(request, 404, "invalid or expired streaming token")
        if len(self._server.sessions) >= MAX_SESSIONS:
            return _refuse(request, 503, f"{MAX_SESSIONS} streaming sessions are open: try again later")
        connection = (request.getHeader(b"connection") or b"").decode("latin-1").lower()
        upgrade = (request.getHeader(b"upgrade") or b"").decode("latin-1").lower()
        if "upgrade" not in connection:
            return _refuse(request, 400, "unable to upgrade: no upgrade asked for")
        if upgrade == "websocket":
            return self._websocket(request, target)
        if SPDY.lower() not in upgrade:
            return _refuse(request, 400, "unable to upgrade: this server speaks SPDY/3.1 and WebSocket")
        offered = _offered(request, b"x-stream-protocol-version")
        ours = _PROTOCOLS[self._kind]
        chosen = next((p for p in offered if p in ours), None)
        if chosen is None:
            for p in ours:
                request.responseHeaders.addRawHeader(b"X-Accepted-Stream-Protocol-Versions", p.encode())
            return _refuse(request, 403, f"unable to upgrade: no common protocol (client offers {offered[:8]}, "
                                         f"server accepts {list(ours)})")
        transport = _switch(request, f"Upgrade: {SPDY}\r\nX-Stream-Protocol-Version: {chosen}")
        server = self._server
        handler: list[Callable[[Any], None]] = []
        session = SpdySession(transport, lambda stream: handler[0](stream),
                              MAX_FORWARD_STREAMS if target.kind == PORTFORWARD else MAX_COMMAND_STREAMS)
        handler.append(server.serve(target, session))
        _hijack(request, server, session)
        return NOT_DONE_YET

    def _websocket(self, request: Any, target: StreamTarget) -> Any:
        key = (request.getHeader(b"sec-websocket-key") or b"").decode("latin-1")
        if not valid_key(key) or request.getHeader(b"sec-websocket-version") != b"13":
            request.setHeader(b"sec-websocket-version", b"13")
            return _refuse(request, 400, "unable to upgrade: a WebSocket handshake needs a key and version 13")
        offered = _offered(request, b"sec-websocket-protocol")
        ours = _WEBSOCKET_PROTOCOLS[self._kind]
        chosen = next((p for p in offered if p in ours), None)
        if chosen is None:
            return _refuse(request, 403, f"unable to upgrade: no common protocol (client offers {offered[:8]}, "
                                         f"server accepts {list(ours)})")
        transport = _switch(request, f"Upgrade: websocket\r\nSec-WebSocket-Accept: {accept_key(key)}\r\n"
                                     f"Sec-WebSocket-Protocol: {chosen}")
        server = self._server
        handler: list[Callable[[bytes], None]] = []
        websocket = WebSocketSession(transport, lambda message: handler[0](message))
        handler.append(server.serve_websocket(target, websocket))
        _hijack(request, server, websocket)
        return NOT_DONE_YET


def _switch(request: Any, headers: str) -> Any:
    """
    Answer 101 with C{headers}; the connection is the caller's from here
    (the request is never finished). Returns its transport.
    """
    request.startedWriting = 1
    request.channel.persistent = False
    transport: Any = request.channel.transport
    transport.write(f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n{headers}\r\n\r\n".encode())
    return transport


def _hijack(request: Any, server: StreamServer, session: MuxConnection) -> None:
    channel = request.channel
    server.sessions.add(session)
    session.when_lost(lambda: server.sessions.discard(session))
    channel.registerProducer(session, True)
    channel.hijack(session)


def _refuse(request: Any, code: int, message: str) -> bytes:
    # One answer per connection: a client refused has nothing else to ask.
    request.channel.persistent = False
    request.setHeader(b"connection", b"close")
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return message.encode() + b"\n"
