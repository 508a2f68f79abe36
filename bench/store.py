"""
Where the engines keep their stores during a bench: a fresh ext4 file
system with a journal, made in a sparse file for the run and removed after.

Why not the machine's root file system: here it is ext4 without a
journal. Without one, ext4 does not reuse an inode freed in the last 60 s
(360 s while its inode table block is dirty), and on every allocation it
checks each such inode from the start of the group (recently_deleted in
fs/ext4/ialloc.c): creating n files right after deleting n costs about n².
Extracting a 70 MB layer of 4,400 files took 2.2 s there right after a
deletion and 0.17 s on a journaled ext4, for tar, Ross and docker alike.
The heavy rows (pull, load) then measured which engine's run followed
which deletion, not the engines. A journal is ext4's default (and xfs
makes no such check): both engines' stores go on one, the private
dockerd's data root and every Ross daemon's root.

`./dev bench` (all.py), load.py and pull.py take `--store journal` (the
default) or `--store root` (the machine's file system, as before).

    .venv/bin/python bench/store.py     (make one, show it, remove it)
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import argparse

#: Size of the sparse file; only what is written takes room.
SIZE = "48G"


class Unavailable(Exception):
    """No journaled store can be made here; why."""


class JournaledStore:
    """
    An ext4 file system with a journal, mounted at C{path} (made, and
    removed with its file by L{remove}).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.image = path.with_name(path.name + ".img")

    def make(self) -> Path:
        """
        Make and mount it; L{Unavailable} (everything undone) when this
        machine cannot (no loop devices, no mkfs.ext4).
        """
        self.path.mkdir(parents=True)
        # noinit_itable: no background zeroing of inode tables during the
        # run (a fresh sparse file reads as zeros already); discard gives
        # back the room of what is deleted.
        steps = [["truncate", "-s", SIZE, str(self.image)],
                 ["mkfs.ext4", "-q", "-F", "-E", "lazy_journal_init=1", str(self.image)],
                 ["mount", "-o", "loop,noinit_itable,discard", str(self.image), str(self.path)]]
        for step in steps:
            try:
                result = subprocess.run(step, capture_output=True, text=True)
            except OSError as e:
                result = subprocess.CompletedProcess(step, 127, "", str(e))
            if result.returncode != 0:
                self.remove()
                raise Unavailable(f"{step[0]}: {result.stderr.strip() or result.returncode}")
        return self.path

    def remove(self) -> None:
        """Unmount (lazily when something still holds it) and remove the file."""
        if os.path.ismount(self.path):
            if subprocess.run(["umount", str(self.path)], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
        try:
            self.path.rmdir()
        except FileNotFoundError:
            pass
        self.image.unlink(missing_ok=True)


@contextlib.contextmanager
def stores(kind: str, work: Path) -> Iterator[Path]:
    """
    The directory to make the engines' stores in: a journaled ext4
    mounted at C{work}/fs for C{kind} "journal" (removed on the way out),
    /tmp for "root", or when no such store can be made here (it says so).
    """
    if kind == "root":
        yield Path("/tmp")
        return
    store = JournaledStore(work / "fs")
    try:
        made = store.make()
    except Unavailable as e:
        print(f"stores: the root file system (no journaled store here: {e})", flush=True)
        yield Path("/tmp")
        return
    try:
        yield made
    finally:
        store.remove()


def add_option(parser: "argparse.ArgumentParser") -> None:
    """The scripts' --store option."""
    parser.add_argument("--store", choices=("journal", "root"), default="journal",
                        help="where the engines' stores go: a fresh ext4 with a journal (default; see bench/store.py) "
                             "or this machine's root file system")


def main() -> None:
    """Make one, say what it is, remove it: what the bench does, checked on its own."""
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="ross-bench-store-", dir="/var/tmp"))
    store = JournaledStore(base / "fs")
    try:
        store.make()
        device = subprocess.run(["findmnt", "-no", "SOURCE", str(store.path)], capture_output=True, text=True,
                                check=True).stdout.strip()
        features = next(line for line in subprocess.run(["dumpe2fs", "-h", device], capture_output=True, text=True,
                                                        check=True).stdout.splitlines()
                        if line.startswith("Filesystem features"))
        print(f"{store.path} on {device}: {features}")
    finally:
        store.remove()
        base.rmdir()
    print(f"removed; {store.image} exists: {store.image.exists()}")


if __name__ == "__main__":
    main()
