# -*- test-case-name: ross.test.test_server -*-
"""
The gRPC server as a twisted.application service: listeners, transport
security, the authentication interceptor, and an orderly stop.
"""

from __future__ import annotations

import hmac
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence

import attrs
import grpc
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from ross.address import Listener
from ross.engine.fsutil import prepare_socket_path
from ross.protocols.bridge import Bridge

# Big enough for a layer chunk with room to spare; larger messages are
# refused with RESOURCE_EXHAUSTED.
MAX_MESSAGE = 8 * 1024 * 1024


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


class TokenInterceptor(grpc.ServerInterceptor):
    """
    Refuses every call, streams included, whose C{authorization} metadata is
    not C{Bearer <token>}, compared in constant time.
    """

    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler[Any, Any] | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        given = b""
        for key, value in details.invocation_metadata or ():
            if key == "authorization":
                given = value.encode() if isinstance(value, str) else value
                break
        if hmac.compare_digest(given, self._expected):
            return continuation(details)
        handler = continuation(details)
        if handler is None:
            return None
        return _refusing(handler, "missing or invalid bearer token")


def _refusing(handler: grpc.RpcMethodHandler[Any, Any], message: str) -> grpc.RpcMethodHandler[Any, Any]:
    def deny(request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

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
    @param workers: gRPC threads; also the cap on concurrent RPCs, so excess
        calls are refused at once (RESOURCE_EXHAUSTED) instead of queueing.
    @param name: what the log calls it ("API", "CRI").
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
        workers: int = 128,
        grace: float = 5.0,
        name: str = "API",
    ) -> None:
        self._reactor = reactor
        self.bridge = bridge
        self._handlers = list(handlers)
        self.listeners = list(listeners)
        self._tls = tls
        self._token = token
        self._workers = workers
        self._grace = grace
        self._name = name
        self._server: grpc.Server | None = None
        self.ports: dict[str, int] = {}

    def bind(self) -> None:
        """
        Create the server and bind every listener; raises C{SystemExit} with
        a clear message when an address cannot be used.
        """
        interceptors: list[grpc.ServerInterceptor] = [TokenInterceptor(self._token)] if self._token else []
        server = grpc.server(
            ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="ross-grpc"),
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
        self._server = server

    def startService(self) -> None:
        if self._server is None:
            self.bind()
        assert self._server is not None
        self._server.start()
        for listener in self.listeners:
            self._log.info("{name} listening on {address}", name=self._name, address=self.address_of(listener))
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
        stopped = server.stop(self._grace)
        d = deferToThreadPool(self._reactor, self._reactor.getThreadPool(), stopped.wait)
        return d.addCallback(lambda _: self._cleanup())

    def _cleanup(self) -> None:
        for listener in self.listeners:
            if listener.scheme == "unix":
                try:
                    os.unlink(listener.path)
                except FileNotFoundError:
                    pass
        self._log.info("{name} stopped", name=self._name)
