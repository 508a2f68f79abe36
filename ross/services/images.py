# -*- test-case-name: ross.test.integration.test_image_api -*-
"""
ImageService: the local-image RPCs over L{ross.engine.images.store.ImageStore}.

Thin: validate, convert, call the store. The registry RPCs (PullImage,
PushImage, Login, Logout) come from L{ross.services.registry.RegistryAPI},
the build RPCs (BuildImage, PruneBuildCache) from
L{ross.services.build.BuildAPI}.
"""

from __future__ import annotations

import io
import os
from typing import Any, Awaitable, Callable, TypeVar

from twisted.internet.defer import Deferred

from ross.engine.build.manager import BuildManager
from ross.engine.images.catalog import HistoryItem, Image, ImageSummary
from ross.engine.images.store import ImageStore
from ross.engine.pipes import Inflow, PipeClosed, PipeSource, grow_pipe
from ross.engine.records import Descriptor
from ross.engine.registry.manager import Registry
from ross.errors import FailedPrecondition, InvalidArgument
from ross.humanize import parse_rfc3339_ns
from ross.protocols.bridge import CallInfo, Inbound, Outbound
from ross.services.build import BuildAPI
from ross.services.convert import timestamp
from ross.services.direct import DirectChannels
from ross.services.registry import RegistryAPI
from ross.v1 import common_pb2, image_pb2

_T = TypeVar("_T")

SAVE_CHUNK = 1 << 20


def descriptor_to_proto(d: Descriptor) -> common_pb2.Descriptor:
    return common_pb2.Descriptor(media_type=d.media_type, digest=d.digest, size=d.size,
                                 annotations=dict(d.annotations))


def summary_to_proto(s: ImageSummary) -> image_pb2.Image:
    return image_pb2.Image(
        id=s.row.config,
        repo_tags=[n for n in s.shown if "@" not in n],
        repo_digests=sorted({f"{_repo(n)}@{s.row.target.digest}" for n in s.shown}),
        created=timestamp(parse_rfc3339_ns(s.created)),
        size=s.size,
        labels=dict(s.labels),
        target=descriptor_to_proto(s.row.target),
        containers=s.containers,
    )


def _repo(name: str) -> str:
    if "@" in name:
        return name.partition("@")[0]
    head, sep, tail = name.rpartition(":")
    return head if sep and "/" not in tail else name


def image_to_proto(image: Image, containers: int = 0) -> image_pb2.Image:
    return image_pb2.Image(
        id=image.id,
        repo_tags=[n for n in image.names if "@" not in n],
        repo_digests=sorted({f"{_repo(n)}@{image.target.digest}" for n in image.names}),
        created=timestamp(parse_rfc3339_ns(image.config.created)),
        size=image.size,
        labels=dict(image.config.config.labels),
        target=descriptor_to_proto(image.target),
        containers=containers,
    )


def history_to_proto(h: HistoryItem) -> image_pb2.HistoryEntry:
    return image_pb2.HistoryEntry(
        id=h.id,
        created=timestamp(parse_rfc3339_ns(h.created)),
        created_by=h.created_by,
        size=h.size,
        comment=h.comment,
        empty_layer=h.empty_layer,
        tags=list(h.tags),
    )


async def _feed(inbound: Inbound, inflow: Inflow, field: str) -> None:
    """
    Move the data messages of a client stream into C{inflow}, waiting
    while the reader is behind; stops early once the reader has stopped.
    """
    try:
        while True:
            message = await inbound.receive()
            if message is None:
                inflow.close()
                return
            if message.WhichOneof("request") != field:
                raise InvalidArgument(f"only the first message may carry options; got {message.WhichOneof('request')}")
            if not await inflow.feed(getattr(message, field)):
                return
    except BaseException as e:
        inflow.abort(e)
        raise


