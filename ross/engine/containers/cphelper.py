# -*- test-case-name: ross.test.integration.test_cp -*-
"""
The child process that does ``ross cp``'s file work, jailed by the kernel
in the container's filesystem (see L{ross.engine.containers.copy}).

    python -c "...cphelper import main; main()" WORKDIR

The job is the first line on stdin, JSON: C{op} ("stat", "archive" or
"extract"), C{path} (in the container, as the user wrote it), C{ref} (the
container as the user named it, for messages), C{follow_link},
C{copy_uid_gid}, C{no_overwrite}, C{own_root} (extract: C{path} itself
takes the owner and mode of the archive's C{.}), and C{spec} (the runtime's wire spec,
for a container that is not running) or C{pid} (its init process when it
runs). Until it comes the helper only waits, so the daemon starts one
ahead of need; end of input before it dismisses the helper.

Entering: a running (or paused) container's mount namespace is joined with
setns (the root and working directory become the container's, with its
volumes, binds and tmpfs as it sees them); for a stopped one the helper
unshares a private mount namespace, mounts the root filesystem and the
bind mounts (volumes) on a directory it makes under WORKDIR the way the
runtime does, and chroots into it. Nothing is mounted in the host's
namespace; the mounts go with the process. Once inside, every path is
resolved by the kernel within the container's root, so no symlink there
can reach a host file. Modules are all imported before entering and
imports are refused after it: the container's files are never Python code
to this process, and no name service lookup (which loads libraries) runs.

Descriptors: 0 the job, then the archive to extract, 1 the archive
produced, 2 log text, 3 status (JSON lines: C{{"stat": {...}}} first for stat and
archive, then C{{"ok": true}} or C{{"error": KIND, "message": ...}} with
KIND "not_found", "invalid", "precondition", "exhausted", "cancelled" or
"internal").

Extract is all or nothing: the archive goes into a staging directory
inside the destination (same filesystem), and entries move into place
(renames) only once the whole archive was read and checked; a broken
archive, a conflict or SIGTERM (the client went away) removes the staging
directory and changes nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import stat
import sys
from typing import IO, TYPE_CHECKING, Any, NoReturn

from ross.engine.layers.apply import extract_archive
from ross.engine.runtime import linux, userns
from ross.engine.runtime.container import StartError, mount_storage
from ross.errors import FailedPrecondition, InvalidArgument, NotFound, RossError
from ross.tarwrite import FdSink, write_tree
from ross.engine.fsutil import remove_tree

if TYPE_CHECKING:
    from ross.engine.runtime.wire import Storage

STATUS_FD = 3
STAGING_PREFIX = ".ross-cp-"
_CHUNK = 1 << 20
_PIPE_SIZE = 1 << 20
_F_SETPIPE_SZ = 1031


class Cancelled(BaseException):
    """SIGTERM: the client went away."""


class _NoImports:
    """A meta path finder that refuses every import (after entering)."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> NoReturn:
        raise ImportError(f"import of {name} refused inside the container's filesystem")


def _status(message: dict[str, Any]) -> None:
    os.write(STATUS_FD, json.dumps(message).encode() + b"\n")


# ---------------------------------------------------------------- entering


