# -*- test-case-name: ross.test.test_userns,ross.test.integration.test_userns -*-
"""
User namespaces for C{twistd ross --userns-remap}: which host ids a
remapped container's ids become, and the kernel work that makes it so.

The design, as verified on this kernel (Linux 6.18, ext4):

    - Storage keeps the container's view. Snapshots, volumes and the
      runtime's /etc files hold the ids the container sees (its root is
      uid 0 on disk). The container's root filesystem is an overlay whose
      layers are idmapped mounts (L{idmapped_tree}: open_tree
      OPEN_TREE_CLONE, then mount_setattr MOUNT_ATTR_IDMAP with the
      container's user namespace), given to overlayfs as file descriptors
      (fsconfig FSCONFIG_SET_FD "lowerdir+", "upperdir", "workdir"): a
      file the container's root creates lands on disk as uid 0. So commit,
      export, diff and cp see what they always saw, and turning remap on
      or off copies nothing. Volumes and bind mounts are idmapped the same
      way where their filesystem allows it (ext4, tmpfs, xfs, btrfs...),
      else bound as they are.
    - The shim makes the user namespace, its maps written by host root,
      and with it the mount, UTS, IPC and network namespaces, owned by it
      (L{make_namespaces}, from a short-lived child): the container's root
      has its capabilities over its own network (port 80, raw sockets)
      and hostname, as with docker. The PID namespace stays the one the
      shim unshares: the kernel hands out no handle on a PID namespace
      before its first process, and PID 1 must be the shim's child.
    - The container's init joins those namespaces and does its whole
      set-up as host root, acting as the container's root for the files it
      creates (L{act_as_root}: fsuid and fsgid are the container root's
      host ids; overlayfs needs that of its mounter to create its work
      directory through an idmapped mount); it can still read the trusted.*
      xattrs of the layers, make device nodes, mount /proc, sysfs and
      devpts. It enters the user namespace (L{enter}) last, just before the
      command; exec sessions join it after every other namespace.
      Neither needs a host directory the remapped uid can traverse: the
      daemon's roots keep their modes.

Stdlib only: the shim and the container's init import this. The daemon's
side (L{resolve_remap}) reads /etc/passwd, /etc/group and the
subordinate id files, and creates C{ross-remap} for C{default}.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import NamedTuple, Sequence

from ross.engine.runtime import linux

#: The user (and group) C{--userns-remap default} uses, made when missing.
DEFAULT_USER = "ross-remap"
SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
#: Where ranges for L{DEFAULT_USER} start, and their size (docker's).
RANGE_START = 100000
RANGE_SIZE = 65536

CLONE_NEWUSER = 0x10000000
# The namespaces made with the user namespace, owned by it.
OWNED_NAMESPACES = (("mnt", linux.CLONE_NEWNS), ("uts", linux.CLONE_NEWUTS), ("ipc", linux.CLONE_NEWIPC),
                    ("net", linux.CLONE_NEWNET))


class RemapError(ValueError):
    """
    The remap setting cannot be used: unknown user or group, no
    subordinate ids, malformed files.
    """


class IdRange(NamedTuple):
    """
    Ids C{container}..C{container + size - 1} are host ids C{host}.. (one
    line of /proc/PID/uid_map).
    """

    container: int
    host: int
    size: int


IdMap = Sequence[IdRange]


class Remap(NamedTuple):
    """
    The daemon's C{--userns-remap}, resolved: the user and group whose
    subordinate ids containers get, and the maps.
    """

    user: str
    group: str
    uid_map: tuple[IdRange, ...]
    gid_map: tuple[IdRange, ...]


class Container(NamedTuple):
    """
    A container's user namespace as its init process holds it: the fd of
    the namespace (from L{make_namespaces}) and the maps.
    """

    fd: int
    uid_map: tuple[IdRange, ...]
    gid_map: tuple[IdRange, ...]

    @classmethod
    def of(cls, spec: dict, namespaces: dict[str, int] | None) -> "Container | None":  # type: ignore[type-arg]
        """
        The user namespace of a wire spec (L{ross.engine.runtime.spec.to_wire}),
        None when the container runs in the host's.
        """
        wire = spec.get("userns")
        if not wire or namespaces is None:
            return None
        return cls(namespaces["user"], tuple(IdRange(*r) for r in wire["uid_map"]),
                   tuple(IdRange(*r) for r in wire["gid_map"]))


# ---------------------------------------------------------------- maps


def host_id(idmap: IdMap, container_id: int) -> int:
    """
    The host id of C{container_id}; ValueError when it is not mapped.
    """
    for r in idmap:
        if r.container <= container_id < r.container + r.size:
            return r.host + container_id - r.container
    raise ValueError(f"id {container_id} is not mapped in the container's user namespace")


def map_text(idmap: IdMap) -> str:
    """
    C{idmap} as /proc/PID/uid_map takes it.
    """
    return "".join(f"{r.container} {r.host} {r.size}\n" for r in idmap)


def check_map(idmap: IdMap, what: str) -> None:
    """
    ValueError unless C{idmap} can be a container's: container root
    mapped, host root not, no range empty or overlapping another.
    """
    if not idmap:
        raise ValueError(f"empty {what} map")
    if len(idmap) > 340:
        raise ValueError(f"{what} map has {len(idmap)} ranges, the kernel takes 340")
    for r in idmap:
        if r.container < 0 or r.host < 0 or r.size < 1 or max(r.container, r.host) + r.size > 1 << 32:
            raise ValueError(f"invalid {what} range {r.container} {r.host} {r.size}")
        if r.host == 0:
            raise ValueError(f"{what} map would make host root an id of the container")
    for field in ("container", "host"):
        spans = sorted((getattr(r, field), getattr(r, field) + r.size) for r in idmap)
        for (_, end), (start, _) in zip(spans, spans[1:]):
            if start < end:
                raise ValueError(f"{what} map has overlapping {field} ranges")
    host_id(idmap, 0)


# ---------------------------------------------------------------- /etc/subuid


def parse_subordinate(text: str, path: str) -> list[tuple[str, int, int]]:
    """
    The entries of a subordinate id file (subuid(5): C{owner:start:count},
    the owner a name or a number): (owner, start, count). RemapError
    naming the line for a malformed one.
    """
    entries = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split(":")
        if len(fields) != 3 or not fields[0] or not fields[1].isdigit() or not fields[2].isdigit():
            raise RemapError(f"{path}, line {number}: expected OWNER:START:COUNT, got {line[:80]!r}")
        entries.append((fields[0], int(fields[1]), int(fields[2])))
    return entries


def id_map(ranges: Sequence[tuple[int, int]]) -> tuple[IdRange, ...]:
    """
    Container ids from 0 over the host ranges (start, count), lowest start
    first, as docker maps several ranges of one user.
    """
    result = []
    next_id = 0
    for start, count in sorted(ranges):
        if count > 0:
            result.append(IdRange(next_id, start, count))
            next_id += count
    return tuple(result)


def _read(path: str) -> str:
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except FileNotFoundError:
        return ""
    except OSError as e:
        raise RemapError(f"cannot read {path}: {e.strerror}") from None


def _ranges(path: str, owners: set[str], kind: str, owner: str) -> tuple[IdRange, ...]:
    found = [(start, count) for who, start, count in parse_subordinate(_read(path), path) if who in owners]
    if not found:
        raise RemapError(f"no {kind} ranges found for {owner!r} in {path}")
    idmap = id_map(found)
    try:
        check_map(idmap, kind)
    except ValueError as e:
        raise RemapError(f"{path}: {e}") from None
    return idmap


def _user(name: str) -> tuple[str, int, int]:
    """(name, uid, primary gid) of a user name or uid; RemapError if unknown."""
    import pwd

    try:
        entry = pwd.getpwuid(int(name)) if name.isdigit() else pwd.getpwnam(name)
    except (KeyError, OverflowError):
        what = "Uid" if name.isdigit() else "User"
        raise RemapError(f"{what} {name} has no entry in /etc/passwd") from None
    return entry.pw_name, entry.pw_uid, entry.pw_gid


def _group(name: str) -> tuple[str, int]:
    import grp

    try:
        entry = grp.getgrgid(int(name)) if name.isdigit() else grp.getgrnam(name)
    except (KeyError, OverflowError):
        what = "Gid" if name.isdigit() else "Group"
        raise RemapError(f"{what} {name} has no entry in /etc/group") from None
    return entry.gr_name, entry.gr_gid


def resolve_remap(value: str, subuid: str = SUBUID, subgid: str = SUBGID) -> Remap | None:
    """
    docker's C{--userns-remap} value (C{default}, C{USER}, C{USER:GROUP},
    names or numbers) as a L{Remap}; None for C{root}, which maps nothing
    (docker turns user namespaces off for it too). C{default} is
    L{DEFAULT_USER}, created with its ranges when missing
    (L{ensure_default_user}: blocking, for daemon start-up). Subordinate
    ids are looked up by owner name and by number, the user's in
    C{subuid}, the group's in C{subgid}.
    """
    parts = value.split(":")
    if len(parts) > 2 or not all(parts):
        raise RemapError(f"invalid user/group specification in --userns-remap: {value!r}")
    if parts == ["default"]:
        ensure_default_user(subuid, subgid)
        parts = [DEFAULT_USER, DEFAULT_USER]
    user, uid, primary_gid = _user(parts[0])
    if uid == 0:
        return None
    group, gid = _group(parts[1] if len(parts) == 2 else (str(primary_gid) if parts[0].isdigit() else parts[0]))
    return Remap(
        user=user,
        group=group,
        uid_map=_ranges(subuid, {user, str(uid)}, "subuid", user),
        gid_map=_ranges(subgid, {group, str(gid)}, "subgid", group),
    )


def free_range(entries: Sequence[tuple[str, int, int]], size: int = RANGE_SIZE, start: int = RANGE_START) -> int:
    """
    The lowest start at or above C{start} of C{size} ids no entry overlaps.
    """
    for _, first, count in sorted(entries, key=lambda e: e[1]):
        if first < start + size and start < first + count:
            start = first + count
    return start


def ensure_default_user(subuid: str = SUBUID, subgid: str = SUBGID) -> None:
    """
    Make L{DEFAULT_USER} (a system user and group, no home, no login) and
    give it L{RANGE_SIZE} subordinate uids and gids from the first free
    range when it has none. Blocking; safe to repeat.
    """
    import pwd
    import subprocess

    try:
        pwd.getpwnam(DEFAULT_USER)
    except KeyError:
        done = subprocess.run(["useradd", "--system", "--user-group", "--no-create-home",
                               "--shell", "/usr/sbin/nologin", DEFAULT_USER],
                              capture_output=True, text=True)
        if done.returncode not in (0, 9):  # 9: made meanwhile by someone else
            raise RemapError(f"cannot create user {DEFAULT_USER}: {done.stderr.strip() or done.returncode}")
    for path in (subuid, subgid):
        text = _read(path)
        entries = parse_subordinate(text, path)
        if any(who == DEFAULT_USER for who, _, _ in entries):
            continue
        line = f"{DEFAULT_USER}:{free_range(entries)}:{RANGE_SIZE}\n"
        _replace(path, text + ("\n" if text and not text.endswith("\n") else "") + line)


def _replace(path: str, text: str) -> None:
    tmp = f"{path}.ross-{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.rename(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise RemapError(f"cannot write {path}: {e.strerror}") from None


# ---------------------------------------------------------------- kernel


_libc = ctypes.CDLL(None, use_errno=True)
_syscall = _libc.syscall
_syscall.restype = ctypes.c_long
_setfsuid = _libc.setfsuid
_setfsuid.argtypes = (ctypes.c_uint,)
_setfsgid = _libc.setfsgid
_setfsgid.argtypes = (ctypes.c_uint,)

# x86_64 numbers of the mount API calls (Linux 5.2+, mount_setattr 5.12+).
_SYS_OPEN_TREE = 428
_SYS_MOVE_MOUNT = 429
_SYS_FSOPEN = 430
_SYS_FSCONFIG = 431
_SYS_FSMOUNT = 432
_SYS_MOUNT_SETATTR = 442

_AT_FDCWD = -100
_AT_EMPTY_PATH = 0x1000
_AT_RECURSIVE = 0x8000
_OPEN_TREE_CLONE = 1
_OPEN_TREE_CLOEXEC = os.O_CLOEXEC
_MOVE_MOUNT_F_EMPTY_PATH = 0x4
_FSOPEN_CLOEXEC = 1
_FSMOUNT_CLOEXEC = 1
_FSCONFIG_SET_STRING = 1
_FSCONFIG_SET_FD = 5
_FSCONFIG_CMD_CREATE = 6
_MOUNT_ATTR_RDONLY = 0x1
_MOUNT_ATTR_NOSUID = 0x2
_MOUNT_ATTR_NODEV = 0x4
_MOUNT_ATTR_NOEXEC = 0x8
_MOUNT_ATTR_IDMAP = 0x100000
_MOUNT_ATTRS = ((linux.MS_RDONLY, _MOUNT_ATTR_RDONLY), (linux.MS_NOSUID, _MOUNT_ATTR_NOSUID),
                (linux.MS_NODEV, _MOUNT_ATTR_NODEV), (linux.MS_NOEXEC, _MOUNT_ATTR_NOEXEC))
# What a filesystem without idmapped mounts answers.
_NO_IDMAP = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64),
                ("propagation", ctypes.c_uint64), ("userns_fd", ctypes.c_uint64)]


def _sys(number: int, *args: object) -> int:
    """
    syscall(2), integer arguments passed as longs (the kernel reads every
    argument register whole).
    """
    return int(_syscall(ctypes.c_long(number), *(ctypes.c_long(a) if isinstance(a, int) else a for a in args)))


def _check(result: int, what: str, path: str | None = None) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", path)
    return result


def _path(path: str) -> bytes:
    return os.fsencode(path)


def make_namespaces(uid_map: IdMap, gid_map: IdMap) -> dict[str, int]:
    """
    A new user namespace with these maps (written by this process, host
    root, so setgroups stays allowed) and, owned by it, new mount, UTS, IPC
    and network namespaces: fds (close-on-exec) by name ("user", "mnt",
    "uts", "ipc", "net"). A child makes them and exits; the fds keep them.
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            linux.unshare(CLONE_NEWUSER)
            os.write(ready_w, b"u")
            # Only once mapped: namespaces made before would belong to a
            # user namespace whose root is nobody yet.
            if os.read(go_r, 1) == b"m":
                flags = 0
                for _, flag in OWNED_NAMESPACES:
                    flags |= flag
                linux.unshare(flags)
                os.write(ready_w, b"n")
                os.read(go_r, 1)
                code = 0
        except OSError as e:
            os.write(ready_w, b"e%d" % e.errno)
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    fds: dict[str, int] = {}
    try:
        _expect(os.read(ready_r, 16), b"u", "create a user namespace")
        for name, idmap in (("uid_map", uid_map), ("gid_map", gid_map)):
            fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY | os.O_CLOEXEC)
            try:
                os.write(fd, map_text(idmap).encode())
            finally:
                os.close(fd)
        os.write(go_w, b"m")
        _expect(os.read(ready_r, 16), b"n", "create namespaces in the container's user namespace")
        for name in ("user",) + tuple(n for n, _ in OWNED_NAMESPACES):
            fds[name] = os.open(f"/proc/{pid}/ns/{name}", os.O_RDONLY | os.O_CLOEXEC)
        return fds
    except BaseException:
        for fd in fds.values():
            os.close(fd)
        raise
    finally:
        os.close(go_w)
        os.close(ready_r)
        os.waitpid(pid, 0)


