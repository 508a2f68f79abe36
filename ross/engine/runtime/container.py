# -*- test-case-name: ross.test.integration.test_runtime -*-
"""
The container's side of the shim: code that runs in a child the shim
forked, sets up the container around itself and execs the command.

L{run_init} is the container's PID 1 (the shim unshared the PID namespace
before forking it): it joins the cgroups, unshares the mount, UTS, IPC,
cgroup and network namespaces (or joins a pod sandbox's network, IPC and
UTS namespaces), mounts the root filesystem and /proc, /dev,
/sys (with the container's cgroups, read-only), /etc/{hostname,hosts,
resolv.conf}, bind and tmpfs mounts, masks kernel paths, pivots, checks
from inside that the masks hold, then tells the shim it is ready and waits
for "go" before it execs (so clients can attach before the first byte of
output). Every path inside the root is the image's to shape, so each is
resolved inside the root (L{open_in_root}) and mounts go onto the opened
fds. L{run_exec} joins a running container (cgroups, then namespaces) for
an exec session. Both end in L{_become}: a session keyring of its own,
user, capabilities, no_new_privs, stdio, the seccomp filter the daemon
compiled, exec.

Talking to the shim: a SOCK_SEQPACKET socket, C{b"R"} when ready (with the
PTY master attached when there is a TTY), C{b"E<code> <message>"} on
failure (code 125, 126 or 127), and nothing at all on success: the socket
is close-on-exec, so the shim reads EOF once the command runs.

Stdlib only, and every module needed is imported before the fork: after
pivot_root the host's Python library is out of reach.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import resource
import signal
import socket
import stat
import struct

from ross.engine import etcfiles
from ross.engine.runtime import cgroups, linux, userns
from ross.engine.runtime.linux import (
    MS_BIND, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_PRIVATE, MS_RDONLY, MS_REC,
    MS_REMOUNT, MS_SHARED, MS_SLAVE, MS_STRICTATIME, mount,
)

# Not imported at run time: the shim's start pays for every import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ross.engine.runtime.wire import CgroupGroup, Mount, Process, Spec, Storage

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# docker's masked and read-only paths (moby oci/defaults.go).
MASKED_PATHS = (
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
)
READONLY_PATHS = ("/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger")

_DEVICES = (("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0))
_DEV_LINKS = (("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"),
              ("stderr", "/proc/self/fd/2"), ("ptmx", "pts/ptmx"), ("core", "/proc/kcore"))

_PROPAGATION = {  # mount_setattr propagation; recursion is AT_RECURSIVE
    "private": MS_PRIVATE, "rprivate": MS_PRIVATE, "slave": MS_SLAVE,
    "rslave": MS_SLAVE, "shared": MS_SHARED, "rshared": MS_SHARED,
}

# statvfs flags -> the mount flags a read-only remount must keep.
_KEEP_FLAGS = ((os.ST_NOSUID, MS_NOSUID), (os.ST_NODEV, MS_NODEV), (os.ST_NOEXEC, MS_NOEXEC),
               (os.ST_NOATIME, linux.MS_NOATIME), (os.ST_NODIRATIME, linux.MS_NODIRATIME),
               (os.ST_RELATIME, linux.MS_RELATIME))


class StartError(Exception):
    """
    The container's process could not be started; C{code} is docker's exit
    status for it (125 runtime failure, 126 cannot invoke, 127 not found).
    """

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# ---------------------------------------------------------------- paths
#
# Every path inside the container's root is image-controlled: a symlink
# there must never lead a mount, a mask or a file write to the host. Paths
# are resolved component by component from an fd of the root, each
# component opened with O_NOFOLLOW and symlinks re-resolved inside the
# root by hand (".." stops at the root), and mounts go onto the opened fd
# itself (move_mount, or mount on /proc/self/fd/N), so nothing can be
# swapped between the check and the use.

_O_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 40
# Files under /proc a bind mount may cover (runc allows these for lxcfs).
PROC_BIND_ALLOWED = (
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps",
    "/proc/uptime", "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev",
    "/proc/sys/kernel/ns_last_pid",
)


def _parts(path: str) -> list[str]:
    return [p for p in path.split("/") if p and p != "."]


def open_in_root(rootfd: int, path: str, create: str = "", refuse_kernel_fs: bool = False) -> int:
    """
    An O_PATH fd of C{path} resolved inside the directory C{rootfd} as if
    it were "/": symlinks are followed, but neither they nor ".." lead out
    of it, and nothing outside is ever looked at. With C{create} "dir" or
    "file", missing components are made as directories and the last one
    as C{create}. With C{refuse_kernel_fs}, a path that resolves to or
    through /proc or /sys is a StartError (mount targets), before anything
    is made.
    """
    queue = _parts(path)
    queue.reverse()
    stack = [os.dup(rootfd)]
    names: list[str] = []  # the resolved path: stack[1:]'s names
    links = 0
    try:
        while queue:
            part = queue.pop()
            if part == "..":
                if len(stack) > 1:
                    os.close(stack.pop())
                    names.pop()
                continue
            if refuse_kernel_fs and not names and part in ("proc", "sys"):
                raise StartError(125, f"invalid mount config: {path!r} leads inside /{part} in the container")
            current = stack[-1]
            try:
                fd = os.open(part, _O_PATH, dir_fd=current)
            except FileNotFoundError:
                if not create:
                    raise
                try:
                    if queue or create == "dir":
                        os.mkdir(part, 0o755, dir_fd=current)
                    else:
                        os.close(os.open(part, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW
                                         | os.O_CLOEXEC, 0o644, dir_fd=current))
                except FileExistsError:
                    pass  # made meanwhile: look again
                queue.append(part)
                continue
            mode = os.fstat(fd).st_mode
            if stat.S_ISLNK(mode):
                target = os.readlink("", dir_fd=fd)
                os.close(fd)
                links += 1
                if links > _MAX_LINKS:
                    raise StartError(125, f"too many levels of symbolic links in {path}")
                if target.startswith("/"):
                    for extra in stack[1:]:
                        os.close(extra)
                    del stack[1:]
                    names.clear()
                queue.extend(reversed(_parts(target)))
                continue
            if queue and not stat.S_ISDIR(mode):
                os.close(fd)
                raise StartError(125, f"{path}: not a directory in the container")
            stack.append(fd)
            names.append(part)
        return stack.pop()
    finally:
        for fd in stack:
            os.close(fd)


def _real_dir(rootfd: int, name: str) -> int:
    """
    An O_PATH fd of the directory C{name} right under the root, where the
    kernel's filesystems go: whatever else the image has there (a symlink,
    a file) is replaced by an empty directory, as docker's init layer does.
    """
    try:
        st = os.stat(name, dir_fd=rootfd, follow_symlinks=False)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISDIR(st.st_mode):
        os.unlink(name, dir_fd=rootfd)
        st = None
    if st is None:
        os.mkdir(name, 0o755, dir_fd=rootfd)
    return os.open(name, _O_PATH | os.O_DIRECTORY, dir_fd=rootfd)


def _fd_path(fd: int) -> str:
    return f"/proc/self/fd/{fd}"


def _mount_on(fd: int, source: str, fstype: str, flags: int = 0, data: str | None = None) -> None:
    """
    Mount a new C{fstype} filesystem on what C{fd} is open on.
    """
    mount(source, _fd_path(fd), fstype, flags, data)


def _bind(source_dirfd: int, source: str, target_fd: int, recursive: bool = True, readonly: bool = False,
          propagation: int = MS_PRIVATE, idmap: int = -1, readonly_submounts: bool = True) -> None:
    """
    Bind C{source} (relative to C{source_dirfd}; "" for the fd itself) on
    C{target_fd}: the copy is made read-only (its submounts too unless not
    C{readonly_submounts}) and given its propagation while still detached,
    then attached to the checked target in one step.
    With C{idmap} (a user namespace fd), it is idmapped through it where
    its filesystem allows (L{userns.idmap}).
    """
    flags = linux.OPEN_TREE_CLONE | (linux.AT_RECURSIVE if recursive else 0)
    if not source:
        flags |= linux.AT_EMPTY_PATH
    tree = linux.open_tree(source_dirfd, source, flags)
    try:
        if idmap >= 0:
            try:
                userns.idmap(tree, idmap, recursive)
            except OSError as e:
                if not userns.unsupported(e):
                    raise
        recurse = linux.AT_RECURSIVE if recursive else 0
        linux.mount_setattr(tree, recurse, attr_set=linux.MOUNT_ATTR_RDONLY if readonly and readonly_submounts else 0,
                            propagation=propagation)
        if readonly and not readonly_submounts:
            linux.mount_setattr(tree, 0, attr_set=linux.MOUNT_ATTR_RDONLY)
        linux.move_mount(tree, target_fd)
    finally:
        os.close(tree)


def _make_readonly(fd: int) -> None:
    """
    A read-only bind of the mount tree at C{fd} on itself.
    """
    _bind(fd, "", fd, readonly=True)


def _reopen(parent: int, name: str) -> int:
    """
    An fd of the directory C{name} in C{parent} that sees what was just
    mounted on it (the fd the mount went onto keeps the object under the
    mount). Only for directories nothing of the container can reach yet.
    """
    return os.open(name, _O_PATH | os.O_DIRECTORY, dir_fd=parent)


def _kept_flags(path: str) -> int:
    vfs = os.statvfs(path)
    flags = 0
    for st_flag, ms_flag in _KEEP_FLAGS:
        if vfs.f_flag & st_flag:
            flags |= ms_flag
    return flags


def _remount_ro(path: str) -> None:
    mount(None, path, None, MS_BIND | MS_REMOUNT | MS_RDONLY | _kept_flags(path))


# ---------------------------------------------------------------- set-up


def _mount_rootfs(spec: Storage, root: str, remap: userns.Container | None = None) -> int:
    """
    Mount the snapshot on C{root} (the shim's own directory); the fd of the
    container's root it returns is where every later path starts. With
    C{remap}, its layers are idmapped through the user namespace.
    """
    if not spec["rootfs"]:
        raise StartError(125, "no root filesystem mounts in the spec")
    rootfd = -1
    for m in spec["rootfs"]:
        flags, data = linux.mount_options(m["options"])
        bind = m["type"] == "bind" or bool(flags & MS_BIND)
        if m["target"] in ("", "/"):
            if remap is not None:
                target = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                try:
                    userns.mount_root(m, target, remap)
                finally:
                    os.close(target)
            elif bind:
                mount(m["source"], root, None, MS_BIND | MS_REC)
                if flags & MS_RDONLY:
                    _remount_ro(root)
            else:
                mount(m["source"], root, m["type"], flags, data or None)
            rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            continue
        if rootfd < 0:
            raise StartError(125, "the first root filesystem mount must be at /")
        target = open_in_root(rootfd, m["target"], create="dir")
        try:
            if bind:
                _bind(linux.AT_FDCWD, m["source"], target, readonly=bool(flags & MS_RDONLY),
                      idmap=-1 if remap is None else remap.fd)
            else:
                _mount_on(target, m["source"], m["type"], flags, data or None)
        finally:
            os.close(target)
    # pivot_root refuses a new root under a shared mount; nothing here is.
    mount(None, root, None, MS_PRIVATE | MS_REC)
    return rootfd


def _isolate(root: str, keep_peers: bool) -> None:
    """
    Cut the container's new mount namespace off from the host's, so what
    is mounted here never shows there: every mount becomes a slave of the
    host's. When a bind is to propagate both ways, only the root and the
    mount the container's root is made on become slaves: the host's shared
    mounts stay peers, so the bind of one shares what either side mounts
    under it (runc's root propagation, the parent of the root made so).
    The old root is made a slave again before it is let go (L{_pivot}).
    """
    if not keep_peers:
        mount(None, "/", None, MS_REC | MS_SLAVE)
        return
    mount(None, "/", None, MS_SLAVE)
    mount(None, _mount_point(os.path.dirname(os.path.realpath(root))), None, MS_SLAVE)


def _mount_point(path: str) -> str:
    """
    The mount point of the mount C{path} (a real path) is on.
    """
    best = "/"
    for point in linux.mount_points():
        if (path == point or path.startswith(point.rstrip("/") + "/")) and len(point) > len(best):
            best = point
    return best


def _mount_dev(rootfd: int, tty_gid: int = 5, shm_size: int = 0, shm: int = -1) -> int:
    """
    A fresh /dev (tmpfs with the standard nodes, devpts, shm, mqueue);
    returns an fd of it. C{tty_gid} is the host gid of the container's
    tty group; C{shm_size} the bytes of /dev/shm (0: 64 MiB, docker's).
    C{shm}, an fd of the host's /dev/shm, is bound there instead (IPC mode
    host, docker's); -2 leaves /dev/shm out (IPC mode none).
    """
    under = _real_dir(rootfd, "dev")
    try:
        _mount_on(under, "tmpfs", "tmpfs", MS_NOSUID | MS_STRICTATIME, "mode=755,size=65536k")
        dev = _reopen(rootfd, "dev")
    finally:
        os.close(under)
    for name, major, minor in _DEVICES:
        os.mknod(name, 0o666 | stat.S_IFCHR, os.makedev(major, minor), dir_fd=dev)
    for name, target in _DEV_LINKS:
        os.symlink(target, name, dir_fd=dev)
    for name, fstype, flags, data in (
            ("pts", "devpts", MS_NOSUID | MS_NOEXEC, f"newinstance,ptmxmode=0666,mode=0620,gid={tty_gid}"),
            ("shm", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"mode=1777,size={shm_size or 64 << 20}"),
            ("mqueue", "mqueue", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)):
        if name == "shm" and shm == -2:
            continue
        os.mkdir(name, 0o755, dir_fd=dev)
        fd = os.open(name, _O_PATH | os.O_DIRECTORY, dir_fd=dev)
        try:
            if name == "shm" and shm >= 0:
                # The mount on top there alone (what the host's programs
                # see; a recursive clone of it is refused by now).
                _bind(shm, "", fd, recursive=False)
            else:
                _mount_on(fd, name, fstype, flags, data)
        finally:
            os.close(fd)
    return dev


def _mount_system(rootfd: int, privileged: bool, groups: list[CgroupGroup]) -> None:
    """
    /proc, /sys (read-only unless privileged) and the container's cgroups
    under /sys/fs/cgroup, seen from its own cgroup namespace.
    """
    proc = _real_dir(rootfd, "proc")
    try:
        _mount_on(proc, "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    finally:
        os.close(proc)
    under = _real_dir(rootfd, "sys")
    try:
        _mount_on(under, "sysfs", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC | (0 if privileged else MS_RDONLY))
        sys_ = _reopen(rootfd, "sys")
    finally:
        os.close(under)
    try:
        fs = os.open("fs", _O_PATH | os.O_DIRECTORY, dir_fd=sys_)
    except FileNotFoundError:
        return
    finally:
        os.close(sys_)
    try:
        _mount_cgroups(fs, groups, privileged)
    finally:
        os.close(fs)


def _mount_cgroups(fs: int, groups: list[CgroupGroup], privileged: bool) -> None:
    """
    The container's cgroup hierarchies on /sys/fs/cgroup (C{fs} is an fd
    of /sys/fs), as docker lays them out:
    one cgroup2 mount on a unified host, else a tmpfs with a directory per
    v1 hierarchy (and the v2 one). Read-only unless privileged: the
    container reads its limits, it does not set them.
    """
    flags = MS_NOSUID | MS_NODEV | MS_NOEXEC
    readonly = 0 if privileged else MS_RDONLY
    if not groups:
        return
    at = os.open("cgroup", _O_PATH | os.O_DIRECTORY, dir_fd=fs)
    try:
        if len(groups) == 1 and groups[0]["version"] == 2:
            _mount_on(at, "cgroup2", "cgroup2", flags | readonly)
            return
        _mount_on(at, "tmpfs", "tmpfs", flags, "mode=755,size=64k")
    finally:
        os.close(at)
    top = _reopen(fs, "cgroup")
    try:
        for group in groups:
            name = os.path.basename(group["mount"])
            os.mkdir(name, 0o755, dir_fd=top)
            fd = os.open(name, _O_PATH | os.O_DIRECTORY, dir_fd=top)
            try:
                if group["version"] == 1:
                    options = group.get("options") or ",".join(group["controllers"])
                    _mount_on(fd, "cgroup", "cgroup", flags | readonly, options)
                else:
                    _mount_on(fd, "cgroup2", "cgroup2", flags | readonly)
            finally:
                os.close(fd)
            for controller in name.split(","):
                if controller != name:
                    os.symlink(name, controller, dir_fd=top)
        linux.mount_setattr(top, 0, attr_set=linux.MOUNT_ATTR_RDONLY)
    finally:
        os.close(top)


def _mount_etc(spec: Spec, rootfd: int, state_dir: str, mounted: set[str]) -> None:
    """
    /etc/hostname, /etc/hosts and /etc/resolv.conf, but for those of
    C{mounted} (a mount of the container's own there); and docker's empty
    /.dockerenv, by which programs tell they run in a container.
    """
    try:
        os.close(open_in_root(rootfd, "/.dockerenv", create="file"))
    except (OSError, StartError):
        # (A root the image made read-only there, or a directory by that
        # name: the container goes without it.)
        pass
    resolv = spec["resolv_conf"]
    if resolv is None:
        resolv = etcfiles.resolv_conf_for(etcfiles.read_host_resolv(), spec["network"])
    files = {"hostname": (spec["hostname"] or spec["id"][:12]) + "\n", "hosts": spec["hosts"],
             "resolv.conf": resolv}
    for name, content in files.items():
        if "/etc/" + name in mounted:
            continue
        source = f"{state_dir}/{name}"
        # 0644 whatever the umask: root in the container may change these,
        # its other users may not.
        fd = os.open(source, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.fchmod(fd, 0o644)
            os.write(fd, content.encode())
        finally:
            os.close(fd)
        try:
            target = open_in_root(rootfd, "/etc/" + name, create="file")
        except (OSError, StartError):
            if "/etc" in mounted:
                # A read-only mount of the container's own on /etc that
                # lacks the file: it keeps /etc as the mount has it.
                continue
            raise
        try:
            # Read-only with the root (--read-only), as docker's.
            _bind(linux.AT_FDCWD, source, target, recursive=False, readonly=bool(spec["readonly"]))
        finally:
            os.close(target)


def _mount_user(mounts: list[Mount], rootfd: int, remap: userns.Container | None = None) -> None:
    # Parents before children, as docker sorts them.
    for m in sorted(mounts, key=lambda m: len(_parts(m["target"]))):
        # The target may not be, nor pass through, /proc or /sys, however
        # the image's links lead there (runc's rule, with its lxcfs files).
        refuse = os.path.normpath(m["target"]) not in PROC_BIND_ALLOWED
        if m["type"] == "bind":
            source = m["source"]
            if not os.path.exists(source):
                raise StartError(125, f"invalid mount config for type \"bind\": bind source path does not exist: {source}")
            directory = os.path.isdir(source)
            target = open_in_root(rootfd, m["target"], create="dir" if directory else "file",
                                  refuse_kernel_fs=refuse)
            try:
                _same_kind(target, directory, m["target"], f"bind source {source}")
                _bind(linux.AT_FDCWD, source, target, recursive=m.get("recursive", True),
                      readonly=bool(m.get("readonly")),
                      propagation=_PROPAGATION.get(m.get("propagation") or "rprivate", MS_PRIVATE),
                      idmap=-1 if remap is None else remap.fd,
                      readonly_submounts=m.get("recursive_readonly", True))
            finally:
                os.close(target)
        elif m["type"] == "tmpfs":
            opts = [o for o in m.get("options", ()) if o]
            if m.get("size"):
                opts.append(f"size={m['size']}")
            opts.append(f"mode={m.get('mode') or 0o1777:o}")
            flags, data = linux.mount_options(opts)
            target = open_in_root(rootfd, m["target"], create="dir", refuse_kernel_fs=True)
            try:
                _same_kind(target, True, m["target"], "a tmpfs")
                _mount_on(target, "tmpfs", "tmpfs",
                          flags | MS_NOSUID | MS_NODEV | (MS_RDONLY if m.get("readonly") else 0), data)
            finally:
                os.close(target)
        else:
            raise StartError(125, f"unknown mount type {m['type']!r} for {m['target']}")


def _same_kind(target_fd: int, directory: bool, target: str, what: str) -> None:
    """
    StartError unless the mount target open as C{target_fd} is a directory
    when C{directory}, and else not one: the image's file where a volume
    goes, named, rather than the kernel's EINVAL.
    """
    if stat.S_ISDIR(os.fstat(target_fd).st_mode) != directory:
        kind = "a directory" if directory else "a file"
        raise StartError(125, f"invalid mount config: cannot mount {what} ({kind}) on {target}: "
                              f"{target} is {'not ' if directory else ''}a directory in the container")


def _make_devices(rootfd: int, devices: list[tuple[str, str, int, int, int, int, int, str, str]],
                  in_userns: bool) -> None:
    """
    The --device nodes, made in the container at their paths (inside its
    root, whatever its links say) with the host node's numbers, mode and
    owner. In a user namespace, where no node can be made, the host's node
    is bound on an empty file instead, as runc does.
    """
    for path, kind, major, minor, mode, uid, gid, _, source in devices:
        parent = open_in_root(rootfd, os.path.dirname(path), create="dir", refuse_kernel_fs=True)
        name = os.path.basename(path)
        try:
            try:
                node = os.stat(name, dir_fd=parent, follow_symlinks=False)
            except FileNotFoundError:
                pass
            else:
                if stat.S_ISDIR(node.st_mode):
                    raise StartError(125, f"cannot make device {path!r} in the container: a directory is there")
                os.unlink(name, dir_fd=parent)
            if in_userns:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                                 dir_fd=parent))
                target = os.open(name, _O_PATH | os.O_NOFOLLOW, dir_fd=parent)
                try:
                    _bind(linux.AT_FDCWD, source, target, readonly=False, propagation=MS_PRIVATE)
                finally:
                    os.close(target)
                continue
            os.mknod(name, mode | (stat.S_IFCHR if kind == "c" else stat.S_IFBLK), os.makedev(major, minor),
                     dir_fd=parent)
            os.chown(name, uid, gid, dir_fd=parent, follow_symlinks=False)
        finally:
            os.close(parent)


def mount_storage(spec: Storage, root: str) -> None:
    """
    The container's root filesystem and bind mounts (volumes) on C{root},
    read-only where the spec says so, without /proc, /dev, /sys, tmpfs or
    the runtime's /etc files: its files as ``ross cp`` sees them while it
    is not running (a tmpfs holds nothing then; docker's cp copies under
    its mount point too).
    """
    rootfd = _mount_rootfs(spec, root)
    try:
        _mount_user([m for m in spec["mounts"] if m["type"] == "bind"], rootfd)
    finally:
        os.close(rootfd)
    if spec["readonly"]:
        _remount_ro(root)


def _mask(rootfd: int, dev: int, masked: list[str], readonly: list[str]) -> None:
    """
    Cover the masked paths (/dev/null on files, an empty read-only tmpfs
    on directories) and make the read-only paths so.
    """
    for path in masked:
        try:
            fd = open_in_root(rootfd, path)
        except (FileNotFoundError, StartError):
            continue
        try:
            if stat.S_ISDIR(os.fstat(fd).st_mode):
                _mount_on(fd, "tmpfs", "tmpfs", MS_RDONLY)
            else:
                _bind(dev, "null", fd, recursive=False)
        finally:
            os.close(fd)
    for path in readonly:
        try:
            fd = open_in_root(rootfd, path)
        except (FileNotFoundError, StartError):
            continue
        try:
            _make_readonly(fd)
        finally:
            os.close(fd)


def _verify_masks(privileged: bool, masked: list[str], readonly: list[str]) -> None:
    """
    From inside, after the pivot: /proc and /sys are the kernel's, every
    masked path is covered and every read-only path is read-only; else the
    start fails, whatever the set-up above believes it did.
    """
    for path, magic in (("/proc", linux.PROC_SUPER_MAGIC), ("/sys", linux.SYSFS_MAGIC)):
        fd = os.open(path, _O_PATH | os.O_DIRECTORY)
        try:
            if linux.fs_type(fd) != magic:
                raise StartError(125, f"{path} is not the kernel's {path[1:]} filesystem in the container")
        finally:
            os.close(fd)
    if privileged:
        return
    if not os.statvfs("/sys").f_flag & os.ST_RDONLY:
        raise StartError(125, "/sys is writable in the container")
    for path in masked:
        try:
            # Through links, as the mask went (inside the root).
            st = os.stat(path)
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            hidden = bool(os.statvfs(path).f_flag & os.ST_RDONLY) and not os.listdir(path)
        else:
            hidden = stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
        if not hidden:
            raise StartError(125, f"{path} is not masked in the container")
    for path in readonly:
        try:
            flags = os.statvfs(path).f_flag
        except FileNotFoundError:
            continue
        if not flags & os.ST_RDONLY:
            raise StartError(125, f"{path} is not read-only in the container")


def _paths(spec: Spec, privileged: bool) -> tuple[list[str], list[str]]:
    """
    The masked and read-only paths of a spec (docker's when it has none:
    one written before it said them).
    """
    if privileged:
        return [], []
    masked = spec.get("masked_paths")
    readonly = spec.get("readonly_paths")
    return (list(MASKED_PATHS) if masked is None else list(masked),
            list(READONLY_PATHS) if readonly is None else list(readonly))


def _set_sysctls(sysctls: list[list[str]], where: str, directory: int) -> None:
    """
    Write kernel parameters whose keys all begin with C{where} ("" or
    "net.") through C{directory}, an fd of the host's /proc/sys directory
    C{where} names: it shows the writer's network and IPC namespaces,
    which are now the container's.
    """
    for key, value in sysctls:
        try:
            fd = os.open(key[len(where):].replace(".", "/"), os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW,
                         dir_fd=directory)
        except OSError as e:
            raise StartError(125, f"cannot set sysctl {key}: {e.strerror}")
        try:
            os.write(fd, value.encode())
        except OSError as e:
            raise StartError(125, f"cannot set sysctl {key}={value}: {e.strerror}")
        finally:
            os.close(fd)


def _open_pty(dev: int, console: bool) -> tuple[int, int]:
    """
    A PTY of the container's own devpts instance (C{dev} is an fd of its
    /dev): (master, slave), the slave also bind-mounted on /dev/console
    for the main process.
    """
    pts = os.open("pts", _O_PATH | os.O_DIRECTORY, dir_fd=dev)
    try:
        if linux.fs_type(pts) != linux.DEVPTS_SUPER_MAGIC:
            raise StartError(125, "/dev/pts is not a devpts filesystem in the container")
        master = os.open("ptmx", os.O_RDWR | os.O_NOCTTY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pts)
    finally:
        os.close(pts)
    fcntl.ioctl(master, linux.TIOCSPTLCK, struct.pack("i", 0))
    slave = fcntl.ioctl(master, linux.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY)
    if console:
        os.close(os.open("console", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600, dir_fd=dev))
        target = os.open("console", _O_PATH, dir_fd=dev)
        try:
            _bind(slave, "", target, recursive=False)
        finally:
            os.close(target)
    return master, slave


def _loopback_up() -> None:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        ifr = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), linux.SIOCGIFFLAGS, ifr + b"\0" * 22)[:18])[1]
        fcntl.ioctl(s.fileno(), linux.SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | linux.IFF_UP) + b"\0" * 22)
    finally:
        s.close()


def _pivot(root: str) -> None:
    old = os.open("/", os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    new = os.open(root, os.O_DIRECTORY | os.O_RDONLY | os.O_CLOEXEC)
    os.fchdir(new)
    # pivot_root(".", ".") stacks the old root under the new one, so no
    # put_old directory is needed (and a read-only root works).
    linux.pivot_root(".", ".")
    os.fchdir(old)
    mount(None, ".", None, MS_SLAVE | MS_REC)
    linux.umount2(".", linux.MNT_DETACH)
    os.chdir("/")
    os.close(old)
    os.close(new)


# ---------------------------------------------------------------- users


#: The largest passwd or group file read; a longer one is read this far.
ACCOUNTS_LIMIT = 4 << 20


def _entries(path: str) -> list[list[str]]:
    """
    The fields of each line of the image's C{path} (passwd, group), none
    when it is missing or not a regular file: a FIFO or a device there
    (a hostile image's, or one a container made) must neither block the
    start or exec (its shim waits for it) nor stream forever.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        chunks = []
        size = 0
        while size < ACCOUNTS_LIMIT and (chunk := os.read(fd, 1 << 16)):
            chunks.append(chunk)
            size += len(chunk)
    except OSError:
        return []
    finally:
        os.close(fd)
    text = b"".join(chunks).decode("utf-8", "replace")
    return [line.split(":") for line in text.split("\n") if line.strip() and not line.startswith("#")]


#: The largest uid or gid a container's user may have (runc's).
MAX_ID = 2 ** 31 - 1


def resolve_user(user: str, extra_groups: list[str], passwd: str = "/etc/passwd",
                 group: str = "/etc/group") -> tuple[int, int, list[int], str]:
    """
    (uid, gid, supplementary gids, home) of a docker user string ("", "name",
    "uid", "name:group", "uid:gid") in the container's passwd and group files.
    The supplementary gids are the primary one, the groups that list the
    user, and C{extra_groups} (--group-add).
    """
    name, _, grp = (user or "0").partition(":")
    users = [e for e in _entries(passwd) if len(e) >= 7]
    groups = [e for e in _entries(group) if len(e) >= 4]
    entry = next((e for e in users if e[0] == name), None)
    if entry is None and name.isdigit():
        entry = next((e for e in users if e[2] == name), None)
        uid, gid, home, login = int(name), 0, "/", ""
        if entry is not None:
            gid, home, login = int(entry[3]), entry[5], entry[0]
    elif entry is None:
        raise StartError(125, f"unable to find user {name}: no matching entries in passwd file")
    else:
        uid, gid, home, login = int(entry[2]), int(entry[3]), entry[5], entry[0]
    if grp:
        gid = _group_id(grp, groups)
    # The primary group is a supplementary one too, as docker's processes
    # have it ("id" shows groups=0(root) there).
    supplementary = [gid] + [int(g[2]) for g in groups if login and login in g[3].split(",")]
    for extra in extra_groups:
        supplementary.append(_group_id(extra, groups))
    if not all(0 <= i <= MAX_ID for i in (uid, gid, *supplementary)):
        # The kernel's ids are 32 bits; runc's message.
        raise StartError(125, f"uids and gids must be in range 0-{MAX_ID}")
    return uid, gid, sorted(set(supplementary)), home or "/"


def _group_id(grp: str, groups: list[list[str]]) -> int:
    entry = next((g for g in groups if g[0] == grp), None)
    if entry is not None:
        return int(entry[2])
    if grp.isdigit():
        return int(grp)
    raise StartError(125, f"unable to find group {grp}: no matching entries in group file")


def _environment(process: Process, home: str, hostname: str) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in process["env"]:
        key, sep, value = item.partition("=")
        if key:
            env[key] = value
    env.setdefault("PATH", DEFAULT_PATH)
    env.setdefault("HOSTNAME", hostname)
    env.setdefault("HOME", home)
    if process["tty"]:
        env.setdefault("TERM", "xterm")
    return env


def _lookup(arg0: str, path: str) -> str:
    if "/" in arg0:
        return arg0
    for d in path.split(":"):
        candidate = os.path.join(d or ".", arg0)
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) and st.st_mode & 0o111:
            return candidate
    raise StartError(127, f'exec: "{arg0}": executable file not found in $PATH')


# ---------------------------------------------------------------- the end


def _ready(sock: socket.socket, master: int) -> None:
    """
    Tell the shim this process is ready to exec (handing it the PTY's
    C{master} when there is one, closed here then), and wait for its go;
    without one (the shim gone), leave.
    """
    if master >= 0:
        sock.sendmsg([b"R"], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [master]))])
        os.close(master)
    else:
        sock.send(b"R")
    if sock.recv(1) != b"G":
        os._exit(125)


