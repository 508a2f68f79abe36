# -*- test-case-name: ross.test.integration.test_images -*-
"""
The local image store: image records over the content store, unpacked into
snapshot chains.

An image is what a reference points at: a manifest or an index (the
target). Its ID is the digest of the config of the manifest chosen for this
host, as docker shows it. Layers are unpacked into committed snapshots
named by their chain IDs (containerd's scheme), so a layer shared by
several images is extracted once.

Every operation that adds content works the same way: stage and check
everything, take a lease on the blobs it commits, unpack, then record the
images in one transaction and release the lease. A failure at any step
undoes what the step before made (snapshots it created, blobs nothing else
refers to), so bad input leaves the store as it was.

All blocking work runs in threads; the methods are reactor-side and return
Deferreds.
"""

from __future__ import annotations

import fnmatch
import json
import secrets
import threading
import time
from typing import IO, Any, Callable, List, Mapping, Sequence, TypeVar

import attrs
from twisted.internet.defer import CancelledError, Deferred, DeferredLock, fail, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from ross.engine.content.store import ContentStore, Lease, Writer, digest_of
from ross.engine.fsutil import private_dir
from ross.engine.images import compression, manifest as m
from ross.engine.images.archive import (
    LoadPlan,
    OutMember,
    PlannedImage,
    Source,
    archive_size,
    plan,
    read_archive,
    write_archive,
)
from ross.engine.images.changes import apply_changes, parse_changes
from ross.engine.images.metadata import ImageDB, ImageRow, NewImage
from ross.engine.pipes import Guard, Inflow, Outflow, in_thread
from ross.reference import (
    Reference,
    ReferenceError,
    is_id_prefix,
    is_image_id,
    parse_normalized,
    parse_tag,
)
from ross.engine.images.tarball import Readable, read_tarball
from ross.engine.layers.diff import DiffResult
from ross.engine.records import Descriptor, Platform
from ross.errors import AlreadyExists, DataLoss, FailedPrecondition, InvalidArgument, NotFound
from ross.humanize import parse_time
from ross.interfaces import IApplier, IImageStore, ISnapshotter

_T = TypeVar("_T")

#: Label on the committed snapshots unpacking creates (value: the layer's diff ID).
UNPACK_LABEL = "ross.io/image.layer"


@attrs.frozen
class ImageUser:
    """
    A container using an image, as the container manager reports it.
    """

    container_id: str
    running: bool = False


#: image ID ("sha256:<config>") -> the containers using it.
InUseProvider = Callable[[], Mapping[str, Sequence[ImageUser]]]


@attrs.frozen
class Image:
    """
    A local image resolved for use: everything a container needs from it.

    @ivar id: the image ID (config digest).
    @ivar name: the normalised reference it was found by ("" for an ID).
    @ivar names: every reference pointing at it.
    @ivar target: descriptor the names point at (manifest or index).
    @ivar manifest: descriptor of the manifest chosen for this host.
    @ivar config: the parsed config; C{config.config} holds Env, Cmd,
        Entrypoint, WorkingDir, User, ExposedPorts, Labels, StopSignal.
    @ivar layers: layer descriptors, base first.
    @ivar chain_ids: chain ID of each layer prefix; the last names the
        committed snapshot a container's root starts from.
    """

    id: str
    name: str
    names: tuple[str, ...]
    target: Descriptor
    manifest: Descriptor
    config: m.Config
    config_json: bytes
    manifest_json: bytes
    layers: tuple[Descriptor, ...]
    chain_ids: tuple[str, ...]
    created_ns: int
    size: int

    @property
    def chain_id(self) -> str:
        """Chain ID of the top layer ("" for an image without layers)."""
        return self.chain_ids[-1] if self.chain_ids else ""

    @property
    def short_id(self) -> str:
        return self.id[len("sha256:"):][:12]


@attrs.frozen
class ImageSummary:
    row: ImageRow
    size: int
    created: str
    labels: Mapping[str, str]
    containers: int


@attrs.frozen
class RemoveResult:
    untagged: tuple[str, ...]
    deleted: tuple[str, ...]


@attrs.frozen
class HistoryItem:
    id: str
    created: str
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    tags: tuple[str, ...]


@attrs.frozen
class LoadResult:
    loaded: tuple[str, ...]
    image_ids: tuple[str, ...]


def reference_matches(name: str, pattern: str) -> bool:
    """
    Whether the stored name C{name} matches docker's reference filter
    C{pattern} (a glob on any of its familiar or full forms).
    """
    ref = parse_normalized(name)
    shown = [ref.familiar(), ref.familiar_name, str(ref), ref.name]
    return any(fnmatch.fnmatchcase(x, pattern) for x in shown)


def _now_ns() -> int:
    return time.time_ns()


