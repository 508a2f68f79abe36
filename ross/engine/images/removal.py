# -*- test-case-name: ross.test.integration.test_images -*-
"""
Images going away: docker's rmi (untag, then delete the last name's
image), image prune, and the collection of blobs no image refers to.
"""

from __future__ import annotations

from typing import Any, Callable, List, Mapping, Sequence

import attrs
from twisted.internet.interfaces import IReactorThreads

from ross.engine.content.store import BlobInfo, ContentStore
from ross.engine.events import EventBus
from ross.engine.images.catalog import ImageCatalog, ImageSummary, InUseProvider, display
from ross.engine.images.unpack import Unpacker
from ross.engine.pipes import in_pool
from ross.errors import FailedPrecondition, InvalidArgument
from ross.humanize import parse_time
from ross.reference import parse_normalized


@attrs.frozen
class RemoveResult:
    untagged: tuple[str, ...]
    deleted: tuple[str, ...]


def _untag_line(name: str) -> str:
    return f"Untagged: {display(name)}"


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


class Remover:
    """
    Removes the images C{catalog} records, their layer snapshots
    (C{unpacker}) and the blobs of C{content} nothing refers to any more.

    @param events: the engine's event bus ("untag" and "delete" events).
    @param users: which containers use which image: those are kept.
    @param lineage: the image each build step made -> the image it started
        from: those are the builder's intermediate images, which pruning
        dangling images spares, and which go with the last image built on
        them (docker's rmi).
    """

    def __init__(self, reactor: IReactorThreads, content: ContentStore, catalog: ImageCatalog, unpacker: Unpacker,
                 events: EventBus, users: InUseProvider, lineage: Callable[[], Mapping[str, str]]) -> None:
        self._reactor = reactor
        self._content = content
        self._catalog = catalog
        self._unpacker = unpacker
        self._events = events
        self._users = users
        self._lineage = lineage

    # ---------------------------------------------------------------- remove

    async def remove(self, name: str, force: bool = False, prune: bool = True) -> RemoveResult:
        """
        docker's rmi: a reference is untagged, and the image deleted when
        that was its last name; an ID deletes the image (every name with
        C{force} when it has several tags or repositories).
        FailedPrecondition while containers use it (unless C{force}, and
        never for a running one).
        """
        db = self._catalog.db
        users = self._users()
        rows, matched = await in_pool(self._reactor, self._catalog.lookup, name)
        image_id = rows[0].config
        short = image_id[len("sha256:"):][:12]
        using = list(users.get(image_id, ()))
        untagged: List[str] = []
        if matched:
            row = rows[0]
            if len(row.names) == 1 and using and not force:
                raise FailedPrecondition(
                    f"conflict: unable to remove repository reference \"{display(matched)}\" (must force) - "
                    f"container {using[0].container_id[:12]} is using its referenced image {short}"
                )
            await in_pool(self._reactor, db.untag, matched)
            untagged.append(_untag_line(matched))
            self._events.publish("image", "untag", image_id, name=matched)
            if len(row.names) > 1 or not prune or using:
                # Other names remain, or containers still need the image:
                # it stays (untagged, for the containers' sake).
                return RemoveResult(tuple(untagged), ())
        else:
            names = sorted({n for r in rows for n in r.names})
            repos = {parse_normalized(n).name for n in names}
            # docker's: an ID removes an image's names by itself only when
            # it has one tag at most, all its names in one repository.
            tags = [n for n in names if "@" not in n]
            if (len(repos) > 1 or len(tags) > 1) and not force:
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
            rows, _ = await in_pool(self._reactor, self._catalog.lookup, image_id)
        else:
            rows = [r for r in [await in_pool(self._reactor, db.by_target, rows[0].target.digest)] if r is not None]
        for row in rows:
            for n in row.names:
                await in_pool(self._reactor, db.untag, n)
                untagged.append(_untag_line(n))
                self._events.publish("image", "untag", image_id, name=n)
        if using:
            return RemoveResult(tuple(untagged), ())
        deleted = await self._delete(image_id, rows)
        if prune:
            deleted += await self._delete_parents(image_id)
        await self.collect()
        await self._catalog.refresh_count()
        return RemoveResult(tuple(untagged), tuple(deleted))

    async def _delete(self, image_id: str, rows: Sequence[Any]) -> List[str]:
        """
        Delete the untagged image C{image_id} (its stored C{rows}) and the
        layer snapshots nothing else uses; docker's "Deleted:" lines.
        """
        db = self._catalog.db
        deleted: List[str] = []
        for row in rows:
            chains = await in_pool(self._reactor, db.chains_of, row.target.digest)
            removed = await in_pool(self._reactor, db.delete, row.target.digest, ())
            if not removed:
                raise FailedPrecondition(
                    f"conflict: image {image_id[len('sha256:'):][:12]} was tagged while it was being removed")
            deleted += await self._unpacker.remove_chains(chains)
        deleted.insert(0, f"Deleted: {image_id}")
        self._events.publish("image", "delete", image_id)
        return deleted

    async def _delete_parents(self, image_id: str) -> List[str]:
        """
        The build's intermediate images C{image_id} was made on, deleted
        from the nearest on while each is untagged, unused and the parent
        of no other image (docker's rmi, which prunes parents).
        """
        lines: List[str] = []
        lineage = self._lineage()
        parent = lineage.get(image_id, "")
        while parent:
            stored = await in_pool(self._reactor, self._catalog.db.images)
            rows = [r for r in stored if r.config == parent]
            existing = {r.config for r in stored}
            children = {child for child, p in lineage.items() if p == parent and child in existing}
            if not rows or children or any(r.names for r in rows) or self._users().get(parent):
                break
            try:
                lines += await self._delete(parent, rows)
            except FailedPrecondition:
                break
            parent = lineage.get(parent, "")
        return lines

    async def collect(self) -> List[BlobInfo]:
        """
        Remove every blob no image refers to (leases excepted).
        """
        blobs = self._content.blobs
        db = self._catalog.db

        def collect() -> List[BlobInfo]:
            removed = blobs.collect(db.referenced_blobs)
            if removed:
                db.forget_layers({b.digest for b in blobs.list()})
            return removed

        return await in_pool(self._reactor, collect)

    # ---------------------------------------------------------------- prune

    async def prune(self, all: bool = False, filters: Sequence[tuple[str, str]] = ()) -> tuple[List[str], int]:
        """
        Remove dangling images (every image no container uses, with
        C{all}) and unreferenced content; the lines docker prints
        ("untagged: ...", "deleted: ...") and the bytes reclaimed.

        C{filters} are docker's for image prune: dangling=true|false (false
        is C{all}), label=KEY[=VALUE], label!=KEY[=VALUE] and until=TIME
        (RFC 3339, Unix seconds or a duration like 10m: only images created
        before it). Any other filter, or a bad value, is InvalidArgument
        and nothing is removed.
        """
        all_, checks = self._prune_filters(all, filters)
        db = self._catalog.db
        users = self._users()
        intermediates = set(self._lineage().values())
        before = sum(b.size for b in await self._content.list())
        summaries = await in_pool(self._reactor, self._catalog.summaries, checks, users)
        lines: List[str] = []
        for s in summaries:
            if users.get(s.row.config):
                continue
            if s.row.names and not all_:
                continue
            if not all_ and s.row.config in intermediates:
                continue
            for n in s.row.names:
                lines.append(f"untagged: {display(n)}")
                self._events.publish("image", "untag", s.row.config, name=n)
            chains = await in_pool(self._reactor, db.chains_of, s.row.target.digest)
            if not await in_pool(self._reactor, db.delete, s.row.target.digest, s.row.names):
                continue
            lines.append(f"deleted: {s.row.config}")
            lines += [line.lower() for line in await self._unpacker.remove_chains(chains)]
            self._events.publish("image", "delete", s.row.config)
        await self.collect()
        after = sum(b.size for b in await self._content.list())
        await self._catalog.refresh_count()
        return lines, max(0, before - after)

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
                checks.append(self._catalog.filter(key, value))
            elif key == "label!":
                excluded.append(self._catalog.filter("label", value))
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
