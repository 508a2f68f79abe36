# -*- test-case-name: ross.test.test_h2grpc -*-
"""
gRPC calls to the daemon without grpcio: the CLI's own client, on the
daemon's unix socket and on TCP, with or without TLS.

Importing grpcio costs a CLI command 45-65 ms (its Cython core imports
asyncio and ssl at load), more than the rest of ``ross version``
together, and every message through it crosses grpcio's own threads: a
keystroke's echo in an attached session pays that on every key. The CLI
needs none of what grpcio brings on top of the wire format (name
resolution, load balancing, retries), so it speaks gRPC itself: HTTP/2
(RFC 9113; with prior knowledge on a unix socket or plain TCP, chosen by
ALPN under TLS), headers through L{ross.client.hpackcodec}, messages with gRPC's
five-byte prefix, status in the trailers. TLS is Python's C{ssl} on
memory buffers (L{TlsSocket}), so the reader thread and the writers never
use the SSL object at once.

    connection = Connection(UnixDialer("/run/ross/ross.sock"), metadata=[("authorization", "Bearer ...")])
    connection = Connection(TcpDialer("daemon.example", 2376, tls_context(ca, cert, key)))
    stub = Stub(connection, system_pb2.DESCRIPTOR.services_by_name["SystemService"], fallback)
    stub.Version(system_pb2.VersionRequest(), timeout=10)

A L{Stub} answers as a grpcio stub does for the four kinds of call
(a response; a call object to iterate and cancel); what it does not serve
(C{.future}, C{.with_call}, other call options) goes to C{fallback()}, a
grpcio stub. Failures raise L{RpcError}, with grpcio's C{code()} and
C{details()}; where grpcio is imported (the TUI, a fallback call) the
error is a C{grpc.RpcError} too, and its code grpcio's C{StatusCode}. So a
failing command does not import grpcio (45-65 ms) to say why it failed,
and callers that use grpcio keep one error type.

One connection carries any number of calls at once, one reader thread
dispatching frames to them; flow control in both directions, so a slow
consumer (``ross logs | less``) holds the daemon back instead of filling
the client's memory.
"""

from __future__ import annotations

import enum
import io
import socket
import struct
import sys
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Protocol

if TYPE_CHECKING:
    import ssl

from ross.client import hpackcodec

_DATA, _HEADERS, _PRIORITY, _RST_STREAM, _SETTINGS, _PUSH_PROMISE, _PING, _GOAWAY, _WINDOW_UPDATE, _CONTINUATION = (
    range(10))
_END_STREAM = _ACK = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY_FLAG = 0x20

_SETTINGS_HEADER_TABLE_SIZE = 0x1
_SETTINGS_ENABLE_PUSH = 0x2
_SETTINGS_INITIAL_WINDOW_SIZE = 0x4
_SETTINGS_MAX_FRAME_SIZE = 0x5

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DEFAULT_WINDOW = 65535
_CANCEL = 0x8
_REFUSED_STREAM = 0x7

#: What the client lets the daemon send ahead, per call and in all.
RECEIVE_WINDOW = 16 * 1024 * 1024
#: The largest frame the client takes.
MAX_FRAME = 1024 * 1024
#: Seconds a connection may take to be accepted.
CONNECT_TIMEOUT = 20.0
#: The largest message either way, as the grpcio channel's options.
MAX_MESSAGE = 8 * 1024 * 1024

class StatusCode(enum.Enum):
    """
    gRPC's status codes without grpcio: each member equals grpcio's
    C{grpc.StatusCode} member of its name, so a caller compares a code
    with either.
    """

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16

    def __eq__(self, other: object) -> bool:
        if isinstance(other, enum.Enum) and type(other).__name__ == "StatusCode":
            return self.name == other.name
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.name)


#: gRPC's status codes by number (grpc.StatusCode's names).
CODES = tuple(code.name for code in StatusCode)


