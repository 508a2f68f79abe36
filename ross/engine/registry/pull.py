# -*- test-case-name: ross.test.integration.test_registry -*-
"""
``ross pull``: an image from a registry into the local store, as the OCI
distribution spec describes and docker does it.

The manifest is asked for with every media type Ross reads (OCI index and
manifest, Docker manifest list and schema2); an index is resolved to the
manifest of the wanted platform (the image is the index when that is the
store's own platform, else that platform's manifest). Layers not already stored are downloaded
a few at a time, each into a content-store ingest that is verified against
its digest before it becomes a blob (a cut connection is resumed with
Range); each layer is unpacked as soon as it and the layers below it are
there; the image is recorded and tagged last. Every blob is held by a
lease meanwhile, and any failure, or the client going away, stops the
downloads and undoes what the pull made: no ingest, blob, snapshot or
lease is left.
"""

from __future__ import annotations

import hashlib
from typing import List, Sequence

import attrs
from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore
from twisted.python.failure import Failure

from ross.engine.content.store import ContentStore, Lease
from ross.engine.images.manifest import (
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    Index,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    chain_ids,
    parse_config,
    parse_index,
    parse_manifest,
    platform_matches,
    sniff_media_type,
)
from ross.engine.images.catalog import ImageCatalog
from ross.engine.images.metadata import NewImage
from ross.engine.images.unpack import Unpacker
from ross.engine.pipes import in_pool
from ross.engine.reactors import IEngineReactor
from ross.engine.records import Descriptor, Platform
from ross.engine.registry.client import Session, read_body
from ross.engine.registry.progress import Progress, Report, Throttle, short_id
from ross.engine.registry.transfer import Download
from ross.errors import DataLoss, InvalidArgument, NotFound
from ross.reference import Reference

#: Media types asked for, most wanted first.
ACCEPT = ", ".join([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST])

#: Layers downloaded at the same time (docker's max-concurrent-downloads).
CONCURRENT_DOWNLOADS = 3

#: Index nesting followed before giving up.
MAX_INDEX_DEPTH = 8


@attrs.frozen
class Fetched:
    """A manifest or index as the registry sent it, verified."""

    desc: Descriptor
    data: bytes


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


async def fetch_manifest(session: Session, reference: str, shown: str) -> Fetched:
    """
    GET a manifest or index by tag or digest. Its digest is computed from
    the bytes; DataLoss when it differs from the digest asked for or the
    one the registry announced.
    """
    response = await session.request(
        "GET", session.repo_url(f"manifests/{reference}"), headers={"Accept": ACCEPT},
        not_found=f"manifest for {shown} not found")
    data = await read_body(response, what=f"manifest of {shown}")
    digest = _sha256(data)
    if reference.startswith("sha256:") and digest != reference:
        raise DataLoss(f"manifest for {shown}: digest mismatch: asked for {reference}, got {digest}")
    announced = response.headers.getRawHeaders("docker-content-digest", [])
    if announced and announced[0].startswith("sha256:") and announced[0] != digest:
        raise DataLoss(f"manifest for {shown}: the registry announced digest {announced[0]} for content "
                       f"that hashes to {digest}")
    content_type = (response.headers.getRawHeaders("content-type", [""])[0]).split(";")[0].strip()
    media_type = content_type if content_type in INDEX_TYPES | MANIFEST_TYPES else sniff_media_type(data)
    if media_type not in INDEX_TYPES | MANIFEST_TYPES:
        raise InvalidArgument(f"manifest for {shown}: unsupported media type {media_type}")
    return Fetched(Descriptor(media_type, digest, len(data)), data)


async def fetch_small_blob(session: Session, desc: Descriptor, what: str) -> bytes:
    """A config-sized blob, verified against its descriptor."""
    response = await session.request("GET", session.repo_url(f"blobs/{desc.digest}"),
                                     not_found=f"{what} {desc.digest} not found")
    data = await read_body(response, what=what)
    if len(data) != desc.size or _sha256(data) != desc.digest:
        raise DataLoss(f"digest mismatch for {what} {desc.digest}: got {_sha256(data)} ({len(data)} bytes)")
    return data


def choose(index: Index, platform: Platform, shown: str) -> Descriptor:
    for child in index.manifests:
        if platform_matches(platform, child.platform):
            return child
    variant = f"/{platform.variant}" if platform.variant else ""
    raise NotFound(f"no matching manifest for {platform.os}/{platform.architecture}{variant} "
                   f"in the manifest list entries of {shown}")


class _Stop:
    """
    The first failure of a pull, and stopping the rest of it then.
    """

    def __init__(self, session: Session) -> None:
        self._session = session
        self.failure: Failure | None = None

    def fail(self, failure: Failure) -> Failure:
        if self.failure is None or (self.failure.check(CancelledError) and not failure.check(CancelledError)):
            self.failure = failure
        self._session.abort()
        return failure


