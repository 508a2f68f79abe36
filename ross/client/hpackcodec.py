# -*- test-case-name: ross.test.test_hpackcodec -*-
"""
HPACK (RFC 7541), HTTP/2's header compression, as the CLI's gRPC client
(L{ross.client.h2grpc}) needs it: a full decoder (static and dynamic
tables, Huffman strings), and an encoder that sends literals and never
adds to the daemon's table.

PyPI's C{hpack} did this before, but importing it (with the C{logging}
package it imports) cost every CLI command 5-6 ms of its 45: an eighth of
``ross exec CTR true``. A call sends about ten headers and reads about
five, so the encoder need not compress, and the decoder's cost is
negligible next to the import it replaces.

The decoder trusts nothing it reads: every index, length and integer is
checked, and a block may not decode to more than L{MAX_LIST} bytes (one
byte can name a 4 KiB table entry again and again).
"""

from __future__ import annotations

from collections import deque

#: The most a header block may decode to, in RFC 7541's sizes (name,
#: value and 32 for each field). gRPC's own limit is 16 KiB.
MAX_LIST = 256 * 1024
#: The dynamic table's size the client allows (HTTP/2's default: the
#: client announces no other).
TABLE_SIZE = 4096


class HpackError(ValueError):
    """
    A header block that does not decode.
    """


#: RFC 7541 appendix A.
STATIC_TABLE: tuple[tuple[str, str], ...] = (
    (":authority", ""), (":method", "GET"), (":method", "POST"), (":path", "/"), (":path", "/index.html"),
    (":scheme", "http"), (":scheme", "https"), (":status", "200"), (":status", "204"), (":status", "206"),
    (":status", "304"), (":status", "400"), (":status", "404"), (":status", "500"), ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"), ("accept-language", ""), ("accept-ranges", ""), ("accept", ""),
    ("access-control-allow-origin", ""), ("age", ""), ("allow", ""), ("authorization", ""),
    ("cache-control", ""), ("content-disposition", ""), ("content-encoding", ""), ("content-language", ""),
    ("content-length", ""), ("content-location", ""), ("content-range", ""), ("content-type", ""),
    ("cookie", ""), ("date", ""), ("etag", ""), ("expect", ""), ("expires", ""), ("from", ""), ("host", ""),
    ("if-match", ""), ("if-modified-since", ""), ("if-none-match", ""), ("if-range", ""),
    ("if-unmodified-since", ""), ("last-modified", ""), ("link", ""), ("location", ""), ("max-forwards", ""),
    ("proxy-authenticate", ""), ("proxy-authorization", ""), ("range", ""), ("referer", ""), ("refresh", ""),
    ("retry-after", ""), ("server", ""), ("set-cookie", ""), ("strict-transport-security", ""),
    ("transfer-encoding", ""), ("user-agent", ""), ("vary", ""), ("via", ""), ("www-authenticate", ""),
)

_STATIC_OCTETS = tuple((name.encode("ascii"), value.encode("ascii")) for name, value in STATIC_TABLE)
_STATIC_FIELDS = {field: index for index, field in enumerate(STATIC_TABLE, 1) if field[1]}
_STATIC_NAMES: dict[str, int] = {}
for _index, (_name, _value) in enumerate(STATIC_TABLE, 1):
    _STATIC_NAMES.setdefault(_name, _index)

#: Fields a relay must never put in a table (RFC 7541 section 7.1.3).
_SENSITIVE = frozenset({"authorization", "proxy-authorization", "cookie"})

