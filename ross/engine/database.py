# -*- test-case-name: ross.test.integration.test_daemon_restart -*-
"""
The SQLite connection the stores share the shape of.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

from ross.engine.fsutil import private_database


class ThreadConnections:
    """
    One connection to the database at C{path} per thread that uses it,
    opened on first use: its directory made, the file private, autocommit,
    WAL with the given C{synchronous} level, C{schema} applied. Call it for
    the current thread's connection (blocking: from a store's thread pool).
    """

    def __init__(self, path: Path, schema: str, synchronous: str = "NORMAL") -> None:
        self.path = path
        self._schema = schema
        self._synchronous = synchronous
        self._local = threading.local()

    def __call__(self) -> sqlite3.Connection:
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            private_database(self.path)
            db = sqlite3.connect(self.path, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            db.executescript(self._schema)
            self._local.db = db
        return db
