# -*- test-case-name: ross.test.integration.test_images -*-
"""
Images coming in as archives: docker-save archives and OCI layout tars
(docker load), and root filesystem tarballs made into one-layer images
(docker import).

Both work as every addition does: stage and check everything, take a
lease on the blobs they commit, unpack, then record the images in one
transaction and release the lease. A failure at any step undoes what the
steps before made, and so does a cancellation (the client went away)
before the images are recorded.
"""

from __future__ import annotations

import time
from typing import Any, List, Sequence

import attrs
from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorThreads

from ross.engine.content.store import ContentStore, Lease
from ross.engine.events import EventBus
from ross.engine.images import compression
from ross.engine.images.manifest import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, canonical_json, chain_ids
from ross.engine.images.archive import LoadPlan, Staged, plan, read_archive
from ross.engine.images.catalog import ImageCatalog, Moved
from ross.engine.images.changes import Change, apply_changes, parse_changes
from ross.engine.images.metadata import NewImage
from ross.engine.images.tarball import read_tarball
from ross.engine.layers.stream import Readable
from ross.engine.images.unpack import Unpacker
from ross.engine.pipes import Guard, Inflow, PipeSource, in_pool, in_thread
from ross.engine.records import Descriptor, Platform
from ross.errors import InvalidArgument
from ross.humanize import rfc3339
from ross.reference import Reference, parse_tag


@attrs.frozen
class LoadResult:
    loaded: tuple[str, ...]
    image_ids: tuple[str, ...]


def _reader_guard(stream: Readable) -> Guard:
    """
    The guard of an operation reading C{stream}: cancelling it makes a
    thread waiting for the client's next bytes give up at once.
    """
    if isinstance(stream, (Inflow, PipeSource)):
        return Guard(lambda: stream.abort(CancelledError("the client went away")))
    return Guard()


