# -*- test-case-name: ross.test.integration.test_cp -*-
"""
A file tree as a tar, the way docker's archive package writes it for
``cp``: ustar headers (PAX records only when a name, link or number needs
them), times in whole seconds, numeric owners without names, hard links
within the tree kept, sockets left out, no padding after the end marker.
Shared by the CLI (the archive ``ross cp`` sends, the headers of a build
context's entries) and the copy helper (the
archive it reads out of a container). Stdlib only; blocking.
"""

from __future__ import annotations

import os
import stat
import sys
import tarfile
from typing import Callable, Iterator, Protocol


class Sink(Protocol):
    def write(self, data: bytes) -> None:
        """Append C{data}."""

    def send_file(self, path: str, size: int) -> None:
        """Append C{size} bytes of file C{path}, zero-padded if it is shorter by now."""


class FdSink:
    """
    A tar written to file descriptor C{fd} (a pipe, usually): headers and
    padding gathered into writes of up to C{gather} bytes, file data sent
    by the kernel (sendfile), never read into this process. L{flush} once
    the tar is written.
    """

    def __init__(self, fd: int, gather: int = 1 << 16) -> None:
        self.fd = fd
        self._gather = gather
        self._buffer = bytearray()
        #: Bytes of the tar written so far.
        self.written = 0

    def write(self, data: bytes) -> None:
        self._buffer += data
        if len(self._buffer) >= self._gather:
            self.flush()

    def flush(self) -> None:
        view = memoryview(self._buffer)
        while view:
            view = view[os.write(self.fd, view):]
        view.release()
        self.written += len(self._buffer)
        self._buffer.clear()

    def send_file(self, path: str, size: int) -> None:
        self.flush()
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            sent = 0
            while sent < size:
                n = os.sendfile(self.fd, fd, None, min(size - sent, 1 << 30))
                if n == 0:
                    break
                sent += n
        finally:
            os.close(fd)
        self.written += sent
        if sent < size:
            # The file shrank meanwhile: its header said C{size}.
            zeros = bytes(min(size - sent, 1 << 20))
            while sent < size:
                piece = zeros[: size - sent]
                self.write(piece)
                sent += len(piece)


def _no_prune(path: str, st: os.stat_result) -> bool:
    return False


def walk(path: str, name: str, prune: Callable[[str, os.stat_result], bool] = _no_prune,
         ) -> Iterator[tuple[str, str, os.stat_result]]:
    """
    (path, archive name, lstat) of C{path} and, for a directory, of all
    below it, in name order; directories for which C{prune} is true are
    listed but not entered. Entries removed meanwhile are left out.
    Iterative: a container's tree can be deeper than Python's recursion
    limit.
    """
    st = os.lstat(path)
    yield path, name, st
    if not stat.S_ISDIR(st.st_mode) or prune(path, st):
        return
    stack = [_children(path, name)]
    while stack:
        child = next(stack[-1], None)
        if child is None:
            stack.pop()
            continue
        child_path, child_name = child
        try:
            st = os.lstat(child_path)
        except FileNotFoundError:
            continue
        yield child_path, child_name, st
        if stat.S_ISDIR(st.st_mode) and not prune(child_path, st):
            stack.append(_children(child_path, child_name))


def _children(path: str, name: str) -> Iterator[tuple[str, str]]:
    try:
        entries = sorted(os.listdir(path))
    except OSError as e:
        print(f"cannot list {path}: {e.strerror}", file=sys.stderr)
        return iter(())
    base = path.rstrip("/") + "/"
    return iter([(base + entry, name + "/" + entry) for entry in entries])


def tar_info(name: str, path: str, st: os.stat_result,
             links: dict[tuple[int, int], str]) -> tarfile.TarInfo | None:
    """
    The header of C{path} (C{st}: its lstat) as entry C{name}: permission
    bits, whole-second time, no owner names (the owners are the caller's
    to set). A file whose inode C{links} holds under an earlier name is a
    hard link to that name; a multiply linked one is remembered there.
    None for what a tar does not hold (a socket).
    """
    mode = st.st_mode
    info = tarfile.TarInfo(name)
    info.mode = stat.S_IMODE(mode)
    info.mtime = int(st.st_mtime)
    info.uname = info.gname = ""
    if stat.S_ISREG(mode):
        key = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and key in links:
            info.type, info.linkname = tarfile.LNKTYPE, links[key]
        else:
            info.type, info.size = tarfile.REGTYPE, st.st_size
            if st.st_nlink > 1:
                links[key] = name
    elif stat.S_ISDIR(mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(mode):
        info.type, info.linkname = tarfile.SYMTYPE, os.readlink(path)
    elif stat.S_ISFIFO(mode):
        info.type = tarfile.FIFOTYPE
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info.type = tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE
        info.devmajor, info.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    else:
        return None
    return info


def write_tree(source: str, name: str, out: Sink,
               prune: Callable[[str, os.stat_result], bool] = _no_prune) -> None:
    """
    The tar of C{source} (a symlink is archived as one) with entries named
    from C{name} ("." for a directory's contents), to C{out}.
    """
    links: dict[tuple[int, int], str] = {}
    for path, arcname, st in walk(source, name, prune):
        mode = st.st_mode
        info = tar_info(arcname + "/" if stat.S_ISDIR(mode) and arcname != "." else arcname, path, st, links)
        if info is None:
            continue
        info.uid, info.gid = st.st_uid, st.st_gid
        out.write(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape"))
        if info.size:
            try:
                out.send_file(path, info.size)
            except FileNotFoundError:
                out.write(bytes(info.size))
            padding = -info.size % tarfile.BLOCKSIZE
            if padding:
                out.write(bytes(padding))
    out.write(bytes(tarfile.BLOCKSIZE * 2))
