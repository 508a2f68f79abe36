# -*- test-case-name: ross.test.integration.test_dockerapi -*-
"""
docker's REST routing: versioned (C{/v1.44/...}) and unversioned paths,
query and body parsing as dockerd does it, and the one error map from the
engine's errors to docker's status codes and C{{"message": ...}} bodies.

A handler is C{async def handler(call: Call) -> result}: a JSON-able value
(200), a L{Reply}, or None (204). A handler that streams writes through
C{call.request} itself (L{Call.stream_json} and friends); the router ends
the response when the handler returns. A client that goes away cancels
the handler.
"""

from __future__ import annotations

import hmac
import json
import re
from typing import Any, Awaitable, Callable, Iterable, Mapping, cast

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import ITCPTransport
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Request

import ross
from ross import errors

#: The API version dockerd 25 announces, and the oldest it accepts.
API_VERSION = (1, 44)
MIN_API_VERSION = (1, 24)

_VERSIONED = re.compile(r"^/v([0-9]+)\.([0-9]+)(/.*)$")

_CODES: list[tuple[type[BaseException], int]] = [
    (errors.InvalidArgument, 400),
    (errors.NotFound, 404),
    (errors.AlreadyExists, 409),
    (errors.FailedPrecondition, 409),
    (errors.Aborted, 409),
    (errors.PermissionDenied, 403),
    (errors.Unauthenticated, 401),
    (errors.ResourceExhausted, 507),
    (errors.Unavailable, 503),
    (errors.DeadlineExceeded, 504),
    (errors.Unimplemented, 501),
]

_log = Logger()


