# -*- test-case-name: ross.test.test_runtime_spec -*-
"""
What the runtime needs to run one container: L{ContainerSpec}, built by the
container manager from the image config and the API request, checked by
L{validate}, sent to the shim as plain data by L{to_wire}.
"""

from __future__ import annotations

import os
import re
import stat
from typing import Union

import attrs

from ross import errors
from ross.engine.records import Mount
from ross.engine.runtime import linux, wire
from ross.engine.etcfiles import hosts_file
from ross.engine.runtime.container import MASKED_PATHS, PROC_BIND_ALLOWED, READONLY_PATHS
from ross.engine.runtime.seccomp import Profile, Program, default_profile
from ross.engine.runtime.userns import IdRange, check_map

PROPAGATIONS = ("private", "rprivate", "slave", "rslave", "shared", "rshared")
MIN_MEMORY = 6 * 1024 * 1024  # docker's minimum
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


@attrs.frozen
class BindMount:
    """
    A host path (a directory or a file; volumes are directories the manager
    resolved) mounted at C{target} in the container, with the mounts below
    it unless not C{recursive}. Read-only, its submounts are too unless not
    C{recursive_readonly}.
    """

    source: str
    target: str
    readonly: bool = False
    propagation: str = "rprivate"
    recursive_readonly: bool = True
    recursive: bool = True


@attrs.frozen
class TmpfsMount:
    """
    A tmpfs at C{target}: C{size} bytes (0: the kernel's default), mode bits,
    extra mount(8) options ("noexec", "uid=1000").
    """

    target: str
    size: int = 0
    mode: int = 0o1777
    readonly: bool = False
    options: tuple[str, ...] = ()


@attrs.frozen
class Process:
    """
    The command and its identity. C{env} is "KEY=value" entries (PATH,
    HOSTNAME, HOME and, with a TTY, TERM get docker's defaults when absent);
    C{user} is docker's "name", "uid", "name:group" or "uid:gid", resolved in
    the container's /etc/passwd and /etc/group; C{additional_gids} are group
    names or numbers (--group-add); C{console_size} is (rows, cols);
    C{rlimits} are (name, soft, hard) as --ulimit gives them (-1 is
    unlimited), for the command and every exec.
    """

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = "/"
    user: str = ""
    additional_gids: tuple[str, ...] = ()
    tty: bool = False
    open_stdin: bool = False
    console_size: tuple[int, int] = (24, 80)
    rlimits: tuple[tuple[str, int, int], ...] = ()


@attrs.frozen
class Resources:
    """
    A container's cgroup limits, as the API takes them (its host config)
    and the runtime applies them: one type from request to shim. 0 means
    unlimited (not limited here). C{memory_swap} 0 means twice
    C{memory}, -1 unlimited; C{pids_limit} -1 is unlimited too (what
    ``update --pids-limit -1`` asks: a limit set before is lifted).
    """

    memory: int = 0
    memory_swap: int = 0
    nano_cpus: int = 0
    cpu_shares: int = 0
    pids_limit: int = 0
    #: cpuset.cpus and cpuset.mems ("0-3,6"); "" is the parent's.
    cpuset_cpus: str = ""
    cpuset_mems: str = ""
    #: hugetlb limits: (page size as the kernel names it, "2MB" or "1GB";
    #: bytes) pairs, as the CRI's hugepage_limits.
    hugepage_limits: tuple[tuple[str, int], ...] = ()
    #: The soft memory limit (--memory-reservation), and the OOM killer
    #: kept away (--oom-kill-disable).
    memory_reservation: int = 0
    oom_kill_disable: bool = False

    def updated(self, given: Resources) -> Resources:
        """
        These limits after docker update with C{given}: a zero there keeps
        this one (as dockerd: an update names only what changes).
        """
        return attrs.evolve(self, **{f.name: getattr(given, f.name) for f in attrs.fields(Resources)
                                     if getattr(given, f.name)})

    def check(self) -> None:
        """
        Raise InvalidArgument, with docker's message, for limits no
        container can have, on any host (what depends on the host, as the
        number of CPUs, the API checks: L{ross.engine.containers.config}).
        """
        if self.memory < 0 or self.nano_cpus < 0 or self.cpu_shares < 0:
            raise errors.InvalidArgument("invalid resources: limits cannot be negative")
        if self.memory and self.memory < MIN_MEMORY:
            raise errors.InvalidArgument("Minimum memory limit allowed is 6MB")
        if self.memory_reservation < 0:
            raise errors.InvalidArgument("invalid memory reservation: cannot be negative")
        if self.memory and self.memory_reservation > self.memory:
            raise errors.InvalidArgument("Minimum memory limit can not be less than memory reservation limit, "
                                         "see usage")
        if self.memory_swap > 0 and not self.memory:
            raise errors.InvalidArgument("You should always set the Memory limit when using Memoryswap limit, "
                                         "see usage")
        if self.memory_swap < -1 or (self.memory_swap > 0 and self.memory and self.memory_swap < self.memory):
            raise errors.InvalidArgument("Minimum memoryswap limit should be larger than memory limit, see usage")
        if self.pids_limit < -1:
            raise errors.InvalidArgument("invalid pids limit: must be -1 (unlimited), 0 (default) or positive")


