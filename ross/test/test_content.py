# -*- test-case-name: ross.test.test_content -*-
"""
The content store: verified ingest, invisible partial writes, corrupt blobs
never used, garbage collection that respects references and leases.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.trial.unittest import TestCase

from ross.engine.content import store as store_module
from ross.engine.content.store import BlobStore, ContentStore, digest_of
from ross.engine.reactors import engine_reactor
from ross.errors import DataLoss, InvalidArgument, NotFound
from ross.interfaces import IContentStore
from zope.interface.verify import verifyObject


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class BlobStoreTests(TestCase):
    def setUp(self) -> None:
        self.root = Path(self.mktemp())
        self.store = BlobStore(self.root)
        self.store.open()

    def ingest_files(self) -> list[str]:
        return os.listdir(self.root / "ingest")

    def test_layout(self) -> None:
        """
        A committed blob lives at blobs/sha256/<hex> with exactly its bytes.
        """
        info = self.store.write_bytes(b"hello")
        self.assertEqual(info.digest, sha(b"hello"))
        self.assertEqual((self.root / "blobs" / "sha256" / sha(b"hello")[7:]).read_bytes(), b"hello")
        self.assertEqual(self.store.info(info.digest).size, 5)
        self.assertEqual(self.ingest_files(), [])

    def test_written_back_as_it_grows(self) -> None:
        """
        A large ingest's writing back to the disk is started as it grows,
        chunk after chunk of what was written (not all at its fsync), and
        its bytes are the blob's.
        """
        started: list[tuple[int, int]] = []
        real = store_module.start_writeback  # type: ignore[attr-defined]

        def record(fd: int, offset: int, length: int) -> None:
            self.assertEqual(os.fstat(fd).st_size, offset + length)
            started.append((offset, length))
            real(fd, offset, length)

        self.patch(store_module, "start_writeback", record)
        self.patch(store_module, "WRITEBACK_CHUNK", 8 << 20)
        piece = os.urandom(3 << 20)
        w = self.store.writer(None)
        for _ in range(6):
            w.write(piece)
        info = w.commit()
        self.assertEqual(started, [(0, 9 << 20), (9 << 20, 9 << 20)])
        self.assertEqual(info.digest, sha(piece * 6))

    def test_partial_ingest_invisible(self) -> None:
        """
        Until commit, written bytes are only in a temporary file under
        ingest/: neither listed nor found by digest.
        """
        w = self.store.writer(sha(b"abcdef"))
        w.write(b"abc")
        self.assertEqual(self.store.list(), [])
        self.assertRaises(NotFound, self.store.info, sha(b"abcdef"))
        self.assertEqual(len(self.ingest_files()), 1)
        w.abort()
        self.assertEqual(self.ingest_files(), [])
        self.assertEqual(self.store.list(), [])

    def test_digest_mismatch(self) -> None:
        """
        Bytes that do not hash to the expected digest fail with DataLoss,
        the temporary file is removed and nothing becomes visible.
        """
        w = self.store.writer(sha(b"expected"))
        w.write(b"something else")
        e = self.assertRaises(DataLoss, w.commit)
        self.assertIn("digest mismatch", str(e))
        self.assertEqual(self.store.list(), [])
        self.assertEqual(self.ingest_files(), [])

    def test_size_mismatch(self) -> None:
        """
        A blob shorter than the expected size is refused.
        """
        w = self.store.writer(sha(b"abc"), 4)
        w.write(b"abc")
        self.assertRaises(DataLoss, w.commit)
        self.assertEqual(self.store.list(), [])

    def test_invalid_digest(self) -> None:
        """
        Only sha256 digests in canonical form are accepted.
        """
        for bad in ("sha256:abc", "md5:" + "0" * 32, "sha256:" + "A" * 64, "../../etc/passwd"):
            self.assertRaises(InvalidArgument, self.store.writer, bad)
            self.assertRaises(InvalidArgument, self.store.info, bad)

    def test_commit_existing(self) -> None:
        """
        Committing a blob that exists already keeps one copy and no temp file.
        """
        self.store.write_bytes(b"same")
        self.store.write_bytes(b"same")
        self.assertEqual([b.digest for b in self.store.list()], [sha(b"same")])
        self.assertEqual(self.ingest_files(), [])

    def test_corrupt_blob_never_used(self) -> None:
        """
        A blob whose file was changed on disk after commit fails with
        DataLoss when read, whole or streamed.
        """
        info = self.store.write_bytes(b"original content")
        self.store.blob_path(info.digest).write_bytes(b"tampered content")
        self.assertRaises(DataLoss, self.store.read_bytes, info.digest)
        with self.store.reader(info.digest) as r:
            def read_all() -> None:
                while r.read(4):
                    pass
            self.assertRaises(DataLoss, read_all)

    def test_open_removes_interrupted_ingests(self) -> None:
        """
        Temporary files a crash left in ingest/ are removed at start.
        """
        w = self.store.writer()
        w.write(b"half")
        w.close()
        BlobStore(self.root).open()
        self.assertEqual(self.ingest_files(), [])

    def test_collect_respects_references(self) -> None:
        """
        Collection removes exactly the blobs nothing references.
        """
        keep = self.store.write_bytes(b"keep").digest
        drop = self.store.write_bytes(b"drop").digest
        removed = self.store.collect(lambda: {keep})
        self.assertEqual([b.digest for b in removed], [drop])
        self.assertEqual([b.digest for b in self.store.list()], [keep])

    def test_collect_respects_leases(self) -> None:
        """
        A blob held by a lease survives collection until the lease is
        released, even though no record refers to it yet.
        """
        lease = self.store.lease()
        digest = self.store.write_bytes(b"in flight", None, lease).digest
        self.store.collect(set)
        self.assertTrue(self.store.exists(digest))
        lease.release()
        self.store.collect(set)
        self.assertFalse(self.store.exists(digest))

    def test_expiring_lease(self) -> None:
        """
        A lease with a deadline holds its blobs until the deadline passes,
        released or not; a collection then takes them.
        """
        now = [100.0]
        store = BlobStore(self.store.root, clock=lambda: now[0])
        lease = store.lease(expires_in=60)
        digest = store.write_bytes(b"handed out", None, lease).digest
        now[0] += 59
        store.collect(set)
        self.assertTrue(store.exists(digest))
        now[0] += 1
        store.collect(set)
        self.assertFalse(store.exists(digest))

    def test_collect_reads_references_under_lock(self) -> None:
        """
        The reference set is read while collection holds the lock, so an
        operation that records its blob and then releases its lease is
        seen either way.
        """
        lease = self.store.lease()
        digest = self.store.write_bytes(b"recorded", None, lease).digest
        records: set[str] = set()

        def referenced() -> set[str]:
            return records

        records.add(digest)
        lease.release()
        self.store.collect(referenced)
        self.assertTrue(self.store.exists(digest))

    def test_rollback(self) -> None:
        """
        Rolling back a lease removes the blobs it created and nothing else.
        """
        existing = self.store.write_bytes(b"existing").digest
        lease = self.store.lease()
        self.store.write_bytes(b"existing", None, lease)
        new = self.store.write_bytes(b"new", None, lease).digest
        removed = self.store.rollback(lease, set)
        self.assertEqual(removed, [new])
        self.assertEqual([b.digest for b in self.store.list()], [existing])


class ContentStoreTests(TestCase):
    # trial runs a Deferred-returning setUp; its TestCase keeps unittest's
    # `-> None` (twisted/twisted#12037).
    def setUp(self) -> Deferred[None]:  # type: ignore[override]
        self.store = ContentStore(engine_reactor(reactor), Path(self.mktemp()))
        return self.store.start()

    def test_interface(self) -> None:
        verifyObject(IContentStore, self.store)

    async def test_deferred_api(self) -> None:
        """
        write, info, read, list and delete work off the reactor thread.
        """
        info = await self.store.write(b"data", digest_of(b"data"))
        self.assertEqual((await self.store.info(info.digest)).size, 4)
        self.assertEqual(await self.store.read(info.digest), b"data")
        self.assertEqual([b.digest for b in await self.store.list()], [info.digest])
        await self.store.delete(info.digest)
        with self.assertRaises(NotFound):
            await self.store.info(info.digest)
        with self.assertRaises(DataLoss):
            await self.store.write(b"data", digest_of(b"other"))
