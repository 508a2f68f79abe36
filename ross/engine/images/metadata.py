# -*- test-case-name: ross.test.integration.test_images -*-
"""
Image records in SQLite (C{<root>/images/images.db}).

    images  target digest -> media type, size, the platform manifest and
            config chosen for this host, record creation time, labels
    names   normalised reference -> target digest (many names, one image)
    refs    image -> every blob it references (index, manifests, config,
            layers), so garbage collection is one query
    chains  image -> chain IDs of its layers, so a snapshot is removed only
            when no image still needs it
    layers  layer blob digest -> uncompressed digest (diff ID) and size

Every change is one transaction; blocking, so call it from a thread. A
single connection is shared under a lock (SQLite serialises writers
anyway).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Sequence

import attrs

from ross.engine.database import connect, transaction
from ross.engine.records import Descriptor

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    digest TEXT PRIMARY KEY,
    media_type TEXT NOT NULL,
    size INTEGER NOT NULL,
    manifest TEXT NOT NULL,
    config TEXT NOT NULL,
    created_ns INTEGER NOT NULL,
    labels TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS images_config ON images(config);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    digest TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,
    created_ns INTEGER NOT NULL,
    updated_ns INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS names_digest ON names(digest);
CREATE TABLE IF NOT EXISTS refs (
    image TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,
    blob TEXT NOT NULL,
    PRIMARY KEY (image, blob)
);
CREATE INDEX IF NOT EXISTS refs_blob ON refs(blob);
CREATE TABLE IF NOT EXISTS chains (
    image TEXT NOT NULL REFERENCES images(digest) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    chain TEXT NOT NULL,
    PRIMARY KEY (image, position)
);
CREATE INDEX IF NOT EXISTS chains_chain ON chains(chain);
CREATE TABLE IF NOT EXISTS layers (
    digest TEXT PRIMARY KEY,
    diff_id TEXT NOT NULL,
    size INTEGER NOT NULL
);
"""


@attrs.frozen
class ImageRow:
    """
    One stored image.

    @ivar target: what the names point at (a manifest or an index).
    @ivar manifest: the platform manifest chosen for this host.
    @ivar config: digest of its config: the image ID.
    @ivar names: normalised references pointing at it, sorted.
    """

    target: Descriptor
    manifest: str
    config: str
    created_ns: int
    labels: Mapping[str, str]
    names: tuple[str, ...]

    @property
    def id(self) -> str:
        return self.config


@attrs.frozen
class NewImage:
    """
    What a load or import records for one image.
    """

    target: Descriptor
    manifest: str
    config: str
    blobs: frozenset[str]
    chains: tuple[str, ...]
    labels: Mapping[str, str] = attrs.field(factory=dict)


