# -*- test-case-name: ross.test.integration.test_images -*-
"""
Layer compression, detected from the first bytes (never assumed from a
media type or a file name), and streaming decompression for hashing diff
IDs and writing uncompressed archives.
"""

from __future__ import annotations

import gzip
import hashlib
from typing import IO

import zstandard

from ross.errors import InvalidArgument

GZIP = "gzip"
ZSTD = "zstd"
NONE = "none"

_CHUNK = 1 << 20


def detect(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return GZIP
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return ZSTD
    if head[:3] == b"BZh" or head[:6] == b"\xfd7zXZ\x00":
        raise InvalidArgument("unsupported layer compression (bzip2/xz): use gzip, zstd or none")
    return NONE


def detect_file(path: str) -> str:
    with open(path, "rb") as f:
        return detect(f.read(8))


def decompressed(raw: IO[bytes], kind: str) -> IO[bytes]:
    """
    A reader of the uncompressed bytes of C{raw}.
    """
    if kind == GZIP:
        return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
    if kind == ZSTD:
        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


def diff_of(path: str) -> tuple[str, int]:
    """
    Digest and size of the uncompressed content of a layer file.
    InvalidArgument when it is not valid compressed data.
    """
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as raw:
        kind = detect(raw.read(8))
        raw.seek(0)
        stream = decompressed(raw, kind)
        try:
            while True:
                data = stream.read(_CHUNK)
                if not data:
                    break
                h.update(data)
                size += len(data)
        except (OSError, EOFError, zstandard.ZstdError) as e:
            raise InvalidArgument(f"corrupt {kind} layer data: {e}") from None
    return "sha256:" + h.hexdigest(), size


def media_suffix(kind: str) -> str:
    return {GZIP: "+gzip", ZSTD: "+zstd", NONE: ""}[kind]