def _expect(answer: bytes, wanted: bytes, what: str) -> None:
    if answer != wanted:
        code = int(answer[1:]) if answer[:1] == b"e" and answer[1:].isdigit() else errno.EPERM
        raise OSError(code, f"could not {what}: {os.strerror(code)}")


def _capabilities(field: str) -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(field.encode() + b":"):
                return int(line.split()[1], 16)
    raise OSError(errno.ENOENT, f"no {field} in /proc/self/status")


def act_as_root(uid_map: IdMap, gid_map: IdMap) -> None:
    """
    Create files (and mount overlayfs) as the container's root: fsuid and
    fsgid become its host ids, and the capabilities that change drops
    from the effective set are raised again (this process stays host
    root: it still mounts, makes device nodes and reads any host file).
    """
    uid, gid = host_id(uid_map, 0), host_id(gid_map, 0)
    _setfsgid(gid)
    _setfsuid(uid)
    # setfs[ug]id report nothing but the previous value: read it back.
    if _setfsuid(0xFFFFFFFF) != uid or _setfsgid(0xFFFFFFFF) != gid:
        raise OSError(errno.EPERM, f"could not act as {uid}:{gid}")
    permitted = _capabilities("CapPrm")
    linux.capset(permitted, permitted, _capabilities("CapInh"))


