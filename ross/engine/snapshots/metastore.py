# -*- test-case-name: ross.test.integration.test_overlay_snapshotter -*-
"""
Snapshot metadata in SQLite, as containerd's metastore: every change is one
transaction. Blocking: call it from the snapshotter's worker threads only.

Each thread gets its own connection, opened and used as every store's
(L{ross.engine.database}): writers take the database lock up front so two
writers never deadlock on a lock upgrade.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping

import attrs

from ross.engine.database import ThreadConnections, in_memory, transaction
from ross.engine.snapshots.records import IN_USE_LABEL, Kind, SnapshotInfo
from ross.errors import AlreadyExists, FailedPrecondition, NotFound

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    key TEXT NOT NULL UNIQUE,
    parent_id INTEGER REFERENCES snapshots(id),
    kind TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent_id);
CREATE TABLE IF NOT EXISTS labels (
    snapshot_id INTEGER NOT NULL REFERENCES snapshots(id),
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (snapshot_id, name)
);
"""


@attrs.frozen
class Record:
    """
    A snapshot row with its directory ID and the IDs of its parent chain
    (nearest parent first).
    """

    id: int
    info: SnapshotInfo
    parent_ids: tuple[int, ...]


class Transaction:
    """
    Queries and changes inside one open transaction.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def _row(self, key: str) -> tuple[int, str, int | None, str, int, int] | None:
        row = self._db.execute(
            "SELECT s.id, s.key, s.parent_id, s.kind, s.created_ns, s.updated_ns FROM snapshots s WHERE s.key = ?",
            (key,),
        ).fetchone()
        return row  # type: ignore[no-any-return]

    def _labels(self, snapshot_id: int) -> dict[str, str]:
        rows = self._db.execute("SELECT name, value FROM labels WHERE snapshot_id = ?", (snapshot_id,))
        return dict(rows.fetchall())

    def _key_of(self, snapshot_id: int | None) -> str:
        if snapshot_id is None:
            return ""
        row = self._db.execute("SELECT key FROM snapshots WHERE id = ?", (snapshot_id,)).fetchone()
        return str(row[0])

    def _chain(self, parent_id: int | None) -> tuple[int, ...]:
        chain: list[int] = []
        while parent_id is not None:
            chain.append(parent_id)
            row = self._db.execute("SELECT parent_id FROM snapshots WHERE id = ?", (parent_id,)).fetchone()
            parent_id = row[0]
        return tuple(chain)

    def get(self, key: str) -> Record:
        """
        The record of C{key}; NotFound otherwise.
        """
        row = self._row(key)
        if row is None:
            raise NotFound(f"No such snapshot: {key}")
        snapshot_id, name, parent_id, kind, created, updated = row
        info = SnapshotInfo(
            name=name,
            parent=self._key_of(parent_id),
            kind=Kind(kind),
            labels=self._labels(snapshot_id),
            created_ns=created,
            updated_ns=updated,
        )
        return Record(id=snapshot_id, info=info, parent_ids=self._chain(parent_id))

    def exists(self, key: str) -> bool:
        return self._row(key) is not None

    def create(self, key: str, parent: str, kind: Kind, labels: Mapping[str, str]) -> Record:
        """
        Insert a new active snapshot or view. AlreadyExists when the key is
        taken (keys and committed names share one namespace), NotFound or
        FailedPrecondition when the parent is missing or not committed.
        """
        if self.exists(key):
            raise AlreadyExists(f"Snapshot {key} already exists")
        parent_id = None
        if parent:
            parent_record = self.get(parent) if self.exists(parent) else None
            if parent_record is None:
                raise NotFound(f"No such parent snapshot: {parent}")
            if parent_record.info.kind is not Kind.COMMITTED:
                raise FailedPrecondition(
                    f"Parent snapshot {parent} is {parent_record.info.kind.value}, not committed"
                )
            parent_id = parent_record.id
        now = time.time_ns()
        cursor = self._db.execute(
            "INSERT INTO snapshots (key, parent_id, kind, created_ns, updated_ns) VALUES (?, ?, ?, ?, ?)",
            (key, parent_id, kind.value, now, now),
        )
        snapshot_id = int(cursor.lastrowid or 0)
        self._set_labels(snapshot_id, labels)
        return self.get(key)

    def _set_labels(self, snapshot_id: int, labels: Mapping[str, str]) -> None:
        self._db.execute("DELETE FROM labels WHERE snapshot_id = ?", (snapshot_id,))
        self._db.executemany(
            "INSERT INTO labels (snapshot_id, name, value) VALUES (?, ?, ?)",
            [(snapshot_id, k, v) for k, v in labels.items()],
        )

    def has_children(self, snapshot_id: int) -> list[str]:
        rows = self._db.execute("SELECT key FROM snapshots WHERE parent_id = ? ORDER BY key LIMIT 3", (snapshot_id,))
        return [r[0] for r in rows.fetchall()]

    def commit(self, name: str, key: str, labels: Mapping[str, str]) -> Record:
        """
        Active C{key} becomes committed C{name}, keeping its directory.
        """
        record = self.get(key)
        if record.info.kind is not Kind.ACTIVE:
            raise FailedPrecondition(f"Snapshot {key} is {record.info.kind.value}; only active snapshots can be committed")
        if record.info.holder is not None:
            raise FailedPrecondition(f"Snapshot {key} is in use by {record.info.holder}")
        if self.exists(name):
            raise AlreadyExists(f"Snapshot {name} already exists")
        self._db.execute(
            "UPDATE snapshots SET key = ?, kind = ?, updated_ns = ? WHERE id = ?",
            (name, Kind.COMMITTED.value, time.time_ns(), record.id),
        )
        self._set_labels(record.id, labels)
        return self.get(name)

    def remove(self, key: str) -> Record:
        """
        Delete C{key}'s record; FailedPrecondition while it has children or
        is held in use.
        """
        record = self.get(key)
        children = self.has_children(record.id)
        if children:
            raise FailedPrecondition(
                f"Snapshot {key} has children ({', '.join(children)}); remove them first"
            )
        if record.info.holder is not None:
            raise FailedPrecondition(f"Snapshot {key} is in use by {record.info.holder}")
        self._db.execute("DELETE FROM labels WHERE snapshot_id = ?", (record.id,))
        self._db.execute("DELETE FROM snapshots WHERE id = ?", (record.id,))
        return record

    def update_labels(self, key: str, changes: Mapping[str, str | None]) -> Record:
        """
        Set (value) or delete (None) labels of C{key}.
        """
        record = self.get(key)
        labels = dict(record.info.labels)
        for name, value in changes.items():
            if value is None:
                labels.pop(name, None)
            else:
                labels[name] = value
        self._set_labels(record.id, labels)
        self._db.execute("UPDATE snapshots SET updated_ns = ? WHERE id = ?", (time.time_ns(), record.id))
        return self.get(key)

    def hold(self, key: str, holder: str) -> Record:
        """
        Mark C{key} as used by C{holder} (L{IN_USE_LABEL});
        FailedPrecondition when another holds it.
        """
        current = self.get(key).info.holder
        if current is not None and current != holder:
            raise FailedPrecondition(f"Snapshot {key} is in use by {current}")
        return self.update_labels(key, {IN_USE_LABEL: holder})

    def release(self, key: str, holder: str) -> Record:
        """
        Undo L{hold} by C{holder}; unchanged when C{holder} does not hold it.
        """
        record = self.get(key)
        if record.info.holder != holder:
            return record
        return self.update_labels(key, {IN_USE_LABEL: None})

    def all(self) -> list[Record]:
        """
        Every snapshot, ordered by key.
        """
        rows = self._db.execute("SELECT key FROM snapshots ORDER BY key").fetchall()
        return [self.get(r[0]) for r in rows]

    def ids(self) -> set[int]:
        return {r[0] for r in self._db.execute("SELECT id FROM snapshots").fetchall()}


class MetaStore:
    """
    The database file, with one connection per thread that uses it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        # Several snapshotter workers write at once: a writer waits for
        # another's lock longer than a single-threaded store's would.
        self._db = ThreadConnections(path, _SCHEMA, synchronous="FULL", timeout=30.0)

    def _connection(self) -> sqlite3.Connection:
        return self._db()

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        """
        A write transaction: committed when the block ends, rolled back
        when it raises.
        """
        with transaction(self._connection()) as db:
            yield Transaction(db)

    @contextmanager
    def read(self) -> Iterator[Transaction]:
        """
        A read transaction: one consistent snapshot of the database.
        """
        with transaction(self._connection(), write=False) as db:
            yield Transaction(db)

    def close(self) -> None:
        """
        Close every connection; only once no thread uses the store.
        """
        self._db.close()


class MemoryMetaStore(MetaStore):
    """
    The same records in an in-memory database on one connection, for a
    snapshotter that works on one thread only (the reactor's: the fake
    L{ross.testing.fakes.MemorySnapshotter}).
    """

    def __init__(self) -> None:
        self._memory = in_memory(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        return self._memory

    def close(self) -> None:
        self._memory.close()