@attrs.frozen
class LogConfig:
    """
    Where the shim writes the log; an empty path disables it (docker's
    "none" driver). Rotation at C{max_size} bytes (0: never), keeping
    C{max_files} files. C{format} is "json" (docker's json-file lines) or
    "cri" (Kubernetes' C{TIME STREAM P|F text} lines, which kubelet reads
    and rotates itself).
    """

    path: str = ""
    max_size: int = 0
    max_files: int = 1
    format: str = "json"


@attrs.frozen
class Device:
    """
    A device node made in the container at C{path} (--device): its type
    ("c" or "b"), numbers, mode bits and owner (the host node's), what
    the container's cgroup allows over it ("r", "w", "m"), and the host's
    node at C{source} (bound instead in a user namespace).
    """

    path: str
    type: str
    major: int
    minor: int
    mode: int = 0o666
    uid: int = 0
    gid: int = 0
    permissions: str = "rwm"
    source: str = ""


#: How many device nodes one --device of a directory may give, and how
#: many entries under it are looked at (a directory of files, "/", is
#: refused rather than walked for minutes).
MAX_DEVICES = 4096
MAX_DEVICE_WALK = 16384


#: What a privileged container does not take from the host's /dev: the
#: nodes and directories its runtime makes itself, and the host's
#: terminals.
PRIVILEGED_SKIP = frozenset({"pts", "shm", "mqueue", "fd", "console", "ptmx", "tty", "null", "zero", "full",
                             "random", "urandom"})


