# -*- test-case-name: ross.test.test_layer_tar -*-
"""
The streaming tar reader and compression detection (pure logic, no files).
"""

from __future__ import annotations

import gzip
import io
import tarfile

import zstandard
from twisted.trial.unittest import SynchronousTestCase

from ross.engine.layers import clean, detect_compression
from ross.engine.layers import tarstream
from ross.engine.layers.stream import ChunkReader, LayerStream
from ross.errors import InvalidArgument


def read_all(blob: bytes) -> list[tuple[tarstream.Entry, bytes]]:
    with LayerStream(io.BytesIO(blob)) as stream:
        reader = ChunkReader(stream)
        out = []
        for entry in tarstream.entries(reader):
            out.append((entry, reader.read(entry.size)))
        return out


def tar_of(*members: tarfile.TarInfo, data: dict[str, bytes] | None = None, format: int = tarfile.PAX_FORMAT) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=format) as tar:
        for info in members:
            content = (data or {}).get(info.name, b"")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return out.getvalue()


class TarReaderTests(SynchronousTestCase):
    def test_pax_records(self) -> None:
        """
        PAX paths, nanosecond times, large ids and binary xattrs override
        the ustar fields.
        """
        info = tarfile.TarInfo("x")
        info.pax_headers = {
            "path": "a/" + "long" * 50,
            "mtime": "1700000000.123456789",
            "uid": "3000000",
            "SCHILY.xattr.security.capability": "\x01\x02\udcff",
        }
        ((entry, data),) = read_all(tar_of(info, data={"x": b"hello"}))
        self.assertEqual(entry.name, "a/" + "long" * 50)
        self.assertEqual(entry.mtime_ns, 1_700_000_000_123_456_789)
        self.assertEqual(entry.atime_ns, entry.mtime_ns)
        self.assertEqual(entry.uid, 3_000_000)
        self.assertEqual(entry.xattrs, {"security.capability": b"\x01\x02\xff"})
        self.assertEqual(data, b"hello")

    def test_gnu_long_names(self) -> None:
        """
        GNU long name and long link records apply to the next entry.
        """
        link = tarfile.TarInfo("d/" + "n" * 200)
        link.type = tarfile.SYMTYPE
        link.linkname = "t" * 150
        ((entry, _),) = read_all(tar_of(link, format=tarfile.GNU_FORMAT))
        self.assertEqual((entry.name, entry.linkname, entry.type), ("d/" + "n" * 200, "t" * 150, tarstream.SYMLINK))

    def test_unread_data_skipped(self) -> None:
        """
        Data the caller does not read is skipped; entries stay in step.
        """
        a, b = tarfile.TarInfo("a"), tarfile.TarInfo("b")
        blob = tar_of(a, b, data={"a": b"x" * 1000, "b": b"y"})
        with LayerStream(io.BytesIO(blob)) as stream:
            reader = ChunkReader(stream)
            self.assertEqual([e.name for e in tarstream.entries(reader)], ["a", "b"])

    def test_malformed(self) -> None:
        """
        Bad PAX records, sparse files and unknown types are refused.
        """
        self.assertRaises(InvalidArgument, tarstream.parse_pax, b"99 path=x\n")
        self.assertRaises(InvalidArgument, tarstream.parse_pax, b"garbage")
        sparse = tarfile.TarInfo("s")
        sparse.pax_headers = {"GNU.sparse.major": "1"}
        e = self.assertRaises(InvalidArgument, read_all, tar_of(sparse))
        self.assertIn("sparse", str(e))
        odd = tarfile.TarInfo("o")
        odd.type = b"V"
        e = self.assertRaises(InvalidArgument, read_all, tar_of(odd, format=tarfile.GNU_FORMAT))
        self.assertIn("unsupported tar type", str(e))


class CompressionTests(SynchronousTestCase):
    def test_detect(self) -> None:
        """
        Compression is told by magic bytes; unsupported ones are named.
        """
        self.assertEqual(detect_compression(gzip.compress(b"x")), "gzip")
        self.assertEqual(detect_compression(zstandard.ZstdCompressor().compress(b"x")), "zstd")
        self.assertEqual(detect_compression(b"ustar"), "none")
        e = self.assertRaises(InvalidArgument, detect_compression, b"\xfd7zXZ\x00rest")
        self.assertIn("xz", str(e))

    def test_concatenated_gzip(self) -> None:
        """
        Concatenated gzip members and zero padding after the stream read
        as one stream.
        """
        blob = tar_of(tarfile.TarInfo("a"), data={"a": b"1"})
        half = len(blob) // 2
        joined = gzip.compress(blob[:half]) + gzip.compress(blob[half:]) + b"\x00" * 100
        self.assertEqual([e.name for e, _ in read_all(joined)], ["a"])

    def test_clean(self) -> None:
        """
        Names are cleaned against a root: no absolute or climbing paths.
        """
        self.assertEqual(clean("/etc/../../x/./y/"), ("x", "y"))
        self.assertEqual(clean("../../.."), ())
        self.assertEqual(clean("a/b/../c"), ("a", "c"))


class PaxWriterTests(SynchronousTestCase):
    def test_raw_binary_records(self) -> None:
        """
        Diff's PAX headers carry binary values raw (no hdrcharset record)
        with correct self-counting lengths, across the digit boundaries.
        """
        from ross.engine.layers.diff import _TarInfo

        for length in range(60, 1010, 7):
            info = _TarInfo("f")
            info.pax_headers = {"SCHILY.xattr.user.v": "\udcff" + "a" * length}
            blob = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape") + b"\x00" * 1024
            self.assertNotIn(b"hdrcharset", blob)
            ((entry, _),) = read_all(blob)
            self.assertEqual(entry.xattrs["user.v"], b"\xff" + b"a" * length)