class Loader:
    """
    Loads archives and imports tarballs into the content store, unpacks
    their layers (C{unpacker}) and records their images (C{catalog}).

    @param events: the engine's event bus ("load" and "import" events).
    @param platform: the host's platform: the manifest chosen from an
        index, and the platform of imported images.
    """

    def __init__(self, reactor: IReactorThreads, content: ContentStore, catalog: ImageCatalog, unpacker: Unpacker,
                 events: EventBus, platform: Platform) -> None:
        self._reactor = reactor
        self._content = content
        self._catalog = catalog
        self._unpacker = unpacker
        self._events = events
        self._platform = platform

    # ---------------------------------------------------------------- load

    def load(self, stream: Readable) -> Deferred[LoadResult]:
        """
        Load every image of a docker-save archive or an OCI layout tar read
        from C{stream} (in a thread of its own: the stream may block), then
        unpack and record them. Nothing changes when any part is wrong, nor
        when the load is cancelled before its images are recorded (the
        Deferred fires once everything is undone).
        """
        guard = _reader_guard(stream)
        return guard.run(self._load(stream, guard))

    async def _load(self, stream: Readable, guard: Guard) -> LoadResult:
        blobs = self._content.blobs

        def stage() -> Staged:
            try:
                return read_archive(stream, blobs)  # type: ignore[arg-type]
            finally:
                if isinstance(stream, Inflow):
                    stream.reader_done()

        staged = await in_thread(self._reactor, stage, name="ross-load")
        # Leases take the content store's GC lock, which threads hold over
        # disk work: never take it on the reactor.
        lease = await self._unpacker.lease()
        created: List[str] = []
        try:
            guard.check()
            load_plan: LoadPlan = await in_pool(self._reactor, self._plan_and_commit, staged, lease)
            for image in load_plan.images:
                guard.check()
                await self._unpacker.unpack(image.layers, image.config.diff_ids, created)
            guard.check()
            moved = await in_pool(self._reactor, self._record, load_plan)
        except BaseException:
            await self._unpacker.undo(lease, created)
            raise
        finally:
            await in_pool(self._reactor, staged.discard)
        await in_pool(self._reactor, lease.release)
        loaded: List[str] = []
        ids: List[str] = []
        for image in load_plan.images:
            ids.append(image.config_digest)
            if image.names:
                for ref in image.names:
                    loaded.append(f"Loaded image: {ref.familiar()}")
                    self._events.publish("image", "load", image.config_digest, name=str(ref))
            else:
                loaded.append(f"Loaded image ID: {image.config_digest}")
                self._events.publish("image", "load", image.config_digest)
        await self._catalog.after_moves(moved)
        await self._catalog.refresh_count()
        return LoadResult(tuple(loaded), tuple(ids))

    def _plan_and_commit(self, staged: Staged, lease: Lease) -> LoadPlan:
        db = self._catalog.db
        load_plan = plan(staged, self._platform, db.layer)
        blobs = self._content.blobs
        for digest, member in load_plan.stage.items():
            member.writer.commit(lease)
        for digest, data in load_plan.generated.items():
            blobs.write_bytes(data, digest, lease)
        for digest, (diff_id, size) in load_plan.layer_facts.items():
            db.record_layer(digest, diff_id, size)
        return load_plan

    def _record(self, load_plan: LoadPlan) -> List[Moved]:
        db = self._catalog.db
        moved: List[Moved] = []
        for image in load_plan.images:
            names = [str(ref) for ref in image.names]
            now = time.time_ns()
            if image.target.digest in load_plan.generated:
                # A docker-save archive's image has no manifest of its own
                # (the plan wrote one): an image here with its config is
                # the same image, as docker sees it, and takes its names.
                same = db.by_config(image.config_digest)
                if same is not None:
                    moved += [(name, db.tag(name, same.target.digest, now)) for name in names]
                    continue
            new = NewImage(
                target=image.target,
                manifest=image.manifest.digest,
                config=image.config_digest,
                blobs=image.all_blobs,
                chains=tuple(chain_ids(image.config.diff_ids)),
            )
            moved += db.add(new, names, now)
        return moved

    # ---------------------------------------------------------------- import

    def import_image(
        self,
        stream: Readable,
        reference: str = "",
        changes: Sequence[str] = (),
        message: str = "",
        source: str = "-",
    ) -> Deferred[str]:
        """
        Make a one-layer image of the root filesystem tarball (plain, gzip
        or zstd) read from C{stream}; fires with its ID. C{changes} are
        Dockerfile instructions applied to the config (CMD, ENV, ...).

        The stream is read up to the end of the tar and no further; what is
        not a tar is refused within its first block (L{read_tarball}).
        Nothing changes when the import fails or is cancelled before the
        image is recorded; the Deferred fires once everything is undone.
        """
        try:
            ref = parse_tag(reference) if reference else None
            config_changes = parse_changes(changes)
        except InvalidArgument as e:
            return fail(e)
        guard = _reader_guard(stream)
        return guard.run(self._import(stream, ref, config_changes, message or f"Imported from {source}", guard))

    async def _import(self, stream: Readable, ref: Reference | None, changes: list[Change], message: str,
                      guard: Guard) -> str:
        lease = await self._unpacker.lease()
        created: List[str] = []
        try:
            layer, config_digest, manifest = await in_thread(
                self._reactor, self._import_blobs, stream, lease, changes, message, name="ross-import")
            guard.check()
            config, _ = await in_pool(self._reactor, self._catalog.config, config_digest)
            await self._unpacker.unpack([layer], config.diff_ids, created)
            guard.check()
            new = NewImage(
                target=manifest,
                manifest=manifest.digest,
                config=config_digest,
                blobs=frozenset({manifest.digest, config_digest, layer.digest}),
                chains=tuple(chain_ids(config.diff_ids)),
            )
            names = [str(ref)] if ref else []
            moved = await self._catalog.add(new, names)
        except BaseException:
            await self._unpacker.undo(lease, created)
            raise
        await self._catalog.announce(lease, "import", config_digest, names, moved, unnamed=True)
        return config_digest

    def _import_blobs(self, stream: Readable, lease: Lease, changes: list[Change],
                      message: str) -> tuple[Descriptor, str, Descriptor]:
        """
        Blocking: read the tarball from C{stream} into the layer blob (its
        ingest dropped on any failure), then write the config and manifest,
        every blob under C{lease}.
        """
        blobs = self._content.blobs
        try:
            writer = blobs.writer()
            try:
                tarball = read_tarball(stream, writer)
            except BaseException:
                writer.abort()
                raise
        finally:
            if isinstance(stream, Inflow):
                stream.reader_done()
        layer_info = writer.commit(lease)
        diff_id = tarball.diff_id
        self._catalog.db.record_layer(layer_info.digest, diff_id, tarball.size)
        layer = Descriptor(OCI_LAYER + compression.media_suffix(tarball.compression), layer_info.digest,
                           layer_info.size)
        created = rfc3339(*divmod(time.time_ns(), 1_000_000_000))
        config_doc: dict[str, Any] = {
            "architecture": self._platform.architecture,
            "os": self._platform.os,
        }
        if self._platform.variant:
            config_doc["variant"] = self._platform.variant
        config_doc.update({
            "config": apply_changes({}, changes),
            "created": created,
            "comment": message,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "comment": message}],
        })
        config_bytes = canonical_json(config_doc)
        config_info = blobs.write_bytes(config_bytes, None, lease)
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_info.digest, "size": config_info.size},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
        }
        manifest_bytes = canonical_json(manifest_doc)
        manifest_info = blobs.write_bytes(manifest_bytes, None, lease)
        return layer, config_info.digest, Descriptor(OCI_MANIFEST, manifest_info.digest, manifest_info.size)
