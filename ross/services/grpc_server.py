# -*- test-case-name: ross.test.test_server -*-
"""
The gRPC server as a twisted.application service: listeners, transport
security, the authentication interceptor, and an orderly stop.

grpcio's asyncio server runs on an event loop of its own, in one thread
beside the reactor (L{GrpcLoop}); L{ross.protocols.bridge} hands each call to
the reactor and its answer back.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import threading
from typing import Any, Awaitable, Callable, Coroutine, Sequence, TypeVar

import attrs
import grpc
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure

from ross.address import Listener
from ross.engine.fsutil import prepare_socket_path
from ross.protocols.bridge import Bridge

# Big enough for a layer chunk with room to spare; larger messages are
# refused with RESOURCE_EXHAUSTED.
MAX_MESSAGE = 8 * 1024 * 1024
# Longest the reactor waits for the loop to bind or start a server.
_SETUP_TIMEOUT = 30.0

T = TypeVar("T")


class GrpcLoop:
    """
    The asyncio event loop grpcio's servers run on, in a thread of its own;
    one per process (grpc.aio keeps per-loop state), made at first use.
    """

    _lock = threading.Lock()
    _instance: GrpcLoop | None = None

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="ross-grpc", daemon=True)
        self._thread.start()

    @classmethod
    def shared(cls) -> GrpcLoop:
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
            return cls._instance

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def wait(self, coroutine: Coroutine[Any, Any, T], timeout: float = _SETUP_TIMEOUT) -> T:
        """
        Run C{coroutine} in the loop and wait for its result: for set-up,
        which happens before anything is served.
        """
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)  # bounded: timeout

    def deferred(self, reactor: Any, coroutine: Coroutine[Any, Any, T]) -> Deferred[T]:
        """
        Run C{coroutine} in the loop; its result, in the reactor.
        """
        d: Deferred[T] = Deferred()

        def done(future: Any) -> None:
            try:
                result = future.result()
            except BaseException:
                reactor.callFromThread(d.errback, Failure())
            else:
                reactor.callFromThread(d.callback, result)

        asyncio.run_coroutine_threadsafe(coroutine, self.loop).add_done_callback(done)
        return d


@attrs.frozen
class TLSFiles:
    """
    Server certificate and key; with C{ca}, clients must present a
    certificate signed by it (mutual TLS).
    """

    cert: bytes
    key: bytes
    ca: bytes | None = None

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.ca,
            require_client_auth=self.ca is not None,
        )


class TokenInterceptor(grpc.aio.ServerInterceptor):
    """
    Refuses every call, streams included, whose C{authorization} metadata is
    not C{Bearer <token>}, compared in constant time.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        given = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                break
        handler = await continuation(details)
        if handler is None or hmac.compare_digest(given, self._expected):
            return handler
        return _refusing(handler, "missing or invalid bearer token")


def _refusing(handler: grpc.RpcMethodHandler[Any, Any], message: str) -> grpc.RpcMethodHandler[Any, Any]:
    async def deny(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(deny)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(deny)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(deny)
    return grpc.unary_unary_rpc_method_handler(deny)


class GrpcServerService(Service):
    """
    Serves the API on every listener while running.

    @param handlers: generic handlers built by the bridge, one per service.
    @param workers: the cap on concurrent RPCs: excess calls are refused at
        once (RESOURCE_EXHAUSTED) instead of queueing.
    @param what: what it serves, for the log ("API", "CRI").
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        bridge: Bridge,
        handlers: Sequence[grpc.GenericRpcHandler],
        listeners: Sequence[Listener],
        tls: TLSFiles | None = None,
        token: str | None = None,
        workers: int = 1024,
        grace: float = 5.0,
        what: str = "API",
    ) -> None:
        self._reactor = reactor
        self.what = what
        self.bridge = bridge
        self._handlers = list(handlers)
        self.listeners = list(listeners)
        self._tls = tls
        self._token = token
        self._workers = workers
        self._grace = grace
        self._loop = GrpcLoop.shared()
        self._server: grpc.aio.Server | None = None
        self.ports: dict[str, int] = {}

    def bind(self) -> None:
        """
        Create the server and bind every listener; raises C{SystemExit} with
        a clear message when an address cannot be used.
        """
        self._server = self._loop.wait(self._bind())

    async def _bind(self) -> grpc.aio.Server:
        interceptors: list[grpc.aio.ServerInterceptor] = [TokenInterceptor(self._token)] if self._token else []
        server = grpc.aio.server(
            handlers=self._handlers,
            interceptors=interceptors,
            maximum_concurrent_rpcs=self._workers,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.so_reuseport", 0),
                ("grpc.keepalive_time_ms", 60_000),
                ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
            ],
        )
        for listener in self.listeners:
            try:
                if listener.scheme == "unix":
                    prepare_socket_path(listener.path)
                if self._tls is not None and listener.scheme == "tcp":
                    port = server.add_secure_port(listener.grpc_address, self._tls.credentials())
                else:
                    port = server.add_insecure_port(listener.grpc_address)
            except (RuntimeError, OSError) as e:
                raise SystemExit(f"ross: cannot listen on {listener}: {e}")
            if listener.scheme == "unix":
                os.chmod(listener.path, 0o660)
            self.ports[str(listener)] = port
        return server

    def startService(self) -> None:
        if self._server is None:
            self.bind()
        assert self._server is not None
        self._loop.wait(self._server.start())
        for listener in self.listeners:
            self._log.info("{what} listening on {address}", what=self.what, address=self.address_of(listener))
        super().startService()

    def address_of(self, listener: Listener) -> str:
        """
        The address clients use, with the real port for tcp port 0.
        """
        if listener.scheme == "tcp":
            return str(listener._replace(port=self.ports.get(str(listener), listener.port)))
        return str(listener)

    def stopService(self) -> Deferred[None]:
        super().stopService()
        server, self._server = self._server, None
        if server is None:
            return succeed(None)
        # Streams end with UNAVAILABLE now; unary calls get the grace period.
        self.bridge.shutdown()
        d = self._loop.deferred(self._reactor, server.stop(self._grace))
        return d.addCallback(lambda _: self._cleanup())

    def _cleanup(self) -> None:
        for listener in self.listeners:
            if listener.scheme == "unix":
                try:
                    os.unlink(listener.path)
                except FileNotFoundError:
                    pass
        self._log.info("{what} stopped", what=self.what)
