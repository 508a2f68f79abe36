# -*- test-case-name: ross.test.integration.test_layers -*-
"""
Applying a layer tar to a directory (an overlay upper directory).

OCI whiteouts become overlay whiteouts: C{.wh.NAME} a character device 0/0
named NAME, C{.wh..wh..opq} the xattr C{trusted.overlay.opaque=y} on its
directory. Ownership, modes (setuid included), xattrs, hard links,
symlinks, device nodes, fifos and nanosecond times are restored; directory
times are set last, after their contents.

Safety (SPEC 10): the root is a jail. Every entry name is cleaned as if the
root were C{/} (a leading C{/} and C{..} can never climb above it); parent
directories are resolved component by component with C{lstat}, following
symlinks only within the root (an absolute target starts again at the
root, C{..} stops at it), so the directory written into is always a real
directory inside the root; the entry itself is never followed (an existing
file or symlink at its place is replaced). Hard link targets resolve the
same way. Overlay's own xattrs (C{trusted.overlay.*}) in an archive are
dropped, so a layer cannot forge redirects or opaque markers by xattr.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Sequence

import attrs

from ross.engine.fsutil import remove_tree
from ross.engine.layers import tarstream
from ross.engine.layers.stream import ChunkReader, LayerStream, Readable
from ross.errors import InvalidArgument

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
OPAQUE_XATTR = "trusted.overlay.opaque"
_MAX_LINKS = 40
#: The longest path the kernel takes, with its NUL.
PATH_MAX = 4096


def _warn(text: str, **fields: object) -> None:
    """
    Log a warning. twisted.logger is imported only then: ``ross cp``'s
    helper (L{ross.engine.containers.cphelper}) extracts with this module
    and would otherwise pay its import, a third of the helper's start.
    """
    from twisted.logger import Logger

    Logger(namespace=__name__).warn(text, **fields)


_O_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@attrs.frozen
class LayerResult:
    """
    What applying a layer did.

    @ivar diff_id: "sha256:..." of the uncompressed tar.
    @ivar size: bytes of the uncompressed tar.
    @ivar compression: "gzip", "zstd" or "none", as detected.
    @ivar entries: tar entries applied.
    """

    diff_id: str
    size: int
    compression: str
    entries: int


def clean(name: str) -> tuple[str, ...]:
    """
    Components of C{name} resolved lexically against a root: empty and
    C{.} components dropped, C{..} removing the previous one and never
    leaving the root.
    """
    parts: list[str] = []
    for part in name.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return tuple(parts)


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


# What getxattr/listxattr say when there is nothing to read: anything else
# (EIO, EPERM) is a real failure and must not pass for "no xattr".
NO_XATTR = (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP)


def is_opaque(path: str) -> bool:
    """
    Whether C{path} is an overlay opaque directory (hides what is below it).
    """
    try:
        return os.getxattr(path, OPAQUE_XATTR, follow_symlinks=False) == b"y"
    except OSError as e:
        if e.errno in NO_XATTR:
            return False
        raise


class _Jail:
    """
    Path resolution inside a root directory (see the module docstring),
    with a cache of resolved directories that is dropped whenever a
    directory or symlink is removed or replaced.

    With C{lowers} (the parent layers' directories, nearest first) the root
    is an overlay upper directory and parents resolve as in the merged
    view: a directory only a lower layer has is made in the upper one with
    the lower's owner, mode, xattrs and times, and a lower layer's symlink
    is followed (within the root), as it would be in the mounted snapshot.
    """

    def __init__(self, root: str, lowers: tuple[str, ...] = ()) -> None:
        self.root = os.path.realpath(root)
        self.lowers = lowers
        self.dir_times: list[tuple[str, int, int]] = []
        self._cache: dict[tuple[str, ...], str] = {(): self.root}

    def host(self, parts: tuple[str, ...] | list[str]) -> str:
        return self.root + "".join("/" + p for p in parts)

    def invalidate(self) -> None:
        self._cache = {(): self.root}

    def _below(self, real: list[str], part: str) -> tuple[str, os.stat_result] | None:
        """
        What the lower layers show at C{real/part}, which the upper
        directory lacks: the nearest lower's entry, unless a whiteout or an
        opaque directory hides it.
        """
        if not self.lowers or is_opaque(self.host(real)):
            return None
        rel = "".join("/" + p for p in real)
        for lower in self.lowers:
            path = lower + rel + "/" + part
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                try:
                    parent = os.lstat(lower + rel)
                except FileNotFoundError:
                    continue
                if not stat.S_ISDIR(parent.st_mode) or is_opaque(lower + rel):
                    return None
                continue
            return None if _is_whiteout(st) else (path, st)
        return None

    def _copy_up_dir(self, source: str, st: os.stat_result, target: str) -> None:
        os.mkdir(target, 0o700)
        os.chown(target, st.st_uid, st.st_gid)
        os.chmod(target, stat.S_IMODE(st.st_mode))
        for name in os.listxattr(source, follow_symlinks=False):
            if not name.startswith("trusted.overlay."):
                os.setxattr(target, name, os.getxattr(source, name, follow_symlinks=False))
        self.dir_times.append((target, st.st_atime_ns, st.st_mtime_ns))

    def directory(self, parts: tuple[str, ...], create: bool) -> str:
        """
        The host path of directory C{parts}, following symlinks only within
        the root; missing directories are created (0755, root-owned, or as
        in the lower layers) when C{create}, else FileNotFoundError.
        """
        cached = self._cache.get(parts)
        if cached is not None:
            return cached
        # From the parent, when it was resolved (an archive lists a
        # directory before what it holds): resolving every entry from the
        # root cost a tree N deep N^2 lookups (minutes at 1500 levels).
        parent = self._cache.get(parts[:-1]) if parts else None
        if parent is not None:
            real = parent[len(self.root) + 1:].split("/") if parent != self.root else []
            pending = [parts[-1]]
        else:
            real = []
            pending = list(reversed(parts))
        links = 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                if real:
                    real.pop()
                continue
            path = self.host(real) + "/" + part
            source = path
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                below = self._below(real, part)
                if below is None or (not create and not stat.S_ISLNK(below[1].st_mode)):
                    if not create:
                        raise
                    _implicit_dir(path)
                    real.append(part)
                    continue
                source, st = below
                if stat.S_ISDIR(st.st_mode):
                    self._copy_up_dir(source, st, path)
                    real.append(part)
                    continue
            if stat.S_ISDIR(st.st_mode):
                real.append(part)
            elif stat.S_ISLNK(st.st_mode):
                links += 1
                if links > _MAX_LINKS:
                    raise InvalidArgument(f"Layer path {'/'.join(parts)!r}: too many levels of symbolic links")
                target = os.readlink(source)
                if target.startswith("/"):
                    real = []
                pending.extend(reversed(target.split("/")))
            elif create and _is_whiteout(st):
                # A directory deleted earlier in this layer is made again:
                # opaque, so the deleted lower contents stay hidden.
                os.unlink(path)
                _implicit_dir(path)
                os.setxattr(path, OPAQUE_XATTR, b"y")
                real.append(part)
            else:
                raise InvalidArgument(f"Layer path {'/'.join(parts)!r}: {'/'.join(real + [part])!r} is not a directory")
        result = self.host(real)
        self._cache[parts] = result
        return result


def _implicit_dir(path: str) -> None:
    """
    A directory the archive implies but does not list: 0755 as docker
    makes it, whatever the umask (the daemon's is 077).
    """
    os.mkdir(path)
    os.chmod(path, 0o755)


class _Applier:
    """
    With C{whiteouts} false, C{.wh.} names are ordinary files (an archive
    copied into a container, not a layer, and errors call it one); with
    C{owner}, every entry gets that uid and gid instead of the archive's.
    """

    def __init__(self, root: str, lowers: tuple[str, ...], whiteouts: bool = True,
                 owner: tuple[int, int] | None = None) -> None:
        self.jail = _Jail(root, lowers)
        self.dir_times = self.jail.dir_times
        self.count = 0
        self.whiteouts = whiteouts
        self.owner = owner
        self.what = "layer" if whiteouts else "archive"

    def _remove(self, path: str, st: os.stat_result) -> None:
        if stat.S_ISDIR(st.st_mode):
            remove_tree(path)
            self.jail.invalidate()
        else:
            os.unlink(path)
            if stat.S_ISLNK(st.st_mode):
                self.jail.invalidate()

    def _clear(self, path: str) -> os.stat_result | None:
        """
        Make room for a new entry at C{path}; returns what was there.
        """
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        self._remove(path, st)
        return st

    def apply(self, entry: tarstream.Entry, reader: ChunkReader) -> None:
        parts = clean(entry.name)
        self.count += 1
        if not parts:
            if entry.type == tarstream.DIRECTORY:
                self._metadata(self.jail.root, entry, is_dir=True)
            return
        *parent_parts, base = parts
        parent = self.jail.directory(tuple(parent_parts), create=True)
        if self.owner is not None:
            entry = attrs.evolve(entry, uid=self.owner[0], gid=self.owner[1])
        if self.whiteouts and base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base, entry)
            return
        path = parent + "/" + base
        kind = entry.type
        if kind == tarstream.REGULAR:
            self._regular(path, entry, reader)
        elif kind == tarstream.DIRECTORY:
            self._directory(path, entry)
        elif kind == tarstream.SYMLINK:
            self._clear(path)
            os.symlink(entry.linkname, path)
            self._metadata(path, entry, is_link=True)
        elif kind == tarstream.HARDLINK:
            self._hardlink(path, entry)
        else:
            self._clear(path)
            if kind == tarstream.FIFO:
                os.mkfifo(path, 0o600)
            else:
                node = stat.S_IFCHR if kind == tarstream.CHARDEV else stat.S_IFBLK
                os.mknod(path, node | 0o600, os.makedev(entry.devmajor, entry.devminor))
            self._metadata(path, entry)

    def _whiteout(self, parent: str, base: str, entry: tarstream.Entry) -> None:
        if base == OPAQUE_MARKER:
            os.setxattr(parent, OPAQUE_XATTR, b"y")
            return
        if base.startswith(WHITEOUT_PREFIX + WHITEOUT_PREFIX):
            # Other ".wh..wh." names are aufs bookkeeping, meaningless here.
            return
        name = base[len(WHITEOUT_PREFIX) :]
        if name in ("", ".", "..") or "/" in name:
            _warn("ignoring layer whiteout with an invalid name {name!r}", name=entry.name)
            return
        path = parent + "/" + name
        self._clear(path)
        os.mknod(path, stat.S_IFCHR | 0o000, 0)

    def _regular(self, path: str, entry: tarstream.Entry, reader: ChunkReader) -> None:
        try:
            fd = os.open(path, _O_CREATE, 0o600)
        except FileExistsError:
            self._clear(path)
            fd = os.open(path, _O_CREATE, 0o600)
        try:
            try:
                for piece in reader.pieces(entry.size):
                    while piece:
                        written = os.write(fd, piece)
                        piece = piece[written:]
            except EOFError:
                raise InvalidArgument(f"Truncated {self.what}: the archive ends inside {entry.name!r}") from None
            self._metadata(fd, entry)
        finally:
            os.close(fd)

    def _directory(self, path: str, entry: tarstream.Entry) -> None:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            st = os.lstat(path)
            if not stat.S_ISDIR(st.st_mode):
                self._remove(path, st)
                os.mkdir(path, 0o700)
                if _is_whiteout(st):
                    os.setxattr(path, OPAQUE_XATTR, b"y")
        self._metadata(path, entry, is_dir=True)

    def _hardlink(self, path: str, entry: tarstream.Entry) -> None:
        target_parts = clean(entry.linkname)
        if not target_parts:
            raise InvalidArgument(f"Layer entry {entry.name!r}: hard link to the root directory")
        *target_parent, target_base = target_parts
        try:
            target = self.jail.directory(tuple(target_parent), create=False) + "/" + target_base
            st = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError):
            raise InvalidArgument(
                f"Layer entry {entry.name!r}: hard link target {entry.linkname!r} is not in the layer"
            ) from None
        if stat.S_ISDIR(st.st_mode):
            raise InvalidArgument(f"Layer entry {entry.name!r}: hard link to directory {entry.linkname!r}")
        if target == path:
            return
        self._clear(path)
        os.link(target, path, follow_symlinks=False)

    def _metadata(self, where: int | str, entry: tarstream.Entry, is_dir: bool = False, is_link: bool = False) -> None:
        if is_link:
            os.chown(where, entry.uid, entry.gid, follow_symlinks=False)
        else:
            os.chown(where, entry.uid, entry.gid)
            # After chown, which clears setuid/setgid bits.
            os.chmod(where, stat.S_IMODE(entry.mode))
        for name, value in entry.xattrs.items():
            if name.startswith("trusted.overlay."):
                continue
            try:
                os.setxattr(where, name, value, follow_symlinks=not is_link)
            except OSError as e:
                if is_link and e.errno in (errno.EPERM, errno.ENOTSUP):
                    continue
                raise
        if is_dir:
            assert isinstance(where, str)
            self.dir_times.append((where, entry.atime_ns, entry.mtime_ns))
        else:
            os.utime(where, ns=(entry.atime_ns, entry.mtime_ns), follow_symlinks=not is_link)

    def finish(self) -> None:
        for path, atime_ns, mtime_ns in reversed(self.dir_times):
            try:
                os.utime(path, ns=(atime_ns, mtime_ns), follow_symlinks=False)
            except FileNotFoundError:
                # Removed later in the same layer.
                continue


def _extract(applier: _Applier, stream: LayerStream) -> None:
    """Every entry of C{stream} through C{applier}, to the end of the stream."""
    reader = ChunkReader(stream)
    try:
        for entry in tarstream.entries(reader, applier.what):
            try:
                applier.apply(entry, reader)
            except OSError as e:
                if e.errno != errno.ENAMETOOLONG:
                    raise
                # Unpacked by path: an entry deeper than the kernel takes
                # in one path (a container's tree can be) is refused, as
                # docker's unpacking does, by its name in the layer.
                shown = entry.name if len(entry.name) <= 120 else entry.name[:60] + "..." + entry.name[-40:]
                if len(applier.jail.root) + 1 + len(os.fsencode(entry.name)) < PATH_MAX:
                    # A component past 255 bytes, or a link's target past PATH_MAX.
                    raise InvalidArgument(f"Unsupported {applier.what}: {shown!r}: a name in it is too long") from None
                raise InvalidArgument(
                    f"Unsupported {applier.what}: {shown!r} ({len(entry.name)} bytes) is too deep to unpack "
                    f"here: its path on the host is longer than the kernel's limit of {PATH_MAX} bytes") from None
    except UnicodeEncodeError as e:
        raise InvalidArgument(f"Corrupt {applier.what}: undecodable name ({e.reason})") from None
    stream.drain()
    applier.finish()


def apply_layer(source: Readable, root: str | os.PathLike[str], lowers: Sequence[str] = (),
                digest: bool = True) -> LayerResult:
    """
    Extract the layer read from C{source} (gzip, zstd or plain tar,
    detected from its first bytes) into directory C{root}, converting OCI
    whiteouts to overlay whiteouts. When C{root} is an overlay upper
    directory, C{lowers} are its lower directories, nearest first: parent
    directories then resolve as in the merged view (see L{_Jail}).
    Without C{digest}, the result's diff ID is empty (the caller hashed
    the layer already). Blocking: run it in a worker thread.
    InvalidArgument for corrupt, truncated or unsupported layers (what was
    written before the error stays; callers discard the snapshot).
    """
    applier = _Applier(os.fspath(root), tuple(lowers))
    with LayerStream(source, digest) as stream:
        _extract(applier, stream)
        return LayerResult(diff_id=stream.diff_id if digest else "", size=stream.size,
                           compression=stream.compression, entries=applier.count)


def apply_files(source: Readable, root: str | os.PathLike[str], lowers: Sequence[str] = ()) -> int:
    """
    Write the files of the plain tar read from C{source} into C{root}, an
    overlay upper directory over C{lowers} (nearest first), parents
    resolved as in the merged view like L{apply_layer}, but with no
    whiteouts: a C{.wh.} name is an ordinary file (a build's COPY).
    Returns the number of entries. Blocking.
    """
    applier = _Applier(os.fspath(root), tuple(lowers), whiteouts=False)
    with LayerStream(source, digest=False) as stream:
        _extract(applier, stream)
    return applier.count


def extract_archive(source: Readable, root: str, owner: tuple[int, int] | None = None) -> int:
    """
    Extract the archive read from C{source} (plain tar, gzip or zstd) into
    directory C{root} with the same jail as layers, but no whiteouts:
    C{.wh.} names are ordinary files. With C{owner} (uid, gid), everything
    belongs to it instead of the archive's owners. Returns the number of
    entries; InvalidArgument for a corrupt or truncated archive (what was
    written before the error stays: callers extract into a staging
    directory). Blocking.
    """
    applier = _Applier(root, (), whiteouts=False, owner=owner)
    with LayerStream(source, digest=False) as stream:
        _extract(applier, stream)
    return applier.count
