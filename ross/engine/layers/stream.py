# -*- test-case-name: ross.test.integration.test_layers -*-
"""
The uncompressed byte stream of a layer blob.

A producer thread reads the blob, detects its compression from the magic
bytes (gzip, zstd or none), decompresses and hashes the tar bytes (ISA-L's
inflate, about twice zlib's speed, zstandard and hashlib release the GIL),
and hands chunks over a small
bounded queue; the consumer parses the tar at the same time. The digest of
the uncompressed bytes is the layer's diff ID.
"""

from __future__ import annotations

import hashlib
import queue
import threading
from typing import IO, Iterator, Protocol, cast

import zstandard
from isal import isal_zlib

from ross.errors import InvalidArgument


class Readable(Protocol):
    """A blocking byte stream (a file, an L{ross.engine.pipes.Inflow})."""

    def read(self, n: int, /) -> bytes: ...


GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
_UNSUPPORTED = {
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x5d\x00\x00": "lzma",
}

READ_SIZE = 1 << 20
# isal's stub types its error class as an instance.
_InflateError = cast(type[Exception], isal_zlib.error)
_DEPTH = 8


def detect_compression(head: bytes) -> str:
    """
    "gzip", "zstd" or "none" for a blob starting with C{head};
    InvalidArgument for a compression Ross does not read.
    """
    if head.startswith(GZIP_MAGIC):
        return "gzip"
    if head.startswith(ZSTD_MAGIC):
        return "zstd"
    for magic, name in _UNSUPPORTED.items():
        if head.startswith(magic):
            raise InvalidArgument(f"Layer is {name}-compressed; Ross reads gzip, zstd and plain tar layers")
    return "none"


def _gunzip(head: bytes, source: Readable) -> Iterator[bytes]:
    decoder = isal_zlib.decompressobj(wbits=31)
    data = head
    while True:
        while data:
            try:
                out = decoder.decompress(data, READ_SIZE)
            except _InflateError as e:
                raise InvalidArgument(f"Corrupt gzip layer: {e}") from None
            if out:
                yield out
            if decoder.eof:
                rest = decoder.unused_data
                if rest.startswith(GZIP_MAGIC):
                    # Concatenated gzip members form one stream.
                    decoder = isal_zlib.decompressobj(wbits=31)
                    data = rest
                    continue
                if rest.strip(b"\x00"):
                    raise InvalidArgument("Corrupt gzip layer: data after the end of the stream")
                # Padding after the stream: drain and ignore.
                data = b""
                for trailing in iter(lambda: source.read(READ_SIZE), b""):
                    if trailing.strip(b"\x00"):
                        raise InvalidArgument("Corrupt gzip layer: data after the end of the stream")
                return
            data = decoder.unconsumed_tail
        data = source.read(READ_SIZE)
        if not data:
            break
    if not decoder.eof:
        raise InvalidArgument("Truncated gzip layer: the stream ends early")


def _unzstd(head: bytes, source: Readable) -> Iterator[bytes]:
    class _Prefixed:
        def __init__(self) -> None:
            self._head: bytes | None = head

        def read(self, size: int = -1) -> bytes:
            if self._head is not None:
                data, self._head = self._head, None
                return data
            return source.read(size)

    prefixed = cast(IO[bytes], _Prefixed())
    reader = zstandard.ZstdDecompressor().stream_reader(prefixed, read_size=READ_SIZE, read_across_frames=True)
    try:
        while True:
            out = reader.read(READ_SIZE)
            if not out:
                return
            yield out
    except zstandard.ZstdError as e:
        raise InvalidArgument(f"Corrupt zstd layer: {e}") from None


def _plain(head: bytes, source: Readable) -> Iterator[bytes]:
    if head:
        yield head
    yield from iter(lambda: source.read(READ_SIZE), b"")


_DECODERS = {"gzip": _gunzip, "zstd": _unzstd, "none": _plain}