def version_text(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


class HTTPError(Exception):
    """
    An answer docker gives with a code of its own (304 for a start of a
    running container, say), not an engine error.
    """

    def __init__(self, code: int, message: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def status_of(failure: Failure) -> tuple[int, str]:
    """
    The one place where an error becomes a status code and message. What
    is not a domain error is a bug: 500, logged with its traceback.
    """
    if isinstance(failure.value, HTTPError):
        return failure.value.code, failure.value.message
    for kind, code in _CODES:
        if failure.check(kind):
            return code, str(failure.value)
    _log.failure("unexpected error in the Docker API", failure)
    return 500, f"internal error: {failure.getErrorMessage()}"


@attrs.frozen
class Reply:
    """
    A response other than "200 with this JSON": another code, raw bytes,
    extra headers.
    """

    code: int = 200
    body: Any = None
    content_type: str = "application/json"
    headers: Mapping[str, str] = attrs.field(factory=dict)


class GoObject(dict[str, Any]):
    """
    A JSON object of a request body, whose keys are found whatever their
    case, as Go's encoding/json finds them: dockerd takes "detachKeys"
    for "DetachKeys", and clients rely on it.
    """

    def _key(self, key: str) -> str:
        if dict.__contains__(self, key):
            return key
        folded = key.lower()
        for found in self:
            if found.lower() == folded:
                return str(found)
        return key

    def __getitem__(self, key: str) -> Any:
        return dict.__getitem__(self, self._key(key))

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, self._key(key))

    def get(self, key: str, default: Any = None) -> Any:
        return dict.get(self, self._key(key), default)


def dumps(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


_FALSE = ("", "0", "no", "false", "none")


class Call:
    """
    One request as a handler sees it: path parameters, docker's query
    conventions, the body, and the response when it streams.
    """

    def __init__(self, request: Request, params: Mapping[str, str], version: tuple[int, int]) -> None:
        self.request = request
        self.params = params
        self.version = version
        #: Set once the response is taken over by L{hijack}: no more HTTP.
        self.hijacked = False

    def __getitem__(self, name: str) -> str:
        return self.params[name]

    def query(self, name: str, default: str = "") -> str:
        values = self.request.args.get(name.encode())
        return values[0].decode(errors="replace") if values else default

    def queries(self, name: str) -> list[str]:
        return [v.decode(errors="replace") for v in self.request.args.get(name.encode(), [])]

    def has(self, name: str) -> bool:
        return name.encode() in self.request.args

    def flag(self, name: str, default: bool = False) -> bool:
        """
        docker's boolean parameter: absent is C{default}; "", 0, no, false,
        none are false; anything else is true.
        """
        if not self.has(name):
            return default
        return self.query(name).strip().lower() not in _FALSE

    def integer(self, name: str, default: int | None = None) -> int | None:
        text = self.query(name).strip()
        if not text:
            return default
        try:
            return int(text)
        except ValueError:
            raise errors.InvalidArgument(f"invalid value for {name}: {text[:64]!r} is not an integer")

    def header(self, name: str) -> str:
        value = self.request.getHeader(name)
        return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")

    def body(self) -> bytes:
        content = self.request.content
        if content is None:
            return b""
        content.seek(0)
        data: bytes = content.read()
        return data

    def json(self) -> Any:
        """
        The body as JSON (None when empty); 400 when it is not JSON.
        """
        data = self.body()
        if not data.strip():
            return None
        try:
            return json.loads(data, object_hook=GoObject)
        except ValueError as e:
            raise errors.InvalidArgument(f"invalid JSON in the request body: {e}")
        except RecursionError:
            raise errors.InvalidArgument("invalid JSON in the request body: nested too deeply") from None

    def filters(self) -> dict[str, list[str]]:
        """
        docker's C{filters} parameter: C{{"key": {"value": true}}} or the
        older C{{"key": ["value"]}}, as key -> values.
        """
        text = self.query("filters")
        if not text:
            return {}
        try:
            raw = json.loads(text)
        except (ValueError, RecursionError):
            raise errors.InvalidArgument(f"invalid filters: {text[:128]!r} is not JSON") from None
        if not isinstance(raw, dict):
            raise errors.InvalidArgument("invalid filters: expected an object")
        found: dict[str, list[str]] = {}
        for key, values in raw.items():
            if isinstance(values, dict):
                found[key] = [str(v) for v, on in values.items() if on]
            elif isinstance(values, list):
                found[key] = [str(v) for v in values]
            else:
                raise errors.InvalidArgument(f"invalid filter {key!r}: expected an object or a list")
        return found

    def at_least(self, major: int, minor: int) -> bool:
        return self.version >= (major, minor)

    # -- streaming responses

    def start(self, content_type: str = "application/json", code: int = 200) -> None:
        """
        Send the head of a streamed response now (clients wait for it
        before reading on).
        """
        self.request.setResponseCode(code)
        self.request.setHeader("Content-Type", content_type)
        self.request.write(b"")

    def write(self, data: bytes) -> None:
        if not self.request.finished and not self.request._disconnected:
            self.request.write(data)

    def cut(self) -> None:
        """
        Cut the connection before the streamed body's end: what a stream
        whose end would pass for whole (a tar cut short reads as a shorter
        tar) does when it fails, so that the client sees the failure.
        """
        transport = self.request.channel.transport if self.request.channel is not None else None
        if transport is not None:
            cast(ITCPTransport, transport).abortConnection()

    def write_json(self, value: Any) -> None:
        """One object of a JSON stream (progress, events, stats)."""
        self.write(dumps(value))


Handler = Callable[[Call], Awaitable[Any]]


@attrs.frozen
class Route:
    method: bytes
    pattern: re.Pattern[str]
    handler: Handler
    #: The path as written, C{{name}} segments and all.
    path: str


def route(method: str, path: str, handler: Handler) -> Route:
    """
    A route for C{path} with C{{name}} segments (C{{name:.*}} may hold
    slashes: image references).
    """

    def segment(match: re.Match[str]) -> str:
        name, _, kind = match.group(1).partition(":")
        return f"(?P<{name}>{'.+' if kind == '.*' else '[^/]+'})"

    return Route(method.encode(), re.compile("^" + re.sub(r"\{([^}]+)\}", segment, path) + "/?$"), handler, path)


class Router(Resource):
    """
    The one resource of the Docker API site.
    """

    isLeaf = True

    def __init__(self, routes: Iterable[Route], token: str | None = None) -> None:
        super().__init__()
        self._routes = list(routes)
        self._expected = f"Bearer {token}".encode() if token else None

    def render(self, request: Request) -> Any:
        request.setHeader("Api-Version", version_text(API_VERSION))
        request.setHeader("Server", f"Docker/{ross.__version__} (linux)")
        request.setHeader("Ostype", "linux")
        request.setHeader("Docker-Experimental", "false")
        if self._expected is not None:
            # The daemon's --auth-token-file holds here as on the gRPC API
            # (docker's clients send it from config.json's HttpHeaders).
            given = request.getHeader(b"authorization") or b""
            if not hmac.compare_digest(given, self._expected):
                return self._error(request, 401, "missing or invalid bearer token")
        path = (request.path or b"/").decode(errors="replace")
        version = API_VERSION
        versioned = _VERSIONED.match(path)
        if versioned:
            version = (int(versioned.group(1)), int(versioned.group(2)))
            path = versioned.group(3)
            if version < MIN_API_VERSION:
                return self._error(request, 400, f"client version {version_text(version)} is too old. Minimum "
                                   f"supported API version is {version_text(MIN_API_VERSION)}, please upgrade "
                                   "your client to a newer version")
            # A newer client is answered as this version would answer it.
            version = min(version, API_VERSION)
        found = None
        for r in self._routes:
            if r.method != request.method:
                continue
            match = r.pattern.match(path)
            if match:
                found = (r, match)
                break
        if found is None:
            return self._error(request, 404, "page not found")
        r, match = found
        call = Call(request, match.groupdict(), version)
        d = Deferred.fromCoroutine(_run(r.handler, call))
        request.notifyFinish().addErrback(lambda _: d.cancel())
        d.addCallbacks(lambda result: self._reply(call, result), lambda f: self._failed(call, f))
        d.addErrback(lambda f: _log.failure("answering a Docker API request failed", f))
        return NOT_DONE_YET

    def _error(self, request: Request, code: int, message: str) -> bytes:
        request.setResponseCode(code)
        request.setHeader("Content-Type", "application/json")
        return dumps({"message": message})

    def _reply(self, call: Call, result: Any) -> None:
        request = call.request
        if request.finished or request._disconnected:
            return
        if call.hijacked or request.startedWriting:
            request.finish()
            return
        if result is None:
            result = Reply(204)
        if not isinstance(result, Reply):
            result = Reply(200, result)
        request.setResponseCode(result.code)
        for name, value in result.headers.items():
            request.setHeader(name, value)
        if result.code in (204, 304) or result.body is None:
            request.finish()
            return
        body = result.body if isinstance(result.body, bytes) else dumps(result.body)
        request.setHeader("Content-Type", result.content_type)
        request.setHeader("Content-Length", str(len(body)))
        request.write(body)
        request.finish()

    def _failed(self, call: Call, failure: Failure) -> None:
        request = call.request
        if failure.check(CancelledError) or request.finished or request._disconnected:
            return
        code, message = status_of(failure)
        if call.hijacked or request.startedWriting:
            # Too late for a status: the stream just ends (a JSON stream's
            # clients read its end as such), unless it was cut (L{Call.cut}).
            if not request._disconnected:
                request.finish()
            return
        request.setResponseCode(code)
        if code == 304:
            request.finish()
            return
        body = dumps({"message": message})
        request.setHeader("Content-Type", "application/json")
        request.setHeader("Content-Length", str(len(body)))
        request.write(body)
        request.finish()


async def _run(handler: Handler, call: Call) -> Any:
    return await handler(call)
