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
from typing import Callable

from ross.engine.layers.apply import is_opaque
from ross.errors import NotFound


def _is_whiteout(st: os.stat_result) -> bool:
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def merged(layers: list[str]) -> list[tuple[str, str]]:
    """
    (relative path, layer directory holding it) of every entry of the
    merged view of C{layers} (top first, overlay whiteouts and opaque
    directories honoured), sorted so that directories precede what they hold.
    """
    chosen: dict[str, str] = {}
    hidden: set[str] = set()
    opaque: set[str] = set()

    def covered(relative: str) -> bool:
        parts = relative.split("/")
        for i in range(1, len(parts) + 1):
            prefix = "/".join(parts[:i])
            if prefix in hidden or (i < len(parts) and prefix in opaque):
                return True
        return False

    for base in layers:
        hides: set[str] = set()
        opaques: set[str] = set()
        for directory, dirnames, filenames in os.walk(base):
            inside = os.path.relpath(directory, base)
            inside = "" if inside == "." else inside
            for name in list(dirnames) + filenames:
                relative = f"{inside}/{name}" if inside else name
                if covered(relative):
                    if name in dirnames:
                        dirnames.remove(name)
                    continue
                full = os.path.join(directory, name)
                st = os.lstat(full)
                if _is_whiteout(st):
                    hides.add(relative)
                    continue
                chosen.setdefault(relative, base)
                if stat.S_ISDIR(st.st_mode) and is_opaque(full):
                    opaques.add(relative)
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


def write_tar(layers: list[str], put: Callable[[bytes], None]) -> None:
    """
    Write the merged view of C{layers} as a tar, in blocks, to C{put}.
    Owners stay numeric: the container's names are not the host's.
    """
    sink = _Sink(put)
    links: dict[tuple[int, int], str] = {}
    with tarfile.open(fileobj=sink, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        for relative, base in merged(layers):
            full = os.path.join(base, relative)
            try:
                info = tar.gettarinfo(full, arcname=relative)
                st = os.lstat(full)
                source = open(full, "rb") if info.isreg() else None
            except FileNotFoundError:
                # Deleted since the walk (a running container's files
                # change under it): left out, as tar leaves out a file
                # that goes before it is read.
                continue
            info.uname = info.gname = ""
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                key = (st.st_dev, st.st_ino)
                if key in links:
                    info.type = tarfile.LNKTYPE
                    info.linkname = links[key]
                    info.size = 0
                    tar.addfile(info)
                    if source is not None:
                        source.close()
                    continue
                links[key] = relative
            if source is not None:
                with source:
                    tar.addfile(info, source)
            else:
                tar.addfile(info)
    missing = [layer for layer in layers if not os.path.isdir(layer)]
    if missing:
        # Not a container's files that changed: the container went (its
        # snapshot removed), and what was written is not its root.
        raise NotFound(f"the container was removed during the export: {missing[0]} is gone")
    sink.flush()
