# -*- test-case-name: ross.test.integration.test_registry -*-
"""
A real registry for tests: Debian's ``docker-registry`` (distribution)
on a free loopback port with its storage in a temporary directory, over
plain http or TLS, with htpasswd basic auth or token auth (the registry
verifies the JWTs that L{TokenServer}, a Docker Hub style token server on
the test's reactor, signs); and a twisted.web proxy in front of it that
can fail chosen requests, cut blob bodies short or stall them.

    registry = RegistryServer(tmp)
    yield registry.start()          # stopped at cleanup by the caller
    registry.host                   # "localhost:PORT"
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import attrs
from twisted.internet import protocol, reactor as global_reactor
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.web import proxy, resource, server
from twisted.web.http import Request

REGISTRY = "/usr/bin/docker-registry"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def htpasswd_line(user: str, password: str) -> str:
    """A bcrypt htpasswd entry (what the registry's htpasswd auth reads)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

    hashed = crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH))
    return f"{user}:{hashed}\n"


class _Ended(protocol.ProcessProtocol):
    def __init__(self) -> None:
        self.ended: Deferred[None] = Deferred()
        self.output = bytearray()

    def outReceived(self, data: bytes) -> None:
        self.output += data[-65536:]

    errReceived = outReceived

    def processEnded(self, reason: Any) -> None:
        self.ended.callback(None)


