# -*- test-case-name: ross.test.integration.test_overlay_snapshotter -*-
"""
Performing the mounts a snapshotter returns, for tests (the runtime does
this for real inside a container's mount namespace; tests do it on the
host, in a private temporary directory, and undo it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Iterable

from ross.engine.records import Mount

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]

MS_RDONLY = 1
MS_REMOUNT = 32
MS_BIND = 4096
MS_REC = 16384
MNT_DETACH = 2

_FLAGS = {"ro": MS_RDONLY, "rw": 0, "bind": MS_BIND, "rbind": MS_BIND | MS_REC}


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    result = _libc.mount(
        source.encode(),
        target.encode(),
        fstype.encode() if fstype else None,
        flags,
        data.encode() if data else None,
    )
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {source} on {target} ({fstype} {data}): {os.strerror(err)}")


def mount_all(mounts: Iterable[Mount], target: str) -> None:
    """
    Perform C{mounts} on C{target}, in order, as mount(8) would.
    """
    for m in mounts:
        flags = 0
        data = []
        for option in m.options:
            if option in _FLAGS:
                flags |= _FLAGS[option]
            else:
                data.append(option)
        if m.type == "bind" or flags & MS_BIND:
            _mount(m.source, target, None, flags & ~MS_RDONLY, None)
            if flags & MS_RDONLY:
                _mount("", target, None, MS_BIND | MS_REMOUNT | MS_RDONLY, None)
        else:
            _mount(m.source, target, m.type, flags, ",".join(data))


def unmount(target: str) -> None:
    """
    Unmount C{target} (raises when it is not a mount point).
    """
    if _libc.umount2(target.encode(), 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"umount {target}: {os.strerror(err)}")