def enter(userns_fd: int) -> None:
    """
    Join the user namespace of fd C{userns_fd} and become its root (as
    root in it; a later setuid to another user then drops the
    capabilities as it would for root). Leaves host root behind for good.
    """
    linux.setns(userns_fd, CLONE_NEWUSER)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def idmapped_tree(path: str, userns_fd: int, recursive: bool = True) -> int:
    """
    A detached copy of the mount tree at C{path} (close-on-exec fd) whose
    ids are seen through the user namespace C{userns_fd}: on-disk id N is
    the host id that container id N maps to. OSError from a filesystem
    without idmapped mounts (see L{bind}).
    """
    flags = _OPEN_TREE_CLONE | _OPEN_TREE_CLOEXEC | (_AT_RECURSIVE if recursive else 0)
    fd = _check(_sys(_SYS_OPEN_TREE, _AT_FDCWD, _path(path), flags), "open_tree", path)
    try:
        attr = _MountAttr(_MOUNT_ATTR_IDMAP, 0, 0, userns_fd)
        _check(_sys(_SYS_MOUNT_SETATTR, fd, b"", _AT_EMPTY_PATH | (_AT_RECURSIVE if recursive else 0),
                        ctypes.byref(attr), ctypes.sizeof(attr)), "idmapped mount", path)
    except BaseException:
        os.close(fd)
        raise
    return fd