def _report(sock: socket.socket, error: StartError) -> None:
    try:
        sock.send(b"E%d %s" % (error.code, error.message.encode("utf-8", "replace")))
    except OSError:
        pass


def _reset_signals() -> None:
    signal.set_wakeup_fd(-1)
    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


def _capabilities(process: Process) -> int:
    return linux.container_capabilities(bool(process.get("privileged")), process.get("cap_add", ()),
                                        process.get("cap_drop", ()), linux.bounding_set())


def _seccomp(program: tuple[bytes, int]) -> None:
    try:
        linux.seccomp_filter(*program)
    except OSError as e:
        raise StartError(125, f"loading the seccomp filter failed: {e.strerror}") from None


def _become(process: Process, hostname: str, stdio: tuple[int, int, int], tty: bool,
            sock: socket.socket) -> None:
    """
    Turn this process into the container's command: stdio, user, groups,
    capabilities, no_new_privs, seccomp, then exec. Never returns.
    """
    uid, gid, groups, home = resolve_user(process["user"], list(process.get("additional_gids", ())))
    env = _environment(process, home, hostname)
    cwd = process["cwd"] or "/"
    try:
        os.chdir(cwd)
    except OSError as e:
        raise StartError(125, f"chdir to cwd ({cwd!r}) set in config.json failed: {e.strerror}") from None
    for target, fd in enumerate(stdio):
        if fd != target:
            os.dup2(fd, target)
    for fd in set(stdio):
        if fd > 2:
            os.close(fd)
    if tty:
        fcntl.ioctl(0, linux.TIOCSCTTY, 0)
    _rlimits(process)
    late = _confine(process, uid, gid, groups)
    os.umask(0o022)
    args = list(process["args"])
    if not args:
        raise StartError(125, "no command specified")
    executable = _lookup(args[0], env["PATH"])
    if late is not None:
        # As late as possible: none of the set-up above is filtered.
        _seccomp(late)
    try:
        os.execve(executable, args, env)
    except OSError as e:
        code = 127 if e.errno == 2 else 126 if e.errno in (1, 8, 13, 21) else 125
        raise StartError(code, f'exec: "{args[0]}": {e.strerror.lower() if e.strerror else e}') from None


