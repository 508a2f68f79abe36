# -*- test-case-name: ross.test.integration.test_containers -*-
"""
Named volumes: directories under C{<root>/volumes/<name>/_data} that outlive
containers, with their records in SQLite.

A volume made with the local driver's options (C{type}, C{device}, C{o}: a
bind of a host directory, a tmpfs, an NFS share) has its device mounted on
its C{_data} while anything holds it (a running container, a copy-up, a
copy into a stopped container) and unmounted when the last lets go, as
docker's local driver does.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import attrs
from twisted.internet.defer import Deferred, DeferredLock, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ross.engine.containers.config import VOLUME_NAME
from ross.engine.database import ThreadConnections, transaction
from ross.engine.events import EventBus
from ross.engine.fsutil import disk_usage, make_dirs, private_children, private_dir, remove_tree
from ross.engine.pipes import in_pool
from ross.engine.reactors import IEngineReactor
from ross.engine.runtime import linux
from ross.errors import FailedPrecondition, InvalidArgument, NotFound

_T = TypeVar("_T")


@attrs.frozen
class Volume:
    name: str
    mountpoint: str
    created_ns: int
    labels: Mapping[str, str] = attrs.field(factory=dict)
    anonymous: bool = False
    driver: str = "local"
    #: The local driver's options: C{type}, C{device} and C{o}, or none.
    options: Mapping[str, str] = attrs.field(factory=dict)


#: The local driver's options, and the others each needs (docker's).
OPTIONS = {"type": ("device",), "device": ("type",), "o": ("type", "device")}


def validate_options(options: Mapping[str, str]) -> None:
    """
    Refuse what the local driver cannot mount: an unknown option, one
    without those it needs, a device (other than a network share's) not
    named by an absolute path.
    """
    for key in options:
        if key not in OPTIONS:
            raise InvalidArgument(f'invalid option: "{key}" (the local driver takes type, device and o)')
    for key in options:
        for needed in OPTIONS[key]:
            if needed not in options:
                raise InvalidArgument(f'missing required option: "{needed}"')
    for key, value in options.items():
        if not value or "\0" in value:
            raise InvalidArgument(f"invalid option {key}={value!r}")
    flags, _ = linux.mount_options(options.get("o", "").split(","))
    if flags & linux.MS_BIND and not options["device"].startswith("/"):
        raise InvalidArgument(f"the device of a bind must be an absolute path: {options['device']!r}")


UsersOf = Callable[[str], list[str]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    created_ns INTEGER NOT NULL,
    labels TEXT NOT NULL,
    anonymous INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS volume_options (
    name TEXT PRIMARY KEY,
    options TEXT NOT NULL
);
"""


class VolumeStore:
    """
    Volumes, kept in memory and written through to SQLite.

    @param users_of: the IDs of containers that mount a volume; removal is
        refused while there are any.
    """

    _log = Logger()

    def __init__(self, reactor: IEngineReactor, root: Path, events: EventBus, users_of: UsersOf | None = None) -> None:
        self._reactor = reactor
        self.root = root / "volumes"
        self._events = events
        self.users_of: UsersOf = users_of or (lambda name: [])
        self._volumes: dict[str, Volume] = {}
        #: Volume name -> the containers being created with it: in use
        #: before their records exist (L{create}'s C{claim}).
        self._claims: dict[str, set[str]] = {}
        #: Volume name -> what holds its device mounted (L{hold}); a name
        #: is in L{_mounted} while its device is on its C{_data}.
        self._holders: dict[str, set[str]] = {}
        self._mounted: set[str] = set()
        self._device_locks: dict[str, DeferredLock] = {}
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="ross-volumes")
        # synchronous=FULL (WAL's default): a created volume's record survives a power cut.
        self._db = ThreadConnections(self.root / "metadata.db", _SCHEMA, synchronous="FULL")

    def _run(self, fn: Callable[..., _T], *args: object) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def start(self) -> Deferred[None]:
        self._pool.start()

        def load() -> tuple[list[Volume], set[str]]:
            import json

            private_children(self.root)
            db = self._db()
            rows = db.execute("SELECT name, created_ns, labels, anonymous FROM volumes").fetchall()
            options = dict(db.execute("SELECT name, options FROM volume_options").fetchall())
            self._remove_unrecorded({row[0] for row in rows})
            volumes = [
                Volume(name=n, mountpoint=str(self.root / n / "_data"), created_ns=c,
                       labels=json.loads(l), anonymous=bool(a), options=json.loads(options.get(n, "{}")))
                for n, c, l, a in rows
            ]
            points = set(linux.mount_points())
            return volumes, {v.name for v in volumes if v.options and os.path.realpath(v.mountpoint) in points}

        def loaded(found: tuple[list[Volume], set[str]]) -> None:
            volumes, self._mounted = found
            # The devices a daemon before this one left mounted are held
            # again by the running containers the manager adopts, the rest
            # unmounted then (L{settle}).
            self._volumes = {v.name: v for v in volumes}

        return self._run(load).addCallback(loaded)

    def _remove_unrecorded(self, names: set[str]) -> None:
        """
        Remove the directories no record owns (blocking): a daemon killed
        while creating a volume (the directory is made before the record)
        or removing one (the record goes first) leaves such.
        """
        for entry in os.listdir(self.root):
            if entry in names or entry.startswith("metadata.db"):
                continue
            self._log.info("removing volume directory {name} no volume records", name=entry)
            if _unmount(str(self.root / entry / "_data")):
                remove_tree(self.root / entry, ignore_errors=True)

    def stop(self) -> Deferred[None]:
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._pool.stop)

    def get(self, name: str) -> Volume:
        try:
            return self._volumes[name]
        except KeyError:
            raise NotFound(f"get {name}: no such volume")

    def list(self, filters: Iterable[tuple[str, str]] = ()) -> list[Volume]:
        """
        The volumes by name, those matching every one of docker's volume
        list C{filters} (dangling, name, label, driver) when given.
        """
        volumes = sorted(self._volumes.values(), key=lambda v: v.name)
        for key, value in filters:
            if key == "dangling":
                if value not in ("true", "false", "1", "0"):
                    raise InvalidArgument(f"invalid filter 'dangling={value}': use true or false")
                dangling = value in ("true", "1")
                volumes = [v for v in volumes if (not self.users_of(v.name)) == dangling]
            elif key == "name":
                volumes = [v for v in volumes if value in v.name]
            elif key == "label":
                k, eq, val = value.partition("=")
                volumes = [v for v in volumes if k in v.labels and (not eq or v.labels[k] == val)]
            elif key == "driver":
                volumes = [v for v in volumes if v.driver == value]
            else:
                raise InvalidArgument(f"invalid filter '{key}'")
        return volumes

    def create(self, name: str = "", labels: Mapping[str, str] | None = None, driver: str = "",
               claim: str = "", options: Mapping[str, str] | None = None) -> Deferred[Volume]:
        """
        Create a volume (a 64-hex name when none is given); an existing
        volume of that name is returned unchanged, as docker does. With
        C{claim}, a container being created, the volume counts as in use
        by it from now until L{release}: an rm meanwhile is refused.
        C{options} are the local driver's (L{validate_options}); their
        device is mounted when the volume is first held, not now.
        """
        if driver not in ("", "local"):
            return _fail(InvalidArgument(f"volume driver {driver!r} is not supported: only 'local'"))
        if any(not key for key in (labels or {})):
            return _fail(InvalidArgument("invalid label: the key is empty"))
        try:
            validate_options(options or {})
        except InvalidArgument as e:
            return _fail(e)
        anonymous = not name
        if anonymous:
            name = os.urandom(32).hex()
        elif not VOLUME_NAME.match(name):
            return _fail(InvalidArgument(
                f'create {name}: "{name}" includes invalid characters for a local volume name, '
                'only "[a-zA-Z0-9][a-zA-Z0-9_.-]" are allowed'))
        if claim:
            self._claims.setdefault(name, set()).add(claim)
        if name in self._volumes:
            return succeed(self._volumes[name])
        volume = Volume(
            name=name,
            mountpoint=str(self.root / name / "_data"),
            created_ns=int(self._reactor.seconds() * 1e9),
            labels=dict(labels or {}),
            anonymous=anonymous,
            options=dict(sorted((options or {}).items())),
        )
        self._volumes[name] = volume

        def make() -> None:
            import json

            private_dir(self.root / name)
            # The volume's own root, as docker makes it (the daemon's umask
            # would narrow it): content, not daemon state.
            make_dirs(volume.mountpoint, 0o755)
            with transaction(self._db()) as db:
                db.execute("INSERT OR REPLACE INTO volumes VALUES (?, ?, ?, ?)",
                           (name, volume.created_ns, json.dumps(dict(volume.labels)), int(anonymous)))
                if volume.options:
                    db.execute("INSERT OR REPLACE INTO volume_options VALUES (?, ?)",
                               (name, json.dumps(dict(volume.options))))

        def failed(f: Failure) -> Failure:
            self._volumes.pop(name, None)
            claims = self._claims.get(name, set())
            claims.discard(claim)
            if not claims:
                self._claims.pop(name, None)
            return f

        return self._run(make).addCallbacks(lambda _: self._created(volume), failed)

    def release(self, claim: str) -> None:
        """
        Forget C{claim}'s claims: its container's record (or its failed
        create's end) says now whether it uses the volumes.
        """
        for name in [n for n, claims in self._claims.items() if claim in claims]:
            self._claims[name].discard(claim)
            if not self._claims[name]:
                del self._claims[name]

    def _created(self, volume: Volume) -> Volume:
        self._events.publish("volume", "create", volume.name, driver="local")
        return volume

    def remove(self, name: str, force: bool = False) -> Deferred[None]:
        """
        Remove a volume and its data; FailedPrecondition while a container
        uses it (even with force, as docker).
        """
        if name not in self._volumes:
            if force:
                return succeed(None)
            return _fail(NotFound(f"get {name}: no such volume"))
        users = self.users_of(name) + sorted(self._claims.get(name, ()))
        if users or self._holders.get(name):
            return _fail(FailedPrecondition(
                f"remove {name}: volume is in use - [{', '.join(users)}]"))
        # Forgotten before the delete is queued: a second rm meanwhile finds
        # no volume, and a create of the name makes a new one, whose files
        # the volumes' one thread makes after these are deleted.
        volume = self._volumes.pop(name)

        self._mounted.discard(name)
        self._device_locks.pop(name, None)

        def delete() -> None:
            # Never through a device still mounted: the files of a host
            # directory bound there are not the volume's to remove.
            if not _unmount(volume.mountpoint):
                raise FailedPrecondition(f"remove {name}: its device is still mounted on {volume.mountpoint}")
            with transaction(self._db()) as db:
                db.execute("DELETE FROM volumes WHERE name = ?", (name,))
                db.execute("DELETE FROM volume_options WHERE name = ?", (name,))
            remove_tree(self.root / name, ignore_errors=True)

        def deleted(_: object) -> None:
            self._events.publish("volume", "destroy", volume.name, driver="local")

        def failed(f: Failure) -> Failure:
            # A failed delete leaves it visible, as it still is on disk.
            self._volumes.setdefault(name, volume)
            return f

        return self._run(delete).addCallbacks(deleted, failed)

    # -- the devices of volumes with options

    async def hold(self, holder: str, names: Iterable[str]) -> None:
        """
        Mount the device of each of the volumes C{names} that has one and
        is not mounted yet, and count C{holder} among what holds it; until
        L{let_go}. A device that cannot be mounted fails the whole hold
        (FailedPrecondition, docker's words), nothing of it kept.
        """
        taken = []
        try:
            for name in names:
                volume = self._volumes.get(name)
                if volume is None or not volume.options:
                    continue
                holders = self._holders.setdefault(name, set())
                holders.add(holder)
                taken.append(name)
                # One mount or unmount of a device at a time: a second start
                # waits for the first's mount, not binds what is under it.
                lock = self._device_locks.setdefault(name, DeferredLock())
                await lock.acquire()
                try:
                    if name not in self._mounted:
                        await in_pool(self._reactor, _mount_device, volume)
                        self._mounted.add(name)
                finally:
                    lock.release()
        except BaseException:
            await self.let_go(holder, taken)
            raise

    def adopt(self, holder: str, names: Iterable[str]) -> None:
        """
        Count C{holder} (a container still running from before the daemon
        started) among what holds the volumes C{names}, mounting nothing:
        it has its own view of them.
        """
        for name in names:
            volume = self._volumes.get(name)
            if volume is not None and volume.options:
                self._holders.setdefault(name, set()).add(holder)

    async def let_go(self, holder: str, names: Iterable[str] | None = None) -> None:
        """
        C{holder} holds the volumes C{names} (all it holds, by default) no
        more: the devices nothing else holds are unmounted.
        """
        for name in list(self._holders) if names is None else list(names):
            holders = self._holders.get(name)
            if holders is None or holder not in holders:
                continue
            holders.discard(holder)
            if not holders:
                del self._holders[name]
                await self._unmount_idle(name)

    async def settle(self) -> None:
        """
        Unmount the devices nothing holds (left by a daemon before this one,
        once its running containers are adopted).
        """
        for name in sorted(self._mounted - set(self._holders)):
            await self._unmount_idle(name)

    async def _unmount_idle(self, name: str) -> None:
        lock = self._device_locks.setdefault(name, DeferredLock())
        await lock.acquire()
        try:
            volume = self._volumes.get(name)
            if volume is None or name not in self._mounted or self._holders.get(name):
                return
            if await in_pool(self._reactor, _unmount, volume.mountpoint):
                self._mounted.discard(name)
            else:
                self._log.error("could not unmount the device of volume {name} from {path}",
                                name=name, path=volume.mountpoint)
        finally:
            lock.release()

    def size_of(self, name: str) -> Deferred[int]:
        """
        Bytes used by a volume's data.
        """
        path = self.get(name).mountpoint
        return self._run(lambda: disk_usage(path).size)

    async def prune(
        self, all: bool = False, labels: Iterable[tuple[str, str]] = ()
    ) -> tuple[builtins.list[str], int]:
        """
        Remove volumes no container uses: anonymous ones, or all with C{all}.
        Returns the names removed and the bytes freed.
        """
        removed, freed = [], 0
        wanted = list(labels)
        for volume in list(self._volumes.values()):
            if self.users_of(volume.name) or not (all or volume.anonymous):
                continue
            if any(volume.labels.get(k) != v for k, v in wanted):
                continue
            freed += await self.size_of(volume.name)
            await self.remove(volume.name)
            removed.append(volume.name)
        return removed, freed