class LayerStream:
    """
    Uncompressed chunks of a layer, produced by a thread.

    Use as a context manager; L{close} stops the producer. After L{drain}
    (reading to the end), C{diff_id} and C{size} describe the whole
    uncompressed stream (C{diff_id} only with C{digest}: hashing costs a
    third of an extraction's time, wasted on archives that are no layer).
    """

    def __init__(self, source: Readable, digest: bool = True) -> None:
        self._source = source
        self._digest = digest
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(_DEPTH)
        self._stopping = threading.Event()
        self._hash = hashlib.sha256()
        self.size = 0
        self.compression = ""
        self._ended = False
        self._thread = threading.Thread(target=self._produce, name="ross-layer-reader", daemon=True)
        self._thread.start()

    def __enter__(self) -> LayerStream:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        # Left by an error (a cancelled copy: SIGTERM), the producer may be
        # blocked on a read that nothing will end (a pipe its writer keeps
        # open): it is told to stop, and stops at its next step.
        self.close(wait=kind is None)

    @property
    def diff_id(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def _put(self, item: bytes | BaseException | None) -> bool:
        while not self._stopping.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            head = self._source.read(READ_SIZE)
            self.compression = detect_compression(head)
            for chunk in _DECODERS[self.compression](head, self._source):
                if self._digest:
                    self._hash.update(chunk)
                self.size += len(chunk)
                if not self._put(chunk):
                    return
        except BaseException as e:
            self._put(e)
            return
        self._put(None)

    def next_chunk(self) -> bytes | None:
        """
        The next chunk, or None at the end. Re-raises the producer's error.
        """
        if self._ended:
            return None
        item = self._queue.get()
        if isinstance(item, BaseException):
            self._ended = True
            raise item
        if item is None:
            self._ended = True
        return item

    def drain(self) -> None:
        """
        Consume the rest of the stream (padding after the tar's end counts
        towards the diff ID).
        """
        while self.next_chunk() is not None:
            pass
        self._thread.join()

    def close(self, wait: bool = True) -> None:
        """Stop the producer; with C{wait}, once it has stopped."""
        self._stopping.set()
        if wait:
            self._thread.join()


class Chunks(Protocol):
    """What L{ChunkReader} reads: a L{LayerStream}, or a wrapper of one."""

    def next_chunk(self) -> bytes | None:
        """The next chunk, or None at the end."""


class ChunkReader:
    """
    Exact-size reads over a L{LayerStream}, copying file data straight from
    the chunks.
    """

    def __init__(self, stream: Chunks) -> None:
        self._stream = stream
        self._chunk = memoryview(b"")
        self._pos = 0
        self.offset = 0

    def _fill(self) -> bool:
        chunk = self._stream.next_chunk()
        if chunk is None:
            return False
        self._chunk = memoryview(chunk)
        self._pos = 0
        return True

    def read(self, n: int) -> bytes:
        """
        Exactly C{n} bytes, or fewer only at the end of the stream.
        """
        available = len(self._chunk) - self._pos
        if available >= n:
            data = self._chunk[self._pos : self._pos + n].tobytes()
            self._pos += n
            self.offset += n
            return data
        parts = []
        while n > 0:
            available = len(self._chunk) - self._pos
            if available == 0:
                if not self._fill():
                    break
                continue
            take = min(available, n)
            parts.append(self._chunk[self._pos : self._pos + take])
            self._pos += take
            self.offset += take
            n -= take
        return b"".join(parts)

    def pieces(self, n: int) -> Iterator[memoryview]:
        """
        The next C{n} bytes as views into the chunks; raises EOFError when
        the stream ends first.
        """
        while n > 0:
            available = len(self._chunk) - self._pos
            if available == 0:
                if not self._fill():
                    raise EOFError
                continue
            take = min(available, n)
            yield self._chunk[self._pos : self._pos + take]
            self._pos += take
            self.offset += take
            n -= take

    def skip(self, n: int) -> None:
        for _ in self.pieces(n):
            pass
