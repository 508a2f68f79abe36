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

A twisted.web site on the reactor, plain HTTP on loopback: the token is
the only credential, so it must not cross a network in the clear.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any, Callable

import attrs
from twisted.application.service import Service
from twisted.internet.defer import Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IListeningPort
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from ross.dockerapi.server import DockerChannel, DockerSite
from ross.errors import InvalidArgument, ResourceExhausted, Unavailable
from ross.protocols.spdy import SpdySession

if TYPE_CHECKING:
    from ross.engine.engine import Engine

#: How long a URL handed out stays good (containerd's, kubelet's).
TOKEN_TTL = 60.0
#: URLs handed out and not yet used, at most.
MAX_IN_FLIGHT = 1000
#: SPDY's upgrade token and the protocols we speak on it.
SPDY = "SPDY/3.1"
REMOTECOMMAND_V4 = "v4.channel.k8s.io"
PORTFORWARD_V1 = "portforward.k8s.io"
EXEC, ATTACH, PORTFORWARD = "exec", "attach", "portforward"
_PROTOCOLS = {EXEC: (REMOTECOMMAND_V4,), ATTACH: (REMOTECOMMAND_V4,), PORTFORWARD: (PORTFORWARD_V1,)}


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


def parse_stream_address(text: str) -> tuple[str, int]:
    """
    HOST[:PORT] (IPv6 in brackets) of --cri-stream-address; port 0 (the
    default) is any free port. Loopback only: see the module's docstring.
    """
    import ipaddress

    host, port = text, "0"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or (rest and not rest.startswith(":")):
            raise InvalidArgument(f"invalid --cri-stream-address {text!r}")
        port = rest[1:] or "0"
    elif text.count(":") == 1:
        host, port = text.split(":")
    try:
        address = ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise InvalidArgument(f"invalid --cri-stream-address {text!r}: use IP[:PORT]")
    if not 0 <= number < 65536:
        raise InvalidArgument(f"invalid --cri-stream-address {text!r}: bad port")
    if not address.is_loopback:
        raise InvalidArgument(f"--cri-stream-address {text}: the streaming server speaks plain HTTP and its "
                              "tokens are credentials: loopback addresses only")
    return str(address), number


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
        root = Resource()
        for kind in (EXEC, ATTACH, PORTFORWARD):
            root.putChild(kind.encode(), _StreamResource(self, kind))
        self.site = DockerSite(root)
        self._listening: IListeningPort | None = None
        #: Live sessions, ended when the daemon stops.
        self.sessions: set[SpdySession] = set()

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
        for channel in list(self.site.channels):
            transport: Any = channel.transport
            if transport is not None:
                transport.abortConnection()
        if listening is None:
            return succeed(None)
        return maybeDeferred(listening.stopListening)

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


class _StreamResource(Resource):
    """
    /KIND/TOKEN: checks the token, negotiates the protocol and turns the
    connection into a SPDY session.
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
        connection = (request.getHeader(b"connection") or b"").decode("latin-1").lower()
        upgrade = (request.getHeader(b"upgrade") or b"").decode("latin-1").lower()
        if "upgrade" not in connection or SPDY.lower() not in upgrade:
            return _refuse(request, 400, "unable to upgrade: this server speaks SPDY/3.1")
        offered = [p.strip() for value in request.requestHeaders.getRawHeaders(b"x-stream-protocol-version", [])
                   for p in value.decode("latin-1").split(",") if p.strip()]
        ours = _PROTOCOLS[self._kind]
        chosen = next((p for p in offered if p in ours), None)
        if chosen is None:
            for p in ours:
                request.responseHeaders.addRawHeader(b"X-Accepted-Stream-Protocol-Versions", p.encode())
            return _refuse(request, 403, f"unable to upgrade: no common protocol (client offers {offered[:8]}, "
                                         f"server accepts {list(ours)})")
        channel = request.channel
        if not isinstance(channel, DockerChannel):
            return _refuse(request, 500, "cannot upgrade this connection")
        # From here the connection is SPDY's: the request is never finished.
        request.startedWriting = 1
        channel.persistent = False
        channel.transport.write(
            (f"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {SPDY}\r\n"
             f"X-Stream-Protocol-Version: {chosen}\r\n\r\n").encode())
        server = self._server
        handler: list[Callable[[Any], None]] = []
        session = SpdySession(channel.transport, lambda stream: handler[0](stream))
        handler.append(server.serve(target, session))
        server.sessions.add(session)
        session.when_lost(lambda: server.sessions.discard(session))
        channel.registerProducer(session, True)
        channel.hijack(session)
        return NOT_DONE_YET


def _refuse(request: Any, code: int, message: str) -> bytes:
    # One answer per connection: a client refused has nothing else to ask.
    request.channel.persistent = False
    request.setHeader(b"connection", b"close")
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return message.encode() + b"\n"
