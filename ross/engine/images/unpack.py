# -*- test-case-name: ross.test.integration.test_images -*-
"""
Image layers unpacked into the snapshotter: committed snapshots named by
their chain IDs (containerd's scheme), so a layer shared by several images
is extracted once.

Every operation that adds content takes a lease on the blobs it commits
(L{Unpacker.lease}) and unpacks their layers; when a later step fails,
L{Unpacker.undo} removes the snapshots it created and the blobs nothing
else refers to, so bad input leaves the store as it was.

A layer being written (a commit's) can be extracted as it is written,
from its uncompressed tar (L{Unpacker.tap}): its snapshot is then ready
when its blob is, instead of after reading the blob back.
"""

from __future__ import annotations

import secrets
from typing import List, Sequence

from twisted.internet.defer import Deferred, DeferredLock
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from ross.engine.content.store import ContentStore, Lease
from ross.engine.layers import LayerResult
from ross.engine.images import compression
from ross.engine.images.manifest import chain_ids
from ross.engine.images.catalog import ImageCatalog
from ross.engine.pipes import Inflow, in_pool
from ross.engine.records import Descriptor
from ross.errors import AlreadyExists, DataLoss, FailedPrecondition, InvalidArgument, NotFound
from ross.interfaces import IApplier, ISnapshotter

#: Label on the committed snapshots unpacking creates (value: the layer's diff ID).
UNPACK_LABEL = "ross.io/image.layer"


class LayerTap:
    """
    The uncompressed tar of a layer being written, extracted as it comes
    into a snapshot of its own (L{Unpacker.tap}). C{write} is called from
    one thread, in order, and never raises: once the extraction has
    stopped (an error of its own), the rest is dropped and L{Unpacker.unpack}
    extracts the layer from its blob as usual.
    """

    def __init__(self, flow: Inflow, key: str, parent: str, extraction: Deferred[LayerResult]) -> None:
        self._flow = flow
        self.key = key
        self.parent = parent
        self.extraction = extraction
        #: Bytes the extraction was handed.
        self.size = 0
        self.broken = False
        self.adopted = False

    def write(self, data: bytes, /) -> None:
        if self.broken:
            return
        if not self._flow.put(data):
            self.broken = True
            return
        self.size += len(data)

    def close(self) -> None:
        """The end of the tar, once its writer is done (or gone)."""
        self._flow.close()


