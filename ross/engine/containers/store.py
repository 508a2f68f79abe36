# -*- test-case-name: ross.test.test_containers_config -*-
"""
Container records and their persistence.

Records live in memory (the manager's view, read without blocking) and are
written through to SQLite, one transaction per change, on a single writer
thread so changes land in the order they were made.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Callable, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ross.engine.containers.config import ContainerConfig, HostConfig, structure, unstructure
from ross.engine.database import ThreadConnections, transaction
from ross.errors import AlreadyExists

_T = TypeVar("_T")

STATUSES = ("created", "running", "paused", "restarting", "exited", "removing", "dead")


@attrs.frozen
class HealthResult:
    """
    One health check: when it ran (nanoseconds since the epoch), its exit
    code (-1 when it timed out or could not run) and output (at most 4096
    bytes, then "...").
    """

    start_ns: int
    end_ns: int
    exit_code: int
    output: str = ""


@attrs.frozen
class State:
    """
    A container's state. C{manually_stopped} remembers a user's stop, which
    restart policies respect. C{health} is "starting", "healthy" or
    "unhealthy" for a container with a health check once started (empty
    otherwise), C{failing_streak} its consecutive failed checks and
    C{health_log} the last few results, oldest first; all three outlive a
    stop, as docker's do.
    """

    status: str = "created"
    pid: int = 0
    exit_code: int = 0
    error: str = ""
    started_ns: int = 0
    finished_ns: int = 0
    oom_killed: bool = False
    restart_count: int = 0
    manually_stopped: bool = False
    health: str = ""
    failing_streak: int = 0
    health_log: tuple[HealthResult, ...] = ()

    @property
    def running(self) -> bool:
        return self.status in ("running", "paused")


@attrs.frozen
class MountPoint:
    """
    A mount resolved at create: host paths and volume names known.
    """

    type: str
    destination: str
    source: str = ""
    name: str = ""
    read_write: bool = True
    propagation: str = ""
    tmpfs_size: int = 0
    tmpfs_mode: int = 0
    tmpfs_exec: bool = False
    tmpfs_options: tuple[str, ...] = ()
    anonymous: bool = False
    read_only_non_recursive: bool = False
    non_recursive: bool = False


@attrs.frozen
class ContainerRecord:
    id: str
    name: str
    created_ns: int
    image: str
    image_id: str
    config: ContainerConfig
    host: HostConfig
    mounts: tuple[MountPoint, ...] = ()
    snapshot_key: str = ""
    state: State = State()

    def to_json(self) -> str:
        return json.dumps(unstructure(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ContainerRecord:
        return structure(cls, json.loads(text))


_SCHEMA = """
CREATE TABLE IF NOT EXISTS containers (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    record TEXT NOT NULL
);
"""


class ContainerStore:
    """
    SQLite persistence of container records at C{path}.
    """

    def __init__(self, reactor: IReactorThreads, path: Path, pool: ThreadPool | None = None) -> None:
        self._reactor = reactor
        # One writer thread: updates of one container land in order.
        self._pool = pool or ThreadPool(minthreads=1, maxthreads=1, name="ross-containers-db")
        self._db = ThreadConnections(path, _SCHEMA)

    def start(self) -> Deferred[list[ContainerRecord]]:
        """
        Open the database; fires with every stored record.
        """
        self._pool.start()
        return self._run(self._load)

    def stop(self) -> Deferred[None]:
        """
        Stop the writer thread once its queued writes are done (joined off
        the reactor thread).
        """
        return deferToThreadPool(self._reactor, self._reactor.getThreadPool(), self._pool.stop)

    def _run(self, fn: Callable[..., _T], *args: object) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def _load(self) -> list[ContainerRecord]:
        rows = self._db().execute("SELECT record FROM containers").fetchall()
        return [ContainerRecord.from_json(r[0]) for r in rows]

    def insert(self, record: ContainerRecord) -> Deferred[None]:
        """
        Store a new record; AlreadyExists when the name is taken (the
        manager checks first, this is the last word).
        """
        return self._run(self._insert, record.id, record.name, record.to_json())

    def _insert(self, id: str, name: str, text: str) -> None:
        try:
            with transaction(self._db()) as db:
                db.execute("INSERT INTO containers (id, name, record) VALUES (?, ?, ?)", (id, name, text))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f'Conflict. The container name "/{name}" is already in use')

    def update(self, record: ContainerRecord) -> Deferred[None]:
        return self._run(self._update, record.id, record.name, record.to_json())

    def _update(self, id: str, name: str, text: str) -> None:
        with transaction(self._db()) as db:
            db.execute("UPDATE containers SET name = ?, record = ? WHERE id = ?", (name, text, id))

    def delete(self, id: str) -> Deferred[None]:
        return self._run(self._delete, id)

    def _delete(self, id: str) -> None:
        with transaction(self._db()) as db:
            db.execute("DELETE FROM containers WHERE id = ?", (id,))
