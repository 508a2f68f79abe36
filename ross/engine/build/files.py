# -*- test-case-name: ross.test.test_build_files -*-
"""
File trees a build reads (the context, an image's layers) and what it
writes into a step's root filesystem: COPY, ADD and WORKDIR, as docker's
classic builder does them. Blocking: run it in a worker thread.

A L{Tree} is read-only: L{lookup} never follows a symlink, L{resolve}
follows them within the tree's root (an absolute target starts again at
the root, C{..} stops at it), so no path ever leaves it. Writes go
through a tar applied to an overlay upper directory with the layers
below it (L{ross.engine.layers.apply.apply_files}), which resolves paths
the same way.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
import tarfile
from typing import IO, Callable, Iterator, Protocol, Sequence

import attrs

from ross.engine.layers.apply import NO_XATTR, OPAQUE_XATTR, clean
from ross.errors import InvalidArgument, NotFound

_MAX_LINKS = 255
_CHUNK = 1 << 20

FILE, DIRECTORY, SYMLINK, CHARDEV, BLOCKDEV, FIFO = "file", "dir", "symlink", "char", "block", "fifo"


@attrs.frozen
class FileInfo:
    """
    One entry of a tree: its kind (L{FILE}, L{DIRECTORY}, ...), permission
    bits (setuid and sticky included), owner, size, modification time and
    symlink target. C{where} is how its tree finds its data again;
    C{digest} ("sha256:...") is its content's checksum when the tree
    knows it without reading the data.
    """

    kind: str
    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    where: object = None
    digest: str = ""


class Tree(Protocol):
    """A read-only file tree; paths are tuples of components below its root."""

    def lookup(self, parts: tuple[str, ...]) -> FileInfo | None:
        """What is at C{parts}, the last component not followed; None when nothing."""

    def names(self, parts: tuple[str, ...]) -> list[str]:
        """The entries of directory C{parts}, sorted."""

    def chunks(self, info: FileInfo) -> Iterator[bytes]:
        """The data of regular file C{info}."""


def resolve(tree: Tree, path: str | tuple[str, ...], follow: bool = True) -> tuple[str, ...]:
    """
    C{path} with every symlink in it followed within the tree's root
    (the last component too when C{follow}), as docker's
    FollowSymlinkInScope. Components need not exist.
    """
    pending = list(reversed(clean(path) if isinstance(path, str) else path))
    real: list[str] = []
    links = 0
    while pending:
        part = pending.pop()
        if part in ("", "."):
            continue
        if part == "..":
            if real:
                real.pop()
            continue
        info = tree.lookup(tuple(real) + (part,))
        if info is None or info.kind != SYMLINK or (not pending and not follow):
            real.append(part)
            continue
        links += 1
        if links > _MAX_LINKS:
            raise InvalidArgument(f"{'/'.join(clean(path) if isinstance(path, str) else path)}: "
                                  "too many levels of symbolic links")
        if info.linkname.startswith("/"):
            real = []
        pending.extend(reversed(info.linkname.split("/")))
    return tuple(real)


def walk(tree: Tree, parts: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], FileInfo]]:
    """
    Every entry below directory C{parts} (relative components), parents
    first, in name order. Iterative: a context can be deeper than
    Python's recursion limit.
    """
    stack: list[tuple[tuple[str, ...], Iterator[str]]] = [((), iter(tree.names(parts)))]
    while stack:
        prefix, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        relative = prefix + (name,)
        info = tree.lookup(parts + relative)
        if info is None:
            continue
        yield relative, info
        if info.kind == DIRECTORY:
            stack.append((relative, iter(tree.names(parts + relative))))


class LayersView:
    """
    The merged view of overlay layer directories (C{layers}, top first)
    without mounting them: whiteouts hide what is below, opaque
    directories hide the lower layers' contents.
    """

    def __init__(self, layers: Sequence[str]) -> None:
        self.layers = [layer for layer in layers if layer]

    def _find(self, parts: tuple[str, ...]) -> tuple[str, os.stat_result] | None:
        for layer in self.layers:
            path = layer
            blocked = False
            for i, part in enumerate(parts):
                path = path + "/" + part
                try:
                    st = os.lstat(path)
                except (FileNotFoundError, NotADirectoryError):
                    break
                if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                    return None
                if i == len(parts) - 1:
                    return path, st
                if not stat.S_ISDIR(st.st_mode):
                    return None
                if _opaque(path):
                    blocked = True
            if blocked:
                return None
        return None

    def lookup(self, parts: tuple[str, ...]) -> FileInfo | None:
        if not parts:
            return FileInfo(kind=DIRECTORY, mode=0o755, where=self.layers[0] if self.layers else "")
        found = self._find(parts)
        if found is None:
            return None
        return _info_of(*found)

    def names(self, parts: tuple[str, ...]) -> list[str]:
        seen: dict[str, bool] = {}
        for layer in self.layers:
            path = layer
            present = True
            stop = False
            for part in parts:
                path = path + "/" + part
                try:
                    st = os.lstat(path)
                except (FileNotFoundError, NotADirectoryError):
                    present = False
                    break
                if not stat.S_ISDIR(st.st_mode):
                    return sorted(name for name, shown in seen.items() if shown)
                if _opaque(path):
                    stop = True
            if present:
                try:
                    entries = os.listdir(path)
                except (FileNotFoundError, NotADirectoryError):
                    entries = []
                for name in entries:
                    if name in seen:
                        continue
                    st = os.lstat(path + "/" + name)
                    seen[name] = not (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0)
                if not parts and _opaque(path):
                    stop = True
            if stop:
                break
        return sorted(name for name, shown in seen.items() if shown)

    def chunks(self, info: FileInfo) -> Iterator[bytes]:
        assert isinstance(info.where, str)
        yield from _file_chunks(info.where, info.size)


def _opaque(path: str) -> bool:
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as e:
        if e.errno in NO_XATTR:
            return False
        raise


def _info_of(path: str, st: os.stat_result) -> FileInfo:
    mode = st.st_mode
    info = FileInfo(kind=FILE, mode=stat.S_IMODE(mode), uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns,
                    where=path)
    if stat.S_ISREG(mode):
        return attrs.evolve(info, size=st.st_size)
    if stat.S_ISDIR(mode):
        return attrs.evolve(info, kind=DIRECTORY)
    if stat.S_ISLNK(mode):
        return attrs.evolve(info, kind=SYMLINK, linkname=os.readlink(path))
    if stat.S_ISFIFO(mode):
        return attrs.evolve(info, kind=FIFO)
    return attrs.evolve(info, kind=CHARDEV if stat.S_ISCHR(mode) else BLOCKDEV, devmajor=os.major(st.st_rdev),
                        devminor=os.minor(st.st_rdev))


def _file_chunks(path: str, size: int) -> Iterator[bytes]:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        left = size
        while left > 0:
            data = os.read(fd, min(_CHUNK, left))
            if not data:
                data = bytes(left)
            yield data
            left -= len(data)
    finally:
        os.close(fd)


def has_wildcards(path: str) -> bool:
    """Whether a COPY source is a pattern (C{*}, C{?}, C{[...]})."""
    escaped = False
    for ch in path:
        if escaped:
            escaped = False
            continue
        if ch == "\\":
            escaped = True
        elif ch in "*?[":
            return True
    return False


def expand_source(tree: Tree, source: str) -> list[tuple[str, ...]]:
    """
    The paths a COPY source names: itself, or for a pattern every path
    of the tree it matches (Go's filepath.Match: C{*} stops at C{/}).
    """
    parts = clean(source)
    if not has_wildcards(source):
        return [parts]
    found: list[tuple[str, ...]] = []
    # Depth first, in name order, without recursing (a pattern of any length).
    pending: list[tuple[tuple[str, ...], tuple[str, ...]]] = [((), parts)]
    while pending:
        prefix, rest = pending.pop()
        if not rest:
            found.append(prefix)
            continue
        head, tail = rest[0], rest[1:]
        if not has_wildcards(head):
            if tree.lookup(prefix + (head,)) is not None:
                pending.append((prefix + (head,), tail))
            continue
        matched = [name for name in tree.names(resolve(tree, prefix)) if fnmatch.fnmatchcase(name, head)]
        pending.extend((prefix + (name,), tail) for name in reversed(matched))
    return found


# ---------------------------------------------------------------- hashing


def content_hash(tree: Tree, parts: tuple[str, ...], cache: dict[tuple[str, ...], str]) -> str:
    """
    A checksum of what is at C{parts} (symlinks not followed): for a file
    its content and metadata but not its modification time, for a
    directory everything below it. Docker's cache keys compare files this
    way: a touched file still hits, a changed byte or mode misses.
    Iterative: a context can be deeper than Python's recursion limit.
    """
    cached = cache.get(parts)
    if cached is not None:
        return cached
    # (path, its info, its names once its entries are on the stack): a
    # directory is hashed once all its entries are.
    stack: list[tuple[tuple[str, ...], FileInfo, list[str] | None]] = [(parts, _lookup(tree, parts), None)]
    while stack:
        path, info, names = stack[-1]
        if info.kind == DIRECTORY and names is None:
            names = list(tree.names(path))
            stack[-1] = (path, info, names)
            for name in reversed(names):
                if path + (name,) not in cache:
                    stack.append((path + (name,), _lookup(tree, path + (name,)), None))
            continue
        stack.pop()
        cache[path] = _hash(tree, path, info, names or [], cache)
    return cache[parts]


def _lookup(tree: Tree, parts: tuple[str, ...]) -> FileInfo:
    info = tree.lookup(parts)
    if info is None:
        raise NotFound(f"{'/'.join(parts)}: no such file")
    return info


def _hash(tree: Tree, parts: tuple[str, ...], info: FileInfo, names: list[str], cache: dict[tuple[str, ...], str]) -> str:
    """L{content_hash} of C{parts}, its entries' (C{names}) in C{cache}."""
    digest = hashlib.sha256()
    digest.update(f"{info.kind}:{info.mode:o}:{info.uid}:{info.gid}:{info.linkname}:{info.devmajor}:{info.devminor}:"
                  .encode("utf-8", "surrogateescape"))
    if info.kind == FILE:
        digest.update(str(info.size).encode())
        if info.digest:
            digest.update(info.digest.encode())
        else:
            for chunk in tree.chunks(info):
                digest.update(chunk)
    elif info.kind == DIRECTORY:
        for name in names:
            digest.update(name.encode("utf-8", "surrogateescape") + b"\0")
            digest.update(cache[parts + (name,)].encode() + b"\0")
    return f"{'dir' if info.kind == DIRECTORY else 'file'}:{digest.hexdigest()}"


# ---------------------------------------------------------------- writing


@attrs.frozen
class Owner:
    uid: int
    gid: int


@attrs.frozen
class Placement:
    """
    One COPY source placed in the image: what (C{parts} of C{tree}, a
    directory's contents when it is one), where (C{dest}, components of
    the real path in the image), as whom (C{owner}, None to keep the
    source's) and with which mode (C{chmod}, None to keep it).
    C{unpack}: an archive to extract into C{dest}.
    """

    tree: Tree
    parts: tuple[str, ...]
    info: FileInfo
    dest: tuple[str, ...]
    owner: Owner | None
    chmod: int | None = None
    unpack: bool = False


class TarStream:
    """
    A tar written by a generator, read as a file (C{read(n)}), for
    L{ross.engine.layers.apply.apply_files}.
    """

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self._buffer = bytearray()

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buffer) < n:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece
        if n < 0:
            n = len(self._buffer)
        out = bytes(self._buffer[:n])
        del self._buffer[:n]
        return out


