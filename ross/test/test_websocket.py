"""
The WebSocket server side (L{ross.protocols.websocket}) without a network.
"""

from __future__ import annotations

import os
import struct

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from ross.protocols import websocket as ws


def client_frame(opcode: int, payload: bytes, final: bool = True, masked: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if final else 0) | opcode
    mask_bit = 0x80 if masked else 0
    if n < 126:
        head = struct.pack(">BB", first, mask_bit | n)
    elif n < 1 << 16:
        head = struct.pack(">BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack(">BBQ", first, mask_bit | 127, n)
    if not masked:
        return head + payload
    mask = os.urandom(4)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


class WebSocketTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.transport = StringTransport()
        self.messages: list[bytes] = []
        self.session = ws.WebSocketSession(self.transport, self.messages.append)

    def test_accept_key(self) -> None:
        """
        RFC 6455's own example.
        """
        self.assertEqual(ws.accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
        self.assertTrue(ws.valid_key("dGhlIHNhbXBsZSBub25jZQ=="))
        self.assertFalse(ws.valid_key("short"))

    def test_messages(self) -> None:
        """
        Masked binary messages, whole or in fragments and in pieces of any
        size, arrive whole; ours go out unmasked.
        """
        data = client_frame(ws.BINARY, b"\x00hello") + client_frame(ws.BINARY, b"a" * 70000, final=False)
        data += client_frame(ws.PING, b"p") + client_frame(ws.CONTINUATION, b"b")
        for i in range(0, len(data), 7):
            self.session.dataReceived(data[i:i + 7])
        self.assertEqual(self.messages, [b"\x00hello", b"a" * 70000 + b"b"])
        self.assertEqual(self.transport.value(), ws.frame(ws.PONG, b"p"))
        self.transport.clear()
        self.session.send_message(b"\x01out")
        self.assertEqual(self.transport.value(), b"\x82\x04\x01out")

    def test_close(self) -> None:
        """
        A close is answered and ends the session.
        """
        self.session.dataReceived(client_frame(ws.CLOSE, struct.pack(">H", 1000)))
        self.assertEqual(self.transport.value(), ws.close_frame(ws.NORMAL_CLOSURE))
        self.assertTrue(self.transport.disconnecting)
        self.assertTrue(self.session.closed)

    def assertRefused(self, data: bytes, code: int) -> None:
        self.session.dataReceived(data)
        self.assertTrue(self.transport.disconnecting)
        sent = self.transport.value()
        self.assertEqual((sent[0], sent[2:4]), (0x88, struct.pack(">H", code)))
        self.assertEqual(self.messages, [])

    def test_unmasked(self) -> None:
        self.assertRefused(client_frame(ws.BINARY, b"x", masked=False), ws.PROTOCOL_ERROR)

    def test_too_large(self) -> None:
        """
        A frame announcing more than the bound is refused before it comes;
        so is a message that grows beyond it in fragments.
        """
        self.assertRefused(struct.pack(">BBQ", 0x82, 0xFF, ws.MAX_MESSAGE + 1), ws.TOO_BIG)

    def test_fragments_too_large(self) -> None:
        chunk = b"z" * (ws.MAX_MESSAGE // 2 + 1)
        self.assertRefused(client_frame(ws.BINARY, chunk, final=False) + client_frame(ws.CONTINUATION, chunk),
                           ws.TOO_BIG)

    def test_text(self) -> None:
        self.assertRefused(client_frame(ws.TEXT, b"hi"), ws.UNSUPPORTED)

    def test_bad_control(self) -> None:
        self.assertRefused(client_frame(ws.PING, b"x" * 126), ws.PROTOCOL_ERROR)