def _rlimits(process: Process) -> None:
    """
    The container's --ulimit limits, while this process may still raise a
    hard limit (it then needs CAP_SYS_RESOURCE, as docker's does).
    """
    for name, soft, hard in process.get("rlimits", ()):
        limits = (resource.RLIM_INFINITY if soft == -1 else soft, resource.RLIM_INFINITY if hard == -1 else hard)
        try:
            resource.setrlimit(linux.RLIMITS[name], limits)
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            # Python says EPERM on raising a hard limit as a ValueError.
            if (isinstance(e, OSError) and e.errno == errno.EPERM) or "raise maximum" in why:
                why += " (a hard limit above the daemon's own needs CAP_SYS_RESOURCE)"
            raise StartError(125, f"cannot set ulimit {name}={soft}:{hard}: {why.lower()}") from None


def _confine(process: Process, uid: int, gid: int, groups: list[int]) -> tuple[bytes, int] | None:
    """
    Give this process the container's identity and limits: a session
    keyring of its own, the bounding and capability sets, user and groups,
    no_new_privs, and the seccomp filter when it must go on before the
    capabilities do. Returns the filter still to load (as late as
    possible, with no_new_privs), or None.
    """
    seccomp = process.get("seccomp")
    program = (seccomp["code"], int(seccomp["flags"])) if seccomp else None
    no_new_privs = bool(process.get("no_new_privileges"))
    # The shim's session keyring is the host's: the command gets one of
    # its own, so no key of the host or of another container is in reach.
    linux.join_session_keyring()
    if program is not None and not no_new_privs:
        # Without no_new_privs, installing a filter takes CAP_SYS_ADMIN:
        # before the capabilities go (runc's order), after the keyring
        # (keyctl is filtered).
        _seccomp(program)
    caps = _capabilities(process)
    for cap in range(len(linux.CAPABILITIES)):
        if not caps & (1 << cap) and linux.prctl(linux.PR_CAPBSET_READ, cap) == 1:
            linux.prctl(linux.PR_CAPBSET_DROP, cap)
    os.setgroups(groups)
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    # Root gets its capabilities back from the bounding set at exec; other
    # users have none left after setuid, as with docker.
    if uid == 0:
        linux.capset(caps, caps, 0)
    if no_new_privs:
        linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
        return program
    return None


