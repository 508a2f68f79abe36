# -*- test-case-name: ross.test.integration.test_containers -*-
"""
``ross diff``: what a container changed, read from its overlay upper
directory against the layers below it. Blocking: run it in a thread.
"""

from __future__ import annotations

import stat
from contextlib import ExitStack

from ross.engine.layers.beneath import Tree
from ross.engine.records import Mount

ADDED, CHANGED, DELETED = "A", "C", "D"

#: What the runtime bind-mounts over (creating an empty file in the
#: container's layer when the image has none), and its /.dockerenv: not a
#: change of the container's, as docker keeps them in an init layer below
#: it. Paths relative to the root.
RUNTIME_FILES = ("etc/hostname", "etc/hosts", "etc/resolv.conf", ".dockerenv")


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
    is a directory that is in C{upper} only to hold them. A running
    container's files may change meanwhile: every layer is read as a
    L{Tree}, never followed out of.
    """
    found: list[tuple[str, str]] = []
    with ExitStack() as stack:
        tree = stack.enter_context(Tree(upper))
        below = [stack.enter_context(Tree(lower)) for lower in lowers if lower]
        holders = runtime_only_dirs(tree)
        for entry in tree.walk():
            relative = entry.name
            if relative in RUNTIME_FILES or relative in holders:
                continue
            st = entry.stat
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                found.append((DELETED, "/" + relative))
                continue
            kind = CHANGED if any(lower.exists(relative) for lower in below) else ADDED
            found.append((kind, "/" + relative))
    return sorted(found, key=lambda change: change[1])


def changes_size(upper: str) -> int:
    """
    Bytes of what a container wrote: the sizes of the files (and links)
    of its layer C{upper}, each hard-linked file once, the runtime's files
    left out (docker's SizeRw: 0 for a container that changed nothing).
    """
    size = 0
    seen: set[tuple[int, int]] = set()
    with Tree(upper) as tree:
        for entry in tree.walk():
            if entry.name in RUNTIME_FILES:
                continue
            st = entry.stat
            if stat.S_ISDIR(st.st_mode) or (stat.S_ISCHR(st.st_mode) and st.st_rdev == 0):
                continue
            if st.st_nlink > 1:
                if (st.st_dev, st.st_ino) in seen:
                    continue
                seen.add((st.st_dev, st.st_ino))
            size += st.st_size
    return size


def runtime_only_dirs(tree: Tree) -> list[str]:
    """
    Directories of a container's layer C{tree} that are there only to
    hold the runtime's files (/etc when the container changed nothing in
    it): not a change of the container's (diff, a build step's layer).
    """
    found: list[str] = []
    for path in RUNTIME_FILES:
        parent = path.rpartition("/")[0]
        if not parent or parent in found:
            continue
        entries = tree.listdir(parent)
        if entries and all(f"{parent}/{entry}" in RUNTIME_FILES for entry in entries):
            found.append(parent)
    return found
