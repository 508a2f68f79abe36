# -*- test-case-name: ross.test.test_tree_beneath -*-
"""
Reading a directory tree that a container's processes may be changing
while it is read: the upper directory of a running container, read by
``diff``, ``export`` and ``commit``.

A path is looked at once and used later; between the two, a process in
the container can replace any directory on it, or the file itself, with a
symlink to the host (``/etc``), a FIFO or a device. So no path of the tree
is ever handed to a call that resolves it on the host:

- the walk lists each directory through an fd, and opens a subdirectory
  relative to its parent's fd with O_NOFOLLOW;
- an entry found later by its relative path is opened with openat2
  beneath the tree's root, no symlink followed on the way;
- a file is opened for its contents only once an O_PATH fd of it shows
  the regular file the walk listed, and through that fd.

A component swapped for a symlink makes the open fail: the entry is gone,
as a file deleted meanwhile is.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import Callable, Generator, Iterator

import attrs

from ross.engine.runtime.linux import RESOLVE_BENEATH, RESOLVE_NO_SYMLINKS, openat2

# What an open of an entry that changed since it was listed fails with.
_GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EXDEV, errno.EAGAIN})


@attrs.frozen
class Entry:
    """
    One entry of a walk: C{name} relative to the root ("a/b"), its lstat
    as listed, and C{at}, a path naming it through its parent directory's
    open fd (/proc/self/fd/N/b), for calls that take only paths
    (xattrs, readlink): resolving it follows nothing but that fd, as long
    as the caller does not follow the last component. Valid only until
    the walk goes on.
    """

    name: str
    stat: os.stat_result
    at: str


#: The longest path handed to one openat2 (PATH_MAX is 4096 with its NUL).
PIECE = 2048


def _pieces(name: str) -> list[str]:
    """
    C{name} cut between components into paths of at most L{PIECE} bytes
    (a component has at most 255).
    """
    raw = os.fsencode(name)
    if len(raw) <= PIECE:
        return [name]
    pieces: list[str] = []
    start = 0
    while len(raw) - start > PIECE:
        cut = raw.rfind(b"/", start, start + PIECE + 1)
        if cut <= start:
            raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), name)
        pieces.append(os.fsdecode(raw[start:cut]))
        start = cut + 1
    pieces.append(os.fsdecode(raw[start:]))
    return pieces


def _names(fd: int) -> list[str]:
    """The names in the directory open as C{fd}, in byte order."""
    with os.scandir(fd) as it:
        return [name for _, name in sorted((os.fsencode(e.name), e.name) for e in it)]


class Tree:
    """
    A directory tree read without ever leaving it (see the module
    docstring). Use as a context manager: it holds an fd of the root.
    """

    def __init__(self, root: str) -> None:
        self._fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def __enter__(self) -> Tree:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def walk(self, skip: Callable[[str], bool] | None = None) -> Generator[Entry, None, None]:
        """
        Every entry under the root, a directory before what it holds and
        siblings in byte order of their names. An entry C{skip} is true
        of is neither given nor descended into. A directory that changed
        into something else after it was listed is left out with what it
        held. Iterative, so a container's tree of any depth is walked
        (holding an fd per level).
        """
        # (directory fd, its prefix, its names left, whether the fd is ours)
        stack: list[tuple[int, str, Iterator[str], bool]] = [(self._fd, "", iter(_names(self._fd)), False)]
        try:
            while stack:
                fd, prefix, names, ours = stack[-1]
                base = next(names, None)
                if base is None:
                    stack.pop()
                    if ours:
                        os.close(fd)
                    continue
                name = prefix + base
                if skip is not None and skip(name):
                    continue
                try:
                    st = os.stat(base, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                yield Entry(name, st, f"/proc/self/fd/{fd}/{base}")
                if not stat.S_ISDIR(st.st_mode):
                    continue
                try:
                    child = os.open(base, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
                except OSError as e:
                    if e.errno in _GONE:
                        continue
                    raise
                try:
                    listed = _names(child)
                except BaseException:
                    os.close(child)
                    raise
                stack.append((child, name + "/", iter(listed), True))
        finally:
            for fd, _, _, ours in stack:
                if ours:
                    os.close(fd)

    def _open(self, name: str, flags: int) -> int | None:
        """
        C{name} opened beneath the root, no symlink followed on the way, or
        None once it is gone. A name too long for one call (a container's
        tree can go deeper than PATH_MAX) is opened a piece at a time, each
        beneath the directory the one before reached.
        """
        pieces = _pieces(name)
        at, held = self._fd, -1
        try:
            for piece in pieces[:-1]:
                fd = openat2(at, piece, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW,
                             RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
                if held >= 0:
                    os.close(held)
                at = held = fd
            return openat2(at, pieces[-1], flags | os.O_NOFOLLOW, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)
        except OSError as e:
            if e.errno in _GONE:
                return None
            raise
        finally:
            if held >= 0:
                os.close(held)

    def lstat(self, name: str) -> os.stat_result | None:
        """The entry C{name}'s own stat, or None once it is gone."""
        fd = self._open(name, os.O_PATH)
        if fd is None:
            return None
        try:
            return os.fstat(fd)
        finally:
            os.close(fd)

    def readlink(self, name: str) -> str | None:
        """The target of the symlink C{name}, or None once it is no symlink."""
        fd = self._open(name, os.O_PATH)
        if fd is None:
            return None
        try:
            return os.readlink("", dir_fd=fd) if stat.S_ISLNK(os.fstat(fd).st_mode) else None
        finally:
            os.close(fd)

    def exists(self, name: str) -> bool:
        """Whether C{name} is in the tree, reached through directories only."""
        fd = self._open(name, os.O_PATH)
        if fd is not None:
            os.close(fd)
        return fd is not None

    def listdir(self, name: str) -> list[str] | None:
        """The names in directory C{name}, or None when it is no directory."""
        fd = self._open(name, os.O_RDONLY | os.O_DIRECTORY)
        if fd is None:
            return None
        try:
            return os.listdir(fd)
        finally:
            os.close(fd)

    def open_file(self, name: str, listed: os.stat_result) -> int | None:
        """
        A read-only fd of the regular file C{name} if it is still the file
        C{listed} (same device and inode), else None: nothing that became
        a FIFO, a device or another file is opened for reading.
        """
        fd = self._open(name, os.O_PATH)
        if fd is None:
            return None
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (listed.st_dev, listed.st_ino):
                return None
            return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            os.close(fd)
