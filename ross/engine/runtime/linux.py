# -*- test-case-name: ross.test.test_runtime_units -*-
"""
The Linux system calls the shim needs and Python 3.11's C{os} lacks
(mount, unshare, setns, pivot_root, prctl, capset, seccomp), through ctypes.

Stdlib only: the shim imports this on every container start.
"""

from __future__ import annotations

import ctypes
import errno
import os
import resource

_libc = ctypes.CDLL(None, use_errno=True)

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWNET = 0x40000000
CLONE_NEWPID = 0x20000000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUSER = 0x10000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24

MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4

_LINUX_CAPABILITY_VERSION_3 = 0x20080522

# Capability names by number, as capabilities(7) lists them.
CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "DAC_READ_SEARCH", "FOWNER", "FSETID", "KILL",
    "SETGID", "SETUID", "SETPCAP", "LINUX_IMMUTABLE", "NET_BIND_SERVICE",
    "NET_BROADCAST", "NET_ADMIN", "NET_RAW", "IPC_LOCK", "IPC_OWNER",
    "SYS_MODULE", "SYS_RAWIO", "SYS_CHROOT", "SYS_PTRACE", "SYS_PACCT",
    "SYS_ADMIN", "SYS_BOOT", "SYS_NICE", "SYS_RESOURCE", "SYS_TIME",
    "SYS_TTY_CONFIG", "MKNOD", "LEASE", "AUDIT_WRITE", "AUDIT_CONTROL",
    "SETFCAP", "MAC_OVERRIDE", "MAC_ADMIN", "SYSLOG", "WAKE_ALARM",
    "BLOCK_SUSPEND", "AUDIT_READ", "PERFMON", "BPF", "CHECKPOINT_RESTORE",
)

# docker's default set (moby oci/caps/defaults.go).
DEFAULT_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID",
    "SETUID", "SETFCAP", "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL",
    "AUDIT_WRITE",
)

# Flags mount(8) options set or clear; other options go to the data string.
MOUNT_FLAGS = {
    "ro": (MS_RDONLY, True), "rw": (MS_RDONLY, False),
    "nosuid": (MS_NOSUID, True), "suid": (MS_NOSUID, False),
    "nodev": (MS_NODEV, True), "dev": (MS_NODEV, False),
    "noexec": (MS_NOEXEC, True), "exec": (MS_NOEXEC, False),
    "sync": (MS_SYNCHRONOUS, True), "async": (MS_SYNCHRONOUS, False),
    "dirsync": (MS_DIRSYNC, True), "noatime": (MS_NOATIME, True),
    "atime": (MS_NOATIME, False), "nodiratime": (MS_NODIRATIME, True),
    "relatime": (MS_RELATIME, True), "strictatime": (MS_STRICTATIME, True),
    "bind": (MS_BIND, True), "rbind": (MS_BIND | MS_REC, True),
    "remount": (MS_REMOUNT, True), "defaults": (0, True),
}


def _check(result: int, what: str, path: str = "") -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path or None)
    return result


_mount = _libc.mount
_mount.argtypes = (ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p)
_umount2 = _libc.umount2
_umount2.argtypes = (ctypes.c_char_p, ctypes.c_int)
_unshare = _libc.unshare
_unshare.argtypes = (ctypes.c_int,)
_setns = _libc.setns
_setns.argtypes = (ctypes.c_int, ctypes.c_int)
_prctl = _libc.prctl
_prctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong)
_syscall = _libc.syscall
_setdomainname = _libc.setdomainname
_setdomainname.argtypes = (ctypes.c_char_p, ctypes.c_size_t)

# x86_64 system call numbers.
_SYS_PIVOT_ROOT = 155
_SYS_CAPSET = 126
_SYS_KEYCTL = 250
_SYS_SECCOMP = 317
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_MOUNT_SETATTR = 442
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_SYS_CLONE3 = 435
_SYS_OPENAT2 = 437

AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
AT_SYMLINK_NOFOLLOW = 0x100
OPEN_TREE_CLONE = 1
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR_IDMAP = 0x100000
FSCONFIG_SET_FLAG = 0
FSCONFIG_SET_STRING = 1
FSCONFIG_SET_FD = 5
FSCONFIG_CMD_CREATE = 6
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08

KEYCTL_JOIN_SESSION_KEYRING = 1
PR_SET_DUMPABLE = 4
SECCOMP_SET_MODE_FILTER = 1

# statfs(2) f_type of the filesystems the runtime checks for.
PROC_SUPER_MAGIC = 0x9FA0
SYSFS_MAGIC = 0x62656572
TMPFS_MAGIC = 0x01021994
DEVPTS_SUPER_MAGIC = 0x1CD1
CGROUP_SUPER_MAGIC = 0x27E0EB
CGROUP2_SUPER_MAGIC = 0x63677270


CLONE_INTO_CGROUP = 0x200000000


class _CloneArgs(ctypes.Structure):
    # struct clone_args up to its cgroup field (CLONE_ARGS_SIZE_VER2).
    _fields_ = [(name, ctypes.c_uint64) for name in (
        "flags", "pidfd", "child_tid", "parent_tid", "exit_signal", "stack", "stack_size", "tls", "set_tid",
        "set_tid_size", "cgroup")]


# Through PyDLL, which keeps the GIL across the call: the child of clone3
# must come back into Python as fork's does, holding it.
_clone3 = ctypes.PyDLL(None, use_errno=True).syscall
_clone3.restype = ctypes.c_long
_clone3.argtypes = (ctypes.c_long, ctypes.c_void_p, ctypes.c_size_t)


def fork_into_cgroup(cgroup_fd: int) -> int:
    """
    C{os.fork()} with the child born in the cgroup v2 group open as
    C{cgroup_fd} (clone3's C{CLONE_INTO_CGROUP}): unlike a write to the
    group's C{cgroup.procs}, it takes no global lock, so waits out no RCU
    grace period (see L{ross.engine.runtime.cgroups.join}). Python's own
    before- and after-fork steps run as for C{os.fork}. For a
    single-threaded process (the shim). OSError when the kernel, a seccomp
    filter or the group refuses: the caller forks as usual.
    """
    import signal

    args = _CloneArgs(flags=CLONE_INTO_CGROUP, exit_signal=signal.SIGCHLD, cgroup=cgroup_fd)
    ctypes.pythonapi.PyOS_BeforeFork()
    pid = _clone3(_SYS_CLONE3, ctypes.addressof(args), ctypes.sizeof(args))
    if pid == 0:
        ctypes.pythonapi.PyOS_AfterFork_Child()
        return 0
    err = ctypes.get_errno()
    ctypes.pythonapi.PyOS_AfterFork_Parent()
    if pid < 0:
        raise OSError(err, f"clone3: {os.strerror(err)}")
    return int(pid)


def _b(value: str | None) -> bytes | None:
    return None if value is None else os.fsencode(value)


def mount(source: str | None, target: str, fstype: str | None, flags: int = 0, data: str | None = None) -> None:
    """
    mount(2). Raises OSError naming the target.
    """
    _check(_mount(_b(source), _b(target), _b(fstype), flags, _b(data)), "mount", target)


def umount2(target: str, flags: int = 0) -> None:
    _check(_umount2(_b(target), flags), "umount", target)


def unshare(flags: int) -> None:
    _check(_unshare(flags), "unshare")


def setns(fd: int, nstype: int = 0) -> None:
    _check(_setns(fd, nstype), "setns")


def pivot_root(new_root: str, put_old: str) -> None:
    _syscall.argtypes = (ctypes.c_long, ctypes.c_char_p, ctypes.c_char_p)
    _check(_syscall(_SYS_PIVOT_ROOT, _b(new_root), _b(put_old)), "pivot_root", new_root)


def prctl(option: int, arg2: int = 0, arg3: int = 0, arg4: int = 0, arg5: int = 0) -> int:
    return _check(_prctl(option, arg2, arg3, arg4, arg5), "prctl")


PR_SET_NAME = 15