def _retitle(args: list[str], name: bytes = b"ross-init") -> None:
    """
    What ps shows for this process, forked from the shim: C{args} for its
    command line and C{name} for its name, as docker's shows its init,
    not the shim's command line, whose host paths (Ross's installation,
    its state directory) are no business of the container's. The command
    line is the memory the kernel reads it from, written over in place.
    """
    try:
        linux.set_process_name(name)
        with open("/proc/self/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        # arg_start and arg_end: the 48th and 49th fields, counted from 1.
        start, end = int(fields[45]), int(fields[46])
        title = b"\0".join(a.encode(errors="surrogateescape") for a in args)[:end - start - 1]
        with open("/proc/self/mem", "r+b", buffering=0) as mem:
            mem.seek(start)
            mem.write(title.ljust(end - start, b"\0"))
    except OSError:
        # Only what ps shows: never a reason for the start to fail.
        pass


def _reaper(child: int) -> None:
    """
    PID 1 with init: forward every signal to the command, reap every
    zombie, exit with the command's status (128+N for a signal).
    """
    def forward(sig: int, frame: object) -> None:
        try:
            os.kill(child, sig)
        except ProcessLookupError:
            pass

    for sig in range(1, signal.NSIG):
        if sig in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD):
            continue
        try:
            signal.signal(sig, forward)
        except (OSError, ValueError):
            pass
    while True:
        try:
            pid, status = os.wait()
        except ChildProcessError:
            os._exit(0)
        if pid == child:
            code = os.waitstatus_to_exitcode(status)
            os._exit(128 - code if code < 0 else code)