def _mount_device(volume: Volume) -> None:
    """
    Mount C{volume}'s device on its C{_data} (blocking): its C{o} split as
    mount(8) does into flags and the file system's own options.
    """
    options = volume.options
    flags, data = linux.mount_options([o for o in options.get("o", "").split(",") if o])
    try:
        linux.mount(options["device"], volume.mountpoint, options["type"], flags, data or None)
        if flags & linux.MS_BIND and flags & ~(linux.MS_BIND | linux.MS_REC):
            # A bind takes its flags (ro, nosuid...) only from a remount of
            # it (as docker's mount package does).
            try:
                linux.mount(None, volume.mountpoint, None, flags | linux.MS_REMOUNT, None)
            except OSError:
                _unmount(volume.mountpoint)
                raise
    except OSError as e:
        raise FailedPrecondition(
            f"error while mounting volume '{volume.mountpoint}': failed to mount local volume: mount "
            f"{options['device']}:{volume.mountpoint}, flags: {flags:#x}, data: {data}: "
            f"{os.strerror(e.errno or 0).lower()}") from None


def _unmount(path: str) -> bool:
    """
    Detach whatever is mounted on C{path} (blocking); whether nothing is
    mounted there now.
    """
    path = os.path.realpath(path)
    for _ in range(16):
        if path not in linux.mount_points():
            return True
        try:
            linux.umount2(path, linux.MNT_DETACH)
        except OSError:
            break
    return path not in linux.mount_points()


def _fail(error: Exception) -> Deferred[Any]:
    from twisted.internet.defer import fail

    return fail(error)