class Puller:
    """
    Pulls into C{content}, recorded in C{catalog}, unpacked by
    C{unpacker}; C{concurrency} layers at a time.

    @param platform: the store's own platform (an index pulled for it is
        recorded as the image).
    """

    def __init__(self, reactor: IEngineReactor, content: ContentStore, catalog: ImageCatalog, unpacker: Unpacker,
                 platform: Platform, concurrency: int = CONCURRENT_DOWNLOADS) -> None:
        self.reactor = reactor
        self._content = content
        self._catalog = catalog
        self._unpacker = unpacker
        self._platform = platform
        self.concurrency = concurrency

    async def pull(self, session: Session, ref: Reference, platform: Platform, report: Report) -> str:
        """
        Pull C{ref} (tag or digest) through C{session}; fires with the
        target's digest once the image is stored under C{ref}'s name.
        """
        shown = ref.familiar()
        report(Progress(f"{ref.digest or ref.tag}: Pulling from {ref.path}"))
        target = await fetch_manifest(session, ref.digest or ref.tag, shown)
        chosen = target
        depth = 0
        while chosen.desc.media_type in INDEX_TYPES:
            depth += 1
            if depth > MAX_INDEX_DEPTH:
                raise InvalidArgument(f"manifest for {shown}: image indexes nested too deeply")
            child = choose(parse_index(chosen.data, chosen.desc.media_type), platform, shown)
            fetched = await fetch_manifest(session, child.digest, shown)
            if fetched.desc.size != child.size:
                raise DataLoss(f"manifest {child.digest} of {shown}: size mismatch")
            chosen = fetched
        manifest = parse_manifest(chosen.data, chosen.desc.media_type)
        config_data = await fetch_small_blob(session, manifest.config, "image config")
        config = parse_config(config_data)
        if len(config.diff_ids) != len(manifest.layers):
            raise InvalidArgument(f"manifest for {shown}: {len(manifest.layers)} layers but "
                                  f"{len(config.diff_ids)} diff IDs in its config")
        # A local image is an index with the manifest of the store's own
        # platform; another platform's is recorded as its manifest alone.
        own = chosen is target or platform == self._platform
        recorded = target if own else chosen
        name = str(ref)
        previous = await self._catalog.target_of(name)
        lease = await self._unpacker.lease()
        created: List[str] = []
        try:
            documents = [(recorded.desc.digest, recorded.data), (chosen.desc.digest, chosen.data),
                         (manifest.config.digest, config_data)]
            await in_pool(self.reactor, self._write_documents, documents, lease)
            fresh = await self._layers(session, manifest.layers, config.diff_ids, lease, created,
                                       report, quiet=previous == recorded.desc.digest)
            new = NewImage(
                target=recorded.desc,
                manifest=chosen.desc.digest,
                config=manifest.config.digest,
                blobs=frozenset({recorded.desc.digest, chosen.desc.digest, manifest.config.digest,
                                 *(layer.digest for layer in manifest.layers)}),
                chains=tuple(chain_ids(config.diff_ids)),
            )
            await self._catalog.record(new, [name], lease, "pull")
        except BaseException:
            await self._unpacker.undo(lease, created)
            raise
        report(Progress(f"Digest: {target.desc.digest}"))
        if previous == recorded.desc.digest and not fresh:
            report(Progress(f"Status: Image is up to date for {shown}"))
        else:
            report(Progress(f"Status: Downloaded newer image for {shown}"))
        return target.desc.digest

    def _write_documents(self, documents: Sequence[tuple[str, bytes]], lease: Lease) -> None:
        blobs = self._content.blobs
        for digest, data in documents:
            blobs.write_bytes(data, digest, lease)

    async def _layers(self, session: Session, layers: Sequence[Descriptor], diff_ids: Sequence[str], lease: Lease,
                      created: List[str], report: Report, quiet: bool) -> bool:
        """
        Download what is missing of C{layers} and unpack them in order;
        True when anything was downloaded. On failure, waits until every
        download has stopped and removed its ingest, then raises the first
        error.
        """
        blobs = self._content.blobs
        held: list[bool] = []
        for layer in layers:
            held.append(await in_pool(self.reactor, blobs.hold, lease, layer.digest))
        # Each layer is ready once its blob is stored (or was already).
        ready: dict[str, Deferred[None]] = {}
        downloads: list[Deferred[None]] = []
        stop = _Stop(session)
        limit = DeferredSemaphore(self.concurrency)
        clock = self.reactor.seconds
        for layer, present in zip(layers, held):
            if layer.digest in ready:
                continue
            sid = short_id(layer.digest)
            if present:
                if not quiet:
                    report(Progress("Already exists", sid))
                ready[layer.digest] = Deferred()
                ready[layer.digest].callback(None)
                continue
            report(Progress("Pulling fs layer", sid))
            done: Deferred[None] = Deferred()
            ready[layer.digest] = done

            async def fetch(layer: Descriptor = layer, sid: str = sid) -> None:
                if session.aborted:
                    raise CancelledError("the pull was stopped")
                download = Download(self.reactor, blobs, session, layer,
                                    Throttle(report, clock, "Downloading", sid, layer.size))
                await download.run(lease)
                report(Progress("Verifying Checksum", sid))
                report(Progress("Download complete", sid))

            if not limit.tokens:
                report(Progress("Waiting", sid))
            d = limit.run(fetch)
            d.addErrback(stop.fail)
            d.chainDeferred(done)
            downloads.append(d)

        async def unpack() -> None:
            for i, layer in enumerate(layers):
                await ready[layer.digest]
                if session.aborted:
                    raise CancelledError("the pull was stopped")
                sid = short_id(layer.digest)
                fresh = not held[i]
                if fresh:
                    report(Progress("Extracting", sid))
                await self._unpacker.unpack(layers[:i + 1], diff_ids[:i + 1], created)
                if fresh:
                    report(Progress("Pull complete", sid))

        unpacking = Deferred.fromCoroutine(unpack())
        unpacking.addErrback(stop.fail)
        # Every download and the unpacking have ended (each ingest is gone)
        # before the outcome is known. Waited for all at once: a failure
        # aborts the session from inside a download's callbacks, so others
        # may still be firing when it returns.
        await DeferredList(downloads + [unpacking], consumeErrors=True)
        for waiter in ready.values():
            waiter.addErrback(lambda _: None)
        if stop.failure is not None:
            stop.failure.raiseException()
        return bool(downloads)
