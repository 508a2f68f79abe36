# -*- test-case-name: ross.test.integration.test_containers -*-
"""
Container commands: run, create, start, stop, restart, kill, rm, ps,
inspect, logs, wait, rename, pause, unpause, exec, attach, prune, commit
(cp is in L{ross.cli.cp}).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, Sequence, TypeVar

from ross.client.base import (
    FALSE,
    TRUE,
    ArgumentParser,
    Cli,
    CliError,
    confirm,
    each_target,
    format_rows,
    int32,
    int64,
    label_fields,
    render_template,
    error_of,
    parse_filters,
    time_ago,
    time_argument,
)
from ross.client.base import grpc
from ross.client.states import status_name
from ross.errors import RossError
from ross.humanize import go_time, human_size, parse_bytes, rfc3339
from ross.v1 import common_pb2, container_pb2

if TYPE_CHECKING:
    from ross.cli.interactive import Session

DEFAULT_DETACH_KEYS = "ctrl-p,ctrl-q"
_T = TypeVar("_T")


# ---------------------------------------------------------------- create/run flags


def _add_resource_flags(p: ArgumentParser) -> None:
    """The limits of create, run and update."""
    a = p.add_argument
    a("-m", "--memory", default="", help="Memory limit")
    a("--memory-swap", default="", help="Swap limit equal to memory plus swap: '-1' to enable unlimited swap")
    a("--memory-reservation", default="", help="Memory soft limit")
    a("--cpus", default="", help="Number of CPUs")
    a("--cpu-period", type=int64, default=0, help="Limit CPU CFS (Completely Fair Scheduler) period")
    a("--cpu-quota", type=int64, default=0, help="Limit CPU CFS (Completely Fair Scheduler) quota")
    a("-c", "--cpu-shares", type=int64, default=0, help="CPU shares (relative weight)")
    a("--pids-limit", type=int64, default=0, help="Tune container pids limit (set -1 for unlimited)")
    a("--cpuset-cpus", default="", help="CPUs in which to allow execution (0-3, 0,1)")
    a("--cpuset-mems", default="", help="MEMs in which to allow execution (0-3, 0,1)")


def _resources(args: Any, r: container_pb2.ResourceLimits) -> None:
    """The limits of L{_add_resource_flags} into C{r} (0: not given)."""
    if args.memory:
        r.memory = parse_bytes(args.memory)
    if args.memory_swap:
        r.memory_swap = -1 if args.memory_swap == "-1" else parse_bytes(args.memory_swap)
    if args.memory_reservation:
        r.memory_reservation = parse_bytes(args.memory_reservation)
    if getattr(args, "oom_kill_disable", False):
        r.oom_kill_disable = True
    if args.cpus:
        try:
            r.nano_cpus = int(round(float(args.cpus) * 1e9))
        except (ValueError, OverflowError):
            # "inf", "nan", or more than int64 nanoseconds.
            raise CliError(f"invalid argument \"{args.cpus}\" for \"--cpus\" flag: invalid syntax") from None
    if args.cpu_quota or args.cpu_period:
        # The same share of a CPU as --cpus (Ross keeps one period), with
        # docker's checks and messages.
        if args.cpus:
            raise CliError("Conflicting options: Nano CPUs and CPU " + ("Quota" if args.cpu_quota else "Period")
                           + " cannot both be set")
        if args.cpu_period and not 1000 <= args.cpu_period <= 1_000_000:
            raise CliError("CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1 second "
                           "(i.e. 1000000)")
        if args.cpu_quota and args.cpu_quota != -1 and args.cpu_quota < 1000:
            raise CliError("CPU cfs quota can not be less than 1ms (i.e. 1000)")
        if args.cpu_quota > 0:
            try:
                r.nano_cpus = args.cpu_quota * 1_000_000_000 // (args.cpu_period or 100_000)
            except ValueError:
                raise CliError(f"invalid argument \"{args.cpu_quota}\" for \"--cpu-quota\" flag: "
                               "value out of range") from None
    r.cpu_shares = args.cpu_shares
    r.pids_limit = args.pids_limit
    r.cpuset_cpus, r.cpuset_mems = args.cpuset_cpus, args.cpuset_mems


def _ulimit(text: str) -> container_pb2.Ulimit:
    """docker's --ulimit: name=soft[:hard], the hard limit the soft one when not given."""
    name, eq, values = text.partition("=")
    soft, _, hard = values.partition(":")
    try:
        if not eq or not name:
            raise ValueError
        return container_pb2.Ulimit(name=name, soft=int(soft), hard=int(hard or soft))
    except ValueError:
        raise CliError(f"invalid argument \"{text}\" for \"--ulimit\" flag: expected name=soft[:hard]") from None


def _device(text: str) -> container_pb2.DeviceMapping:
    """
    docker's --device: HOST[:CONTAINER][:PERMISSIONS], the second part
    taken as permissions when it is one ("rw").
    """
    parts = text.split(":")
    if len(parts) > 3 or not parts[0]:
        raise CliError(f"invalid argument \"{text}\" for \"--device\" flag: invalid device specification")
    host, in_container, perms = parts[0], "", "rwm"
    if len(parts) == 3:
        in_container, perms = parts[1], parts[2]
    elif len(parts) == 2:
        if parts[1] and not set(parts[1]) - set("rwm") and len(set(parts[1])) == len(parts[1]):
            perms = parts[1]
        else:
            in_container = parts[1]
    return container_pb2.DeviceMapping(path_on_host=host, path_in_container=in_container or host,
                                       cgroup_permissions=perms)


def _restart_policy(text: str, p: container_pb2.RestartPolicy) -> None:
    name, _, count = text.partition(":")
    p.name = name
    if count:
        if count.startswith("-") and count[1:].isdigit():
            raise CliError("invalid restart policy format: maximum retry count cannot be negative")
        if not count.isdigit():
            raise CliError("invalid restart policy format: maximum retry count must be an integer")
        p.maximum_retry_count = int(count)


