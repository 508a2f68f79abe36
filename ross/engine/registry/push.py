# -*- test-case-name: ross.test.integration.test_registry -*-
"""
``ross push``: a local image to a registry, as the OCI distribution spec
describes and docker does it.

Each blob (config and layers, a few at a time) is first looked for in the
target repository (HEAD); a blob that another repository of the same
registry holds (a local image of that repository references it) is
mounted from there (POST C{?mount=&from=}); anything else is uploaded:
small blobs in one PUT, larger ones in PATCH chunks closed by a PUT with
the digest. The manifest goes last, byte for byte as stored, so the
registry's digest is the local one.
"""

from __future__ import annotations

from typing import Sequence
from urllib.parse import urlencode, urlsplit, urlunsplit

from twisted.internet.defer import CancelledError, Deferred, DeferredList, DeferredSemaphore
from twisted.python.failure import Failure
from twisted.web.iweb import IResponse

from ross.engine.content.store import ContentStore
from ross.engine.images.manifest import OCI_CONFIG
from ross.engine.images.catalog import Image, ImageCatalog
from ross.engine.pipes import in_pool
from ross.engine.reactors import IEngineReactor
from ross.engine.records import Descriptor
from ross.engine.registry.client import Session, read_body
from ross.engine.registry.progress import Progress, Report, Throttle, short_id
from ross.engine.registry.transfer import FileProducer
from ross.errors import DataLoss
from ross.reference import Reference, ReferenceError, parse_normalized

#: Blobs up to this size are uploaded in one PUT.
MONOLITHIC_MAX = 1 << 20

#: Size of each PATCH of a chunked upload.
CHUNK_SIZE = 64 << 20

#: Blobs uploaded at the same time (docker's max-concurrent-uploads).
CONCURRENT_UPLOADS = 5


def with_query(url: str, **params: str) -> str:
    """C{url} with C{params} added to its query string."""
    parts = urlsplit(url)
    extra = urlencode(params)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def mount_sources(ref: Reference, names: Sequence[str]) -> list[str]:
    """
    Repositories of the same registry as C{ref} that C{names} (local image
    names referencing a blob) come from, other than C{ref}'s own.
    """
    out = []
    for name in names:
        try:
            other = parse_normalized(name)
        except ReferenceError:
            continue
        if other.domain == ref.domain and other.path != ref.path and other.path not in out:
            out.append(other.path)
    return out


