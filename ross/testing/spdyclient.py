"""
A blocking client of the CRI's streaming server for tests (run it in a
thread): upgrades a URL to SPDY/3.1, opens streams as client-go does,
and gathers what comes back, every wait bounded.
"""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from typing import Any
from urllib.parse import urlsplit

from ross.protocols.spdy import (
    FLAG_FIN,
    RST_STREAM,
    SYN_REPLY,
    SYN_STREAM,
    FrameReader,
    HeaderCodec,
    control_frame,
    data_frame,
    rst_stream,
)


class UpgradeRefused(Exception):
    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"{status}: {body[:200]!r}")
        self.status = status
        self.body = body


def _upgrade(url: str, request: str, timeout: float) -> tuple[socket.socket, float, int, dict[str, str], bytes]:
    """
    Send C{request} (its head, with {path} and {host} to fill) to C{url}:
    (socket, deadline, status, headers, what came after the head).
    """
    parts = urlsplit(url)
    deadline = time.monotonic() + timeout
    sock = socket.create_connection((parts.hostname, parts.port), timeout=timeout)
    sock.sendall(request.format(path=parts.path, host=parts.netloc).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = _recv(sock, deadline)
        if not chunk:
            break
        head += chunk
    head, _, rest = head.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1]) if lines[0] else 0
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    if status != 101:
        while chunk := _recv(sock, deadline):
            rest += chunk
        sock.close()
        raise UpgradeRefused(status, rest)
    return sock, deadline, status, headers, rest


def _recv(sock: socket.socket, deadline: float) -> bytes:
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("the streaming server took too long")
    sock.settimeout(left)
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


class SpdyClient:
    """
    One upgraded connection. C{data} holds what each stream received,
    C{finished} the streams the server finished, C{reset} those it reset.
    """

    def __init__(self, url: str, protocol: str = "v4.channel.k8s.io", timeout: float = 30.0,
                 method: str = "POST") -> None:
        self.sock, self.deadline, self.status, self.headers, self._pending = _upgrade(
            url, f"{method} {{path}} HTTP/1.1\r\nHost: {{host}}\r\nConnection: Upgrade\r\nUpgrade: SPDY/3.1\r\n"
                 f"X-Stream-Protocol-Version: {protocol}\r\nContent-Length: 0\r\n\r\n", timeout)
        self._reader = FrameReader()
        self._codec = HeaderCodec()
        self._next_id = 1
        self.data: dict[int, bytearray] = {}
        self.finished: set[int] = set()
        self.reset: set[int] = set()
        self.replied: set[int] = set()
        self.eof = False

    def _recv(self) -> bytes:
        return _recv(self.sock, self.deadline)

    def open(self, **headers: str) -> int:
        stream_id = self._next_id
        self._next_id += 2
        block = self._codec.encode({k.lower(): [v] for k, v in headers.items()})
        self.sock.sendall(control_frame(SYN_STREAM, 0, struct.pack(">IIBB", stream_id, 0, 0, 0) + block))
        self.data[stream_id] = bytearray()
        return stream_id

    def send(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        self.sock.sendall(data_frame(stream_id, data, fin))

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cancel(self, stream_id: int) -> None:
        self.sock.sendall(rst_stream(stream_id, 5))

    def pump(self) -> bool:
        """
        Read what is there (waiting until something is); False at EOF.
        """
        data, self._pending = self._pending, b""
        if not data:
            data = self._recv()
        if not data:
            self.eof = True
            return False
        for control, kind, flags, payload in self._reader.feed(data):
            if control:
                if kind == SYN_REPLY:
                    (sid,) = struct.unpack_from(">I", payload)
                    self._codec.decode(payload[4:])
                    self.replied.add(sid)
                elif kind == RST_STREAM:
                    self.reset.add(struct.unpack_from(">I", payload)[0])
            else:
                self.data.setdefault(kind, bytearray()).extend(payload)
                if flags & FLAG_FIN:
                    self.finished.add(kind)
        return True

    def wait(self, condition: Any) -> None:
        while not condition():
            if not self.pump():
                return

    def run_to_end(self) -> None:
        while self.pump():
            pass

    def close(self) -> None:
        self.sock.close()


class WebSocketClient:
    """
    remotecommand's channels on a WebSocket, as client-go's WebSocket
    executor: C{channels} holds what each channel number received;
    C{close_code} the server's close.
    """

    def __init__(self, url: str, protocol: str = "v5.channel.k8s.io", timeout: float = 30.0) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock, self.deadline, self.status, self.headers, self._buffer = _upgrade(
            url, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                 f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n"
                 f"Sec-WebSocket-Protocol: {protocol}\r\n\r\n", timeout)
        self.channels: dict[int, bytearray] = {}
        self.close_code: int | None = None

    def _recv(self) -> bytes:
        return _recv(self.sock, self.deadline)

    def send(self, channel: int, data: bytes, opcode: int = 0x2) -> None:
        payload = bytes((channel,)) + data if channel >= 0 else data
        n = len(payload)
        head = bytes((0x80 | opcode,))
        if n < 126:
            head += bytes((0x80 | n,))
        elif n < 1 << 16:
            head += bytes((0x80 | 126,)) + struct.pack(">H", n)
        else:
            head += bytes((0x80 | 127,)) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def close_channel(self, channel: int) -> None:
        self.send(255, bytes((channel,)))

    def run_to_end(self) -> None:
        """
        Gather messages until the server's close (or EOF).
        """
        while True:
            while len(self._buffer) >= 2:
                n = self._buffer[1] & 0x7F
                pos = 2
                if n == 126:
                    n, pos = struct.unpack_from(">H", self._buffer, 2)[0], 4
                elif n == 127:
                    n, pos = struct.unpack_from(">Q", self._buffer, 2)[0], 10
                if len(self._buffer) < pos + n:
                    break
                opcode, payload = self._buffer[0] & 0x0F, self._buffer[pos:pos + n]
                self._buffer = self._buffer[pos + n:]
                if opcode == 0x8:
                    self.close_code = struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005
                    return
                if opcode == 0x2 and payload:
                    self.channels.setdefault(payload[0], bytearray()).extend(payload[1:])
            chunk = self._recv()
            if not chunk:
                return
            self._buffer += chunk

    def close(self) -> None:
        self.sock.close()
