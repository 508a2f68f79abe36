# -*- test-case-name: ross.test.test_image_tarball -*-
"""
The root filesystem tarball of an import, read from the client's stream
into an ingest in one pass.

The stream (plain, gzip or zstd) is decompressed as it arrives, only to
follow the tar: its first header is checked before anything else (garbage
or a stream of zeros is refused within the first block), and reading stops
at the end-of-archive marker instead of consuming whatever the client
keeps sending. The digest and size of the uncompressed bytes (the layer's
diff ID) come out of the same pass, so the layer is not read again to hash
it.

What is stored is the layer as it arrived, up to where the tar ends: a
plain tar is cut right after its two zero blocks; a compressed one ends
with the gzip member or zstd frame holding the end of the tar, whose
trailing padding (at most L{TRAILING} bytes) is part of the diff ID, as
any reader of the stored blob sees it.

Decompression output is bounded per step (gzip by C{max_length}, zstd by
feeding one block at a time, at most 128 KiB), so a small compressed
stream cannot make the daemon hold gigabytes.
"""

from __future__ import annotations

import abc
import hashlib
import tarfile
from typing import Any, Callable, Iterator, cast

import attrs
import zstandard
from isal import isal_zlib

from ross.engine.content.store import CHUNK, Writer
from ross.engine.images import compression
from ross.engine.layers.stream import Readable
from ross.engine.layers.tarstream import parse_pax
from ross.errors import InvalidArgument

BLOCK = 512
_ZERO_BLOCK = bytes(BLOCK)

#: Uncompressed bytes accepted after the end-of-archive marker inside a
#: compressed stream (tar pads to its record size, 10 KiB by default).
TRAILING = 4 << 20

#: Largest PAX extended header (Go's archive/tar allows 1 MiB).
MAX_PAX = 1 << 20

# Entry types that carry no data whatever their size field says (as Go's
# archive/tar and Ross's layer reader treat them).
_HEADER_ONLY = {
    tarfile.LNKTYPE,
    tarfile.SYMTYPE,
    tarfile.CHRTYPE,
    tarfile.BLKTYPE,
    tarfile.DIRTYPE,
    tarfile.FIFOTYPE,
}

# isal's stub types its error class as an instance.
_InflateError = cast(type[Exception], isal_zlib.error)

_GZIP_MAGIC = b"\x1f\x8b"
_ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


class TarScan:
    """
    Follows an uncompressed tar stream, fed in pieces of any size, to where
    it ends: the second zero block of its end-of-archive marker. It checks
    every header (checksums, PAX records) but keeps nothing of the data.
    InvalidArgument as soon as the stream is not a tar: a first block that
    is not a header, an archive that starts with its end marker.

    @ivar offset: bytes of the archive followed so far.
    @ivar ended: whether the end-of-archive marker was seen.
    """

    def __init__(self) -> None:
        self._block = bytearray()
        # Bytes of entry data (with padding) still to pass.
        self._skip = 0
        # A PAX header whose data is being collected: (type, size, data).
        self._pax_data: tuple[bytes, int, bytearray] | None = None
        self._pax: dict[str, bytes] = {}
        self._global_pax: dict[str, bytes] = {}
        self._zeros = 0
        self.entries = 0
        self.offset = 0
        self.ended = False

    def feed(self, data: bytes | memoryview) -> int:
        """
        Follow C{data}, the next bytes of the stream; returns how many of
        them belong to the archive (fewer than given once it ended).
        """
        pos = 0
        size = len(data)
        while pos < size and not self.ended:
            if self._skip:
                take = min(self._skip, size - pos)
                if self._pax_data is not None:
                    self._pax_data[2].extend(data[pos:pos + take])
                pos += take
                self.offset += take
                self._skip -= take
                if not self._skip and self._pax_data is not None:
                    self._end_pax()
                continue
            take = min(BLOCK - len(self._block), size - pos)
            self._block += data[pos:pos + take]
            pos += take
            self.offset += take
            if len(self._block) == BLOCK:
                block = bytes(self._block)
                self._block.clear()
                self._header(block, self.offset - BLOCK)
        return pos

    def _header(self, block: bytes, at: int) -> None:
        if block == _ZERO_BLOCK:
            if not self.entries:
                raise InvalidArgument("invalid tarball: empty archive (it starts with the end-of-archive marker)")
            self._zeros += 1
            self.ended = self._zeros == 2
            return
        if self._zeros:
            raise InvalidArgument(f"invalid tarball: a header follows a lone zero block at offset {at - BLOCK}")
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            if at == 0:
                raise InvalidArgument("invalid tarball: not a tar archive") from None
            raise InvalidArgument(f"invalid tarball: bad tar header at offset {at} ({e})") from None
        kind = info.type
        if kind in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.XGLTYPE):
            if info.size > MAX_PAX:
                raise InvalidArgument(f"invalid tarball: PAX header of {info.size} bytes at offset {at}")
            self._pax_data = (kind, info.size, bytearray())
            self._skip = _padded(info.size)
            if not self._skip:
                self._end_pax()
            return
        if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            self._skip = _padded(info.size)
            return
        records = {**self._global_pax, **self._pax}
        self._pax = {}
        if kind == tarfile.GNUTYPE_SPARSE or any(k.startswith("GNU.sparse.") for k in records):
            raise InvalidArgument(f"invalid tarball: entry {info.name!r} is a sparse file; Ross does not read sparse layers")
        size = info.size
        if "size" in records:
            try:
                size = int(records["size"])
            except ValueError:
                size = -1
            if size < 0:
                raise InvalidArgument(f"invalid tarball: bad PAX size for entry {info.name!r}")
        self.entries += 1
        self._skip = 0 if kind in _HEADER_ONLY else _padded(size)

    def _end_pax(self) -> None:
        assert self._pax_data is not None
        kind, size, data = self._pax_data
        self._pax_data = None
        try:
            records = parse_pax(bytes(data[:size]))
        except InvalidArgument:
            raise InvalidArgument(f"invalid tarball: malformed PAX header before offset {self.offset}") from None
        (self._global_pax if kind == tarfile.XGLTYPE else self._pax).update(records)

    def finish(self) -> None:
        """
        The stream ended: InvalidArgument unless that was at the end of the
        archive (after one zero block at least, as Ross's layer reader ends
        there too).
        """
        if self.ended or self._zeros:
            return
        if not self.offset:
            raise InvalidArgument("invalid tarball: it is empty")
        if self._block or self._skip or self._pax_data is not None:
            raise InvalidArgument("invalid tarball: truncated (the stream ends inside an entry)")
        raise InvalidArgument("invalid tarball: truncated (the stream ends before the end-of-archive marker)")


