# -*- test-case-name: ross.test.test_container_lifecycle,ross.test.test_supervisor,ross.test.integration.test_containers -*-
"""
The container manager: names, state, lifecycle and logs, over the image
store, the snapshotter, volumes and the runtime; supervision and restart
policies (L{ross.engine.containers.supervisor}), exec sessions
(L{ross.engine.containers.execs}), what removal clears
(L{ross.engine.containers.removal}), reads of containers
(L{ross.engine.containers.inspection}) and runtime specs
(L{ross.engine.containers.specs}) are its pieces.

Every container has one record (L{ContainerRecord}) held in memory and
written through to SQLite. Operations on one container are serialized by a
per-container lock, so a stop cannot race a start.
"""

from __future__ import annotations

import io
import os
import shutil
import signal as signals
import socket
import stat
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable, Sequence, TypeVar

import attrs
from twisted.internet.defer import CancelledError, Deferred, DeferredLock, gatherResults, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from ross.engine.containers import config as container_config
from ross.engine.containers.changes import RUNTIME_FILES
from ross.engine.containers.commit import created_by, image_config
from ross.engine.containers.copy import Copier, CopyTarget
from ross.engine.containers.execs import ExecInfo, Sessions
from ross.engine.containers.health import HealthChecks
from ross.engine.containers.inspection import Inspection, ps_arguments
from ross.engine.containers.logs import Entry, LogQuery, LogStream, LogWatcher
from ross.engine.containers.names import generate_name, lookup, new_id, validate_name
from ross.engine.containers.removal import Leftovers, prunable
from ross.engine.containers.specs import RunSpecs, resolve_devices
from ross.engine.containers.store import ContainerRecord, ContainerStore, MountPoint
from ross.engine.containers.supervisor import Supervisor
from ross.engine.events import EventBus
from ross.engine.fsutil import PRIVATE_FILE_MODE, make_dirs, private_children, private_dir
from ross.engine.layers.diff import DiffResult, LayerSink
from ross.engine.network.ipam import parse_port
from ross.engine.network.manager import NetworkManager
from ross.engine.network.store import Endpoint, Network, PortMapping
from ross.engine.pipes import Outflow, in_pool
from ross.engine.reactors import IEngineReactor
from ross.engine.runtime import seccomp
from ross.engine.runtime import spec as runtime_spec
from ross.engine.runtime.runtime import Attachment, ContainerStats, ExitStatus, ShimDetached
from ross.engine.runtime.userns import Remap
from ross.engine.snapshots import IN_USE_LABEL
from ross.engine.volumes import VolumeStore
from ross.errors import AlreadyExists, FailedPrecondition, InvalidArgument, NotFound, RossError, disk_full
from ross.interfaces import IComparer, IImageStore, IRuntime, IShim, ISnapshotter
from ross.protocols.shim import ContainerStartError, ShimGone

_T = TypeVar("_T")

#: What docker's wait can wait for (L{ContainerManager.wait}).
WAIT_CONDITIONS = ("not-running", "next-exit", "removed")
#: States of a container whose shim a restarted daemon looks for.
_LIVE = ("running", "paused", "restarting")


@attrs.frozen
class ContainerView:
    """
    A record plus what is only known at run time, for listing and inspect.
    """

    record: ContainerRecord
    log_path: str
    exec_ids: tuple[str, ...] = ()
    size_rw: int = 0
    networks: tuple[tuple[Network, Endpoint | None], ...] = ()