def _add_create_flags(p: ArgumentParser, run: bool) -> None:
    a = p.add_argument
    if run:
        a("-d", "--detach", action="store_true", help="Run container in background and print container ID")
        a("--rm", action="store_true", help="Automatically remove the container when it exits")
        a("--detach-keys", default="", help="Override the key sequence for detaching a container")
        a("--sig-proxy", action="store_true", default=True, help="Proxy received signals to the process (default true)")
        a("-a", "--attach", action="append", default=[], help="Attach to STDIN, STDOUT or STDERR")
    else:
        a("--rm", action="store_true", help="Automatically remove the container when it exits")
    a("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    a("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    a("--oom-kill-disable", action="store_true", help="Disable OOM Killer")
    a("--name", default="", help="Assign a name to the container")
    a("-e", "--env", action="append", default=[], help="Set environment variables")
    a("--env-file", action="append", default=[], help="Read in a file of environment variables")
    a("-w", "--workdir", default="", help="Working directory inside the container")
    a("-u", "--user", default="", help="Username or UID (format: <name|uid>[:<group|gid>])")
    a("--group-add", action="append", default=[], help="Add additional groups to join")
    a("--entrypoint", default=None, help="Overwrite the default ENTRYPOINT of the image")
    a("-h", "--hostname", default="", help="Container host name")
    a("--domainname", default="", help="Container NIS domain name")
    a("-l", "--label", action="append", default=[], help="Set meta data on a container")
    a("-v", "--volume", action="append", default=[], help="Bind mount a volume")
    a("--mount", action="append", default=[], help="Attach a filesystem mount to the container")
    a("--tmpfs", action="append", default=[], help="Mount a tmpfs directory")
    a("-p", "--publish", action="append", default=[], help="Publish a container's port(s) to the host")
    a("-P", "--publish-all", action="store_true", help="Publish all exposed ports to random ports")
    a("--expose", action="append", default=[], help="Expose a port or a range of ports")
    a("--network", "--net", default="", help="Connect a container to a network")
    a("--ip", default="", help="IPv4 address")
    a("--ip6", default="", help="IPv6 address")
    a("--network-alias", action="append", default=[], help="Add network-scoped alias for the container")
    a("--dns", action="append", default=[], help="Set custom DNS servers")
    a("--dns-search", action="append", default=[], help="Set custom DNS search domains ('.' for none)")
    a("--dns-option", "--dns-opt", action="append", default=[], help="Set DNS options")
    a("--mac-address", default="", help="Container MAC address (e.g., 92:d0:c6:0a:29:33)")
    a("--add-host", action="append", default=[], help="Add a custom host-to-IP mapping (host:ip)")
    _add_resource_flags(p)
    a("--read-only", action="store_true", help="Mount the container's root filesystem as read only")
    a("--cap-add", action="append", default=[], help="Add Linux capabilities")
    a("--cap-drop", action="append", default=[], help="Drop Linux capabilities")
    a("--privileged", action="store_true", help="Give extended privileges to this container")
    a("--security-opt", action="append", default=[], help="Security Options")
    a("--userns", default="", help="User namespace to use (\"host\": the host's, whatever the daemon remaps)")
    a("--restart", default="no", help="Restart policy to apply when a container exits")
    a("--init", action="store_true", help="Run an init inside the container that forwards signals and reaps processes")
    a("--oom-score-adj", type=int32, default=0, help="Tune host's OOM preferences (-1000 to 1000)")
    a("--shm-size", default="", help="Size of /dev/shm (default 64MB)")
    a("--ipc", default="", help="IPC mode to use (private, shareable, none, host, container:NAME)")
    a("--pid", default="", help="PID namespace to use (host, container:NAME)")
    a("--uts", default="", help="UTS namespace to use (host)")
    a("--sysctl", action="append", default=[], help="Sysctl options (name=value)")
    a("--ulimit", action="append", default=[], help="Ulimit options (name=soft[:hard], e.g. nofile=1024:2048)")
    a("--label-file", action="append", default=[], help="Read in a line delimited file of labels")
    a("--volumes-from", action="append", default=[], help="Mount volumes from the specified container(s)")
    a("--cidfile", default="", help="Write the container ID to the file")
    a("--device", action="append", default=[], help="Add a host device to the container (HOST[:CONTAINER][:rwm])")
    a("--stop-signal", default="", help="Signal to stop the container")
    a("--stop-timeout", type=int32, default=None, help="Timeout (in seconds) to stop a container")
    a("--log-driver", default="", help="Logging driver for the container")
    a("--log-opt", action="append", default=[], help="Log driver options")
    a("--health-cmd", default="", help="Command to run to check health")
    a("--health-interval", default="", help="Time between running the check (ms|s|m|h) (default 0s)")
    a("--health-timeout", default="", help="Maximum time to allow one check to run (ms|s|m|h) (default 0s)")
    a("--health-start-period", default="",
      help="Start period for the container to initialize before starting health-retries countdown (ms|s|m|h) (default 0s)")
    a("--health-retries", type=int32, default=0, help="Consecutive failures needed to report unhealthy")
    a("--no-healthcheck", action="store_true", help="Disable any container-specified HEALTHCHECK")
    a("--platform", default="", help="Set platform if server is multi-platform capable")
    a("--pull", default="missing", choices=("always", "missing", "never"),
      help='Pull image before running ("always", "missing", "never")')
    a("image", help="Image")
    a("command", nargs=argparse.REMAINDER, help="Command and arguments")


def _file_lines(files: list[str], what: str) -> list[str]:
    """
    The lines of --env-file or --label-file files, without blank lines and
    "#" comments, as docker reads them: leading blanks dropped, the rest
    kept; a name with blanks in it is refused.
    """
    lines: list[str] = []
    for path in files:
        try:
            with open(path, encoding="utf-8") as f:
                for l in f:
                    line = l.rstrip("\n").lstrip()
                    if not line or line.startswith("#"):
                        continue
                    name = line.partition("=")[0]
                    if any(c.isspace() for c in name):
                        raise CliError(f"poorly formatted {what} file {path}: variable '{name}' contains whitespaces")
                    lines.append(line)
        except OSError as e:
            raise CliError(f"open {path}: {e.strerror.lower() if e.strerror else e}")
        except UnicodeDecodeError:
            raise CliError(f"{what} file {path} is not UTF-8 text")
    return lines


def _env_entries(values: list[str], files: list[str]) -> list[str]:
    """
    -e and --env-file entries; a bare KEY takes the client's value, as
    docker does, and is dropped when the client has none.
    """
    entries = []
    for entry in _file_lines(files, "env") + values:
        if not entry or entry.startswith("="):
            raise CliError(f"invalid environment variable: {entry}")
        if "=" in entry:
            entries.append(entry)
        elif entry in os.environ:
            entries.append(f"{entry}={os.environ[entry]}")
    return entries


def _labels(values: list[str]) -> dict[str, str]:
    labels = {}
    for v in values:
        key, _, value = v.partition("=")
        if not key:
            raise CliError(f"invalid label: {v!r}")
        labels[key] = value
    return labels


def _security_opts(values: list[str]) -> list[str]:
    """
    --security-opt values as the daemon takes them: a seccomp profile
    named by its file is sent as its JSON (seccomp=<profile>), as docker's
    client does; "builtin" and "unconfined" name the daemon's.
    """
    opts = []
    for opt in values:
        key, found, value = opt.partition("=")
        if not found:
            key, found, value = opt.partition(":")
        if key == "seccomp" and value not in ("builtin", "unconfined"):
            import json

            try:
                with open(value, "rb") as f:
                    profile = json.loads(f.read())
            except OSError as e:
                raise CliError(f"opening seccomp profile ({value}) failed: {e.strerror or e}")
            except ValueError as e:
                raise CliError(f"compacting json for seccomp profile ({value}) failed: {e}")
            opt = "seccomp=" + json.dumps(profile, separators=(",", ":"), ensure_ascii=False)
        opts.append(opt)
    return opts


def _bind_from_here(volume: str) -> str:
    """
    A -v whose host path is relative to here (``./dir:/x``, ``.:/x``) with
    that path made absolute, as docker's CLI does: the daemon takes host
    paths that are absolute only.
    """
    source, colon, rest = volume.partition(":")
    if colon and (source == "." or source.startswith("./")):
        return os.path.abspath(source) + ":" + rest
    return volume


def _mount_flag(text: str, key: str, value: str) -> bool:
    """
    A boolean of --mount (KEY=VALUE), as docker's reads it (Go's
    strconv.ParseBool).
    """
    if value in TRUE or value in FALSE:
        return value in TRUE
    raise CliError(f"invalid argument \"{text}\" for \"--mount\" flag: invalid value for {key}: {value}")


def _parse_mount(text: str) -> container_pb2.MountSpec:
    m = container_pb2.MountSpec(type="volume")
    for field in text.split(","):
        key, eq, value = field.partition("=")
        key = key.strip().lower()
        if key == "type":
            m.type = value
        elif key in ("source", "src"):
            m.source = value
        elif key in ("target", "destination", "dst"):
            m.target = value
        elif key in ("readonly", "ro"):
            m.read_only = _mount_flag(text, key, value) if eq else True
        elif key == "bind-propagation":
            m.propagation = value
        elif key == "tmpfs-size":
            m.tmpfs_size = parse_bytes(value)
        elif key == "tmpfs-mode":
            try:
                m.tmpfs_mode = int(value, 8)
            except ValueError:
                raise CliError(f"invalid tmpfs-mode {value!r}")
        elif key == "volume-label":
            k, _, v = value.partition("=")
            m.volume_labels[k] = v
        elif key == "volume-opt":
            k, eq, v = value.partition("=")
            if not eq:
                raise CliError(f"invalid argument \"{text}\" for \"--mount\" flag: invalid volume-opt: {value}")
            m.volume_options[k] = v
        elif key == "volume-driver":
            if value != "local":
                raise CliError(f"volume driver {value!r} is not supported: only 'local'")
        elif key == "volume-nocopy":
            m.volume_nocopy = _mount_flag(text, key, value) if eq else True
        elif key == "bind-nonrecursive":
            m.bind_non_recursive = _mount_flag(text, key, value) if eq else True
        elif key == "bind-recursive":
            # docker's: enabled (the default), disabled, and for read-only
            # binds readonly (what Ross's are: submounts read-only too) or
            # writable (submounts as they are), which this CLI cannot ask.
            if value == "writable":
                raise CliError(f"invalid argument \"{text}\" for \"--mount\" flag: "
                               "bind-recursive=writable is not supported by Ross")
            if value not in ("enabled", "disabled", "readonly"):
                raise CliError(f"invalid argument \"{text}\" for \"--mount\" flag: "
                               f"invalid value for bind-recursive: {value!r}")
            m.bind_non_recursive = value == "disabled"
        elif key == "consistency":
            continue
        else:
            raise CliError(f"invalid argument \"{text}\" for \"--mount\" flag: unexpected key '{key}'")
    if not m.target:
        raise CliError(f"invalid argument \"{text}\" for \"--mount\" flag: target is required")
    return m


def _parse_port(spec: str) -> list[container_pb2.PortBinding]:
    """
    -p [ip:][hostPort:]containerPort[/proto], each port a number or a range
    (docker's nat.ParsePortSpec): a container range is published on a host
    range of the same size (one binding per port) or on ephemeral ports; a
    single container port on a host range takes a free port of it.
    """
    original = spec
    proto = "tcp"
    if "/" in spec:
        spec, proto = spec.rsplit("/", 1)
    parts = spec.rsplit(":", 2)
    host_ip = host_port = ""
    if len(parts) == 3:
        host_ip, host_port, container = parts
    elif len(parts) == 2:
        host_port, container = parts
    else:
        container = parts[0]
    host_ip = host_ip.strip("[]")
    invalid = CliError(f"invalid port specification: \"{original}\"")
    if proto not in ("tcp", "udp", "sctp"):
        raise invalid
    first, last = _port_range(container, invalid)
    if not host_port:
        hosts = [""] * (last - first + 1)
    else:
        host_first, host_last = _port_range(host_port, invalid)
        if host_last - host_first == last - first:
            hosts = [str(port) for port in range(host_first, host_last + 1)]
        elif first == last:
            hosts = [host_port]
        else:
            raise CliError(f"Invalid ranges specified for container and host Ports: {container} and {host_port}")
    return [container_pb2.PortBinding(container_port=f"{port}/{proto}", host_ip=host_ip, host_port=host)
            for port, host in zip(range(first, last + 1), hosts)]


def _port_range(text: str, invalid: CliError) -> tuple[int, int]:
    """
    "80" -> (80, 80), "8000-8010" -> (8000, 8010).
    """
    low, sep, high = text.partition("-")
    if not low.isdigit() or (sep and not high.isdigit()):
        raise invalid
    first, last = int(low), int(high) if sep else int(low)
    if first > last:
        raise invalid
    return first, last


_DURATION_UNITS = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                   "m": 60_000_000_000, "h": 3_600_000_000_000}


