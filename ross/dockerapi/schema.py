# -*- test-case-name: ross.test.test_dockerapi_schema -*-
"""
docker's JSON schemas and the engine's records, converted explicitly both
ways: a create request into a container and host config, and containers,
images, volumes, networks and events into what dockerd answers.

Request bodies are untrusted: every field is checked for its type, and a
wrong one is a 400 naming it.
"""

from __future__ import annotations

import datetime
import functools
import ipaddress
from typing import Any, Iterable, Mapping

import attrs

from ross.engine.containers import config as container_config
from ross.engine.runtime.spec import Resources
from ross.engine.containers.store import ContainerRecord, MountPoint
from ross.engine.events import Event
from ross.engine.images.catalog import Image, ImageSummary
from ross.engine.network.store import Endpoint, Network
from ross.engine.volumes import Volume
from ross.errors import InvalidArgument
from ross.humanize import docker_status, parse_bytes, parse_rfc3339_ns, parse_time
from ross.imageconfig import inspect_config
from ross.reference import ReferenceError, parse_normalized

ZERO_TIME = "0001-01-01T00:00:00Z"


# ---------------------------------------------------------------- times


def rfc3339_ns(ns: int) -> str:
    """
    docker's time format (RFC 3339, nanoseconds, UTC); its zero time for 0.
    """
    if not ns:
        return ZERO_TIME
    seconds, nanos = divmod(ns, 1_000_000_000)
    stamp = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{nanos:09d}Z"


def time_param(text: str, now: float) -> int | None:
    """
    A C{since}/C{until} parameter (Unix seconds with fractions, RFC 3339 or
    a duration before now) in nanoseconds; None when absent.
    """
    if not text:
        return None
    return int(parse_time(text, now) * 1e9)


# ---------------------------------------------------------------- reading requests


def _field(data: Mapping[str, Any], key: str, kinds: Any, default: Any, where: str) -> Any:
    value = data.get(key)
    if value is None:
        return default
    if not isinstance(value, kinds) or (isinstance(value, bool) and kinds in (int, (int, float))):
        raise InvalidArgument(f"invalid {where}{key}: wrong type")
    return value


def _text(data: Mapping[str, Any], key: str, where: str = "") -> str:
    value: str = _field(data, key, str, "", where)
    return value


def _flag(data: Mapping[str, Any], key: str, where: str = "") -> bool:
    value: bool = _field(data, key, bool, False, where)
    return value


def _number(data: Mapping[str, Any], key: str, where: str = "") -> int:
    value = _field(data, key, (int, float), 0, where)
    return int(value)


