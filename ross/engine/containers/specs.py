# -*- test-case-name: ross.test.test_container_lifecycle,ross.test.integration.test_containers -*-
"""
The runtime spec of a container's run (L{ross.engine.runtime.spec}): its
record's config and host config, its snapshot's mounts, and the namespaces
of the containers it joins.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import attrs
from twisted.internet.interfaces import IReactorThreads

from ross.engine import etcfiles
from ross.engine.containers import config as container_config
from ross.engine.containers.store import ContainerRecord
from ross.engine.network.manager import NetworkManager
from ross.engine.pipes import in_pool
from ross.engine.runtime import seccomp
from ross.engine.runtime import spec as runtime_spec
from ross.engine.runtime.userns import Remap
from ross.errors import FailedPrecondition, NotFound
from ross.interfaces import ISnapshotter


class RunSpecs:
    """
    Makes the runtime specs of a container manager's containers.

    @param records: container ID -> record, the manager's (read only): a
        container joining another's namespaces finds it there.
    @param log_path: the path of a container's JSON log, by its ID.
    @param network: as the manager's; without one, containers get a
        network namespace with loopback only.
    @param remap: the daemon's --userns-remap, as the manager's.
    """

    def __init__(self, reactor: IReactorThreads, records: Mapping[str, ContainerRecord], snapshotter: ISnapshotter,
                 log_path: Callable[[str], str], cgroup_parent: str, network: NetworkManager | None,
                 remap: Remap | None) -> None:
        self._reactor = reactor
        self._records = records
        self._snapshotter = snapshotter
        self._log_path = log_path
        self._cgroup_parent = cgroup_parent
        self._network = network
        self._remap = remap

    async def _joined_network(self, target_id: str) -> tuple[str, str | None, str | None]:
        """
        For --network container:ID: the network namespace to join (the
        target's, which must run), and the /etc/hosts and resolv.conf the
        target got.
        """
        target = self._records.get(target_id)
        if target is None:
            raise NotFound(f"No such container: {target_id}: its network cannot be joined")
        if not target.state.running:
            raise FailedPrecondition(f"cannot join network of a non running container: {target.name}")
        th = target.host
        shared = await self._network.files_of(target) if self._network is not None else None
        if shared is not None:
            return f"/proc/{target.state.pid}/ns/net", shared[0], shared[1]
        host = await self._host_resolv(th)
        if th.network_mode == "host":
            return "host", None, etcfiles.resolv_conf(th.dns, th.dns_search, th.dns_options, network="host", host=host)
        return (f"/proc/{target.state.pid}/ns/net",
                etcfiles.hosts_file(etcfiles.host_names(target.config.hostname, target.config.domainname),
                                    extra_hosts=th.extra_hosts,
                                    host_gateway=self._host_gateway()),
                etcfiles.resolv_conf(th.dns, th.dns_search, th.dns_options, host=host))

    async def _host_resolv(self, h: container_config.HostConfig) -> str:
        """
        The host's resolv.conf, read in a pool thread, when C{h}'s DNS
        options need it as their base ("": they do not).
        """
        if not (h.dns or h.dns_search or h.dns_options):
            return ""
        return await in_pool(self._reactor, etcfiles.read_host_resolv)

    def _joined_namespace(self, mode: str, kind: str) -> str:
        """
        For an IPC, UTS or PID mode "container:ID": the namespace to join (the
        target's, which must run); "" for a namespace of its own.
        """
        if not mode.startswith(container_config.CONTAINER_MODE):
            return ""
        target = self._records.get(mode[len(container_config.CONTAINER_MODE):])
        if target is None:
            joined = mode[len(container_config.CONTAINER_MODE):]
            raise NotFound(f"No such container: {joined}: its {kind} namespace cannot be joined")
        if not target.state.running:
            raise FailedPrecondition(f"cannot join the {kind} namespace of a non running container: {target.name}")
        return f"/proc/{target.state.pid}/ns/{kind}"

    def _host_gateway(self) -> str:
        """
        What --add-host NAME:host-gateway names: the host's address on the
        default bridge.
        """
        return self._network.host_gateway() if self._network is not None else ""

    async def spec(self, record: ContainerRecord) -> runtime_spec.ContainerSpec:
        """
        The runtime spec of a run of C{record}'s container.
        """
        c, h = record.config, record.host
        rootfs = await self._snapshotter.mounts(record.snapshot_key)
        mounts: list[runtime_spec.BindMount | runtime_spec.TmpfsMount] = []
        for m in record.mounts:
            if m.type == "tmpfs":
                # noexec unless asked, as docker's (nosuid and nodev always).
                mounts.append(runtime_spec.TmpfsMount(target=m.destination, size=m.tmpfs_size,
                                                      mode=m.tmpfs_mode or 0o1777, readonly=not m.read_write,
                                                      options=(() if m.tmpfs_exec else ("noexec",))
                                                      + m.tmpfs_options))
            else:
                mounts.append(runtime_spec.BindMount(source=m.source, target=m.destination, readonly=not m.read_write,
                                           propagation=m.propagation or "rprivate",
                                           recursive_readonly=not m.read_only_non_recursive,
                                           recursive=not m.non_recursive))
        network = "host" if h.network_mode == "host" else "none"
        hosts: str | None
        if network == "host":
            # The host's own names, as docker's (its hostname is the host's).
            hosts = etcfiles.hosts_of_host(await in_pool(self._reactor, etcfiles.read_host_hosts), h.extra_hosts,
                                           self._host_gateway())
        else:
            hosts = etcfiles.hosts_file(etcfiles.host_names(c.hostname, c.domainname), extra_hosts=h.extra_hosts,
                                        host_gateway=self._host_gateway())
        resolv = etcfiles.resolv_conf(h.dns, h.dns_search, h.dns_options, network=network,
                                      host=await self._host_resolv(h))
        userns = None
        if self._remap is not None and h.userns_mode != "host":
            userns = runtime_spec.UserNamespace(uid_map=self._remap.uid_map, gid_map=self._remap.gid_map)
        if h.network_mode.startswith(container_config.CONTAINER_MODE):
            target_id = h.network_mode[len(container_config.CONTAINER_MODE):]
            network, hosts, resolv = await self._joined_network(target_id)
            target = self._records[target_id]
            if userns is not None and target.host.userns_mode != "host":
                # In the user namespace that owns the network it joins, as
                # docker: else its root had no say over that network.
                userns = attrs.evolve(userns, join=f"/proc/{target.state.pid}/ns/user")
        security = container_config.security_options(h.security_opt)
        devices = (await in_pool(self._reactor, resolve_devices, h.devices, h.privileged)
                   if h.devices or h.privileged else ())
        if h.log_config.type == "cri":
            log = runtime_spec.LogConfig(path=h.log_config.path, format="cri")
        else:
            log = runtime_spec.LogConfig(
                path="" if h.log_config.type == "none" else self._log_path(record.id),
                max_size=h.log_config.max_size,
                max_files=max(1, h.log_config.max_file),
            )
        return runtime_spec.ContainerSpec(
            id=record.id,
            rootfs=tuple(rootfs),
            process=runtime_spec.Process(
                args=tuple(c.entrypoint or ()) + tuple(c.cmd or ()),
                env=c.env,
                cwd=c.working_dir or "/",
                user=c.user,
                additional_gids=c.group_add,
                tty=c.tty,
                open_stdin=c.open_stdin,
                rlimits=tuple((u.name, u.soft, u.hard) for u in h.ulimits),
            ),
            shm_size=h.shm_size,
            readonly=h.readonly_rootfs,
            hostname=c.hostname,
            domainname=c.domainname,
            hosts=hosts,
            resolv_conf=resolv,
            mounts=tuple(mounts),
            network=network,
            ipc=h.ipc_mode if h.ipc_mode in ("host", "none") else self._joined_namespace(h.ipc_mode, "ipc"),
            uts="host" if h.uts_mode == "host" else self._joined_namespace(h.uts_mode, "uts"),
            pid="host" if h.pid_mode == "host" else self._joined_namespace(h.pid_mode, "pid"),
            oom_score_adj=h.oom_score_adj,
            pause=h.pause,
            resources=h.resources,
            cap_add=h.cap_add,
            cap_drop=h.cap_drop,
            privileged=h.privileged,
            no_new_privileges=container_config.BOOLEANS.get(security.get("no-new-privileges", ""), True),
            seccomp=seccomp.profile_for(security, h.privileged),
            init=h.init,
            log=log,
            cgroup_parent=self._cgroup_parent,
            userns=userns,
            **_paths(h),
            sysctls=tuple(sorted(h.sysctls.items())),
            devices=devices,
        )


def resolve_devices(devices: Sequence[container_config.Device],
                    privileged: bool = False) -> tuple[runtime_spec.Device, ...]:
    """
    Blocking: the device nodes the --device entries name on the host now
    (InvalidArgument for one that names none), after every host device
    when C{privileged} (docker's rule).
    """
    every = runtime_spec.privileged_devices() if privileged else []
    return tuple(every) + tuple(node for d in devices for node in
                                runtime_spec.host_devices(d.path_on_host, d.path_in_container, d.cgroup_permissions))


def _paths(h: container_config.HostConfig) -> dict[str, tuple[str, ...]]:
    """
    The masked and read-only paths the host config asks for; the
    runtime's defaults for those it leaves unsaid.
    """
    given = {"masked_paths": h.masked_paths, "readonly_paths": h.readonly_paths}
    return {k: v for k, v in given.items() if v is not None}