class ImageAPI(RegistryAPI, BuildAPI):
    """
    Reactor-side implementation of ross.v1.ImageService (local images,
    registries through C{registry}, builds through C{builds}).
    """

    def __init__(self, images: ImageStore, registry: Registry | None = None,
                 builds: BuildManager | None = None, direct: DirectChannels | None = None) -> None:
        RegistryAPI.__init__(self, registry)
        BuildAPI.__init__(self, builds)
        self._images = images
        self._direct = direct

    def _containers(self, image_id: str) -> int:
        provider = self._images.in_use
        return len(provider().get(image_id, ())) if provider else 0

    async def ListImages(self, request: image_pb2.ListImagesRequest, call: CallInfo) -> image_pb2.ListImagesResponse:
        summaries = await self._images.list(request.all, [(f.key, f.value) for f in request.filters])
        return image_pb2.ListImagesResponse(images=[summary_to_proto(s) for s in summaries])

    async def InspectImage(self, request: image_pb2.InspectImageRequest,
                           call: CallInfo) -> image_pb2.InspectImageResponse:
        if not request.name:
            raise InvalidArgument("image name must not be empty")
        image = await self._images.resolve(request.name)
        platform = image.config.platform
        return image_pb2.InspectImageResponse(
            image=image_to_proto(image, self._containers(image.id)),
            config_json=image.config_json,
            manifest_json=image.manifest_json,
            diff_ids=list(image.config.diff_ids),
            chain_id=image.chain_id,
            platform=common_pb2.Platform(os=platform.os, architecture=platform.architecture,
                                         variant=platform.variant),
            author=image.config.author,
            comment=image.config.comment,
        )

    async def RemoveImage(self, request: image_pb2.RemoveImageRequest, call: CallInfo) -> image_pb2.RemoveImageResponse:
        if not request.name:
            raise InvalidArgument("image name must not be empty")
        result = await self._images.remove(request.name, force=request.force, prune=not request.no_prune)
        return image_pb2.RemoveImageResponse(untagged=list(result.untagged), deleted=list(result.deleted))

    async def TagImage(self, request: image_pb2.TagImageRequest, call: CallInfo) -> image_pb2.TagImageResponse:
        if not request.source or not request.target:
            raise InvalidArgument("tag needs a source image and a target reference")
        await self._images.tag(request.source, request.target)
        return image_pb2.TagImageResponse()

    async def ImageHistory(self, request: image_pb2.ImageHistoryRequest,
                           call: CallInfo) -> image_pb2.ImageHistoryResponse:
        if not request.name:
            raise InvalidArgument("image name must not be empty")
        items = await self._images.history(request.name)
        return image_pb2.ImageHistoryResponse(entries=[history_to_proto(h) for h in items])

    async def _first(self, inbound: Inbound, what: str) -> Any:
        first = await inbound.receive()
        if first is None or first.WhichOneof("request") != "options":
            raise InvalidArgument(f"the first {what} message must carry options")
        return first.options

    async def ImportImage(self, inbound: Inbound, call: CallInfo) -> image_pb2.ImportImageResponse:
        options = await self._first(inbound, "ImportImage")
        inflow = Inflow(self._images.reactor)
        done = self._images.import_image(inflow, options.reference, list(options.changes), options.message)
        try:
            await _feed_until(inbound, inflow, "data", done)
            image_id = await done
        except BaseException:
            # Cancelled (client gone) or failed: a reader still waiting for
            # data must stop, so the engine undoes its work.
            inflow.abort(PipeClosed("import ended"))
            raise
        return image_pb2.ImportImageResponse(id=image_id)

    async def LoadImages(self, inbound: Inbound, call: CallInfo) -> image_pb2.LoadImagesResponse:
        await self._first(inbound, "LoadImages")
        inflow = Inflow(self._images.reactor)
        done = self._images.load(inflow)
        try:
            await _feed_until(inbound, inflow, "data", done)
            result = await done
        except BaseException:
            inflow.abort(PipeClosed("load ended"))
            raise
        return image_pb2.LoadImagesResponse(loaded=list(result.loaded), image_ids=list(result.image_ids))

    async def _from_pipe(self, rpc: str, call: CallInfo, send_ticket: Callable[[common_pb2.DirectTicket], Awaitable[None]],
                         work: Callable[[PipeSource], Deferred[_T]]) -> _T:
        """
        C{work} reading what a local client writes into a pipe whose write
        end C{send_ticket} hands it (a direct channel), instead of the stream.
        """
        direct = self._direct
        if direct is None or not direct.serves(call):
            raise FailedPrecondition(f"{rpc}: a direct channel is only for a client on this host's unix socket")
        read_end, write_end = os.pipe2(os.O_CLOEXEC)
        grow_pipe(read_end)
        source = PipeSource(read_end)
        try:
            await send_ticket(direct.ticket(io.FileIO(write_end, "wb")))
            return await work(source)
        finally:
            source.close()

    async def LoadImagesDirect(self, request: image_pb2.LoadOptions, out: Outbound,
                               call: CallInfo) -> None:
        result = await self._from_pipe(
            "LoadImagesDirect", call, lambda ticket: out.send(image_pb2.LoadImagesDirectResponse(ticket=ticket)),
            self._images.load)
        await out.send(image_pb2.LoadImagesDirectResponse(done=image_pb2.LoadImagesResponse(
            loaded=list(result.loaded), image_ids=list(result.image_ids))))

    async def ImportImageDirect(self, request: image_pb2.ImportOptions, out: Outbound,
                                call: CallInfo) -> None:
        image_id = await self._from_pipe(
            "ImportImageDirect", call, lambda ticket: out.send(image_pb2.ImportImageDirectResponse(ticket=ticket)),
            lambda source: self._images.import_image(source, request.reference, list(request.changes),
                                                     request.message))
        await out.send(image_pb2.ImportImageDirectResponse(done=image_pb2.ImportImageResponse(id=image_id)))

    async def SaveImages(self, request: image_pb2.SaveImagesRequest, out: Outbound, call: CallInfo) -> None:
        total, flow = await self._images.save(list(request.names), request.format or "docker-archive")
        try:
            await out.send(image_pb2.SaveImagesResponse(total_size=total))
            while True:
                chunk = await flow.get()
                if chunk is None:
                    return
                await out.send(image_pb2.SaveImagesResponse(data=chunk))
        finally:
            flow.cancel()

    async def PruneImages(self, request: image_pb2.PruneImagesRequest, call: CallInfo) -> image_pb2.PruneImagesResponse:
        lines, reclaimed = await self._images.prune(request.all, [(f.key, f.value) for f in request.filters])
        return image_pb2.PruneImagesResponse(images_deleted=lines, space_reclaimed=reclaimed)


async def _feed_until(inbound: Inbound, inflow: Inflow, field: str, done: Any) -> None:
    """
    Feed the client stream into C{inflow}; when the engine fails first
    (bad input seen early), stop reading and let C{done} report it. When
    the client fails (went away, bad message), that error wins and the
    engine's outcome is dropped (its work undoes itself).
    """
    if done.called:
        return
    try:
        await _feed(inbound, inflow, field)
    except BaseException:
        if done.called:
            return
        done.addErrback(lambda _: None)
        raise
