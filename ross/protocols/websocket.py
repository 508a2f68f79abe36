# -*- test-case-name: ross.test.test_websocket -*-
"""
WebSocket (RFC 6455), the server's side, as much as Kubernetes' streaming
clients use: the handshake's accept key, binary messages (masked by the
client, as the RFC demands), pings answered, a close answered and ended.
Every frame and message is bounded; fragments are put together within
the same bound.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from typing import Any, Callable

from twisted.logger import Logger

from ross.protocols.muxconn import MuxConnection

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NORMAL_CLOSURE, PROTOCOL_ERROR, UNSUPPORTED, TOO_BIG = 1000, 1002, 1003, 1009
#: The largest message accepted (client-go writes 32 KiB at a time).
MAX_MESSAGE = 1024 * 1024


def accept_key(key: str) -> str:
    """
    Sec-WebSocket-Accept for the client's Sec-WebSocket-Key.
    """
    return base64.b64encode(hashlib.sha1(key.strip().encode("latin-1") + _GUID).digest()).decode()


def valid_key(key: str) -> bool:
    try:
        return len(base64.b64decode(key.strip(), validate=True)) == 16
    except ValueError:
        return False


def frame(opcode: int, payload: bytes) -> bytes:
    """
    One unmasked, final frame (the server's).
    """
    n = len(payload)
    if n < 126:
        head = struct.pack(">BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", 0x80 | opcode, 126, n)
    else:
        head = struct.pack(">BBQ", 0x80 | opcode, 127, n)
    return head + payload


def close_frame(code: int, reason: str = "") -> bytes:
    return frame(CLOSE, struct.pack(">H", code) + reason.encode()[:120])


class FrameError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


class FrameReader:
    """
    Cuts the client's bytes into (opcode, final, payload) frames, unmasked.
    """

    def __init__(self, limit: int = MAX_MESSAGE) -> None:
        self._buffer = bytearray()
        self._limit = limit

    def feed(self, data: bytes) -> list[tuple[int, bool, bytes]]:
        self._buffer += data
        frames = []
        while True:
            buf = self._buffer
            if len(buf) < 2:
                break
            first, second = buf[0], buf[1]
            if first & 0x70:
                raise FrameError(PROTOCOL_ERROR, "reserved bits set")
            if not second & 0x80:
                raise FrameError(PROTOCOL_ERROR, "a client's frame must be masked")
            length, pos = second & 0x7F, 2
            if length == 126:
                if len(buf) < 4:
                    break
                length, pos = struct.unpack_from(">H", buf, 2)[0], 4
            elif length == 127:
                if len(buf) < 10:
                    break
                length, pos = struct.unpack_from(">Q", buf, 2)[0], 10
            if length > self._limit:
                raise FrameError(TOO_BIG, f"frame too large ({length} bytes)")
            if len(buf) < pos + 4 + length:
                break
            mask = bytes(buf[pos:pos + 4])
            payload = bytes(buf[pos + 4:pos + 4 + length])
            del buf[:pos + 4 + length]
            if length:
                repeated = (mask * (length // 4 + 1))[:length]
                payload = (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(length, "big")
            frames.append((first & 0x0F, bool(first & 0x80), payload))
        return frames


class WebSocketSession(MuxConnection):
    """
    A WebSocket connection after the handshake: each whole binary message
    goes to C{on_message}.
    """

    _log = Logger()

    def __init__(self, transport: Any, on_message: Callable[[bytes], None]) -> None:
        super().__init__(transport)
        self._on_message = on_message
        self._reader = FrameReader()
        self._fragments: list[bytes] = []
        self._fragment_size = 0
        self._close_sent = False

    def send_message(self, data: bytes) -> None:
        self.send(frame(BINARY, data))

    def dataReceived(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            for opcode, final, payload in self._reader.feed(data):
                self._frame(opcode, final, payload)
                if self.closed:
                    return
        except FrameError as e:
            self._log.info("streaming client broke WebSocket: {error}", error=str(e))
            self._close_with(e.code, str(e))

    def _frame(self, opcode: int, final: bool, payload: bytes) -> None:
        if opcode >= 0x8:
            if not final or len(payload) > 125:
                raise FrameError(PROTOCOL_ERROR, "bad control frame")
            if opcode == PING:
                self.send(frame(PONG, payload))
            elif opcode == CLOSE:
                self.close()
            elif opcode != PONG:
                raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
            return
        if opcode == CONTINUATION:
            if not self._fragments:
                raise FrameError(PROTOCOL_ERROR, "continuation of nothing")
        elif opcode in (TEXT, BINARY):
            if self._fragments:
                raise FrameError(PROTOCOL_ERROR, "a new message inside a fragmented one")
            if opcode == TEXT:
                raise FrameError(UNSUPPORTED, "text messages are not spoken here")
            self._fragments = [b""]
        else:
            raise FrameError(PROTOCOL_ERROR, f"unknown opcode {opcode}")
        self._fragment_size += len(payload)
        if self._fragment_size > MAX_MESSAGE:
            raise FrameError(TOO_BIG, "message too large")
        self._fragments.append(payload)
        if final:
            message = b"".join(self._fragments)
            self._fragments, self._fragment_size = [], 0
            self._on_message(message)

    def _close_with(self, code: int, reason: str) -> None:
        if not self.closed and not self._close_sent:
            self._close_sent = True
            self.send(close_frame(code, reason))
        self.close()

    def _closing(self) -> None:
        if not self._close_sent:
            self._close_sent = True
            self.send(close_frame(NORMAL_CLOSURE))


class MessageTransport:
    """
    A byte stream carried in binary messages of a WebSocket (SPDY over
    WebSocket, as client-go's port-forward tunnels it): what is written
    goes out as messages, the rest is the WebSocket's.
    """

    def __init__(self, websocket: WebSocketSession) -> None:
        self._websocket = websocket

    def write(self, data: bytes) -> None:
        self._websocket.send_message(data)

    def loseConnection(self) -> None:
        self._websocket.close()

    def pauseProducing(self) -> None:
        self._websocket.transport.pauseProducing()

    def resumeProducing(self) -> None:
        self._websocket.transport.resumeProducing()
