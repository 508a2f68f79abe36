# -*- test-case-name: ross.test.integration.test_commit -*-
"""
docker commit's image half: a new image of a base image's layers plus one
more (a container's changes), written, unpacked and recorded as every
addition is, or not at all.
"""

from __future__ import annotations

import json
import time
from typing import Any, Callable, List, Mapping, Sequence

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.interfaces import IReactorThreads

from ross.engine.content.store import ContentStore, Lease, Writer
from ross.engine.images.manifest import (
    OCI_CONFIG,
    OCI_MANIFEST,
    canonical_json,
    chain_ids,
    descriptor_json,
    parse_config,
)
from ross.engine.images.catalog import Image, ImageCatalog
from ross.engine.images.changes import apply_changes, parse_changes
from ross.engine.images.metadata import NewImage
from ross.engine.images.unpack import LayerTap, Unpacker
from ross.engine.layers.diff import DiffResult, LayerSink
from ross.engine.pipes import Guard, in_pool
from ross.engine.records import Descriptor, Platform
from ross.errors import InvalidArgument
from ross.humanize import rfc3339
from ross.reference import parse_tag


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


class Committer:
    """
    Makes images of a base image and a new layer: the layer goes into
    C{content}, is unpacked by C{unpacker} and the image recorded in
    C{catalog}.

    @param platform: the host's, for a base config that names none.
    """

    def __init__(self, reactor: IReactorThreads, content: ContentStore, catalog: ImageCatalog, unpacker: Unpacker,
                 platform: Platform) -> None:
        self._reactor = reactor
        self._content = content
        self._catalog = catalog
        self._unpacker = unpacker
        self._platform = platform

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
        """
        A new image of C{base}'s layers plus the layer
        C{write_layer(sink, tap)} writes (a container's changes: it calls
        C{sink.write(bytes)} with the compressed layer from one thread, and
        C{tap.write(bytes)} with its uncompressed tar, and fires with the
        L{DiffResult}); fires with the new image's ID. The tap extracts the
        layer as it is written (L{Unpacker.tap}): the new layer's snapshot
        is ready when its blob is.

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
        names = [str(ref)] if ref else []
        sink = _LayerSink()
        guard = Guard(sink.cancel)

        async def commit() -> str:
            blobs = self._content.blobs
            lease = await self._unpacker.lease()
            created: List[str] = []
            tap: LayerTap | None = None
            try:
                writer = sink.writer = await in_pool(self._reactor, blobs.writer)
                try:
                    guard.check()
                    # The base's layers are there for its containers (unless lost).
                    parent = await self._unpacker.unpack(base.layers, base.config.diff_ids)
                    tap = await self._unpacker.tap(parent)
                    diff = await write_layer(sink, tap)
                    guard.check()
                    info = await in_pool(self._reactor, writer.commit, lease)
                except BaseException:
                    await in_pool(self._reactor, writer.abort)
                    raise
                layer = Descriptor(diff.media_type, info.digest, info.size)
                diff_ids = base.config.diff_ids + (diff.diff_id,)
                await self._unpacker.unpack(base.layers + (layer,), diff_ids, created, tap)
                guard.check()
                config_digest, manifest = await in_pool(
                    self._reactor, self._commit_blobs, base, layer, diff_ids, image_config, container_id,
                    created_by, comment, author, lease)
                new = NewImage(
                    target=manifest,
                    manifest=manifest.digest,
                    config=config_digest,
                    blobs=frozenset({manifest.digest, config_digest, *(l.digest for l in base.layers), layer.digest}),
                    chains=tuple(chain_ids(diff_ids)),
                )
                moved = await self._catalog.add(new, names)
            except BaseException:
                await self._unpacker.undo(lease, created)
                raise
            finally:
                if tap is not None:
                    await self._unpacker.drop(tap)
            await self._catalog.announce(lease, "commit", config_digest, names, moved, unnamed=True)
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
        created = rfc3339(*divmod(time.time_ns(), 1_000_000_000))
        doc: dict[str, Any] = {
            "architecture": raw.get("architecture") or self._platform.architecture,
            "os": raw.get("os") or self._platform.os,
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
        blobs = self._content.blobs
        config_bytes = canonical_json(doc)
        # Checked as any config Ross reads would be (changes can make odd ones).
        parse_config(config_bytes)
        config_info = blobs.write_bytes(config_bytes, None, lease)
        base_manifest = json.loads(base.manifest_json)
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_info.digest, "size": config_info.size},
            "layers": list(base_manifest.get("layers") or []) + [descriptor_json(layer)],
        }
        manifest_bytes = canonical_json(manifest_doc)
        manifest_info = blobs.write_bytes(manifest_bytes, None, lease)
        return config_info.digest, Descriptor(OCI_MANIFEST, manifest_info.digest, manifest_info.size)
