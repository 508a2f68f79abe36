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

import errno
import os
from typing import NamedTuple, Sequence

from ross.engine.runtime import linux

# Not imported at run time: the shim's start pays for every import.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ross.engine.runtime.wire import RootfsMount, Spec, UserNamespace

#: The user (and group) C{--userns-remap default} uses, made when missing.
DEFAULT_USER = "ross-remap"
SUBUID = "/etc/subuid"
SUBGID = "/etc/subgid"
#: Where ranges for L{DEFAULT_USER} start, and their size (docker's).
RANGE_START = 100000
RANGE_SIZE = 65536

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
    def of(cls, spec: Spec, namespaces: dict[str, int] | None) -> "Container | None":
        """
        The user namespace of a wire spec (L{ross.engine.runtime.spec.to_wire}),
        None when the container runs in the host's.
        """
        wanted = spec.get("userns")
        if not wanted or namespaces is None:
            return None
        return cls(namespaces["user"], *maps(wanted))


def maps(wanted: UserNamespace) -> tuple[tuple[IdRange, ...], tuple[IdRange, ...]]:
    """
    The uid and gid maps of a wire spec's user namespace.
    """
    return tuple(IdRange(*r) for r in wanted["uid_map"]), tuple(IdRange(*r) for r in wanted["gid_map"])


def namespaces_for(wanted: UserNamespace) -> dict[str, int]:
    """
    L{make_namespaces} for a wire spec's user namespace.
    """
    return make_namespaces(*maps(wanted), join=wanted.get("join", ""))


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


# What a filesystem without idmapped mounts answers.
_NO_IDMAP = (errno.EINVAL, errno.EOPNOTSUPP, errno.ENOSYS)
_MOUNT_ATTRS = ((linux.MS_RDONLY, linux.MOUNT_ATTR_RDONLY), (linux.MS_NOSUID, linux.MOUNT_ATTR_NOSUID),
                (linux.MS_NODEV, linux.MOUNT_ATTR_NODEV), (linux.MS_NOEXEC, linux.MOUNT_ATTR_NOEXEC))


def make_namespaces(uid_map: IdMap, gid_map: IdMap, join: str = "") -> dict[str, int]:
    """
    A new user namespace with these maps (written by this process, host
    root, so setgroups stays allowed), or the one at path C{join}, and,
    owned by it, new mount, UTS, IPC and network namespaces: fds
    (close-on-exec) by name ("user", "mnt", "uts", "ipc", "net"). A child
    makes them and exits; the fds keep them.
    """
    ready_r, ready_w = os.pipe2(os.O_CLOEXEC)
    go_r, go_w = os.pipe2(os.O_CLOEXEC)
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(ready_r)
            os.close(go_w)
            if join:
                joined = os.open(join, os.O_RDONLY | os.O_CLOEXEC)
                linux.setns(joined, linux.CLONE_NEWUSER)
            else:
                linux.unshare(linux.CLONE_NEWUSER)
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
            os.write(ready_w, b"e%d" % (e.errno or errno.EPERM))
        finally:
            os._exit(code)
    os.close(ready_w)
    os.close(go_r)
    fds: dict[str, int] = {}
    try:
        _expect(os.read(ready_r, 16), b"u", f"join the user namespace {join}" if join else "create a user namespace")
        for name, idmap in (() if join else (("uid_map", uid_map), ("gid_map", gid_map))):
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


def join(namespaces: dict[str, int], flags: int) -> int:
    """
    Join the namespaces L{make_namespaces} made (this process stays host
    root) and close their fds (the user namespace's stays open, for
    L{idmap} and L{enter}); the C{CLONE_NEW*} C{flags} left to unshare.
    """
    for name, nstype in OWNED_NAMESPACES:
        linux.setns(namespaces[name], nstype)
        os.close(namespaces[name])
        flags &= ~nstype
    return flags


def _capabilities(field: str) -> int:
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(field.encode() + b":"):
                return int(line.split()[1], 16)
    raise OSError(errno.ENOENT, f"no {field} in /proc/self/status")


def act_as_root(remap: Container) -> None:
    """
    Create files (and mount overlayfs) as the container's root: fsuid and
    fsgid become its host ids, and the capabilities that change drops
    from the effective set are raised again (this process stays host
    root: it still mounts, makes device nodes and reads any host file).
    """
    linux.setfsids(host_id(remap.uid_map, 0), host_id(remap.gid_map, 0))
    permitted = _capabilities("CapPrm")
    linux.capset(permitted, permitted, _capabilities("CapInh"))


def enter(userns_fd: int) -> None:
    """
    Join the user namespace of fd C{userns_fd} and become its root (as
    root in it; a later setuid to another user then drops the
    capabilities as it would for root). Leaves host root behind for good.
    """
    linux.setns(userns_fd, linux.CLONE_NEWUSER)
    os.setgroups([])
    os.setresgid(0, 0, 0)
    os.setresuid(0, 0, 0)