def enter(workdir: str, pid: int, spec: Storage | None) -> None:
    """
    Make the container's root this process's root (see the module
    docstring): the mount namespace of its init process C{pid}, or its
    storage mounted as C{spec} says.
    """
    # Never dumpable: once in the container's mount namespace, nothing
    # there may read this process's memory or fds.
    linux.prctl(linux.PR_SET_DUMPABLE, 0)
    if spec is None:
        namespace = os.open(f"/proc/{pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        users = os.open(f"/proc/{pid}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        own = os.fstat(users).st_ino != os.stat("/proc/self/ns/user").st_ino
        linux.setns(namespace, linux.CLONE_NEWNS)
        os.close(namespace)
        os.chdir("/")
        # A container with a user namespace of its own (--userns-remap):
        # its files are worked on as its root, who sees (and writes) the
        # owners as they are on disk.
        if own:
            userns.enter(users)
        os.close(users)
    else:
        root = os.path.join(workdir, f"{os.getpid()}")
        os.mkdir(root, 0o700)
        linux.unshare(linux.CLONE_NEWNS)
        linux.mount(None, "/", None, linux.MS_REC | linux.MS_PRIVATE)
        mount_storage(spec, root)
        os.chroot(root)
        os.chdir("/")
    sys.meta_path[:] = [_NoImports()]
    sys.path[:] = []


# ---------------------------------------------------------------- paths


def absolute(path: str) -> str:
    """
    C{path} as an absolute path in the container, cleaned, keeping a
    trailing C{/} or C{/.} (they mean "a directory" and "its contents").
    """
    cleaned = os.path.normpath("/" + path)
    if cleaned.startswith("//"):
        cleaned = cleaned[1:]
    if path.endswith("/.") or path == ".":
        return cleaned.rstrip("/") + "/."
    if path.endswith("/") and cleaned != "/":
        return cleaned + "/"
    return cleaned


def _split(path: str) -> tuple[str, str]:
    """Directory and last entry of C{path} (C{/.} keeps "." as the entry)."""
    if path.endswith("/."):
        return path[:-2] or "/", "."
    trimmed = path.rstrip("/") or "/"
    if trimmed == "/":
        return "/", "."
    head, _, base = trimmed.rpartition("/")
    return head or "/", base


def _not_found(path: str, ref: str) -> NotFound:
    return NotFound(f"Could not find the file {path.rstrip('/') if path != '/' else path} in container {ref}")


def resolve_parent(path: str) -> tuple[str, str]:
    """
    C{path} with its directory resolved (symlinks followed, inside the
    container's root since it is this process's root) and its last entry
    not: (resolved path, last entry).
    """
    directory, base = _split(path)
    real = os.path.realpath(directory)
    if base == ".":
        return real, base
    return (real.rstrip("/") + "/" + base), base


def stat_path(path: str, ref: str) -> tuple[str, os.stat_result, dict[str, Any]]:
    """
    (resolved path, lstat, stat message) of C{path}, as docker's
    StatPath: the last component is not followed; a symlink's target is
    given fully resolved.
    """
    resolved, _ = resolve_parent(path)
    try:
        st = os.lstat(resolved + ("/" if path.endswith("/") and not path.endswith("/.") else ""))
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path, ref) from None
    link_target = os.path.realpath(resolved) if stat.S_ISLNK(st.st_mode) else ""
    name = "/" if path == "/" else _split(path)[1]
    message = {"name": name, "size": st.st_size, "mode": st.st_mode, "mtime_ns": st.st_mtime_ns,
               "link_target": link_target}
    return resolved, st, message


# ---------------------------------------------------------------- archive


def _out() -> FdSink:
    """The tar's way out: fd 1, its pipe grown when it can be."""
    try:
        fcntl.fcntl(1, _F_SETPIPE_SZ, _PIPE_SIZE)
    except OSError:
        # A smaller pipe (or not a pipe) only costs speed.
        pass
    return FdSink(1)


# Kernel filesystems a running container has mounted there: listed, not
# descended into (their files are not the container's; docker's archive of
# the root filesystem has them empty too).
_VIRTUAL = ("/proc", "/sys", "/dev")


def _virtual(path: str, st: os.stat_result) -> bool:
    return path in _VIRTUAL and st.st_dev != os.lstat("/").st_dev


def archive(job: dict[str, Any]) -> None:
    """CopyFrom: the stat, then the tar of the path (docker's rebase rules)."""
    path, ref = job["path"], job["ref"]
    resolved, st, message = stat_path(path, ref)
    if job.get("follow_link") and stat.S_ISLNK(st.st_mode):
        target = message["link_target"]
        if path.endswith("/.") and not target.endswith("/."):
            target = target.rstrip("/") + "/."
        resolved, st, followed = stat_path(target, ref)
        message = dict(followed, name=message["name"])
    _status({"stat": message})
    if job["op"] == "stat":
        return
    name = _split(path)[1] if not path.endswith("/.") else "."
    if resolved.endswith("/."):
        resolved = resolved[:-2] or "/"
    out = _out()
    write_tree(resolved or "/", name, out, prune=_virtual)
    out.flush()