@attrs.define
class RegistryServer:
    """
    A docker-registry process. C{tls} is a (cert path, key path) pair;
    C{users} maps usernames to passwords for htpasswd auth.
    """

    base: Path
    tls: tuple[str, str] | None = None
    users: dict[str, str] = attrs.Factory(dict)
    token: TokenServer | None = None
    port: int = 0
    reactor: Any = global_reactor
    _process: Any = None
    _protocol: _Ended | None = None

    @property
    def host(self) -> str:
        return f"localhost:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    @property
    def storage(self) -> Path:
        return self.base / "storage"

    def config(self) -> str:
        lines = [
            "version: 0.1",
            "log:",
            "  level: error",
            "  accesslog:",
            "    disabled: true",
            "storage:",
            "  filesystem:",
            f"    rootdirectory: {self.storage}",
            "  delete:",
            "    enabled: true",
            "http:",
            f"  addr: 127.0.0.1:{self.port}",
        ]
        if self.tls:
            lines += ["  tls:", f"    certificate: {self.tls[0]}", f"    key: {self.tls[1]}"]
        if self.users:
            path = self.base / "htpasswd"
            path.write_text("".join(htpasswd_line(u, p) for u, p in self.users.items()))
            lines += ["auth:", "  htpasswd:", "    realm: ross-test", f"    path: {path}"]
        elif self.token is not None:
            bundle = self.base / "token-signer.pem"
            bundle.write_bytes(self.token.signer.pem)
            lines += ["auth:", "  token:", f"    realm: {self.token.realm}", f"    service: {self.token.service}",
                      f"    issuer: {self.token.issuer}", f"    rootcertbundle: {bundle}"]
        return "\n".join(lines) + "\n"

    def start(self) -> Deferred[None]:
        """Start the registry and wait until it accepts connections."""
        self.base.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        config = self.base / "config.yml"
        config.write_text(self.config())
        self._protocol = _Ended()
        self._process = self.reactor.spawnProcess(
            self._protocol, REGISTRY, [REGISTRY, "serve", str(config)], env={"PATH": os.environ.get("PATH", "")})
        return deferToThread(self._wait)

    def _wait(self) -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            assert self._protocol is not None
            if self._protocol.ended.called:
                raise RuntimeError(f"docker-registry exited: {bytes(self._protocol.output).decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("docker-registry did not start in 20 s")

    def stop(self) -> Deferred[None]:
        """Stop the registry (SIGTERM) and wait for it to exit."""
        assert self._protocol is not None
        if not self._protocol.ended.called:
            self._process.signalProcess("TERM")
        return self._protocol.ended

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None


# ---------------------------------------------------------------- the proxy


class _FaultClient(proxy.ProxyClient):
    """
    Passes the registry's answer on; with C{cut_after}, cuts the client's
    connection after that many body bytes; with C{stall_after}, stops
    passing bytes on after that many (the client waits for ever). A
    client that went away ends the registry's side too.
    """

    cut_after: int | None = None
    stall_after: int | None = None
    on_stall: Any = None
    _done = False

    def connectionMade(self) -> None:
        proxy.ProxyClient.connectionMade(self)
        self.father.notifyFinish().addErrback(lambda _: self._end())

    def _end(self) -> None:
        self._done = True
        if self.transport is not None:
            self.transport.loseConnection()

    def _gone(self) -> bool:
        # notifyFinish is not always delivered (a paused channel): the
        # request's own flag says it too.
        return self._done or bool(getattr(self.father, "_disconnected", False))

    def handleHeader(self, key: bytes, value: bytes) -> None:
        if not self._gone():
            proxy.ProxyClient.handleHeader(self, key, value)

    def handleEndHeaders(self) -> None:
        if not self._gone():
            proxy.ProxyClient.handleEndHeaders(self)

    def handleResponseEnd(self) -> None:
        if self._gone():
            self._end()
            return
        proxy.ProxyClient.handleResponseEnd(self)

    def handleResponsePart(self, buffer: bytes) -> None:
        if self._gone():
            self._end()
            return
        if self.cut_after is not None and len(buffer) >= self.cut_after:
            proxy.ProxyClient.handleResponsePart(self, buffer[:self.cut_after])
            self.father.channel.transport.abortConnection()
            self._end()
            return
        if self.stall_after is not None and len(buffer) >= self.stall_after:
            proxy.ProxyClient.handleResponsePart(self, buffer[:self.stall_after])
            self._done = True
            if self.transport is not None:
                self.transport.pauseProducing()  # type: ignore[attr-defined]
            if self.on_stall is not None:
                self.on_stall()
            return
        if self.cut_after is not None:
            self.cut_after -= len(buffer)
        if self.stall_after is not None:
            self.stall_after -= len(buffer)
        proxy.ProxyClient.handleResponsePart(self, buffer)


@attrs.define
class Rule:
    """
    What the proxy does to requests matching C{method} and C{path} (a
    regular expression), C{times} times: answer C{status}; or cut the
    connection after C{cut_after} body bytes; or stop passing the body on
    after C{stall_after} bytes, calling C{on_stall}; C{ignore_range}
    drops the request's Range header (a registry without range support).
    """

    method: str
    path: str
    status: int = 0
    cut_after: int | None = None
    stall_after: int | None = None
    on_stall: Any = None
    ignore_range: bool = False
    times: int = 1
    hits: int = 0

    def matches(self, method: str, path: str) -> bool:
        return self.hits < self.times and method == self.method and re.search(self.path, path) is not None


class _ProxyResource(resource.Resource):
    isLeaf = True

    def __init__(self, front: FaultyProxy) -> None:
        super().__init__()
        self.front = front

    def render(self, request: Request) -> Any:
        front = self.front
        method = request.method.decode()
        path = request.uri.decode()
        front.log.append((method, path, request.getHeader("range") or ""))
        rule = next((r for r in front.rules if r.matches(method, path)), None)
        if rule is not None:
            rule.hits += 1
            if rule.status:
                request.setResponseCode(rule.status)
                request.setHeader("content-type", "application/json")
                return b'{"errors":[{"code":"UNKNOWN","message":"injected failure"}]}'
        request.requestHeaders.setRawHeaders(b"x-forwarded-host", [request.getHeader("host") or ""])
        request.requestHeaders.setRawHeaders(b"x-forwarded-proto", [b"http"])
        request.requestHeaders.setRawHeaders(b"host", [f"127.0.0.1:{front.registry.port}".encode()])
        assert request.content is not None
        request.content.seek(0, 0)
        body = request.content.read()
        headers = request.getAllHeaders().copy()
        if rule is not None and rule.ignore_range:
            headers.pop(b"range", None)
        class Client(_FaultClient):
            cut_after = rule.cut_after if rule is not None else None
            stall_after = rule.stall_after if rule is not None else None
            on_stall = staticmethod(rule.on_stall) if rule is not None and rule.on_stall else None

        class Factory(proxy.ProxyClientFactory):
            protocol = Client

        factory = Factory(request.method, request.uri, request.clientproto, headers, body, request)
        front.reactor.connectTCP("127.0.0.1", front.registry.port, factory)
        return server.NOT_DONE_YET


@attrs.define
class FaultyProxy:
    """
    A plain-http proxy on a free port in front of C{registry}: C{rules}
    inject failures; C{log} records (method, path, Range) of each request.
    """

    registry: RegistryServer
    rules: list[Rule] = attrs.Factory(list)
    reactor: Any = global_reactor
    log: list[tuple[str, str, str]] = attrs.Factory(list)
    port: int = 0
    _listener: Any = None

    @property
    def host(self) -> str:
        return f"localhost:{self.port}"

    def start(self) -> None:
        site = server.Site(_ProxyResource(self))
        site.noisy = False
        self._listener = self.reactor.listenTCP(0, site, interface="127.0.0.1")
        self.port = self._listener.getHost().port

    def stop(self) -> Deferred[None]:
        result: Deferred[None] = self._listener.stopListening()
        return result


# ---------------------------------------------------------------- tokens


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


class _TokenResource(resource.Resource):
    isLeaf = True

    def __init__(self, tokens: TokenServer) -> None:
        super().__init__()
        self.tokens = tokens

    def render_GET(self, request: Request) -> bytes:
        return self.tokens.issue(request)


@attrs.define
class TokenServer:
    """
    Docker Hub's token scheme on the test's reactor: GET /token with basic
    credentials of one of C{users}, C{service} and C{scope}s; answers a JWT
    (ES256, the signing certificate in its x5c header) granting what was
    asked, which the registry (C{rootcertbundle} = C{signer}) verifies.
    C{requests} records the scopes of each request.
    """

    users: dict[str, str]
    reactor: Any = global_reactor
    service: str = "ross-test"
    issuer: str = "ross-test-issuer"
    requests: list[str] = attrs.Factory(list)
    signer: Any = None
    port: int = 0
    _listener: Any = None

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def start(self) -> None:
        from ross.testing import certs

        self.signer = certs.authority("Ross Test Token Signer")
        site = server.Site(_TokenResource(self))
        site.noisy = False
        self._listener = self.reactor.listenTCP(0, site, interface="127.0.0.1")
        self.port = self._listener.getHost().port

    def stop(self) -> Deferred[None]:
        result: Deferred[None] = self._listener.stopListening()
        return result

    def issue(self, request: Request) -> bytes:
        query = parse_qs(urlsplit(request.uri.decode()).query)
        scopes = query.get("scope", [])
        self.requests.append(" ".join(scopes))
        header = (request.getHeader("authorization") or "").split(" ", 1)
        user = ""
        if len(header) == 2 and header[0] == "Basic":
            name, _, password = base64.b64decode(header[1]).decode().partition(":")
            if self.users.get(name) == password:
                user = name
        if not user:
            request.setResponseCode(401)
            request.setHeader("content-type", "application/json")
            return b'{"errors":[{"code":"UNAUTHORIZED","message":"incorrect username or password"}]}'
        access = []
        for scope in scopes:
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            access.append({"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]})
        token = self.jwt(user, access)
        request.setHeader("content-type", "application/json")
        return json.dumps({"token": token, "access_token": token, "expires_in": 300}).encode()

    def jwt(self, subject: str, access: list[dict[str, Any]]) -> str:
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        now = int(time.time())
        der = self.signer.cert.public_bytes(serialization.Encoding.DER)
        head = {"typ": "JWT", "alg": "ES256", "x5c": [base64.b64encode(der).decode()]}
        claims = {"iss": self.issuer, "sub": subject, "aud": self.service, "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": secrets.token_hex(8), "access": access}
        signing_input = _b64url(json.dumps(head).encode()) + b"." + _b64url(json.dumps(claims).encode())
        r, s_ = decode_dss_signature(self.signer.key.sign(signing_input, ec.ECDSA(hashes.SHA256())))
        signature = r.to_bytes(32, "big") + s_.to_bytes(32, "big")
        return (signing_input + b"." + _b64url(signature)).decode()
