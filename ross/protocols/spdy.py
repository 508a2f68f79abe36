# -*- test-case-name: ross.test.test_spdy -*-
"""
SPDY/3.1 framing and a server-side session, as Kubernetes' streaming
clients speak it (client-go's remotecommand and portforward over
moby/spdystream): the client opens every stream, the server answers each
with SYN_REPLY, data flows both ways, a FIN closes one direction.

spdystream implements no flow control (it never sends WINDOW_UPDATE and
ignores ours), so none is enforced here either: backpressure is the
transport's (a slow client pauses the producers registered on the
session; a stream whose sink is slow pauses reading the connection).

Everything the client sends is hostile until parsed: frame and header
sizes are bounded, header blocks are inflated with a cap (the zlib
context is shared by the whole connection, so every block is inflated,
even a rejected stream's), stream IDs must be odd and increasing, and the
number of open streams is capped.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Callable, Iterable, Mapping

from twisted.logger import Logger

from ross.protocols.muxconn import Inbox, MuxConnection

VERSION = 3
# Control frame types.
SYN_STREAM, SYN_REPLY, RST_STREAM, SETTINGS, PING, GOAWAY, HEADERS, WINDOW_UPDATE = 1, 2, 3, 4, 6, 7, 8, 9
FLAG_FIN = 0x01
# RST_STREAM status codes.
PROTOCOL_ERROR, INVALID_STREAM, REFUSED_STREAM, CANCEL, INTERNAL_ERROR, STREAM_ALREADY_CLOSED = 1, 2, 3, 5, 6, 9
FRAME_TOO_LARGE = 11
# GOAWAY status codes.
GOAWAY_OK, GOAWAY_PROTOCOL_ERROR = 0, 1

#: The largest control frame accepted (headers of a stream are a few dozen bytes).
MAX_CONTROL_FRAME = 64 * 1024
#: The largest data frame accepted (Go's io.Copy writes 32 KiB at a time).
MAX_DATA_FRAME = 1024 * 1024
#: The largest header block once inflated, and its largest count of names.
MAX_HEADER_BLOCK = 64 * 1024
MAX_HEADERS = 64
#: The size of the data frames written.
WRITE_CHUNK = 32 * 1024

# SPDY/3's header compression dictionary (draft-mbelshe-httpbis-spdy-00,
# 2.6.10.1): these words, each after its length as 4 bytes, then the tail.
_DICTIONARY_WORDS = (
    "options head post put delete trace accept accept-charset accept-encoding accept-language accept-ranges "
    "age allow authorization cache-control connection content-base content-encoding content-language "
    "content-length content-location content-md5 content-range content-type date etag expect expires from host "
    "if-match if-modified-since if-none-match if-range if-unmodified-since last-modified location max-forwards "
    "pragma proxy-authenticate proxy-authorization range referer retry-after server te trailer "
    "transfer-encoding upgrade user-agent vary via warning www-authenticate method get status"
).split() + ["200 OK", "version", "HTTP/1.1", "url", "public", "set-cookie", "keep-alive", "origin"]
_DICTIONARY_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(len(w).to_bytes(4, "big") + w.encode() for w in _DICTIONARY_WORDS) + _DICTIONARY_TAIL.encode()

Headers = Mapping[str, list[str]]


class ProtocolError(Exception):
    """
    The peer broke the protocol: the connection goes away.
    """


def control_frame(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


def rst_stream(stream_id: int, status: int) -> bytes:
    return control_frame(RST_STREAM, 0, struct.pack(">II", stream_id, status))


def goaway(last_good: int, status: int) -> bytes:
    return control_frame(GOAWAY, 0, struct.pack(">II", last_good, status))


def ping(ping_id: int) -> bytes:
    return control_frame(PING, 0, struct.pack(">I", ping_id))


def header_block(headers: Headers) -> bytes:
    """
    An uncompressed name/value block: names lowercased, a name's values
    joined by NUL.
    """
    out = [struct.pack(">I", len(headers))]
    for name, values in headers.items():
        n, v = name.lower().encode(), "\0".join(values).encode()
        out.append(struct.pack(">I", len(n)) + n + struct.pack(">I", len(v)) + v)
    return b"".join(out)


def parse_header_block(block: bytes) -> dict[str, list[str]]:
    """
    The headers of an inflated name/value block; ProtocolError when it is
    malformed, or not exactly one block.
    """
    view = memoryview(block)
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        if n < 0 or pos + n > len(view):
            raise ProtocolError("truncated header block")
        chunk = bytes(view[pos:pos + n])
        pos += n
        return chunk

    def length() -> int:
        return int.from_bytes(take(4), "big")

    count = length()
    if count > MAX_HEADERS:
        raise ProtocolError(f"too many headers ({count})")
    headers: dict[str, list[str]] = {}
    for _ in range(count):
        name = take(length()).decode("latin-1")
        value = take(length()).decode("latin-1")
        if not name or name != name.lower() or name in headers:
            raise ProtocolError(f"invalid header name {name[:64]!r}")
        headers[name] = value.split("\0")
    if pos != len(view):
        raise ProtocolError("trailing bytes after the header block")
    return headers


class HeaderCodec:
    """
    One direction's header compression: a zlib stream with SPDY's
    dictionary that lives as long as the connection.
    """

    def __init__(self) -> None:
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)
        self._deflate = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, 15, 8,
                                         zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def decode(self, compressed: bytes) -> dict[str, list[str]]:
        try:
            block = self._inflate.decompress(compressed, MAX_HEADER_BLOCK + 1)
        except zlib.error as e:
            raise ProtocolError(f"bad header compression: {e}")
        if len(block) > MAX_HEADER_BLOCK or self._inflate.unconsumed_tail:
            raise ProtocolError("header block too large")
        return parse_header_block(block)

    def encode(self, headers: Headers) -> bytes:
        return self._deflate.compress(header_block(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)


class FrameReader:
    """
    Cuts a byte stream into frames: (True, type, flags, payload) for a
    control frame, (False, stream ID, flags, payload) for a data frame.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> Iterable[tuple[bool, int, int, bytes]]:
        self._buffer += data
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from(">II", self._buffer)
            flags, length = second >> 24, second & 0xFFFFFF
            control = bool(first & 0x80000000)
            if control:
                version = (first >> 16) & 0x7FFF
                if version != VERSION:
                    raise ProtocolError(f"unsupported SPDY version {version}")
                if length > MAX_CONTROL_FRAME:
                    raise ProtocolError(f"control frame too large ({length} bytes)")
            elif length > MAX_DATA_FRAME:
                raise ProtocolError(f"data frame too large ({length} bytes)")
            if len(self._buffer) < 8 + length:
                return
            payload = bytes(self._buffer[8:8 + length])
            del self._buffer[:8 + length]
            yield control, (first & 0xFFFF) if control else (first & 0x7FFFFFFF), flags, payload