# RFC 7541 appendix B's code is canonical: the code of each symbol
# follows from the lengths alone, taking symbols by length, then by value.
# Here are the symbols of each length; the end-of-string symbol (256) is
# the last of length 30.
_SYMBOLS_BY_LENGTH: dict[int, bytes] = {
    5: b"012aceiost",
    6: b" %-./3456789=A_bdfghlmnpru",
    7: b":BCDEFGHIJKLMNOPQRSTUVWYjkqvwxyz",
    8: b"&*,;XZ",
    10: b"!\"()?",
    11: b"'+|",
    12: b"#>",
    13: b"\x00$@[]~",
    14: b"^}",
    15: b"<`{",
    19: bytes.fromhex("5cc3d0"),
    20: bytes.fromhex("808283a2b8c2e0e2"),
    21: bytes.fromhex("99a1a7acb0b1b3d1d8d9e3e5e6"),
    22: bytes.fromhex("8184858688929a9ca0a3a4a9aaadb2b5b9babbbdbec4c6e4e8e9"),
    23: bytes.fromhex("0187898a8b8c8d8f93959697989b9d9ea5a6a8aeafb4b6b7bcbfc5e7ef"),
    24: bytes.fromhex("098e9091949fabced7e1eced"),
    25: bytes.fromhex("c7cfeaeb"),
    26: bytes.fromhex("c0c1c8c9cacdd2d5dadbeef0f2f3ff"),
    27: bytes.fromhex("cbccd3d4d6dddedff1f4f5f6f7f8fafbfcfdfe"),
    28: bytes.fromhex("02030405060708 0b0c0e0f101112131415 1718191a1b1c1d1e1f7fdcf9".replace(" ", "")),
    30: b"\n\r\x16",
}
_EOS = 256


def _canonical() -> tuple[dict[int, int], dict[int, tuple[int, ...]]]:
    """
    For each length, its first code and its symbols in code order.
    """
    first: dict[int, int] = {}
    symbols: dict[int, tuple[int, ...]] = {}
    code = 0
    previous = min(_SYMBOLS_BY_LENGTH)
    for length in sorted(_SYMBOLS_BY_LENGTH):
        code <<= length - previous
        previous = length
        these = tuple(_SYMBOLS_BY_LENGTH[length]) + ((_EOS,) if length == 30 else ())
        first[length] = code
        symbols[length] = these
        code += len(these)
    if code != 1 << previous or sum(map(len, symbols.values())) != 257:
        raise AssertionError("the Huffman table is not RFC 7541's")
    return first, symbols


_FIRST, _CODE_SYMBOLS = _canonical()
_LONGEST = max(_FIRST)


def huffman_decode(data: bytes) -> bytes:
    """
    The octets of a Huffman-coded string (RFC 7541 section 5.2).
    """
    out = bytearray()
    code = length = 0
    first, symbols = _FIRST, _CODE_SYMBOLS
    for byte in data:
        for shift in (7, 6, 5, 4, 3, 2, 1, 0):
            code = (code << 1) | ((byte >> shift) & 1)
            length += 1
            start = first.get(length)
            if start is None:
                continue
            these = symbols[length]
            if code - start < len(these):
                symbol = these[code - start]
                if symbol == _EOS:
                    raise HpackError("a Huffman string holds the end-of-string symbol")
                out.append(symbol)
                code = length = 0
            elif length >= _LONGEST:
                raise HpackError("a Huffman string holds an unknown code")
    # What is left must be the start of EOS: fewer than 8 bits, all ones.
    if length > 7 or code != (1 << length) - 1:
        raise HpackError("a Huffman string ends with bad padding")
    return bytes(out)


