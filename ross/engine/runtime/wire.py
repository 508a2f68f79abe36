# -*- test-case-name: ross.test.test_runtime_wire -*-
"""
The shim's wire form: the plain data (marshal-able dicts, lists, str, int,
bool, bytes, None) a container crosses from the daemon to its shim as,
and the dicts the shim and the container's set-up hand each other.

L{ross.engine.runtime.spec.to_wire} builds a L{Spec} and
L{ross.engine.runtime.spec.exec_to_wire} an L{ExecProcess}; the shim
checks what it receives against its schema (L{ross.engine.runtime.shim.SPEC}
and its neighbours, which a test holds equal to these types) before it
uses any of it.

Types only: the shim, the container's set-up and the cgroups code import
this module under C{TYPE_CHECKING} alone, so a container start does not
pay for it.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict, Union

#: A request's fields as they came (see L{ross.engine.runtime.shim}); the
#: shim checks the parts it hands on (a spec, an exec process, resources).
Request = dict[str, Any]


class Seccomp(TypedDict):
    """A compiled filter (L{ross.engine.runtime.seccomp.Program})."""

    code: bytes
    flags: int


class ExecProcess(TypedDict):
    """
    An exec session's process as the daemon asks for it: empty C{cwd} and
    C{user} are the container's, C{env} goes over the container's.
    C{console_size} is [rows, cols].
    """

    args: list[str]
    env: list[str]
    cwd: str
    user: str
    tty: bool
    open_stdin: bool
    console_size: list[int]
    privileged: bool


class Process(ExecProcess):
    """
    A process as the container's set-up runs it, with the container's
    identity and limits: the container's command, or an exec session's
    once the shim merged it with the container's.
    """

    additional_gids: list[str]
    #: [name, soft, hard] (-1 unlimited), set before the command runs.
    rlimits: list[tuple[str, int, int]]
    cap_add: list[str]
    cap_drop: list[str]
    no_new_privileges: bool
    seccomp: Seccomp | None


class RootfsMount(TypedDict):
    """A mount of the root filesystem, as the snapshotter describes it."""

    type: str
    source: str
    target: str
    options: list[str]


class BindMount(TypedDict):
    """A host path mounted in the container."""

    type: Literal["bind"]
    source: str
    target: str
    readonly: bool
    propagation: str
    recursive_readonly: bool
    recursive: bool


class TmpfsMount(TypedDict):
    """A tmpfs in the container; C{size} 0 is the kernel's default."""

    type: Literal["tmpfs"]
    target: str
    size: int
    mode: int
    readonly: bool
    options: list[str]


Mount = Union[BindMount, TmpfsMount]


class Resources(TypedDict, total=False):
    """
    cgroup limits (L{ross.engine.runtime.spec.Resources}); 0 or absent is
    not set: a create sends them all, an update those it changes.
    C{hugepage_limits} are (page size, bytes) pairs.
    """

    memory: int
    memory_swap: int
    nano_cpus: int
    cpu_shares: int
    pids_limit: int
    cpuset_cpus: str
    cpuset_mems: str
    hugepage_limits: list[tuple[str, int]]
    memory_reservation: int
    oom_kill_disable: bool


class Log(TypedDict):
    """Where and how the shim writes the log (L{ross.engine.runtime.spec.LogConfig})."""

    path: str
    max_size: int
    max_files: int
    format: str


class UserNamespace(TypedDict):
    """The maps' lines as [inside, outside, count], and a namespace to join ("": none)."""

    uid_map: list[list[int]]
    gid_map: list[list[int]]
    join: str


class Storage(TypedDict):
    """What a container's files are: its root filesystem and its mounts."""

    rootfs: list[RootfsMount]
    mounts: list[Mount]
    readonly: bool


class Spec(Storage):
    """
    The spec of C{create}: a L{ross.engine.runtime.spec.ContainerSpec}
    with every default filled in (C{hosts} written out, C{hostname} set).
    C{resolv_conf} None is the host's; C{sysctls} are [key, value].
    """

    id: str
    process: Process
    hostname: str
    domainname: str
    hosts: str
    resolv_conf: str | None
    network: str
    ipc: str
    uts: str
    pid: str
    oom_score_adj: int
    shm_size: int
    pause: bool
    resources: Resources
    init: bool
    log: Log
    cgroup_parent: str
    masked_paths: list[str]
    readonly_paths: list[str]
    sysctls: list[list[str]]
    #: [path, "c" or "b", major, minor, mode, uid, gid, cgroup permissions,
    #: the host's node]
    devices: list[tuple[str, str, int, int, int, int, int, str, str]]
    userns: UserNamespace | None


class CgroupGroup(TypedDict):
    """
    One of a container's cgroups (L{ross.engine.runtime.cgroups.plan}),
    recorded in the shim's C{state.json} for the daemon to remove.
    """

    path: str
    version: int
    controllers: list[str]
    mount: str
    options: str


class ExitStatus(TypedDict):
    """How a process ended, as the shim reports it and records it in C{exit.json}."""

    exit_code: int
    signal: int
    oom_killed: bool
    started_ns: int
    finished_ns: int
    error: str
