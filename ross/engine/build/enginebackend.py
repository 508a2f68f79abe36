# -*- test-case-name: ross.test.integration.test_build -*-
"""
L{ross.engine.build.backend.BuildBackend} over Ross's engine: images from
the image store (and a registry), RUN steps in real containers of the
container manager, workspaces and views as snapshots, commits written
into the content store the way the image store's own commit writes them.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import attrs
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from ross.engine.build.backend import BuildImage, Container, Root, RunOutput, RunSpec
from ross.engine.containers.changes import RUNTIME_FILES, runtime_only_dirs
from ross.engine.containers.config import ContainerConfig, HealthConfig, HostConfig, LogConfig
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
from ross.engine.images.metadata import NewImage
from ross.engine.images.unpack import UNPACK_LABEL, Unpacker
from ross.engine.layers.beneath import Tree
from ross.engine.layers.diff import DiffResult
from ross.engine.pipes import in_pool
from ross.engine.records import Descriptor, Mount, Platform
from ross.errors import AlreadyExists, FailedPrecondition, NotFound, RossError
from ross.interfaces import IComparer, IShim, ISnapshotter
from ross.protocols.shim import ContainerStartError
from ross.reference import is_id_prefix, is_image_id

if TYPE_CHECKING:
    from ross.engine.containers.manager import ContainerManager
    from ross.engine.registry.manager import Registry
    from ross.engine.runtime.runtime import Attachment

#: Label of the snapshots a build makes for itself (workspaces, views):
#: what a daemon that died mid-build left is found by it.
BUILD_LABEL = "ross.io/build"
#: diff ID of a layer with no entries: a step that changed nothing.
EMPTY_LAYER = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
#: Build layers are stored as plain tars, as docker's builder keeps them:
#: compressing is most of the cost of a step's commit, and a push or save
#: of the image can compress later.
LAYER_COMPRESSION = "none"


@attrs.define
class _Root:
    """A workspace, view or container's root: its snapshot C{key}."""

    key: str
    upper: str
    lowers: tuple[str, ...]
    id: str = ""


def _root_of(key: str, mounts: Sequence[Mount], container: str = "") -> _Root:
    root = mounts[0]
    if root.type != "overlay":
        writable = "rw" in root.options
        return _Root(key, root.source if writable else "", () if writable else (root.source,), container)
    options = dict(o.split("=", 1) for o in root.options if "=" in o)
    lowers = tuple(options.get("lowerdir", "").split(":")) if options.get("lowerdir") else ()
    return _Root(key, options.get("upperdir", ""), lowers, container)


class _Sink:
    """A diff's bytes into a content-store writer (from the diff's thread)."""

    def __init__(self, writer: Writer) -> None:
        self.writer = writer

    def write(self, data: bytes | memoryview) -> None:
        self.writer.write(data)


def _runtime_only_dirs(upper: str) -> list[str]:
    """L{runtime_only_dirs} of a step's layer (blocking)."""
    with Tree(upper) as tree:
        return runtime_only_dirs(tree)