class Pusher:
    """
    Pushes from C{content} the images C{catalog} records (its names also
    say where a blob could be mounted from); C{monolithic_max} and
    C{chunk_size} choose how blobs are uploaded.
    """

    def __init__(self, reactor: IEngineReactor, content: ContentStore, catalog: ImageCatalog,
                 monolithic_max: int = MONOLITHIC_MAX, chunk_size: int = CHUNK_SIZE,
                 concurrency: int = CONCURRENT_UPLOADS) -> None:
        self.reactor = reactor
        self._content = content
        self._catalog = catalog
        self.monolithic_max = monolithic_max
        self.chunk_size = chunk_size
        self.concurrency = concurrency

    async def sources(self, ref: Reference, image: Image) -> dict[str, list[str]]:
        """Blob digest -> repositories of ref's registry it could be mounted from."""
        out: dict[str, list[str]] = {}
        for layer in image.layers:
            found = mount_sources(ref, await self._catalog.names_referencing(layer.digest))
            if found:
                out[layer.digest] = found
        return out

    async def push(self, session: Session, ref: Reference, image: Image, sources: dict[str, list[str]],
                   report: Report) -> tuple[str, int]:
        """
        Push C{image} as C{ref} (a tag) through C{session}; its manifest's
        digest and size.
        """
        # The manifest of the store's platform, byte for byte (for an index,
        # the other platforms' manifests are not all stored).
        manifest = image.manifest
        manifest_json = image.manifest_json
        layers = list(image.layers)
        for layer in reversed(layers):
            report(Progress("Preparing", short_id(layer.digest)))
        limit = DeferredSemaphore(self.concurrency)
        first: list[Failure] = []

        def failed(f: Failure) -> None:
            if not first or (first[0].check(CancelledError) and not f.check(CancelledError)):
                first[:] = [f]
            session.abort()

        config = Descriptor(OCI_CONFIG, image.id, len(image.config_json))
        tasks: list[Deferred[None]] = []
        seen: set[str] = set()
        for desc, shown in [(layer, True) for layer in reversed(layers)] + [(config, False)]:
            if desc.digest in seen:
                continue
            seen.add(desc.digest)

            async def one(desc: Descriptor = desc, shown: bool = shown) -> None:
                if session.aborted:
                    raise CancelledError("the push was stopped")
                await self._blob(session, desc, sources.get(desc.digest, []), report if shown else None)

            d = limit.run(one)
            d.addErrback(failed)
            tasks.append(d)
        # All at once: a failure aborts the session from inside a task's
        # callbacks, so the others may still be firing when it returns.
        await DeferredList(tasks, consumeErrors=True)
        if first:
            first[0].raiseException()
        response = await session.request(
            "PUT", session.repo_url(f"manifests/{ref.tag}"), headers={"Content-Type": manifest.media_type},
            body=lambda: manifest_json, ok=(201, 200, 202), not_found=f"repository {ref.name} not found")
        await read_body(response)
        announced = response.headers.getRawHeaders("docker-content-digest", [])
        if announced and announced[0] != manifest.digest:
            raise DataLoss(f"the registry stored the manifest of {ref.familiar()} as {announced[0]}, "
                           f"not {manifest.digest}")
        report(Progress(f"{ref.tag}: digest: {manifest.digest} size: {manifest.size}",
                        digest=manifest.digest, size=manifest.size))
        return manifest.digest, manifest.size

    async def _blob(self, session: Session, desc: Descriptor, sources: Sequence[str], report: Report | None) -> None:
        sid = short_id(desc.digest)

        def say(status: str) -> None:
            if report is not None:
                report(Progress(status, sid))

        response = await session.request("HEAD", session.repo_url(f"blobs/{desc.digest}"), ok=(200, 404))
        await read_body(response)
        if response.code == 200:
            say("Layer already exists")
            return
        location = ""
        for source in sources:
            response = await session.request(
                "POST", with_query(session.repo_url("blobs/uploads/"), mount=desc.digest, **{"from": source}),
                ok=(201, 202))
            await read_body(response)
            if response.code == 201:
                say(f"Mounted from {source}")
                return
            # The registry started an upload instead: use it.
            location = _location(response)
            break
        if not location:
            response = await session.request("POST", session.repo_url("blobs/uploads/"), ok=(202,))
            await read_body(response)
            location = _location(response)
        blobs = self._content.blobs
        progress = Throttle(report, self.reactor.seconds, "Pushing", sid, desc.size) if report else None
        if desc.size <= self.monolithic_max:
            # Small enough to read (and verify) whole before sending.
            data: bytes = await in_pool(self.reactor, blobs.read_bytes, desc.digest, self.monolithic_max)
            response = await session.request(
                "PUT", with_query(session.url(location), digest=desc.digest),
                headers={"Content-Type": "application/octet-stream"}, body=lambda: data, ok=(201,))
            await read_body(response)
            if progress is not None:
                progress(desc.size)
        else:
            offset = 0
            while offset < desc.size:
                length = min(self.chunk_size, desc.size - offset)
                start = offset

                def chunk_progress(sent: int, start: int = start) -> None:
                    if progress is not None:
                        progress(start + sent)

                response = await session.request(
                    "PATCH", session.url(location),
                    headers={"Content-Type": "application/octet-stream",
                             "Content-Range": f"{start}-{start + length - 1}"},
                    body=lambda start=start, length=length: FileProducer(  # type: ignore[misc]
                        self.reactor, blobs, desc.digest, start, length, chunk_progress),
                    ok=(202,))
                await read_body(response)
                location = _location(response)
                offset += length
            response = await session.request("PUT", with_query(session.url(location), digest=desc.digest),
                                             body=lambda: b"", ok=(201,))
            await read_body(response)
        say("Pushed")


def _location(response: IResponse) -> str:
    values = response.headers.getRawHeaders("location", [])
    if not values:
        raise DataLoss("the registry started an upload without saying where (no Location header)")
    return str(values[0])
