# -*- test-case-name: ross.test.integration.test_build -*-
"""
The engine's build subsystem: the builder over the engine's backend, its
cache, the builds' temporary files, and clean-up (what a daemon that died
mid-build left, and C{ross builder prune}).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Callable, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from ross.engine.build.cache import BuildCache
from ross.engine.build.enginebackend import BUILD_LABEL, EngineBackend
from ross.engine.fsutil import private_dir, remove_tree
from ross.engine.images.store import ImageStore
from ross.engine.pipes import Guard, Inflow, in_pool, in_thread
from ross.engine.reactors import IEngineReactor
from ross.errors import FailedPrecondition, NotFound

if TYPE_CHECKING:
    # The builder (the Dockerfile parser, instructions, tar and context
    # code) is imported at the first build: an idle daemon has no use for
    # its memory.
    from ross.engine.build.builder import Builder, BuildOutput, BuildRequest, BuildResult, Fetch, Plan
    from ross.engine.build.context import ContextArchive
    from ross.engine.containers.manager import ContainerManager
    from ross.engine.registry.manager import Registry

_T = TypeVar("_T")


class BuildManager:
    """
    @param root: the daemon's root; builds keep C{build/tmp/} under it.
    @param cache: the build cache (C{<root>/build/cache.db}); made before
        the image store, whose intermediate images are its steps' parents.
    """

    _log = Logger()

    def __init__(self, reactor: IEngineReactor, root: Path, images: ImageStore, containers: ContainerManager,
                 cache: BuildCache, registry: Registry | None = None) -> None:
        self._reactor = self.reactor = reactor
        self._state = root / "build"
        self._images = images
        self._containers = containers
        self.cache = cache
        self.backend = EngineBackend(reactor, images.content, images.catalog, images.unpacker, images.snapshotter,
                                     images.platform, containers, registry)
        #: The builds' temporary files.
        self.workdir = root / "build" / "tmp"

    @cached_property
    def builder(self) -> Builder:
        from ross.engine.build.builder import Builder

        return Builder(self._reactor, self.backend, self.cache, self.workdir, self.backend.platform)

    def start(self) -> Deferred[None]:
        """
        Load the cache and remove what builds in progress left when the
        daemon stopped (their containers, workspaces and files). Call it
        once the container manager has started.
        """
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        # Before the cache's database and the builds' files go into them,
        # and fixing what an older version left looser.
        for directory in (self._state, self.workdir):
            await in_pool(self._reactor, private_dir, directory)
        await self.cache.start()
        await in_pool(self._reactor, _remove_contents, self.workdir)
        for record in list(self._containers.records.values()):
            if record.config.labels.get(BUILD_LABEL):
                self._log.info("removing build container {id} left by a build that never ended", id=record.id)
                await self._containers.remove(record.id, force=True, volumes=True)
        removed = await self.backend.remove_leftovers()
        if removed:
            self._log.info("removed {count} build snapshots left by builds that never ended", count=removed)

    def stop(self) -> Deferred[None]:
        return self.cache.stop()

    # -- building

    def prepare(self, request: BuildRequest, dockerfile: bytes) -> Plan:
        """Check a build (L{ross.engine.build.builder.prepare}); InvalidArgument when it cannot run."""
        from ross.engine.build.builder import prepare

        return prepare(request, dockerfile)

    def receive_context(self, stream: Inflow, context: ContextArchive) -> Deferred[None]:
        """
        Read a build context tar from C{stream} into C{context} (in a
        thread of its own: the client may be slow); cancelling it makes
        the reader give up.
        """
        def receive() -> None:
            try:
                context.receive(stream)  # type: ignore[arg-type]
            finally:
                stream.reader_done()

        guard = Guard(lambda: stream.abort())

        async def run() -> None:
            await in_thread(self._reactor, receive, name="ross-build-context")

        return guard.run(run())

    def run_blocking(self, fn: Callable[..., _T], *args: object) -> Deferred[_T]:
        """C{fn(*args)} in a worker thread."""
        return in_pool(self._reactor, fn, *args)

    def build(self, plan: Plan, context: ContextArchive, output: BuildOutput, scratch: str,
              fetch: Fetch | None = None) -> Deferred[BuildResult]:
        return self.builder.build(plan, context, output, scratch, fetch)

    def receive_files(self, context: ContextArchive, stream: Inflow, names: list[str]) -> Deferred[None]:
        """Read the files C{names} of a manifest context from C{stream} (a thread of its own)."""

        def receive() -> None:
            try:
                context.receive_files(stream, names)  # type: ignore[arg-type]
            finally:
                stream.reader_done()

        return in_thread(self._reactor, receive, name="ross-build-files")

    def scratch_dir(self) -> Deferred[str]:
        """A private directory for one build's files."""
        return in_pool(self._reactor, self.builder.scratch_dir)

    def remove_scratch(self, scratch: str) -> Deferred[None]:
        return in_pool(self._reactor, remove_tree, scratch, True)

    # -- pruning

    def prune(self) -> Deferred[tuple[list[str], int]]:
        """
        Forget the build cache and remove its images that nothing else
        needs (no name, no container); the IDs removed and the bytes
        reclaimed.
        """
        return Deferred.fromCoroutine(self._prune())

    async def _prune(self) -> tuple[list[str], int]:
        before = sum(b.size for b in await self._images.content.list())
        entries = self.cache.entries()
        removed: list[str] = []
        # Children first, so each removal frees what only it held.
        for entry in sorted(entries, key=lambda e: e.created_ns, reverse=True):
            try:
                image = await self._images.resolve(entry.image)
            except NotFound:
                continue
            if image.names:
                continue
            try:
                await self._images.remove(entry.image)
            except (FailedPrecondition, NotFound):
                continue
            removed.append(entry.image)
        await self.cache.forget([e.key for e in entries])
        after = sum(b.size for b in await self._images.content.list())
        return removed, max(0, before - after)


def _remove_contents(directory: Path) -> None:
    """
    Remove what builds in progress when the daemon died left in
    C{directory} (blocking).
    """
    if directory.is_dir():
        for entry in directory.iterdir():
            remove_tree(entry, ignore_errors=True)
