# -*- test-case-name: ross.test.test_shimwire -*-
"""
The framing of the shim control protocol, shared by both ends: the shim's
stdlib poll loop and the daemon's Twisted protocol (L{ross.protocols.shim}).
Stdlib only and import-light: the shim imports it on every start.

A frame is a 5-byte header, the payload length (u32, big-endian) and a kind
(u8), then the payload:

    - L{MESSAGE}: a dict, encoded with C{marshal} (version 4). Requests
      carry C{"id"} and C{"op"}, responses the same C{"id"} and C{"ok"},
      events C{"event"}. marshal costs no import (the shim starts faster than
      with json, whose import pulls in C{re}) and carries bytes and ints
      unchanged; both ends run the same Python, and the socket is reachable
      by root only, so its input is trusted.
    - L{STDOUT}, L{STDERR}: output of the session the connection is attached
      to (a PTY's output is STDOUT), raw bytes.
    - L{STDIN}: input for that session, raw bytes.
    - L{RESIZE}: that session's terminal size, rows and columns (two u16,
      big-endian); L{CLOSE_STDIN}: the end of its input (no payload).

A connection attached with C{direct} belongs to a client, not the daemon
(SPEC 3's direct channel): the shim takes only STDIN, RESIZE and
CLOSE_STDIN from it, never a MESSAGE, so it reaches its session's input,
output and size and nothing else.
"""

from __future__ import annotations

import marshal
import struct
from typing import Any

MESSAGE = 1
STDOUT = 2
STDERR = 3
STDIN = 4
RESIZE = 5
CLOSE_STDIN = 6

KINDS = (MESSAGE, STDOUT, STDERR, STDIN, RESIZE, CLOSE_STDIN)

_SIZE = struct.Struct(">HH")

MAX_PAYLOAD = 64 * 1024 * 1024
MARSHAL_VERSION = 4

_HEADER = struct.Struct(">IB")
HEADER_SIZE = _HEADER.size


class FrameError(Exception):
    """
    The peer sent something that is not a frame of this protocol.
    """


def frame(kind: int, payload: bytes) -> bytes:
    """
    One frame of C{kind} carrying C{payload}.
    """
    return header(kind, len(payload)) + payload


def header(kind: int, length: int) -> bytes:
    """
    The header of a frame of C{kind} whose payload is C{length} bytes (to
    send the payload after it without joining the two).
    """
    if length > MAX_PAYLOAD:
        raise FrameError(f"frame payload of {length} bytes exceeds {MAX_PAYLOAD}")
    return _HEADER.pack(length, kind)


def message(fields: dict) -> bytes:  # type: ignore[type-arg]
    """
    A MESSAGE frame carrying C{fields}.
    """
    return frame(MESSAGE, marshal.dumps(fields, MARSHAL_VERSION))


def resize(rows: int, cols: int) -> bytes:
    """
    A RESIZE frame.
    """
    return frame(RESIZE, _SIZE.pack(rows, cols))


def decode_resize(payload: bytes) -> tuple[int, int]:
    """
    (rows, cols) of a RESIZE frame's payload; FrameError when it is not one.
    """
    if len(payload) != _SIZE.size:
        raise FrameError(f"bad resize frame of {len(payload)} bytes")
    rows, cols = _SIZE.unpack(payload)
    return rows, cols


def decode_message(payload: bytes) -> dict:  # type: ignore[type-arg]
    """
    The dict of a MESSAGE frame's payload; FrameError when it is not one.
    """
    try:
        value = marshal.loads(payload)
    except (EOFError, ValueError, TypeError) as e:
        raise FrameError(f"bad message: {e}") from None
    if not isinstance(value, dict):
        raise FrameError("bad message: not a dict")
    return value


def read_frame(sock: Any) -> tuple[int, bytes]:
    """
    Exactly one frame from blocking socket C{sock}, reading nothing past
    it (what follows stays for whoever reads the socket next).
    """
    header = _read_exactly(sock, HEADER_SIZE)
    length, kind = _HEADER.unpack(header)
    if kind not in KINDS or length > MAX_PAYLOAD:
        raise FrameError(f"bad frame header (kind {kind}, {length} bytes)")
    return kind, _read_exactly(sock, length)


def _read_exactly(sock: Any, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise FrameError("the connection closed in the middle of a frame")
        data += chunk
    return bytes(data)


class FrameDecoder:
    """
    Incremental decoder: L{feed} bytes as they arrive, get complete frames.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[int, bytes]]:
        """
        Add C{data}; return every frame now complete as (kind, payload).
        Raises L{FrameError} on an unknown kind or an oversized frame.
        """
        buf = self._buffer
        # What arrived whole is cut from C{data} itself: each payload is
        # copied once, however large (PTY output comes in 256 KiB frames).
        if buf:
            buf += data
            source: bytes | bytearray = buf
        else:
            source = data
        frames = []
        offset = 0
        end = len(source)
        with memoryview(source) as view:
            while end - offset >= HEADER_SIZE:
                length, kind = _HEADER.unpack_from(source, offset)
                if kind not in KINDS:
                    raise FrameError(f"unknown frame kind {kind}")
                if length > MAX_PAYLOAD:
                    raise FrameError(f"frame payload of {length} bytes exceeds {MAX_PAYLOAD}")
                start = offset + HEADER_SIZE
                if end - start < length:
                    break
                frames.append((kind, bytes(view[start:start + length])))
                offset = start + length
        if source is buf:
            del buf[:offset]
        elif offset < end:
            buf += data[offset:]
        return frames

    def pending(self) -> int:
        """
        Bytes received that do not make a complete frame yet.
        """
        return len(self._buffer)
