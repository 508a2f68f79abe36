# -*- test-case-name: ross.test.integration.test_build -*-
"""
The build RPCs of ImageService (BuildImage, PruneBuildCache) over
L{ross.engine.build.manager.BuildManager}: options checked first (a
malformed Dockerfile is refused before any of the context is read), the
context streamed into the daemon, progress streamed back.
L{ross.services.images.ImageAPI} inherits them.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Coroutine

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IPushProducer

from ross.buildcontext import ManifestEntry
from ross.engine.build.manager import BuildManager
from ross.engine.pipes import Inflow, PipeClosed
from ross.errors import InvalidArgument, RossError, Unimplemented
from ross.protocols.bridge import CallInfo, Inbound, Outbound
from ross.v1 import common_pb2, image_pb2

if TYPE_CHECKING:
    # Imported at the first build (see ross.engine.build.manager).
    from ross.engine.build.builder import BuildRequest, Plan
    from ross.engine.build.context import ContextArchive

_STREAMS = {"stdout": common_pb2.STD_STREAM_STDOUT, "stderr": common_pb2.STD_STREAM_STDERR}


def request_from_proto(options: image_pb2.BuildOptions) -> BuildRequest:
    """The domain request of a BuildImage's options; InvalidArgument for what is malformed."""
    from ross.engine.build.builder import BuildRequest

    for name, value in [*options.build_args.items(), *options.labels.items()]:
        if not name or "\0" in name or "\0" in value:
            raise InvalidArgument(f"invalid build argument or label {name[:64]!r}")
    return BuildRequest(
        dockerfile=bytes(options.dockerfile_content) or None,
        dockerfile_path=options.dockerfile or "Dockerfile",
        tags=tuple(options.tags),
        build_args=dict(options.build_args),
        no_cache=options.no_cache,
        pull=options.pull,
        target=options.target,
        labels=dict(options.labels),
        network=options.network or "default",
    )


class _Progress:
    """A build's output as BuildImageProgress messages."""

    def __init__(self, out: Outbound) -> None:
        self._out = out

    def line(self, text: str) -> None:
        self._out.write(image_pb2.BuildImageProgress(stream=text + "\n"))

    def write(self, stream: str, data: bytes) -> None:
        self._out.write(image_pb2.BuildImageProgress(
            output=data, output_stream=_STREAMS.get(stream, common_pb2.STD_STREAM_STDOUT)))

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        self._out.registerProducer(producer, streaming)

    def unregisterProducer(self) -> None:
        self._out.unregisterProducer()


class BuildAPI:
    """BuildImage and PruneBuildCache; UNIMPLEMENTED without a build subsystem."""

    def __init__(self, builds: BuildManager | None) -> None:
        self._builds = builds

    @property
    def builds(self) -> BuildManager:
        if self._builds is None:
            raise Unimplemented("this daemon does not build images")
        return self._builds

    async def BuildImage(self, inbound: Inbound, out: Outbound, call: CallInfo) -> None:
        from ross.engine.build.builder import StepFailed

        builds = self.builds
        first = await inbound.receive()
        if first is None or first.WhichOneof("request") != "options":
            raise InvalidArgument("the first BuildImage message must carry options")
        try:
            request = request_from_proto(first.options)
            plan: Plan | None = None
            if request.dockerfile is not None:
                plan = builds.prepare(request, request.dockerfile)
            await self._build(builds, request, plan, inbound, out)
        except RossError as e:
            out.write(image_pb2.BuildImageProgress(
                error=e.message, exit_code=e.exit_code if isinstance(e, StepFailed) else 0))
            raise

    async def _build(self, builds: BuildManager, request: BuildRequest, plan: Plan | None, inbound: Inbound,
                     out: Outbound) -> None:
        from ross.engine.build.context import ContextArchive

        scratch = await builds.scratch_dir()
        context: ContextArchive | None = None
        try:
            context = ContextArchive(str(Path(scratch) / "context.tar"))
            first = await inbound.receive()
            fetcher: _Fetcher | None = None
            if first is not None and first.WhichOneof("request") == "manifest":
                await builds.run_blocking(context.index_manifest, await _manifest(inbound, first))
                fetcher = _Fetcher(builds, context, inbound, out)
            else:
                await self._receive_tar(builds, context, first, inbound)
            if plan is None:
                dockerfile = context.read_file(request.dockerfile_path) if fetcher is None else None
                if dockerfile is None:
                    raise InvalidArgument(f"Cannot locate specified Dockerfile: {request.dockerfile_path}")
                plan = builds.prepare(request, dockerfile)
            if fetcher is None:
                context.apply_ignore(request.dockerfile_path)
                context.drop_build_files(request.dockerfile_path)
            result = await builds.build(plan, context, _Progress(out), scratch,
                                        fetcher.fetch if fetcher is not None else None)
            await out.send(image_pb2.BuildImageProgress(image_id=result.image_id, tags=list(result.tags)))
        finally:
            if context is not None:
                context.close()
            await builds.remove_scratch(scratch)

    async def _receive_tar(self, builds: BuildManager, context: ContextArchive, first: Any,
                           inbound: Inbound) -> None:
        """The whole context as a tar: C{first} (None at the end) and the messages after it."""
        inflow = Inflow(builds.reactor)
        await _stream_in(inflow, builds.receive_context(inflow, context), _feed(inbound, inflow, first))

    async def PruneBuildCache(self, request: image_pb2.PruneBuildCacheRequest,
                              call: CallInfo) -> image_pb2.PruneBuildCacheResponse:
        deleted, reclaimed = await self.builds.prune()
        return image_pb2.PruneBuildCacheResponse(images_deleted=deleted, space_reclaimed=reclaimed)


