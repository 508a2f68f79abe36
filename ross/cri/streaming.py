# -*- test-case-name: ross.test.integration.test_cri_streaming -*-
"""
The CRI's streaming server: where kubelet (and crictl, critest) go for
the byte streams of Exec, Attach and PortForward. The RPC validates the
request and answers with a URL on this server carrying a one-time token
(L{StreamRequests}: random, single use, expiring after a minute, as
containerd's); the client then upgrades an HTTP request on that URL to
SPDY/3.1 and speaks Kubernetes' remotecommand (v4) or portforward (v1)
protocol on its streams (L{ross.cri.remotecommand},
L{ross.cri.portforward}).

A twisted.web site on the reactor (L{ross.cri.streamsite}, made at the
first connection), plain HTTP on loopback: the token is
the only credential, so it must not cross a network in the clear.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Callable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger

from ross.errors import ResourceExhausted, Unavailable
from ross.protocols.firstuse import FirstUseFactory

if TYPE_CHECKING:
    from ross.engine.engine import Engine
    from ross.protocols.hijack import HijackSite
    from ross.protocols.muxconn import MuxConnection
    from ross.protocols.spdy import SpdySession
    from ross.protocols.websocket import WebSocketSession

#: How long a URL handed out stays good (containerd's, kubelet's).
TOKEN_TTL = 60.0
#: Seconds a connection may take to send its request (then it is SPDY's
#: or WebSocket's, and lives as long as its session).
REQUEST_TIMEOUT = 30
#: Sessions served at once; more are refused (503).
MAX_SESSIONS = 512
#: Streams open at once in one session: remotecommand needs five, a
#: port-forward two per forwarded connection.
MAX_COMMAND_STREAMS = 8
MAX_FORWARD_STREAMS = 256
#: URLs handed out and not yet used, at most.
MAX_IN_FLIGHT = 1000
#: SPDY's upgrade token and the protocols we speak on it.
SPDY = "SPDY/3.1"
REMOTECOMMAND_V4 = "v4.channel.k8s.io"
PORTFORWARD_V1 = "portforward.k8s.io"
EXEC, ATTACH, PORTFORWARD = "exec", "attach", "portforward"
REMOTECOMMAND_V5 = "v5.channel.k8s.io"


@attrs.frozen
class StreamTarget:
    """
    What a URL was handed out for: C{kind} (exec, attach, portforward),
    the container (or, to forward ports, the sandbox) and for exec and
    attach the command and which streams the client wants.
    """

    kind: str
    container_id: str
    cmd: tuple[str, ...] = ()
    tty: bool = False
    stdin: bool = False
    stdout: bool = False
    stderr: bool = False


class StreamRequests:
    """
    The URLs handed out and not used yet, by token.
    """

    def __init__(self, clock: Any, ttl: float = TOKEN_TTL, limit: int = MAX_IN_FLIGHT) -> None:
        self._clock = clock
        self._ttl = ttl
        self._limit = limit
        self._pending: dict[str, tuple[float, StreamTarget]] = {}

    def insert(self, target: StreamTarget) -> str:
        now = self._clock.seconds()
        for token, (expires, _) in list(self._pending.items()):
            if expires <= now:
                del self._pending[token]
        if len(self._pending) >= self._limit:
            raise ResourceExhausted(f"{len(self._pending)} streaming requests are waiting for their clients: "
                                    "try again later")
        token = secrets.token_urlsafe(16)
        self._pending[token] = (now + self._ttl, target)
        return token

    def consume(self, token: str) -> StreamTarget | None:
        """
        The target of C{token}, which is then spent; None for a token
        unknown, spent or expired.
        """
        found = self._pending.pop(token, None)
        if found is None or found[0] <= self._clock.seconds():
            return None
        return found[1]

    def __len__(self) -> int:
        return len(self._pending)


class StreamServer(Service):
    """
    The streaming server, listening while the service runs.

    @ivar requests: the URLs handed out (L{StreamRequests}).
    """

    _log = Logger()

    def __init__(self, reactor: Any, engine: Engine, host: str = "127.0.0.1", port: int = 0) -> None:
        self._reactor = reactor
        self.engine = engine
        self.host = host
        self.port = port
        self.requests = StreamRequests(reactor)
        self.site = FirstUseFactory(self._make_site, "CRI streams")
        self._listening: IListeningPort | None = None
        #: Live sessions, ended when the daemon stops.
        self.sessions: set[MuxConnection] = set()

    def _make_site(self) -> HijackSite:
        from ross.cri.streamsite import stream_site

        return stream_site(self)

    def startService(self) -> None:
        try:
            self._listening = self._reactor.listenTCP(self.port, self.site, interface=self.host)
        except Exception as e:
            raise SystemExit(f"ross: cannot serve the CRI's streams on {self.host}:{self.port}: {e}")
        self._log.info("CRI streaming server listening on {url}", url=self.base_url())
        super().startService()

    def stopService(self) -> Deferred[None]:
        super().stopService()
        listening, self._listening = self._listening, None
        for session in list(self.sessions):
            session.close()
        if self.site.made is not None:
            self.site.made.abort_connections()
        if listening is None:
            return succeed(None)
        stopping: Any = listening.stopListening()
        return stopping if isinstance(stopping, Deferred) else succeed(None)

    def base_url(self) -> str:
        if self._listening is None:
            raise Unavailable("the CRI's streaming server is not running")
        port = self._listening.getHost().port  # type: ignore[attr-defined]
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{port}"

    def url_for(self, target: StreamTarget) -> str:
        """
        A one-time URL for C{target}.
        """
        base = self.base_url()
        return f"{base}/{target.kind}/{self.requests.insert(target)}"

    def serve(self, target: StreamTarget, session: SpdySession) -> Callable[[Any], None]:
        """
        The handler of the streams of C{session} for C{target}: what it
        calls with each stream the client opens.
        """
        from ross.cri.portforward import PortForward
        from ross.cri.remotecommand import RemoteCommand

        handler: Any
        if target.kind == PORTFORWARD:
            handler = PortForward(self._reactor, self.engine, target, session)
        else:
            handler = RemoteCommand(self._reactor, self.engine, target, session)
        return handler.stream_opened  # type: ignore[no-any-return]

    def serve_websocket(self, target: StreamTarget, websocket: WebSocketSession) -> Callable[[bytes], None]:
        """
        What the messages of C{websocket} go to: remotecommand's channels
        for exec and attach, a SPDY session they carry to forward ports.
        """
        from ross.cri.remotecommand import RemoteCommand, serve_websocket
        from ross.protocols.spdy import SpdySession
        from ross.protocols.websocket import MessageTransport

        if target.kind != PORTFORWARD:
            command = RemoteCommand(self._reactor, self.engine, target, websocket)
            return serve_websocket(command, websocket, target)  # type: ignore[no-any-return]
        handler: list[Callable[[Any], None]] = []
        tunnelled = SpdySession(MessageTransport(websocket), lambda stream: handler[0](stream),
                                MAX_FORWARD_STREAMS)
        handler.append(self.serve(target, tunnelled))
        websocket.add_producer(tunnelled)
        websocket.when_lost(tunnelled.connectionLost)
        return tunnelled.dataReceived
