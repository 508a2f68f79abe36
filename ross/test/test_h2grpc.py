"""
ross.client.h2grpc against a real grpcio server, on a unix socket and on
TCP with mutual TLS: what the CLI sees must be what grpcio's own client
would show it (responses, status codes and details, deadlines,
cancellation), with flow control holding in both directions for streams
larger than every window.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import time
from concurrent import futures
from pathlib import Path
from typing import Any, Callable, Iterator

import grpc
from twisted.trial.unittest import SynchronousTestCase

from ross.client import h2grpc
from ross.testing import certs
from ross.v1 import system_pb2

#: Seconds every call here is bounded by.
BOUND = 20.0

_identity: Callable[[bytes], bytes] = bytes


class Server:
    """
    A grpcio server serving C{test.Svc/<name>} methods over raw bytes, and
    the ross.v1 SystemService's Version: on a unix socket, or with C{tls}
    on TCP with mutual TLS (L{tls} holds the client's side).
    """

    def __init__(self, case: SynchronousTestCase, tls: bool = False, host: str = "127.0.0.1") -> None:
        self.directory = tempfile.mkdtemp(prefix="rossh2")
        case.addCleanup(shutil.rmtree, self.directory, True)
        self.path = os.path.join(self.directory, "s.sock")
        self.metadata: list[dict[str, str]] = []
        self.cancelled = threading.Event()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8),
                                  options=[("grpc.max_receive_message_length", 64 * 1024 * 1024),
                                           ("grpc.max_send_message_length", 64 * 1024 * 1024)])
        handlers: dict[str, Any] = {
            "Echo": grpc.unary_unary_rpc_method_handler(self.echo),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow),
            "Many": grpc.unary_stream_rpc_method_handler(self.many),
            "Forever": grpc.unary_stream_rpc_method_handler(self.forever),
            "Sum": grpc.stream_unary_rpc_method_handler(self.sum),
            "Chat": grpc.stream_stream_rpc_method_handler(self.chat),
            "Huge": grpc.unary_unary_rpc_method_handler(self.huge),
        }
        version = grpc.unary_unary_rpc_method_handler(
            self.version, request_deserializer=system_pb2.VersionRequest.FromString,
            response_serializer=system_pb2.VersionResponse.SerializeToString)
        self.server.add_generic_rpc_handlers((
            grpc.method_handlers_generic_handler("test.Svc", handlers),
            grpc.method_handlers_generic_handler("ross.v1.SystemService", {"Version": version}),
        ))
        self.tls: Any = None
        if tls:
            authority = certs.authority()
            server = authority.issue("localhost", server=True)
            cert, key = authority.issue("client").write(Path(self.directory), "client")
            self.ca = authority.pem
            self.tls = h2grpc.tls_context(authority.pem, cert, key)
            credentials = grpc.ssl_server_credentials([(server.key, server.cert)], authority.pem,
                                                      require_client_auth=True)
            self.host = host
            self.port = self.server.add_secure_port(f"{host}:0", credentials)
        else:
            self.server.add_insecure_port(f"unix:{self.path}")
        self.server.start()
        case.addCleanup(self.stop)

    def stop(self) -> None:
        self.server.stop(0).wait(BOUND)

    def dialer(self) -> h2grpc.UnixDialer | h2grpc.TcpDialer:
        if self.tls is not None:
            return h2grpc.TcpDialer(self.host, self.port, self.tls)
        return h2grpc.UnixDialer(self.path)

    def _seen(self, context: Any) -> None:
        self.metadata.append(dict(context.invocation_metadata()))

    def echo(self, request: bytes, context: Any) -> bytes:
        self._seen(context)
        return request

    def fail(self, request: bytes, context: Any) -> bytes:
        context.abort(grpc.StatusCode.NOT_FOUND, request.decode())
        raise AssertionError("abort returned")

    def slow(self, request: bytes, context: Any) -> bytes:
        self.cancelled.wait(float(request))
        return b"late"

    def many(self, request: bytes, context: Any) -> Iterator[bytes]:
        count, size = map(int, request.split(b"x"))
        for i in range(count):
            yield i.to_bytes(4, "big") * (size // 4)

    def forever(self, request: bytes, context: Any) -> Iterator[bytes]:
        context.add_callback(self.cancelled.set)
        deadline = time.monotonic() + BOUND
        while context.is_active() and time.monotonic() < deadline:
            yield b"tick"
            time.sleep(0.01)

    def sum(self, requests: Iterator[bytes], context: Any) -> bytes:
        total = count = 0
        for r in requests:
            total += sum(r)
            count += 1
        return f"{count} {total}".encode()

    def chat(self, requests: Iterator[bytes], context: Any) -> Iterator[bytes]:
        for r in requests:
            yield r.upper()

    def huge(self, request: bytes, context: Any) -> bytes:
        return b"h" * (h2grpc.MAX_MESSAGE + 1)

    def version(self, request: Any, context: Any) -> Any:
        return system_pb2.VersionResponse(version="9.9", kernel_version="k\u00e9rnel")


class UnixGrpcTests(SynchronousTestCase):
    tls = False

    def setUp(self) -> None:
        self.server = Server(self, self.tls)
        self.connection = h2grpc.Connection(self.server.dialer(), [("authorization", "Bearer t0k")])
        self.addCleanup(self.connection.close)

    def call(self, method: str, request: bytes, timeout: float = BOUND) -> h2grpc.Call:
        stream = self.connection.start(f"/test.Svc/{method}", timeout)
        self.connection.send_message(stream, request, end=True)
        return h2grpc.Call(self.connection, stream, _identity)

    def assertFails(self, code: grpc.StatusCode, fn: Callable[[], Any]) -> grpc.RpcError:
        try:
            fn()
        except grpc.RpcError as e:
            self.assertEqual(e.code(), code, e.details())
            return e
        self.fail(f"no {code} error")

    def test_unary(self) -> None:
        """
        A unary call's answer; the metadata and deadline reach the server.
        """
        self.assertEqual(self.call("Echo", b"hello\0world").result(), b"hello\0world")
        self.assertEqual(self.call("Echo", b"").result(), b"")
        seen = self.server.metadata[0]
        self.assertEqual(seen["authorization"], "Bearer t0k")

    def test_error(self) -> None:
        """
        The server's status code and details, percent-encoding and unicode
        undone, as grpcio raises them.
        """
        error = self.assertFails(grpc.StatusCode.NOT_FOUND,
                                 lambda: self.call("Fail", "No such container: é 100% \n x".encode()).result())
        self.assertEqual(error.details(), "No such container: é 100% \n x")
        self.assertIsInstance(error, grpc.RpcError)

    def test_unknown_method(self) -> None:
        self.assertFails(grpc.StatusCode.UNIMPLEMENTED, lambda: self.call("Nope", b"").result())

    def test_server_stream_beyond_every_window(self) -> None:
        """
        40 MB in 4000 messages (more than the connection's and the call's
        windows): all of them, in order.
        """
        responses = list(self.call("Many", b"4000x10000"))
        self.assertEqual(len(responses), 4000)
        self.assertEqual([int.from_bytes(r[:4], "big") for r in responses], list(range(4000)))
        self.assertEqual({len(r) for r in responses}, {10000})

    def test_large_messages(self) -> None:
        """
        A message of several megabytes crosses many frames both ways.
        """
        payload = os.urandom(3 * 1024 * 1024)
        self.assertEqual(self.call("Echo", payload).result(), payload)

    def test_client_stream(self) -> None:
        """
        20 MB sent in 200 messages waits for the server's window updates.
        """
        stream = self.connection.start("/test.Svc/Sum", BOUND)
        for _ in range(200):
            self.assertTrue(self.connection.send_message(stream, b"\x01" * 100000, end=False),
                            (stream.status, stream.send_window, self.connection._send_window))
        self.connection.end(stream)
        self.assertEqual(h2grpc.Call(self.connection, stream, _identity).result(), b"200 20000000")

    def test_bidirectional(self) -> None:
        stream = self.connection.start("/test.Svc/Chat", BOUND)
        call = h2grpc.Call(self.connection, stream, _identity)
        for word in (b"one", b"two", b"three"):
            self.connection.send_message(stream, word, end=False)
            self.assertEqual(next(call), word.upper())
        self.connection.end(stream)
        self.assertEqual(list(call), [])

    def test_cancel(self) -> None:
        """
        A cancelled call ends at once with CANCELLED, and the server sees
        the cancellation.
        """
        call = self.call("Forever", b"")
        self.assertEqual(next(call), b"tick")
        self.assertTrue(call.cancel())
        self.assertFalse(call.cancel())
        self.assertFails(grpc.StatusCode.CANCELLED, lambda: list(call))
        self.assertTrue(self.server.cancelled.wait(BOUND))
        # The connection carries on.
        self.assertEqual(self.call("Echo", b"after").result(), b"after")

    def test_deadline(self) -> None:
        started = time.monotonic()
        self.assertFails(grpc.StatusCode.DEADLINE_EXCEEDED, lambda: self.call("Slow", b"10", timeout=0.3).result())
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(self.call("Echo", b"after").result(), b"after")

    def test_too_large(self) -> None:
        """
        A message over the limit is refused, not buffered.
        """
        self.assertFails(grpc.StatusCode.RESOURCE_EXHAUSTED, lambda: self.call("Huge", b"").result())
        self.assertFails(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         lambda: self.call("Echo", b"x" * (h2grpc.MAX_MESSAGE + 1)).result())
        self.assertEqual(self.call("Echo", b"after").result(), b"after")

    def test_no_daemon(self) -> None:
        """
        No socket, or nothing listening: UNAVAILABLE with words the CLI's
        "Cannot connect" message looks for.
        """
        for dialer in (h2grpc.UnixDialer(os.path.join(self.server.directory, "missing.sock")), self.server.dialer()):
            if dialer.name == self.server.dialer().name:
                self.server.stop()
            connection = h2grpc.Connection(dialer)
            error = self.assertFails(grpc.StatusCode.UNAVAILABLE, lambda: connection.start("/test.Svc/Echo", 1))
            self.assertIn("failed to connect", error.details())

    def test_daemon_goes_away(self) -> None:
        """
        Calls in flight when the server stops end with UNAVAILABLE (or
        the cancellation a stopping grpcio server sends), none hangs.
        """
        call = self.call("Forever", b"")
        self.assertEqual(next(call), b"tick")
        threading.Thread(target=self.server.stop).start()
        try:
            list(call)
        except grpc.RpcError as e:
            self.assertIn(e.code(), (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED))
        else:
            self.fail("the call ended well")

    def test_reconnects(self) -> None:
        """
        After the daemon restarts on the same socket, the next call opens
        a new connection.
        """
        self.assertEqual(self.call("Echo", b"1").result(), b"1")
        self.server.stop()
        self.assertFails(grpc.StatusCode.UNAVAILABLE, lambda: self.call("Echo", b"2").result())
        self.server = Server(self, self.tls)
        # The new server's address differs; the connection follows it.
        self.connection.dialer = self.server.dialer()
        self.assertEqual(self.call("Echo", b"3").result(), b"3")

    def test_stub(self) -> None:
        """
        A Stub answers as grpcio's generated stub: messages in and out, a
        unary-stream call object, and grpcio for what it does not serve.
        """
        fallback_used: list[str] = []

        def fallback() -> Any:
            fallback_used.append("yes")
            return self

        stub = h2grpc.Stub(self.connection, system_pb2.DESCRIPTOR.services_by_name["SystemService"], fallback)
        answer = stub.Version(system_pb2.VersionRequest(), timeout=BOUND)
        self.assertEqual((answer.version, answer.kernel_version), ("9.9", "k\u00e9rnel"))
        self.assertEqual(fallback_used, [])
        self.assertFails(grpc.StatusCode.UNIMPLEMENTED, lambda: stub.Info(system_pb2.InfoRequest(), timeout=BOUND))
        with self.assertRaises(AttributeError):
            stub.NoSuchMethod

    def test_client_stream_method(self) -> None:
        """
        A client-streaming Method sends its iterator from a thread of its
        own; an iterator that raises ends the call as grpcio does.
        """
        method = h2grpc.Method(self.connection, "/test.Svc/Sum", True, False, bytes, bytes, lambda: None)
        self.assertEqual(method(iter([b"\x01\x02", b"\x03"]), timeout=BOUND), b"2 6")

        def requests() -> Iterator[bytes]:
            yield b"\x01"
            raise OSError("the archive could not be read")

        error = self.assertFails(grpc.StatusCode.UNKNOWN, lambda: method(requests(), timeout=BOUND))
        self.assertEqual(error.details(), "Exception iterating requests!")
        future = method.future(iter([b"\x05"]), timeout=BOUND)
        self.assertEqual(future.result(), b"1 5")

    def test_bidirectional_method(self) -> None:
        method = h2grpc.Method(self.connection, "/test.Svc/Chat", True, True, bytes, bytes, lambda: None)
        self.assertEqual(list(method(iter([b"a", b"b"]), timeout=BOUND)), [b"A", b"B"])


class TlsGrpcTests(UnixGrpcTests):
    """
    The same calls on TCP through mutual TLS (a remote client's path),
    and what a TLS peer can get wrong.
    """

    tls = True

    def test_scheme_and_authority(self) -> None:
        """
        Calls say https and the daemon's host and port, as grpcio's do.
        """
        stream = self.connection.start("/test.Svc/Echo", BOUND, [("x-probe", "1")])
        self.connection.send_message(stream, b"", end=True)
        h2grpc.Call(self.connection, stream, _identity).result()
        self.assertEqual(self.server.metadata[-1]["authorization"], "Bearer t0k")
        self.assertEqual(self.connection.dialer.authority, f"127.0.0.1:{self.server.port}")
        self.assertEqual(self.connection.dialer.scheme, "https")

    def test_untrusted_daemon(self) -> None:
        """
        A daemon whose certificate another authority signed is refused
        before any call is sent: UNAVAILABLE, saying why.
        """
        other = certs.authority("Another CA")
        cert, key = other.issue("client").write(Path(self.server.directory), "other")
        connection = h2grpc.Connection(h2grpc.TcpDialer("127.0.0.1", self.server.port,
                                                         h2grpc.tls_context(other.pem, cert, key)))
        self.addCleanup(connection.close)
        error = self.assertFails(grpc.StatusCode.UNAVAILABLE, lambda: connection.start("/test.Svc/Echo", BOUND))
        self.assertIn("certificate verify failed", error.details())

    def test_wrong_name(self) -> None:
        """
        The daemon's certificate must name the host connected to (this
        one names localhost and 127.0.0.1).
        """
        elsewhere = Server(self, tls=True, host="127.0.0.2")
        connection = h2grpc.Connection(elsewhere.dialer())
        self.addCleanup(connection.close)
        error = self.assertFails(grpc.StatusCode.UNAVAILABLE, lambda: connection.start("/test.Svc/Echo", BOUND))
        self.assertIn("IP address mismatch", error.details())

    def test_no_client_certificate(self) -> None:
        """
        Without a client certificate the daemon (mutual TLS) ends the
        connection: the call fails UNAVAILABLE, it does not hang.
        """
        context = h2grpc.tls_context(self.server.ca)
        connection = h2grpc.Connection(h2grpc.TcpDialer("127.0.0.1", self.server.port, context))
        self.addCleanup(connection.close)

        def call() -> bytes:
            stream = connection.start("/test.Svc/Echo", BOUND)
            connection.send_message(stream, b"x", end=True)
            return h2grpc.Call(connection, stream, _identity).result()

        self.assertFails(grpc.StatusCode.UNAVAILABLE, call)

    def test_no_daemon(self) -> None:
        """
        Nothing listening on the port: UNAVAILABLE, "failed to connect".
        """
        self.server.stop()
        connection = h2grpc.Connection(self.server.dialer())
        error = self.assertFails(grpc.StatusCode.UNAVAILABLE, lambda: connection.start("/test.Svc/Echo", 1))
        self.assertIn("failed to connect", error.details())


class StatusCodeTests(SynchronousTestCase):
    """
    L{h2grpc.StatusCode}: grpcio's codes, by name and number, each equal
    to grpcio's member of its name either way round.
    """

    def test_same_codes(self) -> None:
        self.assertEqual([(c.name, c.value) for c in h2grpc.StatusCode],
                         [(c.name, c.value[0]) for c in grpc.StatusCode])
        self.assertEqual([c.name for c in h2grpc.StatusCode], list(h2grpc.CODES))

    def test_equal_to_grpcio(self) -> None:
        self.assertEqual(h2grpc.StatusCode.NOT_FOUND, grpc.StatusCode.NOT_FOUND)
        self.assertEqual(grpc.StatusCode.NOT_FOUND, h2grpc.StatusCode.NOT_FOUND)
        self.assertNotEqual(h2grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAVAILABLE)
        self.assertFalse(grpc.StatusCode.UNAVAILABLE != h2grpc.StatusCode.UNAVAILABLE)
        self.assertIn(h2grpc.StatusCode.CANCELLED, (grpc.StatusCode.OK, grpc.StatusCode.CANCELLED))
        self.assertNotEqual(h2grpc.StatusCode.OK, 0)

    def test_error_with_grpcio(self) -> None:
        """
        With grpcio imported (as here), an error is grpcio's type too and
        carries grpcio's code.
        """
        error = h2grpc.rpc_error("NOT_FOUND", "gone")
        self.assertIsInstance(error, grpc.RpcError)
        self.assertIsInstance(error, h2grpc.RpcError)
        self.assertIs(error.code(), grpc.StatusCode.NOT_FOUND)  # type: ignore[attr-defined]
        self.assertEqual(error.details(), "gone")  # type: ignore[attr-defined]
        self.assertEqual(h2grpc.error_types(), (h2grpc.RpcError, grpc.RpcError))