def set_process_name(name: bytes) -> None:
    """This thread's name (/proc/self/comm), up to 15 bytes."""
    buffer = ctypes.create_string_buffer(name[:15])
    prctl(PR_SET_NAME, ctypes.addressof(buffer))


def setdomainname(name: str) -> None:
    raw = name.encode()
    _check(_setdomainname(raw, len(raw)), "setdomainname")


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def open_tree(dirfd: int, path: str, flags: int) -> int:
    """
    open_tree(2): with OPEN_TREE_CLONE, a detached copy of the mount at
    C{path} (relative to C{dirfd}; "" with AT_EMPTY_PATH for C{dirfd}
    itself), to be changed with L{mount_setattr} before it is attached.
    """
    _syscall.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
    return _check(_syscall(_SYS_OPEN_TREE, dirfd, os.fsencode(path), flags | os.O_CLOEXEC), "open_tree", path)


def mount_setattr(fd: int, flags: int, attr_set: int = 0, attr_clr: int = 0, propagation: int = 0,
                  userns_fd: int = 0) -> None:
    """
    mount_setattr(2) on the mount C{fd} refers to (AT_EMPTY_PATH is added;
    AT_RECURSIVE in C{flags} reaches its submounts too).
    """
    attr = _MountAttr(attr_set, attr_clr, propagation, userns_fd)
    _syscall.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint, ctypes.c_void_p,
                         ctypes.c_size_t)
    _check(_syscall(_SYS_MOUNT_SETATTR, fd, b"", flags | AT_EMPTY_PATH, ctypes.addressof(attr),
                    ctypes.sizeof(attr)), "mount_setattr")


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


# A function object of its own, its argument types fixed: the daemon calls
# it from several threads, where C{_syscall}'s per-call argtypes would race.
_openat2 = _libc["syscall"]
_openat2.restype = ctypes.c_long
_openat2.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t)


def openat2(dirfd: int, path: str, flags: int, resolve: int) -> int:
    """
    openat2(2): C{path} opened relative to C{dirfd} with C{flags}
    (O_CLOEXEC added) under the RESOLVE_* restrictions in C{resolve}.
    """
    how = _OpenHow(flags | os.O_CLOEXEC, 0, resolve)
    return _check(_openat2(_SYS_OPENAT2, dirfd, os.fsencode(path), ctypes.addressof(how), ctypes.sizeof(how)),
                  "openat2", path)


def move_mount(from_fd: int, to_fd: int) -> None:
    """
    Attach the detached mount C{from_fd} on the file or directory C{to_fd}
    is open on: the very object that was checked, whatever its path now.
    """
    _syscall.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p,
                         ctypes.c_uint)
    _check(_syscall(_SYS_MOVE_MOUNT, from_fd, b"", to_fd, b"",
                    MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH), "move_mount")


class _Statfs(ctypes.Structure):
    _fields_ = [("f_type", ctypes.c_long), ("f_bsize", ctypes.c_long), ("f_blocks", ctypes.c_ulong),
                ("f_bfree", ctypes.c_ulong), ("f_bavail", ctypes.c_ulong), ("f_files", ctypes.c_ulong),
                ("f_ffree", ctypes.c_ulong), ("f_fsid", ctypes.c_int * 2), ("f_namelen", ctypes.c_long),
                ("f_frsize", ctypes.c_long), ("f_flags", ctypes.c_long), ("f_spare", ctypes.c_long * 4)]


_fstatfs = _libc.fstatfs
_fstatfs.argtypes = (ctypes.c_int, ctypes.c_void_p)


def fs_type(fd: int) -> int:
    """
    The filesystem type (statfs f_type, a *_MAGIC number) of what C{fd}
    is open on; an O_PATH fd will do.
    """
    buf = _Statfs()
    _check(_fstatfs(fd, ctypes.addressof(buf)), "fstatfs")
    return int(buf.f_type) & 0xFFFFFFFF


