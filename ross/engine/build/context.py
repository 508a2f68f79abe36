# -*- test-case-name: ross.test.test_build_files -*-
"""
The build context in the daemon: the tar the client sent, kept as one
file with an index of its entries, read as a L{ross.engine.build.files.Tree}.

Nothing is extracted: COPY reads the bytes it needs from the file, so a
context of thousands of small files costs one sequential write, not a
file each. Entry names are cleaned against the context's root (no C{..}
or absolute path leaves it); a later entry of the same name replaces an
earlier one, as extraction would; directories only implied by a path
exist. A C{.dockerignore} in the context applies (docker's CLI applied it
already, a tar given on stdin did not).
"""

from __future__ import annotations

import os
from typing import IO, Iterator, cast

from ross.buildcontext import Matcher, PatternError, read_ignore_file, trim_build_files
from ross.engine.build.files import (
    BLOCKDEV, CHARDEV, DIRECTORY, FIFO, FILE, SYMLINK, FileInfo, split,
)
from ross.engine.layers import tarstream
from ross.engine.layers.stream import ChunkReader, LayerStream
from ross.errors import InvalidArgument

_KINDS = {tarstream.REGULAR: FILE, tarstream.DIRECTORY: DIRECTORY, tarstream.SYMLINK: SYMLINK,
          tarstream.CHARDEV: CHARDEV, tarstream.BLOCKDEV: BLOCKDEV, tarstream.FIFO: FIFO}
_IMPLIED = FileInfo(kind=DIRECTORY, mode=0o755)


class _Tee:
    """The chunks of a layer stream, each also written to a file."""

    def __init__(self, stream: LayerStream, fd: int) -> None:
        self._stream = stream
        self._fd = fd

    def next_chunk(self) -> bytes | None:
        chunk = self._stream.next_chunk()
        if chunk:
            view = memoryview(chunk)
            while view:
                view = view[os.write(self._fd, view):]
        return chunk


class _Prefixed:
    """A stream whose first bytes were read already."""

    def __init__(self, head: bytes, source: IO[bytes]) -> None:
        self._head = head
        self._source = source

    def read(self, n: int = -1) -> bytes:
        if self._head:
            head, self._head = self._head, b""
            if n < 0:
                return head + self._source.read()
            if len(head) >= n:
                self._head = head[n:]
                return head[:n]
            return head + self._source.read(n - len(head))
        return self._source.read(n)


class ContextArchive:
    """
    A received context: C{path} holds the (uncompressed) tar; C{size} its
    bytes and C{count} its entries.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._entries: dict[tuple[str, ...], FileInfo] = {(): FileInfo(kind=DIRECTORY, mode=0o755)}
        self._children: dict[tuple[str, ...], set[str]] = {(): set()}
        self._fd = -1
        self.size = 0
        self.count = 0

    # -- receiving

    def receive(self, source: IO[bytes]) -> None:
        """
        Read the context tar (plain, gzip or zstd) from C{source} to its
        end into C{path}, indexing it. InvalidArgument for what is not a
        tar. Blocking.
        """
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        self._fd = fd
        head = source.read(tarstream.BLOCK)
        if not head:
            # No context at all (a Dockerfile given on its own).
            return
        links: list[tuple[tuple[str, ...], str]] = []
        with LayerStream(cast(IO[bytes], _Prefixed(head, source)), digest=False) as stream:
            reader = ChunkReader(_Tee(stream, fd))
            try:
                for entry in tarstream.entries(reader, "build context"):
                    self.count += 1
                    parts = split(entry.name)
                    if entry.type == tarstream.HARDLINK:
                        links.append((parts, entry.linkname))
                        continue
                    if not parts:
                        continue
                    self._add(parts, FileInfo(
                        kind=_KINDS[entry.type], mode=entry.mode & 0o7777, uid=entry.uid, gid=entry.gid,
                        size=entry.size, mtime_ns=entry.mtime_ns, linkname=entry.linkname,
                        devmajor=entry.devmajor, devminor=entry.devminor, where=reader.offset))
                stream.drain()
            except EOFError:
                raise InvalidArgument("Truncated build context: the archive ends early") from None
            self.size = stream.size
        for parts, target in links:
            info = self._entries.get(split(target))
            if parts and info is not None and info.kind == FILE:
                self._add(parts, info)

    def _add(self, parts: tuple[str, ...], info: FileInfo) -> None:
        for n in range(len(parts)):
            parent = parts[:n]
            if parent not in self._entries or self._entries[parent].kind != DIRECTORY:
                self._forget(parent)
                self._entries[parent] = _IMPLIED
                self._children.setdefault(parent, set())
                if n:
                    self._children[parts[:n - 1]].add(parts[n - 1])
        old = self._entries.get(parts)
        if old is not None and (old.kind != DIRECTORY or info.kind != DIRECTORY):
            self._forget(parts)
        self._entries[parts] = info
        self._children[parts[:-1]].add(parts[-1])
        if info.kind == DIRECTORY:
            self._children.setdefault(parts, set())

    def _forget(self, parts: tuple[str, ...]) -> None:
        """Drop C{parts} and everything below it."""
        if parts not in self._entries:
            return
        for name in self._children.pop(parts, set()):
            self._forget(parts + (name,))
        del self._entries[parts]
        if parts:
            self._children.get(parts[:-1], set()).discard(parts[-1])

    def apply_ignore(self, dockerfile: str) -> None:
        """
        Drop what the context's own C{.dockerignore} excludes (never the
        Dockerfile at C{dockerfile} nor the ignore file itself).
        """
        info = self._entries.get((".dockerignore",))
        if info is None or info.kind != FILE:
            return
        try:
            matcher = Matcher(trim_build_files(read_ignore_file(self.read(info)), dockerfile))
        except PatternError as e:
            raise InvalidArgument(f"invalid .dockerignore: {e}") from None
        if not matcher:
            return
        excluded = [parts for parts in self._entries if parts and matcher.excluded("/".join(parts))]
        for parts in excluded:
            self._forget(parts)

    # -- reading (a Tree)

    def lookup(self, parts: tuple[str, ...]) -> FileInfo | None:
        return self._entries.get(parts)

    def names(self, parts: tuple[str, ...]) -> list[str]:
        return sorted(self._children.get(parts, ()))

    def chunks(self, info: FileInfo) -> Iterator[bytes]:
        assert isinstance(info.where, int)
        offset, left = info.where, info.size
        while left > 0:
            data = os.pread(self._fd, min(left, 1 << 20), offset)
            if not data:
                raise InvalidArgument("build context: the archive changed while it was read")
            offset += len(data)
            left -= len(data)
            yield data

    def read(self, info: FileInfo) -> bytes:
        return b"".join(self.chunks(info))

    def read_file(self, path: str) -> bytes | None:
        """The content of regular file C{path} of the context, None when it has none."""
        info = self._entries.get(split(path))
        if info is None or info.kind != FILE:
            return None
        return self.read(info)

    def close(self) -> None:
        """Forget the file (its directory is the caller's to remove)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