_TAR_TYPES = {FILE: tarfile.REGTYPE, DIRECTORY: tarfile.DIRTYPE, SYMLINK: tarfile.SYMTYPE,
              CHARDEV: tarfile.CHRTYPE, BLOCKDEV: tarfile.BLKTYPE, FIFO: tarfile.FIFOTYPE}


def header(name: str, info: FileInfo, owner: Owner | None = None, mode: int | None = None) -> bytes:
    """A tar header for C{info} named C{name}."""
    tar = tarfile.TarInfo(name)
    tar.type = _TAR_TYPES[info.kind]
    tar.mode = info.mode if mode is None else mode
    tar.uid, tar.gid = (owner.uid, owner.gid) if owner is not None else (info.uid, info.gid)
    tar.uname = tar.gname = ""
    tar.mtime = info.mtime_ns // 1_000_000_000
    if info.kind == FILE:
        tar.size = info.size
    elif info.kind == SYMLINK:
        tar.linkname = info.linkname
    elif info.kind in (CHARDEV, BLOCKDEV):
        tar.devmajor, tar.devminor = info.devmajor, info.devminor
    return tar.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _entry(tree: Tree, name: str, info: FileInfo, owner: Owner | None, chmod: int | None) -> Iterator[bytes]:
    mode = chmod if chmod is not None and info.kind != SYMLINK else None
    yield header(name, info, owner, mode)
    if info.kind == FILE and info.size:
        yield from tree.chunks(info)
        padding = -info.size % tarfile.BLOCKSIZE
        if padding:
            yield bytes(padding)


