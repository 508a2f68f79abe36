# -*- test-case-name: ross.test.integration.test_containers -*-
"""
``ross diff``: what a container changed, read from its overlay upper
directory against the layers below it. Blocking: run it in a thread.
"""

from __future__ import annotations

import os
import stat

from ross.engine.records import Mount

ADDED, CHANGED, DELETED = "A", "C", "D"

#: What the runtime bind-mounts over (creating an empty file in the
#: container's layer when the image has none): not a change of the
#: container's, as docker keeps them in an init layer below it. Paths
#: relative to the root.
RUNTIME_FILES = ("etc/hostname", "etc/hosts", "etc/resolv.conf")


def layers_of(mounts: list[Mount]) -> tuple[str, list[str]]:
    """
    (upper, lowers) of a container's root mount; a root with no parent is
    all upper.
    """
    root = mounts[0]
    if root.type != "overlay":
        return root.source, []
    options = dict(o.split("=", 1) for o in root.options if "=" in o)
    return options["upperdir"], options.get("lowerdir", "").split(":")


def changes(upper: str, lowers: list[str]) -> list[tuple[str, str]]:
    """
    (kind, path) for every entry of C{upper}: D for an overlay whiteout, C
    for what hides something of a lower layer, A for the rest; sorted by
    path, as docker lists them. The runtime's files are left out, and so
    is a directory that is in C{upper} only to hold them.
    """
    found = []
    for directory, dirnames, filenames in os.walk(upper, topdown=False):
        for name in dirnames + filenames:
            full = os.path.join(directory, name)
            relative = os.path.relpath(full, upper)
            if relative in RUNTIME_FILES or _holds_only_runtime_files(full, relative):
                continue
            st = os.lstat(full)
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                found.append((DELETED, "/" + relative))
                continue
            below = any(os.path.lexists(os.path.join(lower, relative)) for lower in lowers if lower)
            found.append((CHANGED if below else ADDED, "/" + relative))
    return sorted(found, key=lambda change: change[1])


def _holds_only_runtime_files(path: str, relative: str) -> bool:
    prefix = relative + "/"
    if not any(f.startswith(prefix) for f in RUNTIME_FILES) or os.path.islink(path):
        return False
    try:
        entries = os.listdir(path)
    except NotADirectoryError:
        return False
    return bool(entries) and all(prefix + e in RUNTIME_FILES for e in entries)