class _Decoder(abc.ABC):
    """
    Decompresses a stream fed in pieces, up to the end of its compressed
    data and no further: C{more()} (does the tar need more?) is asked at
    every gzip member or zstd frame boundary. The bytes that belong to the
    compressed stream go to C{keep}; C{finished} once it ended.
    """

    def __init__(self, more: Callable[[], bool], keep: Callable[[memoryview], None]) -> None:
        self._more = more
        self._keep = keep
        self.finished = False

    @abc.abstractmethod
    def feed(self, data: bytes) -> Iterator[bytes]:
        """The uncompressed pieces C{data} yields (each at most ~1 MiB)."""

    @abc.abstractmethod
    def finish(self) -> None:
        """The input ended: InvalidArgument if that was inside compressed data."""


class _Gunzip(_Decoder):
    def __init__(self, more: Callable[[], bool], keep: Callable[[memoryview], None]) -> None:
        super().__init__(more, keep)
        self._inflate: Any = isal_zlib.decompressobj(wbits=31)
        # A member ended: what follows starts another one or is not ours.
        self._between = False

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        pos = 0
        pending = False
        while (pos < len(data) or pending) and not self.finished:
            if self._between:
                if not self._more() or data[pos:pos + 1] != _GZIP_MAGIC[:1]:
                    # Concatenated members continue one stream; whatever
                    # else follows a member is not part of the layer.
                    self.finished = True
                    break
                self._inflate = isal_zlib.decompressobj(wbits=31)
                self._between = False
            try:
                out = self._inflate.decompress(view[pos:], CHUNK)
            except _InflateError as e:
                raise InvalidArgument(f"invalid tarball: corrupt gzip data ({e})") from None
            if self._inflate.eof:
                pos = len(data) - len(self._inflate.unused_data)
                self._between = True
                pending = False
            else:
                pos = len(data) - len(self._inflate.unconsumed_tail)
                # Output cut at max_length: input already consumed may
                # have more to give.
                pending = len(out) == CHUNK
            if out:
                yield out
        self._keep(view[:pos])
        if self._between and not self._more():
            self.finished = True

    def finish(self) -> None:
        if not self._between and not self.finished:
            raise InvalidArgument("invalid tarball: truncated gzip data (the stream ends early)")


_ZSTD_SKIPPABLE = 0x184D2A50
_RLE_BLOCK = 1
_RESERVED_BLOCK = 3


