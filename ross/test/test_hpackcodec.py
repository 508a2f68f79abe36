"""
ross.client.hpackcodec: RFC 7541's own examples (appendix C), the
encoder's blocks read back, and every way a hostile block can be broken
refused with L{HpackError}. The client against a real grpcio server is
in test_h2grpc.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ross.client.hpackcodec import MAX_LIST, STATIC_TABLE, Decoder, Encoder, HpackError, huffman_decode


def _hex(text: str) -> bytes:
    return bytes.fromhex("".join(text.split()))


# RFC 7541 C.4: requests with Huffman coding, one connection.
_REQUESTS = [
    ("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff",
     [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")]),
    ("8286 84be 5886 a8eb 1064 9cbf",
     [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com"),
      ("cache-control", "no-cache")]),
    ("8287 85bf 4088 25a8 49e9 5ba9 7d7f 8925 a849 e95b b8e8 b4bf",
     [(":method", "GET"), (":scheme", "https"), (":path", "/index.html"), (":authority", "www.example.com"),
      ("custom-key", "custom-value")]),
]

# RFC 7541 C.6: responses with Huffman coding, a 256-byte table, so the
# later ones evict.
_DATE1 = "Mon, 21 Oct 2013 20:13:21 GMT"
_RESPONSES = [
    ("4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad"
     " 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
     [(":status", "302"), ("cache-control", "private"), ("date", _DATE1), ("location", "https://www.example.com")]),
    ("4883 640e ffc1 c0bf",
     [(":status", "307"), ("cache-control", "private"), ("date", _DATE1), ("location", "https://www.example.com")]),
    ("88c1 6196 d07a be94 1054 d444 a820 0595 040b 8166 e084 a62d 1bff c05a 839b d9ab 77ad 94e7 821d d7f2"
     " e6c7 b335 dfdf cd5b 3960 d5af 2708 7f36 72c1 ab27 0fb5 291f 9587 3160 65c0 03ed 4ee5 b106 3d50 07",
     [(":status", "200"), ("cache-control", "private"), ("date", "Mon, 21 Oct 2013 20:13:22 GMT"),
      ("location", "https://www.example.com"), ("content-encoding", "gzip"),
      ("set-cookie", "foo=ASDJKHQKBZXOQWEOPIUAXQWEOIU; max-age=3600; version=1")]),
]


class RfcExampleTests(SynchronousTestCase):

    def test_requests(self) -> None:
        decoder = Decoder()
        for block, fields in _REQUESTS:
            self.assertEqual(decoder.decode(_hex(block)), fields)

    def test_responses_evict(self) -> None:
        """
        The table's size after each response is the RFC's (222, 222, 215),
        and its entries too: the third response evicted the first ones.
        """
        decoder = Decoder(limit=256)
        sizes = []
        for block, fields in _RESPONSES:
            self.assertEqual(decoder.decode(_hex(block)), fields)
            sizes.append(decoder._size)
        self.assertEqual(sizes, [222, 222, 215])
        self.assertEqual([name for name, _ in decoder._table], [b"set-cookie", b"content-encoding", b"date"])

    def test_without_huffman(self) -> None:
        """
        RFC 7541 C.3.1, and C.2.1's literal with indexing.
        """
        decoder = Decoder()
        self.assertEqual(decoder.decode(_hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")),
                         [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")])
        self.assertEqual(decoder.decode(_hex("400a 6375 7374 6f6d 2d6b 6579 0d63 7573 746f 6d2d 6865 6164 6572")),
                         [("custom-key", "custom-header")])
        self.assertEqual(decoder.decode(_hex("be")), [("custom-key", "custom-header")])

    def test_huffman_symbols(self) -> None:
        """
        The shortest code, '0' (00000, then 3 bits of padding), and a long
        one, 0xff (26 bits), as the RFC's table gives them.
        """
        self.assertEqual(huffman_decode(b"\x07"), b"0")
        self.assertEqual(huffman_decode(_hex("fffffbbf")), b"\xff")  # 0x3ffffee, 26 bits, then 6 ones
        self.assertEqual(huffman_decode(b""), b"")


class EncoderTests(SynchronousTestCase):

    def test_round_trip(self) -> None:
        """
        Static entries go as one index, names in the static table by
        index, others as literals; the decoder reads back the same fields,
        and its table stays empty.
        """
        fields = [(":method", "POST"), (":scheme", "http"), (":path", "/ross.v1.SystemService/Version"),
                  ("te", "trailers"), ("content-type", "application/grpc"), ("grpc-timeout", "10000m"),
                  ("x-long", "é" * 300)]
        encoder, decoder = Encoder(), Decoder()
        block = encoder.encode(fields)
        self.assertEqual(block[:2], b"\x83\x86")
        self.assertEqual(decoder.decode(block), fields)
        self.assertEqual(decoder.decode(encoder.encode(fields)), fields)
        self.assertEqual(len(decoder._table), 0)

    def test_sensitive_never_indexed(self) -> None:
        block = Encoder().encode([("authorization", "Bearer x")])
        self.assertEqual(block[0], 0x10 | 0x0F)  # never indexed, name index 23 past the 4-bit prefix
        self.assertEqual(Decoder().decode(block), [("authorization", "Bearer x")])

    def test_table_size_limited(self) -> None:
        """
        After the daemon limits its table, the next block (only) starts
        with a size update to 0, which a decoder allowing 0 takes.
        """
        encoder = Encoder()
        encoder.table_size_limited()
        block = encoder.encode([(":method", "POST")])
        self.assertEqual(block, b"\x20\x83")
        self.assertEqual(Decoder(limit=0).decode(block), [(":method", "POST")])
        self.assertEqual(encoder.encode([(":method", "POST")]), b"\x83")


class HostileBlockTests(SynchronousTestCase):
    """
    Broken blocks raise L{HpackError}, never another error.
    """

    def assertRefused(self, block: bytes, message: str, decoder: Decoder | None = None) -> None:
        with self.assertRaises(HpackError) as caught:
            (decoder or Decoder()).decode(block)
        self.assertIn(message, str(caught.exception))

    def test_indexes(self) -> None:
        self.assertRefused(b"\x80", "indexed 0")
        self.assertRefused(bytes((0x80 | (len(STATIC_TABLE) + 1),)), "past the table")
        self.assertRefused(b"\x7f\x80\x01", "past the table")  # a literal naming entry 191

    def test_integers(self) -> None:
        self.assertRefused(b"\xff", "ends inside an integer")
        self.assertRefused(b"\xff\xff\xff\xff\xff\xff\x01", "integer too large")

    def test_strings(self) -> None:
        self.assertRefused(b"\x00", "ends before a string")
        self.assertRefused(b"\x00\x05abc", "ends inside a string")
        self.assertRefused(b"\x00\x81\x00\x01a", "bad padding")  # '0' and 3 zero bits

    def test_huffman(self) -> None:
        with self.assertRaises(HpackError) as caught:
            huffman_decode(b"\xff\xff\xff\xff")  # EOS: 30 ones
        self.assertIn("end-of-string", str(caught.exception))
        with self.assertRaises(HpackError):
            huffman_decode(b"\xff")  # 8 bits of padding
        with self.assertRaises(HpackError):
            huffman_decode(b"\x00")  # '0' then 3 zero bits

    def test_size_updates(self) -> None:
        self.assertRefused(b"\x3f\xe4\x1f", "above the 4096 allowed")  # 4099
        self.assertRefused(b"\x82\x20", "after the block's first field")
        decoder = Decoder()
        self.assertEqual(decoder.decode(b"\x20"), [])
        # A table of 0 holds nothing: the field is decoded, not kept.
        self.assertEqual(decoder.decode(b"\x40\x01a\x01b"), [("a", "b")])
        self.assertRefused(b"\xbe", "past the table", decoder)

    def test_bomb(self) -> None:
        """
        One byte naming a 4 KiB entry, repeated: refused past MAX_LIST.
        """
        decoder = Decoder()
        value = b"v" * 4000
        decoder.decode(b"\x40\x01a\x7f" + bytes((0x80 | (4000 - 127) % 128, (4000 - 127) // 128)) + value)
        self.assertEqual(decoder._size, 4033)
        repeats = MAX_LIST // 4033 + 1
        self.assertRefused(b"\xbe" * repeats, f"larger than {MAX_LIST} bytes", decoder)