# ---------------------------------------------------------------- extract


def _conflicts(staging: str, dest: str, shown: str) -> None:
    """
    InvalidArgument when an entry would replace a directory with a
    non-directory or the reverse (docker's NoOverwriteDirNonDir).
    Iterative, as L{_move}.
    """
    pending = [(staging, dest, shown)]
    while pending:
        staging, dest, shown = pending.pop()
        for name in os.listdir(staging):
            new = os.lstat(f"{staging}/{name}")
            try:
                old = os.lstat(f"{dest}/{name}")
            except FileNotFoundError:
                continue
            where = shown.rstrip("/") + "/" + name
            if stat.S_ISDIR(old.st_mode) and not stat.S_ISDIR(new.st_mode):
                raise InvalidArgument(f'cannot overwrite directory "{where}" with non-directory')
            if not stat.S_ISDIR(old.st_mode) and stat.S_ISDIR(new.st_mode):
                raise InvalidArgument(f'cannot overwrite non-directory "{where}" with directory')
            if stat.S_ISDIR(new.st_mode):
                pending.append((f"{staging}/{name}", f"{dest}/{name}", where))


def _move(staging: str, dest: str) -> None:
    """
    Move what C{staging} holds into C{dest}: new entries and non-directories
    by rename (atomic replace), directories that exist on both sides merged,
    taking the archive's owner, mode and times as docker's extraction does
    (once what they hold is in place). Iterative: an archive or a
    container's tree can be deeper than Python's recursion limit.
    """
    pending: list[tuple[str, str]] = [(staging, dest)]
    merged: list[tuple[str, os.stat_result]] = []
    while pending:
        staging, dest = pending.pop()
        for name in os.listdir(staging):
            source, target = f"{staging}/{name}", f"{dest}/{name}"
            new = os.lstat(source)
            try:
                old = os.lstat(target)
            except FileNotFoundError:
                os.rename(source, target)
                continue
            if stat.S_ISDIR(new.st_mode) and stat.S_ISDIR(old.st_mode):
                pending.append((source, target))
                merged.append((target, new))
                continue
            if stat.S_ISDIR(old.st_mode):
                remove_tree(target)
            elif stat.S_ISDIR(new.st_mode):
                os.unlink(target)
            elif stat.S_ISREG(old.st_mode):
                _replace_file(source, target)
                continue
            os.rename(source, target)
    # Deepest first: a directory's times after its entries moved in.
    for target, new in reversed(merged):
        os.chown(target, new.st_uid, new.st_gid)
        os.chmod(target, stat.S_IMODE(new.st_mode))
        os.utime(target, ns=(new.st_atime_ns, new.st_mtime_ns))


#: Files replaced, held open (O_PATH) until the helper exits.
_replaced: list[int] = []


def _replace_file(source: str, target: str) -> None:
    """
    Put C{source} in the place of the regular file C{target} as docker
    does, removing the old one first. A rename over it would be atomic,
    but slow: ext4 then writes out the new file's data before the rename
    returns (its auto_da_alloc), and frees the old one's blocks (together
    60 ms for 50 MB here). The old file is held until this process exits,
    so its blocks are freed after the copy was reported done.
    """
    try:
        _replaced.append(os.open(target, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC))
    except OSError:
        # Only the speed of the copy depends on it.
        pass
    os.unlink(target)
    os.rename(source, target)


def _writable(dest: str) -> None:
    """docker's refusals: a read-only root filesystem or volume."""
    if not os.statvfs(dest).f_flag & os.ST_RDONLY:
        return
    if os.stat(dest).st_dev == os.stat("/").st_dev:
        raise FailedPrecondition("container rootfs is marked read-only")
    raise FailedPrecondition("mounted volume is marked read-only")


