"""
Small filesystem helpers the stores share.
"""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ross.engine.snapshots.records import Usage


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """
    Make a directory's entries (a rename, a new file) durable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def disk_usage(path: str) -> Usage:
    """
    Allocated bytes and distinct inodes under C{path} (included), not
    following symlinks or crossing into other inodes twice.
    """
    from ross.engine.snapshots.records import Usage

    seen: set[int] = set()
    size = 0
    stack = [path]
    st = os.lstat(path)
    seen.add(st.st_ino)
    size += st.st_blocks * 512
    while stack:
        current = stack.pop()
        with os.scandir(current) as entries:
            for entry in entries:
                st = entry.stat(follow_symlinks=False)
                if st.st_ino in seen:
                    continue
                seen.add(st.st_ino)
                size += st.st_blocks * 512
                if stat.S_ISDIR(st.st_mode):
                    stack.append(entry.path)
    return Usage(size=size, inodes=len(seen))
