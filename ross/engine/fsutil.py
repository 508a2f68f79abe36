# -*- test-case-name: ross.test.test_fsutil -*-
"""
Small filesystem helpers the stores share, and the modes of the daemon's
own state.

The daemon runs with umask 077, and makes its state private on top of it:
its directories and metadata files get their modes explicitly (so an older
root with looser modes is fixed at start, and a daemon under another umask
is private all the same), and anything that is image or user content
(layers, volumes, bind sources) gets the mode it must have explicitly too,
since the umask would otherwise narrow it.
"""

from __future__ import annotations

import ctypes
import errno
import os
import socket
import stat
from typing import TYPE_CHECKING, Any, Callable, Iterator

if TYPE_CHECKING:
    from ross.engine.snapshots.records import Usage


#: The mode of the daemon's own directories: --root, --exec-root and the
#: stores' directories in them. 0700: other users cannot even traverse into
#: them, so the modes of image content below (layers keep the modes the
#: image gives them) expose nothing. Containers whose root is an
#: unprivileged host uid (user namespaces) would need traversal, 0710 with
#: that uid's group: this is the one place to change.
STATE_DIR_MODE = 0o700
#: The mode of the daemon's metadata files (databases, state, logs).
PRIVATE_FILE_MODE = 0o600


def make_dirs(path: str | os.PathLike[str], mode: int) -> None:
    """
    Create C{path} and its missing parents, each with exactly C{mode}
    whatever the umask. Directories that exist are left as they are: the
    daemon never changes the mode of a directory it did not create.
    """
    missing: list[str] = []
    current = os.path.abspath(path)
    while not os.path.isdir(current):
        missing.append(current)
        current = os.path.dirname(current)
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not os.path.isdir(directory):
                raise
            # Made by someone else meanwhile: theirs, left alone.
            continue
        os.chmod(directory, mode)


def prepare_socket_path(path: str) -> None:
    """
    Ready C{path} for a listening unix socket: its directory, when missing,
    made 0700 (its missing parents too) before the socket exists, so it is
    never reachable with looser permissions (a directory that exists is
    not ours to change: the exec root is made private at start, /tmp must
    stay /tmp); a stale socket removed. Shared by the gRPC and Docker API
    listeners.

    The daemon lock covers the exec root only, and a listener can be
    anywhere (the default ross.sock is not in a custom --exec-root), so
    what is there is checked first: a socket something still answers on
    belongs to another daemon, and anything that is not a socket is
    someone's file; both raise L{FileExistsError} instead of being taken
    over (a second daemon once unlinked a live daemon's socket, served on
    its path and deleted it when it stopped).
    """
    make_dirs(os.path.dirname(path), 0o700)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        pass
    else:
        raise FileExistsError(f"{path} is in use: another process listens on it")
    finally:
        probe.close()
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def private_dir(path: str | os.PathLike[str]) -> None:
    """
    Make C{path} a directory of the daemon's own, L{STATE_DIR_MODE}, whether
    it is new or was left looser by an older version. Missing parents are
    made 0755 (they are ordinary directories such as /var/lib); parents
    that exist are never touched.
    """
    make_dirs(os.path.dirname(os.path.abspath(path)), 0o755)
    try:
        os.mkdir(path, STATE_DIR_MODE)
    except FileExistsError:
        pass
    os.chmod(path, STATE_DIR_MODE)


def private_children(path: str | os.PathLike[str]) -> list[str]:
    """
    Make C{path} private and each directory in it (one per snapshot,
    volume or container: the daemon's own, whatever it holds); returns
    their paths. Nothing further down is touched: that is content.
    """
    private_dir(path)
    children = []
    with os.scandir(path) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                os.chmod(entry.path, STATE_DIR_MODE)
                children.append(entry.path)
    return children