def idmap(tree: int, userns_fd: int, recursive: bool = True) -> None:
    """
    Make the detached mount C{tree} (from open_tree OPEN_TREE_CLONE) show
    its files through the user namespace C{userns_fd}: on-disk id N is the
    host id container id N maps to, and back. OSError (EINVAL) from a
    filesystem without idmapped mounts.
    """
    linux.mount_setattr(tree, linux.AT_RECURSIVE if recursive else 0, attr_set=linux.MOUNT_ATTR_IDMAP,
                        userns_fd=userns_fd)


def unsupported(error: OSError) -> bool:
    """
    Whether C{error} (from L{idmap}) means the filesystem has no idmapped
    mounts: the mount is then used as it is, its owners shifted.
    """
    return error.errno in _NO_IDMAP


def idmapped_tree(path: str, userns_fd: int, recursive: bool = True) -> int:
    """
    A detached, idmapped (L{idmap}) copy of the mount tree at C{path}: an
    fd (close-on-exec) for L{linux.move_mount}.
    """
    tree = linux.open_tree(linux.AT_FDCWD, path, linux.OPEN_TREE_CLONE | (linux.AT_RECURSIVE if recursive else 0))
    try:
        idmap(tree, userns_fd, recursive)
    except OSError as e:
        os.close(tree)
        if unsupported(e):
            raise OSError(e.errno, "its filesystem has no idmapped mounts, which a user namespace of the "
                                   "container's own (--userns-remap) needs", path) from None
        raise
    except BaseException:
        os.close(tree)
        raise
    return tree


def mount_root(mount: RootfsMount, target: int, remap: Container) -> None:
    """
    Mount the container's root filesystem (a wire rootfs mount: an overlay
    or a bind) on the directory fd C{target}, every layer idmapped through
    the container's user namespace. The caller acts as the container's
    root (L{act_as_root}): overlayfs makes its work directory with its
    mounter's fsuid, which must have an on-disk id.
    """
    flags, data = linux.mount_options(mount["options"])
    if mount["type"] == "overlay":
        tree = _overlay(data, flags, remap.fd)
    elif mount["type"] == "bind" or flags & linux.MS_BIND:
        tree = idmapped_tree(mount["source"], remap.fd)
        if flags & linux.MS_RDONLY:
            linux.mount_setattr(tree, linux.AT_RECURSIVE, attr_set=linux.MOUNT_ATTR_RDONLY)
    else:
        raise OSError(errno.EINVAL, f"a {mount['type']} root filesystem cannot be idmapped")
    try:
        linux.move_mount(tree, target)
    finally:
        os.close(tree)


def _overlay(data: str, flags: int, userns_fd: int) -> int:
    """
    The overlay that mount(8) data C{data} describes (C{lowerdir},
    C{upperdir}, C{workdir}, other options passed on), each layer given
    to overlayfs as an idmapped mount fd: a detached mount.
    """
    settings = [o.partition("=") for o in data.split(",") if o]
    layers = {key: value for key, _, value in settings if key in ("lowerdir", "upperdir", "workdir")}
    if not layers.get("lowerdir"):
        raise OSError(errno.EINVAL, "an overlay needs a lowerdir")
    fds: list[int] = []
    try:
        fs = linux.fsopen("overlay")
        fds.append(fs)
        for lower in layers["lowerdir"].split(":"):
            fds.append(idmapped_tree(lower, userns_fd, recursive=False))
            linux.fsconfig(fs, linux.FSCONFIG_SET_FD, "lowerdir+", aux=fds[-1])
        if layers.get("upperdir"):
            # overlayfs wants both on one mount: one idmapped tree of the
            # directory that holds them (the snapshot's).
            upper, work = layers["upperdir"], layers.get("workdir", "")
            if os.path.dirname(work) != os.path.dirname(upper):
                raise OSError(errno.EINVAL, "upperdir and workdir must be in one directory")
            fds.append(idmapped_tree(os.path.dirname(upper), userns_fd, recursive=False))
            holder = fds[-1]
            for key, path in (("upperdir", upper), ("workdir", work)):
                fds.append(os.open(os.path.basename(path), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                                   dir_fd=holder))
                linux.fsconfig(fs, linux.FSCONFIG_SET_FD, key, aux=fds[-1])
        for key, sep, value in settings:
            if key not in layers:
                if sep:
                    linux.fsconfig(fs, linux.FSCONFIG_SET_STRING, key, value)
                else:
                    linux.fsconfig(fs, linux.FSCONFIG_SET_FLAG, key)
        linux.fsconfig(fs, linux.FSCONFIG_CMD_CREATE)
        attrs = 0
        for ms_flag, attr in _MOUNT_ATTRS:
            if flags & ms_flag:
                attrs |= attr
        return linux.fsmount(fs, attrs)
    finally:
        for fd in fds:
            os.close(fd)
