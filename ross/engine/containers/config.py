# -*- test-case-name: ross.test.test_containers_config -*-
"""
A container's configuration: what the client asked for, validated, and
merged with the image's config the way docker merges them.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import re
import signal as _signal
import types
import typing
from typing import Any, Iterable, Mapping, Sequence, TypeVar

import attrs

from ross.engine.etcfiles import HOST_GATEWAY
from ross.engine.runtime import linux, seccomp
from ross.engine.runtime.spec import ExecProcess, Resources, check_mount_target
from ross.errors import InvalidArgument, NotFound
from ross.humanize import parse_bytes

T = TypeVar("T", bound=attrs.AttrsInstance)

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
RESTART_POLICIES = ("no", "always", "on-failure", "unless-stopped")
# Names are directory names: at most 255 bytes.
# A network's name (the network manager says whether it exists).
NETWORK_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
# --network container:NAME: the network namespace of another container.
CONTAINER_MODE = "container:"
MAC_ADDRESS = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")
VOLUME_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{1,254}$")

@attrs.frozen
class RestartPolicy:
    name: str = "no"
    maximum_retry_count: int = 0


@attrs.frozen
class MountSpec:
    """
    A mount as --mount describes it (and -v, --tmpfs after parsing).
    """

    type: str
    target: str
    source: str = ""
    read_only: bool = False
    propagation: str = ""
    tmpfs_size: int = 0
    tmpfs_mode: int = 0
    #: Programs on a tmpfs may run (--tmpfs DIR:exec); docker's tmpfs are
    #: noexec otherwise.
    tmpfs_exec: bool = False
    #: The tmpfs's other options for the kernel (L{TMPFS_OPTIONS}).
    tmpfs_options: tuple[str, ...] = ()
    #: An empty volume is not filled with what the image has at the target
    #: (docker's nocopy).
    volume_nocopy: bool = False
    #: A read-only bind whose submounts keep their own flags (docker's
    #: bind-recursive=writable, Kubernetes' readOnly without
    #: recursiveReadOnly); else read-only is recursive.
    read_only_non_recursive: bool = False
    #: A bind of the source alone, without the mounts below it (docker's
    #: bind-nonrecursive, bind-recursive=disabled).
    non_recursive: bool = False
    #: The labels and local driver's options of a volume the mount creates
    #: (docker's volume-label, volume-opt): (key, value) pairs.
    volume_labels: tuple[tuple[str, str], ...] = ()
    volume_options: tuple[tuple[str, str], ...] = ()


@attrs.frozen
class PortBinding:
    container_port: str
    host_ip: str = ""
    host_port: str = ""


@attrs.frozen
class LogConfig:
    """
    docker's log drivers "json-file" and "none", and "cri": Kubernetes'
    format at C{path}, where kubelet asked for it (CreateContainer).
    """

    type: str = "json-file"
    max_size: int = 0
    max_file: int = 1
    path: str = ""


@attrs.frozen
class HealthConfig:
    """
    A health check as docker's HealthConfig: C{test} is ("CMD", args...),
    ("CMD-SHELL", command) or ("NONE",); durations in nanoseconds; zero
    (and an empty C{test}) means "not given": the image's, then docker's
    defaults (see L{ross.engine.containers.health}).
    """

    test: tuple[str, ...] = ()
    interval_ns: int = 0
    timeout_ns: int = 0
    start_period_ns: int = 0
    retries: int = 0

    def to_json(self) -> dict[str, Any]:
        """
        docker's JSON of it (an image config's, inspect's): only the fields
        set, as docker's omitempty fields.
        """
        return {key: value for key, value in (
            ("Test", list(self.test)), ("Interval", self.interval_ns), ("Timeout", self.timeout_ns),
            ("StartPeriod", self.start_period_ns), ("Retries", self.retries)) if value}


@attrs.frozen
class ContainerConfig:
    """
    The process and identity of a container. C{cmd}/C{entrypoint} of None
    mean "not given".
    """

    image: str
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""
    hostname: str = ""
    domainname: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict)
    tty: bool = False
    open_stdin: bool = False
    stdin_once: bool = False
    stop_signal: str = ""
    stop_timeout: int | None = None
    healthcheck: HealthConfig | None = None
    exposed_ports: tuple[str, ...] = ()
    group_add: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()


@attrs.frozen
class Ulimit:
    """One resource limit (--ulimit nofile=1024:2048); -1 is unlimited."""

    name: str
    soft: int
    hard: int


@attrs.frozen
class Device:
    """
    A host device given to the container (--device): the node at
    C{path_on_host} (a directory: every device under it) made at
    C{path_in_container} (the same path when empty), with the cgroup's
    C{cgroup_permissions} ("r", "w", "m" for mknod) over it.
    """

    path_on_host: str
    path_in_container: str = ""
    cgroup_permissions: str = "rwm"


#: The names --ulimit takes (setrlimit's resources, as docker names them).
ULIMITS = ("core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc", "rss",
           "rtprio", "rttime", "sigpending", "stack", "as")


@attrs.frozen
class HostConfig:
    binds: tuple[str, ...] = ()
    mounts: tuple[MountSpec, ...] = ()
    tmpfs: Mapping[str, str] = attrs.field(factory=dict)
    auto_remove: bool = False
    restart_policy: RestartPolicy = RestartPolicy()
    init: bool = False
    network_mode: str = ""
    port_bindings: tuple[PortBinding, ...] = ()
    publish_all_ports: bool = False
    dns: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()
    resources: Resources = Resources()
    readonly_rootfs: bool = False
    cap_add: tuple[str, ...] = ()
    cap_drop: tuple[str, ...] = ()
    privileged: bool = False
    security_opt: tuple[str, ...] = ()
    log_config: LogConfig = LogConfig()
    ip: str = ""
    network_aliases: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    mac_address: str = ""
    #: "host" opts out of the daemon's --userns-remap; "" follows it.
    userns_mode: str = ""
    ip6: str = ""
    #: "" (its own), "host", or "container:ID": another's IPC namespace.
    ipc_mode: str = ""
    #: "" (its own) or "container:ID": another's UTS namespace, hostname
    #: and all.
    uts_mode: str = ""
    #: "" (its own, where its command is PID 1), "host", or "container:ID":
    #: another's PID namespace (a pod's shared one, whose PID 1 is the
    #: sandbox's).
    pid_mode: str = ""
    #: The processes' OOM score adjustment (-1000..1000); 0 leaves the
    #: daemon's.
    oom_score_adj: int = 0
    #: Bytes of /dev/shm; 0 for 64 MiB (docker's).
    shm_size: int = 0
    #: Resource limits of the container's processes, execs' too (--ulimit).
    ulimits: tuple[Ulimit, ...] = ()
    #: Host devices made in the container, and allowed by its cgroup.
    devices: tuple[Device, ...] = ()
    #: Containers whose volumes and binds this one mounts too, as
    #: "NAME[:ro|:rw]" (--volumes-from), as given.
    volumes_from: tuple[str, ...] = ()
    #: The container runs no command: its PID 1 holds its namespaces until
    #: stopped (a pod sandbox, whose containers join them).
    pause: bool = False
    #: Paths hidden in the container, and paths made read-only; None for
    #: the runtime's defaults (docker's lists). Privileged: none.
    masked_paths: tuple[str, ...] | None = None
    readonly_paths: tuple[str, ...] | None = None
    #: Namespaced kernel parameters set in the container's own network
    #: and IPC namespaces ("net.core.somaxconn": "1024").
    sysctls: Mapping[str, str] = attrs.field(factory=dict)


# ---------------------------------------------------------------- persistence


def unstructure(value: Any) -> Any:
    """
    Plain JSON-able data for an attrs record (tuples become lists).
    """
    return attrs.asdict(value) if attrs.has(type(value)) else value


#: A record class's field types, resolved once (not per record read: a
#: daemon restart reads every container's).
_type_hints = functools.cache(typing.get_type_hints)


def structure(cls: type[T], data: Any) -> T:
    """
    The attrs record C{cls} from L{unstructure}'s output; fields missing
    from older records take their defaults.
    """
    hints = _type_hints(cls)
    kwargs = {}
    for field in attrs.fields(cls):
        if field.name in data:
            kwargs[field.name] = _structure_value(hints[field.name], data[field.name])
    return cls(**kwargs)


def _structure_value(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _structure_value(inner[0], value)
    if isinstance(hint, type) and attrs.has(hint):
        return structure(hint, value)
    if origin is tuple:
        return tuple(_structure_value(args[0], v) for v in value)
    if origin in (dict, Mapping, typing.Mapping) or hint is dict:
        return dict(value)
    return value


# ---------------------------------------------------------------- validation


def normalize_capability(name: str) -> str:
    """
    "net_admin", "NET_ADMIN" or "CAP_NET_ADMIN" as "CAP_NET_ADMIN"; "ALL"
    stays. InvalidArgument for names the kernel does not know.
    """
    upper = name.strip().upper()
    if upper == "ALL":
        return upper
    try:
        return "CAP_" + linux.CAPABILITIES[linux.capability_number(upper)]
    except ValueError:
        raise InvalidArgument(f"unknown capability: {name!r}")


def validate_device(device: Device) -> None:
    """
    Refuse a --device that names no absolute paths or other permissions
    than "r", "w" and "m" (docker's messages).
    """
    for path in (device.path_on_host, device.path_in_container, device.cgroup_permissions):
        _text("device", path)
    given = f"{device.path_on_host}:{device.path_in_container}:{device.cgroup_permissions}"[:200]
    if not device.path_on_host.startswith("/"):
        raise InvalidArgument(f"invalid device specification {given!r}: {device.path_on_host[:100]!r} "
                              "is not an absolute path")
    if device.path_in_container and not device.path_in_container.startswith("/"):
        raise InvalidArgument(f"invalid device specification {given!r}: {device.path_in_container[:100]!r} "
                              "is not an absolute path")
    perms = device.cgroup_permissions
    if not perms or set(perms) - set("rwm") or len(set(perms)) != len(perms):
        raise InvalidArgument(f"invalid device mode: {perms[:20]!r}: one or more of r, w and m")


def validate_window(rows: int, cols: int) -> None:
    """
    Refuse a terminal size no terminal can have.
    """
    if not (0 < rows < 65536 and 0 < cols < 65536):
        raise InvalidArgument(f"invalid terminal size {rows}x{cols}")


def validate_stop_timeout(timeout: int | None) -> None:
    """
    Refuse a stop timeout docker refuses: seconds (0 or more), -1 to wait
    forever, None for the container's own.
    """
    if timeout is not None and timeout < -1:
        raise InvalidArgument("invalid stop timeout: must be -1 (wait forever) or more")


def signal_number(name: str) -> int:
    """
    The number of a signal given as "TERM", "SIGTERM" or "15".
    """
    text = name.strip().upper()
    if re.fullmatch(r"[0-9]{1,3}", text):
        number = int(text)
        if 0 < number < 65:
            return number
        raise InvalidArgument(f"invalid signal: {name}")
    if not text.startswith("SIG"):
        text = "SIG" + text
    try:
        return int(getattr(_signal.Signals, text))
    except AttributeError:
        raise InvalidArgument(f"invalid signal: {name}")


def parse_bind(spec: str) -> MountSpec:
    """
    A ``-v`` entry: ``/host:/ctr[:opts]``, ``volume:/ctr[:opts]`` or
    ``/ctr`` (an anonymous volume).
    """
    parts = spec.split(":")
    if len(parts) == 1:
        source, target, options = "", parts[0], ""
    elif len(parts) == 2:
        if parts[1] in ("ro", "rw") or not parts[1].startswith("/"):
            raise InvalidArgument(f"invalid volume specification: '{spec}'")
        source, target, options = parts[0], parts[1], ""
    elif len(parts) == 3:
        source, target, options = parts
    else:
        raise InvalidArgument(f"invalid volume specification: '{spec}'")
    if len(parts) > 1 and not source:
        raise InvalidArgument(f"invalid volume specification: '{spec}': empty source")
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid volume specification: '{spec}': mount path must be absolute")
    read_only = nocopy = False
    propagation = ""
    kinds: list[str] = []
    for opt in filter(None, options.split(",")):
        if opt in ("ro", "rw"):
            read_only = opt == "ro"
            kinds.append("rw")
        elif opt in ("rprivate", "private", "rslave", "slave", "rshared", "shared"):
            propagation = opt
            kinds.append("propagation")
        elif opt == "nocopy":
            nocopy = True
            kinds.append("nocopy")
        elif opt in ("z", "Z", "consistent", "cached", "delegated"):
            continue
        else:
            raise InvalidArgument(f"invalid volume specification: '{spec}': unknown option {opt!r}")
    if len(kinds) != len(set(kinds)):
        # Two of a kind ("rw,ro"): docker's ValidMountMode refuses them.
        raise InvalidArgument(f"invalid volume specification: '{spec}': invalid mode: {options}")
    if not source:
        return MountSpec(type="volume", target=target, read_only=read_only, volume_nocopy=nocopy)
    if source.startswith("/"):
        return MountSpec(type="bind", source=os.path.normpath(source), target=target,
                         read_only=read_only, propagation=propagation)
    if not VOLUME_NAME.match(source):
        raise InvalidArgument(
            f'"{source}" includes invalid characters for a local volume name, '
            "only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        )
    return MountSpec(type="volume", source=source, target=target, read_only=read_only, volume_nocopy=nocopy)


#: --tmpfs options passed to the kernel as they are: NAME=NUMBER (its
#: owner, its inode limit) and flags (its access times).
TMPFS_OPTIONS = {"uid": True, "gid": True, "nr_inodes": True, "nr_blocks": True, "noatime": False,
                 "atime": False, "relatime": False, "strictatime": False, "nodiratime": False}


def parse_tmpfs(target: str, options: str) -> MountSpec:
    if not target.startswith("/"):
        raise InvalidArgument(f"invalid tmpfs mount {target!r}: path must be absolute")
    size = mode = 0
    read_only = executable = False
    kept: list[str] = []
    for opt in filter(None, options.split(",")):
        key, _, value = opt.partition("=")
        if key == "size":
            size = parse_bytes(value)
        elif key == "mode":
            try:
                mode = int(value, 8)
            except ValueError:
                raise InvalidArgument(f"invalid tmpfs mode {value!r}")
        elif key == "ro":
            read_only = True
        elif key in ("exec", "noexec"):
            executable = key == "exec"
        elif key in ("rw", "nosuid", "suid", "nodev", "dev"):
            continue
        elif key in TMPFS_OPTIONS and TMPFS_OPTIONS[key] == bool(value) and (not value or value.isdigit()):
            kept.append(opt)
        else:
            raise InvalidArgument(f"invalid tmpfs option {opt!r}")
    return MountSpec(type="tmpfs", target=target, read_only=read_only, tmpfs_size=size, tmpfs_mode=mode,
                     tmpfs_exec=executable, tmpfs_options=tuple(kept))


def mounts_of(host: HostConfig, image_volumes: Sequence[str] = ()) -> list[MountSpec]:
    """
    Every mount of the container, from -v, --mount, --tmpfs and the image's
    VOLUMEs (anonymous volumes unless something else is mounted there).
    Duplicate targets are refused.
    """
    mounts = [parse_bind(b) for b in host.binds]
    mounts += list(host.mounts)
    mounts += [parse_tmpfs(t, o) for t, o in sorted(host.tmpfs.items())]
    seen: set[str] = set()
    for m in mounts:
        target = os.path.normpath(m.target)
        if target in seen:
            raise InvalidArgument(f"Duplicate mount point: {m.target}")
        check_mount_target(target)
        seen.add(target)
    for path in image_volumes:
        check_mount_target(os.path.normpath("/" + path))
        if os.path.normpath(path) not in seen:
            mounts.append(MountSpec(type="volume", target=path))
            seen.add(os.path.normpath(path))
    return mounts


def create_warnings(host: HostConfig) -> list[str]:
    """
    What docker's create warns of in C{host}: what is taken and means
    nothing.
    """
    if host.network_mode == "host" and (host.port_bindings or host.publish_all_ports):
        return ["Published ports are discarded when using host network mode"]
    return []


def validate_mount(m: MountSpec) -> None:
    if m.type not in ("bind", "volume", "tmpfs"):
        raise InvalidArgument(f"invalid mount type {m.type!r}: use bind, volume or tmpfs")
    if not m.target.startswith("/"):
        raise InvalidArgument(f"invalid mount target {m.target!r}: must be an absolute path")
    check_mount_target(m.target)
    if m.type == "bind":
        if not m.source.startswith("/"):
            raise InvalidArgument(f"invalid mount config for type \"bind\": invalid source path {m.source!r}: must be absolute")
    if m.type == "volume" and m.source and not VOLUME_NAME.match(m.source):
        raise InvalidArgument(f"invalid volume name {m.source!r}")
    if m.type == "tmpfs" and m.source:
        raise InvalidArgument('invalid mount config for type "tmpfs": field Source must not be specified')
    # Options of another type of mount, which would mean nothing (docker's
    # words).
    if m.type != "volume" and (m.volume_nocopy or m.volume_labels or m.volume_options):
        raise InvalidArgument(f"invalid mount config: cannot mix 'volume-*' options with mount type '{m.type}'")
    if m.type != "tmpfs" and (m.tmpfs_size or m.tmpfs_mode or m.tmpfs_exec or m.tmpfs_options):
        raise InvalidArgument(f"invalid mount config: cannot mix 'tmpfs-*' options with mount type '{m.type}'")
    if m.type != "bind" and m.propagation:
        raise InvalidArgument("invalid mount config: propagation only applies to bind mounts")
    if m.propagation and m.propagation not in ("rprivate", "private", "rslave", "slave", "rshared", "shared"):
        raise InvalidArgument(f"invalid mount config: invalid propagation mode {m.propagation[:64]!r}")
    if m.tmpfs_size < 0:
        raise InvalidArgument("invalid mount config: tmpfs size cannot be negative")
    if m.read_only_non_recursive and (m.type != "bind" or not m.read_only):
        raise InvalidArgument("invalid mount config: non-recursive read-only applies to read-only bind mounts")
    if m.non_recursive and m.type != "bind":
        raise InvalidArgument("invalid mount config: a non-recursive bind applies to bind mounts")
    _text("mount path", m.source + m.target)


# Beyond these a request is abuse, not configuration: a few of them make a
# container listing larger than a gRPC message.
MAX_LABELS_BYTES = 256 * 1024
MAX_PROCESS_BYTES = 1024 * 1024
MAX_HOSTNAME = 64


def _text(what: str, value: str) -> None:
    if "\0" in value:
        raise InvalidArgument(f"invalid {what} {value[:64]!r}: contains a NUL byte")


def _ip(what: str, value: str) -> None:
    try:
        ipaddress.ip_address(value.strip("[]"))
    except ValueError:
        raise InvalidArgument(f"invalid {what}: {value[:64]!r} is not an IP address")


def _port(spec: str, what: str) -> None:
    number, _, proto = spec.partition("/")
    if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("", "tcp", "udp", "sctp"):
        raise InvalidArgument(f"invalid {what}: {spec[:64]!r}")


# docker's containertypes.MinimumDuration.
MIN_HEALTH_DURATION_NS = 1_000_000


def validate_healthcheck(h: HealthConfig) -> None:
    """
    Refuse a health check docker refuses at create, with its messages: a
    duration under 1 ms (zero is "not given"), negative retries, an unknown
    test type or a test without a command.
    """
    for what, ns in (("Interval", h.interval_ns), ("Timeout", h.timeout_ns), ("StartPeriod", h.start_period_ns)):
        if ns != 0 and ns < MIN_HEALTH_DURATION_NS:
            raise InvalidArgument(f"{what} in Healthcheck cannot be less than 1ms")
    if h.retries < 0:
        raise InvalidArgument("Retries in Healthcheck cannot be negative")
    if not h.test:
        return
    kind = h.test[0]
    if kind not in ("NONE", "CMD", "CMD-SHELL"):
        raise InvalidArgument(f"invalid health check type {kind[:64]!r}: use CMD, CMD-SHELL or NONE")
    if kind != "NONE" and not any(h.test[1:]):
        raise InvalidArgument(f"invalid health check: {kind} needs a command")
    for value in h.test:
        _text("health check argument", value)
    if sum(len(v) for v in h.test) > MAX_PROCESS_BYTES:
        raise InvalidArgument("health check command exceeds 1 MiB")


#: A cpuset list: numbers and ranges, comma-separated ("0-3,6").
_CPUSET = re.compile(r"^\d{1,4}(-\d{1,4})?(,\d{1,4}(-\d{1,4})?)*$")


def parse_cpuset(flag: str, text: str) -> set[int]:
    """
    The numbers of a cpuset list ("0-3,6"); InvalidArgument naming
    C{flag} for anything else.
    """
    if not _CPUSET.match(text):
        raise InvalidArgument(f"invalid value {text[:64]!r} for {flag}: use a list like 0-3,6")
    numbers: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        if last and int(last) < int(first):
            raise InvalidArgument(f"invalid value {text[:64]!r} for {flag}: range {part} runs backwards")
        numbers.update(range(int(first), int(last or first) + 1))
    return numbers


@functools.cache
def hugepage_sizes() -> frozenset[str]:
    """
    The huge page sizes this host has, named as the hugetlb cgroup's files
    ("2MB", "1GB"), from /sys/kernel/mm/hugepages (read once).
    """
    sizes = set()
    try:
        names = os.listdir("/sys/kernel/mm/hugepages")
    except OSError:
        names = []
    for name in names:
        m = re.fullmatch(r"hugepages-(\d+)kB", name)
        if m:
            kb = int(m.group(1))
            sizes.add(f"{kb >> 20}GB" if kb >= 1 << 20 else f"{kb >> 10}MB" if kb >= 1 << 10 else f"{kb}KB")
    return frozenset(sizes)


def validate_hugepages(limits: Sequence[tuple[str, int]]) -> None:
    """
    Refuse huge page limits of a size this host does not have, a size
    named twice, or a limit out of range.
    """
    sizes = hugepage_sizes()
    seen = set()
    for size, limit in limits:
        if size not in sizes:
            have = ", ".join(sorted(sizes)) or "none"
            raise InvalidArgument(f"invalid huge page size {size[:32]!r}: this host has {have}")
        if size in seen:
            raise InvalidArgument(f"huge page size {size} is limited twice")
        seen.add(size)
        if not 0 <= limit < 1 << 63:
            raise InvalidArgument(f"invalid huge page limit {limit} for {size}")


def _environment(entries: Iterable[str]) -> None:
    """
    Refuse an environment entry docker refuses: empty, or without a name.
    """
    for entry in entries:
        if not entry or entry.startswith("="):
            raise InvalidArgument(f"invalid environment variable: {entry!r}")


def validate_exec(process: ExecProcess) -> None:
    """
    Refuse an exec session's process docker refuses, with its messages: no
    command, a bad environment entry, a NUL byte anywhere, a working
    directory that is not absolute.
    """
    if not process.args:
        raise InvalidArgument("No exec command specified")
    _environment(process.env)
    for value in [*process.args, *process.env, process.user, process.cwd]:
        _text("argument", value)
    if process.cwd and not process.cwd.startswith("/"):
        raise InvalidArgument(f"the working directory '{process.cwd[:256]}' is invalid, it needs to be an absolute path")


def validate(config: ContainerConfig, host: HostConfig, ncpu: int) -> None:
    """
    Refuse what docker refuses at create, with its messages, and anything a
    container could not start with: nothing is created for a bad request.
    """
    _environment(config.env)
    process = [*config.env, *(config.cmd or ()), *(config.entrypoint or ()), config.user, config.working_dir,
               config.hostname, config.domainname, *config.group_add]
    for value in process:
        _text("argument", value)
    if sum(len(v) for v in process) > MAX_PROCESS_BYTES:
        raise InvalidArgument("command, environment and user together exceed 1 MiB")
    if sum(len(k) + len(v) for k, v in config.labels.items()) > MAX_LABELS_BYTES:
        raise InvalidArgument("labels exceed 256 KiB")
    for key in config.labels:
        if not key:
            raise InvalidArgument("invalid label: the key is empty")
    if config.working_dir and not config.working_dir.startswith("/"):
        raise InvalidArgument(f"the working directory '{config.working_dir}' is invalid, it needs to be an absolute path")
    if len(config.hostname) > MAX_HOSTNAME:
        raise InvalidArgument(f"invalid hostname: longer than {MAX_HOSTNAME} characters")
    if config.healthcheck is not None:
        validate_healthcheck(config.healthcheck)
    for port in config.exposed_ports:
        _port(port, "exposed port")
    for binding in host.port_bindings:
        _port(binding.container_port, "container port")
        if binding.host_port:
            host_port_range(binding.host_port)
        if binding.host_ip:
            _ip("host IP", binding.host_ip)
    if host.ip:
        _ip("--ip", host.ip)
    if host.ip6:
        _ip("--ip6", host.ip6)
    for server in host.dns:
        _ip("--dns server", server)
    for entry in host.dns_search + host.dns_options:
        if not entry or len(entry) > 253 or any(c.isspace() for c in entry):
            raise InvalidArgument(f"invalid DNS search domain or option {entry[:64]!r}")
    if host.mac_address and not MAC_ADDRESS.fullmatch(host.mac_address):
        raise InvalidArgument(f"invalid MAC address: {host.mac_address[:64]!r}")
    if host.mac_address and int(host.mac_address[:2], 16) & 1:
        raise InvalidArgument(f"invalid MAC address {host.mac_address}: a multicast address")
    validate_update(host, ncpu)
    for cap in host.cap_add + host.cap_drop:
        normalize_capability(cap)
    if config.stop_signal:
        signal_number(config.stop_signal)
    validate_stop_timeout(config.stop_timeout)
    options = security_options(host.security_opt)
    if options.get("no-new-privileges", "true") not in BOOLEANS:
        raise InvalidArgument(f"Invalid --security-opt: no-new-privileges={options['no-new-privileges'][:64]!r}")
    seccomp.profile_for(options, host.privileged)
    if host.log_config.type not in ("json-file", "none", "", "cri"):
        raise InvalidArgument(f"logger: no log driver named '{host.log_config.type}' is registered")
    if host.log_config.type == "cri" and not os.path.isabs(host.log_config.path):
        raise InvalidArgument(f"invalid log path {host.log_config.path[:256]!r}: must be absolute")
    _text("log path", host.log_config.path)
    if host.ipc_mode not in ("", "private", "shareable", "none", "host") \
            and not host.ipc_mode.startswith(CONTAINER_MODE):
        raise InvalidArgument(f"invalid IPC mode: {host.ipc_mode[:64]!r}")
    if host.uts_mode not in ("", "host") and not host.uts_mode.startswith(CONTAINER_MODE):
        raise InvalidArgument(f"invalid UTS mode: {host.uts_mode[:64]!r}")
    if not -1000 <= host.oom_score_adj <= 1000:
        raise InvalidArgument(f"Invalid value {host.oom_score_adj}, range for oom score adj is [-1000, 1000]")
    if host.shm_size < 0:
        raise InvalidArgument("SHM size can not be less than 0")
    seen: set[str] = set()
    for limit in host.ulimits:
        if limit.name not in ULIMITS:
            raise InvalidArgument(f"invalid ulimit type: {limit.name[:64]}")
        if limit.name in seen:
            raise InvalidArgument(f"ulimit {limit.name} given twice")
        seen.add(limit.name)
        if limit.soft < -1 or limit.hard < -1:
            raise InvalidArgument(f"invalid ulimit {limit.name}: a limit is a number of 0 or more, or -1 (unlimited)")
        if limit.hard != -1 and (limit.soft == -1 or limit.soft > limit.hard):
            raise InvalidArgument(f"ulimit soft limit must be less than or equal to hard limit: "
                                  f"{limit.soft} > {limit.hard}")
    for device in host.devices:
        validate_device(device)
    for entry in host.volumes_from:
        _text("volumes-from", entry)
        source, _, mode = entry.partition(":")
        if not source or mode not in ("", "ro", "rw"):
            raise InvalidArgument(f"invalid volumes-from {entry[:100]!r}: NAME, NAME:ro or NAME:rw")
    if host.pid_mode not in ("", "host") and not host.pid_mode.startswith(CONTAINER_MODE):
        raise InvalidArgument(f"invalid PID mode: {host.pid_mode[:64]!r}")
    for mode in (host.ipc_mode, host.uts_mode, host.pid_mode):
        if mode == CONTAINER_MODE:
            raise InvalidArgument("invalid namespace mode container: give the container to join (container:NAME)")
    if host.log_config.max_size < 0 or host.log_config.max_file < 0:
        raise InvalidArgument("invalid log options: max-size and max-file must be positive")
    for extra in host.extra_hosts:
        name, sep, ip = extra.partition(":")
        if not sep or not name or not ip:
            raise InvalidArgument(f"invalid argument \"{extra}\" for \"--add-host\" flag: bad format")
        if ip != HOST_GATEWAY:
            _ip("--add-host address", ip)
    if host.network_mode.startswith(CONTAINER_MODE):
        _validate_container_mode(config, host)
    elif (host.network_mode not in ("", "bridge", "host", "none", "default")
          and not NETWORK_NAME.match(host.network_mode)):
        raise NotFound(f"network {host.network_mode[:64]} not found")
    if host.userns_mode not in ("", "host"):
        raise InvalidArgument(f"invalid USER mode: {host.userns_mode[:64]!r} (only \"host\" is supported)")
    for path in (host.masked_paths or ()) + (host.readonly_paths or ()):
        if not path.startswith("/"):
            raise InvalidArgument(f"invalid masked or read-only path {path[:256]!r}: must be absolute")
        _text("masked or read-only path", path)
    validate_sysctls(host)


#: The kernel parameters a container may set: those of the namespaces it
#: owns (docker's and runc's list). Prefixes end with ".".
IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem", "kernel.shmall",
               "kernel.shmmax", "kernel.shmmni", "kernel.shm_rmid_forced", "fs.mqueue.")
NET_SYSCTLS = ("net.",)
_SYSCTL = re.compile(r"^[a-z0-9_]+(\.[a-zA-Z0-9_-]+)+$")


def validate_sysctls(host: HostConfig) -> None:
    """
    Refuse a sysctl the container cannot own: one not namespaced, or one
    of a namespace it shares with the host.
    """
    for key, value in host.sysctls.items():
        if not _SYSCTL.match(key) or "\n" in value:
            raise InvalidArgument(f"invalid sysctl {key[:128]!r}")
        if _in(key, IPC_SYSCTLS):
            if host.ipc_mode == "host" or host.ipc_mode.startswith(CONTAINER_MODE):
                raise InvalidArgument(f"sysctl {key!r} is not allowed: the container does not own its IPC namespace")
        elif _in(key, NET_SYSCTLS):
            if host.network_mode == "host" or host.network_mode.startswith(CONTAINER_MODE):
                raise InvalidArgument(
                    f"sysctl {key!r} is not allowed: the container does not own its network namespace")
        else:
            raise InvalidArgument(f"sysctl {key!r} is not allowed: not a namespaced kernel parameter")


def _in(key: str, names: tuple[str, ...]) -> bool:
    return any(key.startswith(n) if n.endswith(".") else key == n for n in names)


def validate_update(host: HostConfig, ncpu: int) -> None:
    """
    Refuse a restart policy or limits docker refuses (at create, and at
    update, which changes nothing else).
    """
    policy = host.restart_policy
    if policy.name not in RESTART_POLICIES:
        raise InvalidArgument(f"invalid restart policy '{policy.name}'")
    if policy.maximum_retry_count and policy.name != "on-failure":
        raise InvalidArgument("maximum retry count cannot be used with restart policy '%s'" % policy.name)
    if policy.maximum_retry_count < 0:
        raise InvalidArgument("invalid restart policy: maximum retry count cannot be negative")
    if host.auto_remove and policy.name not in ("", "no"):
        raise InvalidArgument("Conflicting options: --restart and --rm")
    r = host.resources
    r.check()
    if r.cpuset_cpus:
        wanted = parse_cpuset("cpuset-cpus", r.cpuset_cpus)
        if max(wanted) >= ncpu:
            raise InvalidArgument(f"Requested CPUs are not available - requested {r.cpuset_cpus}, "
                                  f"available: {'0' if ncpu == 1 else f'0-{ncpu - 1}'}")
    if r.cpuset_mems:
        parse_cpuset("cpuset-mems", r.cpuset_mems)
    validate_hugepages(r.hugepage_limits)
    if r.nano_cpus and not (10_000_000 <= r.nano_cpus <= ncpu * 1_000_000_000):
        raise InvalidArgument(f"Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available")


def validate_remapped(host: HostConfig) -> None:
    """
    Refuse, as docker does, what a container in a user namespace of its
    own (the daemon remaps, C{userns_mode} is not "host") cannot have.
    """
    if host.userns_mode == "host":
        return
    if host.privileged:
        raise InvalidArgument("privileged mode is incompatible with user namespaces. You must run the container "
                              "in the host namespace when running privileged mode")
    if host.network_mode == "host":
        raise InvalidArgument("cannot share the host's network namespace when user namespaces are enabled")
    if host.ipc_mode not in ("", "private", "shareable", "none") or host.uts_mode or host.pid_mode:
        raise InvalidArgument("joining another IPC, UTS or PID namespace is not supported with user namespaces")


def _validate_container_mode(config: ContainerConfig, host: HostConfig) -> None:
    """
    --network container:NAME takes another container's network as it is:
    what would configure one of its own conflicts, as in docker.
    """
    if not host.network_mode[len(CONTAINER_MODE):]:
        raise InvalidArgument("invalid network mode container: give the container to join (container:NAME)")
    conflicts = [
        (config.hostname, "hostname"),
        (host.dns or host.dns_search or host.dns_options, "dns"),
        (host.extra_hosts, "custom host-to-IP mapping"),
        (host.mac_address, "mac-address"),
        (host.port_bindings or host.publish_all_ports, "port publishing"),
        (host.ip or host.ip6 or host.network_aliases, "network-scoped address and aliases"),
    ]
    for given, what in conflicts:
        if given:
            raise InvalidArgument(f"conflicting options: {what} and the container type network mode")


def host_port_range(text: str) -> tuple[int, int]:
    """
    A published host port, "8080" or a range to take a free one of,
    "8000-8010": (first, last). InvalidArgument otherwise.
    """
    low, sep, high = text.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise InvalidArgument(f"invalid host port: {text[:64]!r}")
    first, last = int(low), int(high) if sep else int(low)
    if first > last or last > 65535:
        raise InvalidArgument(f"invalid host port: {text[:64]!r}")
    return first, last


SECURITY_OPTIONS = ("no-new-privileges", "seccomp", "label", "apparmor")
# strconv.ParseBool's words, which docker's no-new-privileges takes.
BOOLEANS = {"1": True, "t": True, "T": True, "true": True, "TRUE": True, "True": True,
            "0": False, "f": False, "F": False, "false": False, "FALSE": False, "False": False}


def security_options(opts: Sequence[str]) -> dict[str, str]:
    """
    --security-opt entries by name, read as docker reads them: NAME=VALUE,
    or NAME:VALUE when there is no "=" (a profile's JSON has colons), and a
    bare "no-new-privileges" means true. InvalidArgument for others.
    """
    options = {}
    for opt in opts:
        if opt == "no-new-privileges":
            options[opt] = "true"
            continue
        key, found, value = opt.partition("=" if "=" in opt else ":")
        if not found or key not in SECURITY_OPTIONS:
            raise InvalidArgument(f"Invalid --security-opt: {opt[:64]!r}")
        options[key] = value
    return options


# ---------------------------------------------------------------- merging


@attrs.frozen
class ImageDefaults:
    """
    The parts of an image config that a container inherits.
    """

    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict)
    stop_signal: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    healthcheck: HealthConfig | None = None

    @classmethod
    def from_oci(cls, config: Mapping[str, Any]) -> ImageDefaults:
        """
        From the "config" object of an OCI / docker image config.
        """
        c = config or {}
        health = c.get("Healthcheck")
        return cls(
            env=tuple(c.get("Env") or ()),
            cmd=tuple(c["Cmd"]) if c.get("Cmd") is not None else None,
            entrypoint=tuple(c["Entrypoint"]) if c.get("Entrypoint") is not None else None,
            working_dir=c.get("WorkingDir") or "",
            user=c.get("User") or "",
            labels=dict(c.get("Labels") or {}),
            stop_signal=c.get("StopSignal") or "",
            exposed_ports=tuple(sorted(c.get("ExposedPorts") or {})),
            volumes=tuple(sorted(c.get("Volumes") or {})),
            healthcheck=_image_healthcheck(health) if isinstance(health, Mapping) else None,
        )


def _image_healthcheck(health: Mapping[str, Any]) -> HealthConfig:
    """
    An image config's Healthcheck (Test, Interval, Timeout, StartPeriod in
    nanoseconds, Retries). Values that are not numbers count as not given:
    an image is data from elsewhere, and a bad one must not break create.
    """

    def number(key: str) -> int:
        value = health.get(key)
        return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else 0

    test = health.get("Test")
    return HealthConfig(
        test=tuple(str(t) for t in test) if isinstance(test, list) else (),
        interval_ns=number("Interval"),
        timeout_ns=number("Timeout"),
        start_period_ns=number("StartPeriod"),
        retries=number("Retries"),
    )


def merge_healthcheck(config: HealthConfig | None, image: HealthConfig | None) -> HealthConfig | None:
    """
    docker's merge: what the container's config leaves unset (an empty
    test, zero durations or retries) comes from the image's.
    """
    if config is None or image is None:
        return config or image
    return HealthConfig(
        test=config.test or image.test,
        interval_ns=config.interval_ns or image.interval_ns,
        timeout_ns=config.timeout_ns or image.timeout_ns,
        start_period_ns=config.start_period_ns or image.start_period_ns,
        retries=config.retries or image.retries,
    )


def merge_env(base: Sequence[str], override: Sequence[str]) -> tuple[str, ...]:
    """
    Environment entries of C{override} replace those of C{base} by key,
    keeping first-seen order.
    """
    merged: dict[str, str] = {}
    for entry in list(base) + list(override):
        key = entry.split("=", 1)[0]
        merged.pop(key, None)
        merged[key] = entry
    return tuple(merged.values())


def merge(config: ContainerConfig, image: ImageDefaults, container_id: str) -> ContainerConfig:
    """
    The effective config, as docker computes it at create: an entrypoint
    given on the command line clears the image's Cmd; env merges by key;
    the rest falls back to the image, then to docker's defaults.
    """
    if config.entrypoint is not None:
        entrypoint = config.entrypoint
        cmd = config.cmd if config.cmd is not None else ()
    else:
        entrypoint = image.entrypoint or ()
        cmd = config.cmd if config.cmd else (image.cmd or ())
    if not entrypoint and not cmd:
        raise InvalidArgument("No command specified")
    hostname = config.hostname or container_id[:12]
    env = merge_env(image.env, config.env)
    if not any(e.startswith("PATH=") for e in env):
        env = (f"PATH={DEFAULT_PATH}",) + env
    if config.tty and not any(e.startswith("TERM=") for e in env):
        env = env + ("TERM=xterm",)
    env = merge_env((f"HOSTNAME={hostname}",), env)
    labels = dict(image.labels)
    labels.update(config.labels)
    return attrs.evolve(
        config,
        cmd=tuple(cmd),
        entrypoint=tuple(entrypoint),
        env=env,
        working_dir=config.working_dir or image.working_dir or "/",
        user=config.user or image.user,
        hostname=hostname,
        labels=labels,
        stop_signal=config.stop_signal or image.stop_signal or "SIGTERM",
        healthcheck=merge_healthcheck(config.healthcheck, image.healthcheck),
        exposed_ports=tuple(sorted(set(config.exposed_ports) | set(image.exposed_ports))),
        # docker's Config.Volumes: anonymous volumes, the image's and the
        # container's own.
        volumes=tuple(sorted(set(config.volumes) | set(image.volumes))),
    )
