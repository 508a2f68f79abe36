# -*- test-case-name: ross.test.integration.test_images -*-
"""
The image records and their resolution: what a reference or an ID
designates, listings, history, tags, and the one transaction that records
a new image.

An image is what a reference points at: a manifest or an index (the
target). Its ID is the digest of the config of the manifest chosen for this
host, as docker shows it. The records (C{<root>/images.db}, L{ImageDB})
sit over the content store, where manifests and configs are read from.
"""

from __future__ import annotations

import fnmatch
import time
from pathlib import Path
from typing import Callable, List, Mapping, Sequence

import attrs
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from ross.engine.content.store import ContentStore, Lease
from ross.engine.events import EventBus
from ross.engine.fsutil import private_dir
from ross.engine.images.manifest import Config, History, chain_ids, parse_config, parse_manifest, sniff_media_type
from ross.engine.images.metadata import ImageDB, ImageRow, NewImage
from ross.engine.pipes import in_pool
from ross.engine.records import Descriptor
from ross.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from ross.reference import (
    Reference,
    ReferenceError,
    is_id_prefix,
    is_image_id,
    parse_normalized,
    parse_tag,
)


@attrs.frozen
class ImageUser:
    """
    A container using an image, as the container manager reports it.
    """

    container_id: str
    running: bool = False


#: image ID ("sha256:<config>") -> the containers using it.
InUseProvider = Callable[[], Mapping[str, Sequence[ImageUser]]]

#: The builder's intermediate images (their IDs).
IntermediatesProvider = Callable[[], set[str]]


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
    config: Config
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
    #: The names a listing shows: with reference filters, those matching
    #: them all (docker's), not every name of the image.
    shown: tuple[str, ...] = ()


@attrs.frozen
class HistoryItem:
    id: str
    created: str
    created_by: str
    size: int
    comment: str
    empty_layer: bool
    tags: tuple[str, ...]


#: A name that moved to another image: (name, target digest it pointed at
#: before, None when it is new), as L{ImageDB.add} and L{ImageDB.tag} report.
Moved = tuple[str, str | None]


def reference_matches(name: str, pattern: str) -> bool:
    """
    Whether the stored name C{name} matches docker's reference filter
    C{pattern} (a glob on any of its familiar or full forms).
    """
    ref = parse_normalized(name)
    shown = [ref.familiar(), ref.familiar_name, str(ref), ref.name]
    return any(fnmatch.fnmatchcase(x, pattern) for x in shown)


def display(name: str) -> str:
    """Familiar form of a stored name, for messages and output."""
    try:
        return parse_normalized(name).familiar()
    except ReferenceError:
        return name