#: Who a pause PID 1 becomes: nobody, as Kubernetes' pause image runs.
PAUSE_ID = 65535


def _hold(stdio: tuple[int, int, int], sock: socket.socket) -> None:
    """
    PID 1 of a container that runs no command (a pod sandbox): tell the
    shim it runs (EOF on the socket, as an exec would), give up stdio, root
    and every capability, and wait for a signal to end it (exit 0; PID 1
    gets only the signals it handles). Never returns.
    """
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    for fd in {null, *stdio}:
        if fd > 2:
            os.close(fd)
    sock.close()
    os.setgroups([])
    os.setresgid(PAUSE_ID, PAUSE_ID, PAUSE_ID)
    os.setresuid(PAUSE_ID, PAUSE_ID, PAUSE_ID)
    linux.prctl(linux.PR_SET_NO_NEW_PRIVS, 1)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: os._exit(0))
    # The pod's containers that share its PID namespace leave their
    # orphans to it, as to any init: reaped, never left as zombies.
    signal.signal(signal.SIGCHLD, lambda *_: _reap_all())
    while True:
        signal.pause()


def _oom_score_adj(value: int) -> None:
    """
    Set the container's OOM score adjustment (its processes inherit it);
    going below the current one takes CAP_SYS_RESOURCE.
    """
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(value))
    except OSError as e:
        raise StartError(125, f"cannot set the OOM score adjustment to {value}: {e.strerror}"
                              + (" (lowering it takes CAP_SYS_RESOURCE)" if e.errno == errno.EACCES else ""))


