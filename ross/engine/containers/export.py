# -*- test-case-name: ross.test.integration.test_containers -*-
"""
``ross export``: a container's root filesystem as one tar, merged from its
overlay layers without mounting anything (the daemon mounts nothing).
Blocking: run it in a thread of its own.
"""

from __future__ import annotations

import os
import stat
import tarfile
from contextlib import ExitStack
from typing import BinaryIO, Callable

from ross.engine.layers.apply import is_opaque
from ross.engine.layers.beneath import Tree
from ross.engine.layers.diff import entry_info
from ross.errors import NotFound


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def merged(trees: list[Tree]) -> list[tuple[str, int]]:
    """
    (relative path, index in C{trees} of the layer holding it) of every
    entry of the merged view of the layers C{trees} (top first, overlay
    whiteouts and opaque directories honoured), sorted so that directories
    precede what they hold.
    """
    chosen: dict[str, int] = {}
    hidden: set[str] = set()
    opaque: set[str] = set()

    def covered(relative: str) -> bool:
        parts = relative.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if prefix in hidden or (i < len(parts) and prefix in opaque):
                return True
        return False

    for index, tree in enumerate(trees):
        hides: set[str] = set()
        opaques: set[str] = set()
        for entry in tree.walk(covered):
            if _is_whiteout(entry.stat):
                hides.add(entry.name)
                continue
            try:
                if stat.S_ISDIR(entry.stat.st_mode) and is_opaque(entry.at):
                    opaques.add(entry.name)
            except FileNotFoundError:
                continue  # deleted since it was listed
            chosen.setdefault(entry.name, index)
        # What a layer deletes or makes opaque hides the layers below it.
        hidden |= hides
        opaque |= opaques
    return sorted(chosen.items())


class _Sink:
    """
    A file object for tarfile that hands blocks to C{put}.
    """

    def __init__(self, put: Callable[[bytes], None], size: int = 1 << 20) -> None:
        self._put = put
        self._size = size
        self._buffer = bytearray()

    def write(self, data: bytes) -> int:
        self._buffer += data
        if len(self._buffer) >= self._size:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()


class _Exactly:
    """
    C{size} bytes of C{source}, a file that may shrink while it is read (a
    running container's): zeros stand for what is gone, as GNU tar pads
    a file that shrank, so the tar stays whole.
    """

    def __init__(self, source: BinaryIO, size: int) -> None:
        self._source = source
        self._left = size

    def read(self, n: int) -> bytes:
        n = min(n, self._left)
        data = self._source.read(n)
        if len(data) < n:
            data += bytes(n - len(data))
        self._left -= n
        return data


def write_tar(layers: list[str], put: Callable[[bytes], None]) -> None:
    """
    Write the merged view of C{layers} as a tar, in blocks, to C{put}.
    Owners stay numeric: the container's names are not the host's. The
    top layer may be a running container's: it is read as a L{Tree}, and
    what changes in it meanwhile is written as found or left out, never
    followed out of it.
    """
    sink = _Sink(put)
    links: dict[tuple[int, int], str] = {}
    with ExitStack() as stack:
        try:
            trees = [stack.enter_context(Tree(layer)) for layer in layers]
        except FileNotFoundError as e:
            raise NotFound(f"the container was removed during the export ({e.filename} is gone)") from None
        tar = stack.enter_context(tarfile.open(  # type: ignore[call-overload]
            fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT))
        for relative, index in merged(trees):
            tree = trees[index]
            st = tree.lstat(relative)
            info = entry_info(relative, st) if st is not None else None
            if st is None or info is None:
                # Deleted since the walk (a running container's files
                # change under it): left out, as tar leaves out a file
                # that goes before it is read. Sockets have no tar form.
                continue
            if info.issym():
                target = tree.readlink(relative)
                if target is None:
                    continue
                info.linkname = target
            if not info.isreg():
                tar.addfile(info)
                continue
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                info.type = tarfile.LNKTYPE
                info.linkname = links[key]
                info.size = 0
                tar.addfile(info)
                continue
            fd = tree.open_file(relative, st)
            if fd is None:
                continue
            if st.st_nlink > 1:
                links[key] = relative
            with open(fd, "rb") as source:
                tar.addfile(info, _Exactly(source, info.size))
    missing = [layer for layer in layers if not os.path.isdir(layer)]
    if missing:
        # Not a container's files that changed: the container went (its
        # snapshot removed), and what was written is not its root.
        raise NotFound(f"the container was removed during the export ({missing[0]} is gone)")
    sink.flush()