class SpdyStream:
    """
    One stream the client opened. Its reader attaches with L{listen};
    what arrived before is delivered then (see L{Inbox}).
    """

    def __init__(self, session: SpdySession, stream_id: int, headers: dict[str, list[str]]) -> None:
        self.session = session
        self.id = stream_id
        self.headers = headers
        #: The client finished sending (FIN), or the stream is gone.
        self.remote_done = False
        #: We finished sending (FIN), or the stream is gone.
        self.local_done = False
        self.reset = False
        self._inbox = Inbox()
        self._on_end: Callable[[], None] | None = None
        self._on_reset: Callable[[], None] | None = None

    def header(self, name: str) -> str:
        values = self.headers.get(name.lower())
        return values[0] if values else ""

    def listen(self, on_data: Callable[[bytes], None], on_end: Callable[[], None],
               on_reset: Callable[[], None] | None = None) -> None:
        """
        Deliver the client's data, then its end (FIN); C{on_reset} when the
        stream is reset or the connection lost first.
        """
        self._on_end, self._on_reset = on_end, on_reset
        self._inbox.open(on_data)
        if self.reset:
            if on_reset is not None:
                on_reset()
        elif self.remote_done:
            on_end()

    def write(self, data: bytes) -> None:
        if self.local_done or not data:
            return
        for i in range(0, len(data), WRITE_CHUNK):
            self.session.send(data_frame(self.id, data[i:i + WRITE_CHUNK]))

    def finish(self) -> None:
        """
        End our direction (FIN).
        """
        if not self.local_done:
            self.local_done = True
            self.session.send(data_frame(self.id, b"", fin=True))
            self.session.maybe_forget(self)

    def cancel(self, status: int = CANCEL) -> None:
        """
        Reset the stream: neither side sends on it again.
        """
        if not self.reset and not (self.local_done and self.remote_done):
            self.session.send(rst_stream(self.id, status))
        self._gone()

    # What the session delivers.

    def _data(self, data: bytes) -> None:
        if not self.remote_done and not self._inbox.put(data):
            self.cancel(FRAME_TOO_LARGE)

    def _end(self) -> None:
        if self.remote_done:
            return
        self.remote_done = True
        if self._on_end is not None:
            self._on_end()
        self.session.maybe_forget(self)

    def _gone(self) -> None:
        if self.reset:
            return
        self.reset = self.remote_done = self.local_done = True
        self._inbox.clear()
        self.session.maybe_forget(self)
        if self._on_reset is not None:
            self._on_reset()