def _reap_all() -> None:
    try:
        while os.waitpid(-1, os.WNOHANG)[0] > 0:
            pass
    except ChildProcessError:
        pass


def run_init(spec: Spec, state_dir: str, root: str, groups: list[CgroupGroup], sock: socket.socket,
             stdio: tuple[int, int, int] | None, namespaces: dict[str, int] | None = None,
             born_in_v2: bool = False) -> None:
    """
    The container's PID 1 after the shim's fork. Never returns.
    C{namespaces} are those L{userns.make_namespaces} made for a container
    with a user namespace of its own: joined, not unshared; the set-up
    runs as host root acting as the container's root, and the user
    namespace is entered just before the command. C{born_in_v2}: the shim
    forked it into the container's cgroup v2 group already.
    """
    try:
        _reset_signals()
        os.umask(0)
        os.setsid()
        privileged = bool(spec["process"].get("privileged"))
        if spec.get("oom_score_adj"):
            _oom_score_adj(int(spec["oom_score_adj"]))
        devices = spec.get("devices") or []
        cgroups.create(groups, spec["resources"], privileged, [f"{d[1]} {d[2]}:{d[3]} {d[7]}" for d in devices])
        cgroups.join(groups, born_in_v2)
        network = spec["network"]
        # The cgroup namespace is unshared after joining: the container's
        # own cgroups are its "/".
        ipc, uts = spec.get("ipc", ""), spec.get("uts", "")
        flags = linux.CLONE_NEWNS | linux.CLONE_NEWCGROUP
        if not uts:
            flags |= linux.CLONE_NEWUTS
        if ipc in ("", "none"):
            flags |= linux.CLONE_NEWIPC
        if network not in ("host",) and not network.startswith("/"):
            flags |= linux.CLONE_NEWNET
        remap = userns.Container.of(spec, namespaces)
        if remap is not None and namespaces is not None:
            flags = userns.join(namespaces, flags)
        linux.unshare(flags)
        # The host's /dev/shm for IPC mode host: this mount namespace's copy
        # of it, while "/" is still the host's.
        shm = os.open("/dev/shm", _O_PATH | os.O_DIRECTORY | os.O_CLOEXEC) if ipc == "host" else \
            -2 if ipc == "none" else -1
        # Joined before anything is mounted: /dev/mqueue is the IPC
        # namespace's, so it is mounted in the one joined.
        for path, nstype in ((network, linux.CLONE_NEWNET), (ipc, linux.CLONE_NEWIPC), (uts, linux.CLONE_NEWUTS)):
            if path.startswith("/"):
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                linux.setns(fd, nstype)
                os.close(fd)
        if network != "host" and not network.startswith("/"):
            _loopback_up()
        sysctls = spec.get("sysctls") or []
        net_sysctls = [s for s in sysctls if s[0].startswith("net.")]
        ipc_sysctls = [s for s in sysctls if not s[0].startswith("net.")]
        if ipc_sysctls:
            proc_sys = os.open("/proc/sys", _O_PATH | os.O_DIRECTORY)
            try:
                _set_sysctls(ipc_sysctls, "", proc_sys)
            finally:
                os.close(proc_sys)
        # Those of the network namespace are written after the go, once its
        # links (eth0, which they may name) are plugged, through an fd of
        # /proc/sys/net kept from here: nothing but this network namespace's
        # parameters resolves there.
        net = os.open("/proc/sys/net", _O_PATH | os.O_DIRECTORY) if net_sysctls else -1
        if remap is not None:
            userns.act_as_root(remap)
        _isolate(root, any(m["type"] == "bind" and m["propagation"] in ("shared", "rshared") for m in spec["mounts"]))
        rootfd = _mount_rootfs(spec, root, remap)
        _mount_system(rootfd, privileged, groups)
        dev = _mount_dev(rootfd, 5 if remap is None else userns.host_id(remap.gid_map, 5), spec.get("shm_size", 0),
                         shm)
        if shm >= 0:
            os.close(shm)
        # The container's /etc files after its mounts, as docker sorts them
        # (a volume on /etc gets them on top), but for one a mount gives.
        _mount_user(spec["mounts"], rootfd, remap)
        _mount_etc(spec, rootfd, state_dir, {os.path.normpath(m["target"]) for m in spec["mounts"]})
        _make_devices(rootfd, devices, remap is not None)
        masked, readonly = _paths(spec, privileged)
        if not privileged:
            _mask(rootfd, dev, masked, readonly)
        master = -1
        if spec["process"]["tty"]:
            master, slave = _open_pty(dev, True)
            stdio = (slave, slave, slave)
        os.close(open_in_root(rootfd, spec["process"]["cwd"] or "/", create="dir"))
        os.close(dev)
        os.close(rootfd)
        _pivot(root)
        _verify_masks(privileged, masked, readonly)
        if spec["readonly"]:
            _remount_ro("/")
        hostname = spec["hostname"] or spec["id"][:12]
        if network != "host" and not uts:
            socket.sethostname(hostname)
            if spec.get("domainname"):
                linux.setdomainname(spec["domainname"])
        _ready(sock, master)
        if net >= 0:
            _set_sysctls(net_sysctls, "net.", net)
            os.close(net)
        assert stdio is not None
        # What the pod's containers (a shared PID namespace) or the command
        # see of a PID 1 that stays: Kubernetes' pause, docker's init, not
        # the shim's command line. Written while host root (a remapped root
        # may not open its own memory); the reaper forked below keeps it.
        if spec.get("pause"):
            _retitle(["/pause"], b"pause")
        elif spec.get("init"):
            _retitle(["ross-init", "--", *spec["process"]["args"]])
        if remap is not None:
            userns.enter(remap.fd)
            os.close(remap.fd)
        if spec.get("pause"):
            _hold(stdio, sock)
        if spec.get("init"):
            child = os.fork()
            if child:
                sock.close()
                null = os.open("/dev/null", os.O_RDWR)
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                for fd in set(stdio):
                    if fd > 2:
                        os.close(fd)
                process = spec["process"]
                # The reaper is the container's too: its user, its
                # capabilities, its filter, as docker's init would be.
                uid, gid, gids, _home = resolve_user(process["user"], list(process.get("additional_gids", ())))
                late = _confine(process, uid, gid, gids)
                if late is not None:
                    _seccomp(late)
                _reaper(child)
            os.setsid()
        _become(spec["process"], hostname, stdio, bool(spec["process"]["tty"]), sock)
    except StartError as e:
        _report(sock, e)
    except OSError as e:
        _report(sock, StartError(125, _describe(e)))
    except Exception as e:  # everything must reach the shim, never a traceback
        _report(sock, StartError(125, f"{type(e).__name__}: {e}"))
    os._exit(125)