def copy_tar(placements: Sequence[Placement], new_dirs: Sequence[tuple[tuple[str, ...], Owner]],
             now_ns: int, unpack: Callable[[Placement], Iterator[bytes]] | None = None) -> Iterator[bytes]:
    """
    The tar that puts C{placements} into an image: first the directories
    that do not exist yet (C{new_dirs}, 0755, with their owner), then
    each source (a directory's contents below C{dest}).
    """
    made = FileInfo(kind=DIRECTORY, mode=0o755, mtime_ns=now_ns)
    for parts, owner in new_dirs:
        yield header("/".join(parts), made, owner)
    for placement in placements:
        if placement.unpack:
            assert unpack is not None
            yield from unpack(placement)
            continue
        dest = "/".join(placement.dest)
        if placement.info.kind != DIRECTORY:
            yield from _entry(placement.tree, dest, placement.info, placement.owner, placement.chmod)
            continue
        for below, info in walk(placement.tree, placement.parts):
            name = "/".join((*placement.dest, *below))
            yield from _entry(placement.tree, name, info, placement.owner, placement.chmod)
    yield bytes(tarfile.BLOCKSIZE * 2)


def missing_dirs(view: Tree, dest: tuple[str, ...]) -> list[tuple[str, ...]]:
    """
    The directories from the root to C{dest} (a real path: symlinks already
    resolved) that do not exist in C{view}, outermost first.
    """
    missing: list[tuple[str, ...]] = []
    for n in range(1, len(dest) + 1):
        parts = dest[:n]
        if missing or view.lookup(parts) is None:
            missing.append(parts)
    return missing