class SpdySession(MuxConnection):
    """
    The server side of a SPDY/3.1 connection, fed by a hijacked
    connection (L{dataReceived}, L{connectionLost}). Each stream the
    client opens is answered (SYN_REPLY) and handed to C{on_stream}.

    @ivar streams: the open streams by ID.
    """

    _log = Logger()

    def __init__(self, transport: Any, on_stream: Callable[[SpdyStream], None], max_streams: int = 64) -> None:
        super().__init__(transport)
        self._on_stream = on_stream
        self._max_streams = max_streams
        self._reader = FrameReader()
        self._codec = HeaderCodec()
        self.streams: dict[int, SpdyStream] = {}
        self._last_id = 0

    # Input.

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            for control, kind, flags, payload in self._reader.feed(data):
                if control:
                    self._control(kind, flags, payload)
                else:
                    self._stream_data(kind, flags, payload)
                if self.closed:
                    return
        except ProtocolError as e:
            self._log.info("streaming client broke SPDY: {error}", error=str(e))
            self.send(goaway(self._last_id, GOAWAY_PROTOCOL_ERROR))
            self.close()

    def _control(self, kind: int, flags: int, payload: bytes) -> None:
        if kind == SYN_STREAM:
            if len(payload) < 10:
                raise ProtocolError("short SYN_STREAM")
            stream_id, _associated = struct.unpack_from(">II", payload)
            headers = self._codec.decode(payload[10:])
            stream_id &= 0x7FFFFFFF
            if stream_id % 2 == 0 or stream_id <= self._last_id:
                raise ProtocolError(f"invalid stream ID {stream_id}")
            self._last_id = stream_id
            if len(self.streams) >= self._max_streams:
                self.send(rst_stream(stream_id, REFUSED_STREAM))
                return
            stream = SpdyStream(self, stream_id, headers)
            self.streams[stream_id] = stream
            self.send(control_frame(SYN_REPLY, 0, struct.pack(">I", stream_id) + self._codec.encode({})))
            if flags & FLAG_FIN:
                stream.remote_done = True
            self._on_stream(stream)
        elif kind in (SYN_REPLY, HEADERS):
            # The client opens every stream: nothing of ours to reply to;
            # the block is inflated all the same (one zlib context).
            if len(payload) < 4:
                raise ProtocolError("short header frame")
            self._codec.decode(payload[4:])
        elif kind == RST_STREAM:
            if len(payload) != 8:
                raise ProtocolError("bad RST_STREAM")
            stream_id, _status = struct.unpack(">II", payload)
            reset = self.streams.get(stream_id & 0x7FFFFFFF)
            if reset is not None:
                reset._gone()
        elif kind == PING:
            if len(payload) != 4:
                raise ProtocolError("bad PING")
            (ping_id,) = struct.unpack(">I", payload)
            if ping_id % 2 == 1:
                # The client's: answered as is. Ours (even) we never send.
                self.send(ping(ping_id))
        elif kind == GOAWAY:
            self.close()
        # SETTINGS, WINDOW_UPDATE and unknown types: nothing to do (no
        # flow control, see the module's docstring).

    def _stream_data(self, stream_id: int, flags: int, payload: bytes) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            # Reset or finished: late data is dropped, as the spec says.
            return
        if payload:
            stream._data(payload)
        if flags & FLAG_FIN:
            stream._end()

    def maybe_forget(self, stream: SpdyStream) -> None:
        if stream.remote_done and stream.local_done:
            self.streams.pop(stream.id, None)

    def _ended(self) -> None:
        for stream in list(self.streams.values()):
            stream._gone()
        self.streams.clear()
