# -*- test-case-name: ross.test.integration.test_registry -*-
"""
HTTP to registries over treq: where each registry is (https, or plain http
for the C{--insecure-registry} ones), which CA its certificate must chain
to (C{<certs-dir>/HOST:PORT/ca.crt}, else the system's roots; hostnames
verified with service-identity), authentication (basic, and bearer tokens
from the realm a 401 names, cached per scope and credentials) and the
mapping of registry answers to Ross's errors: 401 UNAUTHENTICATED, 403
PERMISSION_DENIED, 404 NOT_FOUND, 429 RESOURCE_EXHAUSTED, 5xx and
unreachable hosts UNAVAILABLE, TLS failures UNAVAILABLE with their own
message, a digest the registry finds wrong DATA_LOSS, other 4xx
INVALID_ARGUMENT.

A L{Session} is one conversation with one repository; L{Session.abort}
stops every request it has in flight (a client that went away).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence
from urllib.parse import urlencode, urljoin, urlsplit

import treq
from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import ssl
from twisted.internet.defer import CancelledError, Deferred, DeferredLock
from twisted.internet.error import ConnectError, ConnectionLost, DNSLookupError, TimeoutError
from twisted.internet.interfaces import IOpenSSLClientConnectionCreator, IPushProducer, IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.failure import Failure
from twisted.web.client import Agent, HTTPConnectionPool, ResponseFailed
from twisted.web.http_headers import Headers
from twisted.web.iweb import IPolicyForHTTPS, IResponse
from treq.client import HTTPClient
from zope.interface import implementer

from ross.engine.reactors import IEngineReactor
from ross.engine.registry.auth import ANONYMOUS, Challenge, Credentials, Token, TokenCache, parse_challenges
from ross.errors import (
    DataLoss,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    RossError,
    Unauthenticated,
    Unavailable,
)

#: Largest registry answer read whole (manifests, indexes, error bodies, tokens).
SMALL_BODY = 4 << 20

#: docker.io's API lives on another host than its name.
DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "registry-1.docker.io"

USER_AGENT = "ross/0.1"


def api_host(domain: str) -> str:
    return DOCKER_HUB_API if domain == DOCKER_HUB else domain


class Hosts:
    """
    How each registry is reached: its scheme, and the certificates its TLS
    must chain to. Read L{prepare} first for a host (it reads the CA file
    in a thread); the TLS policy then only looks the answer up.

    @param insecure: HOST:PORT names reached over plain http.
    @param certs_dir: directory of C{HOST:PORT/ca.crt} files.
    """

    def __init__(self, reactor: IReactorThreads, insecure: Iterable[str], certs_dir: Path) -> None:
        self._reactor = reactor
        self.insecure = frozenset(insecure)
        self.certs_dir = certs_dir
        self._trust: dict[str, list[bytes]] = {}

    def is_insecure(self, domain: str) -> bool:
        return domain in self.insecure

    def base_url(self, domain: str) -> str:
        scheme = "http" if self.is_insecure(domain) else "https"
        return f"{scheme}://{api_host(domain)}"

    def prepare(self, netloc: str) -> Deferred[None]:
        """
        Read the CA certificates of C{netloc} (HOST or HOST:PORT) from the
        certs directory, in a thread.
        """
        def read() -> None:
            pems: list[bytes] = []
            names = [netloc] if ":" in netloc else [netloc, f"{netloc}:443"]
            for name in names:
                directory = self.certs_dir / name
                try:
                    entries = sorted(directory.iterdir())
                except OSError:
                    continue
                for entry in entries:
                    if entry.suffix == ".crt" and entry.is_file():
                        pems.append(entry.read_bytes())
            self._trust[netloc] = pems

        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), read)

    def trust_for(self, hostname: str, port: int) -> list[bytes]:
        netloc = hostname if port == 443 else f"{hostname}:{port}"
        found = self._trust.get(netloc)
        if found is None and port == 443:
            found = self._trust.get(f"{hostname}:443")
        return found or []


@implementer(IPolicyForHTTPS)
class _TLSPolicy:
    """
    TLS for registries: the registry's own CA when its certs directory has
    one, else the platform's roots; the hostname always verified.
    """

    def __init__(self, hosts: Hosts) -> None:
        self._hosts = hosts

    def creatorForNetloc(self, hostname: bytes, port: int) -> IOpenSSLClientConnectionCreator:
        name = hostname.decode("ascii")
        pems = self._hosts.trust_for(name, port)
        trust: Any
        if pems:
            certificates = []
            for pem in pems:
                certificates += [ssl.Certificate.loadPEM(block) for block in _pem_blocks(pem)]
            trust = ssl.trustRootFromCertificates(certificates)  # type: ignore[no-untyped-call]
        else:
            trust = ssl.platformTrust()  # type: ignore[no-untyped-call]
        return ssl.optionsForClientTLS(name, trustRoot=trust)


def _pem_blocks(data: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    return [block + marker for block in data.split(marker) if b"-----BEGIN CERTIFICATE-----" in block]


def describe_failure(failure: Failure) -> str:
    """
    What went wrong with a request that got no (complete) answer, in a
    user's words.
    """
    reasons = [failure]
    value = failure.value
    if value is not None and hasattr(value, "reasons"):
        reasons = list(value.reasons) or reasons
    for reason in reasons:
        if reason.check(VerificationError):
            return f"TLS certificate does not match the host name ({reason.value})"
        if reason.check(SSL.Error):
            detail = _ssl_detail(reason.value)
            return f"TLS handshake failed: {detail}"
    for reason in reasons:
        if reason.check(DNSLookupError):
            return "no such host (DNS lookup failed)"
        if reason.check(ConnectError):
            text = str(reason.value).strip() or type(reason.value).__name__
            return "connection refused" if "refused" in text.lower() else text
        if reason.check(TimeoutError):
            return "connection timed out"
    return "the connection was closed before the answer was complete"


def _ssl_detail(error: Any) -> str:
    try:
        parts = [str(item[2]) for item in error.args[0] if len(item) > 2 and item[2]]
    except (IndexError, TypeError):
        parts = []
    text = ", ".join(parts) or str(error)
    if "certificate verify failed" in text:
        return "certificate signed by unknown authority (certificate verify failed)"
    return text


def _is_tls(message: str) -> bool:
    return message.startswith("TLS ")


def registry_errors(body: bytes) -> list[tuple[str, str]]:
    """(code, message) of each error in a registry's JSON error body."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return []
    errors = doc.get("errors") if isinstance(doc, Mapping) else None
    if not isinstance(errors, list):
        return []
    out = []
    for e in errors:
        if isinstance(e, Mapping):
            out.append((str(e.get("code", "") or ""), str(e.get("message", "") or "")))
    return out