def read_file(tree: Tree, path: str) -> bytes | None:
    """The content of a small file of C{tree} (symlinks followed), None when there is none."""
    parts = resolve(tree, path)
    info = tree.lookup(parts)
    if info is None or info.kind != FILE or info.size > (1 << 22):
        return None
    return b"".join(tree.chunks(info))


def lookup_owner(view: Tree, chown: str) -> Owner:
    """
    The uid and gid of a COPY --chown value ("user", "user:group", numbers
    or names), names looked up in the image's /etc/passwd and /etc/group.
    """
    user, _, group = chown.partition(":")
    if not group:
        group = user
    uid = _lookup_id(view, user, "/etc/passwd", "user", 2)
    gid = _lookup_id(view, group, "/etc/group", "group", 2)
    return Owner(uid, gid)


def _lookup_id(view: Tree, name: str, path: str, what: str, field: int) -> int:
    if name.isdigit():
        return int(name)
    if not name:
        raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: empty {what} name")
    data = read_file(view, path)
    for line in (data or b"").decode("utf-8", errors="replace").splitlines():
        fields = line.split(":")
        if len(fields) > field and fields[0] == name and fields[field].isdigit():
            return int(fields[field])
    raise InvalidArgument(f"unable to convert uid/gid chown string to host mapping: "
                          f"can't find {'uid' if what == 'user' else 'gid'} for {what} {name}: "
                          f"no such {what}: {name}")


def file_reader(source: IO[bytes]) -> Iterator[bytes]:
    """The chunks of an open file."""
    while True:
        data = source.read(_CHUNK)
        if not data:
            return
        yield data