class RpcError(Exception):
    """
    A failed call: C{code()} (a L{StatusCode}) and C{details()}, as
    C{grpc.RpcError}'s.
    """

    def __init__(self, code: Any, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self._code = code
        self._details = details

    def code(self) -> Any:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> tuple[Any, ...]:
        return ()

    def trailing_metadata(self) -> tuple[Any, ...]:
        return ()


#: gRPC's mapping of an HTTP status without a gRPC status.
_HTTP_CODES = {400: "INTERNAL", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED", 404: "UNIMPLEMENTED",
               429: "UNAVAILABLE", 502: "UNAVAILABLE", 503: "UNAVAILABLE", 504: "UNAVAILABLE"}

_grpc_error_class: Any = None


def status_code(name: str) -> Any:
    """
    The status code C{name}: grpcio's where grpcio is imported, else a
    L{StatusCode}.
    """
    grpc = sys.modules.get("grpc")
    return grpc.StatusCode[name] if grpc is not None else StatusCode[name]


def rpc_error(code: str, details: str) -> Exception:
    """
    A L{RpcError} with C{code()} (see L{status_code}) and C{details()};
    where grpcio is imported, also a C{grpc.RpcError}.
    """
    global _grpc_error_class
    grpc = sys.modules.get("grpc")
    if grpc is None:
        return RpcError(StatusCode[code], details)
    if _grpc_error_class is None:
        _grpc_error_class = type("CallError", (RpcError, grpc.RpcError), {})
    return _grpc_error_class(grpc.StatusCode[code], details)  # type: ignore[no-any-return]


def error_types() -> tuple[type[BaseException], ...]:
    """
    What a call may raise on failure: L{RpcError}, and C{grpc.RpcError}
    once grpcio is imported (its own channels' errors).
    """
    grpc = sys.modules.get("grpc")
    return (RpcError,) if grpc is None else (RpcError, grpc.RpcError)


def _frame(kind: int, flags: int, stream_id: int, payload: bytes | memoryview = b"") -> bytes:
    return struct.pack(">I", len(payload))[1:] + bytes((kind, flags)) + struct.pack(">I", stream_id) + bytes(payload)


def _timeout_header(seconds: float) -> str:
    milliseconds = max(1, int(seconds * 1000))
    if milliseconds < 10**8:
        return f"{milliseconds}m"
    return f"{min(int(seconds) + 1, 10**8 - 1)}S"


def _percent_decoded(text: str) -> str:
    if "%" not in text:
        # Most are: and urllib.parse (with ipaddress) is 2.5 ms to import.
        return text
    from urllib.parse import unquote

    return unquote(text, errors="replace")


class Transport(Protocol):
    """
    What a connection needs of its socket (a socket, or a L{TlsSocket}).
    """

    def sendall(self, data: bytes, /) -> None: ...

    def recv_into(self, buffer: Any, /) -> int: ...

    def shutdown(self, how: int, /) -> None: ...

    def close(self) -> None: ...


class UnixDialer:
    """
    Connects to the daemon's unix socket at C{path}.
    """

    scheme = "http"
    authority = "localhost"

    def __init__(self, path: str) -> None:
        self.path = path
        self.name = f"unix:{path}"

    def connect(self, timeout: float) -> Transport:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # A daemon that takes no connection (its backlog full) is as
            # good as none after a while, as with grpcio.
            sock.settimeout(timeout)
            sock.connect(self.path)
            sock.settimeout(None)
        except BaseException:
            sock.close()
            raise
        return sock


class TcpDialer:
    """
    Connects to the daemon on TCP at C{host}:C{port}, through TLS when
    given a C{context} (L{tls_context}), whose peer must be C{host}.
    """

    def __init__(self, host: str, port: int, context: ssl.SSLContext | None = None) -> None:
        self.host = host
        self.port = port
        self.context = context
        self.scheme = "https" if context is not None else "http"
        literal = f"[{host}]" if ":" in host else host
        self.authority = self.name = f"{literal}:{port}"

    def connect(self, timeout: float) -> Transport:
        sock = socket.create_connection((self.host, self.port), timeout=timeout)
        try:
            # Frames go out as written: an attached session's keystrokes
            # must not wait on Nagle's algorithm.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            transport: Transport = sock
            if self.context is not None:
                transport = TlsSocket(sock, self.context, self.host)
            sock.settimeout(None)
            return transport
        except BaseException:
            sock.close()
            raise


def tls_context(ca: bytes | None = None, cert: str | None = None, key: str | None = None) -> ssl.SSLContext:
    """
    A client's TLS context: the daemon's certificate checked against C{ca}
    (PEM; the system's roots without one) and the name connected to, a
    client certificate (C{cert} and C{key} files) when given, HTTP/2 by
    ALPN. ValueError says which of them cannot be used.
    """
    import ssl

    try:
        context = ssl.create_default_context(cadata=ca.decode("ascii", "replace") if ca is not None else None)
    except (ssl.SSLError, ValueError) as e:
        raise ValueError(f"the CA certificates: {e}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert:
        try:
            context.load_cert_chain(cert, key)
        except (OSError, ValueError) as e:
            raise ValueError(f"the client certificate or its key: {e}") from None
    context.set_alpn_protocols(["h2"])
    return context


class TlsSocket:
    """
    TLS over a connected socket, for one reader thread and any number of
    writers: the SSL object works on memory buffers under a lock, and the
    socket's I/O happens outside it (bytes go out in the order they were
    encrypted, under a second lock).
    """

    def __init__(self, sock: socket.socket, context: ssl.SSLContext, server_hostname: str) -> None:
        import ssl

        self._ssl = ssl
        self._sock = sock
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._tls = context.wrap_bio(self._incoming, self._outgoing, server_hostname=server_hostname)
        #: The SSL object and its buffers.
        self._lock = threading.Lock()
        #: The order of bytes on the socket.
        self._send_lock = threading.Lock()
        self._handshake()

    def _handshake(self) -> None:
        while True:
            try:
                self._tls.do_handshake()
                break
            except self._ssl.SSLWantReadError:
                self._flush()
                if not self._receive():
                    raise ConnectionResetError("the daemon closed the connection during the TLS handshake")
        self._flush()
        protocol = self._tls.selected_alpn_protocol()
        if protocol not in (None, "h2"):
            raise ConnectionError(f"the daemon chose {protocol!r} over HTTP/2")

    def _receive(self) -> bool:
        data = self._sock.recv(256 * 1024)
        if not data:
            return False
        with self._lock:
            self._incoming.write(data)
        return True

    def _flush(self) -> None:
        with self._send_lock:
            with self._lock:
                data = self._outgoing.read()
            if data:
                self._sock.sendall(data)

    def sendall(self, data: bytes, /) -> None:
        with self._send_lock:
            with self._lock:
                self._tls.write(data)
                encrypted = self._outgoing.read()
            self._sock.sendall(encrypted)

    def recv_into(self, buffer: Any) -> int:
        """
        Decrypted bytes into C{buffer}: how many, 0 at the end.
        """
        while True:
            with self._lock:
                try:
                    # (With a buffer, read() answers how many bytes.)
                    count: int = self._tls.read(len(buffer), buffer)  # type: ignore[assignment]
                except self._ssl.SSLWantReadError:
                    count = -1
                except self._ssl.SSLZeroReturnError:
                    return 0
                answer = self._outgoing.pending
            if answer:
                # What reading made the SSL object say (a key update).
                self._flush()
            if count >= 0:
                return count
            if not self._receive():
                return 0

    def shutdown(self, how: int, /) -> None:
        self._sock.shutdown(how)

    def close(self) -> None:
        self._sock.close()


class _Reader(io.RawIOBase):
    """
    A transport as a raw stream, for a buffered reader over it.
    """

    def __init__(self, transport: Transport) -> None:
        self._transport = transport

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        return self._transport.recv_into(buffer)


class _Stream:
    """
    One call's state, guarded by its connection's condition.
    """

    def __init__(self, stream_id: int, send_window: int, deadline: float | None) -> None:
        self.id = stream_id
        self.send_window = send_window
        self.deadline = deadline
        self.messages: deque[bytes] = deque()
        self.partial = bytearray()
        self.headers: dict[str, str] | None = None
        #: (code name, details) once the call is over.
        self.status: tuple[str, str] | None = None
        self.remote_closed = False
        #: END_STREAM or RST_STREAM sent.
        self.local_closed = False
        self.unacknowledged = 0


class Connection:
    """
    An HTTP/2 connection to the daemon, through C{dialer} (L{UnixDialer},
    L{TcpDialer}), opened at the first call and again at the next call
    after it was lost. C{metadata}: headers sent with every call.
    """

    def __init__(self, dialer: UnixDialer | TcpDialer, metadata: Iterable[tuple[str, str]] = (),
                 user_agent: str = "ross") -> None:
        self.dialer = dialer
        self._metadata = list(metadata)
        self._user_agent = user_agent
        self._sock: Transport | None = None
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()
        self._streams: dict[int, _Stream] = {}
        self._next_id = 1
        self._encoder = hpackcodec.Encoder()
        self._decoder = hpackcodec.Decoder()
        self._peer_window = self._send_window = _DEFAULT_WINDOW
        self._peer_max_frame = 16384
        self._unacknowledged = 0
        self._closed = False
        #: Why the socket takes no new call (the daemon said GOAWAY).
        self._refusing: str | None = None

    # -- calls

    def start(self, path: str, timeout: float | None, metadata: Iterable[tuple[str, str]] = ()) -> _Stream:
        """
        Open a call to C{path} (``/package.Service/Method``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        headers = [(":method", "POST"), (":scheme", self.dialer.scheme), (":path", path),
                   (":authority", self.dialer.authority),
                   ("te", "trailers"), ("content-type", "application/grpc"), ("user-agent", self._user_agent)]
        if timeout is not None:
            headers.append(("grpc-timeout", _timeout_header(timeout)))
        headers.extend(self._metadata)
        headers.extend(metadata)
        with self._write_lock:
            with self._cond:
                if self._closed:
                    raise rpc_error("UNAVAILABLE", "the client closed the connection")
                if self._refusing is not None:
                    raise rpc_error("UNAVAILABLE", self._refusing)
                if self._sock is None:
                    # First call, or the daemon came back after a restart.
                    self._connect(min(timeout, CONNECT_TIMEOUT) if timeout is not None else CONNECT_TIMEOUT)
                stream = _Stream(self._next_id, self._peer_window, deadline)
                self._next_id += 2
                self._streams[stream.id] = stream
            block = self._encoder.encode(headers)
            limit = self._peer_max_frame
            pieces = [block[i:i + limit] for i in range(0, len(block), limit)] or [b""]
            frames = [_frame(_HEADERS if i == 0 else _CONTINUATION, _END_HEADERS if i == len(pieces) - 1 else 0,
                             stream.id, piece) for i, piece in enumerate(pieces)]
            self._send_holding_lock(b"".join(frames))
        return stream

    def send_message(self, stream: _Stream, payload: bytes, end: bool) -> bool:
        """
        Send one message (and END_STREAM after it when C{end}); False when
        the call is already over. Waits for flow control.
        """
        if len(payload) > MAX_MESSAGE:
            self._finish(stream, "RESOURCE_EXHAUSTED",
                         f"Sent message larger than max ({len(payload)} vs. {MAX_MESSAGE})", reset=True)
            return False
        data = memoryview(b"\0" + struct.pack(">I", len(payload)) + payload)
        while data:
            with self._cond:
                while True:
                    if stream.status is not None or stream.local_closed:
                        return False
                    allowed = min(len(data), stream.send_window, self._send_window, self._peer_max_frame)
                    if allowed > 0:
                        break
                    if not self._wait(stream):
                        return False
                stream.send_window -= allowed
                self._send_window -= allowed
                chunk, data = data[:allowed], data[allowed:]
                last = end and not data
                if last:
                    stream.local_closed = True
            self._send(_frame(_DATA, _END_STREAM if last else 0, stream.id, chunk))
        return True

    def end(self, stream: _Stream) -> None:
        """
        The client has no more messages for C{stream}.
        """
        with self._cond:
            if stream.local_closed or stream.status is not None:
                return
            stream.local_closed = True
        self._send(_frame(_DATA, _END_STREAM, stream.id))

    def receive(self, stream: _Stream) -> bytes | None:
        """
        The call's next message; None once it ended well; its error if not.
        """
        with self._cond:
            while not stream.messages and stream.status is None:
                self._wait(stream)
            if not stream.messages:
                assert stream.status is not None
                code, details = stream.status
                if code == "OK":
                    return None
                raise rpc_error(code, details)
            message = stream.messages.popleft()
            size = len(message) + 5
            stream.unacknowledged += size
            self._unacknowledged += size
            updates = b""
            if self._unacknowledged >= RECEIVE_WINDOW // 2:
                updates += _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacknowledged))
                self._unacknowledged = 0
            if stream.unacknowledged >= RECEIVE_WINDOW // 2 and not stream.remote_closed:
                updates += _frame(_WINDOW_UPDATE, 0, stream.id, struct.pack(">I", stream.unacknowledged))
                stream.unacknowledged = 0
        if updates:
            self._send(updates)
        return message

    def cancel(self, stream: _Stream, code: str = "CANCELLED", details: str = "Locally cancelled by application!") -> bool:
        """
        End the call here and tell the daemon; False if it was over already.
        """
        return self._finish(stream, code, details, reset=True)

    def status(self, stream: _Stream) -> tuple[str, str] | None:
        with self._cond:
            return stream.status

    def close(self) -> None:
        with self._cond:
            self._closed = True
            sock = self._sock
        if sock is not None:
            self._lost("the client closed the connection", sock)

    # -- inside

    def _wait(self, stream: _Stream) -> bool:
        """
        Wait for a change (the condition held); False when the deadline
        passed, which ends the call.
        """
        if stream.deadline is None:
            self._cond.wait()
            return True
        remaining = stream.deadline - time.monotonic()
        if remaining <= 0:
            self._cond.release()
            try:
                self._finish(stream, "DEADLINE_EXCEEDED", "Deadline Exceeded", reset=True)
            finally:
                self._cond.acquire()
            return False
        self._cond.wait(remaining)
        return True

    def _finish(self, stream: _Stream, code: str, details: str, reset: bool) -> bool:
        """
        The call is over with C{code}: messages that came before a status
        from the daemon are still read, not after a local end (C{reset}).
        """
        with self._cond:
            if stream.status is not None:
                return False
            stream.status = (code, details)
            if reset:
                stream.messages.clear()
            send_reset = reset and not (stream.local_closed and stream.remote_closed) and self._sock is not None
            stream.local_closed = True
            self._streams.pop(stream.id, None)
            self._cond.notify_all()
        if send_reset:
            self._send(_frame(_RST_STREAM, 0, stream.id, struct.pack(">I", _CANCEL)), quiet=True)
        return True

    def _connect(self, timeout: float) -> None:
        """
        A new socket, with the state of a new HTTP/2 connection (the
        condition and the write lock held).
        """
        self._encoder = hpackcodec.Encoder()
        self._decoder = hpackcodec.Decoder()
        self._peer_window = self._send_window = _DEFAULT_WINDOW
        self._peer_max_frame = 16384
        self._unacknowledged = 0
        self._next_id = 1
        try:
            sock = self.dialer.connect(timeout)
        except OSError as e:
            raise rpc_error("UNAVAILABLE", f"failed to connect to {self.dialer.name}: {e.strerror or e}") from None
        try:
            settings = struct.pack(">HIHIHI", _SETTINGS_ENABLE_PUSH, 0, _SETTINGS_INITIAL_WINDOW_SIZE, RECEIVE_WINDOW,
                                   _SETTINGS_MAX_FRAME_SIZE, MAX_FRAME)
            sock.sendall(_PREFACE + _frame(_SETTINGS, 0, 0, settings)
                         + _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", RECEIVE_WINDOW - _DEFAULT_WINDOW)))
        except OSError as e:
            sock.close()
            raise rpc_error("UNAVAILABLE", f"failed to connect to {self.dialer.name}: {e.strerror or e}") from None
        self._sock = sock
        threading.Thread(target=self._read_loop, args=(sock,), name="ross-h2-reader", daemon=True).start()

    def _send(self, data: bytes, quiet: bool = False) -> None:
        with self._write_lock:
            self._send_holding_lock(data, quiet)

    def _send_holding_lock(self, data: bytes, quiet: bool = False) -> None:
        sock = self._sock
        try:
            if sock is None:
                raise OSError("closed")
            sock.sendall(data)
        except OSError:
            if not quiet and sock is not None:
                self._lost("Socket closed", sock)

    def _lost(self, why: str, sock: Transport) -> None:
        """
        C{sock} is gone: its calls end with UNAVAILABLE; the next call
        opens a new one.
        """
        with self._cond:
            if sock is not self._sock:
                return
            self._sock = None
            self._refusing = None
            for stream in self._streams.values():
                if stream.status is None:
                    stream.status = ("UNAVAILABLE", why)
                    stream.local_closed = stream.remote_closed = True
            self._streams.clear()
            self._cond.notify_all()
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def _read_loop(self, sock: Transport) -> None:
        reader = io.BufferedReader(_Reader(sock), 256 * 1024)
        why = "Socket closed"
        try:
            pending: tuple[int, int, bytearray] | None = None  # a header block awaiting CONTINUATION
            while True:
                head = reader.read(9)
                if len(head) < 9:
                    break
                length = int.from_bytes(head[:3], "big")
                kind, flags = head[3], head[4]
                stream_id = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
                payload = reader.read(length)
                if len(payload) < length:
                    break
                if pending is not None:
                    if kind != _CONTINUATION or stream_id != pending[0]:
                        raise ValueError("expected a CONTINUATION frame")
                    pending[2].extend(payload)
                    if len(pending[2]) > hpackcodec.MAX_LIST:
                        raise ValueError(f"a header block larger than {hpackcodec.MAX_LIST} bytes")
                    if flags & _END_HEADERS:
                        self._on_headers(pending[0], pending[1], bytes(pending[2]))
                        pending = None
                    continue
                if kind == _DATA:
                    self._on_data(stream_id, flags, self._unpadded(flags, payload), length)
                elif kind == _HEADERS:
                    block = self._unpadded(flags, payload)
                    if flags & _PRIORITY_FLAG:
                        block = block[5:]
                    if flags & _END_HEADERS:
                        self._on_headers(stream_id, flags, block)
                    else:
                        pending = (stream_id, flags, bytearray(block))
                elif kind == _RST_STREAM:
                    self._on_reset(stream_id, int.from_bytes(payload[:4], "big"))
                elif kind == _SETTINGS:
                    if not flags & _ACK:
                        self._on_settings(payload)
                elif kind == _PING:
                    if not flags & _ACK:
                        self._send(_frame(_PING, _ACK, 0, payload), quiet=True)
                elif kind == _GOAWAY:
                    self._on_goaway(int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
                elif kind == _WINDOW_UPDATE:
                    self._on_window(stream_id, int.from_bytes(payload[:4], "big") & 0x7FFFFFFF)
                elif kind == _PUSH_PROMISE or kind == _CONTINUATION:
                    raise ValueError("unexpected frame")
        except OSError:
            pass
        except ValueError as e:
            why = f"the daemon broke the HTTP/2 protocol: {e}"
        finally:
            reader.close()
            self._lost(why, sock)

    @staticmethod
    def _unpadded(flags: int, payload: bytes) -> bytes:
        if flags & _PADDED:
            pad = payload[0]
            if pad >= len(payload):
                raise ValueError("bad padding")
            return payload[1:len(payload) - pad]
        return payload

    def _on_data(self, stream_id: int, flags: int, data: bytes, length: int) -> None:
        updates = b""
        with self._cond:
            stream = self._streams.get(stream_id)
            # Padding, and data for a call that is over, are handed back at once.
            spare = length - len(data) if stream is not None else length
            if spare:
                self._unacknowledged += spare
                if self._unacknowledged >= RECEIVE_WINDOW // 2:
                    updates = _frame(_WINDOW_UPDATE, 0, 0, struct.pack(">I", self._unacknowledged))
                    self._unacknowledged = 0
            if stream is not None:
                stream.partial.extend(data)
                problem = self._split(stream)
                if flags & _END_STREAM:
                    stream.remote_closed = True
                    if problem is None and stream.status is None:
                        problem = ("INTERNAL", "the daemon ended the call without a status")
                self._cond.notify_all()
            else:
                problem = None
        if updates:
            self._send(updates, quiet=True)
        if problem is not None and stream is not None:
            self._finish(stream, problem[0], problem[1], reset=not stream.remote_closed)

    @staticmethod
    def _split(stream: _Stream) -> tuple[str, str] | None:
        buffer = stream.partial
        while len(buffer) >= 5:
            if buffer[0]:
                return ("INTERNAL", "the daemon sent a compressed message, which was not asked for")
            size = int.from_bytes(buffer[1:5], "big")
            if size > MAX_MESSAGE:
                return ("RESOURCE_EXHAUSTED", f"Received message larger than max ({size} vs. {MAX_MESSAGE})")
            if len(buffer) < 5 + size:
                break
            stream.messages.append(bytes(buffer[5:5 + size]))
            del buffer[:5 + size]
        return None

    def _on_headers(self, stream_id: int, flags: int, block: bytes) -> None:
        # Every block is decoded, a finished call's too: the table is shared.
        headers = dict(self._decoder.decode(block))
        with self._cond:
            stream = self._streams.get(stream_id)
            if stream is None:
                return
            if flags & _END_STREAM:
                stream.remote_closed = True
            if stream.headers is None:
                stream.headers = headers
            status = headers.get("grpc-status")
            end = flags & _END_STREAM
            self._cond.notify_all()
        if status is not None:
            number = int(status) if status.isdigit() else 2
            code = CODES[number] if number < len(CODES) else "UNKNOWN"
            details = _percent_decoded(headers.get("grpc-message", ""))
            if code == "OK" and stream.partial:
                code, details = "INTERNAL", "the daemon ended the call in the middle of a message"
            self._finish(stream, code, details, reset=not end)
        elif end:
            http = stream.headers.get(":status", "") if stream.headers else ""
            code = _HTTP_CODES.get(int(http), "UNKNOWN") if http.isdigit() and http != "200" else "INTERNAL"
            self._finish(stream, code, f"the daemon ended the call without a gRPC status (HTTP {http or '?'})",
                         reset=False)

    def _on_reset(self, stream_id: int, error: int) -> None:
        with self._cond:
            stream = self._streams.get(stream_id)
            if stream is None:
                return
            stream.remote_closed = True
        if error == _CANCEL:
            self._finish(stream, "CANCELLED", "the daemon cancelled the call", reset=False)
        elif error == _REFUSED_STREAM:
            self._finish(stream, "UNAVAILABLE", "the daemon refused the call", reset=False)
        else:
            self._finish(stream, "INTERNAL", f"the daemon reset the call (HTTP/2 error {error})", reset=False)

    def _on_settings(self, payload: bytes) -> None:
        # The new values hold from the acknowledgement on: nothing may be
        # sent between taking them and acknowledging them (a frame sized
        # by a new MAX_FRAME_SIZE that arrived before the ACK is an error).
        with self._write_lock:
            with self._cond:
                for offset in range(0, len(payload) - 5, 6):
                    key, value = struct.unpack_from(">HI", payload, offset)
                    if key == _SETTINGS_INITIAL_WINDOW_SIZE:
                        for stream in self._streams.values():
                            stream.send_window += value - self._peer_window
                        self._peer_window = value
                    elif key == _SETTINGS_MAX_FRAME_SIZE:
                        self._peer_max_frame = value
                    elif key == _SETTINGS_HEADER_TABLE_SIZE:
                        self._encoder.table_size_limited()
                self._cond.notify_all()
            self._send_holding_lock(_frame(_SETTINGS, _ACK, 0), quiet=True)

    def _on_goaway(self, last_stream: int) -> None:
        with self._cond:
            self._refusing = "the daemon is closing the connection"
            late = [s for s in self._streams.values() if s.id > last_stream]
        for stream in late:
            self._finish(stream, "UNAVAILABLE", "the daemon closed the connection before taking the call",
                         reset=False)

    def _on_window(self, stream_id: int, increment: int) -> None:
        with self._cond:
            if stream_id == 0:
                self._send_window += increment
            elif (stream := self._streams.get(stream_id)) is not None:
                stream.send_window += increment
            self._cond.notify_all()


class Call:
    """
    A call in progress, as grpcio's: iterate it for the responses (its
    error is raised at the end), C{cancel()} it from any thread.
    """

    def __init__(self, connection: Connection, stream: _Stream, deserialize: Callable[[bytes], Any]) -> None:
        self._connection = connection
        self._stream = stream
        self._deserialize = deserialize

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        message = self._connection.receive(self._stream)
        if message is None:
            raise StopIteration
        try:
            return self._deserialize(message)
        except Exception as e:
            self._connection.cancel(self._stream, "INTERNAL", f"Exception deserializing response! {e}")
            raise rpc_error("INTERNAL", f"Exception deserializing response! {e}") from None

    def cancel(self) -> bool:
        return self._connection.cancel(self._stream)

    def is_active(self) -> bool:
        return self._connection.status(self._stream) is None

    def code(self) -> Any:
        status = self._connection.status(self._stream)
        return None if status is None else status_code(status[0])

    def details(self) -> str | None:
        status = self._connection.status(self._stream)
        return None if status is None else status[1]

    def result(self, timeout: float | None = None) -> Any:
        """
        The one response of a call with a single answer (the call's own
        deadline bounds the wait; C{timeout} is grpcio's argument, unused).
        """
        responses = list(self)
        if len(responses) != 1:
            raise rpc_error("INTERNAL", f"the daemon answered with {len(responses)} messages where one is due")
        return responses[0]


class Method:
    """
    One method (C{path}: ``/package.Service/Name``), called as grpcio's
    multi-callables are: C{method(request, timeout=...)} gives the response,
    or a L{Call} for a server stream; a client stream takes an iterator of
    requests, sent from a thread of its own.
    """

    def __init__(self, connection: Connection, path: str, client_streaming: bool, server_streaming: bool,
                 serialize: Callable[[Any], bytes], deserialize: Callable[[bytes], Any],
                 fallback: Callable[[], Any]) -> None:
        self._connection = connection
        self._path = path
        self._client_streaming = client_streaming
        self._server_streaming = server_streaming
        self._serialize = serialize
        self._deserialize = deserialize
        self._fallback = fallback

    @classmethod
    def of(cls, connection: Connection, method: Any, fallback: Callable[[], Any]) -> Method:
        """
        The method of a protobuf MethodDescriptor.
        """
        from google.protobuf import message_factory

        return cls(connection, f"/{method.containing_service.full_name}/{method.name}", bool(method.client_streaming),
                   bool(method.server_streaming), lambda message: message.SerializeToString(),
                   message_factory.GetMessageClass(method.output_type).FromString, fallback)

    def __getattr__(self, name: str) -> Any:
        # .with_call and the like: grpcio's.
        return getattr(self._fallback(), name)

    def __call__(self, request: Any, timeout: float | None = None,
                 metadata: Iterable[tuple[str, str]] | None = None, **options: Any) -> Any:
        if options:
            return self._fallback()(request, timeout=timeout, metadata=metadata, **options)
        call = self.future(request, timeout, metadata)
        return call if self._server_streaming else call.result()

    def future(self, request: Any, timeout: float | None = None,
               metadata: Iterable[tuple[str, str]] | None = None) -> Call:
        """
        Start the call; the L{Call} is its future (C{result()}, C{cancel()}).
        """
        stream = self._connection.start(self._path, timeout, metadata or ())
        call = Call(self._connection, stream, self._deserialize)
        if self._client_streaming:
            threading.Thread(target=self._send_all, args=(stream, request), name="ross-h2-sender",
                             daemon=True).start()
        else:
            self._connection.send_message(stream, self._serialize(request), end=True)
        return call

    def _send_all(self, stream: _Stream, requests: Iterable[Any]) -> None:
        connection = self._connection
        try:
            for request in requests:
                if not connection.send_message(stream, self._serialize(request), end=False):
                    return
        except Exception:
            connection.cancel(stream, "UNKNOWN", "Exception iterating requests!")
            return
        connection.end(stream)


class Stub:
    """
    A stub of C{service} (a ServiceDescriptor) on C{connection}, answering
    as grpcio's; C{fallback()} gives the grpcio stub for what it does not
    serve itself.
    """

    def __init__(self, connection: Connection, service: Any, fallback: Callable[[], Any]) -> None:
        self._connection = connection
        self._service = service
        self._fallback = fallback

    def __getattr__(self, name: str) -> Any:
        method = self._service.methods_by_name.get(name)
        if method is None:
            raise AttributeError(name)
        bound = Method.of(self._connection, method, lambda: getattr(self._fallback(), name))
        setattr(self, name, bound)
        return bound