def _duration_ns(text: str, flag: str) -> int:
    """
    A Go duration ("1m30s", "200ms", "-1.5h", "0") in nanoseconds, as
    docker's flags take them.
    """
    import re

    invalid = CliError(f"invalid argument \"{text}\" for \"{flag}\" flag: time: invalid duration \"{text}\"")
    sign, body = (-1, text[1:]) if text.startswith("-") else (1, text.removeprefix("+"))
    if body == "0":
        return 0
    parts = re.findall(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|ms|s|m|h)", body)
    if not parts or "".join(n + u for n, u in parts) != body or any(n in ("", ".") for n, _ in parts):
        raise invalid
    whole = 0
    for number, unit in parts:
        integer, _, fraction = number.partition(".")
        size = _DURATION_UNITS[unit]
        whole += int(integer or "0") * size + int(fraction or "0") * size // 10 ** len(fraction)
    return sign * whole


def _healthcheck(args: argparse.Namespace, c: Any) -> None:
    """
    The health check flags into C{c.healthcheck}, refused as docker's CLI
    refuses them; unset flags leave the image's settings.
    """
    durations = {}
    for flag in ("health-interval", "health-timeout", "health-start-period"):
        text = getattr(args, flag.replace("-", "_"))
        durations[flag] = _duration_ns(text, f"--{flag}") if text else 0
    given = bool(args.health_cmd) or args.health_retries != 0 or any(durations.values())
    if args.no_healthcheck:
        if given:
            raise CliError("--no-healthcheck conflicts with --health-* options")
        c.healthcheck.test.append("NONE")
        return
    if not given:
        return
    for name, ns in durations.items():
        if ns < 0:
            raise CliError(f"--{name} cannot be negative")
    if args.health_retries < 0:
        raise CliError("--health-retries cannot be negative")
    h = c.healthcheck
    h.SetInParent()
    if args.health_cmd:
        h.test.extend(["CMD-SHELL", args.health_cmd])
    h.interval_ns = durations["health-interval"]
    h.timeout_ns = durations["health-timeout"]
    h.start_period_ns = durations["health-start-period"]
    h.retries = args.health_retries


def create_request(args: argparse.Namespace) -> container_pb2.CreateContainerRequest:
    """
    The create request for ``run``/``create`` flags.
    """
    c = container_pb2.ContainerConfig(
        image=args.image,
        env=_env_entries(args.env, args.env_file),
        working_dir=args.workdir,
        user=args.user,
        hostname=args.hostname,
        domainname=args.domainname,
        tty=args.tty,
        open_stdin=args.interactive,
        stdin_once=args.interactive and not getattr(args, "detach", False),
        stop_signal=args.stop_signal,
        exposed_ports=[p if "/" in p else f"{p}/tcp" for p in args.expose],
        group_add=args.group_add,
    )
    # A file's line without "=" is no label (docker's); -l KEY is one.
    c.labels.update(_labels([l for l in _file_lines(args.label_file, "label") if "=" in l] + args.label))
    if args.command:
        c.cmd.values.extend(args.command)
    if args.entrypoint is not None:
        # docker takes --entrypoint as one word, not a command line.
        c.entrypoint.SetInParent()
        if args.entrypoint:
            c.entrypoint.values.append(args.entrypoint)
    if args.stop_timeout is not None:
        c.stop_timeout = args.stop_timeout
    _healthcheck(args, c)

    h = container_pb2.HostConfig(
        binds=[_bind_from_here(v) for v in args.volume],
        mounts=[_parse_mount(m) for m in args.mount],
        auto_remove=args.rm,
        init=args.init,
        network_mode=args.network,
        publish_all_ports=args.publish_all,
        dns=args.dns,
        extra_hosts=args.add_host,
        readonly_rootfs=args.read_only,
        cap_add=args.cap_add,
        cap_drop=args.cap_drop,
        privileged=args.privileged,
        security_opt=_security_opts(args.security_opt),
        ip=args.ip,
        ip6=args.ip6,
        network_aliases=args.network_alias,
        dns_search=args.dns_search,
        dns_options=args.dns_option,
        mac_address=args.mac_address,
        userns_mode=args.userns,
        oom_score_adj=args.oom_score_adj,
    )
    for entry in args.tmpfs:
        path, _, options = entry.partition(":")
        h.tmpfs[path] = options
    for spec in args.publish:
        h.port_bindings.extend(_parse_port(spec))
    _restart_policy(args.restart, h.restart_policy)
    _resources(args, h.resources)
    if args.shm_size:
        h.shm_size = parse_bytes(args.shm_size)
    h.ipc_mode, h.pid_mode, h.uts_mode = args.ipc, args.pid, args.uts
    for entry in args.sysctl:
        key, eq, value = entry.partition("=")
        if not eq or not key:
            raise CliError(f"invalid argument \"{entry}\" for \"--sysctl\" flag: expected name=value")
        h.sysctls[key] = value
    h.ulimits.extend(_ulimit(text) for text in args.ulimit)
    h.devices.extend(_device(text) for text in args.device)
    h.volumes_from.extend(args.volumes_from)
    h.log_config.type = args.log_driver
    for opt in args.log_opt:
        key, _, value = opt.partition("=")
        if key == "max-size":
            h.log_config.max_size = parse_bytes(value)
        elif key == "max-file":
            if not value.isdigit() or int(value) < 1:
                raise CliError(f"invalid log-opt max-file {value!r}: must be a positive number")
            h.log_config.max_file = int(value)
        else:
            raise CliError(f"unknown log opt '{key}' for json-file log driver")
    request = container_pb2.CreateContainerRequest(name=args.name, config=c, host_config=h)
    if args.platform:
        os_, _, arch = args.platform.partition("/")
        request.platform.os, request.platform.architecture = os_, arch
    return request