class _Unzstd(_Decoder):
    """
    zstd frames walked by their block headers (RFC 8878), so the end of a
    frame is known exactly and each block, at most 128 KiB decompressed,
    goes to the decompressor on its own.
    """

    def __init__(self, more: Callable[[], bool], keep: Callable[[memoryview], None]) -> None:
        super().__init__(more, keep)
        self._state = "magic"
        self._need = 4
        self._head = bytearray()
        self._frames = 0
        self._checksum = False
        self._last = False
        self._dec: Any = None

    def feed(self, data: bytes) -> Iterator[bytes]:
        view = memoryview(data)
        pos = 0
        while pos < len(data) and not self.finished:
            if self._state == "magic" and not self._head and not self._more():
                self.finished = True
                break
            take = min(self._need, len(data) - pos)
            piece = view[pos:pos + take]
            pos += take
            self._need -= take
            if self._state == "magic":
                # Undecided until all four bytes are known (they may
                # straddle two pieces): only a frame's bytes are kept.
                self._head += piece
                if not self._need:
                    magic = bytes(self._head)
                    self._head.clear()
                    if not self._start_frame(magic):
                        self.finished = True
                        break
                    self._keep(memoryview(magic))
                continue
            self._keep(piece)
            if self._dec is not None:
                try:
                    out = self._dec.decompress(piece)
                except zstandard.ZstdError as e:
                    raise InvalidArgument(f"invalid tarball: corrupt zstd data ({e})") from None
                if out:
                    yield out
            if self._state in ("descriptor", "block-header", "skip-size"):
                self._head += piece
            if not self._need:
                self._next()
        if self._state == "magic" and not self._head and not self._more():
            self.finished = True

    def _start_frame(self, magic: bytes) -> bool:
        if magic == _ZSTD_MAGIC:
            self._dec = zstandard.ZstdDecompressor().decompressobj()
            self._dec.decompress(magic)
            self._state, self._need = "descriptor", 1
            return True
        if int.from_bytes(magic, "little") & 0xFFFFFFF0 == _ZSTD_SKIPPABLE:
            self._state, self._need = "skip-size", 4
            return True
        return False

    def _next(self) -> None:
        head = bytes(self._head)
        self._head.clear()
        state = self._state
        if state == "descriptor":
            descriptor = head[0]
            single_segment = bool(descriptor & 0x20)
            self._checksum = bool(descriptor & 0x04)
            dictionary = (0, 1, 2, 4)[descriptor & 0x03]
            content_size = (1 if single_segment else 0, 2, 4, 8)[descriptor >> 6]
            self._state, self._need = "header", (0 if single_segment else 1) + dictionary + content_size
            if not self._need:
                self._next()
        elif state == "header":
            self._state, self._need = "block-header", 3
        elif state == "block-header":
            value = int.from_bytes(head, "little")
            kind = (value >> 1) & 3
            if kind == _RESERVED_BLOCK:
                raise InvalidArgument("invalid tarball: corrupt zstd data (reserved block type)")
            self._last = bool(value & 1)
            self._state, self._need = "block", 1 if kind == _RLE_BLOCK else value >> 3
            if not self._need:
                self._next()
        elif state == "block":
            if not self._last:
                self._state, self._need = "block-header", 3
            elif self._checksum:
                self._state, self._need = "checksum", 4
            else:
                self._end_frame()
        elif state == "skip-size":
            self._state, self._need = "skip", int.from_bytes(head, "little")
            if not self._need:
                self._end_frame()
        else:
            self._end_frame()

    def _end_frame(self) -> None:
        if self._dec is not None and not self._dec.eof:
            raise InvalidArgument("invalid tarball: corrupt zstd data (a frame does not end where its blocks do)")
        self._frames += 1
        self._dec = None
        self._state, self._need = "magic", 4

    def finish(self) -> None:
        if self._state != "magic" and not self.finished:
            raise InvalidArgument("invalid tarball: truncated zstd data (the stream ends early)")


@attrs.frozen
class Tarball:
    """
    What L{read_tarball} read.

    @ivar compression: "gzip", "zstd" or "none", as the stream arrived.
    @ivar diff_id: digest of the uncompressed layer.
    @ivar size: uncompressed size.
    """

    compression: str
    diff_id: str
    size: int


def read_tarball(stream: Readable, writer: Writer) -> Tarball:
    """
    Read a root filesystem tarball from C{stream} into C{writer}, up to the
    end of the tar and no further. Blocking. InvalidArgument for what is
    not a complete tar archive, plain, gzip or zstd (the caller aborts the
    writer on any error).
    """
    first = stream.read(CHUNK)
    kind = compression.detect(first[:8])
    scan = TarScan()
    data = first
    if kind == compression.NONE:
        while data:
            used = scan.feed(data)
            writer.write(memoryview(data)[:used])
            if scan.ended:
                break
            data = stream.read(CHUNK)
        scan.finish()
        return Tarball(kind, writer.digest, writer.size)
    decoder: _Decoder = (_Gunzip if kind == compression.GZIP else _Unzstd)(lambda: not scan.ended, writer.write)
    diff = hashlib.sha256()
    size = 0
    trailing = 0
    while data:
        for out in decoder.feed(data):
            diff.update(out)
            size += len(out)
            trailing += len(out) - (scan.feed(out) if not scan.ended else 0)
            if trailing > TRAILING:
                raise InvalidArgument(
                    f"invalid tarball: more than {TRAILING >> 20} MiB of data after the end of the archive"
                )
        if decoder.finished:
            break
        data = stream.read(CHUNK)
    else:
        decoder.finish()
    scan.finish()
    return Tarball(kind, "sha256:" + diff.hexdigest(), size)