def _host_objects(h: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """HostConfig's list of objects C{key} (none when null)."""
    value = h.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise InvalidArgument(f"invalid HostConfig.{key}: expected a list of objects")
    return value


def _ulimits(h: Mapping[str, Any]) -> tuple[container_config.Ulimit, ...]:
    """HostConfig.Ulimits: [{"Name": "nofile", "Soft": 1024, "Hard": 2048}]."""
    where = "HostConfig.Ulimits."
    return tuple(container_config.Ulimit(_text(u, "Name", where), _number(u, "Soft", where), _number(u, "Hard", where))
                 for u in _host_objects(h, "Ulimits"))


def _devices(h: Mapping[str, Any]) -> tuple[container_config.Device, ...]:
    """HostConfig.Devices: [{"PathOnHost": ..., "PathInContainer": ..., "CgroupPermissions": "rwm"}]."""
    where = "HostConfig.Devices."
    return tuple(container_config.Device(_text(d, "PathOnHost", where),
                                         _text(d, "PathInContainer", where) or _text(d, "PathOnHost", where),
                                         _text(d, "CgroupPermissions", where) or "rwm")
                 for d in _host_objects(h, "Devices"))


def _object(data: Mapping[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value: dict[str, Any] = _field(data, key, dict, {}, where)
    return value


def _texts(data: Mapping[str, Any], key: str, where: str = "") -> tuple[str, ...] | None:
    """
    A list of strings (docker also takes one string for Cmd and
    Entrypoint); None when absent or null.
    """
    value = data.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"invalid {where}{key}: expected a list of strings")
    return tuple(value)


def _labels(data: Mapping[str, Any], key: str, where: str = "") -> dict[str, str]:
    labels = _object(data, key, where)
    if not all(isinstance(v, str) for v in labels.values()):
        raise InvalidArgument(f"invalid {where}{key}: values must be strings")
    return labels


@attrs.frozen
class EndpointRequest:
    """
    A network a container is to join, from C{NetworkingConfig}.
    """

    network: str
    ip: str = ""
    ip6: str = ""
    aliases: tuple[str, ...] = ()
    mac_address: str = ""


@attrs.frozen
class CreateRequest:
    config: container_config.ContainerConfig
    host: container_config.HostConfig
    #: Networks to connect the container to beyond its network mode's.
    networks: tuple[EndpointRequest, ...] = ()


# What Ross does not do; refused rather than ignored when asked for.
_UNSUPPORTED_HOST = ("Links", "DeviceRequests", "DeviceCgroupRules")
_NAMESPACE_MODES = {"UTSMode": ("", "host"), "CgroupnsMode": ("", "private")}


def _healthcheck(data: Mapping[str, Any]) -> container_config.HealthConfig | None:
    h = data.get("Healthcheck")
    if h is None:
        return None
    if not isinstance(h, dict):
        raise InvalidArgument("invalid Healthcheck: expected an object")
    where = "Healthcheck."
    return container_config.HealthConfig(test=_texts(h, "Test", where) or (), interval_ns=_number(h, "Interval", where),
                            timeout_ns=_number(h, "Timeout", where),
                            start_period_ns=_number(h, "StartPeriod", where), retries=_number(h, "Retries", where))


def _port_bindings(data: Mapping[str, Any]) -> tuple[container_config.PortBinding, ...]:
    bindings = []
    for port, hosts in sorted(_object(data, "PortBindings", "HostConfig.").items()):
        container_port = port if "/" in port else f"{port}/tcp"
        if hosts is None:
            continue
        if not isinstance(hosts, list):
            raise InvalidArgument(f"invalid HostConfig.PortBindings[{port[:32]}]: expected a list")
        for host in hosts:
            if not isinstance(host, dict):
                raise InvalidArgument(f"invalid HostConfig.PortBindings[{port[:32]}]: expected objects")
            where = "HostConfig.PortBindings."
            bindings.append(container_config.PortBinding(container_port, _text(host, "HostIp", where).strip("[]"),
                                            _text(host, "HostPort", where)))
    return tuple(bindings)


def _mounts(data: Mapping[str, Any]) -> tuple[container_config.MountSpec, ...]:
    value = data.get("Mounts")
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(m, dict) for m in value):
        raise InvalidArgument("invalid HostConfig.Mounts: expected a list of objects")
    mounts = []
    for m in value:
        where = "HostConfig.Mounts."
        tmpfs = _object(m, "TmpfsOptions", where)
        bind = _object(m, "BindOptions", where)
        volume = _object(m, "VolumeOptions", where)
        driver = _object(volume, "DriverConfig", where)
        if _text(driver, "Name", where) not in ("", "local"):
            raise InvalidArgument(f"volume driver {_text(driver, 'Name', where)!r} is not supported: only 'local'")
        mounts.append(container_config.MountSpec(
            type=_text(m, "Type", where) or "volume", source=_text(m, "Source", where),
            target=_text(m, "Target", where), read_only=_flag(m, "ReadOnly", where),
            propagation=_text(bind, "Propagation", where), non_recursive=_flag(bind, "NonRecursive", where),
            tmpfs_size=_number(tmpfs, "SizeBytes", where), tmpfs_mode=_number(tmpfs, "Mode", where),
            volume_nocopy=_flag(volume, "NoCopy", where),
            volume_labels=tuple(sorted(_labels(volume, "Labels", where + "VolumeOptions.").items())),
            volume_options=tuple(sorted(_labels(driver, "Options", where + "VolumeOptions.DriverConfig.").items()))))
    return tuple(mounts)


def _resources(h: Mapping[str, Any]) -> Resources:
    nano_cpus = _number(h, "NanoCpus")
    quota, period = _number(h, "CpuQuota"), _number(h, "CpuPeriod")
    if not nano_cpus and quota > 0:
        nano_cpus = quota * 1_000_000_000 // (period or 100_000)
    return Resources(memory=_number(h, "Memory"), nano_cpus=nano_cpus,
                                      pids_limit=_number(h, "PidsLimit"),
                         memory_swap=_number(h, "MemorySwap"), cpu_shares=_number(h, "CpuShares"),
                         cpuset_cpus=_text(h, "CpusetCpus"), cpuset_mems=_text(h, "CpusetMems"),
                         memory_reservation=_number(h, "MemoryReservation"),
                         oom_kill_disable=bool(_flag(h, "OomKillDisable")))


#: The limits docker update may change on a Ross container.
UPDATABLE_RESOURCES = frozenset({"Memory", "MemorySwap", "MemoryReservation", "NanoCpus", "CpuQuota", "CpuPeriod",
                                 "CpuShares", "PidsLimit"})


def updated_resources(body: Mapping[str, Any], current: Resources) -> Resources:
    """The limits after docker update: what the body gives over the container's own."""
    return current.updated(_resources(body))


def _log_config(h: Mapping[str, Any]) -> container_config.LogConfig:
    log = _object(h, "LogConfig", "HostConfig.")
    options = _labels(log, "Config", "HostConfig.LogConfig.")
    kind = _text(log, "Type") or "json-file"
    if kind not in ("json-file", "none", "local"):
        raise InvalidArgument(f"logger: no log driver named '{kind[:64]}' is registered")
    unknown = set(options) - {"max-size", "max-file"}
    if unknown:
        raise InvalidArgument(f"unknown log opt '{sorted(unknown)[0][:64]}' for json-file log driver")
    max_file = options.get("max-file", "1")
    if not max_file.isdigit() or int(max_file) < 1:
        raise InvalidArgument(f"invalid max-file {max_file[:32]!r}: must be a positive number")
    return container_config.LogConfig(type="none" if kind == "none" else "json-file",
                         max_size=parse_bytes(options["max-size"]) if "max-size" in options else 0,
                         max_file=int(max_file))


def _endpoints(body: Mapping[str, Any]) -> dict[str, EndpointRequest]:
    networking = _object(body, "NetworkingConfig")
    found = {}
    for name, settings in _object(networking, "EndpointsConfig", "NetworkingConfig.").items():
        if settings is None:
            settings = {}
        if not isinstance(settings, dict):
            raise InvalidArgument(f"invalid NetworkingConfig.EndpointsConfig[{name[:64]}]: expected an object")
        where = "EndpointsConfig."
        ipam = _object(settings, "IPAMConfig", where)
        found[name] = EndpointRequest(network=name, ip=_text(ipam, "IPv4Address", where),
                                      ip6=_text(ipam, "IPv6Address", where),
                                      aliases=_texts(settings, "Aliases", where) or (),
                                      mac_address=_text(settings, "MacAddress", where))
    return found


def create_request(body: Any) -> CreateRequest:
    """
    A container create body (docker's Config with HostConfig and
    NetworkingConfig inside) as the engine's configs.
    """
    if not isinstance(body, dict):
        raise InvalidArgument("invalid container config: expected a JSON object")
    h = _object(body, "HostConfig")
    for key in _UNSUPPORTED_HOST:
        if h.get(key):
            raise InvalidArgument(f"HostConfig.{key} is not supported by Ross")
    for key, allowed in _NAMESPACE_MODES.items():
        if _text(h, key, "HostConfig.") not in allowed:
            raise InvalidArgument(f"HostConfig.{key} {h[key][:32]!r} is not supported by Ross")
    entrypoint = _texts(body, "Entrypoint")
    if entrypoint == ("",):
        # The CLI's --entrypoint "": no entrypoint at all, not the image's.
        entrypoint = ()
    exposed = _object(body, "ExposedPorts")
    stop_timeout = body.get("StopTimeout")
    if stop_timeout is not None and (not isinstance(stop_timeout, int) or isinstance(stop_timeout, bool)):
        raise InvalidArgument("invalid StopTimeout: wrong type")
    image = _text(body, "Image")
    if not image:
        raise InvalidArgument("config cannot be empty in order to create a container")
    config = container_config.ContainerConfig(
        image=image,
        cmd=_texts(body, "Cmd"),
        entrypoint=entrypoint,
        env=_texts(body, "Env") or (),
        working_dir=_text(body, "WorkingDir"),
        user=_text(body, "User"),
        hostname=_text(body, "Hostname"),
        domainname=_text(body, "Domainname"),
        labels=_labels(body, "Labels"),
        tty=_flag(body, "Tty"),
        open_stdin=_flag(body, "OpenStdin"),
        stdin_once=_flag(body, "StdinOnce"),
        stop_signal=_text(body, "StopSignal"),
        stop_timeout=stop_timeout,
        healthcheck=_healthcheck(body),
        exposed_ports=tuple(sorted(p if "/" in p else f"{p}/tcp" for p in exposed)),
        group_add=_texts(h, "GroupAdd", "HostConfig.") or (),
        volumes=tuple(sorted(_object(body, "Volumes"))),
    )
    binds = _texts(h, "Binds", "HostConfig.") or ()
    restart = _object(h, "RestartPolicy", "HostConfig.")
    init = h.get("Init")
    mode = _text(h, "NetworkMode", "HostConfig.")
    endpoints = _endpoints(body)
    own = endpoints.pop(mode, None) or (endpoints.pop("bridge", None) if mode in ("", "default") else None)
    if own is None and mode in ("", "default", "bridge") and len(endpoints) == 1:
        # No mode but one network: the network is the mode (docker-py's
        # networking_config without network_mode).
        own = endpoints.pop(next(iter(endpoints)))
        mode = own.network
    own = own or EndpointRequest(network=mode)
    host = container_config.HostConfig(
        binds=binds,
        mounts=_mounts(h),
        tmpfs=_labels(h, "Tmpfs", "HostConfig."),
        auto_remove=_flag(h, "AutoRemove"),
        restart_policy=container_config.RestartPolicy(_text(restart, "Name") or "no",
                                                      _number(restart, "MaximumRetryCount")),
        init=bool(init) if isinstance(init, bool) else False,
        network_mode="" if mode == "default" else mode,
        port_bindings=_port_bindings(h),
        publish_all_ports=_flag(h, "PublishAllPorts"),
        dns=_texts(h, "Dns", "HostConfig.") or (),
        extra_hosts=_texts(h, "ExtraHosts", "HostConfig.") or (),
        resources=_resources(h),
        readonly_rootfs=_flag(h, "ReadonlyRootfs"),
        cap_add=_texts(h, "CapAdd", "HostConfig.") or (),
        cap_drop=_texts(h, "CapDrop", "HostConfig.") or (),
        privileged=_flag(h, "Privileged"),
        security_opt=_texts(h, "SecurityOpt", "HostConfig.") or (),
        log_config=_log_config(h),
        ip=own.ip,
        network_aliases=own.aliases,
        dns_search=_texts(h, "DnsSearch", "HostConfig.") or (),
        dns_options=_texts(h, "DnsOptions", "HostConfig.") or (),
        mac_address=own.mac_address or _text(body, "MacAddress"),
        userns_mode=_text(h, "UsernsMode", "HostConfig."),
        oom_score_adj=_number(h, "OomScoreAdj", "HostConfig."),
        ip6=own.ip6,
        shm_size=_number(h, "ShmSize", "HostConfig."),
        ulimits=_ulimits(h),
        devices=_devices(h),
        # docker's "shareable" is what every private IPC namespace is here.
        ipc_mode="" if _text(h, "IpcMode", "HostConfig.") == "shareable" else _text(h, "IpcMode", "HostConfig."),
        pid_mode=_text(h, "PidMode", "HostConfig."),
        uts_mode=_text(h, "UTSMode", "HostConfig."),
        volumes_from=_texts(h, "VolumesFrom", "HostConfig.") or (),
        sysctls=_labels(h, "Sysctls", "HostConfig."),
    )
    return CreateRequest(config=config, host=host, networks=tuple(endpoints.values()))


# ---------------------------------------------------------------- containers


def _ports_map(ports: Iterable[str]) -> dict[str, Any] | None:
    found: dict[str, Any] = {p: {} for p in ports}
    return found or None


def health_json(state: Any) -> dict[str, Any] | None:
    if not state.health:
        return None
    return {"Status": state.health, "FailingStreak": state.failing_streak,
            "Log": [{"Start": rfc3339_ns(r.start_ns), "End": rfc3339_ns(r.end_ns), "ExitCode": r.exit_code,
                     "Output": r.output} for r in state.health_log]}


def config_json(record: ContainerRecord) -> dict[str, Any]:
    c = record.config
    config: dict[str, Any] = {
        "Hostname": c.hostname,
        "Domainname": c.domainname,
        "User": c.user,
        "AttachStdin": c.open_stdin and c.stdin_once,
        "AttachStdout": not c.open_stdin or c.stdin_once,
        "AttachStderr": not c.open_stdin or c.stdin_once,
        "ExposedPorts": _ports_map(c.exposed_ports),
        "Tty": c.tty,
        "OpenStdin": c.open_stdin,
        "StdinOnce": c.stdin_once,
        "Env": list(c.env),
        "Cmd": list(c.cmd) if c.cmd else None,
        "Image": record.image,
        "Volumes": {m.destination: {} for m in record.mounts if m.type == "volume"} or None,
        "WorkingDir": c.working_dir if c.working_dir != "/" else "",
        "Entrypoint": list(c.entrypoint) if c.entrypoint else None,
        "OnBuild": None,
        "Labels": dict(c.labels),
        "StopSignal": c.stop_signal,
    }
    if c.stop_timeout is not None:
        config["StopTimeout"] = c.stop_timeout
    if c.healthcheck is not None:
        config["Healthcheck"] = c.healthcheck.to_json()
    return config


def host_config_json(record: ContainerRecord) -> dict[str, Any]:
    h = record.host
    r = h.resources
    bindings: dict[str, list[dict[str, str]]] = {}
    for b in h.port_bindings:
        bindings.setdefault(b.container_port, []).append({"HostIp": b.host_ip, "HostPort": b.host_port})
    log_options = {}
    if h.log_config.max_size:
        log_options["max-size"] = str(h.log_config.max_size)
    if h.log_config.max_file > 1:
        log_options["max-file"] = str(h.log_config.max_file)
    return {
        "Binds": list(h.binds) or None,
        "ContainerIDFile": "",
        "LogConfig": {"Type": h.log_config.type, "Config": log_options},
        "NetworkMode": h.network_mode or "bridge",
        "PortBindings": bindings,
        "RestartPolicy": {"Name": h.restart_policy.name, "MaximumRetryCount": h.restart_policy.maximum_retry_count},
        "AutoRemove": h.auto_remove,
        "VolumeDriver": "",
        "VolumesFrom": list(h.volumes_from) or None,
        "ConsoleSize": [0, 0],
        "CapAdd": list(h.cap_add) or None,
        "CapDrop": list(h.cap_drop) or None,
        "CgroupnsMode": "private",
        "Dns": list(h.dns),
        "DnsOptions": list(h.dns_options),
        "DnsSearch": list(h.dns_search),
        "ExtraHosts": list(h.extra_hosts) or None,
        "GroupAdd": list(record.config.group_add) or None,
        "IpcMode": h.ipc_mode or "private",
        "Cgroup": "",
        "Links": None,
        "OomScoreAdj": h.oom_score_adj,
        "PidMode": h.pid_mode,
        "Sysctls": dict(h.sysctls) or None,
        "Privileged": h.privileged,
        "PublishAllPorts": h.publish_all_ports,
        "ReadonlyRootfs": h.readonly_rootfs,
        "SecurityOpt": list(h.security_opt) or None,
        "UTSMode": h.uts_mode,
        "UsernsMode": h.userns_mode,
        "ShmSize": h.shm_size or 64 << 20,
        "Runtime": "ross",
        "Isolation": "",
        "CpuShares": r.cpu_shares,
        "Memory": r.memory,
        "NanoCpus": r.nano_cpus,
        "CgroupParent": "",
        "BlkioWeight": 0,
        "CpuPeriod": 0,
        "CpuQuota": 0,
        "CpusetCpus": r.cpuset_cpus,
        "CpusetMems": r.cpuset_mems,
        "MemoryReservation": r.memory_reservation,
        "MemorySwap": r.memory_swap,
        "MemorySwappiness": None,
        "OomKillDisable": r.oom_kill_disable,
        "PidsLimit": r.pids_limit or None,
        "Ulimits": [{"Name": u.name, "Soft": u.soft, "Hard": u.hard} for u in h.ulimits] or None,
        "Devices": [{"PathOnHost": d.path_on_host, "PathInContainer": d.path_in_container,
                     "CgroupPermissions": d.cgroup_permissions} for d in h.devices],
        "Mounts": [{"Type": m.type, "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
                   for m in h.mounts] or None,
        "Tmpfs": dict(h.tmpfs) or None,
        "Init": h.init or None,
        "MaskedPaths": [],
        "ReadonlyPaths": [],
    }


def mount_json(m: MountPoint) -> dict[str, Any]:
    found: dict[str, Any] = {"Type": m.type, "Source": m.source, "Destination": m.destination,
                             "Mode": "z" if m.type == "volume" else "" if m.read_write else "ro", "RW": m.read_write,
                             "Propagation": m.propagation or ("rprivate" if m.type == "bind" else "")}
    if m.type == "volume":
        found["Name"] = m.name
        found["Driver"] = "local"
    return found


@attrs.frozen
class EndpointSettings:
    """
    What a container was given on a network, running or not: its aliases,
    the names it answers to, the addresses it asked for.
    """

    aliases: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ipv4: str = ""
    ipv6: str = ""


def endpoint_settings(view: Any, members: Mapping[tuple[str, str], Any]) -> dict[str, EndpointSettings]:
    """
    A container's L{EndpointSettings} on each of its networks (by network
    ID): its endpoint's aliases while it runs, else those it was created or
    connected with (C{members}: the network manager's). On user-defined
    networks its name and short ID answer too, and the short ID is listed
    among the aliases as dockerd did before API 1.44, whatever the version:
    compose 1.x, which negotiates 1.44, looks for it there and otherwise
    disconnects the container from its network mode's network to connect
    it again, which Ross refuses.
    """
    record: ContainerRecord = view.record
    found = {}
    for network, endpoint in view.networks:
        member = members.get((network.id, record.id))
        ipv4, ipv6 = "", ""
        if member is not None:
            aliases, ipv4 = tuple(member.aliases), member.address
        else:
            aliases, ipv4, ipv6 = tuple(record.host.network_aliases), record.host.ip, record.host.ip6
        if endpoint is not None:
            aliases = tuple(endpoint.aliases)
        dns_names: tuple[str, ...] = ()
        if not network.builtin:
            dns_names = (record.name, record.id[:12], *aliases)
            if record.id[:12] not in aliases:
                aliases += (record.id[:12],)
        found[network.id] = EndpointSettings(aliases, dns_names, ipv4, ipv6)
    return found


@functools.lru_cache(maxsize=256)
def prefix_length(subnet: str) -> int:
    """The prefix length of a network's subnet (asked for every container listed)."""
    return ipaddress.ip_network(subnet).prefixlen


def _endpoint_json(network: Network, endpoint: Endpoint | None,
                   settings: EndpointSettings = EndpointSettings()) -> dict[str, Any]:
    ipam = None
    if settings.ipv4 or settings.ipv6:
        ipam = {"IPv4Address": settings.ipv4, "IPv6Address": settings.ipv6}
    entry: dict[str, Any] = {
        "IPAMConfig": ipam, "Links": None, "Aliases": list(settings.aliases) or None, "MacAddress": "",
        "NetworkID": network.id, "EndpointID": "", "Gateway": "", "IPAddress": "", "IPPrefixLen": 0,
        "IPv6Gateway": "", "GlobalIPv6Address": "", "GlobalIPv6PrefixLen": 0, "DriverOpts": None,
        "DNSNames": list(settings.dns_names) or None,
    }
    if endpoint is None:
        return entry
    entry.update({
        "MacAddress": endpoint.mac,
        "EndpointID": f"{network.id[:32]}{endpoint.container_id[:32]}",
        "Gateway": network.gateway,
        "IPAddress": endpoint.address,
        "IPPrefixLen": prefix_length(network.subnet),
    })
    if endpoint.address6:
        entry.update({"IPv6Gateway": network.gateway6, "GlobalIPv6Address": endpoint.address6,
                      "GlobalIPv6PrefixLen": prefix_length(network.subnet6)})
    return entry


def _published(networks: Iterable[tuple[Network, Endpoint | None]]) -> list[tuple[str, str, int]]:
    """
    (container port, host address, host port) of the first network's
    endpoint: what is published (host port 0: exposed only).
    """
    for _, endpoint in networks:
        if endpoint is None:
            continue
        found = []
        for p in endpoint.ports:
            hosts = [p.host_ip or "0.0.0.0"] + (["::"] if not p.host_ip and p.host_port > 0 and endpoint.address6
                                                 else [])
            found += [(p.container_port, host, max(0, p.host_port)) for host in hosts]
        return found
    return []


def network_settings_json(view: Any, settings: Mapping[str, EndpointSettings]) -> dict[str, Any]:
    networks = list(view.networks)
    ports: dict[str, Any] = {}
    for port, host, host_port in _published(networks):
        if host_port:
            ports.setdefault(port, []).append({"HostIp": host, "HostPort": str(host_port)})
        else:
            ports.setdefault(port, None)
    for port in view.record.config.exposed_ports:
        ports.setdefault(port, None)
    found: dict[str, Any] = {
        "Bridge": "", "SandboxID": "", "SandboxKey": "", "Ports": ports, "HairpinMode": False,
        "LinkLocalIPv6Address": "", "LinkLocalIPv6PrefixLen": 0, "SecondaryIPAddresses": None,
        "SecondaryIPv6Addresses": None, "EndpointID": "", "Gateway": "", "GlobalIPv6Address": "",
        "GlobalIPv6PrefixLen": 0, "IPAddress": "", "IPPrefixLen": 0, "IPv6Gateway": "", "MacAddress": "",
        "Networks": {network.name: _endpoint_json(network, endpoint, settings.get(network.id, EndpointSettings()))
                     for network, endpoint in networks},
    }
    for network, endpoint in networks:
        if network.builtin and endpoint is not None:
            # The top-level fields describe the default bridge only.
            entry = found["Networks"][network.name]
            for key in ("EndpointID", "Gateway", "GlobalIPv6Address", "GlobalIPv6PrefixLen", "IPAddress",
                        "IPPrefixLen", "IPv6Gateway", "MacAddress"):
                found[key] = entry[key]
    return found


_STATE_FLAGS = {"running": "Running", "paused": "Paused", "restarting": "Restarting", "dead": "Dead"}


def container_inspect(view: Any, settings: Mapping[str, EndpointSettings], size: bool = False) -> dict[str, Any]:
    """
    docker's ContainerJSON for a L{ross.engine.containers.manager.ContainerView}
    (with its L{endpoint_settings}).
    """
    record: ContainerRecord = view.record
    s = record.state
    args = list(record.config.entrypoint or ()) + list(record.config.cmd or ())
    state: dict[str, Any] = {"Status": s.status, "Running": s.status in ("running", "paused"), "Paused": False,
                             "Restarting": False, "OOMKilled": s.oom_killed, "Dead": False, "Pid": s.pid,
                             "ExitCode": s.exit_code, "Error": s.error, "StartedAt": rfc3339_ns(s.started_ns),
                             "FinishedAt": rfc3339_ns(s.finished_ns)}
    for status, key in _STATE_FLAGS.items():
        if status != "running":
            state[key] = s.status == status
    health = health_json(s)
    if health is not None:
        state["Health"] = health
    found: dict[str, Any] = {
        "Id": record.id,
        "Created": rfc3339_ns(record.created_ns),
        "Path": args[0] if args else "",
        "Args": args[1:],
        "State": state,
        "Image": record.image_id,
        "ResolvConfPath": "",
        "HostnamePath": "",
        "HostsPath": "",
        "LogPath": view.log_path,
        "Name": f"/{record.name}",
        "RestartCount": s.restart_count,
        "Driver": "overlayfs",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": list(view.exec_ids) or None,
        "HostConfig": host_config_json(record),
        "GraphDriver": {"Name": "overlayfs", "Data": None},
        "Mounts": [mount_json(m) for m in record.mounts],
        "Config": config_json(record),
        "NetworkSettings": network_settings_json(view, settings),
    }
    if size:
        found["SizeRw"] = view.size_rw
        found["SizeRootFs"] = view.size_rw
    return found


def container_summary(record: ContainerRecord, networks: Iterable[tuple[Network, Endpoint | None]], now_ns: int,
                      size_rw: int | None = None) -> dict[str, Any]:
    """
    One entry of C{GET /containers/json}: a record on its networks (the
    network manager's settings), with its writable layer's size when
    asked for.
    """
    networks = list(networks)
    s = record.state
    args = list(record.config.entrypoint or ()) + list(record.config.cmd or ())
    ports = []
    for port, host, host_port in _published(networks):
        number, _, proto = port.partition("/")
        entry: dict[str, Any] = {"PrivatePort": int(number), "Type": proto}
        if host_port:
            entry.update({"IP": host, "PublicPort": host_port})
        ports.append(entry)
    found: dict[str, Any] = {
        "Id": record.id,
        "Names": [f"/{record.name}"],
        "Image": record.image,
        "ImageID": record.image_id,
        "Command": " ".join(args),
        "Created": record.created_ns // 1_000_000_000,
        "Ports": ports,
        "Labels": dict(record.config.labels),
        "State": s.status,
        "Status": docker_status(s.status, s.exit_code, s.health, s.started_ns / 1e9, s.finished_ns / 1e9,
                                now_ns / 1e9),
        "HostConfig": {"NetworkMode": record.host.network_mode or "bridge"},
        "NetworkSettings": {"Networks": {network.name: _endpoint_json(network, endpoint)
                                         for network, endpoint in networks}},
        "Mounts": [mount_json(m) for m in record.mounts],
    }
    if size_rw is not None:
        found["SizeRw"] = size_rw
        found["SizeRootFs"] = size_rw
    return found


# ---------------------------------------------------------------- images


def familiar_name(name: str) -> str:
    try:
        return parse_normalized(name).familiar()
    except ReferenceError:
        return name


def _repository(name: str) -> str:
    if "@" in name:
        return name.partition("@")[0]
    head, sep, tail = name.rpartition(":")
    return head if sep and "/" not in tail else name


def repo_tags_digests(names: Iterable[str], digest: str) -> tuple[list[str], list[str]]:
    names = list(names)
    tags = [familiar_name(n) for n in names if "@" not in n]
    digests = sorted({f"{familiar_name(_repository(n))}@{digest}" for n in names})
    return tags, digests


def image_summary(s: ImageSummary, names: Iterable[str] | None = None) -> dict[str, Any]:
    """
    One entry of C{GET /images/json}; C{names}, when given, are the ones to
    show (those a reference filter matched, as docker shows them).
    """
    tags, digests = repo_tags_digests(s.row.names if names is None else names, s.row.target.digest)
    return {
        "Id": s.row.config,
        "ParentId": "",
        "RepoTags": tags,
        "RepoDigests": digests,
        "Created": parse_rfc3339_ns(s.created) // 1_000_000_000,
        "Size": s.size,
        "SharedSize": -1,
        "VirtualSize": s.size,
        "Labels": dict(s.labels),
        "Containers": s.containers,
    }


def image_inspect(image: Image) -> dict[str, Any]:
    c = image.config
    tags, digests = repo_tags_digests(image.names, image.target.digest)
    config = inspect_config(c.raw.get("config"))
    return {
        "Id": image.id,
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": "",
        "Comment": c.comment,
        "Created": c.created or ZERO_TIME,
        "DockerVersion": str(c.raw.get("docker_version") or ""),
        "Author": c.author,
        "Config": config,
        "Architecture": c.platform.architecture,
        "Variant": c.platform.variant or None,
        "Os": c.platform.os,
        "Size": image.size,
        "VirtualSize": image.size,
        "GraphDriver": {"Name": "overlayfs", "Data": None},
        "RootFS": {"Type": "layers", "Layers": list(c.diff_ids)},
        "Metadata": {"LastTagTime": ZERO_TIME},
    }


# ---------------------------------------------------------------- volumes, networks, events


def volume_json(v: Volume, users: int, size: int = -1) -> dict[str, Any]:
    found: dict[str, Any] = {"CreatedAt": rfc3339_ns(v.created_ns), "Driver": v.driver, "Labels": dict(v.labels),
                             "Mountpoint": v.mountpoint, "Name": v.name, "Options": dict(v.options),
                             "Scope": "local"}
    if size >= 0:
        found["UsageData"] = {"Size": size, "RefCount": users}
    return found


def network_json(network: Network, containers: Iterable[tuple[str, str, Endpoint | None]]) -> dict[str, Any]:
    """
    docker's network resource, with its containers: (ID, name, endpoint
    while running) each.
    """
    prefix = prefix_length(network.subnet) if network.subnet else 0
    prefix6 = prefix_length(network.subnet6) if network.subnet6 else 0
    ipam = []
    if network.subnet:
        ipam.append({"Subnet": network.subnet, "Gateway": network.gateway})
    if network.subnet6:
        ipam.append({"Subnet": network.subnet6, "Gateway": network.gateway6})
    options = {}
    if network.builtin and network.driver == "bridge":
        # Only the default bridge's are listed: a user-defined network
        # shows the options it was created with (compose compares them).
        options = {"com.docker.network.bridge.default_bridge": "true",
                   "com.docker.network.bridge.name": network.bridge}
    members = {}
    for cid, name, endpoint in containers:
        if endpoint is None:
            continue
        members[cid] = {"Name": name, "EndpointID": f"{network.id[:32]}{cid[:32]}", "MacAddress": endpoint.mac,
                        "IPv4Address": f"{endpoint.address}/{prefix}",
                        "IPv6Address": f"{endpoint.address6}/{prefix6}" if endpoint.address6 else ""}
    return {
        "Name": network.name,
        "Id": network.id,
        "Created": rfc3339_ns(network.created_ns),
        "Scope": "local",
        "Driver": network.driver,
        "EnableIPv6": bool(network.subnet6),
        "IPAM": {"Driver": "default", "Options": None, "Config": ipam},
        "Internal": network.internal,
        "Attachable": False,
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": members,
        "Options": options,
        "Labels": dict(network.labels),
    }


def event_json(event: Event) -> dict[str, Any]:
    """
    An event as docker's C{/events} streams it (with the deprecated
    top-level status, id and from that docker-py and compose 1.x read).
    """
    attributes = dict(event.attributes)
    found: dict[str, Any] = {
        "Type": event.type,
        "Action": event.action,
        "Actor": {"ID": event.actor_id, "Attributes": attributes},
        "scope": "local",
        "time": event.time_ns // 1_000_000_000,
        "timeNano": event.time_ns,
    }
    if event.type == "container":
        found.update({"status": event.action, "id": event.actor_id, "from": attributes.get("image", "")})
    return found