class EngineBackend:
    """
    @param content: the content store the image store's blobs are in.
    @param catalog: the image store's records (base images, new images).
    @param unpacker: unpacks the image store's layers into C{snapshotter}.
    @param snapshotter: the snapshotter of the image store (workspaces,
        views and the containers' roots are its snapshots).
    @param platform: the image store's platform.
    @param containers: the container manager.
    @param registry: pulls base images that are not here (None: never).
    """

    _log = Logger()

    def __init__(self, reactor: IReactorThreads, content: ContentStore, catalog: ImageCatalog, unpacker: Unpacker,
                 snapshotter: ISnapshotter, platform: Platform, containers: ContainerManager,
                 registry: Registry | None = None) -> None:
        self._reactor = reactor
        self._content = content
        self._catalog = catalog
        self._unpacker = unpacker
        self._platform = platform
        self._containers = containers
        self._snapshotter = snapshotter
        self._registry = registry
        # Containers to kill as soon as they count as running: a kill asked
        # for while a start is still recording its state would be refused.
        self._doomed: set[str] = set()

    @property
    def platform(self) -> str:
        p = self._platform
        return f"{p.os}/{p.architecture}" + (f"/{p.variant}" if p.variant else "")

    # -- images

    def image(self, reference: str, pull: bool = False) -> Deferred[BuildImage]:
        return Deferred.fromCoroutine(self._image(reference, pull))

    async def _image(self, reference: str, pull: bool) -> BuildImage:
        pullable = self._registry is not None and not is_image_id(reference) and not is_id_prefix(reference)
        if pull and pullable:
            await self._pull(reference)
        try:
            found = await self._catalog.resolve(reference)
        except NotFound as missing:
            if not pullable or pull:
                raise
            try:
                await self._pull(reference)
            except RossError as e:
                raise NotFound(f"{missing}, and it could not be pulled: {e}") from None
            found = await self._catalog.resolve(reference)
        return _build_image(found)

    async def _pull(self, reference: str) -> None:
        # Only a pullable reference is pulled, and only with a registry.
        assert self._registry is not None
        await self._registry.pull(reference)

    # -- roots

    def workspace(self, parent: BuildImage) -> Deferred[Root]:
        return Deferred.fromCoroutine(self._snapshot(parent, writable=True))

    def view(self, image: BuildImage) -> Deferred[Root]:
        return Deferred.fromCoroutine(self._snapshot(image, writable=False))

    async def _snapshot(self, image: BuildImage, writable: bool) -> Root:
        chain = ""
        if image.id:
            base = await self._catalog.resolve(image.id)
            chain = await self._unpacker.unpack(base.layers, base.config.diff_ids)
        key = f"build-{secrets.token_hex(8)}"
        labels = {BUILD_LABEL: "workspace" if writable else "view"}
        if writable:
            mounts = await self._snapshotter.prepare(key, chain, labels)
        elif chain:
            mounts = await self._snapshotter.view(key, chain, labels)
        else:
            # A view of scratch: nothing to see.
            return _Root("", "", ())
        return _root_of(key, mounts)

    # -- containers

    def create(self, parent: BuildImage, spec: RunSpec) -> Deferred[Container]:
        return Deferred.fromCoroutine(self._create(parent, spec))

    async def _create(self, parent: BuildImage, spec: RunSpec) -> Container:
        if not parent.id:
            raise FailedPrecondition("cannot run a command in an empty image (FROM scratch with no files yet)")
        config = ContainerConfig(image=parent.id, cmd=spec.args, entrypoint=(), env=spec.env, user=spec.user,
                                 working_dir=spec.workdir, healthcheck=HealthConfig(test=("NONE",)),
                                 labels={BUILD_LABEL: "run"})
        network = "" if spec.network == "default" else spec.network
        host = HostConfig(network_mode=network, log_config=LogConfig(type="none"),
                          binds=tuple(f"{source}:{target}:ro" for source, target in spec.binds))
        record = await self._containers.create("", config, host)
        try:
            mounts = await self._snapshotter.mounts(record.snapshot_key)
        except BaseException:
            await self._containers.remove(record.id, force=True, volumes=True)
            raise
        return _root_of(record.snapshot_key, mounts, record.id)

    def start(self, container: Container, output: RunOutput) -> Deferred[int]:
        return Deferred.fromCoroutine(self._start(container, output))

    async def _start(self, container: Container, output: RunOutput) -> int:
        attached: list[Attachment] = []

        async def attach(shim: IShim) -> None:
            attachment = await shim.attach(output.write)
            attached.append(attachment)
            output.registerProducer(attachment.producer, True)

        exited = self._containers.wait_exit(container.id)
        try:
            try:
                await self._containers.start_container(container.id, before=attach)
            except ContainerStartError as e:
                output.write("stderr", (e.message + "\n").encode())
                return e.exit_code
            if container.id in self._doomed:
                await self._kill_now(container.id)
            status = await attached[0].done
            if status is None:
                status = await exited
            return int(status.exit_code)
        finally:
            self._doomed.discard(container.id)
            if attached:
                output.unregisterProducer()
                attached[0].detach()
            if not exited.called:
                exited.addErrback(lambda f: f.trap(CancelledError))
                exited.cancel()

    def kill(self, container: Container) -> Deferred[None]:
        self._doomed.add(container.id)
        return Deferred.fromCoroutine(self._kill_now(container.id))

    async def _kill_now(self, cid: str) -> None:
        try:
            await self._containers.kill_container(cid, "SIGKILL")
        except (FailedPrecondition, NotFound):
            # Not running yet (its start kills it) or not any more.
            pass

    def release(self, root: Root) -> Deferred[None]:
        async def release() -> None:
            assert isinstance(root, _Root)
            if root.id:
                self._doomed.discard(root.id)
                await self._containers.remove(root.id, force=True, volumes=True)
            elif root.key:
                await self._snapshotter.remove(root.key)

        return Deferred.fromCoroutine(release())

    # -- images out

    def tag(self, image: BuildImage, reference: str) -> Deferred[None]:
        return Deferred.fromCoroutine(self._catalog.tag(image.id, reference))

    def commit(self, root: Root | None, parent: BuildImage, config: Mapping[str, Any], created_by: str,
               author: str = "") -> Deferred[BuildImage]:
        return Deferred.fromCoroutine(self._commit(root, parent, config, created_by, author))

    async def _commit(self, root: Root | None, parent: BuildImage, config: Mapping[str, Any], created_by: str,
                      author: str) -> BuildImage:
        base = await self._catalog.resolve(parent.id) if parent.id else None
        blobs = self._content.blobs
        lease: Lease = await self._unpacker.lease()
        created: list[str] = []
        try:
            layer: Descriptor | None = None
            diff_id = ""
            if root is not None:
                assert isinstance(root, _Root)
                exclude: list[str] = []
                if root.id:
                    exclude = [*RUNTIME_FILES, *await in_pool(self._reactor, _runtime_only_dirs, root.upper)]
                writer = await in_pool(self._reactor, blobs.writer)
                try:
                    diff: DiffResult = await IComparer(self._snapshotter).diff(root.key, _Sink(writer),
                                                                               LAYER_COMPRESSION, exclude)
                    if diff.diff_id == EMPTY_LAYER:
                        await in_pool(self._reactor, writer.abort)
                    else:
                        info = await in_pool(self._reactor, writer.commit, lease)
                        layer = Descriptor(diff.media_type, info.digest, info.size)
                        diff_id = diff.diff_id
                except BaseException:
                    await in_pool(self._reactor, writer.abort)
                    raise
            layers = (base.layers if base is not None else ()) + ((layer,) if layer is not None else ())
            diff_ids = (base.config.diff_ids if base is not None else ()) + ((diff_id,) if diff_id else ())
            if layer is not None:
                if root is not None and not root.id:
                    await self._adopt(root, layer, diff_ids, diff.size, created)
                await self._unpacker.unpack(layers, diff_ids, created)
            config_digest, manifest = await in_pool(
                self._reactor, self._write, base, parent, layer, diff_ids, dict(config), created_by, author, lease)
            new = NewImage(target=manifest, manifest=manifest.digest, config=config_digest,
                           blobs=frozenset({manifest.digest, config_digest, *(d.digest for d in layers)}),
                           chains=tuple(chain_ids(diff_ids)))
            await self._catalog.record(new, [], lease, "build")
        except BaseException:
            await self._unpacker.undo(lease, created)
            raise
        return _build_image(await self._catalog.resolve(config_digest))

    async def _adopt(self, root: Root, layer: Descriptor, diff_ids: Sequence[str], size: int,
                     created: list[str]) -> None:
        """
        Make a workspace the new layer's snapshot as it is: its upper
        directory holds exactly what the layer does (no runtime files, as
        a container's has), so extracting the layer again would only copy
        it.
        """
        assert isinstance(root, _Root)
        chain = chain_ids(diff_ids)[-1]
        await in_pool(self._reactor, self._catalog.db.record_layer, layer.digest, diff_ids[-1], size)
        try:
            await self._snapshotter.commit(chain, root.key, {UNPACK_LABEL: diff_ids[-1]})
        except AlreadyExists:
            # Another build made the same layer meanwhile: the workspace goes.
            return
        created.append(chain)
        root.key = ""

    def _write(self, base: Image | None, parent: BuildImage, layer: Descriptor | None, diff_ids: Sequence[str],
               config: dict[str, Any], created_by: str, author: str, lease: Lease) -> tuple[str, Descriptor]:
        """Blocking: the new image's config and manifest, under C{lease}."""
        raw = dict(parent.config)
        platform = self._platform
        doc: dict[str, Any] = {
            "architecture": raw.get("architecture") or platform.architecture,
            "os": raw.get("os") or platform.os,
        }
        for key in ("os.version", "os.features", "variant"):
            if raw.get(key):
                doc[key] = raw[key]
        if not raw and platform.variant:
            doc["variant"] = platform.variant
        if author:
            doc["author"] = author
        seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
        created = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + ".%09dZ" % nanos
        step: dict[str, Any] = {"created": created, "created_by": created_by}
        if author:
            step["author"] = author
        if layer is None:
            step["empty_layer"] = True
        history = raw.get("history")
        doc.update({
            "config": config,
            "created": created,
            "history": (list(history) if isinstance(history, list) else []) + [step],
            "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        })
        blobs = self._content.blobs
        config_bytes = canonical_json(doc)
        parse_config(config_bytes)
        config_info = blobs.write_bytes(config_bytes, None, lease)
        layers = list(json.loads(base.manifest_json).get("layers") or []) if base is not None else []
        if layer is not None:
            layers.append(descriptor_json(layer))
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": OCI_CONFIG, "digest": config_info.digest, "size": config_info.size},
            "layers": layers,
        }
        manifest_bytes = canonical_json(manifest_doc)
        manifest_info = blobs.write_bytes(manifest_bytes, None, lease)
        return config_info.digest, Descriptor(OCI_MANIFEST, manifest_info.digest, manifest_info.size)

    # -- housekeeping

    async def remove_leftovers(self) -> int:
        """Remove the workspaces and views of builds a dead daemon left; how many."""
        removed = 0
        for info in await self._snapshotter.list([f"labels.\"{BUILD_LABEL}\""]):
            try:
                await self._snapshotter.remove(info.name)
                removed += 1
            except (NotFound, FailedPrecondition):
                self._log.warn("could not remove build snapshot {key}", key=info.name)
        return removed


def _build_image(image: Image) -> BuildImage:
    return BuildImage(id=image.id, config=json.loads(image.config_json))