def attach(mount_fd: int, target: str) -> None:
    """
    Attach the detached mount C{mount_fd} at C{target} and close the fd.
    """
    try:
        _check(_sys(_SYS_MOVE_MOUNT, mount_fd, b"", _AT_FDCWD, _path(target), _MOVE_MOUNT_F_EMPTY_PATH),
               "move_mount", target)
    finally:
        os.close(mount_fd)


def bind(source: str, target: str, userns_fd: int) -> bool:
    """
    Bind C{source} (recursively) at C{target}, idmapped through
    C{userns_fd} when its filesystem allows it: the container sees the
    owners it would see without a user namespace. Else a plain bind, the
    owners shifted (False).
    """
    try:
        fd = idmapped_tree(source, userns_fd)
    except OSError as e:
        if e.errno not in _NO_IDMAP:
            raise
        linux.mount(source, target, None, linux.MS_BIND | linux.MS_REC)
        return False
    attach(fd, target)
    return True


def _fs_messages(fs_fd: int) -> str:
    """
    What the filesystem logged on its context (why fsconfig failed).
    """
    messages = []
    while True:
        try:
            data = os.read(fs_fd, 1024)
        except OSError:
            break
        if not data:
            break
        messages.append(data.decode(errors="replace").partition(" ")[2])
    return "; ".join(messages)


