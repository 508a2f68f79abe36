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

A context can also start as the client's manifest: every entry with its
metadata and, for files, the checksum of its content. Cache keys need no
more; the content of a file is fetched (L{missing}, L{receive_files}) only
when a step copies it, and checked against the manifest's checksum.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from typing import IO, Iterator, Sequence, cast

from ross.buildcontext import ManifestEntry, Matcher, PatternError, read_ignore_file, trim_build_files
from ross.engine.build.files import BLOCKDEV, CHARDEV, DIRECTORY, FIFO, FILE, SYMLINK, FileInfo
from ross.engine.layers import tarstream
from ross.engine.layers.apply import clean
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


def _kind_of(mode: int, name: str) -> str:
    if stat.S_ISREG(mode):
        return FILE
    if stat.S_ISDIR(mode):
        return DIRECTORY
    if stat.S_ISLNK(mode):
        return SYMLINK
    if stat.S_ISFIFO(mode):
        return FIFO
    if stat.S_ISCHR(mode):
        return CHARDEV
    if stat.S_ISBLK(mode):
        return BLOCKDEV
    raise InvalidArgument(f"build context manifest: {name!r} has an unknown file type ({mode:o})")


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
        # Where the content of each checksum starts in the file (manifest mode).
        self._offsets: dict[str, int] = {}
        # The name the client sends each checksum's content under (no hard link's).
        self._sources: dict[str, str] = {}
        self._written = 0
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
                    parts = clean(entry.name)
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
            self.size = self._written = stream.size
        for parts, target in links:
            info = self._entries.get(clean(target))
            if parts and info is not None and info.kind == FILE:
                self._add(parts, info)

    def index_manifest(self, entries: Sequence[ManifestEntry]) -> None:
        """
        Index a client's manifest; the file starts empty. InvalidArgument
        for an entry that makes no sense.
        """
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        hardlinks: list[tuple[tuple[str, ...], str]] = []
        for entry in entries:
            parts = clean(entry.name)
            self.count += 1
            if not parts:
                continue
            if entry.hardlink:
                hardlinks.append((parts, entry.linkname))
                continue
            kind = _kind_of(entry.mode, entry.name)
            digest = entry.digest if kind == FILE else ""
            if kind == FILE and not re.fullmatch(r"sha256:[0-9a-f]{64}", digest):
                raise InvalidArgument(f"build context manifest: {entry.name!r} has no checksum")
            if entry.size < 0:
                raise InvalidArgument(f"build context manifest: {entry.name!r} has a negative size")
            if digest:
                self._sources.setdefault(digest, "/".join(parts))
            self._add(parts, FileInfo(
                kind=kind, mode=entry.mode & 0o7777, size=entry.size if kind == FILE else 0,
                mtime_ns=entry.mtime_ns, linkname=entry.linkname if kind == SYMLINK else "",
                devmajor=entry.devmajor, devminor=entry.devminor, digest=digest))
            self.size += entry.size if kind == FILE else 0
        for parts, target in hardlinks:
            info = self._entries.get(clean(target))
            if info is not None and info.kind == FILE:
                self._add(parts, info)

    def missing(self, roots: Sequence[tuple[str, ...]]) -> list[str]:
        """
        Names of the files at or below C{roots} whose content is not here
        yet, one per checksum.
        """
        wanted: dict[str, str] = {}
        pending = list(roots)
        while pending:
            parts = pending.pop()
            info = self._entries.get(parts)
            if info is None:
                continue
            if info.kind == DIRECTORY:
                pending.extend(parts + (name,) for name in self._children.get(parts, ()))
            elif info.kind == FILE and info.where is None and info.digest not in self._offsets:
                wanted[info.digest] = self._sources.get(info.digest, "/".join(parts))
        return sorted(wanted.values())

    def receive_files(self, source: IO[bytes], names: Sequence[str]) -> None:
        """
        Read a tar of the files C{names} (asked for by L{missing}) from
        C{source}, each checked against the manifest's checksum. Blocking.
        InvalidArgument for a file that differs (it changed since the
        client listed it), or one not asked for.
        """
        expected = {}
        for name in names:
            info = self._entries.get(clean(name))
            if info is not None and info.kind == FILE:
                expected["/".join(clean(name))] = info
        base = self._written
        with LayerStream(source, digest=False) as stream:
            reader = ChunkReader(_Tee(stream, self._fd))
            for entry in tarstream.entries(reader, "build context"):
                if entry.type != tarstream.REGULAR:
                    continue
                name = "/".join(clean(entry.name))
                info = expected.pop(name, None)
                if info is None:
                    raise InvalidArgument(f"build context: the client sent {entry.name!r}, which was not asked for")
                start = reader.offset
                h = hashlib.sha256()
                for piece in reader.pieces(entry.size):
                    h.update(piece)
                if "sha256:" + h.hexdigest() != info.digest or entry.size != info.size:
                    raise InvalidArgument(f"build context: {name} changed while the build was reading it")
                self._offsets[info.digest] = base + start
            stream.drain()
            self._written = base + stream.size
        if expected:
            raise InvalidArgument(f"build context: the client did not send {sorted(expected)[0]!r}")

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
        """Drop C{parts} and everything below it (iteratively: any depth)."""
        if parts not in self._entries:
            return
        pending = [parts]
        while pending:
            below = pending.pop()
            pending.extend(below + (name,) for name in self._children.pop(below, set()))
            self._entries.pop(below, None)
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
        # Deepest first: a directory goes only once nothing in it is left,
        # so that a file an exception ("!dir/keep") brings back stays with
        # the directories above it.
        for parts in sorted(self._entries, key=len, reverse=True):
            if parts and matcher.excluded("/".join(parts)) and not self._children.get(parts):
                self._forget(parts)

    def drop_build_files(self, dockerfile: str) -> None:
        """
        dockerd's classic builder, once the Dockerfile is read: the
        C{.dockerignore} and the Dockerfile at C{dockerfile} leave the
        context when the ignore file excludes them (they were sent only for
        the daemon to read, and COPY . does not copy them).
        """
        info = self._entries.get((".dockerignore",))
        if info is None or info.kind != FILE:
            return
        try:
            matcher = Matcher(read_ignore_file(self.read(info)))
        except PatternError as e:
            raise InvalidArgument(f"invalid .dockerignore: {e}") from None
        for name in (".dockerignore", dockerfile):
            parts = tuple(p for p in name.split("/") if p and p != ".")
            if parts and matcher.excluded("/".join(parts)):
                self._forget(parts)

    # -- reading (a Tree)

    def lookup(self, parts: tuple[str, ...]) -> FileInfo | None:
        return self._entries.get(parts)

    def names(self, parts: tuple[str, ...]) -> list[str]:
        return sorted(self._children.get(parts, ()))

    def chunks(self, info: FileInfo) -> Iterator[bytes]:
        offset = info.where if isinstance(info.where, int) else self._offsets.get(info.digest)
        if offset is None:
            raise InvalidArgument("build context: a file's content was needed before it was received")
        left = info.size
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
        info = self._entries.get(clean(path))
        if info is None or info.kind != FILE:
            return None
        return self.read(info)

    def close(self) -> None:
        """Forget the file (its directory is the caller's to remove)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
