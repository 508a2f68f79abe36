# -*- test-case-name: ross.test.integration.test_daemon_restart,ross.test.integration.test_overlay_snapshotter -*-
"""
The SQLite databases of the engine's stores: how one is opened and
configured, and how a change is made in one transaction. Blocking: call
them from a store's thread pool.

Every connection is in autocommit mode (C{isolation_level=None}): Python's
sqlite3 never opens a transaction behind a store's back, and
L{transaction} makes each change explicit. Writers take the database lock
up front (C{BEGIN IMMEDIATE}) so two writers never deadlock on a lock
upgrade.
"""

from __future__ import annotations

import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ross.engine.fsutil import private_database


def connect(path: Path, schema: str = "", synchronous: str = "NORMAL", timeout: float = 5.0) -> sqlite3.Connection:
    """
    Open the database at C{path}: its directory made, the file private,
    autocommit, WAL with the given C{synchronous} level, foreign keys
    enforced, C{schema} applied. C{timeout}: how long a statement waits
    for another connection's lock.

    The connection may be used from another thread than the one that
    opened it (a store that shares one under a lock, or closes its
    threads' connections once they are gone); using it from two threads
    at once is the caller's to prevent.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    private_database(path)
    db = sqlite3.connect(path, isolation_level=None, timeout=timeout, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={synchronous}")
    return _define(db, schema)


def in_memory(schema: str) -> sqlite3.Connection:
    """
    An in-memory database configured as L{connect}'s (autocommit, foreign
    keys enforced, C{schema} applied), for a store's fake: one connection,
    on one thread.
    """
    return _define(sqlite3.connect(":memory:", isolation_level=None), schema)


def _define(db: sqlite3.Connection, schema: str) -> sqlite3.Connection:
    db.execute("PRAGMA foreign_keys=ON")
    if schema:
        db.executescript(schema)
    return db


@contextmanager
def transaction(db: sqlite3.Connection, write: bool = True) -> Iterator[sqlite3.Connection]:
    """
    One transaction on C{db}: committed when the block ends, rolled back
    when it raises. A write transaction takes the write lock at once; a
    read (C{write=False}) sees one consistent snapshot of the database.
    """
    db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class ThreadConnections:
    """
    One connection to the database at C{path} per thread that uses it,
    opened on first use by L{connect} with C{schema}, C{synchronous} and
    C{timeout}. Call it for the current thread's connection.
    """

    def __init__(self, path: Path, schema: str, synchronous: str = "NORMAL", timeout: float = 5.0) -> None:
        self.path = path
        self._schema = schema
        self._synchronous = synchronous
        self._timeout = timeout
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []

    def __call__(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            db = connect(self.path, self._schema, self._synchronous, self._timeout)
            self._local.db = db
            with self._lock:
                self._connections.append(db)
        return db

    def close(self) -> None:
        """
        Close every thread's connection; only once no thread uses them.
        """
        with self._lock:
            connections, self._connections = self._connections, []
        for db in connections:
            db.close()
        self._local = threading.local()
