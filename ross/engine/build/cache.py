# -*- test-case-name: ross.test.integration.test_build -*-
"""
The build cache: a step's key -> the image it made, kept in memory and
written through to SQLite (C{<root>/build/cache.db}), so it outlives the
daemon.

A key is docker's (see L{step_key}): the image the step starts from and
the whole config the step leaves, its command standing for the step (a
COPY's by the checksums of its files). The images themselves live in the
image store, untagged; an entry whose image was removed is a miss.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import attrs
from twisted.internet.defer import Deferred, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from ross.engine.database import ThreadConnections, transaction
from ross.engine.reactors import IEngineReactor

_T = TypeVar("_T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS steps (
    key TEXT PRIMARY KEY,
    image TEXT NOT NULL,
    parent TEXT NOT NULL,
    created_ns INTEGER NOT NULL
);
"""


def step_key(parent: str, config: Mapping[str, Any], command: list[str], author: str, platform: str) -> str:
    """
    The cache key of a step: C{parent} (image ID, "" for scratch), the
    C{config} object it leaves, C{command} (what docker puts in the
    build container's Cmd: the RUN command with its build args, or a
    C{#(nop)} comment naming the instruction), the maintainer and the
    platform.
    """
    document = {"parent": parent, "config": dict(config), "command": command, "author": author,
                "platform": platform}
    encoded = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return "sha256:" + hashlib.sha256(encoded.encode("utf-8", "surrogateescape")).hexdigest()


@attrs.frozen
class CacheEntry:
    key: str
    image: str
    parent: str
    created_ns: int


class BuildCache:
    """
    Entries by key; L{lineage} tells which image each cached step started
    from (those are docker's intermediate images, hidden from listings).
    """

    def __init__(self, reactor: IEngineReactor, path: Path) -> None:
        self._reactor = reactor
        self._db = ThreadConnections(path, _SCHEMA)
        self._pool = ThreadPool(minthreads=1, maxthreads=1, name="ross-build-cache")
        self._entries: dict[str, CacheEntry] = {}

    def _run(self, fn: Callable[..., _T], *args: object) -> Deferred[_T]:
        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def start(self) -> Deferred[None]:
        self._pool.start()

        def load() -> list[CacheEntry]:
            rows = self._db().execute("SELECT key, image, parent, created_ns FROM steps").fetchall()
            return [CacheEntry(*row) for row in rows]

        def loaded(entries: list[CacheEntry]) -> None:
            self._entries = {e.key: e for e in entries}

        return self._run(load).addCallback(loaded)

    def stop(self) -> Deferred[None]:
        self._pool.stop()
        return succeed(None)

    def get(self, key: str) -> str | None:
        """The image ID cached under C{key}, if any."""
        entry = self._entries.get(key)
        return entry.image if entry is not None else None

    def put(self, key: str, image: str, parent: str) -> Deferred[None]:
        entry = CacheEntry(key, image, parent, int(self._reactor.seconds() * 1e9))
        self._entries[key] = entry

        def write() -> None:
            self._db().execute("INSERT OR REPLACE INTO steps(key, image, parent, created_ns) VALUES (?,?,?,?)",
                               attrs.astuple(entry))

        return self._run(write)

    def forget(self, keys: list[str]) -> Deferred[None]:
        for key in keys:
            self._entries.pop(key, None)

        def write() -> None:
            with transaction(self._db()) as db:
                db.executemany("DELETE FROM steps WHERE key=?", [(k,) for k in keys])

        return self._run(write)

    def entries(self) -> list[CacheEntry]:
        return list(self._entries.values())

    def lineage(self) -> dict[str, str]:
        """The image each cached step made -> the image it started from."""
        return {e.image: e.parent for e in self._entries.values() if e.parent}

    def images(self) -> set[str]:
        """Image IDs of cached steps."""
        return {e.image for e in self._entries.values()}
