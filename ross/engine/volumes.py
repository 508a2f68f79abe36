# -*- test-case-name: ross.test.integration.test_containers -*-
"""
Named volumes: directories under C{<root>/volumes/<name>/_data} that outlive
containers, with their records in SQLite.
"""

from __future__ import annotations

import builtins
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, TypeVar

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from ross.engine.containers.config import VOLUME_NAME
from ross.engine.database import ThreadConnections, transaction
from ross.engine.events import EventBus
from ross.engine.fsutil import disk_usage, make_dirs, private_children, private_dir, remove_tree
from ross.engine.reactors import IEngineReactor
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


UsersOf = Callable[[str], list[str]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS volumes (
    name TEXT PRIMARY KEY,
    created_ns INTEGER NOT NULL,
    labels TEXT NOT NULL,
    anonymous INTEGER NOT NULL
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
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="ross-volumes")
        # synchronous=FULL (WAL's default): a created volume's record survives a power cut.
        self._db = ThreadConnections(self.root / "metadata.db", _SCHEMA, synchronous="FULL")

    def _run(self, fn: Callable[..., _T], *args: object) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def start(self) -> Deferred[None]:
        self._pool.start()

        def load() -> list[Volume]:
            import json

            private_children(self.root)
            rows = self._db().execute("SELECT name, created_ns, labels, anonymous FROM volumes").fetchall()
            self._remove_unrecorded({row[0] for row in rows})
            return [
                Volume(name=n, mountpoint=str(self.root / n / "_data"), created_ns=c,
                       labels=json.loads(l), anonymous=bool(a))
                for n, c, l, a in rows
            ]

        def loaded(volumes: list[Volume]) -> None:
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
               claim: str = "") -> Deferred[Volume]:
        """
        Create a volume (a 64-hex name when none is given); an existing
        volume of that name is returned unchanged, as docker does. With
        C{claim}, a container being created, the volume counts as in use
        by it from now until L{release}: an rm meanwhile is refused.
        """
        if driver not in ("", "local"):
            return _fail(InvalidArgument(f"volume driver {driver!r} is not supported: only 'local'"))
        if any(not key for key in (labels or {})):
            return _fail(InvalidArgument("invalid label: the key is empty"))
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
        if users:
            return _fail(FailedPrecondition(
                f"remove {name}: volume is in use - [{', '.join(users)}]"))
        # Forgotten before the delete is queued: a second rm meanwhile finds
        # no volume, and a create of the name makes a new one, whose files
        # the volumes' one thread makes after these are deleted.
        volume = self._volumes.pop(name)

        def delete() -> None:
            with transaction(self._db()) as db:
                db.execute("DELETE FROM volumes WHERE name = ?", (name,))
            remove_tree(self.root / name, ignore_errors=True)

        def deleted(_: object) -> None:
            self._events.publish("volume", "destroy", volume.name, driver="local")

        def failed(f: Failure) -> Failure:
            # A failed delete leaves it visible, as it still is on disk.
            self._volumes.setdefault(name, volume)
            return f

        return self._run(delete).addCallbacks(deleted, failed)

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


def _fail(error: Exception) -> Deferred[Any]:
    from twisted.internet.defer import fail

    return fail(error)
