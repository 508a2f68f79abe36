"""
Tests for L{ross.protocols.shimwire} and the daemon's end of the shim
protocol, L{ross.protocols.shim}.
"""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from ross import errors
from ross.protocols import shimwire
from ross.protocols.shim import ContainerStartError, ShimGone, ShimProtocol


class FramingTests(SynchronousTestCase):
    def test_round_trip_any_split(self) -> None:
        """
        Frames come out whole and unchanged however the bytes are split,
        all 256 byte values included.
        """
        data = bytes(range(256)) * 3
        wire = shimwire.message({"id": 1, "op": "x", "blob": data}) + shimwire.frame(shimwire.STDOUT, data) \
            + shimwire.frame(shimwire.STDIN, b"")
        for step in (1, 7, 1000):
            decoder = shimwire.FrameDecoder()
            frames = []
            for i in range(0, len(wire), step):
                frames += decoder.feed(wire[i:i + step])
            self.assertEqual(len(frames), 3)
            self.assertEqual(shimwire.decode_message(frames[0][1]), {"id": 1, "op": "x", "blob": data})
            self.assertEqual(frames[1], (shimwire.STDOUT, data))
            self.assertEqual(frames[2], (shimwire.STDIN, b""))
            self.assertEqual(decoder.pending(), 0)

    def test_unknown_kind(self) -> None:
        with self.assertRaises(shimwire.FrameError):
            shimwire.FrameDecoder().feed(struct.pack(">IB", 0, 99))

    def test_oversized(self) -> None:
        with self.assertRaises(shimwire.FrameError):
            shimwire.FrameDecoder().feed(struct.pack(">IB", shimwire.MAX_PAYLOAD + 1, shimwire.STDOUT))

    def test_not_a_dict(self) -> None:
        with self.assertRaises(shimwire.FrameError):
            shimwire.decode_message(b"garbage")


class ProtocolTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.proto = ShimProtocol()
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def sent(self) -> list[dict]:  # type: ignore[type-arg]
        frames = shimwire.FrameDecoder().feed(self.transport.value())
        self.transport.clear()
        return [shimwire.decode_message(p) for _, p in frames]

    def test_answers(self) -> None:
        """
        Answers fire the Deferred of the request with the same id; refusals
        become domain errors.
        """
        d1 = self.proto.request("state")
        d2 = self.proto.request("kill", signal=9)
        d3 = self.proto.request("start")
        (r1, r2, r3) = self.sent()
        self.assertEqual((r1["op"], r2["op"], r2["signal"]), ("state", "kill", 9))
        self.proto.dataReceived(shimwire.message({"id": r2["id"], "ok": False, "kind": "precondition",
                                                  "error": "not running"}))
        self.proto.dataReceived(shimwire.message({"id": r1["id"], "ok": True, "pid": 5}))
        self.proto.dataReceived(shimwire.message({"id": r3["id"], "ok": False, "kind": "start", "code": 127,
                                                  "error": "not found"}))
        self.assertEqual(self.successResultOf(d1)["pid"], 5)
        self.failureResultOf(d2, errors.FailedPrecondition)
        e = self.failureResultOf(d3, ContainerStartError).value
        self.assertEqual((e.exit_code, str(e)), (127, "not found"))

    def test_events_and_output(self) -> None:
        events: list[dict[str, Any]] = []
        output: list[tuple[str, bytes]] = []
        self.proto.on_event = events.append
        self.proto.on_output = lambda stream, data: output.append((stream, data))
        self.proto.dataReceived(shimwire.frame(shimwire.STDERR, b"\xff\x00") + shimwire.message({"event": "exit"}))
        self.assertEqual(output, [("stderr", b"\xff\x00")])
        self.assertEqual(events, [{"event": "exit"}])

    def test_lost(self) -> None:
        """
        Pending requests fail with ShimGone when the connection closes; later
        ones fail at once.
        """
        d = self.proto.request("state")
        self.proto.connectionLost(None)  # type: ignore[arg-type]
        self.failureResultOf(d, ShimGone)
        self.failureResultOf(self.proto.request("state"), ShimGone)

    def test_bad_frame_drops_connection(self) -> None:
        self.proto.dataReceived(struct.pack(">IB", 0, 99))
        self.assertTrue(self.transport.disconnecting)