def fsopen(fstype: str) -> int:
    """
    fsopen(2): a context (fd, close-on-exec) for a new C{fstype}
    filesystem, set up with L{fsconfig}, then mounted with L{fsmount}.
    """
    _syscall.argtypes = (ctypes.c_long, ctypes.c_char_p, ctypes.c_uint)
    return _check(_syscall(_SYS_FSOPEN, fstype.encode(), 1), "fsopen", fstype)  # FSOPEN_CLOEXEC


def fsconfig(fs_fd: int, command: int, key: str | None = None, value: str | None = None, aux: int = 0) -> None:
    """
    fsconfig(2): flag C{key} set (FSCONFIG_SET_FLAG), C{key} set to the
    string C{value} (FSCONFIG_SET_STRING) or the fd C{aux}
    (FSCONFIG_SET_FD), or the
    filesystem made (FSCONFIG_CMD_CREATE). On failure, what the filesystem
    logged on the context is the message.
    """
    _syscall.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_uint, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int)
    raw = _syscall(_SYS_FSCONFIG, fs_fd, command, None if key is None else key.encode(),
                   None if value is None else os.fsencode(value), aux)
    if raw < 0:
        err = ctypes.get_errno()
        raise OSError(err, _fs_messages(fs_fd) or f"fsconfig {key or ''}: {os.strerror(err)}")


def _fs_messages(fs_fd: int) -> str:
    messages = []
    while True:
        try:
            data = os.read(fs_fd, 1024)
        except OSError:
            break
        if not data:
            break
        # "e overlayfs: ...": a severity letter, then the text.
        messages.append(data.decode(errors="replace").partition(" ")[2])
    return "; ".join(messages)


def fsmount(fs_fd: int, attr_flags: int = 0) -> int:
    """
    fsmount(2): the filesystem of context C{fs_fd} as a detached mount
    (fd, close-on-exec) with MOUNT_ATTR_* C{attr_flags}, for L{move_mount}.
    """
    _syscall.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_uint, ctypes.c_uint)
    return _check(_syscall(_SYS_FSMOUNT, fs_fd, 1, attr_flags), "fsmount")  # FSMOUNT_CLOEXEC


_setfsuid = _libc.setfsuid
_setfsuid.argtypes = (ctypes.c_uint,)
_setfsgid = _libc.setfsgid
_setfsgid.argtypes = (ctypes.c_uint,)


def setfsids(uid: int, gid: int) -> None:
    """
    setfsgid(2) and setfsuid(2): files this process creates are C{uid}'s
    and C{gid}'s, permission checks are theirs (capabilities aside).
    """
    _setfsgid(gid)
    _setfsuid(uid)
    # Both answer only with the previous id: an invalid id reads it back.
    if _setfsuid(0xFFFFFFFF) != uid or _setfsgid(0xFFFFFFFF) != gid:
        raise OSError(errno.EPERM, f"setfsuid {uid}, setfsgid {gid}: {os.strerror(errno.EPERM)}")


