"""
SPDY/3.1 framing and the server session (L{ross.protocols.spdy}), and the
streaming server's one-time tokens (L{ross.cri.streaming}), without a
network.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any

from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import SynchronousTestCase

from ross.address import parse_stream_address
from ross.cri.streaming import EXEC, StreamRequests, StreamTarget
from ross.errors import InvalidArgument, ResourceExhausted
from ross.protocols import spdy


class Client:
    """
    The client's half: SYN_STREAMs with their own compression context,
    and the server's frames read back.
    """

    def __init__(self) -> None:
        self.codec = spdy.HeaderCodec()
        self.reader = spdy.FrameReader()

    def syn(self, stream_id: int, fin: bool = False, **headers: str) -> bytes:
        block = self.codec.encode({k.lower(): [v] for k, v in headers.items()})
        return spdy.control_frame(spdy.SYN_STREAM, spdy.FLAG_FIN if fin else 0,
                                  struct.pack(">IIBB", stream_id, 0, 0, 0) + block)

    def frames(self, transport: StringTransport) -> list[tuple[bool, int, int, bytes]]:
        data = transport.value()
        transport.clear()
        return list(self.reader.feed(data))


class SessionTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.transport = StringTransport()
        self.opened: list[spdy.SpdyStream] = []
        self.session = spdy.SpdySession(self.transport, self.opened.append, max_streams=2)
        self.client = Client()

    def test_dictionary(self) -> None:
        """
        The dictionary is SPDY/3's: zlib checks its Adler-32 (the DICTID
        in every compressed header block).
        """
        self.assertEqual((len(spdy.DICTIONARY), zlib.adler32(spdy.DICTIONARY)), (1423, 3821447106))

    def test_stream(self) -> None:
        """
        A client's stream is answered with SYN_REPLY and handed over with its
        headers; data before and after listen arrives in order, then FIN;
        what we write goes out as data frames, FIN last.
        """
        self.session.dataReceived(self.client.syn(1, streamType="stdin", port="80"))
        [(control, kind, _, payload)] = self.client.frames(self.transport)
        self.assertEqual((control, kind, struct.unpack_from(">I", payload)[0]), (True, spdy.SYN_REPLY, 1))
        self.assertEqual(self.client.codec.decode(payload[4:]), {})
        [stream] = self.opened
        self.assertEqual((stream.header("streamtype"), stream.header("port")), ("stdin", "80"))
        self.session.dataReceived(spdy.data_frame(1, b"early"))
        got: list[bytes] = []
        ended: list[bool] = []
        stream.listen(got.append, lambda: ended.append(True))
        self.session.dataReceived(spdy.data_frame(1, b"late", fin=True))
        self.assertEqual((got, ended), ([b"early", b"late"], [True]))
        stream.write(b"x" * (spdy.WRITE_CHUNK + 1))
        stream.finish()
        frames = self.client.frames(self.transport)
        self.assertEqual([(c, k, f, len(p)) for c, k, f, p in frames],
                         [(False, 1, 0, spdy.WRITE_CHUNK), (False, 1, 0, 1), (False, 1, spdy.FLAG_FIN, 0)])
        self.assertEqual(self.session.streams, {})

    def test_ping_and_reset(self) -> None:
        """
        The client's pings come back; its RST_STREAM resets the stream.
        """
        self.session.dataReceived(spdy.ping(7))
        self.assertEqual(self.client.frames(self.transport), [(True, spdy.PING, 0, struct.pack(">I", 7))])
        self.session.dataReceived(self.client.syn(1, streamType="data"))
        resets: list[bool] = []
        self.opened[0].listen(lambda _: None, lambda: None, lambda: resets.append(True))
        self.session.dataReceived(spdy.rst_stream(1, spdy.CANCEL))
        self.assertEqual(resets, [True])
        self.assertEqual(self.session.streams, {})

    def test_stream_limit(self) -> None:
        """
        Streams beyond the limit are refused; the connection serves on.
        """
        for stream_id in (1, 3, 5):
            self.session.dataReceived(self.client.syn(stream_id, streamType="data"))
        frames = self.client.frames(self.transport)
        self.assertEqual(frames[-1], (True, spdy.RST_STREAM, 0, struct.pack(">II", 5, spdy.REFUSED_STREAM)))
        self.assertEqual(len(self.opened), 2)
        self.assertFalse(self.session.closed)

    def assertBroken(self, data: bytes) -> None:
        lost: list[bool] = []
        self.session.when_lost(lambda: lost.append(True))
        self.session.dataReceived(data)
        self.assertTrue(self.transport.disconnecting)
        self.assertEqual(lost, [True])
        self.assertEqual(self.client.frames(self.transport)[-1][:2], (True, spdy.GOAWAY))

    def test_oversized_frame(self) -> None:
        """
        A frame larger than the bound ends the connection before its body
        is awaited.
        """
        self.assertBroken(struct.pack(">II", 1, spdy.MAX_DATA_FRAME + 1))

    def test_header_bomb(self) -> None:
        """
        A header block inflating beyond the bound ends the connection.
        """
        deflate = zlib.compressobj(zdict=spdy.DICTIONARY)
        bomb = deflate.compress(b"\0" * (10 * spdy.MAX_HEADER_BLOCK)) + deflate.flush(zlib.Z_SYNC_FLUSH)
        self.assertBroken(spdy.control_frame(spdy.SYN_STREAM, 0, struct.pack(">IIBB", 1, 0, 0, 0) + bomb))

    def test_even_stream(self) -> None:
        """
        Stream IDs the client may not use (even, or not increasing) end the
        connection.
        """
        self.assertBroken(self.client.syn(2, streamType="data"))

    def test_bad_version(self) -> None:
        self.assertBroken(b"\x80\x02\x00\x01" + b"\0" * 20)

    def test_pauses(self) -> None:
        """
        A slow client pauses the producers registered on the session.
        """
        class Producer:
            paused = False

            def pauseProducing(self) -> None:
                self.paused = True

            def resumeProducing(self) -> None:
                self.paused = False

        producer = Producer()
        self.session.add_producer(producer)
        self.session.pauseProducing()
        self.assertTrue(producer.paused)
        self.session.resumeProducing()
        self.assertFalse(producer.paused)
        self.session.block_input("a")
        self.assertEqual(self.transport.producerState, "paused")
        self.session.unblock_input("a")
        self.assertEqual(self.transport.producerState, "producing")


class TokenTests(SynchronousTestCase):
    def test_single_use(self) -> None:
        clock = Clock()
        requests = StreamRequests(clock)
        target = StreamTarget(EXEC, "c1", ("true",), stdout=True)
        token = requests.insert(target)
        self.assertGreaterEqual(len(token), 20)
        self.assertEqual(requests.consume(token), target)
        self.assertIsNone(requests.consume(token))
        self.assertIsNone(requests.consume("nope"))

    def test_expiry_and_limit(self) -> None:
        clock = Clock()
        requests = StreamRequests(clock, ttl=60, limit=2)
        target = StreamTarget(EXEC, "c1", ("true",), stdout=True)
        old = requests.insert(target)
        requests.insert(target)
        self.assertRaises(ResourceExhausted, requests.insert, target)
        clock.advance(60)
        self.assertIsNone(requests.consume(old))
        requests.insert(target)
        self.assertEqual(len(requests), 1)

    def test_address(self) -> None:
        self.assertEqual(parse_stream_address("127.0.0.1"), ("127.0.0.1", 0))
        self.assertEqual(parse_stream_address("127.0.0.2:10010"), ("127.0.0.2", 10010))
        self.assertEqual(parse_stream_address("[::1]:5"), ("::1", 5))
        for bad in ("0.0.0.0", "10.1.2.3:80", "localhost", "127.0.0.1:99999", "[::1"):
            self.assertRaises(InvalidArgument, parse_stream_address, bad)


class _Containers:
    records: dict[str, object] = {}


class _Engine:
    containers = _Containers()


class HandlerTests(SynchronousTestCase):
    """
    The streams' handlers as a hostile or slow client meets them (no
    container needed for what they refuse).
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.transport = StringTransport()
        self.client = Client()

    def session(self, target: StreamTarget) -> Any:
        from ross.cri.portforward import PortForward
        from ross.cri.remotecommand import RemoteCommand

        handlers: list[Any] = []
        session = spdy.SpdySession(self.transport, lambda stream: handlers[0](stream))
        kind = PortForward if target.kind == "portforward" else RemoteCommand
        handlers.append(kind(self.clock, _Engine(), target, session).stream_opened)  # type: ignore[arg-type]
        return session

    def frames(self) -> list[tuple[bool, int, int, bytes]]:
        return self.client.frames(self.transport)

    def test_forward_refusals(self) -> None:
        """
        A stream without requestID is reset; a pair with a bad port, or for
        a pod that is gone, gets the reason on its error stream and both
        finished; a lone stream is reset once its pair is overdue.
        """
        from ross.cri.portforward import PAIR_TIMEOUT

        session = self.session(StreamTarget("portforward", "gone"))
        session.dataReceived(self.client.syn(1, streamType="data", port="80"))
        self.assertIn((True, spdy.RST_STREAM, 0, struct.pack(">II", 1, spdy.PROTOCOL_ERROR)), self.frames())
        session.dataReceived(self.client.syn(3, streamType="error", port="x", requestID="1")
                             + self.client.syn(5, streamType="data", port="x", requestID="1"))
        frames = self.frames()
        self.assertIn((False, 3, 0, b"invalid port 'x'"), frames)
        self.assertIn((False, 3, spdy.FLAG_FIN, b""), frames)
        self.assertIn((False, 5, spdy.FLAG_FIN, b""), frames)
        session.dataReceived(self.client.syn(7, streamType="error", port="80", requestID="2")
                             + self.client.syn(9, streamType="data", port="80", requestID="2"))
        [message] = [p for c, k, f, p in self.frames() if not c and k == 7 and p]
        self.assertIn(b"not found", message)
        session.dataReceived(self.client.syn(11, streamType="data", port="80", requestID="3"))
        self.frames()
        self.clock.advance(PAIR_TIMEOUT)
        self.assertEqual(self.frames(), [(True, spdy.RST_STREAM, 0, struct.pack(">II", 11, spdy.CANCEL))])
        self.assertFalse(session.closed)

    def test_command_streams(self) -> None:
        """
        remotecommand: an unknown or repeated stream type is reset; a
        client that does not open the streams its request named in time
        is disconnected.
        """
        from ross.cri.remotecommand import STREAM_CREATION_TIMEOUT

        session = self.session(StreamTarget("exec", "c", ("true",), stdout=True, stderr=True))
        session.dataReceived(self.client.syn(1, streamType="bogus") + self.client.syn(3, streamType="error")
                             + self.client.syn(5, streamType="error"))
        resets = [p for c, k, f, p in self.frames() if c and k == spdy.RST_STREAM]
        self.assertEqual([struct.unpack(">II", p)[0] for p in resets], [1, 5])
        self.clock.advance(STREAM_CREATION_TIMEOUT)
        self.assertTrue(session.closed)
        self.assertTrue(self.transport.disconnecting)