def mount_overlay(options: Sequence[str], target: str, userns_fd: int) -> None:
    """
    Mount at C{target} the overlay that mount(8) C{options} (C{lowerdir},
    C{upperdir}, C{workdir}, others passed on) describe, each layer an
    idmapped mount (L{idmapped_tree}). The caller acts as the container's
    root (L{act_as_root}): overlayfs makes its work directory with its
    mounter's fsuid, which must have an on-disk id.
    """
    flags, data = linux.mount_options(options)
    settings = [o.partition("=") for o in data.split(",") if o]
    layers = {key: value for key, _, value in settings if key in ("lowerdir", "upperdir", "workdir")}
    if not layers.get("lowerdir"):
        raise OSError(errno.EINVAL, "an overlay needs lowerdir", target)
    fds: list[int] = []

    def tree(path: str) -> int:
        fds.append(idmapped_tree(path, userns_fd, recursive=False))
        return fds[-1]

    def under(tree_fd: int, name: str) -> int:
        fds.append(os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=tree_fd))
        return fds[-1]

    fs = _check(_sys(_SYS_FSOPEN, b"overlay", _FSOPEN_CLOEXEC), "fsopen overlay")
    fds.append(fs)
    try:
        try:
            for lower in layers["lowerdir"].split(":"):
                _check(_sys(_SYS_FSCONFIG, fs, _FSCONFIG_SET_FD, b"lowerdir+", None, tree(lower)), "lowerdir")
            if layers.get("upperdir"):
                upper, work = layers["upperdir"], layers.get("workdir", "")
                # overlayfs wants both on one mount: one idmapped tree of
                # the directory that holds them.
                parent = os.path.dirname(upper)
                if os.path.dirname(work) != parent:
                    raise OSError(errno.EINVAL, "upperdir and workdir must be in one directory", target)
                holder = tree(parent)
                for key, path in ((b"upperdir", upper), (b"workdir", work)):
                    _check(_sys(_SYS_FSCONFIG, fs, _FSCONFIG_SET_FD, key, None,
                                    under(holder, os.path.basename(path))), key.decode())
            for key, sep, value in settings:
                if key not in layers:
                    _check(_sys(_SYS_FSCONFIG, fs, _FSCONFIG_SET_STRING, key.encode(),
                                    value.encode() if sep else None, 0), key)
            _check(_sys(_SYS_FSCONFIG, fs, _FSCONFIG_CMD_CREATE, None, None, 0), "overlay")
        except OSError as e:
            detail = _fs_messages(fs)
            raise OSError(e.errno, f"mount overlay on idmapped layers: {detail or e.strerror}", target) from None
        attrs = 0
        for ms_flag, attr in _MOUNT_ATTRS:
            if flags & ms_flag:
                attrs |= attr
        mount_fd = _check(_sys(_SYS_FSMOUNT, fs, _FSMOUNT_CLOEXEC, attrs), "fsmount", target)
        attach(mount_fd, target)
    finally:
        for fd in fds:
            os.close(fd)
