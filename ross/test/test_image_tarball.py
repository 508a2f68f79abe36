# -*- test-case-name: ross.test.test_image_tarball -*-
"""
Reading an import's tarball (L{ross.engine.images.tarball}): what is stored
and hashed for plain, gzip and zstd streams, where reading stops, and what
is refused without reading on.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import tarfile
from pathlib import Path

import zstandard
from twisted.trial.unittest import SynchronousTestCase

from ross.engine.content.store import BlobStore, Writer
from ross.engine.images import compression
from ross.engine.images.tarball import TRAILING, TarScan, Tarball, read_tarball
from ross.errors import InvalidArgument


def make_tar(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def archive_of(tar: bytes) -> bytes:
    """C{tar} cut right after its end-of-archive marker (tarfile pads to 10 KiB)."""
    return tar[:-(-len(tar.rstrip(b"\0")) // 512) * 512 + 1024]


TAR = make_tar({"a": bytes(range(256)) * 4000, "dir/b": b"b" * 700, "c": b""})
ARCHIVE = archive_of(TAR)


class Stream:
    """A stream of C{data} that counts what was read."""

    def __init__(self, data: bytes) -> None:
        self._file = io.BytesIO(data)
        self.read_bytes = 0

    def read(self, n: int) -> bytes:
        data = self._file.read(n)
        self.read_bytes += len(data)
        return data


class ReadTarballTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.blobs = BlobStore(Path(self.mktemp()))
        self.blobs.open()

    def read(self, data: bytes) -> tuple[Tarball, bytes, int]:
        """Read C{data}; the result, the bytes stored and the bytes read."""
        stream = Stream(data)
        writer = self.blobs.writer()
        try:
            result = read_tarball(stream, writer)
            writer.close()
            stored = writer.path.read_bytes()
        finally:
            writer.abort()
        return result, stored, stream.read_bytes

    def refused(self, data: bytes, message: str) -> int:
        stream = Stream(data)
        writer = self.blobs.writer()
        try:
            with self.assertRaises(InvalidArgument) as e:
                read_tarball(stream, writer)
        finally:
            writer.abort()
        self.assertIn(message, str(e.exception))
        return stream.read_bytes

    def assertLayer(self, result: Tarball, stored: bytes, kind: str) -> None:
        """The diff ID and size are those of everything the stored blob decompresses to."""
        path = Path(self.mktemp())
        path.write_bytes(stored)
        self.assertEqual(result.compression, kind)
        self.assertEqual((result.diff_id, result.size), compression.diff_of(str(path)))

    def test_plain(self) -> None:
        """
        A plain tar is stored up to its end-of-archive marker (not the
        record padding after it) and its diff ID is that blob's digest.
        """
        result, stored, _ = self.read(TAR)
        self.assertEqual(stored, ARCHIVE)
        self.assertEqual(result, Tarball("none", "sha256:" + hashlib.sha256(ARCHIVE).hexdigest(), len(ARCHIVE)))

    def test_plain_stops_at_the_end(self) -> None:
        """
        Whatever follows the end of the tar is neither stored nor read
        beyond the chunk holding the end.
        """
        result, stored, read = self.read(TAR + b"more bytes" * 1_000_000)
        self.assertEqual(stored, ARCHIVE)
        self.assertEqual(read, 1 << 20)

    def test_gzip(self) -> None:
        """
        A gzip stream is stored whole, its diff ID hashes the tar with its
        padding, as a reader of the blob sees it.
        """
        data = gzip.compress(TAR)
        result, stored, _ = self.read(data)
        self.assertEqual(stored, data)
        self.assertEqual((result.diff_id, result.size), ("sha256:" + hashlib.sha256(TAR).hexdigest(), len(TAR)))
        self.assertLayer(result, stored, "gzip")

    def test_gzip_members(self) -> None:
        """
        Concatenated members are one stream until the member holding the
        end of the tar; what follows it is not stored.
        """
        half = len(TAR) // 2
        joined = gzip.compress(TAR[:half]) + gzip.compress(TAR[half:])
        result, stored, _ = self.read(joined)
        self.assertEqual(stored, joined)
        self.assertLayer(result, stored, "gzip")
        result, stored, _ = self.read(joined + gzip.compress(b"another member") + b"junk")
        self.assertEqual(stored, joined)
        self.assertLayer(result, stored, "gzip")

    def test_zstd(self) -> None:
        """
        zstd frames (with checksum, content size, several, skippable ones
        between) are stored up to the frame holding the end of the tar.
        """
        whole = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(TAR)
        result, stored, _ = self.read(whole + b"junk")
        self.assertEqual(stored, whole)
        self.assertLayer(result, stored, "zstd")
        half = len(TAR) // 2
        skippable = (0x184D2A53).to_bytes(4, "little") + (5).to_bytes(4, "little") + b"hello"
        frames = (zstandard.ZstdCompressor().compress(TAR[:half]) + skippable
                  + zstandard.ZstdCompressor(write_checksum=True).compress(TAR[half:]))
        result, stored, _ = self.read(frames + zstandard.ZstdCompressor().compress(b"extra"))
        self.assertEqual(stored, frames)
        self.assertLayer(result, stored, "zstd")
        streamed = io.BytesIO()
        with zstandard.ZstdCompressor().stream_writer(streamed, closefd=False) as writer:
            for i in range(0, len(TAR), 100_000):
                writer.write(TAR[i:i + 100_000])
        result, stored, _ = self.read(streamed.getvalue())
        self.assertLayer(result, stored, "zstd")

    def test_not_a_tar(self) -> None:
        """
        Zeros (an archive that starts with its end marker), garbage or
        nothing: refused within the first chunk.
        """
        self.assertEqual(self.refused(bytes(8 << 20), "invalid tarball: empty archive"), 1 << 20)
        self.assertEqual(self.refused(b"garbage!" * (1 << 20), "invalid tarball: not a tar archive"), 1 << 20)
        self.refused(b"", "invalid tarball: it is empty")
        self.refused(make_tar({}), "invalid tarball: empty archive")
        read = self.refused(gzip.compress(bytes(64 << 20)), "invalid tarball: empty archive")
        self.assertLess(read, 1 << 20)
        read = self.refused(zstandard.ZstdCompressor().compress(bytes(64 << 20)), "invalid tarball: empty archive")
        self.assertLess(read, 1 << 20)
        self.refused(b"BZh91AY&SY" + bytes(100), "bzip2/xz")

    def test_truncated(self) -> None:
        self.refused(TAR[:700], "the stream ends inside an entry")
        self.refused(TAR[:512 * 3], "the stream ends inside an entry")
        one = make_tar({"x": b"1"})
        self.refused(one[:1024], "the stream ends before the end-of-archive marker")
        for data, message in [(gzip.compress(TAR), "truncated gzip data"),
                              (zstandard.ZstdCompressor(write_checksum=True).compress(TAR), "truncated zstd data")]:
            self.refused(data[:len(data) // 2], message)
            self.refused(data[:-1], message)

    def test_lone_zero_block(self) -> None:
        """
        One zero block then the end of the stream is accepted (as Ross's
        layer reader ends there); one followed by a header is refused.
        """
        one = make_tar({"x": b"1"})
        result, stored, _ = self.read(one[:1536])
        self.assertEqual(stored, one[:1536])
        self.refused(one[:1536] + one[:1024] + bytes(1024), "a header follows a lone zero block")

    def test_bad_header_later(self) -> None:
        data = bytearray(TAR)
        second = 512 + 512 * 2000
        data[second + 100] ^= 0xFF
        self.refused(bytes(data), f"bad tar header at offset {second}")

    def test_pax_size(self) -> None:
        """
        A PAX size record overrides the header's size field: the data it
        counts is skipped, not read as headers.
        """
        info = tarfile.TarInfo("big")
        info.size = 0
        info.pax_headers = {"size": "1000"}
        head = info.tobuf(tarfile.PAX_FORMAT)
        data = head + b"\xff" * 1000 + bytes(24) + archive_of(make_tar({"after": b"z"}))
        result, stored, _ = self.read(data)
        self.assertEqual(stored, data)
        scan = TarScan()
        scan.feed(data)
        self.assertEqual((scan.entries, scan.ended), (2, True))

    def test_sparse_refused(self) -> None:
        info = tarfile.TarInfo("holes")
        info.type = tarfile.GNUTYPE_SPARSE
        self.refused(info.tobuf(tarfile.GNU_FORMAT) + bytes(1024), "sparse file")

    def test_trailing_limit(self) -> None:
        """
        Inside a compressed stream, more than TRAILING bytes after the end
        of the tar is refused rather than decompressed on and on.
        """
        result, stored, _ = self.read(gzip.compress(TAR + bytes(TRAILING - len(TAR) + len(ARCHIVE))))
        self.assertLayer(result, stored, "gzip")
        self.refused(gzip.compress(TAR + bytes(TRAILING + len(TAR))), "after the end of the archive")

    def test_pieces(self) -> None:
        """
        The scan finds the same end whatever the pieces it is fed.
        """
        for size in (1, 7, 511, 512, 513, 4096):
            scan = TarScan()
            used = 0
            for i in range(0, len(TAR), size):
                used += scan.feed(TAR[i:i + size])
            self.assertEqual((used, scan.ended, scan.entries), (len(ARCHIVE), True, 3), size)

    def test_writer_unused(self) -> None:
        """Nothing is written for a refused stream's first chunk."""
        writer: Writer = self.blobs.writer()
        try:
            with self.assertRaises(InvalidArgument):
                read_tarball(Stream(b"garbage!" * 1000), writer)
            self.assertEqual(writer.size, 0)
        finally:
            writer.abort()