async def read_body(response: IResponse, limit: int = SMALL_BODY, what: str = "registry answer") -> bytes:
    """
    The whole body of C{response}, refused (InvalidArgument) past C{limit}
    bytes. Unavailable when the connection breaks first.
    """
    length = response.length
    if isinstance(length, int) and length > limit:
        discard(response)
        raise InvalidArgument(f"{what} is too large ({length} bytes)")
    parts: list[bytes] = []
    total = 0

    def collect(data: bytes) -> None:
        nonlocal total
        total += len(data)
        if total > limit:
            raise InvalidArgument(f"{what} is too large (over {limit} bytes)")
        parts.append(data)

    try:
        await treq.collect(response, collect)
    except ResponseFailed as e:
        raise Unavailable(f"reading {what}: {describe_failure(Failure(e))}") from None
    return b"".join(parts)


def discard(response: IResponse) -> None:
    """Read and drop the body of C{response} (so its connection is freed)."""
    d = treq.collect(response, lambda data: None)
    d.addErrback(lambda _: None)


class Client:
    """
    The registry client of a daemon: one connection pool, the TLS policy,
    the token cache and what each registry asked for last time (so later
    sessions authenticate before a first 401).
    """

    def __init__(self, reactor: IEngineReactor, hosts: Hosts, clock: Callable[[], float] = time.time) -> None:
        self.reactor = reactor
        self.hosts = hosts
        self._clock = clock
        self.pool = HTTPConnectionPool(reactor, persistent=True)  # type: ignore[no-untyped-call]
        self.pool.maxPersistentPerHost = 8
        self.pool.retryAutomatically = False
        agent = Agent(reactor, contextFactory=_TLSPolicy(hosts), pool=self.pool,  # type: ignore[no-untyped-call]
                      connectTimeout=30)
        self.http = HTTPClient(agent)
        self.tokens = TokenCache()
        self.challenges: dict[str, Challenge] = {}

    def session(self, domain: str, repository: str, credentials: Credentials = ANONYMOUS,
                scopes: Sequence[str] = ()) -> Session:
        """
        A conversation with C{domain}/C{repository}; C{scopes} are the
        token scopes it needs ("repository:NAME:pull,push").
        """
        return Session(self, domain, repository, credentials,
                       tuple(scopes) or (f"repository:{repository}:pull",))

    def forget(self, domain: str) -> None:
        """Drop the tokens and the challenge remembered for C{domain}."""
        self.challenges.pop(domain, None)
        self.tokens.forget(domain)

    def close(self) -> Deferred[None]:
        closed: Deferred[None] = self.pool.closeCachedConnections()  # type: ignore[no-untyped-call]
        return closed

    def now(self) -> float:
        return self._clock()