def run_exec(process: Process, hostname: str, ns_fds: list[tuple[int, int]], groups: list[CgroupGroup],
             sock: socket.socket, stdio: tuple[int, int, int] | None, root_pid: int, userns_fd: int = -1,
             oom_score_adj: int = 0, born_in_v2: bool = False) -> None:
    """
    An exec session's helper after the shim's fork, still in the host's
    PID namespace where the container cannot see it: join the cgroups and
    namespaces (the PID namespace for children, the mount namespace last:
    root and working directory become the container's), then the
    container's user namespace (C{userns_fd}, -1 for none), then fork the
    session's process, report its PID (C{b"P<pid>"}) and exit. The process
    is born inside, holding nothing of the host, and becomes the command.
    C{oom_score_adj} is the container's (0: the shim's): an exec'd process
    gets it as the container's processes do (runc's rule). C{born_in_v2}:
    the shim forked it into the container's cgroup v2 group already.
    Never returns.
    """
    try:
        _reset_signals()
        if oom_score_adj:
            _oom_score_adj(oom_score_adj)
        cgroups.join(groups, born_in_v2)
        for fd, nstype in ns_fds:
            linux.setns(fd, nstype)
            os.close(fd)
        if userns_fd >= 0:
            # Last: as host root this process can join every namespace (the
            # cgroup and PID namespaces are host root's), and it leaves
            # host root before it opens anything of the container's.
            userns.enter(userns_fd)
            os.close(userns_fd)
        try:
            pid = os.fork()
        except OSError as e:
            # ENOMEM: the container's init died since the shim looked (the
            # PID namespace it leaves takes no new process).
            if e.errno == errno.ENOMEM:
                raise StartError(125, "the container is not running") from None
            raise
        if pid:
            sock.send(b"P%d" % pid)
            os._exit(0)
        os.setsid()
        if process["tty"]:
            dev = os.open("/dev", _O_PATH | os.O_DIRECTORY)
            try:
                master, slave = _open_pty(dev, False)
            finally:
                os.close(dev)
            stdio = (slave, slave, slave)
        else:
            master = -1
        _ready(sock, master)
        assert stdio is not None
        try:
            _become(process, hostname, stdio, bool(process["tty"]), sock)
        except StartError as e:
            # Its command could not be run (no such user, working
            # directory): docker's exec says 126 for it; 127 stays.
            raise StartError(126 if e.code == 125 else e.code, e.message) from None
    except StartError as e:
        _report(sock, e)
    except OSError as e:
        _report(sock, StartError(125, _describe(e)))
    except Exception as e:
        _report(sock, StartError(125, f"{type(e).__name__}: {e}"))
    os._exit(125)


def _describe(e: OSError) -> str:
    if e.filename:
        return f"{e.strerror or e}: {e.filename}"
    return str(e.strerror or e)