async def _feed(inbound: Inbound, inflow: Inflow, first: Any) -> None:
    """
    The context messages of the client's stream, from C{first} on, into
    C{inflow} until the client is done sending (or the reader stopped).
    """
    message = first
    while True:
        if message is None:
            inflow.close()
            return
        if message.WhichOneof("request") != "context":
            raise InvalidArgument(f"BuildImage: a context tar was being sent, not {message.WhichOneof('request')}")
        if not await inflow.feed(message.context):
            return
        message = await inbound.receive()


def manifest_entry(entry: image_pb2.BuildContextEntry) -> ManifestEntry:
    return ManifestEntry(name=entry.name, mode=entry.mode, size=entry.size, mtime_ns=entry.mtime_ns,
                         linkname=entry.linkname, digest=entry.digest, devmajor=entry.devmajor,
                         devminor=entry.devminor, hardlink=entry.hardlink)


async def _manifest(inbound: Inbound, first: Any) -> list[ManifestEntry]:
    """Every manifest message, C{first} included, up to the last."""
    entries: list[ManifestEntry] = []
    message = first
    while True:
        if message is None or message.WhichOneof("request") != "manifest":
            raise InvalidArgument("BuildImage: the context manifest ended without its last message")
        entries += [manifest_entry(e) for e in message.manifest.entries]
        if message.manifest.last:
            return entries
        message = await inbound.receive()


async def _stream_in(inflow: Inflow, receiving: Deferred[Any], feeding: Coroutine[Any, Any, None]) -> None:
    """
    Await C{feeding} (the client's bytes into C{inflow}), then C{receiving}
    (what reads them out). If either fails, the other is stopped: the
    inflow aborted, the reader cancelled.
    """
    try:
        await feeding
        await receiving
    except BaseException as e:
        inflow.abort(PipeClosed("build ended"))
        receiving.addErrback(lambda _: None)
        if not receiving.called:
            receiving.cancel()
        if isinstance(e, PipeClosed):
            # The context's reader stopped because the call was
            # cancelled under it (the client went away): no failure
            # of the daemon's, so no traceback in its log.
            raise CancelledError(str(e)) from None
        raise


class _Fetcher:
    """Asks the client for files of a manifest context, and reads them in."""

    def __init__(self, builds: BuildManager, context: ContextArchive, inbound: Inbound, out: Outbound) -> None:
        self._builds = builds
        self._context = context
        self._inbound = inbound
        self._out = out

    def fetch(self, names: list[str]) -> Deferred[None]:
        return Deferred.fromCoroutine(self._fetch(names))

    async def _fetch(self, names: list[str]) -> None:
        self._out.write(image_pb2.BuildImageProgress(need_files=names))
        inflow = Inflow(self._builds.reactor)

        async def feed() -> None:
            while True:
                message = await self._inbound.receive()
                kind = message.WhichOneof("request") if message is not None else None
                if kind == "files_sent":
                    inflow.close()
                    return
                if kind != "context":
                    raise InvalidArgument(f"BuildImage: the client did not send the files asked for ({kind})")
                if not await inflow.feed(message.context):
                    return

        await _stream_in(inflow, self._builds.receive_files(self._context, inflow, names), feed())