class InlineTree:
    """A tree of one file: a COPY here-document's content."""

    def __init__(self, data: bytes, mtime_ns: int) -> None:
        self._data = data
        self.info = FileInfo(kind=FILE, mode=0o644, size=len(data), mtime_ns=mtime_ns)

    def lookup(self, parts: tuple[str, ...]) -> FileInfo | None:
        return self.info if not parts else None

    def names(self, parts: tuple[str, ...]) -> list[str]:
        return []

    def chunks(self, info: FileInfo) -> Iterator[bytes]:
        yield self._data


# ---------------------------------------------------------------- ADD's archives


_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))


def _decompressor(kind: str) -> Callable[[bytes], bytes] | None:
    import bz2
    import lzma
    import zlib

    import zstandard

    if kind == "gzip":
        return zlib.decompressobj(31).decompress
    if kind == "bzip2":
        return bz2.BZ2Decompressor().decompress
    if kind == "xz":
        return lzma.LZMADecompressor().decompress
    if kind == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress
    return None


def _compression(head: bytes) -> str:
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    return "none"


def archive_kind(head: bytes) -> str | None:
    """
    The compression ("none", "gzip", "bzip2", "xz", "zstd") of a tar
    archive starting with C{head}, or None when it is no tar: what
    docker's ADD extracts.
    """
    kind = _compression(head)
    decompress = _decompressor(kind)
    try:
        data = decompress(head) if decompress is not None else head
    except Exception:
        return None
    if len(data) < tarfile.BLOCKSIZE:
        return None
    try:
        tarfile.TarInfo.frombuf(data[:tarfile.BLOCKSIZE], "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return None
    return kind


class _Decompressed:
    """The decompressed chunks of a file of a tree, for a ChunkReader."""

    def __init__(self, tree: Tree, info: FileInfo) -> None:
        self._chunks = tree.chunks(info)
        self._decompress: Callable[[bytes], bytes] | None = None
        self._first = True

    def next_chunk(self) -> bytes | None:
        while True:
            chunk = next(self._chunks, None)
            if chunk is None:
                return None
            if self._first:
                self._first = False
                self._decompress = _decompressor(_compression(chunk))
            data = self._decompress(chunk) if self._decompress is not None else chunk
            if data:
                return data


def archive_entries(tree: Tree, info: FileInfo, dest: tuple[str, ...]) -> Iterator[bytes]:
    """
    The entries of archive C{info} of C{tree}, renamed below C{dest}, as
    a tar (no end marker): what ADD extracts. Owners, modes and times are
    the archive's; hard links point below C{dest} too.
    """
    from ross.engine.layers import tarstream
    from ross.engine.layers.stream import ChunkReader

    reader = ChunkReader(_Decompressed(tree, info))
    kinds = {tarstream.REGULAR: tarfile.REGTYPE, tarstream.DIRECTORY: tarfile.DIRTYPE,
             tarstream.SYMLINK: tarfile.SYMTYPE, tarstream.HARDLINK: tarfile.LNKTYPE,
             tarstream.CHARDEV: tarfile.CHRTYPE, tarstream.BLOCKDEV: tarfile.BLKTYPE,
             tarstream.FIFO: tarfile.FIFOTYPE}
    try:
        for entry in tarstream.entries(reader, "archive"):
            parts = clean(entry.name)
            if not parts:
                continue
            tar = tarfile.TarInfo("/".join(dest + parts))
            tar.type = kinds[entry.type]
            tar.mode = entry.mode & 0o7777
            tar.uid, tar.gid = entry.uid, entry.gid
            tar.uname = tar.gname = ""
            tar.mtime = entry.mtime_ns // 1_000_000_000
            tar.devmajor, tar.devminor = entry.devmajor, entry.devminor
            if entry.type == tarstream.HARDLINK:
                tar.linkname = "/".join(dest + clean(entry.linkname))
            elif entry.type == tarstream.SYMLINK:
                tar.linkname = entry.linkname
            if entry.type == tarstream.REGULAR:
                tar.size = entry.size
            yield tar.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
            if entry.type == tarstream.REGULAR and entry.size:
                for piece in reader.pieces(entry.size):
                    yield bytes(piece)
                padding = -entry.size % tarfile.BLOCKSIZE
                if padding:
                    yield bytes(padding)
    except EOFError:
        raise InvalidArgument("ADD failed: the archive is truncated") from None