def extract(job: dict[str, Any], source: IO[bytes]) -> None:
    """CopyTo: the archive on fd 0 into the directory C{path}."""
    path, ref = job["path"], job["ref"]
    dest = os.path.realpath(path)
    try:
        st = os.stat(dest)
    except (FileNotFoundError, NotADirectoryError):
        raise _not_found(path, ref) from None
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgument("extraction point is not a directory")
    _writable(dest)
    staging = f"{dest.rstrip('/')}/{STAGING_PREFIX}{os.urandom(8).hex()}"
    try:
        # Inside the try: a SIGTERM right after it must still remove it.
        os.mkdir(staging, 0o700)
        owner = None if job.get("copy_uid_gid") else (0, 0)
        try:
            extract_archive(source, staging, owner)
        except InvalidArgument as e:
            raise InvalidArgument(f"Error processing tar file: {e}") from None
        # Past this point the copy completes: a cancellation now would leave
        # it half moved.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
        if job.get("no_overwrite"):
            _conflicts(staging, dest, dest)
        _move(staging, dest)
        if job.get("own_root"):
            # The archive's "." entry, which the staging directory took.
            root = os.lstat(staging)
            os.chown(dest, root.st_uid, root.st_gid)
            os.chmod(dest, stat.S_IMODE(root.st_mode))
    finally:
        remove_tree(staging, ignore_errors=True)


# ---------------------------------------------------------------- main


_KINDS: list[tuple[type[BaseException], str]] = [
    (NotFound, "not_found"), (InvalidArgument, "invalid"), (FailedPrecondition, "precondition"),
]


def _describe(e: OSError) -> str:
    return f"{e.strerror or e}: {e.filename}" if e.filename else str(e.strerror or e)


def run(workdir: str, job: dict[str, Any], stdin: IO[bytes]) -> int:
    """Do C{job}, reporting on fd 3; the exit status."""
    def terminate(signum: int, frame: object) -> None:
        raise Cancelled()

    signal.signal(signal.SIGTERM, terminate)
    try:
        try:
            enter(workdir, job["pid"], job.get("spec"))
        except (OSError, StartError) as e:
            raise FailedPrecondition(f"cannot enter the filesystem of container {job['ref']}: {e}") from None
        job["path"] = absolute(job["path"])
        if job["op"] == "extract":
            extract(job, stdin)
        else:
            archive(job)
    except Cancelled:
        _status({"error": "cancelled", "message": "cancelled"})
        return 1
    except RossError as e:
        kind = next((k for t, k in _KINDS if isinstance(e, t)), "invalid")
        _status({"error": kind, "message": e.message})
        return 1
    except BrokenPipeError:
        _status({"error": "cancelled", "message": "the receiver went away"})
        return 1
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            _status({"error": "exhausted", "message": f"no space left on device: {e.filename or ''}".rstrip(": ")})
        else:
            _status({"error": "invalid", "message": _describe(e)})
        return 1
    except Exception as e:
        # A bug: reported without a traceback, whose source lines would be
        # read from the container's files by now.
        _status({"error": "internal", "message": f"{type(e).__name__}: {e}"})
        return 1
    _status({"ok": True})
    return 0


def main() -> NoReturn:
    """
    Wait for the job (the first line on stdin; none: dismissed), then do it.
    """
    # Buffered: reads of whole chunks, not of what the pipe holds at the
    # moment (the extraction's cost is per chunk; about twice as fast).
    stdin = open(0, "rb", buffering=_CHUNK, closefd=False)
    line = stdin.readline()
    if not line:
        sys.exit(0)
    code = run(sys.argv[1], json.loads(line), stdin)
    # Everything else went out unbuffered (the status with os.write, the
    # tar through FdSink): the interpreter's teardown, ~10 ms of freeing,
    # has nothing left to do, and the copy's caller waits for this exit.
    sys.stderr.flush()
    os._exit(code)