def _created_now() -> str:
    """RFC 3339 with nanoseconds, as docker writes "created" in configs."""
    now = time.time_ns()
    seconds, nanos = divmod(now, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%09dZ" % nanos


def _display(name: str) -> str:
    """Familiar form of a stored name, for messages and output."""
    try:
        return parse_normalized(name).familiar()
    except ReferenceError:
        return name


def _reader_guard(stream: Readable) -> Guard:
    """
    The guard of an operation reading C{stream}: cancelling it makes a
    thread waiting for the client's next bytes give up at once.
    """
    if isinstance(stream, Inflow):
        return Guard(lambda: stream.abort(CancelledError("the client went away")))
    return Guard()


class _LayerSink:
    """
    Where a commit's layer is written (C{write} from the thread producing
    the diff): the content-store ingest, until the commit is cancelled;
    then the next write fails, so the thread stops early.
    """

    def __init__(self) -> None:
        self.writer: Writer | None = None
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True

    def write(self, data: bytes | memoryview) -> None:
        if self.cancelled or self.writer is None:
            raise CancelledError("the commit was cancelled")
        self.writer.write(data)


@implementer(IImageStore)
class ImageStore:
    """
    Image records (C{<root>/images/images.db}), the content store under
    them and the snapshotter their layers unpack into.

    @param snapshotter: an L{ross.interfaces.ISnapshotter} that is also
        the L{ross.interfaces.IApplier} of its snapshots (the overlay
        snapshotter).
    @param events: the engine's event bus.
    @param in_use: the container manager's answer to "which containers
        use which image"; None means none do.
    @ivar intermediates: the builder's answer to "which images are steps
        other build steps start from" (docker's intermediate images):
        listings leave them out unless asked for all, and pruning
        dangling images spares them. None means none are.
    """

    _log = Logger()

    def __init__(
        self,
        reactor: Any,
        root: Any,
        content: ContentStore,
        snapshotter: ISnapshotter,
        events: Any,
        in_use: InUseProvider | None = None,
        platform: Platform | None = None,
    ) -> None:
        self.reactor = reactor
        self._root = root
        self.content = content
        self.snapshotter = snapshotter
        self._events = events
        self.in_use = in_use
        self.intermediates: Callable[[], set[str]] | None = None
        self.platform = platform or m.host_platform()
        self._db: ImageDB | None = None
        self._chain_locks: dict[str, DeferredLock] = {}
        self._configs: dict[str, tuple[m.Config, bytes]] = {}
        self.count = 0

    # ---------------------------------------------------------------- life

    def _run(self, fn: Callable[..., _T], *args: Any) -> Deferred[_T]:
        return deferToThreadPool(self.reactor, self.reactor.getThreadPool(), fn, *args)

    @property
    def db(self) -> ImageDB:
        if self._db is None:
            raise FailedPrecondition("the image store is not started")
        return self._db

    def start(self) -> Deferred[None]:
        """
        Open the records (the snapshotter must be started), then undo what
        a crash interrupted: unfinished extractions, layer snapshots and
        blobs no image records.
        """
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        def open_() -> int:
            private_dir(self._root)
            self.content.blobs.open()
            self._db = ImageDB(self._root / "images.db")
            return self._db.count()

        self.count = await self._run(open_)
        await self._remove_orphans()
        # Blobs a crashed load committed but never recorded.
        await self.collect()

    async def _remove_orphans(self) -> None:
        infos = [i for i in await self.snapshotter.list() if UNPACK_LABEL in i.labels]
        for info in infos:
            if info.kind.value != "committed":
                await self._remove_quietly(info.name)
        committed = {i.name: i.parent for i in infos if i.kind.value == "committed"}
        parents = set(committed.values())
        # Top-down: a chain is removable once nothing builds on it.
        leaves = [name for name in committed if name not in parents]
        while leaves:
            name = leaves.pop()
            if await self._run(self.db.chain_in_use, name) or not await self._remove_quietly(name):
                continue
            self._log.info("removed layer snapshot {chain} no image records", chain=name)
            parent = committed.pop(name)
            if parent in committed and parent not in committed.values():
                leaves.append(parent)

    async def _remove_quietly(self, key: str) -> bool:
        try:
            await self.snapshotter.remove(key)
        except (NotFound, FailedPrecondition):
            return False
        return True

    def stop(self) -> Deferred[None]:
        db, self._db = self._db, None
        if db is None:
            return succeed(None)
        return self._run(db.close)

    async def _refresh_count(self) -> None:
        self.count = await self._run(self.db.count)

    def _users(self) -> Mapping[str, Sequence[ImageUser]]:
        return self.in_use() if self.in_use is not None else {}

    # ---------------------------------------------------------------- lookup

    def _lookup(self, name: str) -> tuple[List[ImageRow], str]:
        """
        Blocking: the images C{name} designates (several when an ID names
        images that share a config) and the reference matched ("" for IDs).
        """
        db = self.db
        if is_image_id(name):
            digest = name if name.startswith("sha256:") else "sha256:" + name
            rows = db.by_config_prefix(digest)
            if not rows:
                row = db.by_target(digest)
                rows = [row] if row else []
            if rows:
                return rows, ""
            raise NotFound(f"No such image: {name}")
        ref: Reference | None = None
        try:
            ref = parse_normalized(name)
        except ReferenceError:
            if not is_id_prefix(name):
                raise
        if ref is not None:
            if ref.digest:
                row = db.by_name(str(ref)) or db.by_repo_digest(ref.name, ref.digest)
            else:
                row = db.by_name(str(ref.with_default_tag()))
            if row is not None:
                return [row], str(ref.with_default_tag()) if not ref.digest else str(ref)
        if is_id_prefix(name):
            prefix = name if name.startswith("sha256:") else "sha256:" + name
            rows = db.by_config_prefix(prefix)
            if len({r.config for r in rows}) > 1:
                raise InvalidArgument(f"ambiguous image ID prefix {name}: it matches {len({r.config for r in rows})} images")
            if rows:
                return rows, ""
        shown = ref.with_default_tag().familiar() if ref is not None and not ref.digest else name
        raise NotFound(f"No such image: {shown}")

    def _config(self, digest: str) -> tuple[m.Config, bytes]:
        cached = self._configs.get(digest)
        if cached is None:
            raw = self.content.blobs.read_bytes(digest)
            cached = (m.parse_config(raw), raw)
            self._configs[digest] = cached
        return cached

    def _image(self, row: ImageRow, name: str) -> Image:
        blobs = self.content.blobs
        manifest_json = blobs.read_bytes(row.manifest)
        media_type = m.sniff_media_type(manifest_json)
        manifest = m.parse_manifest(manifest_json, media_type)
        config, config_json = self._config(manifest.config.digest)
        return Image(
            id=row.config,
            name=name,
            names=row.names,
            target=row.target,
            manifest=Descriptor(media_type, row.manifest, len(manifest_json)),
            config=config,
            config_json=config_json,
            manifest_json=manifest_json,
            layers=manifest.layers,
            chain_ids=tuple(m.chain_ids(config.diff_ids)),
            created_ns=row.created_ns,
            size=self.db.image_size(row.target.digest),
        )

    def _resolve(self, name: str) -> Image:
        rows, matched = self._lookup(name)
        return self._image(rows[0], matched)

    def resolve(self, name: str) -> Deferred[Image]:
        """
        The image C{name} designates: a reference ("busybox" is
        docker.io/library/busybox:latest; "repo@sha256:..." by manifest
        digest), a full image ID or a unique ID prefix. NotFound ("No such
        image: busybox:latest"), InvalidArgument for a malformed reference.
        """
        return self._run(self._resolve, name)


    def ensure_unpacked(self, image: Image) -> Deferred[str]:
        """
        Unpack C{image}'s layers that are not yet (each extracted once,
        concurrent callers wait for each other); fires with the chain ID
        of the top layer, the parent for a container's snapshot.
        """
        return Deferred.fromCoroutine(self._unpack(image.layers, image.config.diff_ids, None))


    # ---------------------------------------------------------------- unpack

    async def _unpack(self, layers: Sequence[Descriptor], diff_ids: Sequence[str], created: List[str] | None) -> str:
        chains = m.chain_ids(diff_ids)
        parent = ""
        for layer, diff_id, chain in zip(layers, diff_ids, chains):
            lock = self._chain_locks.setdefault(chain, DeferredLock())
            await lock.acquire()
            try:
                if not await self._snapshot_exists(chain):
                    await self._apply(layer, diff_id, chain, parent)
                    if created is not None:
                        created.append(chain)
                elif (await self._run(self.db.layer, layer.digest)) is None:
                    # Extracted from another blob with the same content: this
                    # blob's diff ID still has to be checked before it is trusted.
                    actual, size = await self._run(compression.diff_of, str(self.content.blobs.path(layer.digest)))
                    if actual != diff_id:
                        raise DataLoss(f"layer {layer.digest} does not match its diff ID: expected {diff_id}, got {actual}")
                    await self._run(self.db.record_layer, layer.digest, diff_id, size)
            finally:
                lock.release()
                if not lock.locked and not lock.waiting:
                    self._chain_locks.pop(chain, None)
            parent = chain
        return parent

    async def _snapshot_exists(self, key: str) -> bool:
        try:
            await self.snapshotter.stat(key)
        except NotFound:
            return False
        return True

    async def _apply(self, layer: Descriptor, diff_id: str, chain: str, parent: str) -> None:
        key = f"extract-{secrets.token_hex(6)}-{chain}"
        path = self.content.blobs.path(layer.digest)
        await self.snapshotter.prepare(key, parent, {UNPACK_LABEL: diff_id})
        try:
            result = await IApplier(self.snapshotter).apply_layer(key, str(path))
            if result.diff_id != diff_id:
                raise DataLoss(
                    f"layer {layer.digest} does not match its diff ID: expected {diff_id}, got {result.diff_id}"
                )
            await self._run(self.db.record_layer, layer.digest, diff_id, result.size)
            try:
                await self.snapshotter.commit(chain, key, {UNPACK_LABEL: diff_id})
            except AlreadyExists:
                await self.snapshotter.remove(key)
        except BaseException:
            try:
                await self.snapshotter.remove(key)
            except Exception:
                self._log.failure("could not remove snapshot {key} after a failed unpack", key=key)
            raise

    async def _undo(self, lease: Lease | None, created: Sequence[str]) -> None:
        for chain in reversed(created):
            try:
                await self.snapshotter.remove(chain)
            except Exception:
                self._log.failure("could not remove snapshot {chain} while undoing", chain=chain)
        if lease is not None:
            await self._run(self.content.blobs.rollback, lease, self.db.referenced_blobs)

    # ---------------------------------------------------------------- load

    def load(self, stream: Inflow | IO[bytes]) -> Deferred[LoadResult]:
        """
        Load every image of a docker-save archive or an OCI layout tar read
        from C{stream} (in a thread of its own: the stream may block), then
        unpack and record them. Nothing changes when any part is wrong, nor
        when the load is cancelled before its images are recorded (the
        Deferred fires once everything is undone).
        """
        guard = _reader_guard(stream)
        return guard.run(self._load(stream, guard))

    async def _load(self, stream: Inflow | IO[bytes], guard: Guard) -> LoadResult:
        blobs = self.content.blobs

        def stage() -> Any:
            try:
                return read_archive(stream, blobs)  # type: ignore[arg-type]
            finally:
                if isinstance(stream, Inflow):
                    stream.reader_done()

        staged = await in_thread(self.reactor, stage, name="ross-load")
        # Leases take the content store's GC lock, which threads hold over
        # disk work: never take it on the reactor.
        lease = await self._run(blobs.lease)
        created: List[str] = []
        try:
            guard.check()
            load_plan: LoadPlan = await self._run(self._plan_and_commit, staged, lease)
            for image in load_plan.images:
                guard.check()
                await self._unpack(image.layers, image.config.diff_ids, created)
            guard.check()
            moved = await self._run(self._record, load_plan.images)
        except BaseException:
            await self._undo(lease, created)
            raise
        finally:
            await self._run(staged.discard)
        await self._run(lease.release)
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
        await self._after_moves(moved)
        await self._refresh_count()
        return LoadResult(tuple(loaded), tuple(ids))

    def _plan_and_commit(self, staged: Any, lease: Lease) -> LoadPlan:
        load_plan = plan(staged, self.platform, self.db.layer)
        blobs = self.content.blobs
        for digest, member in load_plan.stage.items():
            member.writer.commit(lease)
        for digest, data in load_plan.generated.items():
            blobs.write_bytes(data, digest, lease)
        for digest, (diff_id, size) in load_plan.layer_facts.items():
            self.db.record_layer(digest, diff_id, size)
        return load_plan

    def _record(self, images: Sequence[PlannedImage]) -> List[tuple[str, str | None]]:
        moved: List[tuple[str, str | None]] = []
        for image in images:
            new = NewImage(
                target=image.target,
                manifest=image.manifest.digest,
                config=image.config_digest,
                blobs=image.all_blobs,
                chains=tuple(m.chain_ids(image.config.diff_ids)),
            )
            moved += self.db.add(new, [str(ref) for ref in image.names], _now_ns())
        return moved

    async def _after_moves(self, moved: Sequence[tuple[str, str | None]]) -> None:
        """
        A name that moved to another image untags the old one, as docker
        says; the old image stays (dangling) until pruned.
        """
        for name, previous in moved:
            if previous is None:
                continue
            row = await self._run(self.db.by_target, previous)
            if row is not None and row.target.digest != previous:
                continue
            self._events.publish("image", "untag", row.config if row else previous, name=name)

    # ---------------------------------------------------------------- registry

    def lease(self) -> Deferred[Lease]:
        """
        A new content-store lease (taken in a thread: it shares the
        collection lock with threads doing disk work).
        """
        return self._run(self.content.blobs.lease)

    def unpack_layers(self, layers: Sequence[Descriptor], diff_ids: Sequence[str], created: List[str]) -> Deferred[str]:
        """
        Unpack the chain of C{layers} (base first, their blobs committed)
        where it is not yet, appending the snapshots it creates to
        C{created} (for L{undo}); fires with the top chain ID.
        """
        return Deferred.fromCoroutine(self._unpack(layers, diff_ids, created))

    def undo(self, lease: Lease, created: Sequence[str]) -> Deferred[None]:
        """
        Undo a failed addition: remove the snapshots in C{created} and the
        blobs C{lease} created that nothing refers to, releasing it.
        """
        return Deferred.fromCoroutine(self._undo(lease, created))

    def record(self, new: NewImage, names: Sequence[str], lease: Lease, action: str) -> Deferred[None]:
        """
        Record C{new} (blobs committed under C{lease}, layers unpacked) and
        point C{names} (normalised references) at it in one transaction,
        release C{lease} and publish C{action} ("pull") for each name.
        """
        async def record() -> None:
            moved = await self._run(self.db.add, new, list(names), _now_ns())
            await self._run(lease.release)
            for name in names:
                self._events.publish("image", action, new.config, name=name)
            await self._after_moves(moved)
            await self._refresh_count()

        return Deferred.fromCoroutine(record())

    def target_of(self, name: str) -> Deferred[str | None]:
        """
        Digest of the manifest or index the normalised reference C{name}
        points at, None when no image has that name.
        """
        def target() -> str | None:
            row = self.db.by_name(name)
            return row.target.digest if row is not None else None

        return self._run(target)

    def names_referencing(self, blob: str) -> Deferred[List[str]]:
        """Names of the images referencing C{blob}."""
        return self._run(self.db.names_referencing, blob)

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

    async def _import(self, stream: Readable, ref: Reference | None, changes: Any, message: str,
                      guard: Guard) -> str:
        lease = await self._run(self.content.blobs.lease)
        created: List[str] = []
        try:
            layer, config_digest, manifest = await in_thread(
                self.reactor, self._import_blobs, stream, lease, changes, message, name="ross-import")
            guard.check()
            config, _ = await self._run(self._config, config_digest)
            await self._unpack([layer], config.diff_ids, created)
            guard.check()
            new = NewImage(
                target=manifest,
                manifest=manifest.digest,
                config=config_digest,
                blobs=frozenset({manifest.digest, config_digest, layer.digest}),
                chains=tuple(m.chain_ids(config.diff_ids)),
            )
            names = [str(ref)] if ref else []
            moved = await self._run(self.db.add, new, names, _now_ns())
        except BaseException:
            await self._undo(lease, created)
            raise
        await self._run(lease.release)
        self._events.publish("image", "import", config_digest, **({"name": str(ref)} if ref else {}))
        await self._after_moves(moved)
        await self._refresh_count()
        return config_digest

    def _import_blobs(self, stream: Readable, lease: Lease, changes: Any,
                      message: str) -> tuple[Descriptor, str, Descriptor]:
        """
        Blocking: read the tarball from C{stream} into the layer blob (its
        ingest dropped on any failure), then write the config and manifest,
        every blob under C{lease}.
        """
        blobs = self.content.blobs
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
        self.db.record_layer(layer_info.digest, diff_id, tarball.size)
        layer = Descriptor(m.OCI_LAYER + compression.media_suffix(tarball.compression), layer_info.digest,
                           layer_info.size)
        created = _created_now()
        config_doc: dict[str, Any] = {
            "architecture": self.platform.architecture,
            "os": self.platform.os,
        }
        if self.platform.variant:
            config_doc["variant"] = self.platform.variant
        config_doc.update({
            "config": apply_changes({}, changes),
            "created": created,
            "comment": message,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": created, "comment": message}],
        })
        config_bytes = m.canonical_json(config_doc)
        config_info = blobs.write_bytes(config_bytes, None, lease)
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": m.OCI_MANIFEST,
            "config": {"mediaType": m.OCI_CONFIG, "digest": config_info.digest, "size": config_info.size},
            "layers": [{"mediaType": layer.media_type, "digest": layer.digest, "size": layer.size}],
        }
        manifest_bytes = m.canonical_json(manifest_doc)
        manifest_info = blobs.write_bytes(manifest_bytes, None, lease)
        return layer, config_info.digest, Descriptor(m.OCI_MANIFEST, manifest_info.digest, manifest_info.size)

    # ---------------------------------------------------------------- commit

    def commit(
        self,
        base: Image,
        write_layer: Callable[[Any], Deferred[DiffResult]],
        config: Mapping[str, Any],
        container_id: str,
        created_by: str = "",
        comment: str = "",
        author: str = "",
        changes: Sequence[str] = (),
        reference: str = "",
    ) -> Deferred[str]:
        """
        docker commit's image half: a new image of C{base}'s layers plus the
        layer C{write_layer(sink)} writes (a container's changes: it calls
        C{sink.write(bytes)} from one thread and fires with the
        L{DiffResult}); fires with the new image's ID.

        Its config is C{base}'s platform with C{config} (the OCI "config"
        object: the container's Cmd, Env, ...) after C{changes} (Dockerfile
        instructions, as --change), one more history entry (C{created_by},
        C{comment}, C{author}) and C{container_id}; its manifest is an OCI
        manifest of C{base}'s layer descriptors as they are plus the new
        one. Named C{reference} (docker's repo:tag) when given, else
        dangling.

        A bad C{reference} or change is InvalidArgument before
        C{write_layer} is called. Any failure, or a cancellation before the
        image is recorded, leaves no blob, snapshot or record behind; the
        Deferred fires once that is undone.
        """
        try:
            ref = parse_tag(reference) if reference else None
            image_config = apply_changes(dict(config), parse_changes(changes))
        except InvalidArgument as e:
            return fail(e)
        sink = _LayerSink()
        guard = Guard(sink.cancel)

        async def commit() -> str:
            blobs = self.content.blobs
            lease = await self._run(blobs.lease)
            created: List[str] = []
            try:
                writer = sink.writer = await self._run(blobs.writer)
                try:
                    guard.check()
                    diff = await write_layer(sink)
                    guard.check()
                    info = await self._run(writer.commit, lease)
                except BaseException:
                    await self._run(writer.abort)
                    raise
                if info.digest != diff.digest:
                    raise DataLoss(f"the committed layer {info.digest} is not the diff written ({diff.digest})")
                layer = Descriptor(diff.media_type, diff.digest, diff.size)
                diff_ids = base.config.diff_ids + (diff.diff_id,)
                await self._unpack(base.layers + (layer,), diff_ids, created)
                guard.check()
                config_digest, manifest = await self._run(
                    self._commit_blobs, base, layer, diff_ids, image_config, container_id, created_by,
                    comment, author, lease)
                new = NewImage(
                    target=manifest,
                    manifest=manifest.digest,
                    config=config_digest,
                    blobs=frozenset({manifest.digest, config_digest, *(l.digest for l in base.layers), layer.digest}),
                    chains=tuple(m.chain_ids(diff_ids)),
                )
                moved = await self._run(self.db.add, new, [str(ref)] if ref else [], _now_ns())
            except BaseException:
                await self._undo(lease, created)
                raise
            await self._run(lease.release)
            self._events.publish("image", "commit", config_digest, **({"name": str(ref)} if ref else {}))
            await self._after_moves(moved)
            await self._refresh_count()
            return config_digest

        return guard.run(commit())

    def _commit_blobs(self, base: Image, layer: Descriptor, diff_ids: Sequence[str], config: Mapping[str, Any],
                      container_id: str, created_by: str, comment: str, author: str,
                      lease: Lease) -> tuple[str, Descriptor]:
        """
        Blocking: write a committed image's config and manifest under
        C{lease}; their digests.
        """
        raw = base.config.raw
        created = _created_now()
        doc: dict[str, Any] = {
            "architecture": raw.get("architecture") or self.platform.architecture,
            "os": raw.get("os") or self.platform.os,
        }
        for key in ("os.version", "os.features", "variant"):
            if raw.get(key):
                doc[key] = raw[key]
        if author:
            doc["author"] = author
        if comment:
            doc["comment"] = comment
        step: dict[str, Any] = {"created": created, "created_by": created_by}
        if author:
            step["author"] = author
        if comment:
            step["comment"] = comment
        history = raw.get("history")
        doc.update({
            "config": dict(config),
            "container": container_id,
            "created": created,
            "history": (list(history) if isinstance(history, list) else []) + [step],
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        })
        blobs = self.content.blobs
        config_bytes = m.canonical_json(doc)
        # Checked as any config Ross reads would be (changes can make odd ones).
        m.parse_config(config_bytes)
        config_info = blobs.write_bytes(config_bytes, None, lease)
        base_manifest = json.loads(base.manifest_json)
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": m.OCI_MANIFEST,
            "config": {"mediaType": m.OCI_CONFIG, "digest": config_info.digest, "size": config_info.size},
            "layers": list(base_manifest.get("layers") or []) + [m.descriptor_json(layer)],
        }
        manifest_bytes = m.canonical_json(manifest_doc)
        manifest_info = blobs.write_bytes(manifest_bytes, None, lease)
        return config_info.digest, Descriptor(m.OCI_MANIFEST, manifest_info.digest, manifest_info.size)

    # ---------------------------------------------------------------- list

    def list(self, all: bool = False, filters: Sequence[tuple[str, str]] = ()) -> Deferred[List[ImageSummary]]:
        """
        Every image, newest first, matching every filter (dangling=true|false,
        label=KEY or KEY=VALUE, reference=PATTERN, before=IMAGE, since=IMAGE).
        """
        users = self._users()
        hidden = set() if all else self._intermediates()
        return self._run(self._list, filters, users, hidden)

    def _intermediates(self) -> set[str]:
        return self.intermediates() if self.intermediates is not None else set()

    def _list(self, filters: Sequence[tuple[str, str]], users: Mapping[str, Sequence[ImageUser]],
              hidden: set[str]) -> List[ImageSummary]:
        summaries = self._summaries([self._filter(key, value) for key, value in filters], users)
        return [s for s in summaries if s.row.names or s.row.config not in hidden]

    def _summaries(self, checks: Sequence[Callable[[ImageSummary], bool]],
                   users: Mapping[str, Sequence[ImageUser]]) -> List[ImageSummary]:
        out = []
        for row in self.db.images():
            try:
                config, _ = self._config(row.config)
            except (NotFound, DataLoss, InvalidArgument):
                self._log.warn("image {digest} has an unreadable config {config}", digest=row.target.digest,
                               config=row.config)
                continue
            summary = ImageSummary(
                row=row,
                size=self.db.image_size(row.target.digest),
                created=config.created,
                labels=config.config.labels,
                containers=len(users.get(row.config, ())),
            )
            if all(check(summary) for check in checks):
                out.append(summary)
        return out

    def _filter(self, key: str, value: str) -> Callable[[ImageSummary], bool]:
        if key == "dangling":
            if value not in ("true", "false", "1", "0"):
                raise InvalidArgument(f"invalid filter 'dangling={value}': use true or false")
            want = value in ("true", "1")
            return lambda s: (not s.row.names) == want
        if key == "label":
            k, eq, v = value.partition("=")
            return lambda s: k in s.labels and (not eq or s.labels[k] == v)
        if key == "reference":
            return lambda s: any(reference_matches(name, value) for name in s.row.names)
        if key in ("before", "since"):
            rows, _ = self._lookup(value)
            pivot = rows[0].created_ns
            if key == "before":
                return lambda s: s.row.created_ns < pivot
            return lambda s: s.row.created_ns > pivot
        raise InvalidArgument(f"invalid filter '{key}'")

    # ---------------------------------------------------------------- tag

    def tag(self, source: str, target: str) -> Deferred[None]:
        """
        Point reference C{target} at the image C{source} designates.
        """
        try:
            ref = parse_tag(target)
        except InvalidArgument as e:
            return fail(InvalidArgument(f"Error parsing reference: {target!r} is not a valid repository/tag: {e}"))
        return Deferred.fromCoroutine(self._tag(source, ref))

    async def _tag(self, source: str, ref: Reference) -> None:
        def tag() -> tuple[ImageRow, str | None]:
            rows, _ = self._lookup(source)
            return rows[0], self.db.tag(str(ref), rows[0].target.digest, _now_ns())

        row, previous = await self._run(tag)
        if previous is not None and previous != row.target.digest:
            await self._after_moves([(str(ref), previous)])
        self._events.publish("image", "tag", row.config, name=str(ref))

    # ---------------------------------------------------------------- remove

    def remove(self, name: str, force: bool = False, prune: bool = True) -> Deferred[RemoveResult]:
        """
        docker's rmi: a reference is untagged, and the image deleted when
        that was its last name; an ID deletes the image (every name with
        C{force} when it has several). FailedPrecondition while containers
        use it (unless C{force}, and never for a running one).
        """
        return Deferred.fromCoroutine(self._remove(name, force, prune))

    async def _remove(self, name: str, force: bool, prune: bool) -> RemoveResult:
        users = self._users()
        rows, matched = await self._run(self._lookup, name)
        image_id = rows[0].config
        short = image_id[len("sha256:"):][:12]
        using = list(users.get(image_id, ()))
        untagged: List[str] = []
        if matched:
            row = rows[0]
            if len(row.names) == 1 and using and not force:
                raise FailedPrecondition(
                    f"conflict: unable to remove repository reference \"{_display(matched)}\" (must force) - "
                    f"container {using[0].container_id[:12]} is using its referenced image {short}"
                )
            await self._run(self.db.untag, matched)
            untagged.append(_untag_line(matched))
            self._events.publish("image", "untag", image_id, name=matched)
            if len(row.names) > 1 or not prune or using:
                # Other names remain, or containers still need the image:
                # it stays (untagged, for the containers' sake).
                return RemoveResult(tuple(untagged), ())
        else:
            names = sorted({n for r in rows for n in r.names})
            repos = {parse_normalized(n).name for n in names}
            if len(repos) > 1 and not force:
                raise FailedPrecondition(
                    f"conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
                )
            running = [u for u in using if u.running]
            if running:
                raise FailedPrecondition(
                    f"conflict: unable to delete {short} (cannot be forced) - "
                    f"image is being used by running container {running[0].container_id[:12]}"
                )
            if using and not force:
                raise FailedPrecondition(
                    f"conflict: unable to delete {short} (must be forced) - "
                    f"image is being used by stopped container {using[0].container_id[:12]}"
                )
        if not matched:
            # An ID names every stored image with that config.
            rows, _ = await self._run(self._lookup, image_id)
        else:
            rows = [r for r in [await self._run(self.db.by_target, rows[0].target.digest)] if r is not None]
        for row in rows:
            for n in row.names:
                await self._run(self.db.untag, n)
                untagged.append(_untag_line(n))
                self._events.publish("image", "untag", image_id, name=n)
        if using:
            return RemoveResult(tuple(untagged), ())
        deleted: List[str] = []
        for row in rows:
            chains = await self._run(self.db.chains_of, row.target.digest)
            removed = await self._run(self.db.delete, row.target.digest, ())
            if not removed:
                raise FailedPrecondition(f"conflict: image {short} was tagged while it was being removed")
            deleted += await self._remove_chains(chains)
        deleted.insert(0, f"Deleted: {image_id}")
        self._events.publish("image", "delete", image_id)
        await self.collect()
        await self._refresh_count()
        return RemoveResult(tuple(untagged), tuple(deleted))

    async def _remove_chains(self, chains: Sequence[str]) -> List[str]:
        """
        Remove the snapshots of C{chains} (top first) no remaining image
        needs; stop at the first one a container or another chain builds on.
        """
        deleted = []
        for chain in reversed(chains):
            if await self._run(self.db.chain_in_use, chain):
                break
            try:
                await self.snapshotter.remove(chain)
            except NotFound:
                continue
            except FailedPrecondition:
                break
            deleted.append(f"Deleted: {chain}")
        return deleted

    def collect(self) -> Deferred[List[Any]]:
        """
        Remove every blob no image refers to (leases excepted).
        """
        def collect() -> List[Any]:
            removed = self.content.blobs.collect(self.db.referenced_blobs)
            if removed:
                self.db.forget_layers({b.digest for b in self.content.blobs.list()})
            return removed

        return self._run(collect)

    # ---------------------------------------------------------------- prune

    def prune(self, all: bool = False, filters: Sequence[tuple[str, str]] = ()) -> Deferred[tuple[List[str], int]]:
        """
        Remove dangling images (every image no container uses, with
        C{all}) and unreferenced content; fires with the lines docker
        prints ("untagged: ...", "deleted: ...") and the bytes reclaimed.

        C{filters} are docker's for image prune: dangling=true|false (false
        is C{all}), label=KEY[=VALUE], label!=KEY[=VALUE] and until=TIME
        (RFC 3339, Unix seconds or a duration like 10m: only images created
        before it). Any other filter, or a bad value, is InvalidArgument
        and nothing is removed.
        """
        try:
            all_, checks = self._prune_filters(all, filters)
        except InvalidArgument as e:
            return fail(e)
        return Deferred.fromCoroutine(self._prune(all_, checks))

    def _prune_filters(self, all_: bool, filters: Sequence[tuple[str, str]]
                       ) -> tuple[bool, List[Callable[[ImageSummary], bool]]]:
        checks: List[Callable[[ImageSummary], bool]] = []
        excluded: List[Callable[[ImageSummary], bool]] = []
        until: float | None = None
        dangling: set[bool] = set()
        for key, value in filters:
            if key == "dangling":
                if value.lower() not in ("true", "false", "1", "0"):
                    raise InvalidArgument(f"invalid filter 'dangling={value}': use true or false")
                dangling.add(value.lower() in ("true", "1"))
            elif key == "label":
                checks.append(self._filter(key, value))
            elif key == "label!":
                excluded.append(self._filter("label", value))
            elif key == "until":
                if until is not None:
                    raise InvalidArgument("more than one until filter specified")
                until = parse_time(value)
            else:
                raise InvalidArgument(f"invalid filter '{key}'")
        if len(dangling) > 1 or (all_ and True in dangling):
            raise InvalidArgument("conflicting prune filters: dangling=true and dangling=false (or --all)")
        if dangling:
            all_ = False in dangling
        if excluded:
            # As docker: an image is kept when it matches every label! filter.
            checks.append(lambda s: not all(match(s) for match in excluded))
        if until is not None:
            limit = until
            checks.append(lambda s: _created_before(s.created, limit))
        return all_, checks

    async def _prune(self, all_: bool, checks: Sequence[Callable[[ImageSummary], bool]]) -> tuple[List[str], int]:
        users = self._users()
        intermediates = self._intermediates()
        before = sum(b.size for b in await self.content.list())
        summaries = await self._run(self._summaries, checks, users)
        lines: List[str] = []
        for s in summaries:
            if users.get(s.row.config):
                continue
            if s.row.names and not all_:
                continue
            if not all_ and s.row.config in intermediates:
                continue
            for n in s.row.names:
                lines.append(f"untagged: {_display(n)}")
                self._events.publish("image", "untag", s.row.config, name=n)
            chains = await self._run(self.db.chains_of, s.row.target.digest)
            if not await self._run(self.db.delete, s.row.target.digest, s.row.names):
                continue
            lines.append(f"deleted: {s.row.config}")
            lines += [line.lower() for line in await self._remove_chains(chains)]
            self._events.publish("image", "delete", s.row.config)
        await self.collect()
        after = sum(b.size for b in await self.content.list())
        await self._refresh_count()
        return lines, max(0, before - after)

    # ---------------------------------------------------------------- history

    def history(self, name: str) -> Deferred[List[HistoryItem]]:
        """
        The config's history, newest first, with each step's layer size.
        """
        def history() -> List[HistoryItem]:
            image = self._resolve(name)
            sizes = []
            for layer in image.layers:
                facts = self.db.layer(layer.digest)
                sizes.append(facts[1] if facts else layer.size)
            steps = list(image.config.history)
            if not steps:
                steps = [m.History(image.config.created, "", "", False)] * max(1, len(image.layers))
            items = []
            layer_index = 0
            for step in steps:
                size = 0
                if not step.empty_layer and layer_index < len(sizes):
                    size = sizes[layer_index]
                    layer_index += 1
                items.append((step, size))
            out = []
            for i, (step, size) in enumerate(reversed(items)):
                out.append(HistoryItem(
                    id=image.id if i == 0 else "<missing>",
                    created=step.created,
                    created_by=step.created_by,
                    size=size,
                    comment=step.comment,
                    empty_layer=step.empty_layer,
                    tags=tuple(_display(n) for n in image.names) if i == 0 else (),
                ))
            return out

        return self._run(history)

    # ---------------------------------------------------------------- save

    def save(self, names: Sequence[str], format: str = "docker-archive") -> Deferred[tuple[int, Outflow]]:
        """
        Start writing C{names} as a docker-archive (or "oci-archive") tar:
        fires with its exact size and an L{Outflow} of ~1 MiB chunks the
        caller drains (cancel it to stop the writer).
        """
        if format not in ("docker-archive", "oci-archive", "oci", "docker"):
            return fail(InvalidArgument(f"unknown archive format {format!r}: use docker-archive or oci-archive"))
        if not names:
            return fail(InvalidArgument("save needs at least one image"))
        return Deferred.fromCoroutine(self._save(names, "oci" if format.startswith("oci") else "docker"))

    async def _save(self, names: Sequence[str], format: str) -> tuple[int, Outflow]:
        members = await self._run(self._save_plan, names, format)
        total = archive_size(members)
        out = Outflow(self.reactor)
        blobs = self.content.blobs

        def write() -> None:
            try:
                write_archive(members, blobs, out.put)
            except BaseException:
                out.fail(Failure())
                return
            out.finish()

        threading.Thread(target=write, name="ross-save", daemon=True).start()
        return total, out

    def _save_plan(self, names: Sequence[str], format: str) -> List[OutMember]:
        chosen: List[tuple[Image, str]] = []
        for name in names:
            rows, matched = self._lookup(name)
            image = self._image(rows[0], matched)
            chosen.append((image, matched if matched and "@" not in matched else ""))
        if format == "oci":
            return self._oci_members(chosen)
        return self._docker_members(chosen)

    def _docker_members(self, chosen: Sequence[tuple[Image, str]]) -> List[OutMember]:
        members: List[OutMember] = []
        written: set[str] = set()
        entries: List[dict[str, Any]] = []
        by_config: dict[str, dict[str, Any]] = {}
        for image, name in chosen:
            tag = _display(name) if name else None
            if image.id in by_config:
                if tag and tag not in by_config[image.id]["RepoTags"]:
                    by_config[image.id]["RepoTags"].append(tag)
                continue
            config_name = image.id[len("sha256:"):] + ".json"
            members.append(OutMember(config_name, len(image.config_json), Source(data=image.config_json)))
            layer_names = []
            for layer, diff_id in zip(image.layers, image.config.diff_ids):
                layer_name = diff_id[len("sha256:"):] + ".tar"
                layer_names.append(layer_name)
                if layer_name in written:
                    continue
                written.add(layer_name)
                facts = self.db.layer(layer.digest)
                kind = compression.detect_file(str(self.content.blobs.path(layer.digest)))
                if facts is None or facts[0] != diff_id:
                    actual, size = compression.diff_of(str(self.content.blobs.path(layer.digest)))
                    if actual != diff_id:
                        raise DataLoss(f"layer {layer.digest} does not match its diff ID {diff_id}")
                    self.db.record_layer(layer.digest, diff_id, size)
                else:
                    size = facts[1]
                members.append(OutMember(layer_name, size, Source(digest=layer.digest, decompress=kind)))
            entry = {"Config": config_name, "RepoTags": [tag] if tag else [], "Layers": layer_names}
            by_config[image.id] = entry
            entries.append(entry)
        repositories: dict[str, dict[str, str]] = {}
        for entry in entries:
            for tag in entry["RepoTags"]:
                repo, _, t = tag.rpartition(":")
                top = entry["Layers"][-1][:-len(".tar")] if entry["Layers"] else ""
                repositories.setdefault(repo, {})[t] = top
        manifest_json = m.canonical_json([
            {"Config": e["Config"], "RepoTags": e["RepoTags"] or None, "Layers": e["Layers"]} for e in entries
        ])
        members.append(OutMember("manifest.json", len(manifest_json), Source(data=manifest_json)))
        if repositories:
            repo_json = m.canonical_json(repositories)
            members.append(OutMember("repositories", len(repo_json), Source(data=repo_json)))
        return members

    def _oci_members(self, chosen: Sequence[tuple[Image, str]]) -> List[OutMember]:
        blobs = self.content.blobs
        members: List[OutMember] = []
        written: set[str] = set()

        def add_blob(digest: str) -> None:
            if digest in written:
                return
            written.add(digest)
            members.append(OutMember("blobs/sha256/" + digest[len("sha256:"):], blobs.info(digest).size,
                                     Source(digest=digest)))

        index_entries = []
        for image, name in chosen:
            target = image.target
            if target.media_type in (m.DOCKER_MANIFEST, m.DOCKER_LIST):
                # OCI readers (skopeo) only take OCI media types from an
                # index: the host's manifest goes out as an OCI manifest
                # over the same config and layer blobs (same image ID).
                converted = m.to_oci_manifest(image.manifest_json)
                target = Descriptor(m.OCI_MANIFEST, digest_of(converted), len(converted))
                if target.digest not in written:
                    written.add(target.digest)
                    members.append(OutMember("blobs/sha256/" + target.digest[len("sha256:"):], len(converted),
                                             Source(data=converted)))
            else:
                target_bytes = blobs.read_bytes(target.digest)
                add_blob(target.digest)
                if target.media_type in m.INDEX_TYPES:
                    for child in m.parse_index(target_bytes, target.media_type).manifests:
                        if blobs.exists(child.digest) and child.digest != image.manifest.digest:
                            self._add_manifest_blobs(child, add_blob)
                add_blob(image.manifest.digest)
            add_blob(image.id)
            for layer in image.layers:
                add_blob(layer.digest)
            desc = m.descriptor_json(target)
            if name:
                ref = parse_normalized(name)
                desc["annotations"] = {m.ANNOTATION_IMAGE_NAME: str(ref), m.ANNOTATION_REF_NAME: ref.tag}
            index_entries.append(desc)
        index_json = m.canonical_json({"schemaVersion": 2, "mediaType": m.OCI_INDEX, "manifests": index_entries})
        layout = m.canonical_json({"imageLayoutVersion": "1.0.0"})
        return [OutMember("oci-layout", len(layout), Source(data=layout))] + members + [
            OutMember("index.json", len(index_json), Source(data=index_json))]

    def _add_manifest_blobs(self, desc: Descriptor, add_blob: Callable[[str], None]) -> None:
        blobs = self.content.blobs
        if desc.media_type not in m.MANIFEST_TYPES:
            return
        manifest = m.parse_manifest(blobs.read_bytes(desc.digest), desc.media_type)
        if not blobs.exists(manifest.config.digest) or not all(blobs.exists(l.digest) for l in manifest.layers):
            return
        add_blob(desc.digest)
        add_blob(manifest.config.digest)
        for layer in manifest.layers:
            add_blob(layer.digest)


def _untag_line(name: str) -> str:
    return f"Untagged: {_display(name)}"


def _created_before(created: str, limit: float) -> bool:
    """
    Whether an image config's creation time is before C{limit} (seconds
    since the epoch); an image without a readable one is never, as docker
    keeps images without a creation time from until-pruning.
    """
    try:
        return parse_time(created) <= limit
    except InvalidArgument:
        return False