def _with_image(cli: Cli, args: Any, make: Callable[[], _T]) -> _T:
    """
    C{make()} (what creates the container) with docker's --pull: the image
    pulled first ("always"), or once the daemon has not found it
    ("missing", the default: "Unable to find image ... locally"), or
    never.
    """
    from ross.cli.registry import pull_for_run

    if args.pull == "always":
        pull_for_run(cli, args.image, args.platform)
        return make()
    try:
        return make()
    except grpc.RpcError as e:
        message = error_of(cli, e).message
        if args.pull == "never" or e.code() != grpc.StatusCode.NOT_FOUND or not message.startswith("No such image"):
            raise
    cli.err.write(f"Unable to find image '{_display_name(args.image)}' locally\n")
    pull_for_run(cli, args.image, args.platform)
    return make()


def _display_name(image: str) -> str:
    """docker's spelling of a reference in its messages: the tag added."""
    from ross.reference import ReferenceError, parse_normalized

    try:
        ref = parse_normalized(image)
    except ReferenceError:
        return image
    return image if ref.tag or ref.digest else f"{image}:latest"


def _cidfile(path: str) -> Callable[[str], None]:
    """
    --cidfile: refused at once when the file exists (docker's message);
    what writes the container's ID there once it is made.
    """
    if path and os.path.lexists(path):
        raise CliError(f"Container ID file found, make sure the other container isn't running or delete {path}")
    if path:
        # One that cannot be made fails before the container is (docker's).
        try:
            open(path, "x").close()
            os.unlink(path)
        except OSError as e:
            raise CliError(f"failed to create the container ID file: open {path}: "
                           f"{(e.strerror or str(e)).lower()}")

    def write(cid: str) -> None:
        if not path:
            return
        try:
            with open(path, "x", encoding="utf-8") as f:
                f.write(cid)
        except OSError as e:
            raise CliError(f"failed to create the container ID file: {e}")

    return write


def cmd_create(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] IMAGE [COMMAND] [ARG...]", "Create a new container", help_flags=("--help",))
    _add_create_flags(p, run=False)
    args = p.parse_args(argv)
    request = create_request(args)
    write_cid = _cidfile(args.cidfile)
    stub = cli.stub("ContainerService")
    response = _with_image(cli, args, lambda: stub.CreateContainer(request))
    write_cid(response.id)
    for warning in response.warnings:
        cli.err.write(f"WARNING: {warning}\n")
    cli.print(response.id)
    return 0


def _start_error_code(message: str) -> int:
    """
    docker's exit status for a detached run whose start failed: 127 for a
    command not found, 126 for one that cannot be invoked, else 125.
    """
    if "executable file not found" in message or "no such file or directory" in message:
        return 127
    if "permission denied" in message or "is a directory" in message:
        return 126
    return 125


def _detach_keys(value: str) -> str:
    return value or os.environ.get("ROSS_DETACH_KEYS") or DEFAULT_DETACH_KEYS


def _direct(cli: Cli, detach_keys: str) -> tuple[bool, bytes]:
    """
    Whether a session asks for a direct channel (SPEC 3), and the detach
    keys the client then scans itself. Keys that do not parse go the
    daemon's way, which refuses them with its message.
    """
    if not cli.direct_channels():
        return False, b""
    from ross.protocols.attach import parse_detach_keys

    try:
        return True, parse_detach_keys(detach_keys)
    except RossError:
        return False, b""


def _reattach(cli: Cli, stdin: bool, detach_keys: str) -> Callable[..., Any]:
    """
    How a TTY session on the stream attaches again once its stream was lost
    (the daemon restarted: SPEC 3): an Attach to the session its C{started}
    frame named, holding C{since} bytes of its output, at the window's size.
    """
    from ross.client.frames import Frames

    def reattach(started: Any, since: int, size: tuple[int, int] | None) -> tuple[Any, Frames, Any]:
        start = container_pb2.AttachStart(container_id=started.container_id, exec_id=started.exec_id,
                                          attach_stdin=stdin, since=since, detach_keys=detach_keys)
        if size:
            start.window.rows, start.window.cols = size
        return cli.stream("ContainerService", "Attach"), Frames(container_pb2.AttachInput), \
            container_pb2.AttachInput(start=start)

    return reattach


def cmd_run(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] IMAGE [COMMAND] [ARG...]", "Create and run a new container from an image",
                   help_flags=("--help",))
    _add_create_flags(p, run=True)
    args = p.parse_args(argv)
    request = create_request(args)
    write_cid = _cidfile(args.cidfile)
    stub = cli.stub("ContainerService")
    streams = {s.lower() for s in args.attach}
    if streams - {"stdin", "stdout", "stderr"}:
        raise CliError(f"invalid argument \"{args.attach[0]}\" for \"-a, --attach\" flag: valid streams are "
                       "STDIN, STDOUT and STDERR")
    if streams and args.detach:
        raise CliError("Conflicting options: -a and -d")
    if args.detach:
        response = _with_image(cli, args, lambda: stub.CreateContainer(request))
        write_cid(response.id)
        for warning in response.warnings:
            cli.err.write(f"WARNING: {warning}\n")
        try:
            stub.StartContainer(container_pb2.StartContainerRequest(container_id=response.id))
        except grpc.RpcError as e:
            error = error_of(cli, e)
            raise CliError(error.message, _start_error_code(error.message))
        cli.print(response.id)
        return 0
    _check_tty(args.tty and args.interactive)
    from ross.cli.interactive import Session, window_size
    from ross.client.frames import Frames

    direct, keys = _direct(cli, _detach_keys(args.detach_keys))
    start = container_pb2.InteractiveStart(
        create=request,
        attach_stdin=args.interactive,
        detach_keys=_detach_keys(args.detach_keys),
        direct=direct,
    )
    if args.tty:
        size = window_size(1) or window_size(0)
        if size:
            start.window.rows, start.window.cols = size
    started: list[str] = []

    def on_started(frame: Any) -> None:
        started.append(frame.container_id)
        if len(started) == 1:
            # (Not again when the session attaches again after a restart.)
            write_cid(frame.container_id)
        for warning in frame.warnings:
            cli.err.write(f"WARNING: {warning}\n")

    def forward(sig: int) -> None:
        if started:
            _forward_signal(stub, started[0], sig)

    cli.out.flush()

    # -a: the streams not named go nowhere (all of them without it).
    ignored = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC) if streams else -1

    def session_of() -> Session:
        return Session(
            cli.stream("ContainerService", "RunInteractive"),
            Frames(container_pb2.InteractiveInput),
            container_pb2.InteractiveInput(start=start),
            tty_mode=args.tty,
            attach_stdin=args.interactive,
            stdout_fd=1 if not streams or "stdout" in streams else ignored,
            stderr_fd=2 if not streams or "stderr" in streams else ignored,
            on_started=on_started,
            on_signal=forward if args.sig_proxy else None,
            detach_keys=keys,
            reattach=_reattach(cli, args.interactive, _detach_keys(args.detach_keys)),
        )

    def first_run() -> tuple[Session, int]:
        # A session reads stdin only once the container started: a create
        # that failed (the image missing) took none of it.
        session = session_of()
        return session, _run_session(cli, session)

    session, code = _with_image(cli, args, first_run)
    waited = session.started is not None and not session.started.direct_ticket and not session.reattached
    restarts = request.host_config.restart_policy.name not in ("", "no")
    if started and not waited and not session.detached and not restarts:
        # As docker's: run returns once the daemon has the exit (its die
        # event published, `rm` possible), and with --rm once the
        # container is gone. On the stream the daemon waits for that
        # before the exit frame; the shim's exit on a direct channel can
        # come first. (Not for a container that restarts: it may be
        # running again, and this would wait for its next exit.)
        _wait_for(stub, started[0], container_pb2.WAIT_CONDITION_REMOVED if request.host_config.auto_remove
                  else container_pb2.WAIT_CONDITION_NOT_RUNNING)
    return code


def _run_session(cli: Cli, session: Session) -> int:
    """
    Run an interactive L{Session}; its exit code.
    """
    began = time.time()
    try:
        return session.run()
    except grpc.RpcError as e:
        # Its container gone when the session attached again (the daemon
        # was away): a --rm container that exited meanwhile, whose die
        # event has the code.
        started = session.started
        if e.code() != grpc.StatusCode.NOT_FOUND or started is None or started.exec_id:
            raise
        ended = _exit_of_removed(cli, started.container_id, began)
        if ended is None:
            raise
        return ended