class Unpacker:
    """
    The layer snapshots of the images C{catalog} records.

    @param snapshotter: an L{ross.interfaces.ISnapshotter} that is also
        the L{ross.interfaces.IApplier} of its snapshots (the overlay
        snapshotter).
    """

    _log = Logger()

    def __init__(self, reactor: IReactorThreads, content: ContentStore, snapshotter: ISnapshotter,
                 catalog: ImageCatalog) -> None:
        self._reactor = reactor
        self._content = content
        self._snapshotter = snapshotter
        self._catalog = catalog
        self._chain_locks: dict[str, DeferredLock] = {}

    async def lease(self) -> Lease:
        """
        A new content-store lease (taken in a thread: it shares the
        collection lock with threads doing disk work).
        """
        return await in_pool(self._reactor, self._content.blobs.lease)

    async def tap(self, parent: str) -> LayerTap:
        """
        A tap extracting the tar written to it into a new snapshot on
        committed C{parent} (the chain below the layer), for L{unpack} to
        take as the layer's; release it with L{drop} in any case.
        """
        key = f"extract-{secrets.token_hex(6)}-tap"
        await self._snapshotter.prepare(key, parent, {UNPACK_LABEL: "tap"})
        flow = Inflow(self._reactor)
        # Not hashed again: the writer hashes what it hands over, and the
        # sizes are compared (L{_adopt}).
        extraction = IApplier(self._snapshotter).apply_layer(key, flow, digest=False)

        def ended(result: object) -> object:
            # A writer still writing stops waiting for room.
            flow.reader_done()
            return result

        extraction.addBoth(ended)
        return LayerTap(flow, key, parent, extraction)

    async def drop(self, tap: LayerTap) -> None:
        """
        Release C{tap}: its tar ended, its extraction over and, unless
        L{unpack} took it, its snapshot removed.
        """
        tap.close()
        try:
            await tap.extraction
        except Exception:
            pass
        if not tap.adopted:
            try:
                await self._snapshotter.remove(tap.key)
            except NotFound:
                pass

    async def unpack(self, layers: Sequence[Descriptor], diff_ids: Sequence[str],
                     created: List[str] | None = None, tap: LayerTap | None = None) -> str:
        """
        Unpack the chain of C{layers} (base first, their blobs committed)
        where it is not yet (each extracted once, concurrent callers wait
        for each other), appending the snapshots it creates to C{created}
        (for L{undo}); the top chain ID, the parent for a container's
        snapshot. C{tap}, fed with the top layer's tar (L{Unpacker.tap}),
        holds that layer extracted already when all of it arrived.
        """
        chains = chain_ids(diff_ids)
        parent = ""
        for layer, diff_id, chain in zip(layers, diff_ids, chains):
            lock = self._chain_locks.setdefault(chain, DeferredLock())
            await lock.acquire()
            try:
                if not await self._snapshot_exists(chain):
                    tapped = tap if chain == chains[-1] and tap is not None and tap.parent == parent else None
                    if not (tapped and await self._adopt(tapped, layer, diff_id, chain)):
                        await self._apply(layer, diff_id, chain, parent)
                    if created is not None:
                        created.append(chain)
                elif (await in_pool(self._reactor, self._catalog.db.layer, layer.digest)) is None:
                    # Extracted from another blob with the same content: this
                    # blob's diff ID still has to be checked before it is trusted.
                    actual, size = await in_pool(self._reactor, compression.diff_of,
                                                 str(self._content.blobs.path(layer.digest)))
                    if actual != diff_id:
                        raise DataLoss(f"layer {layer.digest} does not match its diff ID: expected {diff_id}, got {actual}")
                    await in_pool(self._reactor, self._catalog.db.record_layer, layer.digest, diff_id, size)
            finally:
                lock.release()
                if not lock.locked and not lock.waiting:
                    self._chain_locks.pop(chain, None)
            parent = chain
        return parent

    async def _snapshot_exists(self, key: str) -> bool:
        try:
            await self._snapshotter.stat(key)
        except NotFound:
            return False
        return True

    async def _adopt(self, tap: LayerTap, layer: Descriptor, diff_id: str, chain: str) -> bool:
        """
        Commit C{tap}'s snapshot as C{chain} when it holds the whole layer;
        False when it does not (its extraction stopped early).
        """
        tap.close()
        try:
            result = await tap.extraction
        except InvalidArgument:
            raise  # the layer's own content: its blob says the same
        except Exception:
            self._log.failure("extracting layer {digest} as it was written failed; extracting its blob",
                              digest=layer.digest)
            return False
        if tap.broken or result.size != tap.size:
            return False
        await in_pool(self._reactor, self._catalog.db.record_layer, layer.digest, diff_id, result.size)
        try:
            await self._snapshotter.commit(chain, tap.key, {UNPACK_LABEL: diff_id})
        except AlreadyExists:
            # Made meanwhile by a build (it commits its workspaces itself).
            return True
        tap.adopted = True
        return True

    async def _apply(self, layer: Descriptor, diff_id: str, chain: str, parent: str) -> None:
        key = f"extract-{secrets.token_hex(6)}-{chain}"
        path = self._content.blobs.path(layer.digest)
        await self._snapshotter.prepare(key, parent, {UNPACK_LABEL: diff_id})
        try:
            result = await IApplier(self._snapshotter).apply_layer(key, str(path))
            if result.diff_id != diff_id:
                raise DataLoss(
                    f"layer {layer.digest} does not match its diff ID: expected {diff_id}, got {result.diff_id}"
                )
            await in_pool(self._reactor, self._catalog.db.record_layer, layer.digest, diff_id, result.size)
            try:
                await self._snapshotter.commit(chain, key, {UNPACK_LABEL: diff_id})
            except AlreadyExists:
                await self._snapshotter.remove(key)
        except BaseException:
            try:
                await self._snapshotter.remove(key)
            except Exception:
                self._log.failure("could not remove snapshot {key} after a failed unpack", key=key)
            raise

    async def undo(self, lease: Lease | None, created: Sequence[str]) -> None:
        """
        Undo a failed addition: remove the snapshots in C{created} and the
        blobs C{lease} created that nothing refers to, releasing it.
        """
        for chain in reversed(created):
            try:
                await self._snapshotter.remove(chain)
            except Exception:
                self._log.failure("could not remove snapshot {chain} while undoing", chain=chain)
        if lease is not None:
            await in_pool(self._reactor, self._content.blobs.rollback, lease, self._catalog.db.referenced_blobs)

    # ---------------------------------------------------------------- removal

    async def remove_chains(self, chains: Sequence[str]) -> List[str]:
        """
        Remove the snapshots of C{chains} (top first) no remaining image
        needs; stop at the first one a container or another chain builds
        on. The lines docker prints ("Deleted: <chain>").
        """
        deleted = []
        for chain in reversed(chains):
            if await in_pool(self._reactor, self._catalog.db.chain_in_use, chain):
                break
            try:
                await self._snapshotter.remove(chain)
            except NotFound:
                continue
            except FailedPrecondition:
                break
            deleted.append(f"Deleted: {chain}")
        return deleted

    async def remove_orphans(self) -> None:
        """
        Remove what a crash interrupted: unfinished extractions and the
        layer snapshots no image records.
        """
        infos = [i for i in await self._snapshotter.list() if UNPACK_LABEL in i.labels]
        for info in infos:
            if info.kind.value != "committed":
                await self._remove_quietly(info.name)
        committed = {i.name: i.parent for i in infos if i.kind.value == "committed"}
        parents = set(committed.values())
        # Top-down: a chain is removable once nothing builds on it.
        leaves = [name for name in committed if name not in parents]
        while leaves:
            name = leaves.pop()
            if await in_pool(self._reactor, self._catalog.db.chain_in_use, name) or not await self._remove_quietly(name):
                continue
            self._log.info("removed layer snapshot {chain} no image records", chain=name)
            parent = committed.pop(name)
            if parent in committed and parent not in committed.values():
                leaves.append(parent)

    async def _remove_quietly(self, key: str) -> bool:
        try:
            await self._snapshotter.remove(key)
        except (NotFound, FailedPrecondition):
            return False
        return True