def _integer(data: bytes, position: int, bits: int) -> tuple[int, int]:
    """
    The integer with a C{bits}-bit prefix at C{position}, and the position
    after it (RFC 7541 section 5.1).
    """
    mask = (1 << bits) - 1
    value = data[position] & mask
    position += 1
    if value < mask:
        return value, position
    shift = 0
    while True:
        if position >= len(data):
            raise HpackError("a header block ends inside an integer")
        byte = data[position]
        position += 1
        value += (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7
        if shift > 28:
            raise HpackError("a header block holds an integer too large")


def _encoded_integer(value: int, bits: int, flags: int) -> bytes:
    mask = (1 << bits) - 1
    if value < mask:
        return bytes((flags | value,))
    out = bytearray((flags | mask,))
    value -= mask
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _string(value: str) -> bytes:
    data = value.encode("utf-8")
    return _encoded_integer(len(data), 7, 0) + data


class Encoder:
    """
    Header blocks of literal fields (or static table entries), which the
    daemon never adds to its table: a call's headers are sent once.
    """

    def __init__(self) -> None:
        self._announce_size = False

    def table_size_limited(self) -> None:
        """
        The daemon set SETTINGS_HEADER_TABLE_SIZE: the next block says the
        encoder's table is 0 bytes, under any limit (RFC 7541 section 4.2).
        """
        self._announce_size = True

    def encode(self, headers: list[tuple[str, str]]) -> bytes:
        out = bytearray()
        if self._announce_size:
            out.append(0x20)
            self._announce_size = False
        for name, value in headers:
            index = _STATIC_FIELDS.get((name, value))
            if index is not None:
                out += _encoded_integer(index, 7, 0x80)
                continue
            # Literal without indexing, or never indexed: 4-bit name index.
            flags = 0x10 if name in _SENSITIVE else 0x00
            name_index = _STATIC_NAMES.get(name)
            if name_index is not None:
                out += _encoded_integer(name_index, 4, flags)
            else:
                out.append(flags)
                out += _string(name)
            out += _string(value)
        return bytes(out)


class Decoder:
    """
    Decodes the header blocks of one connection, in the order they came:
    they share the dynamic table.
    """

    def __init__(self, limit: int = TABLE_SIZE) -> None:
        self._limit = limit
        self._max = limit
        self._table: deque[tuple[bytes, bytes]] = deque()  # newest first
        self._size = 0

    def decode(self, block: bytes) -> list[tuple[str, str]]:
        """
        The fields of C{block}, as text (UTF-8, a bad sequence replaced);
        L{HpackError} if it does not decode.
        """
        fields: list[tuple[str, str]] = []
        total = 0
        position = 0
        end = len(block)
        while position < end:
            byte = block[position]
            if byte & 0x80:
                index, position = _integer(block, position, 7)
                name, value = self._field(index)
            elif byte & 0x40:
                name, value, position = self._literal(block, position, 6)
                self._add(name, value)
            elif byte & 0x20:
                if fields:
                    raise HpackError("a table size update after the block's first field")
                size, position = _integer(block, position, 5)
                if size > self._limit:
                    raise HpackError(f"a table size update to {size} bytes, above the {self._limit} allowed")
                self._max = size
                self._evict(0)
                continue
            else:
                name, value, position = self._literal(block, position, 4)
            total += len(name) + len(value) + 32
            if total > MAX_LIST:
                raise HpackError(f"a header block larger than {MAX_LIST} bytes")
            fields.append((name.decode("utf-8", "replace"), value.decode("utf-8", "replace")))
        return fields

    def _field(self, index: int) -> tuple[bytes, bytes]:
        if index == 0:
            raise HpackError("a header field indexed 0")
        if index <= len(_STATIC_OCTETS):
            return _STATIC_OCTETS[index - 1]
        dynamic = index - len(_STATIC_OCTETS) - 1
        if dynamic >= len(self._table):
            raise HpackError(f"a header field indexed {index}, past the table")
        return self._table[dynamic]

    def _literal(self, block: bytes, position: int, bits: int) -> tuple[bytes, bytes, int]:
        index, position = _integer(block, position, bits)
        if index:
            name = self._field(index)[0]
        else:
            name, position = self._string(block, position)
        value, position = self._string(block, position)
        return name, value, position

    @staticmethod
    def _string(block: bytes, position: int) -> tuple[bytes, int]:
        if position >= len(block):
            raise HpackError("a header block ends before a string")
        huffman = block[position] & 0x80
        length, position = _integer(block, position, 7)
        if position + length > len(block):
            raise HpackError("a header block ends inside a string")
        data = bytes(block[position:position + length])
        return (huffman_decode(data) if huffman else data), position + length

    def _add(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value) + 32
        self._evict(size)
        if size <= self._max:
            # An entry larger than the table empties it and is not added.
            self._table.appendleft((name, value))
            self._size += size

    def _evict(self, room: int) -> None:
        while self._table and self._size + room > self._max:
            name, value = self._table.pop()
            self._size -= len(name) + len(value) + 32