def _exit_of_removed(cli: Cli, container: str, since: float) -> int | None:
    """
    The exit code of a container removed since C{since} (a time), from the
    daemon's journal of events; None when it has none.
    """
    from ross.v1 import system_pb2

    request = system_pb2.EventsRequest(types=["container"], actions=["die"])
    request.since.FromNanoseconds(int(since * 1e9) - 1_000_000_000)
    request.until.GetCurrentTime()
    code = None
    try:
        for event in cli.stub("SystemService").Events(request, timeout=30):
            if event.actor_id == container and "exitCode" in event.attributes:
                code = int(event.attributes["exitCode"])
    except (grpc.RpcError, ValueError):
        return None
    return code


def _wait_for(stub: Any, container: str, condition: container_pb2.WaitCondition) -> None:
    try:
        for _ in stub.Wait(container_pb2.WaitContainerRequest(container_id=container, condition=condition), timeout=30):
            pass
    except Exception:
        # Gone already (NOT_FOUND), or the daemon away: the exit code
        # stands. (Not `except grpc.RpcError`: naming it imports grpcio,
        # which the unix socket's client does without.)
        pass


# ---------------------------------------------------------------- lifecycle


def cmd_start(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER [CONTAINER...]", "Start one or more stopped containers")
    p.add_argument("-a", "--attach", action="store_true", help="Attach STDOUT/STDERR and forward signals")
    p.add_argument("-i", "--interactive", action="store_true", help="Attach container's STDIN")
    p.add_argument("--detach-keys", default="", help="Override the key sequence for detaching a container")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    stub = cli.stub("ContainerService")
    if not (args.attach or args.interactive):
        return each_target(cli, args.containers, lambda n: stub.StartContainer(
            container_pb2.StartContainerRequest(container_id=n)))
    if len(args.containers) > 1:
        raise CliError("you cannot start and attach multiple containers at once")
    name = args.containers[0]
    inspect = stub.InspectContainer(container_pb2.InspectContainerRequest(container_id=name))
    tty = inspect.container.config.tty
    return _attach_session(cli, name, "", tty, args.interactive, args.detach_keys, start_after_attach=True)


def _check_tty(terminal_wanted: bool) -> None:
    """
    docker's check before it attaches stdin with a TTY (-it): stdin must
    be a terminal, which the session puts in raw mode.
    """
    if terminal_wanted and not os.isatty(0):
        raise CliError("the input device is not a TTY", 1)


def _attach_session(cli: Cli, container: str, exec_id: str, tty: bool, stdin: bool, detach_keys: str,
                    start_after_attach: bool = False, sig_proxy: bool = True) -> int:
    """
    Attach to a container's main process or to exec session C{exec_id};
    with C{sig_proxy}, the signals the CLI gets go to the container (pipe
    mode, the main process only, as docker's).
    """
    from ross.cli.interactive import Session, window_size
    from ross.client.frames import Frames

    stub = cli.stub("ContainerService")
    direct, keys = _direct(cli, _detach_keys(detach_keys))
    start = container_pb2.AttachStart(
        container_id=container, exec_id=exec_id, attach_stdin=stdin, replay=not start_after_attach,
        detach_keys=_detach_keys(detach_keys), direct=direct)
    if tty:
        size = window_size(1) or window_size(0)
        if size:
            start.window.rows, start.window.cols = size

    def on_started(frame: Any) -> None:
        if start_after_attach:
            stub.StartContainer(container_pb2.StartContainerRequest(container_id=container))

    session = Session(cli.stream("ContainerService", "Attach"), Frames(container_pb2.AttachInput),
                      container_pb2.AttachInput(start=start),
                      tty_mode=tty, attach_stdin=stdin, on_started=on_started,
                      on_signal=None if exec_id or not sig_proxy else lambda sig: _forward_signal(stub, container, sig),
                      detach_keys=keys,
                      reattach=_reattach(cli, stdin, _detach_keys(detach_keys)))
    code = _run_session(cli, session)
    if not exec_id and session.started is not None and not session.detached:
        # The container's exit came from its shim (on either path the
        # attachment hears it there): as run's, wait for the daemon's.
        _wait_for(stub, container, container_pb2.WAIT_CONDITION_NOT_RUNNING)
    return code


def cmd_attach(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER", "Attach local standard input, output, and error streams to a running container")
    p.add_argument("--detach-keys", default="", help="Override the key sequence for detaching a container")
    p.add_argument("--no-stdin", action="store_true", help="Do not attach STDIN")
    p.add_argument("--sig-proxy", action="store_true", default=True,
                   help="Proxy all received signals to the process (default true)")
    p.add_argument("--exec", default="", help="Attach to this exec session instead of the main process")
    p.add_argument("container")
    args = p.parse_args(argv)
    stub = cli.stub("ContainerService")
    container = stub.InspectContainer(container_pb2.InspectContainerRequest(container_id=args.container)).container
    if args.exec:
        info = stub.InspectExec(container_pb2.InspectExecRequest(exec_id=args.exec))
        return _attach_session(cli, container.id, info.id, info.tty, not args.no_stdin, args.detach_keys)
    if container.state.status != container_pb2.CONTAINER_STATUS_RUNNING:
        raise CliError("You cannot attach to a stopped container, start it first")
    stdin = container.config.open_stdin and not args.no_stdin
    return _attach_session(cli, container.id, "", container.config.tty, stdin, args.detach_keys,
                           sig_proxy=args.sig_proxy)


def _forward_signal(stub: Any, container: str, sig: int) -> None:
    """
    Send signal C{sig}, which the CLI got, on to C{container} (--sig-proxy);
    one it cannot take any more (it exited meanwhile) is no error.
    """
    try:
        stub.KillContainer(container_pb2.KillContainerRequest(container_id=container, signal=str(sig)))
    except grpc.RpcError:
        pass


def cmd_exec(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER COMMAND [ARG...]", "Execute a command in a running container")
    p.add_argument("-d", "--detach", action="store_true", help="Detached mode: run command in the background")
    p.add_argument("-i", "--interactive", action="store_true", help="Keep STDIN open even if not attached")
    p.add_argument("-t", "--tty", action="store_true", help="Allocate a pseudo-TTY")
    p.add_argument("-e", "--env", action="append", default=[], help="Set environment variables")
    p.add_argument("--env-file", action="append", default=[], help="Read in a file of environment variables")
    p.add_argument("-u", "--user", default="", help="Username or UID (format: <name|uid>[:<group|gid>])")
    p.add_argument("-w", "--workdir", default="", help="Working directory inside the container")
    p.add_argument("--privileged", action="store_true", help="Give extended privileges to the command")
    p.add_argument("--detach-keys", default="", help="Override the key sequence for detaching a container")
    p.add_argument("container")
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if not args.command:
        raise CliError("\"ross exec\" requires at least 2 arguments.\nSee 'ross exec --help'.")
    _check_tty(args.tty and args.interactive and not args.detach)
    from ross.cli.interactive import Session, window_size
    from ross.client.frames import Frames

    direct, keys = _direct(cli, _detach_keys(args.detach_keys))
    config = container_pb2.ExecConfig(
        container_id=args.container, cmd=args.command, env=_env_entries(args.env, args.env_file),
        user=args.user, working_dir=args.workdir, tty=args.tty, attach_stdin=args.interactive,
        detach=args.detach, privileged=args.privileged, detach_keys=_detach_keys(args.detach_keys),
        direct=direct and not args.detach)
    if args.tty:
        size = window_size(1) or window_size(0)
        if size:
            config.window.rows, config.window.cols = size
    stub = cli.stub("ContainerService")
    if args.detach:
        for frame in stub.Exec(iter([container_pb2.ExecInput(start=config)])):
            kind = frame.WhichOneof("output")
            # docker prints nothing for a detached exec that started.
            if kind == "exit" and frame.exit.error:
                raise CliError(frame.exit.error, frame.exit.status_code)
        return 0
    session = Session(cli.stream("ContainerService", "Exec"), Frames(container_pb2.ExecInput),
                      container_pb2.ExecInput(start=config),
                      tty_mode=args.tty, attach_stdin=args.interactive, detach_keys=keys,
                      reattach=_reattach(cli, args.interactive, _detach_keys(args.detach_keys)))
    return session.run()


def cmd_stop(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER [CONTAINER...]", "Stop one or more running containers")
    p.add_argument("-t", "--time", "--timeout", type=int32, default=None, dest="time",
                   help="Seconds to wait before killing the container")
    p.add_argument("-s", "--signal", default="", help="Signal to send to the container")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    stub = cli.stub("ContainerService")

    def stop(name: str) -> None:
        request = container_pb2.StopContainerRequest(container_id=name, signal=args.signal)
        if args.time is not None:
            request.timeout = args.time
        stub.StopContainer(request)

    return each_target(cli, args.containers, stop)


def cmd_restart(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER [CONTAINER...]", "Restart one or more containers")
    p.add_argument("-t", "--time", "--timeout", type=int32, default=None, dest="time",
                   help="Seconds to wait before killing the container")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    stub = cli.stub("ContainerService")

    def restart(name: str) -> None:
        request = container_pb2.RestartContainerRequest(container_id=name)
        if args.time is not None:
            request.timeout = args.time
        stub.RestartContainer(request)

    return each_target(cli, args.containers, restart)


def cmd_kill(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER [CONTAINER...]", "Kill one or more running containers")
    p.add_argument("-s", "--signal", default="KILL", help="Signal to send to the container")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    stub = cli.stub("ContainerService")
    return each_target(cli, args.containers, lambda n: stub.KillContainer(
        container_pb2.KillContainerRequest(container_id=n, signal=args.signal)))


def cmd_pause(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("CONTAINER [CONTAINER...]", "Pause all processes within one or more containers")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    stub = cli.stub("ContainerService")
    return each_target(cli, args.containers, lambda n: stub.PauseContainer(
        container_pb2.PauseContainerRequest(container_id=n)))


def cmd_unpause(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("CONTAINER [CONTAINER...]", "Unpause all processes within one or more containers")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    stub = cli.stub("ContainerService")
    return each_target(cli, args.containers, lambda n: stub.UnpauseContainer(
        container_pb2.UnpauseContainerRequest(container_id=n)))


def cmd_rm(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER [CONTAINER...]", "Remove one or more containers")
    p.add_argument("-f", "--force", action="store_true", help="Force the removal of a running container (uses SIGKILL)")
    p.add_argument("-v", "--volumes", action="store_true", help="Remove anonymous volumes associated with the container")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    stub = cli.stub("ContainerService")
    return each_target(cli, args.containers, lambda n: stub.RemoveContainer(
        container_pb2.RemoveContainerRequest(container_id=n, force=args.force, remove_volumes=args.volumes)),
        missing_ok=args.force)


def cmd_rename(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("CONTAINER NEW_NAME", "Rename a container")
    p.add_argument("container")
    p.add_argument("new_name")
    args = p.parse_args(argv)
    cli.stub("ContainerService").RenameContainer(
        container_pb2.RenameContainerRequest(container_id=args.container, new_name=args.new_name))
    return 0


def cmd_update(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER [CONTAINER...]", "Update configuration of one or more containers")
    _add_resource_flags(p)
    p.add_argument("--restart", default=None, help="Restart policy to apply when a container exits")
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    request = container_pb2.UpdateContainerRequest()
    _resources(args, request.resources)
    if args.restart is not None:
        _restart_policy(args.restart, request.restart_policy)
    if not request.resources.ByteSize() and not request.HasField("restart_policy"):
        raise CliError("you must provide one or more flags when using this command")
    stub = cli.stub("ContainerService")

    def update(name: str) -> Any:
        request.container_id = name
        return stub.UpdateContainer(request)
    return each_target(cli, args.containers, update)


def cmd_wait(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("CONTAINER [CONTAINER...]", "Block until one or more containers stop, then print their exit codes")
    p.add_argument("--condition", default="not-running", choices=["not-running", "next-exit", "removed"])
    p.add_argument("containers", nargs="+")
    args = p.parse_args(argv)
    condition = {
        "not-running": container_pb2.WAIT_CONDITION_NOT_RUNNING,
        "next-exit": container_pb2.WAIT_CONDITION_NEXT_EXIT,
        "removed": container_pb2.WAIT_CONDITION_REMOVED,
    }[args.condition]
    stub = cli.stub("ContainerService")

    def wait(name: str) -> None:
        for frame in stub.Wait(container_pb2.WaitContainerRequest(container_id=name, condition=condition)):
            if frame.WhichOneof("output") == "exit":
                cli.print(str(frame.exit.status_code))

    return each_target(cli, args.containers, wait, echo=False)


def cmd_container_prune(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS]", "Remove all stopped containers")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help="Provide filter values (e.g. 'until=<timestamp>')")
    args = p.parse_args(argv)
    if not args.force and not confirm(cli, "WARNING! This will remove all stopped containers."):
        return 0
    request = container_pb2.PruneContainersRequest(
        filters=[common_pb2.Filter(key=k, value=v) for k, v in parse_filters(args.filter)])
    response = cli.stub("ContainerService").PruneContainers(request)
    if response.containers_deleted:
        cli.print("Deleted Containers:")
        for cid in response.containers_deleted:
            cli.print(cid)
        cli.print("")
    cli.print(f"Total reclaimed space: {human_size(response.space_reclaimed)}")
    return 0


# ---------------------------------------------------------------- listing




def _ports_text(c: Any) -> str:
    from ross.cli.networks import ports_text

    return ports_text(c.network_settings)


def _command_text(c: Any, trunc: bool) -> str:
    text = c.command
    if trunc and len(text) > 20:
        text = text[:19] + "…"
    return f'"{text}"'


#: The header of each field of ``ps --format 'table ...'``, as docker's.
PS_HEADERS = {"ID": "CONTAINER ID", "CreatedAt": "CREATED AT", "RunningFor": "CREATED",
              "LocalVolumes": "LOCAL VOLUMES"}


def _ps_row(c: Any, no_trunc: bool, size: bool) -> dict[str, Any]:
    """
    The fields docker's ``ps --format`` templates name, for container C{c}
    (C{.Label "key"} is a method, as docker's).
    """
    labels = dict(c.labels)
    created = c.created.seconds
    return {
        "ID": c.id if no_trunc else c.id[:12],
        "Image": c.image,
        "Command": _command_text(c, not no_trunc),
        "CreatedAt": go_time(created),
        "RunningFor": time_ago(c.created),
        "Ports": _ports_text(c),
        "State": status_name(c.state.status),
        "Status": c.status_text,
        "Size": human_size(c.size_rw) if size else "",
        "Names": c.name,
        **label_fields(labels),
        "Mounts": ",".join(m.name or m.source for m in c.mounts),
        "LocalVolumes": str(sum(1 for m in c.mounts if m.type == "volume")),
        "Networks": ",".join(sorted(c.network_settings.networks)),
    }


def cmd_ps(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS]", "List containers")
    p.add_argument("-a", "--all", action="store_true", help="Show all containers (default shows just running)")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display container IDs")
    p.add_argument("-f", "--filter", action="append", default=[], help="Filter output based on conditions provided")
    p.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    p.add_argument("-n", "--last", type=int64, default=0, help="Show n last created containers (includes all states)")
    p.add_argument("-l", "--latest", action="store_true", help="Show the latest created container (includes all states)")
    p.add_argument("-s", "--size", action="store_true", help="Display total file sizes")
    p.add_argument("--all-namespaces", action="store_true",
                   help="Include Kubernetes' pods and containers (made through the CRI)")
    p.add_argument("--format", default="",
                   help="'json' for one JSON document, or a Go template ('table ...' for columns)")
    args = p.parse_args(argv)
    limit = 1 if args.latest else args.last
    # A template that shows .Size asks for it, as docker's ps does.
    sized = args.size or ".Size" in args.format
    request = container_pb2.ListContainersRequest(
        all=args.all or limit > 0, limit=limit, size=sized, all_namespaces=args.all_namespaces,
        filters=[common_pb2.Filter(key=k, value=v) for k, v in parse_filters(args.filter)])
    containers = cli.stub("ContainerService").ListContainers(request).containers
    if args.quiet:
        for c in containers:
            cli.print(c.id if args.no_trunc else c.id[:12])
        return 0
    if args.format:
        text = format_rows([_ps_row(c, args.no_trunc, sized) for c in containers], args.format, PS_HEADERS)
        if text is not None:
            cli.out.write(text)
            return 0
    headers = ["CONTAINER ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    rows = []
    for c in containers:
        row = [c.id if args.no_trunc else c.id[:12], c.image, _command_text(c, not args.no_trunc),
               time_ago(c.created), c.status_text, _ports_text(c), c.name]
        if args.size:
            row.append(human_size(c.size_rw))
        rows.append(row)
    if args.size:
        headers.append("SIZE")
    cli.print_table(headers, rows)
    return 0


def _health_json(state: Any) -> dict[str, Any]:
    """
    docker's State.Health.
    """
    return {
        "Status": state.health,
        "FailingStreak": state.health_failing_streak,
        "Log": [{"Start": _ts(r.start), "End": _ts(r.end), "ExitCode": r.exit_code, "Output": r.output}
                for r in state.health_log],
    }


def _healthcheck_json(h: Any) -> dict[str, Any]:
    """
    docker's Config.Healthcheck: durations in nanoseconds, only those set.
    """
    out: dict[str, Any] = {"Test": list(h.test)} if h.test else {}
    for key, value in (("Interval", h.interval_ns), ("Timeout", h.timeout_ns),
                       ("StartPeriod", h.start_period_ns), ("Retries", h.retries)):
        if value:
            out[key] = value
    return out


def _ts(ts: Any) -> str:
    if not ts.seconds and not ts.nanos:
        return "0001-01-01T00:00:00Z"
    return rfc3339(ts.seconds, ts.nanos)


def container_json(c: Any) -> dict[str, Any]:
    """
    A container as ``docker inspect`` shows it.
    """
    from google.protobuf.json_format import MessageToDict

    from ross.cli.networks import network_settings_json

    state = c.state
    status = status_name(state.status)
    config = MessageToDict(c.config, preserving_proto_field_name=False)
    config["Cmd"] = list(c.config.cmd.values)
    config["Entrypoint"] = list(c.config.entrypoint.values) or None
    # docker's shape replaces the message's.
    config.pop("healthcheck", None)
    if c.config.HasField("healthcheck"):
        config["Healthcheck"] = _healthcheck_json(c.config.healthcheck)
    host = MessageToDict(c.host_config, preserving_proto_field_name=False)
    return {
        "Id": c.id,
        "Created": _ts(c.created),
        "Path": c.path,
        "Args": list(c.args),
        "State": {
            "Status": status,
            "Running": status in ("running", "paused"),
            "Paused": status == "paused",
            "Restarting": status == "restarting",
            "OOMKilled": state.oom_killed,
            "Dead": status == "dead",
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": _ts(state.started_at),
            "FinishedAt": _ts(state.finished_at),
            **({"Health": _health_json(state)} if state.health else {}),
        },
        "Image": c.image_id,
        "LogPath": c.log_path,
        "Name": "/" + c.name,
        "RestartCount": c.restart_count,
        "Driver": c.driver,
        "ExecIDs": list(c.exec_ids) or None,
        "HostConfig": host,
        "Mounts": [
            {
                "Type": m.type,
                **({"Name": m.name} if m.name else {}),
                "Source": m.source,
                "Destination": m.destination,
                "RW": m.read_write,
                "Propagation": m.propagation,
            }
            for m in c.mounts
        ],
        "Config": {"Image": c.image, **config},
        "NetworkSettings": network_settings_json(c.network_settings),
        "ImageRef": c.image,
        **({"SizeRw": c.size_rw} if c.size_rw else {}),
    }


def _inspect(cli: Cli, names: list[str], fmt: str, size: bool, kinds: Sequence[str]) -> int:
    """
    docker's inspect: each name as the first of C{kinds} (container,
    image, network, volume) it names, all in one JSON list or each through
    C{fmt}.
    """
    stub = cli.stub("ContainerService")

    def container(name: str) -> Any:
        found = stub.InspectContainer(container_pb2.InspectContainerRequest(container_id=name, size=size,
                                                                            docker=True))
        # docker's document, as the Docker API gives it (a daemon from
        # before it only has the message).
        if found.docker_json:
            import json

            return json.loads(found.docker_json)
        return container_json(found.container)

    def image(name: str) -> Any:
        from ross.cli.images import image_json

        return image_json(cli, name)

    def network(name: str) -> Any:
        from ross.cli.networks import network_json
        from ross.v1 import network_pb2

        return network_json(cli.stub("NetworkService").InspectNetwork(
            network_pb2.InspectNetworkRequest(network=name)).network)

    def volume(name: str) -> Any:
        from ross.cli.volumes import volume_json
        from ross.v1 import volume_pb2

        return volume_json(cli.stub("VolumeService").InspectVolume(volume_pb2.InspectVolumeRequest(name=name)).volume)

    fetchers = {"container": container, "image": image, "network": network, "volume": volume}
    results: list[Any] = []
    status = 0
    for name in names:
        for kind in kinds:
            try:
                results.append(fetchers[kind](name))
                break
            except grpc.RpcError as e:
                if e.code() == grpc.StatusCode.UNAVAILABLE:
                    raise
                # A name that is no object of this kind (or not even a
                # valid image reference) may be the next's; an ID prefix
                # that names several is said as it is.
                next_kind = e.code() == grpc.StatusCode.NOT_FOUND or (
                    e.code() == grpc.StatusCode.INVALID_ARGUMENT and kind == "image")
                if not next_kind or len(kinds) == 1:
                    cli.err.write(f"Error: {error_of(cli, e).message}\n")
                    status = 1
                    break
        else:
            cli.err.write(f"Error: No such object: {name}\n")
            status = 1
    if fmt:
        for r in results:
            cli.print(render_template(r, fmt))
    else:
        cli.print_json(results)
    return status


def cmd_inspect(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] NAME|ID [NAME|ID...]", "Return low-level information on Ross objects")
    p.add_argument("-f", "--format", default="", help="Format output using a Go-like template")
    p.add_argument("-s", "--size", action="store_true", help="Display total file sizes if the type is container")
    p.add_argument("--type", default="", help="Only inspect objects of the given type")
    p.add_argument("names", nargs="+")
    args = p.parse_args(argv)
    kinds = ("container", "image", "network", "volume")
    if args.type and args.type not in kinds:
        raise CliError(f"\"{args.type}\" is not a valid value for --type")
    return _inspect(cli, args.names, args.format, args.size, (args.type,) if args.type else kinds)


def cmd_container_inspect(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER [CONTAINER...]", "Display detailed information on one or more containers")
    p.add_argument("-f", "--format", default="", help="Format output using a Go-like template")
    p.add_argument("-s", "--size", action="store_true", help="Display total file sizes")
    p.add_argument("names", nargs="+")
    args = p.parse_args(argv)
    return _inspect(cli, args.names, args.format, args.size, ("container",))


def cmd_logs(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER", "Fetch the logs of a container")
    p.add_argument("-f", "--follow", action="store_true", help="Follow log output")
    p.add_argument("-n", "--tail", default="all", help="Number of lines to show from the end of the logs")
    p.add_argument("--since", default="", help="Show logs since timestamp or relative (e.g. 42m)")
    p.add_argument("--until", default="", help="Show logs before a timestamp or relative (e.g. 42m)")
    p.add_argument("-t", "--timestamps", action="store_true", help="Show timestamps")
    p.add_argument("--details", action="store_true",
                   help="Show extra details provided to logs (Ross's log driver records none)")
    # Beyond docker: the daemon searches, so a large log is not shipped.
    p.add_argument("--grep", default=None, metavar="PATTERN",
                   help="Only lines matching a regular expression (searched by the daemon)")
    p.add_argument("-C", "--context", type=int32, default=0, metavar="N",
                   help="With --grep, N lines of context around each match")
    p.add_argument("container")
    args = p.parse_args(argv)
    request = container_pb2.GetLogsRequest(container_id=args.container, follow=args.follow, stdout=True, stderr=True,
                                           timestamps=args.timestamps)
    if args.grep is not None:
        if args.context < 0:
            raise CliError(f"invalid context value {args.context}: a number of lines")
        request.filter.CopyFrom(container_pb2.LogFilter(pattern=args.grep, regex=True, before=args.context,
                                                        after=args.context))
    # What is not a number of lines is all of them (docker's).
    if args.tail.isdigit():
        request.tail = int(args.tail)
    if args.since:
        request.since.CopyFrom(time_argument(args.since))
    if args.until:
        request.until.CopyFrom(time_argument(args.until))
    out = sys.stdout.buffer
    err = sys.stderr.buffer
    stream = cli.stub("ContainerService").GetLogs(request)
    try:
        for batch in stream:
            # Consecutive lines of one stream go out together; order across
            # stdout and stderr is kept.
            run: list[bytes] = []
            run_stream = None
            for entry in batch.entries:
                line = entry.line
                if entry.gap:
                    # grep's separator between groups of context, on stdout.
                    if run:
                        _flush(out, err, run_stream, run)
                        run = []
                    _flush(out, err, None, [b"--\n"])
                if args.timestamps:
                    line = rfc3339(entry.time.seconds, entry.time.nanos).encode() + b" " + line
                if entry.stream != run_stream and run:
                    _flush(out, err, run_stream, run)
                    run = []
                run_stream = entry.stream
                run.append(line)
            if run:
                _flush(out, err, run_stream, run)
    except KeyboardInterrupt:
        stream.cancel()
    return 0


def _flush(out: Any, err: Any, stream: Any, lines: list[bytes]) -> None:
    target = err if stream == common_pb2.STD_STREAM_STDERR else out
    target.write(b"".join(lines))
    target.flush()


def cmd_top(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("CONTAINER [ps OPTIONS]", "Display the running processes of a container")
    p.add_argument("container")
    p.add_argument("ps_args", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    response = cli.stub("ContainerService").Top(
        container_pb2.TopRequest(container_id=args.container, ps_args=" ".join(args.ps_args)))
    cli.print_table(list(response.titles), [list(row.values) for row in response.processes])
    return 0


def _binary_size(n: float) -> str:
    """
    docker's BytesSize: binary units, as stats shows memory.
    """
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    i = 0
    while n >= 1024 and i < len(units) - 1:
        n /= 1024.0
        i += 1
    return f"{n:.4g}{units[i]}"


def stats_row(s: Any, no_trunc: bool = False) -> list[str]:
    memory_percent = 100.0 * s.memory_usage / s.memory_limit if s.memory_limit else 0.0
    return [
        s.container_id if no_trunc else s.container_id[:12],
        s.name,
        f"{s.cpu_percent:.2f}%",
        f"{_binary_size(s.memory_usage)} / {_binary_size(s.memory_limit)}",
        f"{memory_percent:.2f}%",
        f"{human_size(s.net_rx_bytes)} / {human_size(s.net_tx_bytes)}",
        f"{human_size(s.block_read_bytes)} / {human_size(s.block_write_bytes)}",
        str(s.pids),
    ]


STATS_HEADERS = ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
#: The fields of ``stats --format`` templates, docker's names for L{stats_row}'s columns.
STATS_FIELDS = ["ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs"]


def _stats_fields(s: Any, no_trunc: bool, given: str = "") -> dict[str, str]:
    """A stats row's fields; C{.Container} is the name or ID as the user gave it (docker's)."""
    fields = dict(zip(STATS_FIELDS, stats_row(s, no_trunc)))
    fields["Container"] = given or fields["ID"]
    return fields


def cmd_stats(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] [CONTAINER...]", "Display a live stream of container(s) resource usage statistics")
    p.add_argument("-a", "--all", action="store_true", help="Show all containers (default shows just running)")
    p.add_argument("--no-stream", action="store_true", help="Disable streaming stats and only pull the first result")
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate output")
    p.add_argument("--format", default="",
                   help="'json' for one JSON document, or a Go template ('table ...' for columns)")
    p.add_argument("containers", nargs="*")
    args = p.parse_args(argv)
    stub = cli.stub("ContainerService")
    names = args.containers or [c.id for c in stub.ListContainers(
        container_pb2.ListContainersRequest(all=args.all)).containers]
    while True:
        samples = [next(iter(stub.Stats(container_pb2.StatsRequest(container_id=n, stream=False))))
                   for n in names]
        text = format_rows([_stats_fields(s, args.no_trunc, n if args.containers else "")
                            for s, n in zip(samples, names)], args.format, dict(
            zip(STATS_FIELDS, STATS_HEADERS), Container="CONTAINER")) if args.format else None
        if not args.no_stream:
            cli.out.write("\x1b[2J\x1b[H")
        if text is not None:
            cli.out.write(text)
        else:
            cli.print_table(STATS_HEADERS, [stats_row(s, args.no_trunc) for s in samples])
        cli.out.flush()
        if args.no_stream:
            return 0


def cmd_diff(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("CONTAINER", "Inspect changes to files or directories on a container's filesystem")
    p.add_argument("container")
    args = p.parse_args(argv)
    letters = {container_pb2.Change.ADDED: "A", container_pb2.Change.MODIFIED: "C",
               container_pb2.Change.DELETED: "D"}
    response = cli.stub("ContainerService").Diff(container_pb2.DiffRequest(container_id=args.container))
    for change in response.changes:
        cli.print(f"{letters[change.kind]} {change.path}")
    return 0


def cmd_port(cli: Cli, argv: list[str]) -> int:
    from ross.cli.networks import host_port_text

    if len(argv) == 3 and argv[0] in ("add", "rm"):
        return (_port_add if argv[0] == "add" else _port_rm)(cli, argv[1:])
    p = cli.parser("CONTAINER [PRIVATE_PORT[/PROTO]]\n       ross port add|rm CONTAINER [[IP:]HOST_PORT:]PORT[/PROTO]",
                   "List port mappings or a specific mapping for the container; publish (add) or unpublish (rm) "
                   "one, while it runs too")
    p.add_argument("container")
    p.add_argument("port", nargs="?", default="")
    args = p.parse_args(argv)
    container = cli.stub("ContainerService").InspectContainer(
        container_pb2.InspectContainerRequest(container_id=args.container)).container
    wanted = args.port if not args.port or "/" in args.port else f"{args.port}/tcp"
    mappings = [m for m in container.network_settings.ports
                if m.host_port and (not wanted or m.container_port == wanted)]
    if wanted and not mappings:
        raise CliError(f"No public port '{wanted}' published for {args.container}")
    for m in mappings:
        address = host_port_text(m)
        cli.print(address if wanted else f"{m.container_port} -> {address}")
    return 0


def _port_add(cli: Cli, argv: list[str]) -> int:
    """
    ross port add CONTAINER [IP:]HOST_PORT:PORT[/PROTO] (ranges as -p).
    """
    from ross.cli.networks import host_port_text

    container, spec = argv
    stub = cli.stub("ContainerService")
    for binding in _parse_port(spec):
        published = stub.PublishPort(container_pb2.PublishPortRequest(container_id=container, binding=binding)).ports
        for m in published:
            cli.print(f"{m.container_port} -> {host_port_text(m)}")
    return 0


def _port_rm(cli: Cli, argv: list[str]) -> int:
    """
    ross port rm CONTAINER [[IP:]HOST_PORT:]PORT[/PROTO]: every mapping of
    PORT, or the one on that host port.
    """
    from ross.cli.networks import host_port_text

    container, spec = argv
    stub = cli.stub("ContainerService")
    for binding in _parse_port(spec):
        removed = stub.UnpublishPort(container_pb2.UnpublishPortRequest(
            container_id=container, container_port=binding.container_port, host_ip=binding.host_ip,
            host_port=binding.host_port)).ports
        for m in removed:
            cli.print(f"{m.container_port} -> {host_port_text(m)}")
    return 0


def cmd_export(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER", "Export a container's filesystem as a tar archive")
    p.add_argument("-o", "--output", default="", help="Write to a file, instead of STDOUT")
    p.add_argument("container")
    args = p.parse_args(argv)
    if not args.output and sys.stdout.isatty():
        raise CliError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    stream = cli.stub("ContainerService").Export(container_pb2.ExportRequest(container_id=args.container))
    target = open(args.output, "wb") if args.output else sys.stdout.buffer
    try:
        for chunk in stream:
            target.write(chunk.data)
    finally:
        if args.output:
            target.close()
    return 0


def cmd_commit(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER [REPOSITORY[:TAG]]", "Create a new image from a container's changes")
    p.add_argument("-a", "--author", default="", help='Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")')
    p.add_argument("-c", "--change", action="append", default=[], help="Apply Dockerfile instruction to the created image")
    p.add_argument("-m", "--message", default="", help="Commit message")
    p.add_argument("-p", "--pause", action="store_true", default=True,
                   help="Pause container during commit (default true)")
    p.add_argument("container")
    p.add_argument("reference", nargs="?", default="")
    args = p.parse_args(argv)
    response = cli.stub("ContainerService").Commit(container_pb2.CommitRequest(
        container_id=args.container, reference=args.reference, comment=args.message, author=args.author,
        changes=args.change, pause=args.pause))
    cli.print(response.id)
    return 0
