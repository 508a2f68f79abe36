# -*- test-case-name: ross.test.test_content -*-
"""
Blobs addressed by digest under C{<root>/content/blobs/sha256/<hex>}.

An ingest writes into a temporary file under C{<root>/content/ingest/},
hashing as it goes; the blob appears under its digest only once the digest
(and size, when expected) matched, the file was fsync'd and renamed into
place. A mismatch removes the temporary file and fails with DataLoss, so a
blob whose bytes do not match its name is never visible.

L{BlobStore} is the blocking core, safe to use from several threads at
once; L{ContentStore} is the reactor-side L{IContentStore} over it, running
every blocking call in a thread pool.

Garbage collection must never remove a blob that an operation in flight has
just written but not yet recorded: such blobs are held by a L{Lease} until
the operation's records are written. Collection and lease release share one
lock, so the set of live references is read atomically with the leases.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import threading
import time
from pathlib import Path
from typing import IO, Callable, Iterable, List, TypeVar

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ross.engine.fsutil import fsync_dir, private_dir, remove_tree, start_writeback
from ross.errors import DataLoss, InvalidArgument, NotFound
from ross.interfaces import IContentStore

_T = TypeVar("_T")

_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")

CHUNK = 1 << 20
#: How much of an ingest is written before its writing back to the disk
#: is started (L{Writer.write}).
WRITEBACK_CHUNK = 8 << 20


def check_digest(digest: str) -> str:
    """
    The hex part of a "sha256:<64 hex>" digest; InvalidArgument otherwise.
    """
    m = _DIGEST.match(digest)
    if m is None:
        raise InvalidArgument(f"invalid digest {digest!r}: want sha256:<64 hex digits>")
    return m.group(1)


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@attrs.frozen
class BlobInfo:
    """
    A committed blob.
    """

    digest: str
    size: int


class Lease:
    """
    Blobs an operation in flight holds against garbage collection. Release
    it once the records referring to them are written (or the operation
    failed, see L{BlobStore.rollback}). A lease with a deadline (for blobs
    handed to a client, which may never reference them) stops holding
    anything once it passes, released or not, as containerd's expiring
    leases do; leases live in memory, so a daemon restart ends them all.
    """

    def __init__(self, store: BlobStore, deadline: float | None = None) -> None:
        self._store = store
        self.deadline = deadline
        self.digests: set[str] = set()
        self.created: set[str] = set()

    def release(self) -> None:
        self._store._release(self)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class Writer:
    """
    One ingest in progress: a temporary file that is hashed as it is
    written. Use it from one thread at a time.
    """

    def __init__(self, store: BlobStore, expected: str | None, expected_size: int | None) -> None:
        if expected is not None:
            check_digest(expected)
        self._store = store
        self.expected = expected
        self.expected_size = expected_size
        fd, name = tempfile.mkstemp(dir=store.ingest_dir, prefix="ingest-")
        self.path = Path(name)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.size = 0
        #: Bytes whose writing back was started (see L{start_writeback}).
        self._written_back = 0
        self.closed = False

    def write(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self._file.write(data)
        self.size += len(data)
        if self.size - self._written_back >= WRITEBACK_CHUNK:
            # What was written goes to the disk from now, not at the fsync
            # of commit: a 130 MB layer's fsync waited 0.15-0.2 s.
            self._file.flush()
            start_writeback(self._file.fileno(), self._written_back, self.size - self._written_back)
            self._written_back = self.size

    @property
    def digest(self) -> str:
        """
        Digest of what was written so far.
        """
        return "sha256:" + self._hash.hexdigest()

    def commit(self, lease: Lease | None = None) -> BlobInfo:
        """
        Verify, fsync and rename into place. DataLoss (and the temporary
        file removed) when the bytes do not match what was expected.
        """
        digest = self.digest
        try:
            if self.expected_size is not None and self.size != self.expected_size:
                raise DataLoss(
                    f"size mismatch for blob {self.expected or digest}: "
                    f"expected {self.expected_size} bytes, got {self.size}"
                )
            if self.expected is not None and digest != self.expected:
                raise DataLoss(f"digest mismatch for blob: expected {self.expected}, got {digest}")
            self.close()
            return self._store._install(self.path, digest, self.size, lease)
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        """
        Flush and fsync the temporary file and release its descriptor; the
        ingest can still be committed or aborted.
        """
        if not self.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self.closed = True

    def abort(self) -> None:
        """
        Drop the ingest; nothing becomes visible.
        """
        if not self.closed:
            self._file.close()
            self.closed = True
        try:
            self.path.unlink()
        except FileNotFoundError:
            pass


class VerifyingReader:
    """
    Reads a blob and checks its digest when the end is reached: DataLoss
    instead of EOF when the bytes on disk no longer match the name.
    """

    def __init__(self, path: Path, digest: str) -> None:
        self._file = open(path, "rb")
        self._hash = hashlib.sha256()
        self._digest = digest
        self._checked = False

    def read(self, n: int = -1) -> bytes:
        data = self._file.read(n)
        if data:
            self._hash.update(data)
        elif not self._checked and n != 0:
            self._check()
        if n is None or n < 0:
            self._check()
        return data

    def readinto(self, buffer: bytearray | memoryview) -> int:
        n = self._file.readinto(buffer)
        if n:
            self._hash.update(memoryview(buffer)[:n])
        else:
            self._check()
        return n

    def _check(self) -> None:
        if self._checked:
            return
        self._checked = True
        actual = "sha256:" + self._hash.hexdigest()
        if actual != self._digest:
            raise DataLoss(f"blob {self._digest} is corrupt: its content hashes to {actual}")

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> VerifyingReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobStore:
    """
    The blocking content store; every method may block on the disk.
    """

    _log = Logger()

    def __init__(self, root: Path, clock: Callable[[], float] = time.monotonic) -> None:
        self.root = root
        self.blob_dir = root / "blobs" / "sha256"
        self.ingest_dir = root / "ingest"
        self._clock = clock
        self._gc_lock = threading.Lock()
        self._leases: set[Lease] = set()

    def open(self) -> None:
        """
        Create the directories (private) and drop ingests a crash left
        behind.
        """
        for directory in (self.root, self.blob_dir.parent, self.blob_dir, self.ingest_dir):
            private_dir(directory)
        for leftover in self.ingest_dir.iterdir():
            self._log.info("removing interrupted ingest {path}", path=str(leftover))
            if leftover.is_dir():
                remove_tree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)

    def blob_path(self, digest: str) -> Path:
        return self.blob_dir / check_digest(digest)

    def path(self, digest: str) -> Path:
        """
        Path of a committed blob; NotFound when there is none.
        """
        p = self.blob_path(digest)
        if not p.exists():
            raise NotFound(f"blob {digest} not found")
        return p

    def exists(self, digest: str) -> bool:
        return self.blob_path(digest).exists()

    def info(self, digest: str) -> BlobInfo:
        try:
            return BlobInfo(digest, self.blob_path(digest).stat().st_size)
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def writer(self, expected: str | None = None, expected_size: int | None = None) -> Writer:
        return Writer(self, expected, expected_size)

    def write_bytes(self, data: bytes, expected: str | None = None, lease: Lease | None = None) -> BlobInfo:
        """
        Ingest a small blob held in memory.
        """
        w = self.writer(expected, len(data) if expected is not None else None)
        try:
            w.write(data)
        except BaseException:
            w.abort()
            raise
        return w.commit(lease)

    def read_bytes(self, digest: str, limit: int = 64 << 20) -> bytes:
        """
        A small blob (a manifest, a config), verified against its digest.
        """
        p = self.path(digest)
        size = p.stat().st_size
        if size > limit:
            raise InvalidArgument(f"blob {digest} is too large to read whole ({size} bytes)")
        data = p.read_bytes()
        actual = digest_of(data)
        if actual != digest:
            raise DataLoss(f"blob {digest} is corrupt: its content hashes to {actual}")
        return data

    def reader(self, digest: str) -> VerifyingReader:
        """
        A file-like reader of a blob that fails with DataLoss at its end if
        the bytes do not match the digest.
        """
        return VerifyingReader(self.path(digest), digest)

    def list(self) -> List[BlobInfo]:
        out = []
        for entry in os.scandir(self.blob_dir):
            if len(entry.name) == 64:
                try:
                    out.append(BlobInfo("sha256:" + entry.name, entry.stat().st_size))
                except FileNotFoundError:
                    continue
        return sorted(out, key=lambda b: b.digest)

    def delete(self, digest: str) -> None:
        try:
            self.blob_path(digest).unlink()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    def lease(self, expires_in: float | None = None) -> Lease:
        """
        A new lease, held until released or, given C{expires_in}, for at
        most that many seconds.
        """
        lease = Lease(self, None if expires_in is None else self._clock() + expires_in)
        with self._gc_lock:
            self._leases.add(lease)
        return lease

    def _held(self) -> set[str]:
        """
        Digests the live leases hold, dropping the expired ones; call under
        the collection lock.
        """
        now = self._clock()
        held: set[str] = set()
        for lease in list(self._leases):
            if lease.deadline is not None and lease.deadline <= now:
                self._leases.discard(lease)
            else:
                held |= lease.digests
        return held

    def lease_count(self) -> int:
        """Leases live now (expired ones dropped): none once every operation ended."""
        with self._gc_lock:
            self._held()
            return len(self._leases)

    def hold(self, lease: Lease, digest: str) -> bool:
        """
        Make C{lease} hold the committed blob C{digest} (one an operation
        reuses instead of writing it again); False when there is no such
        blob. Checked under the collection lock, so a blob held here is
        never collected before the lease is released.
        """
        with self._gc_lock:
            if not self.blob_path(digest).exists():
                return False
            lease.digests.add(digest)
            return True

    def _install(self, temp: Path, digest: str, size: int, lease: Lease | None) -> BlobInfo:
        target = self.blob_path(digest)
        with self._gc_lock:
            if target.exists():
                temp.unlink()
            else:
                os.rename(temp, target)
                fsync_dir(self.blob_dir)
                if lease is not None:
                    lease.created.add(digest)
            if lease is not None:
                lease.digests.add(digest)
        return BlobInfo(digest, size)

    def _release(self, lease: Lease) -> None:
        with self._gc_lock:
            self._leases.discard(lease)

    def rollback(self, lease: Lease, referenced: Callable[[], Iterable[str]]) -> List[str]:
        """
        Undo a failed operation: release C{lease} and remove the blobs it
        created that nothing in C{referenced()} refers to.
        """
        with self._gc_lock:
            self._leases.discard(lease)
            live = set(referenced()) | self._held()
            removed = []
            for digest in sorted(lease.created - live):
                self.blob_path(digest).unlink(missing_ok=True)
                removed.append(digest)
            return removed

    def collect(self, referenced: Callable[[], Iterable[str]]) -> List[BlobInfo]:
        """
        Remove every blob that neither C{referenced()} nor a lease holds.
        C{referenced} is called under the collection lock, so an operation
        that releases its lease after writing its records is always seen.
        """
        with self._gc_lock:
            live = set(referenced()) | self._held()
            removed = []
            for blob in self.list():
                if blob.digest not in live:
                    self.blob_path(blob.digest).unlink(missing_ok=True)
                    removed.append(blob)
            if removed:
                self._log.info("collected {n} unreferenced blobs", n=len(removed))
            return removed


@implementer(IContentStore)
class ContentStore:
    """
    The reactor-side content store: the Deferred API of L{IContentStore}
    over a L{BlobStore}, blocking work in C{threadpool} (the reactor's by
    default).
    """

    def __init__(self, reactor: IReactorThreads, root: Path, threadpool: ThreadPool | None = None) -> None:
        self._reactor = reactor
        self.blobs = BlobStore(root)
        self._pool = threadpool

    def _run(self, fn: Callable[..., _T], *args: object) -> Deferred[_T]:
        pool = self._pool or self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, fn, *args)

    def start(self) -> Deferred[None]:
        return self._run(self.blobs.open)

    def info(self, digest: str) -> Deferred[BlobInfo]:
        return self._run(self.blobs.info, digest)

    def path(self, digest: str) -> Path:
        return self.blobs.path(digest)

    def writer(self, expected_digest: str | None = None, expected_size: int | None = None) -> Writer:
        return self.blobs.writer(expected_digest, expected_size)

    def write(self, data: bytes, expected_digest: str | None = None) -> Deferred[BlobInfo]:
        return self._run(self.blobs.write_bytes, data, expected_digest)

    def read(self, digest: str) -> Deferred[bytes]:
        return self._run(self.blobs.read_bytes, digest)

    def delete(self, digest: str) -> Deferred[None]:
        return self._run(self.blobs.delete, digest)

    def list(self) -> Deferred[List[BlobInfo]]:
        return self._run(self.blobs.list)

    def collect(self, referenced: Callable[[], Iterable[str]]) -> Deferred[List[BlobInfo]]:
        return self._run(self.blobs.collect, referenced)
