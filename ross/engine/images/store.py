# -*- test-case-name: ross.test.integration.test_images -*-
"""
The local image store: image records over the content store, unpacked into
snapshot chains.

L{ImageStore} is the engine's one image store (L{IImageStore}): it builds
the pieces below, each given what it needs, and hands each operation to
the piece that does it:

 - L{ImageCatalog} (C{catalog.py}): the records and their resolution
   (resolve, list, history, tag, recording a new image);
 - L{Unpacker} (C{unpack.py}): layers unpacked into committed snapshots
   named by chain ID, and undoing a failed addition;
 - L{Loader} (C{load.py}): archives and tarballs in (load, import);
 - L{Saver} (C{save.py}): archives out (save);
 - L{Committer} (C{commit.py}): docker commit's image half;
 - L{Remover} (C{removal.py}): rmi, prune and blob collection.

The registry's pull and push and the build backend are constructed with
the pieces they use (the catalog, the unpacker), not with the store.

All blocking work runs in threads; the methods are reactor-side and return
Deferreds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, List, Mapping, Sequence

from twisted.internet.defer import Deferred
from zope.interface import implementer

from ross.engine.content.store import ContentStore
from ross.engine.events import EventBus
from ross.engine.images.manifest import host_platform
from ross.engine.images.catalog import (
    HistoryItem,
    Image,
    ImageCatalog,
    ImageSummary,
    ImageUser,
    InUseProvider,
)
from ross.engine.images.commit import Committer
from ross.engine.images.load import Loader, LoadResult
from ross.engine.images.removal import RemoveResult, Remover
from ross.engine.images.save import Saver
from ross.engine.layers.stream import Readable
from ross.engine.images.unpack import Unpacker
from ross.engine.layers.diff import DiffResult, LayerSink
from ross.engine.pipes import Outflow
from ross.engine.reactors import IEngineReactor
from ross.engine.records import Platform
from ross.interfaces import IImageStore, ISnapshotter



@implementer(IImageStore)
class ImageStore:
    """
    Image records (C{<root>/images.db}), the content store under them and
    the snapshotter their layers unpack into.

    @param snapshotter: an L{ross.interfaces.ISnapshotter} that is also
        the L{ross.interfaces.IApplier} of its snapshots (the overlay
        snapshotter).
    @param events: the engine's event bus.
    @param in_use: the container records' answer to "which containers
        use which image" (L{ross.engine.containers.queries}); None means
        none do.
    @param lineage: the builder's answer to "which image did each step
        image start from": the images other steps start from are docker's
        intermediate images, which listings leave out unless asked for all
        and pruning dangling images spares; removing an image removes the
        untagged ones it was built on that nothing else needs. None means
        there are none.
    """

    def __init__(
        self,
        reactor: IEngineReactor,
        root: Path,
        content: ContentStore,
        snapshotter: ISnapshotter,
        events: EventBus,
        in_use: InUseProvider | None = None,
        platform: Platform | None = None,
        lineage: Callable[[], Mapping[str, str]] | None = None,
    ) -> None:
        self.reactor = reactor
        self.content = content
        self.snapshotter = snapshotter
        self.in_use = in_use
        self.lineage = lineage
        self.platform = platform or host_platform()
        self.catalog = ImageCatalog(reactor, root, content, events, self._users, self._intermediates)
        self.unpacker = Unpacker(reactor, content, snapshotter, self.catalog)
        self.loader = Loader(reactor, content, self.catalog, self.unpacker, events, self.platform)
        self.saver = Saver(reactor, content, self.catalog)
        self.committer = Committer(reactor, content, self.catalog, self.unpacker, self.platform)
        self.remover = Remover(reactor, content, self.catalog, self.unpacker, events, self._users,
                               self._lineage)

    def _users(self) -> Mapping[str, Sequence[ImageUser]]:
        return self.in_use() if self.in_use is not None else {}

    def _lineage(self) -> Mapping[str, str]:
        return self.lineage() if self.lineage is not None else {}

    def _intermediates(self) -> set[str]:
        return set(self._lineage().values())

    # ---------------------------------------------------------------- life

    @property
    def count(self) -> int:
        """How many images are recorded."""
        return self.catalog.count

    def start(self) -> Deferred[None]:
        """
        Open the records (the snapshotter must be started), then undo what
        a crash interrupted: unfinished extractions, layer snapshots and
        blobs no image records.
        """
        async def start() -> None:
            await self.catalog.open()
            await self.unpacker.remove_orphans()
            # Blobs a crashed load committed but never recorded.
            await self.remover.collect()

        return Deferred.fromCoroutine(start())

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self.catalog.close())

    # ---------------------------------------------------------------- records

    def resolve(self, name: str) -> Deferred[Image]:
        """L{ImageCatalog.resolve}."""
        return Deferred.fromCoroutine(self.catalog.resolve(name))

    def list(self, all: bool = False, filters: Sequence[tuple[str, str]] = ()) -> Deferred[List[ImageSummary]]:
        """L{ImageCatalog.list}."""
        return Deferred.fromCoroutine(self.catalog.list(all, filters))

    def history(self, name: str) -> Deferred[List[HistoryItem]]:
        """L{ImageCatalog.history}."""
        return Deferred.fromCoroutine(self.catalog.history(name))

    def tag(self, source: str, target: str) -> Deferred[None]:
        """L{ImageCatalog.tag}."""
        return Deferred.fromCoroutine(self.catalog.tag(source, target))

    # ---------------------------------------------------------------- unpack

    def ensure_unpacked(self, image: Image) -> Deferred[str]:
        """
        Unpack C{image}'s layers that are not yet (L{Unpacker.unpack});
        fires with the chain ID of the top layer, the parent for a
        container's snapshot.
        """
        return Deferred.fromCoroutine(self.unpacker.unpack(image.layers, image.config.diff_ids))

    # ---------------------------------------------------------------- in, out

    def load(self, stream: Readable) -> Deferred[LoadResult]:
        """L{Loader.load}."""
        return self.loader.load(stream)

    def import_image(self, stream: Readable, reference: str = "", changes: Sequence[str] = (), message: str = "",
                     source: str = "-") -> Deferred[str]:
        """L{Loader.import_image}."""
        return self.loader.import_image(stream, reference, changes, message, source)

    def save(self, names: Sequence[str], format: str = "docker-archive") -> Deferred[tuple[int, Outflow]]:
        """L{Saver.save}."""
        return Deferred.fromCoroutine(self.saver.save(names, format))

    def commit(
        self,
        base: Image,
        write_layer: Callable[[LayerSink, LayerSink], Deferred[DiffResult]],
        config: Mapping[str, Any],
        container_id: str,
        created_by: str = "",
        comment: str = "",
        author: str = "",
        changes: Sequence[str] = (),
        reference: str = "",
    ) -> Deferred[str]:
        """L{Committer.commit}."""
        return self.committer.commit(base, write_layer, config, container_id, created_by, comment, author,
                                     changes, reference)

    # ---------------------------------------------------------------- removal

    def remove(self, name: str, force: bool = False, prune: bool = True) -> Deferred[RemoveResult]:
        """L{Remover.remove}."""
        return Deferred.fromCoroutine(self.remover.remove(name, force, prune))

    def prune(self, all: bool = False, filters: Sequence[tuple[str, str]] = ()) -> Deferred[tuple[List[str], int]]:
        """L{Remover.prune}."""
        return Deferred.fromCoroutine(self.remover.prune(all, filters))