class Session:
    """
    Requests to one repository of one registry, authenticated as the
    registry asks (a 401 is answered once: with basic auth, or a bearer
    token for this session's scopes from the challenge's realm).
    """

    def __init__(self, client: Client, domain: str, repository: str, credentials: Credentials,
                 scopes: tuple[str, ...]) -> None:
        self.client = client
        self.domain = domain
        self.repository = repository
        self.credentials = credentials
        self.scopes = scopes
        self.base = client.hosts.base_url(domain)
        self._authorization: str | None = None
        self._prepared = False
        self._prepare_lock = DeferredLock()
        self._pending: set[Deferred[Any]] = set()
        self._producers: set[IPushProducer] = set()
        self.aborted = False

    def url(self, path: str) -> str:
        """Absolute URL of C{path} ("/v2/..." or what a Location header said)."""
        return urljoin(self.base + "/", path)

    def repo_url(self, tail: str) -> str:
        return self.url(f"/v2/{self.repository}/{tail}")

    # -- cancellation

    def abort(self) -> None:
        """
        Stop everything in flight: pending requests are cancelled, bodies
        being received are cut; later requests fail with CancelledError.
        """
        self.aborted = True
        for d in list(self._pending):
            d.cancel()
        for producer in list(self._producers):
            producer.stopProducing()

    def receiving(self, producer: IPushProducer) -> None:
        """A body is being received through C{producer} (L{abort} cuts it)."""
        if self.aborted:
            producer.stopProducing()
        self._producers.add(producer)

    def received(self, producer: IPushProducer) -> None:
        self._producers.discard(producer)

    async def _track(self, d: Deferred[Any]) -> Any:
        self._pending.add(d)
        try:
            return await d
        finally:
            self._pending.discard(d)

    # -- requests

    async def _prepare(self) -> None:
        """
        Once per session (concurrent first requests wait for the one doing
        it): read the registry's CA, and authenticate ahead when the
        registry asked for it before.
        """
        async with self._prepare_lock:
            if self._prepared:
                return
            if not self.client.hosts.is_insecure(self.domain):
                await self.client.hosts.prepare(api_host(self.domain))
            known = self.client.challenges.get(self.domain)
            if known is not None:
                # The scope it named was another request's.
                await self._authorize(Challenge(known.scheme, {k: v for k, v in known.params.items()
                                                               if k != "scope"}))
            self._prepared = True

    async def request(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None = None,
        body: Callable[[], Any] | None = None,
        ok: Sequence[int] = (200,),
        not_found: str = "",
    ) -> IResponse:
        """
        Send a request (C{body()} makes its body: bytes or an
        IBodyProducer, made again for a retry after a 401); the response
        when its status is in C{ok}, its body unread (redirects followed,
        as blob downloads need). Otherwise the error the status means
        (L{error_for}); C{not_found} starts the message of a 404.
        """
        await self._prepare()
        retried = False
        while True:
            if self.aborted:
                raise CancelledError("the registry operation was cancelled")
            h = Headers({"User-Agent": [USER_AGENT]})
            for key, value in (headers or {}).items():
                h.setRawHeaders(key, [value])
            if self._authorization:
                h.setRawHeaders("Authorization", [self._authorization])
            data = body() if body is not None else None
            try:
                response: IResponse = await self._track(self.client.http.request(
                    method, url, headers=h, data=data, unbuffered=True))
            except CancelledError:
                raise
            except RossError:
                raise
            except Exception as e:
                # A body that failed to produce (a stored blob found
                # corrupt) is reported as itself, not as a network error.
                raise _own_error(Failure(e)) or self.unreachable(method, url, Failure(e)) from None
            if response.code == 401 and not retried:
                challenges = parse_challenges(response.headers.getRawHeaders("www-authenticate", []))
                await self._track(Deferred.fromCoroutine(read_body(response)))
                challenge = _preferred(challenges)
                if challenge is not None:
                    self.client.challenges[self.domain] = challenge
                    if await self._authorize(challenge, fresh=True):
                        retried = True
                        continue
                raise Unauthenticated(f"{self.domain}: unauthorized: authentication required")
            if response.code in ok:
                return response
            raise await self.error_for(response, not_found)

    def unreachable(self, method: str, url: str, failure: Failure) -> Unreachable:
        detail = describe_failure(failure)
        message = f'{method.title()} "{url}": {detail}'
        if _is_tls(detail):
            message += (f" (trust its CA in {self.client.hosts.certs_dir}/{self.domain}/ca.crt, "
                        f"or reach it over http with --insecure-registry {self.domain})")
        return Unreachable(message, failure)

    async def error_for(self, response: IResponse, not_found: str = "") -> RossError:
        """The error a registry's failure answer means, its body read."""
        try:
            body = await self._track(Deferred.fromCoroutine(read_body(response, 64 << 10)))
        except (RossError, CancelledError):
            body = b""
        errors = registry_errors(body)
        detail = "; ".join(f"{code.lower().replace('_', ' ')}: {message}" if code else message
                           for code, message in errors)
        status = response.code
        phrase = response.phrase.decode("latin-1") if isinstance(response.phrase, bytes) else str(response.phrase)
        if status == 401:
            return Unauthenticated(f"{self.domain}: {detail or 'unauthorized: authentication required'}")
        if status == 403:
            return PermissionDenied(f"{self.domain}: {detail or 'denied: requested access to the resource is denied'}")
        if status == 404:
            return NotFound(f"{not_found or 'not found'}: {detail or 'not found'}")
        if any(code == "DIGEST_INVALID" for code, _ in errors):
            # The registry hashed what Ross sent and found another digest:
            # the stored blob no longer matches its name.
            return DataLoss(f"{self.domain}: {detail}")
        if status == 429:
            return ResourceExhausted(f"{self.domain}: toomanyrequests: {detail or 'too many requests'}")
        if status >= 500:
            return Unavailable(f"{self.domain}: received unexpected HTTP status: {status} {phrase}"
                               + (f" ({detail})" if detail else ""))
        return InvalidArgument(f"{self.domain}: {detail or f'unexpected HTTP status {status} {phrase}'}")

    # -- authentication

    async def _authorize(self, challenge: Challenge, fresh: bool = False) -> bool:
        """
        Set the Authorization header for C{challenge}; False when it cannot
        be answered (basic auth without credentials). C{fresh} asks for a
        new token even when one is cached (the registry refused it).
        """
        if challenge.scheme == "basic":
            if self.credentials.empty:
                return False
            self._authorization = self.credentials.basic()
            return True
        if challenge.scheme == "bearer":
            self._authorization = "Bearer " + await self._token(challenge, fresh)
            return True
        return False

    async def _token(self, challenge: Challenge, fresh: bool) -> str:
        realm = challenge.params.get("realm", "")
        if not realm.startswith(("https://", "http://")):
            raise Unauthenticated(f"{self.domain}: the registry asked for a token from an invalid realm {realm!r}")
        service = challenge.params.get("service", "")
        scopes = list(self.scopes)
        asked = challenge.params.get("scope", "")
        if asked and asked not in scopes:
            scopes.append(asked)
        key = (realm, service, " ".join(sorted(scopes)), self.credentials.fingerprint(), self.domain)
        cached = None if fresh else self.client.tokens.get(key, self.client.now())
        if cached is not None:
            return cached
        netloc = urlsplit(realm).netloc
        if realm.startswith("https://"):
            await self.client.hosts.prepare(netloc)
        h = Headers({"User-Agent": [USER_AGENT]})
        query = [("service", service)] if service else []
        query += [("scope", s) for s in scopes]
        if self.credentials.identity_token:
            form = urlencode([("grant_type", "refresh_token"), ("refresh_token", self.credentials.identity_token),
                              ("client_id", "ross"), *query]).encode()
            h.setRawHeaders("Content-Type", ["application/x-www-form-urlencoded"])
            d = self.client.http.request("POST", realm, headers=h, data=form, unbuffered=True)
        else:
            if not self.credentials.empty:
                h.setRawHeaders("Authorization", [self.credentials.basic()])
            url = realm + ("&" if "?" in realm else "?") + urlencode(query)
            d = self.client.http.request("GET", url, headers=h, unbuffered=True)
        try:
            response: IResponse = await self._track(d)
        except CancelledError:
            raise
        except Exception as e:
            raise self.unreachable("GET", realm, Failure(e)) from None
        body = await self._track(Deferred.fromCoroutine(read_body(response, 1 << 20, "token")))
        if response.code in (401, 403):
            errors = registry_errors(body)
            detail = "; ".join(m for _, m in errors) or "incorrect username or password"
            raise Unauthenticated(f"{self.domain}: unauthorized: {detail}")
        if response.code != 200:
            raise Unavailable(f"{self.domain}: the token server {netloc} answered HTTP {response.code}")
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
            expires_in = int(doc.get("expires_in") or 60)
        except (ValueError, AttributeError, TypeError):
            token = None
            expires_in = 0
        if not isinstance(token, str) or not token:
            raise Unauthenticated(f"{self.domain}: the token server {netloc} gave no token")
        # Asked again a little before it runs out.
        self.client.tokens.put(key, Token(token, self.client.now() + max(0, expires_in - 5)))
        return token


def _own_error(failure: Failure) -> RossError | None:
    """The Ross error inside a failed request (its body producer's), if any."""
    for reason in getattr(failure.value, "reasons", None) or [failure]:
        if isinstance(reason.value, RossError):
            return reason.value
    return None


def _preferred(challenges: Sequence[Challenge]) -> Challenge | None:
    for scheme in ("bearer", "basic"):
        for c in challenges:
            if c.scheme == scheme:
                return c
    return None


class Unreachable(Unavailable):
    """A request that got no (complete) answer; C{failure} says why."""

    def __init__(self, message: str, failure: Failure) -> None:
        super().__init__(message)
        self.failure = failure


def is_connection_cut(failure: Failure) -> bool:
    """
    Whether an answer stopped because an established connection broke
    (worth trying again), not because none could be made or trusted.
    """
    if not failure.check(ResponseFailed, ConnectionLost):
        return False
    reasons = getattr(failure.value, "reasons", None) or []
    return not any(r.check(SSL.Error, VerificationError) for r in reasons)