class ImageDB:
    def __init__(self, path: Path) -> None:
        self._conn = connect(path, SCHEMA, synchronous="FULL")
        self._lock = threading.RLock()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock, transaction(self._conn) as c:
            yield c

    @contextmanager
    def reading(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    # -- reads (each consistent: the lock serialises them with writes)

    def _row(self, c: sqlite3.Connection, r: tuple) -> ImageRow:  # type: ignore[type-arg]
        digest, media_type, size, manifest, config, created_ns, labels = r
        names = tuple(n for (n,) in c.execute("SELECT name FROM names WHERE digest=? ORDER BY name", (digest,)))
        return ImageRow(
            target=Descriptor(media_type, digest, size),
            manifest=manifest,
            config=config,
            created_ns=created_ns,
            labels=json.loads(labels),
            names=names,
        )

    _COLUMNS = "digest, media_type, size, manifest, config, created_ns, labels"

    def images(self) -> list[ImageRow]:
        with self.reading() as c:
            rows = c.execute(f"SELECT {self._COLUMNS} FROM images ORDER BY created_ns DESC, digest").fetchall()
            return [self._row(c, r) for r in rows]

    def by_target(self, digest: str) -> ImageRow | None:
        with self.reading() as c:
            r = c.execute(f"SELECT {self._COLUMNS} FROM images WHERE digest=?", (digest,)).fetchone()
            return self._row(c, r) if r else None

    def by_name(self, name: str) -> ImageRow | None:
        with self.reading() as c:
            r = c.execute(
                f"SELECT {self._COLUMNS} FROM images WHERE digest=(SELECT digest FROM names WHERE name=?)", (name,)
            ).fetchone()
            return self._row(c, r) if r else None

    def by_config(self, config: str) -> ImageRow | None:
        """The (newest) image whose ID is C{config}, if any."""
        with self.reading() as c:
            r = c.execute(f"SELECT {self._COLUMNS} FROM images WHERE config=? ORDER BY created_ns DESC LIMIT 1",
                          (config,)).fetchone()
            return self._row(c, r) if r else None

    def by_config_prefix(self, prefix: str) -> list[ImageRow]:
        """Images whose ID ("sha256:...") starts with C{prefix}."""
        with self.reading() as c:
            rows = c.execute(
                f"SELECT {self._COLUMNS} FROM images WHERE substr(config, 1, ?)=? ORDER BY created_ns DESC",
                (len(prefix), prefix),
            ).fetchall()
            return [self._row(c, r) for r in rows]

    def by_repo_digest(self, repo: str, digest: str) -> ImageRow | None:
        """The image with target C{digest} named in repository C{repo}."""
        with self.reading() as c:
            r = c.execute(
                f"SELECT {self._COLUMNS} FROM images WHERE digest=? AND EXISTS "
                "(SELECT 1 FROM names WHERE names.digest=images.digest AND "
                "(substr(name, 1, ?)=? OR substr(name, 1, ?)=?))",
                (digest, len(repo) + 1, repo + ":", len(repo) + 1, repo + "@"),
            ).fetchone()
            return self._row(c, r) if r else None

    def referenced_blobs(self) -> set[str]:
        with self.reading() as c:
            return {b for (b,) in c.execute("SELECT DISTINCT blob FROM refs")}

    def chains_of(self, digest: str) -> list[str]:
        with self.reading() as c:
            return [ch for (ch,) in c.execute("SELECT chain FROM chains WHERE image=? ORDER BY position", (digest,))]

    def chain_in_use(self, chain: str) -> bool:
        with self.reading() as c:
            return c.execute("SELECT 1 FROM chains WHERE chain=? LIMIT 1", (chain,)).fetchone() is not None

    def layer(self, digest: str) -> tuple[str, int] | None:
        with self.reading() as c:
            r = c.execute("SELECT diff_id, size FROM layers WHERE digest=?", (digest,)).fetchone()
            return (r[0], r[1]) if r else None

    def names_referencing(self, blob: str) -> list[str]:
        """Names of the images that reference C{blob}, sorted."""
        with self.reading() as c:
            return [n for (n,) in c.execute(
                "SELECT DISTINCT names.name FROM refs JOIN names ON names.digest=refs.image "
                "WHERE refs.blob=? ORDER BY names.name", (blob,))]

    def image_size(self, digest: str) -> int:
        """Sum of the uncompressed sizes of an image's known layers."""
        with self.reading() as c:
            (size,) = c.execute(
                "SELECT COALESCE(SUM(layers.size), 0) FROM refs JOIN layers ON layers.digest=refs.blob "
                "WHERE refs.image=?", (digest,)
            ).fetchone()
            return int(size)

    def count(self) -> int:
        with self.reading() as c:
            (n,) = c.execute("SELECT COUNT(*) FROM images").fetchone()
            return int(n)

    # -- writes

    def record_layer(self, digest: str, diff_id: str, size: int) -> None:
        with self.transaction() as c:
            c.execute("INSERT OR REPLACE INTO layers(digest, diff_id, size) VALUES (?, ?, ?)", (digest, diff_id, size))

    def add(self, image: NewImage, names: Sequence[str], now_ns: int) -> list[tuple[str, str | None]]:
        """
        Record C{image} and point C{names} at it, in one transaction.
        Returns (name, previous target digest or None) for each name moved.
        """
        with self.transaction() as c:
            self._insert(c, image, now_ns)
            return [(name, self._point(c, name, image.target.digest, now_ns)) for name in names]

    def _insert(self, c: sqlite3.Connection, image: NewImage, now_ns: int) -> None:
        exists = c.execute("SELECT 1 FROM images WHERE digest=?", (image.target.digest,)).fetchone()
        if exists:
            return
        c.execute(
            "INSERT INTO images(digest, media_type, size, manifest, config, created_ns, labels) VALUES (?,?,?,?,?,?,?)",
            (image.target.digest, image.target.media_type, image.target.size, image.manifest, image.config,
             now_ns, json.dumps(dict(image.labels))),
        )
        c.executemany("INSERT OR IGNORE INTO refs(image, blob) VALUES (?, ?)",
                      [(image.target.digest, b) for b in sorted(image.blobs)])
        c.executemany("INSERT INTO chains(image, position, chain) VALUES (?, ?, ?)",
                      [(image.target.digest, i, ch) for i, ch in enumerate(image.chains)])

    def _point(self, c: sqlite3.Connection, name: str, digest: str, now_ns: int) -> str | None:
        r = c.execute("SELECT digest FROM names WHERE name=?", (name,)).fetchone()
        if r is None:
            c.execute("INSERT INTO names(name, digest, created_ns, updated_ns) VALUES (?,?,?,?)",
                      (name, digest, now_ns, now_ns))
            return None
        if r[0] == digest:
            return None
        c.execute("UPDATE names SET digest=?, updated_ns=? WHERE name=?", (digest, now_ns, name))
        return str(r[0])

    def tag(self, name: str, digest: str, now_ns: int) -> str | None:
        with self.transaction() as c:
            return self._point(c, name, digest, now_ns)

    def untag(self, name: str) -> None:
        with self.transaction() as c:
            c.execute("DELETE FROM names WHERE name=?", (name,))

    def delete(self, digest: str, expected_names: Sequence[str] = ()) -> bool:
        """
        Remove an image record (and its names) unless a name other than
        C{expected_names} appeared meanwhile. True when removed.
        """
        with self.transaction() as c:
            names = {n for (n,) in c.execute("SELECT name FROM names WHERE digest=?", (digest,))}
            if names - set(expected_names):
                return False
            c.execute("DELETE FROM images WHERE digest=?", (digest,))
            return True

    def forget_layers(self, live: set[str]) -> None:
        """Drop cached layer facts of blobs no longer stored."""
        with self.transaction() as c:
            gone = [d for (d,) in c.execute("SELECT digest FROM layers") if d not in live]
            c.executemany("DELETE FROM layers WHERE digest=?", [(d,) for d in gone])