class ImageCatalog:
    """
    The image records (C{<root>/images.db}) and the manifests and configs
    they point at in the content store.

    @param events: the engine's event bus (tag and untag events).
    @param users: which containers use which image (listings count them).
    @param intermediates: the builder's intermediate images, which
        listings leave out unless asked for all.
    @ivar count: how many images are recorded, kept current by the
        operations that add or remove some.
    """

    _log = Logger()

    def __init__(self, reactor: IReactorThreads, root: Path, content: ContentStore, events: EventBus,
                 users: InUseProvider, intermediates: IntermediatesProvider) -> None:
        self._reactor = reactor
        self._root = root
        self._content = content
        self._events = events
        self._users = users
        self._intermediates = intermediates
        self._db: ImageDB | None = None
        self._configs: dict[str, tuple[Config, bytes]] = {}
        self.count = 0

    # ---------------------------------------------------------------- life

    @property
    def db(self) -> ImageDB:
        if self._db is None:
            raise FailedPrecondition("the image store is not started")
        return self._db

    async def open(self) -> None:
        """
        Open the records (and the content store's blobs under them).
        """
        def open_() -> int:
            private_dir(self._root)
            self._content.blobs.open()
            self._db = ImageDB(self._root / "images.db")
            return self._db.count()

        self.count = await in_pool(self._reactor, open_)

    async def close(self) -> None:
        db, self._db = self._db, None
        if db is not None:
            await in_pool(self._reactor, db.close)

    async def refresh_count(self) -> None:
        self.count = await in_pool(self._reactor, self.db.count)

    # ---------------------------------------------------------------- lookup

    def lookup(self, name: str) -> tuple[List[ImageRow], str]:
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

    def config(self, digest: str) -> tuple[Config, bytes]:
        """
        Blocking: the parsed config blob C{digest} and its bytes (cached:
        a blob never changes).
        """
        cached = self._configs.get(digest)
        if cached is None:
            raw = self._content.blobs.read_bytes(digest)
            cached = (parse_config(raw), raw)
            self._configs[digest] = cached
        return cached

    def image(self, row: ImageRow, name: str) -> Image:
        """
        Blocking: the L{Image} of C{row}, found by C{name} ("" for an ID).
        """
        blobs = self._content.blobs
        manifest_json = blobs.read_bytes(row.manifest)
        media_type = sniff_media_type(manifest_json)
        manifest = parse_manifest(manifest_json, media_type)
        config, config_json = self.config(manifest.config.digest)
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
            chain_ids=tuple(chain_ids(config.diff_ids)),
            created_ns=row.created_ns,
            size=self.db.image_size(row.target.digest),
        )

    def _resolve(self, name: str) -> Image:
        rows, matched = self.lookup(name)
        return self.image(rows[0], matched)

    async def resolve(self, name: str) -> Image:
        """
        The image C{name} designates: a reference ("busybox" is
        docker.io/library/busybox:latest; "repo@sha256:..." by manifest
        digest), a full image ID or a unique ID prefix. NotFound ("No such
        image: busybox:latest"), InvalidArgument for a malformed reference.
        """
        return await in_pool(self._reactor, self._resolve, name)

    async def target_of(self, name: str) -> str | None:
        """
        Digest of the manifest or index the normalised reference C{name}
        points at, None when no image has that name.
        """
        def target() -> str | None:
            row = self.db.by_name(name)
            return row.target.digest if row is not None else None

        return await in_pool(self._reactor, target)

    async def names_referencing(self, blob: str) -> List[str]:
        """Names of the images referencing C{blob}."""
        return await in_pool(self._reactor, self.db.names_referencing, blob)

    # ---------------------------------------------------------------- list

    async def list(self, all: bool = False, filters: Sequence[tuple[str, str]] = ()) -> List[ImageSummary]:
        """
        Every image, newest first, matching every filter (dangling=true|false,
        label=KEY or KEY=VALUE, reference=PATTERN, before=IMAGE, since=IMAGE).
        """
        users = self._users()
        intermediates = self._intermediates()
        return await in_pool(self._reactor, self._list, filters, users, set() if all else intermediates,
                             intermediates)

    def _list(self, filters: Sequence[tuple[str, str]], users: Mapping[str, Sequence[ImageUser]],
              hidden: set[str], intermediates: set[str]) -> List[ImageSummary]:
        summaries = self.summaries([self.filter(key, value, intermediates) for key, value in filters], users)
        patterns = [value for key, value in filters if key == "reference"]
        return [attrs.evolve(s, shown=tuple(n for n in s.row.names if all(reference_matches(n, p) for p in patterns)))
                for s in summaries if s.row.names or s.row.config not in hidden]

    def summaries(self, checks: Sequence[Callable[[ImageSummary], bool]],
                  users: Mapping[str, Sequence[ImageUser]]) -> List[ImageSummary]:
        """
        Blocking: the summary of every image passing all C{checks}, newest
        first; an image whose config cannot be read is left out.
        """
        out = []
        for row in self.db.images():
            try:
                config, _ = self.config(row.config)
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

    def filter(self, key: str, value: str, intermediates: set[str] | None = None) -> Callable[[ImageSummary], bool]:
        """
        The check of docker's image filter C{key}=C{value}; InvalidArgument
        for one it does not know (before and since look their image up).
        An image of C{intermediates} (a build's, other images are built on)
        is not dangling, as docker's.
        """
        if key == "dangling":
            if value not in ("true", "false", "1", "0"):
                raise InvalidArgument(f"invalid filter 'dangling={value}': use true or false")
            want = value in ("true", "1")
            parents = intermediates or set()
            return lambda s: (not s.row.names and s.row.config not in parents) == want
        if key == "label":
            k, eq, v = value.partition("=")
            return lambda s: k in s.labels and (not eq or s.labels[k] == v)
        if key == "reference":
            return lambda s: any(reference_matches(name, value) for name in s.row.names)
        if key in ("before", "since"):
            rows, _ = self.lookup(value)
            pivot = rows[0].created_ns
            if key == "before":
                return lambda s: s.row.created_ns < pivot
            return lambda s: s.row.created_ns > pivot
        raise InvalidArgument(f"invalid filter '{key}'")

    # ---------------------------------------------------------------- history

    async def history(self, name: str) -> List[HistoryItem]:
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
                steps = [History(image.config.created, "", "", False)] * max(1, len(image.layers))
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
                    tags=tuple(display(n) for n in image.names) if i == 0 else (),
                ))
            return out

        return await in_pool(self._reactor, history)

    # ---------------------------------------------------------------- tag

    async def tag(self, source: str, target: str) -> None:
        """
        Point reference C{target} at the image C{source} designates.
        """
        try:
            ref = parse_tag(target)
        except InvalidArgument as e:
            raise InvalidArgument(f"Error parsing reference: {target!r} is not a valid repository/tag: {e}") from e

        def tag() -> tuple[ImageRow, str | None]:
            rows, _ = self.lookup(source)
            return rows[0], self.db.tag(str(ref), rows[0].target.digest, time.time_ns())

        row, previous = await in_pool(self._reactor, tag)
        if previous is not None and previous != row.target.digest:
            await self.after_moves([(str(ref), previous)])
        self._events.publish("image", "tag", row.config, name=str(ref))

    # ---------------------------------------------------------------- record

    async def add(self, new: NewImage, names: Sequence[str]) -> List[Moved]:
        """
        Record C{new} and point C{names} (normalised references) at it in
        one transaction; the names that moved from another image.
        """
        return await in_pool(self._reactor, self.db.add, new, list(names), time.time_ns())

    async def record(self, new: NewImage, names: Sequence[str], lease: Lease, action: str) -> None:
        """
        Record C{new} (blobs committed under C{lease}, layers unpacked) and
        point C{names} (normalised references) at it in one transaction,
        release C{lease} and publish C{action} ("pull") for each name.
        """
        moved = await self.add(new, names)
        await self.announce(lease, action, new.config, names, moved)

    async def announce(self, lease: Lease, action: str, image_id: str, names: Sequence[str],
                       moved: Sequence[Moved], unnamed: bool = False) -> None:
        """
        Once image C{image_id} is recorded under C{names} (the L{add}
        that moved C{moved}): release C{lease}, publish C{action} for each
        name (once without a name when there is none and C{unnamed}, as
        docker's import and commit do), untag the images the names moved
        from and recount.
        """
        await in_pool(self._reactor, lease.release)
        for name in names:
            self._events.publish("image", action, image_id, name=name)
        if unnamed and not names:
            self._events.publish("image", action, image_id)
        await self.after_moves(moved)
        await self.refresh_count()

    async def after_moves(self, moved: Sequence[Moved]) -> None:
        """
        A name that moved to another image untags the old one, as docker
        says; the old image stays (dangling) until pruned.
        """
        for name, previous in moved:
            if previous is None:
                continue
            row = await in_pool(self._reactor, self.db.by_target, previous)
            if row is not None and row.target.digest != previous:
                continue
            self._events.publish("image", "untag", row.config if row else previous, name=name)