def join_session_keyring() -> None:
    """
    Give this process a new anonymous session keyring: the container must
    not share the shim's (and through it the host's) session keyring.
    """
    _syscall.argtypes = (ctypes.c_long, ctypes.c_int, ctypes.c_void_p)
    _check(_syscall(_SYS_KEYCTL, KEYCTL_JOIN_SESSION_KEYRING, None), "keyctl")


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def capset(effective: int, permitted: int, inheritable: int) -> None:
    """
    Set this thread's capability sets (64-bit masks).
    """
    header = _CapHeader(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (_CapData * 2)()
    for i in (0, 1):
        shift = 32 * i
        data[i].effective = (effective >> shift) & 0xFFFFFFFF
        data[i].permitted = (permitted >> shift) & 0xFFFFFFFF
        data[i].inheritable = (inheritable >> shift) & 0xFFFFFFFF
    _syscall.argtypes = (ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p)
    _check(_syscall(_SYS_CAPSET, ctypes.addressof(header), ctypes.addressof(data)), "capset")


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def seccomp_filter(code: bytes, flags: int) -> None:
    """
    Install C{code}, a classic BPF program (8-byte struct sock_filter
    entries), as a seccomp filter of this thread, with seccomp(2) filter
    C{flags}. Needs no_new_privs or CAP_SYS_ADMIN.
    """
    buffer = ctypes.create_string_buffer(code, len(code))
    program = _SockFprog(len(code) // 8, ctypes.addressof(buffer))
    _syscall.argtypes = (ctypes.c_long, ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p)
    _check(_syscall(_SYS_SECCOMP, SECCOMP_SET_MODE_FILTER, flags, ctypes.addressof(program)), "seccomp")


def bounding_set() -> int:
    """
    This process's capability bounding set as a mask (from /proc/self/status).
    """
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"CapBnd:"):
                return int(line.split()[1], 16)
    raise OSError("no CapBnd in /proc/self/status")


def capability_mask(names: object) -> int:
    """
    A mask of capability names ("CHOWN" or "CAP_CHOWN").
    """
    mask = 0
    for name in names:  # type: ignore[attr-defined]
        mask |= 1 << capability_number(name)
    return mask


def container_capabilities(privileged: bool, cap_add: tuple[str, ...] | list[str],
                           cap_drop: tuple[str, ...] | list[str], bounding: int) -> int:
    """
    The capability mask of a container: docker's defaults with C{cap_add}
    and C{cap_drop} ("ALL" included), or all of C{bounding} when
    C{privileged}; never more than C{bounding}.
    """
    if privileged:
        return bounding
    keep = capability_mask(DEFAULT_CAPABILITIES)
    add = [c.upper() for c in cap_add]
    drop = [c.upper() for c in cap_drop]
    if "ALL" in drop or "CAP_ALL" in drop:
        keep = 0
    else:
        keep &= ~capability_mask(drop)
    if "ALL" in add or "CAP_ALL" in add:
        keep = bounding
    else:
        keep |= capability_mask(add)
    return keep & bounding


#: setrlimit's resources by docker's --ulimit names.
RLIMITS = {
    "core": resource.RLIMIT_CORE, "cpu": resource.RLIMIT_CPU, "data": resource.RLIMIT_DATA,
    # RLIMIT_LOCKS is 10 on Linux; Python's resource module leaves it out.
    "fsize": resource.RLIMIT_FSIZE, "locks": 10, "memlock": resource.RLIMIT_MEMLOCK,
    "msgqueue": resource.RLIMIT_MSGQUEUE, "nice": resource.RLIMIT_NICE, "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC, "rss": resource.RLIMIT_RSS, "rtprio": resource.RLIMIT_RTPRIO,
    "rttime": resource.RLIMIT_RTTIME, "sigpending": resource.RLIMIT_SIGPENDING, "stack": resource.RLIMIT_STACK,
    "as": resource.RLIMIT_AS,
}


def capability_number(name: str) -> int:
    """
    The number of a capability name; ValueError for unknown names.
    """
    upper = name.upper()
    if upper.startswith("CAP_"):
        upper = upper[4:]
    try:
        return CAPABILITIES.index(upper)
    except ValueError:
        raise ValueError(f"unknown capability: {name!r}") from None


# What mountinfo escapes in paths (the backslash last).
_MOUNTINFO_ESCAPES = (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\"))


def mount_points() -> list[str]:
    """
    The mount points of this process's mount namespace, from the first
    mounted to the last.
    """
    points = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4]
            for escaped, char in _MOUNTINFO_ESCAPES:
                point = point.replace(escaped, char)
            points.append(point)
    return points


def mount_options(options: object) -> tuple[int, str]:
    """
    Split mount(8) options into mount(2) flags and the data string.
    """
    flags = 0
    data = []
    for opt in options:  # type: ignore[attr-defined]
        known = MOUNT_FLAGS.get(opt)
        if known is None:
            data.append(opt)
        elif known[1]:
            flags |= known[0]
        else:
            flags &= ~known[0]
    return flags, ",".join(data)


TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
TIOCGPTN = 0x80045430
TIOCSPTLCK = 0x40045431
TIOCGPTPEER = 0x5441
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
F_SETPIPE_SZ = 1031