class ContainerManager:
    """
    The coordinator of containers: names, records and their state, each
    container's lock, and the order of each operation's steps. The
    supervision of running containers (L{Supervisor}), exec sessions and
    attachments (L{Sessions}), what a container leaves behind
    (L{Leftovers}), reads of containers (L{Inspection}) and the runtime
    specs of their runs (L{RunSpecs}) are pieces of their own it is made
    of.

    @param images: the image store (C{resolve}, C{ensure_unpacked}, C{commit}).
    @param snapshotter: the snapshotter of containers' roots; commit asks
        it for its L{ross.interfaces.IComparer} too (the overlay
        snapshotter is both).
    @param runtime: the runtime (C{create(spec)}, C{check(spec)},
        C{reconnect(id)}, C{delete(id)}).
    @param network: the network manager
        (L{ross.engine.network.manager.NetworkManager}); without one,
        containers get a network namespace with loopback only.
    @param remap: the daemon's --userns-remap: containers (but those with
        HostConfig.userns_mode "host") get a user namespace with these maps.
    @param store: where records are kept; by default
        C{<root>/containers.db} with a writer thread of its own.
    @param records: the dict the records are held in (empty: the manager
        fills it), shared with what asks about containers before the
        manager exists (L{ross.engine.containers.queries}); by default one
        of its own.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: IEngineReactor,
        root: Path,
        exec_root: Path,
        events: EventBus,
        images: IImageStore,
        snapshotter: ISnapshotter,
        runtime: IRuntime,
        volumes: VolumeStore,
        cgroup_parent: str = "ross",
        network: NetworkManager | None = None,
        remap: Remap | None = None,
        store: ContainerStore | None = None,
        records: dict[str, ContainerRecord] | None = None,
    ) -> None:
        self._reactor = reactor
        self.root = root
        self.exec_root = exec_root
        self.events = events
        self.images = images
        self.snapshotter = snapshotter
        self.runtime = runtime
        self.volumes = volumes
        self.cgroup_parent = cgroup_parent
        self.network = network
        self.remap = remap
        self._store = store or ContainerStore(reactor, root / "containers.db")
        self._log_watcher = LogWatcher(reactor)
        self.records: dict[str, ContainerRecord] = records if records is not None else {}
        self._names: dict[str, str] = {}
        self._locks: dict[str, DeferredLock] = {}
        self._exit_waiters: dict[str, list[Deferred[ExitStatus]]] = {}
        self._remove_waiters: dict[str, list[Deferred[ExitStatus]]] = {}
        #: Containers whose state could not be saved (a full disk).
        self._unsaved: set[str] = set()
        self.supervisor = Supervisor(reactor, self._exited, self._restart_by_policy)
        self.sessions = Sessions(self.records, events)
        self.leftovers = Leftovers(reactor, root, runtime)
        self.inspection = Inspection(reactor, snapshotter)
        self.specs = RunSpecs(self._reactor, self.records, snapshotter, self.log_path, cgroup_parent, network, remap)
        self.health = HealthChecks(reactor, self.records, self._running_shim, self._set_state, events)
        self.copier = Copier(reactor, exec_root / "copy")

    # ---------------------------------------------------------------- life

    async def start(self) -> None:
        """
        Load every record and reconnect to the shims of containers that
        were running; apply restart policies to the ones that exited while
        the daemon was down.
        """
        records = await self._store.start()
        await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), _make_private, self.root / "containers")
        for record in records:
            self.records[record.id] = record
            self._names[record.name] = record.id
        for record in records:
            if record.state.status == "removing":
                # Killed while removing it: the removal is finished, as
                # it had been asked (anonymous volumes stay, as without -v).
                self._log.info("finishing the removal of container {id}", id=record.id)
                try:
                    await self.remove(record.id, force=True)
                except Exception:
                    self._log.failure("could not finish removing container {id}", id=record.id)
        await self._remove_unrecorded()
        # Every shim is asked at once (each answer is a thread's probe and a
        # round trip): a restarted daemon with many containers answers that
        # much sooner. What each answer means is then handled in turn.
        live = [r for r in records if r.id in self.records and r.state.status in _LIVE]
        answers = await gatherResults([self._reconnect(r.id) for r in live])
        outcomes = dict(zip([r.id for r in live], answers))
        for record in records:
            if record.id not in self.records:
                continue
            try:
                await self._recover(record, outcomes.get(record.id))
            except Exception:
                self._log.failure("could not recover container {id}", id=record.id)
        await self.volumes.settle()
        self.copier.keep_spare()

    def _reconnect(self, cid: str) -> Deferred[IShim | ExitStatus | Exception]:
        """
        The container's shim, the exit it recorded, or the error that kept
        either from being known (raised by L{_recover}, for that container
        alone).
        """
        d: Deferred[IShim | ExitStatus] = self.runtime.reconnect(cid)

        def lost(failure: Failure) -> ExitStatus | Exception:
            if failure.check(NotFound):
                # Its runtime state is gone (the exec root is a tmpfs and
                # the host rebooted): nothing of it runs any more.
                return ExitStatus(exit_code=255, error="the container's runtime state was lost")
            error = failure.value
            return error if isinstance(error, Exception) else RuntimeError(failure.getErrorMessage())

        return d.addErrback(lost)

    async def _remove_unrecorded(self) -> None:
        """
        Remove the snapshots and directories of containers no record
        holds: a daemon killed while creating a container (they are made
        before its record) or removing one (the record goes first) leaves
        such.
        """
        for info in await self.snapshotter.list():
            holder = info.labels.get(IN_USE_LABEL)
            if holder == info.name and holder not in self.records:
                self._log.info("removing snapshot {key} of a container never recorded", key=info.name)
                await self.snapshotter.release(info.name, holder)
                await self.snapshotter.remove(info.name)

        def unrecorded() -> list[str]:
            try:
                return [n for n in os.listdir(self.root / "containers") if n not in self.records]
            except FileNotFoundError:
                return []

        for cid in await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), unrecorded):
            self._log.info("removing the files of container {id}, never recorded", id=cid)
            await self.leftovers.remove_files(cid)

    def stop(self) -> Deferred[None]:
        self.health.close()
        self.supervisor.stop()
        copier = Deferred.fromCoroutine(self.copier.close())
        return copier.addCallback(lambda _: self._store.stop())

    async def _recover(self, record: ContainerRecord, outcome: IShim | ExitStatus | Exception | None) -> None:
        """
        Take up a container again at daemon start; C{outcome} is what
        L{_reconnect} found of a running one.
        """
        policy = record.host.restart_policy.name
        if record.state.status in _LIVE:
            if isinstance(outcome, Exception):
                raise outcome
            assert outcome is not None
            if isinstance(outcome, ExitStatus):
                self._log.info("container {id} exited while the daemon was down ({code})",
                               id=record.id, code=outcome.exit_code)
                await self._exited(record.id, outcome)
                return
            self.supervisor.watch(record.id, outcome)
            self.sessions.adopt(record, outcome)
            self.volumes.adopt(record.id, _volume_names(record))
            if record.state.status == "restarting":
                await self._set_state(record.id, status="running", pid=outcome.pid)
            await self.health.adopt(record.id)
            return
        if await self._unrecorded_start(record):
            return
        should_start = record.state.started_ns and record.state.status == "exited" and (
            policy == "always" or (policy == "unless-stopped" and not record.state.manually_stopped))
        if should_start:
            self._log.info("restarting container {id} ({policy}) after daemon start", id=record.id, policy=policy)
            await self.start_container(record.id)

    async def _unrecorded_start(self, record: ContainerRecord) -> bool:
        """
        Settle what a start left of a container not recorded as running:
        the daemon was killed between spawning its shim and saying so.
        When the command ran (its client may have seen its output), the
        start is finished now, as if it had been recorded: the container
        runs on, or its exit is recorded (and its restart policy or
        auto-removal applies); True then. A shim whose command never ran
        is stopped and its state removed (the start did not happen).
        Every step of a start (network, mounts, hooks) comes before its
        command runs, so a command that ran had all of them.
        """
        try:
            leftover = await self.runtime.reconnect(record.id)
        except NotFound:
            return False
        if isinstance(leftover, ExitStatus):
            ran = not leftover.error and leftover.finished_ns > record.state.finished_ns
            if ran:
                self._log.info("container {id} ran and exited while the daemon was down, its start unrecorded",
                               id=record.id)
                await self._started(record, 0, leftover.started_ns)
                await self._exited(record.id, leftover)
                return True
        elif leftover.status in ("running", "paused") or (
                leftover.status == "stopped" and leftover.exit_status is not None
                and not leftover.exit_status.error
                and leftover.exit_status.finished_ns > record.state.finished_ns):
            self._log.info("container {id}: finishing a start the daemon was killed before recording",
                           id=record.id)
            record = await self._started(record, leftover.pid, leftover.started_ns)
            self.supervisor.watch(record.id, leftover)
            self.sessions.adopt(record, leftover)
            # Its checks begin now: none ran before the start was recorded.
            self.health.resume(record.id)
            return True
        else:
            self._log.info("stopping container {id}: its start was never recorded", id=record.id)
            exited = leftover.wait()
            try:
                await leftover.kill(signals.SIGKILL, all=True)
                await exited.addTimeout(10, self._reactor)
            except Exception:
                self._log.failure("could not stop the unrecorded run of container {id}", id=record.id)
            leftover.close()
        await self.leftovers.delete_runtime_state(record.id)
        return False

    async def _started(self, record: ContainerRecord, pid: int, started_ns: int) -> ContainerRecord:
        """
        Record that container C{record}'s command runs as C{pid} since
        C{started_ns} (now when unknown), and say so.
        """
        record = await self._set_state(
            record.id, status="running", pid=pid, started_ns=started_ns or _now_ns(self._reactor), error="",
            exit_code=0, oom_killed=False, finished_ns=0, manually_stopped=False,
            **self.health.on_start(record.config))
        self.events.publish("container", "start", record.id, name=record.name, image=record.image)
        return record

    # ---------------------------------------------------------------- lookup

    def resolve(self, ref: str) -> ContainerRecord:
        """
        The record of a container named by ID, unique ID prefix or name.
        """
        return self.records[lookup(ref, self.records.keys(), self._names)]

    def _lock(self, cid: str) -> DeferredLock:
        lock = self._locks.get(cid)
        if lock is None:
            lock = self._locks[cid] = DeferredLock()
        return lock

    async def _locked(self, ref: str, fn: Callable[[str], Awaitable[_T]]) -> _T:
        cid = self.resolve(ref).id
        lock = self._lock(cid)
        await lock.acquire()
        try:
            if cid not in self.records:
                raise NotFound(f"No such container: {ref}")
            return await fn(cid)
        finally:
            lock.release()

    async def view(self, record: ContainerRecord, size: bool = False) -> ContainerView:
        """
        A record with what only the running container knows; with C{size},
        the bytes its writable layer holds (a walk of it: slower).
        """
        exec_ids = self.sessions.ids_of(record.id)
        size_rw = 0
        if size:
            try:
                size_rw = await self.inspection.size(record.snapshot_key)
            except NotFound:
                pass
        networks = tuple(self.network.settings(record)) if self.network is not None else ()
        return ContainerView(record=record, log_path=self.log_path(record.id), exec_ids=exec_ids, size_rw=size_rw,
                             networks=networks)

    def logs(self, ref: str, query: LogQuery, deliver: Callable[[list[Entry]], Deferred[None]]) -> Deferred[None]:
        """
        Deliver the container's log entries matching C{query} in batches;
        when following, until the container stops.
        """
        record = self.resolve(ref)
        cid = record.id
        if record.host.log_config.type == "none":
            raise FailedPrecondition("configured logging driver does not support reading")

        def running() -> bool:
            current = self.records.get(cid)
            return current is not None and (current.state.running or current.state.status == "restarting")

        exited = self.wait_exit(cid) if query.follow and running() else None
        stream = LogStream(self._reactor, self.log_path(cid), max(1, record.host.log_config.max_file),
                           query, running, exited, self._log_watcher)
        d = Deferred.fromCoroutine(stream.run(deliver))

        def cancelled(result: Any) -> Any:
            stream.stop()
            if exited is not None and not exited.called:
                exited.addErrback(lambda f: f.trap(CancelledError))
                exited.cancel()
            return result

        return d.addBoth(cancelled)

    def log_path(self, cid: str) -> str:
        # Formatted: listings ask for every container's path each time.
        return f"{self.root}/containers/{cid}/{cid}-json.log"

    def counts(self) -> dict[str, int]:
        states = [r.state.status for r in self.records.values()]
        return {
            "containers": len(states),
            "containers_running": sum(s in ("running", "restarting") for s in states),
            "containers_paused": states.count("paused"),
            "containers_stopped": sum(s not in ("running", "restarting", "paused") for s in states),
        }

    # ---------------------------------------------------------------- create

    async def create(self, name: str, config: container_config.ContainerConfig,
                     host: container_config.HostConfig) -> ContainerRecord:
        """
        Create a container: validate, resolve and unpack its image, prepare
        its snapshot, resolve its mounts, store its record.
        """
        if name:
            name = validate_name(name)
            self._name_free(name)
        if not config.image:
            raise InvalidArgument("no image given")
        # A seccomp profile sent with the request may be large: parsed in a
        # thread, the checks below find it parsed (seccomp.parse caches).
        await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), seccomp.profile_for,
                                container_config.security_options(host.security_opt), host.privileged)
        container_config.validate(config, host, os.cpu_count() or 1)
        if host.devices:
            # As docker, a device the host lacks is refused at create.
            await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), resolve_devices, host.devices)
        if self.remap is not None:
            container_config.validate_remapped(host)
        if self.network is not None:
            self.network.check(host)
        # Namespaces of another container ("container:NAME") are recorded
        # by its ID, which a rename does not change.
        for mode in ("network_mode", "ipc_mode", "pid_mode", "uts_mode"):
            value = getattr(host, mode)
            if value.startswith(container_config.CONTAINER_MODE):
                target = self.resolve(value[len(container_config.CONTAINER_MODE):])
                by_id: dict[str, Any] = {mode: f"{container_config.CONTAINER_MODE}{target.id}"}
                host = attrs.evolve(host, **by_id)
                if mode == "uts_mode" or (mode == "network_mode" and not config.hostname):
                    # Its hostname is the one it joins (HOSTNAME, inspect),
                    # as docker's for a network of another container's too.
                    config = attrs.evolve(config, hostname=target.config.hostname)
        if host.uts_mode == "host":
            if config.hostname:
                raise InvalidArgument("Conflicting options: hostname and the UTS mode")
            config = attrs.evolve(config, hostname=socket.gethostname())
        for m in host.mounts:
            container_config.validate_mount(m)
        inherited = self._volumes_from(host.volumes_from)
        image = await self.images.resolve(config.image)
        chain_id = await self.images.ensure_unpacked(image)
        cid = new_id()
        defaults = container_config.ImageDefaults.from_oci(image.config.raw.get("config") or {})
        effective = container_config.merge(config, defaults, cid)
        # A published port is an exposed one too (docker's Config.ExposedPorts,
        # which a commit keeps).
        published = {b.container_port if "/" in b.container_port else f"{b.container_port}/tcp"
                     for b in host.port_bindings}
        if not published <= set(effective.exposed_ports):
            effective = attrs.evolve(effective, exposed_ports=tuple(sorted(set(effective.exposed_ports) | published)))
        specs = container_config.mounts_of(host, effective.volumes)
        if not name:
            name = generate_name(self._names)
        # Checked again and claimed with no await in between: of two creates
        # racing for one name, the second sees the first's claim.
        self._name_free(name)
        self._names[name] = cid
        created_volumes: list[str] = []
        to_fill: list[MountPoint] = []
        try:
            mounts = await self._resolve_mounts(cid, specs, host, created_volumes, to_fill)
            # Its own mounts win over those of --volumes-from, as docker's.
            own = {os.path.normpath(m.destination) for m in mounts}
            mounts = [m for m in inherited if os.path.normpath(m.destination) not in own] + mounts
            # Held by the container: `ross snapshot rm` refuses it meanwhile.
            await self.snapshotter.prepare(cid, chain_id, {IN_USE_LABEL: cid})
            try:
                await deferToThreadPool(self._reactor, self._reactor.getThreadPool(),
                                        private_dir, os.path.dirname(self.log_path(cid)))
                record = ContainerRecord(
                    id=cid,
                    name=name,
                    created_ns=_now_ns(self._reactor),
                    image=config.image,
                    image_id=image.id,
                    config=effective,
                    host=host,
                    mounts=tuple(mounts),
                    snapshot_key=cid,
                )
                # What the runtime would refuse at start is refused now,
                # before anything exists.
                await self.runtime.check(await self.specs.spec(record))
                await self._fill_volumes(record, to_fill)
                await self._store.insert(record)
            except BaseException:
                await self.snapshotter.release(cid, cid)
                await self.snapshotter.remove(cid)
                await self.leftovers.remove_files(cid)
                raise
        except BaseException:
            if self._names.get(name) == cid:
                del self._names[name]
            self.volumes.release(cid)
            for volume in created_volumes:
                await self.volumes.remove(volume, force=True)
            raise
        # The record says from now on that it uses its volumes.
        self.records[cid] = record
        self.volumes.release(cid)
        self.events.publish("container", "create", cid, name=name, image=config.image)
        return record

    def _volumes_from(self, entries: Sequence[str]) -> list[MountPoint]:
        """
        The volumes and binds --volumes-from gives: read-only with ":ro",
        writable with ":rw", else as the source has them. The volumes stay
        the source's: an ``rm -v`` of this container leaves them.
        """
        mounts: dict[str, MountPoint] = {}
        for entry in entries:
            name, _, mode = entry.partition(":")
            for m in self.resolve(name).mounts:
                if m.type in ("volume", "bind"):
                    mounts[os.path.normpath(m.destination)] = attrs.evolve(
                        m, anonymous=False, read_write=m.read_write if not mode else mode == "rw")
        return list(mounts.values())

    def _name_free(self, name: str) -> None:
        if name in self._names:
            raise AlreadyExists(
                f'Conflict. The container name "/{name}" is already in use by container '
                f'"{self._names[name]}". You have to remove (or rename) that container to be able to reuse that name.')

    async def _resolve_mounts(self, cid: str, specs: Sequence[container_config.MountSpec],
                              host: container_config.HostConfig, created_volumes: list[str],
                              to_fill: list[MountPoint]) -> list[MountPoint]:
        """
        The container's mounts, its volumes made where missing (their
        names added to C{created_volumes}); the volumes that may take the
        image's content (not nocopy) go to C{to_fill} too.
        """
        binds = {os.path.normpath(container_config.parse_bind(b).target) for b in host.binds}
        mounts = []
        for m in specs:
            if m.type == "bind":
                from_flag_v = os.path.normpath(m.target) in binds
                await self._check_bind_source(m.source, create=from_flag_v)
                mounts.append(MountPoint(type="bind", destination=m.target, source=m.source,
                                         read_write=not m.read_only, propagation=m.propagation or "rprivate",
                                         read_only_non_recursive=m.read_only_non_recursive,
                                         non_recursive=m.non_recursive))
            elif m.type == "volume":
                existed = bool(m.source) and self._volume_exists(m.source)
                volume = await self.volumes.create(m.source, dict(m.volume_labels), claim=cid,
                                                   options=dict(m.volume_options))
                if not existed:
                    created_volumes.append(volume.name)
                mounts.append(MountPoint(type="volume", destination=m.target, source=volume.mountpoint,
                                         name=volume.name, read_write=not m.read_only,
                                         anonymous=volume.anonymous))
                if not m.volume_nocopy:
                    to_fill.append(mounts[-1])
            else:
                mounts.append(MountPoint(type="tmpfs", destination=m.target, read_write=not m.read_only,
                                         tmpfs_size=m.tmpfs_size, tmpfs_mode=m.tmpfs_mode, tmpfs_exec=m.tmpfs_exec,
                                         tmpfs_options=m.tmpfs_options))
        return mounts

    async def _fill_volumes(self, record: ContainerRecord, volumes: Sequence[MountPoint]) -> None:
        """
        docker's copy-up: each of C{volumes} (mounts of C{record}) that is
        empty gets what the image has at its target when that is a
        directory, with owners, modes and links as there. The copy is
        ``cp`` between two views of the container's files, by its jailed
        helpers: one without the volume (the image's directory), one with
        it; the daemon never reads the image's files.
        """
        if not volumes:
            return
        wire = runtime_spec.to_wire(await self.specs.spec(record))
        storage: dict[str, Any] = {k: wire[k] for k in ("rootfs", "mounts", "readonly")}
        for m in volumes:
            # A volume with a device (L{VolumeStore.hold}) is looked into
            # once it is known there is something to copy, as docker's.
            device = bool(self.volumes.get(m.name).options)
            if not device and await in_pool(self._reactor, _has_entries, m.source):
                continue
            target = os.path.normpath(m.destination)
            image_view = dict(storage, mounts=[
                x for x in storage["mounts"] if not (x["target"] + "/").startswith(target + "/")])
            source = CopyTarget(record.name, spec=image_view)
            try:
                found = await self.copier.stat(source, target)
            except NotFound:
                continue
            if not stat.S_ISDIR(found.mode):
                continue
            holder = f"{record.id}:fill"
            await self.volumes.hold(holder, [m.name])
            try:
                if device and await in_pool(self._reactor, _has_entries, m.source):
                    continue
                # Into the volume itself, as docker's, a read-only mount of
                # it (":ro") too.
                writable = dict(storage, mounts=[
                    dict(x, readonly=False) if os.path.normpath(x["target"]) == target else x
                    for x in storage["mounts"]])
                await self._copy_between(source, CopyTarget(record.name, spec=writable), target)
            finally:
                await self.volumes.let_go(holder)

    async def _copy_between(self, source: CopyTarget, destination: CopyTarget, directory: str) -> None:
        """
        The contents of C{directory} in C{source} into the same directory
        in C{destination} (owners kept, the directory's own owner and mode
        too, as docker's copy-up), through a pipe between the two helpers.
        """
        reading: Deferred[io.FileIO] = Deferred()
        moved: Deferred[None] = Deferred()

        async def hand_out(read_end: io.FileIO) -> None:
            reading.callback(read_end)
            await moved

        async def nothing(_: object) -> None:
            pass

        archive = Deferred.fromCoroutine(self.copier.archive(source, directory + "/.", False, nothing, hand_out))
        # An archive that fails before it hands out its pipe fails the wait
        # for the pipe.
        archive.addErrback(lambda f: reading.errback(f) if not reading.called else f)
        read_end = await reading

        async def hand_in(write_end: io.FileIO) -> None:
            try:
                await in_pool(self._reactor, shutil.copyfileobj, read_end, write_end, 1 << 20)
            finally:
                write_end.close()

        try:
            await self.copier.extract(destination, directory, True, False, hand=hand_in, own_root=True)
        except BaseException:
            # The archive's helper, its reader gone, ends in an error of
            # its own: this one is the copy's.
            archive.addErrback(lambda _: None)
            raise
        finally:
            read_end.close()
            if not moved.called:
                moved.callback(None)
        await archive

    def _volume_exists(self, name: str) -> bool:
        try:
            self.volumes.get(name)
            return True
        except NotFound:
            return False

    def _check_bind_source(self, source: str, create: bool) -> Deferred[None]:
        """
        -v creates a missing host directory (docker does); --mount refuses.
        """

        def check() -> None:
            if os.path.exists(source):
                return
            if not create:
                raise InvalidArgument(f"invalid mount config for type \"bind\": bind source path does not exist: {source}")
            try:
                # As docker makes them (the daemon's umask would narrow it).
                make_dirs(source, 0o755)
            except OSError as e:
                raise InvalidArgument(f"invalid mount config for type \"bind\": cannot create {source[:256]}: {e.strerror}")

        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), check)

    # ---------------------------------------------------------------- start

    def start_container(self, ref: str, before: Callable[[IShim], Any] | None = None) -> Deferred[ContainerRecord]:
        """
        Start a created or exited container. Starting a running container
        does nothing, as in docker. C{before(shim)} runs after set-up,
        before the command.
        """
        return Deferred.fromCoroutine(self._locked(ref, lambda cid: self._start_by_hand(cid, before)))

    async def _start_by_hand(self, cid: str, before: Callable[[IShim], Any] | None = None) -> ContainerRecord:
        """
        A start a user asked for (start, restart): as docker's, it begins
        the restart policy's count of restarts anew.
        """
        state = self.records[cid].state
        if state.restart_count and not state.running:
            await self._set_state(cid, restart_count=0)
        return await self._start(cid, before)

    async def _start(self, cid: str, before: Callable[[IShim], Any] | None = None) -> ContainerRecord:
        """
        Start the container; C{before(shim)} runs once it is set up and
        before its command runs (attaching there misses no output).
        """
        record = self.records[cid]
        if record.state.status == "paused":
            raise FailedPrecondition("cannot start a paused container, try unpause instead")
        if record.state.status == "running":
            return record
        self.supervisor.cancel(cid)
        if self.remap is not None:
            # Created before the daemon remapped: refused as docker does.
            container_config.validate_remapped(record.host)
        if record.state.started_ns:
            # The shim of the last run may still be handing out its last
            # frames (a restart right after a stop): let it go first.
            await self.leftovers.delete_runtime_state(cid)
        spec = await self.specs.spec(record)
        pending = self.sessions.take_attach_hooks(cid)
        hooks = [hook for hook, _ in pending] + ([before] if before is not None else [])
        try:
            await self.volumes.hold(cid, _volume_names(record))
            if self.network is not None:
                spec, plug = await self.network.attach(record, spec)
                if plug is not None:
                    hooks.insert(0, plug)
            shim = await self.runtime.create(spec)
            try:
                for hook in hooks:
                    await hook(shim)
                pid = await shim.start()
            except BaseException:
                shim.exited.addErrback(lambda f: f.trap(ShimDetached))
                shim.close()
                raise
        except BaseException as e:
            if self.network is not None:
                await self.network.release(cid)
            await self.volumes.let_go(cid)
            # Whoever waits to attach at this start hears that it failed.
            for _, failed in pending:
                failed(e)
            if isinstance(e, ContainerStartError):
                await self._start_failed(cid, e)
            elif isinstance(e, RossError) and cid in self.records:
                # Before the runtime (a port taken, say): recorded as
                # docker's, the reason and an exit code of 128 when none.
                await self._set_state(cid, error=str(e), exit_code=self.records[cid].state.exit_code or 128)
            raise
        record = await self._started(record, pid, 0)
        self.supervisor.watch(cid, shim)
        self.health.resume(cid)
        return record

    async def _start_failed(self, cid: str, e: ContainerStartError) -> None:
        record = self.records[cid]
        await self.leftovers.delete_runtime_state(cid)
        await self._set_state(cid, status="created" if not record.state.started_ns else "exited",
                              exit_code=e.exit_code, error=e.message, pid=0)
        self.events.publish("container", "die", cid, name=record.name, image=record.image,
                            exitCode=str(e.exit_code))

    async def _exited(self, cid: str, status: ExitStatus) -> None:
        self.health.stop(cid)
        record = self.records.get(cid)
        if record is None:
            return
        if self.network is not None:
            await self.network.release(cid)
        await self.volumes.let_go(cid)
        if cid not in self.records:
            # Removed while its network was released (a build's step
            # container, an ``rm -f`` as it exited): nothing to record, but
            # whoever waits for the exit still hears of it.
            for waiter in self._exit_waiters.pop(cid, []):
                waiter.callback(status)
            return
        finished = status.finished_ns or _now_ns(self._reactor)
        record = await self._set_state(
            cid, status="exited", pid=0, exit_code=status.exit_code, oom_killed=status.oom_killed,
            finished_ns=finished, error=status.error)
        attributes = {"name": record.name, "image": record.image, "exitCode": str(status.exit_code)}
        if status.oom_killed:
            self.events.publish("container", "oom", cid, name=record.name, image=record.image)
        self.events.publish("container", "die", cid, **attributes)
        for waiter in self._exit_waiters.pop(cid, []):
            waiter.callback(status)
        if self.supervisor.is_stopping(cid):
            return
        if record.host.auto_remove:
            try:
                await self.remove(cid, force=True, volumes=True)
            except NotFound:
                # Removed meanwhile (``rm -f`` as it exited): as asked.
                pass
            return
        if self.supervisor.restart_later(record, status):
            Deferred.fromCoroutine(self._set_state(record.id, status="restarting")).addErrback(
                lambda f: self._log.failure("recording that {id} restarts failed", f, id=record.id))

    def _restart_by_policy(self, cid: str) -> Deferred[None]:
        """
        Start a container its restart policy restarts, unless it was
        stopped, started or removed while it waited.
        """
        record = self.records.get(cid)
        if record is None or record.state.status != "restarting":
            return succeed(None)

        async def restart() -> None:
            lock = self._lock(cid)
            await lock.acquire()
            try:
                current = self.records.get(cid)
                if current is None or current.state.status != "restarting":
                    return
                await self._set_state(cid, restart_count=current.state.restart_count + 1, status="exited")
                await self._start(cid)
            finally:
                lock.release()

        return Deferred.fromCoroutine(restart())

    async def _set_state(self, cid: str, **changes: Any) -> ContainerRecord:
        """
        Change a container's state, in memory and on disk. A state change
        is a fact (it exited, it was resumed): a full disk does not undo
        it nor stop what follows from it. The record is kept in memory and
        saved with the next write that succeeds.
        """
        record = self.records[cid]
        record = attrs.evolve(record, state=attrs.evolve(record.state, **changes))
        self.records[cid] = record
        try:
            await self._store.update(record)
        except Exception as e:
            if not disk_full(e):
                raise
            if not self._unsaved:
                self._log.warn("the disk is full: container states are kept in memory until it has room")
            self._unsaved.add(cid)
            return record
        if self._unsaved:
            await self._save_unsaved()
        return record

    async def _change(self, cid: str, change: Callable[[ContainerRecord], ContainerRecord],
                      undo: Callable[[ContainerRecord], ContainerRecord]) -> ContainerRecord:
        """
        Apply C{change} to the container's record as it is now, in memory
        and then on disk, as L{_set_state} does: a state change that comes
        while the write waits (the container exits) starts from the changed
        record, and neither overwrites the other. The store's one writer
        keeps the writes in this order. A failed write applies C{undo} to
        the record as it is then.
        """
        record = change(self.records[cid])
        self.records[cid] = record
        try:
            await self._store.update(record)
        except BaseException:
            if cid in self.records:
                self.records[cid] = undo(self.records[cid])
            raise
        return record

    async def _save_unsaved(self) -> None:
        for cid in list(self._unsaved):
            record = self.records.get(cid)
            try:
                if record is not None:
                    await self._store.update(record)
            except Exception as e:
                if not disk_full(e):
                    raise
                return
            self._unsaved.discard(cid)

    # ---------------------------------------------------------------- stop, kill

    def _running_shim(self, cid: str) -> IShim:
        record = self.records[cid]
        shim = self.supervisor.shims.get(cid)
        if shim is None or not record.state.running:
            raise FailedPrecondition(f"Container {cid} is not running")
        return shim

    def wait_exit(self, cid: str) -> Deferred[ExitStatus]:
        """
        Fires with the container's next exit status (or its last one when
        it is removed first). Cancelling it forgets the waiter.
        """
        return _waiter(self._exit_waiters, cid)

    def wait(self, ref: str, condition: str = "not-running") -> Deferred[ExitStatus]:
        """
        docker's wait: fires with the exit status C{condition} waits for.
        "not-running": the next exit of a container running or restarting,
        else its last exit at once; "next-exit": its next exit;
        "removed": its last exit, once it is removed. Cancelling it
        forgets the waiter.
        """
        if condition not in WAIT_CONDITIONS:
            raise InvalidArgument(f"invalid condition: {condition[:64]!r}")
        record = self.resolve(ref)
        if condition == "removed":
            return self.wait_removed(record.id)
        state = record.state
        if condition == "not-running" and not (state.running or state.status == "restarting"):
            return succeed(ExitStatus(exit_code=state.exit_code, oom_killed=state.oom_killed))
        return self.wait_exit(record.id)

    def stop_container(self, ref: str, timeout: int | None = None, signal: str = "") -> Deferred[None]:
        """
        Stop a container: its stop signal (or C{signal}), then SIGKILL
        after C{timeout} seconds (None: its own, -1: wait for it). A bad
        timeout is refused before the container is looked for. One that is
        not running is left as it is, no error (docker's stop; the second
        of two stops at once finds it so).
        """
        async def stop() -> None:
            container_config.validate_stop_timeout(timeout)
            await self._locked(ref, lambda cid: self._stop(cid, timeout, signal))

        return Deferred.fromCoroutine(stop())

    async def _stop(self, cid: str, timeout: int | None, signal: str, manual: bool = True) -> None:
        record = self.records[cid]
        if record.state.status == "restarting":
            self.supervisor.cancel(cid)
            await self._set_state(cid, status="exited", manually_stopped=manual)
            return
        if not record.state.running or cid not in self.supervisor.shims:
            return
        shim = self.supervisor.shims[cid]
        if manual:
            await self._set_state(cid, manually_stopped=True)
        if record.state.status == "paused":
            await shim.resume()
            await self._set_state(cid, status="running")
        sig = container_config.signal_number(signal or record.config.stop_signal or "SIGTERM")
        if timeout is None:
            timeout = record.config.stop_timeout if record.config.stop_timeout is not None else 10
        exited = self.wait_exit(cid)
        with self.supervisor.stopping(cid):
            try:
                await shim.kill(sig)
            except (ShimGone, FailedPrecondition):
                # It exited as it was being stopped (the shim answered
                # that, or went before it could): its exit is on its way.
                pass
            if timeout < 0:
                await exited
            else:
                timer = self._reactor.callLater(timeout, self._kill_late, cid, shim)
                try:
                    await exited
                finally:
                    if timer.active():
                        timer.cancel()
        self.events.publish("container", "stop", cid, name=record.name, image=record.image)
        if record.host.auto_remove and cid in self.records:
            await self._remove(cid, force=True, volumes=True)

    def _kill_late(self, cid: str, shim: IShim) -> None:
        """
        SIGKILL for a container its stop signal did not end in time; one
        that exited meanwhile (its shim answered so, or went) is no error.
        """
        def failed(failure: Failure) -> None:
            if not failure.check(ShimGone, FailedPrecondition):
                self._log.failure("killing {id} after its stop timeout failed", failure, id=cid)

        shim.kill(signals.SIGKILL).addErrback(failed)

    def kill_container(self, ref: str, signal: str = "") -> Deferred[None]:
        async def kill(cid: str) -> None:
            shim = self._running_shim(cid)
            number = container_config.signal_number(signal or "SIGKILL")
            record = self.records[cid]
            # docker's: a kill with SIGKILL or the stop signal (any signal,
            # when the stop signal is the default) ends the restart policy
            # until the next start; a container that goes on is not touched.
            stop_signal = record.config.stop_signal or "SIGTERM"
            if number == signals.SIGKILL or stop_signal == "SIGTERM" \
                    or number == container_config.signal_number(stop_signal):
                await self._set_state(cid, manually_stopped=True)
            try:
                await shim.kill(number)
            except ShimGone:
                raise FailedPrecondition(f"Container {cid} is not running: it exited as it was being killed") from None
            self.events.publish("container", "kill", cid, name=record.name, image=record.image, signal=str(number))

        cid = self.resolve(ref).id
        return Deferred.fromCoroutine(kill(cid))

    def restart_container(self, ref: str, timeout: int | None = None) -> Deferred[None]:
        """
        Stop a running container (as L{stop_container} with C{timeout},
        checked first) and start it again.
        """
        async def restart(cid: str) -> None:
            if self.records[cid].state.running:
                await self._stop(cid, timeout, "")
            if cid in self.records:
                await self._start_by_hand(cid)
                record = self.records[cid]
                self.events.publish("container", "restart", cid, name=record.name, image=record.image)

        async def checked() -> None:
            container_config.validate_stop_timeout(timeout)
            await self._locked(ref, restart)

        return Deferred.fromCoroutine(checked())

    def pause_container(self, ref: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._locked(ref, self._pause))

    async def _pause(self, cid: str) -> None:
        shim = self._running_shim(cid)
        if self.records[cid].state.status == "paused":
            raise FailedPrecondition(f"Container {cid} is already paused")
        try:
            await shim.pause()
        except ShimGone:
            raise FailedPrecondition(f"Container {cid} is not running: it exited as it was being paused") from None
        # docker skips health checks while paused.
        self.health.stop(cid)
        record = await self._set_state(cid, status="paused")
        self.events.publish("container", "pause", cid, name=record.name, image=record.image)

    def unpause_container(self, ref: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._locked(ref, self._unpause))

    async def _unpause(self, cid: str) -> None:
        shim = self._running_shim(cid)
        if self.records[cid].state.status != "paused":
            raise FailedPrecondition(f"Container {cid} is not paused")
        try:
            await shim.resume()
        except ShimGone:
            raise FailedPrecondition(f"Container {cid} is not running: it exited as it was being unpaused") from None
        record = await self._set_state(cid, status="running")
        self.health.resume(cid)
        self.events.publish("container", "unpause", cid, name=record.name, image=record.image)

    # ---------------------------------------------------------------- commit

    async def commit(self, ref: str, reference: str = "", comment: str = "", author: str = "",
                     changes: Sequence[str] = (), pause: bool = True) -> str:
        """
        docker commit: a new image of the container's image plus what the
        container changed, its settings as the config (then C{changes},
        Dockerfile instructions), named C{reference} when given; returns
        the image ID. With C{pause}, a running container is paused while
        its changes are read and resumed after, also when that fails; a
        stopped one is committed as it is. Nothing is paused or written
        when C{reference} or C{changes} are bad (InvalidArgument).
        """
        record = self.resolve(ref)
        cid = record.id
        base = await self.images.resolve(record.image_id)

        def write_layer(sink: LayerSink, tap: LayerSink) -> Deferred[DiffResult]:
            return Deferred.fromCoroutine(self._locked(cid, lambda cid: self._commit_diff(cid, sink, tap, pause)))

        image_id: str = await self.images.commit(
            base, write_layer, image_config(record.config, base.config.raw.get("config") or {}),
            container_id=cid, created_by=created_by(record.config), comment=comment, author=author,
            changes=changes, reference=reference)
        self.events.publish("container", "commit", cid, name=record.name, image=record.image,
                            imageID=image_id, imageRef=reference, comment=comment)
        return image_id

    async def _commit_diff(self, cid: str, sink: LayerSink, tap: LayerSink, pause: bool) -> DiffResult:
        """
        Write the container's changes as a layer to C{sink}, uncompressed
        to C{tap} (without the files the runtime mounts), paused for it
        when C{pause} and running.
        """
        record = self.records[cid]
        paused = pause and record.state.status == "running" and cid in self.supervisor.shims
        if paused:
            try:
                await self._pause(cid)
            except FailedPrecondition:
                # It exited as it was being paused: its changes are final.
                paused = False
        try:
            return await IComparer(self.snapshotter).diff(record.snapshot_key, sink, exclude=RUNTIME_FILES, tap=tap)
        finally:
            if paused:
                await self._resume_after_commit(cid)

    async def _resume_after_commit(self, cid: str) -> None:
        # As docker, a failed resume does not fail the commit: the
        # container stays paused, for `unpause` to try again.
        record = self.records.get(cid)
        if record is None or record.state.status != "paused":
            return
        try:
            await self._unpause(cid)
        except FailedPrecondition as e:
            # It exited, or was killed, as it was committed: nothing to resume.
            self._log.info("container {id} not resumed after its commit: {error}", id=cid, error=str(e))
        except Exception:
            self._log.failure("could not resume container {id} after committing it", id=cid)

    # ---------------------------------------------------------------- sessions

    async def attach_next_start(self, ref: str, on_output: Callable[[str, bytes], None], stdin: bool) -> Attachment:
        """
        The container's attachment made as it next starts, before its
        command runs (``start -a``, docker's attach before start). The hook
        is in place when this returns its first control (a caller may then
        tell its client to start the container); cancelling takes it back,
        and an attachment made for a caller that left is let go.
        """
        return await self.sessions.attach_next_start(self.resolve(ref).id, on_output, stdin)

    def session_of(self, ref: str, exec_id: str = "",
                   since: int | None = None) -> tuple[ContainerRecord, bool, ExitStatus | None]:
        """
        The session a client attaches to: the container's main process, or
        its exec session C{exec_id}. Returns the container's record,
        whether the session has a terminal, and, for a client coming back
        to it (C{since} given: sessions survive their clients, SPEC 3)
        while the container is not running, how it ended (None: attach).
        NotFound for an exec session of another container;
        FailedPrecondition for a new attach to an exec session that ended.
        """
        return self.sessions.session_of(self.resolve(ref), exec_id, since)

    def running_shim(self, ref: str) -> IShim:
        """
        The shim of a running container; FailedPrecondition when it is not
        running, or paused.
        """
        record = self.resolve(ref)
        if record.state.status == "paused":
            raise FailedPrecondition(
                f"Container {ref} is paused, unpause the container before exec")
        return self._running_shim(record.id)

    async def resize(self, ref: str, rows: int, cols: int, exec_id: str = "") -> None:
        """
        Set the terminal size of a running container's main process, or of
        its exec session C{exec_id}; a size no terminal has is refused
        before the container is looked for.
        """
        container_config.validate_window(rows, cols)
        shim = self.running_shim(ref)
        if exec_id:
            self.sessions.info(exec_id)
        await shim.resize(rows, cols, session=exec_id)

    async def exec(self, ref: str, process: runtime_spec.ExecProcess, on_output: Callable[[str, bytes], None] | None,
                   stdin: bool, direct: bool = False, input_id: str = "") -> tuple[ExecInfo, Any]:
        """
        Start an exec session in a running container; with C{on_output}
        the caller is attached from its first byte (its input named
        C{input_id}), with C{direct} the session's C{channel} is a direct
        channel to it. Returns its record and the runtime's session.
        A process docker would refuse (L{container_config.validate_exec}) is refused
        first, whatever the container.
        """
        container_config.validate_exec(process)
        record = self.resolve(ref)
        shim = self.running_shim(record.id)
        return await self.sessions.exec(record, shim, process, on_output, stdin, direct, input_id)

    def exec_info(self, exec_id: str) -> ExecInfo:
        return self.sessions.info(exec_id)

    # ---------------------------------------------------------------- inspection

    async def stats(self, ref: str) -> ContainerStats | None:
        """
        The container's cumulative counters (the runtime's ContainerStats),
        or None when it is not running. Its memory limit is docker's: the
        host's memory when it has none below that.
        """
        record = self.resolve(ref)
        shim = self.supervisor.shims.get(record.id)
        if shim is None or not record.state.running:
            return None
        return await self.inspection.stats(shim)

    async def reopen_log(self, ref: str) -> None:
        """
        Make the running container's shim write its log to a new file at
        its path (Kubernetes' log rotation moved the old one away).
        """
        record = self.resolve(ref)
        await self._running_shim(record.id).reopen_log()

    async def processes(self, ref: str, ps_args: str = "") -> tuple[list[str], list[list[str]]]:
        """
        ``ps`` on the host, rows limited to the container's processes (those
        in its PID namespace), as docker's top does: C{ps_args} as a shell
        would split them, C{-ef} when empty; refused before the container
        is looked for when no ps could take them.
        """
        args = ps_arguments(ps_args)
        record = self.resolve(ref)
        self._running_shim(record.id)
        return await self.inspection.processes(record.state.pid, args)

    async def changes(self, ref: str) -> list[tuple[str, str]]:
        """
        What the container changed in its root filesystem (``ross diff``).
        """
        return await self.inspection.changes(self.resolve(ref).snapshot_key)

    async def export(self, ref: str) -> Outflow:
        """
        The container's root filesystem as a tar: an Outflow of blocks
        written by a thread of its own.
        """
        return await self.inspection.export(self.resolve(ref).snapshot_key, ref)

    async def copying(self, ref: str, action: str, work: Callable[[CopyTarget], Awaitable[_T]]) -> _T:
        """
        Run C{work}, a copy (see L{Copier}), on the container's files, and
        publish the event C{action} ("archive-path" or "extract-to-dir", as
        docker's; none when empty) when it succeeded. A running or paused container is
        worked on in its mount namespace; any other on a private mount of
        its root filesystem and volumes, under its lock, so that it cannot
        start or be removed meanwhile.
        """
        record = self.resolve(ref)

        async def stopped(cid: str) -> _T:
            record = self.records[cid]
            if record.state.running and cid in self.supervisor.shims:
                return await work(CopyTarget(ref, pid=record.state.pid))
            wire = runtime_spec.to_wire(await self.specs.spec(record))
            # Its volumes' devices mounted for the copy, as docker's.
            holder = f"{cid}:copy"
            await self.volumes.hold(holder, _volume_names(record))
            try:
                # Only the storage: the process's environment may hold
                # secrets and the helper's command line is public.
                return await work(CopyTarget(ref, spec={k: wire[k] for k in ("rootfs", "mounts", "readonly")}))
            finally:
                await self.volumes.let_go(holder)

        if record.state.running and record.id in self.supervisor.shims:
            result = await work(CopyTarget(ref, pid=record.state.pid))
        else:
            result = await self._locked(record.id, stopped)
        if action:
            self.events.publish("container", action, record.id, name=record.name, image=record.image)
        return result

    # ---------------------------------------------------------------- remove, rename

    def remove(self, ref: str, force: bool = False, volumes: bool = False) -> Deferred[None]:
        return Deferred.fromCoroutine(self._locked(ref, lambda cid: self._remove(cid, force, volumes)))

    async def _remove(self, cid: str, force: bool, volumes: bool) -> None:
        record = self.records[cid]
        if record.state.running or record.state.status == "restarting":
            if not force:
                raise FailedPrecondition(
                    f"cannot remove container \"/{record.name}\": container is running: "
                    "stop the container before removing or force remove")
            if record.state.status == "restarting":
                self.supervisor.cancel(cid)
            else:
                shim = self.supervisor.shims.get(cid)
                if shim is not None:
                    exited = self.wait_exit(cid)
                    with self.supervisor.stopping(cid):
                        try:
                            if record.state.status == "paused":
                                await shim.resume()
                            await shim.kill(signals.SIGKILL)
                        except (ShimGone, FailedPrecondition):
                            # It exited as it was being removed (the shim
                            # answered so, or went before it could): its
                            # exit is on its way.
                            pass
                        await exited
        self.supervisor.cancel(cid)
        if await self.leftovers.disk_nearly_full():
            # Often with this very container's log: what goes with the
            # container anyway makes room for the steps of its removal
            # (the network's records, the container's own).
            await self.leftovers.drop_logs(cid)
        previous = self.records[cid].state.status
        record = await self._set_state(cid, status="removing")
        try:
            await self.leftovers.delete_runtime_state(cid)
            if self.network is not None:
                await self.network.removed(cid)
        except BaseException:
            # Still there, as it was: rm can be tried again.
            await self._set_state(cid, status=previous)
            raise
        try:
            await self.snapshotter.release(record.snapshot_key, cid)
            await self.snapshotter.remove(record.snapshot_key)
        except NotFound:
            pass
        await self._store.delete(cid)
        self._unsaved.discard(cid)
        del self.records[cid]
        self._names.pop(record.name, None)
        self._locks.pop(cid, None)
        self.supervisor.forget(cid)
        self.sessions.forget(cid)
        self.health.stop(cid)
        await self.leftovers.remove_files(cid)
        if volumes:
            for m in record.mounts:
                if m.type == "volume" and m.anonymous:
                    try:
                        await self.volumes.remove(m.name)
                    except (FailedPrecondition, NotFound):
                        pass
        # Its labels too: the record they come from is gone.
        self.events.publish("container", "destroy", cid, **{**record.config.labels, "name": record.name,
                                                            "image": record.image})
        last = ExitStatus(exit_code=record.state.exit_code, oom_killed=record.state.oom_killed)
        for waiter in self._exit_waiters.pop(cid, []) + self._remove_waiters.pop(cid, []):
            waiter.callback(last)

    def wait_removed(self, cid: str) -> Deferred[ExitStatus]:
        """
        Fires with the container's last exit status once it is removed.
        Cancelling it forgets the waiter.
        """
        return _waiter(self._remove_waiters, cid)

    def update(self, ref: str, resources: runtime_spec.Resources | None = None,
               restart_policy: container_config.RestartPolicy | None = None) -> Deferred[ContainerRecord]:
        """
        docker update: the restart policy and the resource limits (given
        whole: the caller merges what was not asked to change) of a
        container, running or not; refused as at create. A running
        container's cgroups get the new limits at once, before the record
        changes: a limit the kernel refuses (memory below what is in use)
        changes nothing.
        """
        async def update(cid: str) -> ContainerRecord:
            record = self.records[cid]
            host = record.host
            if restart_policy is not None:
                host = attrs.evolve(host, restart_policy=restart_policy)
            if resources is not None:
                host = attrs.evolve(host, resources=resources)
            # Only what changes: the rest was checked at create, and the
            # record holds what create filled in (a joined hostname) that
            # a request may not give.
            container_config.validate_update(host, os.cpu_count() or 1)
            if host.resources != record.host.resources and record.state.running:
                try:
                    await self._running_shim(cid).update(attrs.asdict(host.resources))
                except ShimGone:
                    # It exited meanwhile: the limits are for its next start,
                    # as a stopped container's are.
                    pass
            record = attrs.evolve(self.records[cid], host=host)
            self.records[cid] = record
            await self._store.update(record)
            self.events.publish("container", "update", cid, name=record.name, image=record.image)
            return record

        return Deferred.fromCoroutine(self._locked(ref, update))

    def rename(self, ref: str, new_name: str) -> Deferred[None]:
        async def rename(cid: str) -> None:
            if not new_name:
                raise InvalidArgument("Neither old nor new names may be empty")
            name = validate_name(new_name)
            record = self.records[cid]
            if name == record.name:
                raise InvalidArgument("Renaming a container with the same name as its current name")
            if name in self._names:
                raise AlreadyExists(
                    f'Error when allocating new name: Conflict. The container name "/{name}" is already in use '
                    f'by container "{self._names[name]}". You have to remove (or rename) that container to be able to reuse that name.')
            self._names[name] = cid
            try:
                await self._change(cid, lambda r: attrs.evolve(r, name=name),
                                   lambda r: attrs.evolve(r, name=record.name))
            except BaseException:
                self._names.pop(name, None)
                raise
            self._names.pop(record.name, None)
            self.events.publish("container", "rename", cid, name=name, oldName="/" + record.name,
                                image=record.image)

        return Deferred.fromCoroutine(self._locked(ref, rename))

    def publish_port(self, ref: str, binding: container_config.PortBinding) -> Deferred[list[PortMapping]]:
        """
        Publish a port of a container (beyond docker: while it runs too):
        added to its port bindings for its next starts, and published at
        once when it runs, a taken host port refused as at start. The
        mappings published now (none when it does not run).
        """

        async def publish(cid: str) -> list[PortMapping]:
            record = self.records[cid]
            if self.network is None or record.host.network_mode in ("host", "none"):
                raise FailedPrecondition(
                    f"container {record.name} uses network mode {record.host.network_mode}: it has no ports to publish")
            port, proto = parse_port(binding.container_port)
            wanted = attrs.evolve(binding, container_port=f"{port}/{proto}")
            if wanted in record.host.port_bindings:
                raise AlreadyExists(f"port {_binding_text(wanted)} is already published by {record.name}")
            host = attrs.evolve(record.host, port_bindings=record.host.port_bindings + (wanted,))
            container_config.validate(record.config, host, os.cpu_count() or 1)
            self.network.check(host)
            published = []
            if record.state.running:
                published.append(await self.network.publish(cid, wanted.container_port, wanted.host_ip,
                                                            wanted.host_port))
            try:
                await self._change(cid, lambda r: _with_bindings(r, r.host.port_bindings + (wanted,)),
                                   lambda r: _with_bindings(r, tuple(b for b in r.host.port_bindings if b != wanted)))
            except BaseException:
                for m in published:
                    await self.network.unpublish(cid, m.container_port, m.host_ip, m.host_port)
                raise
            self.events.publish("container", "publish", cid, name=record.name, image=record.image,
                                port=_binding_text(wanted))
            return published

        return Deferred.fromCoroutine(self._locked(ref, publish))

    def unpublish_port(self, ref: str, container_port: str, host_ip: str = "", host_port: str = "",
                       ) -> Deferred[list[PortMapping]]:
        """
        Unpublish a port of a container (C{host_ip}, C{host_port}: only
        that mapping of it): gone from its port bindings, and at once when
        it runs. NotFound when nothing matches. The mappings unpublished
        now.
        """

        async def unpublish(cid: str) -> list[PortMapping]:
            record = self.records[cid]
            port, proto = parse_port(container_port)
            wanted = f"{port}/{proto}"
            if host_port and not host_port.isdigit():
                raise InvalidArgument(f"invalid host port to unpublish: {host_port[:64]!r}")
            removed = []
            if self.network is not None and record.state.running and record.host.network_mode not in ("host", "none"):
                removed = await self.network.unpublish(cid, wanted, host_ip, int(host_port or 0))
            def matches(b: container_config.PortBinding) -> bool:
                return (parse_port(b.container_port) == (port, proto) and (not host_ip or b.host_ip == host_ip)
                        and (not host_port or b.host_port == host_port))

            gone = tuple(b for b in record.host.port_bindings if matches(b))
            if not removed and not gone:
                raise NotFound(f"No public port '{wanted}' published for {record.name}")
            if gone:
                await self._change(cid, lambda r: _with_bindings(r, tuple(b for b in r.host.port_bindings
                                                                         if not matches(b))),
                                   lambda r: _with_bindings(r, r.host.port_bindings + gone))
            self.events.publish("container", "unpublish", cid, name=record.name, image=record.image,
                                port=_binding_text(container_config.PortBinding(wanted, host_ip, host_port)))
            return removed

        return Deferred.fromCoroutine(self._locked(ref, unpublish))

    async def prune(self, until_ns: int | None = None, labels: Iterable[tuple[str, str]] = ()) -> list[str]:
        removed = []
        wanted = list(labels)
        for record in list(self.records.values()):
            if not prunable(record, until_ns, wanted):
                continue
            try:
                await self.remove(record.id)
                removed.append(record.id)
            except (FailedPrecondition, NotFound):
                continue
        if removed:
            self.events.publish("container", "prune", "", reclaimed=str(len(removed)))
        return removed


def _make_private(containers: Path) -> None:
    """
    The containers' directory, each container's directory in it and the
    logs there private (blocking): an older version made them looser.
    """
    for directory in private_children(containers):
        with os.scandir(directory) as files:
            for f in files:
                if f.is_file(follow_symlinks=False):
                    os.chmod(f.path, PRIVATE_FILE_MODE)


def _waiter(lists: dict[str, list[Deferred[ExitStatus]]], cid: str) -> Deferred[ExitStatus]:
    waiters = lists.setdefault(cid, [])

    def forget(d: Deferred[ExitStatus]) -> None:
        if d in waiters:
            waiters.remove(d)
        if not waiters and lists.get(cid) is waiters:
            del lists[cid]

    d: Deferred[ExitStatus] = Deferred(forget)
    waiters.append(d)
    return d


def _now_ns(reactor: IReactorTime) -> int:
    return int(reactor.seconds() * 1e9)


def _with_bindings(record: ContainerRecord, bindings: tuple[container_config.PortBinding, ...]) -> ContainerRecord:
    return attrs.evolve(record, host=attrs.evolve(record.host, port_bindings=bindings))


def _binding_text(b: container_config.PortBinding) -> str:
    """
    "[IP:]HOSTPORT->80/tcp", as ps shows a mapping.
    """
    host = f"{b.host_ip}:{b.host_port}" if b.host_ip else b.host_port
    return f"{host}->{b.container_port}" if host else b.container_port


def _volume_names(record: ContainerRecord) -> list[str]:
    return [m.name for m in record.mounts if m.type == "volume" and m.name]


def _has_entries(directory: str) -> bool:
    return bool(os.listdir(directory))