def host_devices(path_on_host: str, path_in_container: str = "", permissions: str = "rwm",
                 skip: frozenset[str] = frozenset(), limit: int | None = MAX_DEVICES) -> list[Device]:
    """
    Blocking: the device at C{path_on_host} (links followed), made at
    C{path_in_container} (the same path when empty); for a directory,
    every device under it (but the entries named in C{skip} right under
    it; at most C{limit}), at the same place under C{path_in_container}.
    InvalidArgument when there is none, as docker says it.
    """
    target = path_in_container or path_on_host
    try:
        st = os.stat(path_on_host)
    except OSError as e:
        raise errors.InvalidArgument(f"error gathering device information while adding custom device "
                                     f"{path_on_host[:256]!r}: {(e.strerror or str(e)).lower()}") from None
    if stat.S_ISDIR(st.st_mode):
        found = []
        seen = 0
        for parent, dirs, files in os.walk(path_on_host):
            if parent == path_on_host:
                dirs[:] = [d for d in dirs if d not in skip]
                files = [f for f in files if f not in skip]
            seen += len(dirs) + len(files)
            if limit is not None and seen > MAX_DEVICE_WALK:
                raise errors.InvalidArgument(f"more than {MAX_DEVICE_WALK} entries under {path_on_host[:256]!r}: "
                                             "not a directory of devices")
            dirs.sort()
            for name in sorted(files):
                full = os.path.join(parent, name)
                try:
                    node = os.stat(full, follow_symlinks=False)
                except OSError:
                    continue
                if stat.S_ISCHR(node.st_mode) or stat.S_ISBLK(node.st_mode):
                    found.append(_device(full, target + full[len(path_on_host.rstrip("/")):], node, permissions))
                    if limit is not None and len(found) > limit:
                        raise errors.InvalidArgument(f"more than {limit} devices under {path_on_host[:256]!r}")
        return found
    if not (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise errors.InvalidArgument(f"error gathering device information while adding custom device "
                                     f"{path_on_host[:256]!r}: not a device node")
    return [_device(path_on_host, target, st, permissions)]


def privileged_devices() -> list[Device]:
    """
    Blocking: the host's device nodes a privileged container gets, as
    docker gives them: every one under /dev but L{PRIVILEGED_SKIP}.
    """
    return host_devices("/dev", skip=PRIVILEGED_SKIP, limit=None)


def _device(source: str, path: str, st: os.stat_result, permissions: str) -> Device:
    return Device(path=os.path.normpath(path), type="c" if stat.S_ISCHR(st.st_mode) else "b",
                  major=os.major(st.st_rdev), minor=os.minor(st.st_rdev), mode=stat.S_IMODE(st.st_mode),
                  uid=st.st_uid, gid=st.st_gid, permissions=permissions, source=source)


@attrs.frozen
class UserNamespace:
    """
    A user namespace of the container's own: its ids are host ids as
    these maps say (lines of /proc/PID/uid_map and gid_map); its root is
    an unprivileged host user. See L{ross.engine.runtime.userns}.

    @ivar join: the path of a user namespace with these maps to join
        instead of making one (/proc/PID/ns/user of the container whose
        network namespace this one joins: only in its user namespace has
        the container's root its capabilities over that network).
    """

    uid_map: tuple[IdRange, ...]
    gid_map: tuple[IdRange, ...]
    join: str = ""


@attrs.frozen
class ContainerSpec:
    """
    One container run.

    @ivar id: the container ID (names its state directory and cgroups).
    @ivar rootfs: mounts that make the root filesystem, as the snapshotter
        returns them (the first at the root, others at their C{target}).
    @ivar hosts: /etc/hosts content; None means
        L{ross.engine.etcfiles.hosts_file}'s default.
    @ivar resolv_conf: /etc/resolv.conf content; None means the host's,
        without loopback name servers unless C{network} is "host".
    @ivar network: "none" (own namespace, loopback only), "host", or the
        absolute path of a network namespace to join (/proc/PID/ns/net of
        another container, a bind-mounted namespace of the network driver).
    @ivar ipc: "" (own namespace), "none" (own namespace, no /dev/shm),
        "host" (the host's, and its /dev/shm), or the absolute path of an
        IPC namespace to join (/proc/PID/ns/ipc of a pod's sandbox).
    @ivar uts: "" (own namespace, C{hostname} set in it), "host", or the
        absolute path of a UTS namespace to join, hostname and all.
    @ivar pid: "" (own namespace, the command its PID 1), "host", or the
        absolute path of a PID namespace to join (a pod's sandbox's).
    @ivar pause: PID 1 runs no command: set up, it holds the container's
        namespaces until a signal ends it (a pod sandbox, which the pod's
        containers join).
    @ivar privileged: every capability the daemon has, every device, no
        masked or read-only kernel paths, /sys writable.
    @ivar init: PID 1 is a reaper that forwards signals and reaps zombies.
    @ivar cgroup_parent: cgroups are C{<hierarchy>/<cgroup_parent>/<id>}.
    @ivar seccomp: the seccomp profile of the command and every exec'd
        process, None for none; by default the builtin profile, or none
        when C{privileged} (docker's rule).
    @ivar userns: the container's own user namespace; None runs it in the
        host's (its root is host root, as docker without remapping).
    @ivar masked_paths: paths hidden (/dev/null on a file, an empty
        read-only tmpfs on a directory); none when C{privileged}.
    @ivar readonly_paths: paths made read-only; none when C{privileged}.
    @ivar sysctls: kernel parameters written in the container's network
        and IPC namespaces before its command runs (the manager checks
        they are namespaced).
    """

    id: str
    rootfs: tuple[Mount, ...]
    process: Process
    readonly: bool = False
    hostname: str = ""
    domainname: str = ""
    hosts: str | None = None
    resolv_conf: str | None = None
    mounts: tuple[Union[BindMount, TmpfsMount], ...] = ()
    network: str = "none"
    ipc: str = ""
    uts: str = ""
    pid: str = ""
    pause: bool = False
    #: The processes' OOM score adjustment; 0 leaves the shim's.
    oom_score_adj: int = 0
    #: Bytes of /dev/shm; 0 for 64 MiB.
    shm_size: int = 0
    resources: Resources = Resources()
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    no_new_privileges: bool = True
    init: bool = False
    log: LogConfig = LogConfig()
    cgroup_parent: str = "ross"
    userns: UserNamespace | None = None
    seccomp: Profile | None = attrs.field(
        default=attrs.Factory(lambda spec: None if spec.privileged else default_profile(), takes_self=True))
    masked_paths: tuple[str, ...] = MASKED_PATHS
    readonly_paths: tuple[str, ...] = READONLY_PATHS
    sysctls: tuple[tuple[str, str], ...] = ()
    devices: tuple[Device, ...] = ()


@attrs.frozen
class ExecProcess:
    """
    An exec session's process. Empty C{cwd} and C{user} mean the
    container's; C{env} is applied over the container's environment.
    """

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    cwd: str = ""
    user: str = ""
    tty: bool = False
    open_stdin: bool = False
    privileged: bool = False
    console_size: tuple[int, int] = (24, 80)


def _check_path(kind: str, path: str) -> None:
    if not path.startswith("/"):
        raise errors.InvalidArgument(f"invalid mount config: {kind} path must be absolute: {path!r}")


def check_mount_target(target: str) -> None:
    """
    Refuse a mount on the root, or on or under /proc or /sys (the kernel's
    files, which masks protect), as runc does, but for its lxcfs files. The runtime
    checks again where the container's own links lead.
    """
    # normpath keeps a leading "//" (POSIX leaves it to the system).
    cleaned = "/" + os.path.normpath("/" + target).lstrip("/")
    if cleaned == "/":
        # Over the container's whole root filesystem: docker's message.
        raise errors.InvalidArgument("invalid mount config: destination can't be '/'")
    for top in ("/proc", "/sys"):
        if (cleaned == top or cleaned.startswith(top + "/")) and cleaned not in PROC_BIND_ALLOWED:
            raise errors.InvalidArgument(
                f"invalid mount config: {target!r} cannot be mounted because it is inside {top}")


def validate(spec: ContainerSpec) -> None:
    """
    Raise InvalidArgument naming the problem when C{spec} cannot run.
    """
    if not _ID.match(spec.id):
        raise errors.InvalidArgument(f"invalid container id: {spec.id!r}")
    if not spec.rootfs:
        raise errors.InvalidArgument(f"container {spec.id} has no root filesystem")
    if not spec.process.args or not spec.process.args[0]:
        raise errors.InvalidArgument("no command specified")
    _check_path("working directory", spec.process.cwd or "/")
    for m in spec.mounts:
        _check_path("target", m.target)
        check_mount_target(m.target)
        if isinstance(m, BindMount):
            _check_path("source", m.source)
            if m.propagation not in PROPAGATIONS:
                raise errors.InvalidArgument(f"invalid propagation mode: {m.propagation!r}")
        elif m.size < 0:
            raise errors.InvalidArgument(f"invalid tmpfs size for {m.target}: {m.size}")
    if spec.network not in ("none", "host") and not spec.network.startswith("/"):
        raise errors.InvalidArgument(f"invalid network mode: {spec.network!r}")
    if spec.ipc not in ("", "none", "host") and not spec.ipc.startswith("/"):
        raise errors.InvalidArgument(f"invalid IPC mode: {spec.ipc!r}")
    if spec.uts not in ("", "host") and not spec.uts.startswith("/"):
        raise errors.InvalidArgument(f"invalid UTS mode: {spec.uts!r}")
    if not -1000 <= spec.oom_score_adj <= 1000:
        raise errors.InvalidArgument(f"invalid OOM score adjustment {spec.oom_score_adj}: -1000 to 1000")
    if spec.shm_size < 0:
        raise errors.InvalidArgument(f"invalid /dev/shm size: {spec.shm_size}")
    for name, soft, hard in spec.process.rlimits:
        if name not in linux.RLIMITS or soft < -1 or hard < -1:
            raise errors.InvalidArgument(f"invalid ulimit: {name[:64]}={soft}:{hard}")
    if spec.pid not in ("", "host") and not spec.pid.startswith("/"):
        raise errors.InvalidArgument(f"invalid PID mode: {spec.pid!r}")
    if spec.log.format not in ("json", "cri"):
        raise errors.InvalidArgument(f"invalid log format: {spec.log.format!r}")
    spec.resources.check()
    for cap in spec.cap_add + spec.cap_drop:
        if cap.upper() not in ("ALL", "CAP_ALL"):
            try:
                linux.capability_number(cap)
            except ValueError:
                raise errors.InvalidArgument(f"unknown capability: {cap!r}") from None
    if spec.userns is not None:
        _check_userns(spec)
    for path in spec.masked_paths + spec.readonly_paths:
        _check_path("masked or read-only", path)
    for key, _ in spec.sysctls:
        if not key or "/" in key or ".." in key.split("."):
            raise errors.InvalidArgument(f"invalid sysctl: {key!r}")
    for device in spec.devices:
        _check_path("device", device.path)
        if (device.type not in ("c", "b") or not device.permissions or set(device.permissions) - set("rwm")
                or os.path.normpath(device.path) == "/"):
            raise errors.InvalidArgument(f"invalid device: {device.path[:256]!r}")
    if spec.log.max_size < 0 or spec.log.max_files < 1:
        raise errors.InvalidArgument("invalid log options: max-size must be >= 0 and max-file >= 1")
    rows, cols = spec.process.console_size
    if not (0 < rows < 65536 and 0 < cols < 65536):
        raise errors.InvalidArgument(f"invalid terminal size: {rows}x{cols}")


def _check_userns(spec: ContainerSpec) -> None:
    assert spec.userns is not None
    if spec.privileged:
        raise errors.InvalidArgument("privileged mode is incompatible with user namespaces")
    if spec.network == "host":
        raise errors.InvalidArgument("cannot share the host's network namespace when user namespaces are enabled")
    if spec.userns.join and not spec.userns.join.startswith("/"):
        raise errors.InvalidArgument(f"invalid user namespace path: {spec.userns.join!r}")
    for what, idmap in (("uid", spec.userns.uid_map), ("gid", spec.userns.gid_map)):
        try:
            check_map(idmap, what)
        except ValueError as e:
            raise errors.InvalidArgument(str(e)) from None


def _process_wire(p: Process | ExecProcess, privileged: bool) -> wire.ExecProcess:
    return {
        "args": list(p.args), "env": list(p.env), "cwd": p.cwd, "user": p.user,
        "tty": p.tty, "open_stdin": p.open_stdin, "console_size": list(p.console_size),
        "privileged": privileged,
    }


def to_wire(spec: ContainerSpec, seccomp: Program | None = None) -> wire.Spec:
    """
    The plain-data form the shim reads (see L{ross.engine.runtime.wire}).
    C{seccomp} is the program compiled from C{spec.seccomp} (the runtime
    compiles it): without it the container's processes run unfiltered.
    """
    process: wire.Process = {
        **_process_wire(spec.process, spec.privileged),
        "additional_gids": list(spec.process.additional_gids),
        "rlimits": list(spec.process.rlimits),
        "cap_add": list(spec.cap_add), "cap_drop": list(spec.cap_drop),
        "no_new_privileges": spec.no_new_privileges,
        "seccomp": {"code": seccomp.code, "flags": seccomp.flags} if seccomp is not None else None,
    }
    hostname = spec.hostname or spec.id[:12]
    mounts: list[wire.Mount] = []
    for m in spec.mounts:
        if isinstance(m, BindMount):
            mounts.append({"type": "bind", "source": m.source, "target": m.target,
                           "readonly": m.readonly, "propagation": m.propagation,
                           "recursive_readonly": m.recursive_readonly, "recursive": m.recursive})
        else:
            mounts.append({"type": "tmpfs", "target": m.target, "size": m.size, "mode": m.mode,
                           "readonly": m.readonly, "options": list(m.options)})
    r = spec.resources
    return {
        "id": spec.id,
        "rootfs": [{"type": m.type, "source": m.source, "target": m.target, "options": list(m.options)}
                   for m in spec.rootfs],
        "process": process,
        "readonly": spec.readonly,
        "hostname": hostname,
        "domainname": spec.domainname,
        "hosts": spec.hosts if spec.hosts is not None else hosts_file(hostname),
        "resolv_conf": spec.resolv_conf,  # None: the shim reads the host's
        "mounts": mounts,
        "network": spec.network,
        "ipc": spec.ipc,
        "uts": spec.uts,
        "pid": spec.pid,
        "oom_score_adj": spec.oom_score_adj,
        "shm_size": spec.shm_size,
        "pause": spec.pause,
        "resources": {"memory": r.memory, "memory_swap": r.memory_swap, "nano_cpus": r.nano_cpus,
                      "cpu_shares": r.cpu_shares, "pids_limit": r.pids_limit, "cpuset_cpus": r.cpuset_cpus,
                      "cpuset_mems": r.cpuset_mems, "hugepage_limits": list(r.hugepage_limits),
                      "memory_reservation": r.memory_reservation, "oom_kill_disable": r.oom_kill_disable},
        "init": spec.init,
        "log": {"path": spec.log.path, "max_size": spec.log.max_size, "max_files": spec.log.max_files,
                "format": spec.log.format},
        "cgroup_parent": spec.cgroup_parent,
        "masked_paths": [] if spec.privileged else list(spec.masked_paths),
        "readonly_paths": [] if spec.privileged else list(spec.readonly_paths),
        "sysctls": [list(kv) for kv in spec.sysctls],
        "devices": [(d.path, d.type, d.major, d.minor, d.mode, d.uid, d.gid, d.permissions, d.source)
                    for d in spec.devices],
        "userns": None if spec.userns is None else {
            "uid_map": [list(line) for line in spec.userns.uid_map],
            "gid_map": [list(line) for line in spec.userns.gid_map],
            "join": spec.userns.join},
    }


def exec_to_wire(process: ExecProcess) -> wire.ExecProcess:
    """
    The plain-data form of an exec session's process the shim reads.
    """
    return _process_wire(process, process.privileged)


__all__ = ["ContainerSpec", "Process", "ExecProcess", "Resources", "LogConfig", "BindMount",
           "TmpfsMount", "UserNamespace", "IdRange", "validate", "to_wire", "exec_to_wire"]