def private_file(path: str | os.PathLike[str]) -> None:
    """
    Make C{path} a file of the daemon's own, L{PRIVATE_FILE_MODE}: created
    empty when missing, its mode fixed when it exists.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, PRIVATE_FILE_MODE)
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)


def private_database(path: str | os.PathLike[str]) -> None:
    """
    Make the SQLite database at C{path} private before it is opened:
    SQLite gives its -wal and -shm files the database's own mode, whatever
    the umask, so the database file is made first, and the ones an older
    version left are fixed.
    """
    private_file(path)
    for suffix in ("-wal", "-shm"):
        try:
            os.chmod(f"{os.fspath(path)}{suffix}", PRIVATE_FILE_MODE)
        except FileNotFoundError:
            pass


def fsync_dir(path: str | os.PathLike[str]) -> None:
    """
    Make a directory's entries (a rename, a new file) durable.
    """
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2
_sync_file_range = ctypes.CDLL(None, use_errno=True).sync_file_range
_sync_file_range.argtypes = (ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint)
_sync_file_range.restype = ctypes.c_int


def start_writeback(fd: int, offset: int, length: int) -> None:
    """
    Start writing bytes C{offset} to C{offset + length} of the file open as
    C{fd} to the disk, and return without waiting for them (Linux's
    sync_file_range): a large file written this way as it grows is mostly
    on the disk already when its fsync comes, so the disk works while the
    writer does. A hint: failures are ignored.
    """
    _sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)


_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _listing(fd: int) -> Iterator[tuple[str, bool]]:
    """The names in the directory open as C{fd}, with whether each is one."""
    with os.scandir(fd) as entries:
        return iter([(e.name, e.is_dir(follow_symlinks=False)) for e in entries])


def remove_tree(path: str | os.PathLike[str], ignore_errors: bool = False) -> None:
    """
    Remove C{path} and everything under it, however deep, as
    C{shutil.rmtree} does (through directory fds, following no symlink; a
    symlink C{path} is itself removed), but iteratively: rmtree recurses
    once per level, and a container's tree deeper than Python's recursion
    limit failed its removal with a RecursionError (the container left
    "Removal In Progress", its layer on disk). A missing C{path} is
    removed already. With C{ignore_errors}, what cannot be removed is left
    and the rest removed.
    """
    path = os.fspath(path)

    def attempt(call: Callable[..., Any], name: str, **kwargs: Any) -> None:
        try:
            call(name, **kwargs)
        except FileNotFoundError:
            pass
        except OSError:
            if not ignore_errors:
                raise

    def opened(name: str, **kwargs: Any) -> tuple[int, Iterator[tuple[str, bool]]] | None:
        """A directory's fd and listing; None when it is gone or is none now (removed then)."""
        try:
            fd = os.open(name, _DIRECTORY, **kwargs)
        except FileNotFoundError:
            return None
        except OSError as e:
            if e.errno in (errno.ENOTDIR, errno.ELOOP):
                attempt(os.unlink, name, **kwargs)
                return None
            if ignore_errors:
                return None
            raise
        try:
            return fd, _listing(fd)
        except BaseException as e:
            os.close(fd)
            if ignore_errors and isinstance(e, OSError):
                return None
            raise

    top = opened(path)
    if top is None:
        return
    # (directory fd, its names left, its name in the directory below it)
    stack = [(top[0], top[1], "")]
    try:
        while stack:
            fd, names, _ = stack[-1]
            entry = next(names, None)
            if entry is None:
                _, _, own = stack.pop()
                os.close(fd)
                if stack:
                    attempt(os.rmdir, own, dir_fd=stack[-1][0])
                continue
            name, is_dir = entry
            if not is_dir:
                attempt(os.unlink, name, dir_fd=fd)
                continue
            child = opened(name, dir_fd=fd)
            if child is not None:
                stack.append((child[0], child[1], name))
    finally:
        for fd, _, _ in stack:
            os.close(fd)
    attempt(os.rmdir, path)


def disk_usage(path: str) -> Usage:
    """
    Allocated bytes and distinct inodes under C{path} (included), not
    following symlinks or crossing into other inodes twice. A container's
    layer is read as a L{Tree}: a directory it swaps for a symlink to the
    host's / is not walked.
    """
    # (Here: the layers package unpacks with this module's helpers.)
    from ross.engine.layers.beneath import Tree
    from ross.engine.snapshots.records import Usage

    st = os.lstat(path)
    seen = {st.st_ino}
    size = st.st_blocks * 512
    with Tree(path) as tree:
        for entry in tree.walk():
            if entry.stat.st_ino not in seen:
                seen.add(entry.stat.st_ino)
                size += entry.stat.st_blocks * 512
    return Usage(size=size, inodes=len(seen))
