# -*- test-case-name: ross.test.integration.test_images -*-
"""
The image store over the real content store and overlay snapshotter:
load, unpack into chain-ID snapshots (shared layers once), import, tag,
rmi, prune, save round trips, and bad input that changes nothing.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import zstandard
from twisted.internet import reactor
from twisted.internet.defer import Deferred, gatherResults
from twisted.trial.unittest import TestCase
from zope.interface.verify import verifyObject

from ross.engine.content.store import ContentStore
from ross.engine.events import EventBus, EventFilter
from ross.engine.images.manifest import chain_ids
from ross.engine.images.catalog import ImageUser
from ross.engine.images.store import ImageStore
from ross.engine.reactors import engine_reactor
from ross.engine.snapshots import OverlaySnapshotter
from ross.errors import DataLoss, FailedPrecondition, InvalidArgument, NotFound
from ross.interfaces import IImageStore
from ross.testing.images import (
    busybox_layer,
    docker_archive,
    image_config,
    oci_layout,
    tar_directory,
)


def small_layer(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in sorted(files.items()):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            info.mtime = 1700000000
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


BASE = small_layer({"base.txt": b"base\n"})
LAYER_A = small_layer({"a.txt": b"a\n"})
LAYER_B = small_layer({"b.txt": b"b\n"})


class Endless:
    """
    A client's stream: C{prefix}, then C{filler} repeated up to C{total}
    bytes in all, made as it is read; C{read_bytes} counts what was taken.
    """

    def __init__(self, total: int, prefix: bytes = b"", filler: bytes = b"\0") -> None:
        self._left = total
        self._prefix = prefix
        self._block = filler * (65536 // len(filler))
        self.read_bytes = 0

    def read(self, n: int = -1) -> bytes:
        n = min(self._left if n < 0 else n, self._left)
        out = bytearray(self._prefix[:n])
        self._prefix = self._prefix[len(out):]
        while len(out) < n:
            out += self._block[: n - len(out)]
        self._left -= len(out)
        self.read_bytes += len(out)
        return bytes(out)


async def drain(flow: Any) -> bytes:
    out = bytearray()
    while True:
        chunk = await flow.get()
        if chunk is None:
            return bytes(out)
        out += chunk


class StoreFixture:
    """
    A private root with the real content store, overlay snapshotter and
    image store, stopped and removed after each test.
    """

    async def make_store(self: Any, name: str = "root") -> ImageStore:
        root = Path(self.mktemp()).absolute() / name
        self.events = EventBus(engine_reactor(reactor))
        snapshotter = OverlaySnapshotter(engine_reactor(reactor), root / "snapshots" / "overlayfs", self.events)
        await snapshotter.start()
        self.addCleanup(snapshotter.stop)
        store = ImageStore(engine_reactor(reactor), root / "images",
                           ContentStore(engine_reactor(reactor), root / "content"), snapshotter,
                           self.events)
        await store.start()
        self.addCleanup(store.stop)
        self.root = root
        return store

    async def load_file(self: Any, store: ImageStore, path: Path) -> Any:
        with open(path, "rb") as f:
            return await store.load(f)

    async def state(self: Any, store: ImageStore) -> tuple[Any, ...]:
        """Everything a failed operation must leave as it was."""
        images = sorted((s.row.target.digest, s.row.names) for s in await store.list())
        blobs = [b.digest for b in await store.content.list()]
        snapshots = sorted(s.name for s in await store.snapshotter.list())
        ingest = os.listdir(store.content.blobs.ingest_dir)
        return images, blobs, snapshots, ingest


class LoadTests(StoreFixture, TestCase):
    async def test_interface(self) -> None:
        store = await self.make_store()
        verifyObject(IImageStore, store)

    async def test_load_docker_archive(self) -> None:
        """
        A docker-save archive loads: named as its RepoTags say, ID = config
        digest, config readable, top layer unpacked as its chain ID.
        """
        store = await self.make_store()
        built = docker_archive(Path(self.mktemp()), tags=["busybox:latest", "localhost:5000/bb:1"])
        result = await self.load_file(store, built.path)
        self.assertEqual(result.loaded, ("Loaded image: busybox:latest", "Loaded image: localhost:5000/bb:1"))
        self.assertEqual(result.image_ids, (built.config_digest,))
        image = await store.resolve("busybox")
        self.assertEqual(image.id, built.config_digest)
        self.assertEqual(image.config.config.cmd, ("sh",))
        self.assertEqual(image.chain_id, chain_ids(built.diff_ids)[-1])
        self.assertEqual(image.names, ("docker.io/library/busybox:latest", "localhost:5000/bb:1"))
        info = await store.snapshotter.stat(image.chain_id)
        self.assertEqual(info.kind.value, "committed")
        self.assertEqual(store.count, 1)
        self.assertEqual((await store.resolve(built.config_digest[7:19])).id, built.config_digest)
        self.assertEqual((await store.resolve(built.config_digest)).id, built.config_digest)
        self.assertEqual(await store.ensure_unpacked(image), image.chain_id)
        self.assertEqual((await self.state(store))[3], [])

    async def test_load_events(self) -> None:
        """
        A load publishes an image "load" event per name.
        """
        store = await self.make_store()
        seen: list[Any] = []
        self.events.subscribe(seen.append, EventFilter(types=frozenset({"image"})))
        built = docker_archive(Path(self.mktemp()), tags=["a:1", "b:2"])
        await self.load_file(store, built.path)
        self.assertEqual([(e.action, e.actor_id, e.attributes["name"]) for e in seen], [
            ("load", built.config_digest, "docker.io/library/a:1"),
            ("load", built.config_digest, "docker.io/library/b:2"),
        ])

    async def test_shared_layers_extracted_once(self) -> None:
        """
        Two images sharing a base layer: the base chain is one snapshot,
        prepared once; each image's top is its own chain ID.
        """
        store = await self.make_store()
        prepares: list[Any] = []
        self.events.subscribe(prepares.append, EventFilter(types=frozenset({"snapshot"}),
                                                           actions=frozenset({"prepare"})))
        one = docker_archive(Path(self.mktemp()), tags=["one:1"], layers=[BASE, LAYER_A])
        two = docker_archive(Path(self.mktemp()), tags=["two:1"], layers=[BASE, LAYER_B])
        await self.load_file(store, one.path)
        await self.load_file(store, two.path)
        snapshots = sorted(s.name for s in await store.snapshotter.list())
        expected = sorted(set(chain_ids(one.diff_ids)) | set(chain_ids(two.diff_ids)))
        self.assertEqual(snapshots, expected)
        self.assertEqual(len(snapshots), 3)
        self.assertEqual(len(prepares), 3)

    async def test_concurrent_unpacks(self) -> None:
        """
        Loads running at the same time over the same layers do not collide:
        each chain is extracted once and both loads succeed.
        """
        store = await self.make_store()
        archives = [docker_archive(Path(self.mktemp()), tags=[f"c{i}:1"], layers=[BASE, LAYER_A if i % 2 else LAYER_B])
                    for i in range(4)]
        results = await gatherResults([Deferred.fromCoroutine(self.load_file(store, a.path)) for a in archives])
        self.assertEqual(len(results), 4)
        snapshots = [s.name for s in await store.snapshotter.list()]
        self.assertEqual(len(snapshots), 3)
        for a in archives:
            image = await store.resolve(a.config_digest)
            self.assertEqual(await store.ensure_unpacked(image), chain_ids(a.diff_ids)[-1])

    async def test_load_gzip_layers_and_stream(self) -> None:
        """
        Gzip-compressed layers inside a docker archive, and a gzip'd
        archive as a whole, load with the right diff IDs.
        """
        store = await self.make_store()
        built = docker_archive(Path(self.mktemp()), tags=["gz:1"], layers=[BASE, LAYER_A], compress=True)
        whole = Path(self.mktemp())
        whole.write_bytes(gzip.compress(built.path.read_bytes()))
        result = await self.load_file(store, whole)
        self.assertEqual(result.image_ids, (built.config_digest,))
        image = await store.resolve("gz:1")
        self.assertTrue(all(layer.media_type.endswith(".gzip") for layer in image.layers))

    async def test_load_oci_layout(self) -> None:
        """
        An OCI layout keeps its manifest digest; a full reference in
        ref.name names the image; a bare tag loads it untagged.
        """
        store = await self.make_store()
        named = oci_layout(Path(self.mktemp()), ref_name="docker.io/library/bb:oci", layers=[BASE, LAYER_A])
        result = await self.load_file(store, tar_directory(named.path, Path(self.mktemp())))
        self.assertEqual(result.loaded, ("Loaded image: bb:oci",))
        image = await store.resolve("bb:oci")
        self.assertEqual(image.target.digest, named.manifest_digest)
        bare = oci_layout(Path(self.mktemp()), ref_name="latest", layers=[BASE, LAYER_B])
        result = await self.load_file(store, tar_directory(bare.path, Path(self.mktemp())))
        self.assertEqual(result.loaded, (f"Loaded image ID: {bare.config_digest}",))
        dangling = await store.list(filters=[("dangling", "true")])
        self.assertEqual([s.row.config for s in dangling], [bare.config_digest])

    async def test_load_index(self) -> None:
        """
        An OCI index with this host's manifest and a foreign one whose
        blobs are absent: the index is the target, the host's manifest
        the image.
        """
        from ross.engine.images.manifest import host_platform

        store = await self.make_store()
        layout = oci_layout(Path(self.mktemp()), ref_name="", layers=[BASE])
        blobs = layout.path / "blobs" / "sha256"
        manifest_size = (blobs / layout.manifest_digest[7:]).stat().st_size
        plat = host_platform()
        index = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + "1" * 64,
                 "size": 100, "platform": {"os": "linux", "architecture": "s390x"}},
                {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": layout.manifest_digest,
                 "size": manifest_size, "platform": {"os": "linux", "architecture": plat.architecture}},
            ]}).encode()
        import hashlib

        index_digest = "sha256:" + hashlib.sha256(index).hexdigest()
        (blobs / index_digest[7:]).write_bytes(index)
        (layout.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": index_digest, "size": len(index),
            "annotations": {"io.containerd.image.name": "docker.io/library/multi:1"}}]}))
        await self.load_file(store, tar_directory(layout.path, Path(self.mktemp())))
        image = await store.resolve("multi:1")
        self.assertEqual(image.target.digest, index_digest)
        self.assertEqual(image.manifest.digest, layout.manifest_digest)
        self.assertEqual(image.id, layout.config_digest)


class ManageTests(StoreFixture, TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.store = await self.make_store()
        self.built = docker_archive(Path(self.mktemp()), tags=["busybox:latest"], layers=[BASE, LAYER_A])
        await self.load_file(self.store, self.built.path)

    async def test_tag_and_untag(self) -> None:
        """
        A tag adds a name; rmi of one of two names only untags.
        """
        await self.store.tag("busybox", "mine/bb:v1")
        image = await self.store.resolve("mine/bb:v1")
        self.assertEqual(image.id, self.built.config_digest)
        result = await self.store.remove("busybox")
        self.assertEqual(result.untagged, ("Untagged: busybox:latest",))
        self.assertEqual(result.deleted, ())
        with self.assertRaises(NotFound):
            await self.store.resolve("busybox")

    async def test_tag_errors(self) -> None:
        """
        Invalid targets are InvalidArgument with docker's words; an unknown
        source is NotFound; the store does not change.
        """
        before = await self.state(self.store)
        with self.assertRaises(InvalidArgument) as e:
            await self.store.tag("busybox", "Bad:Tag")
        self.assertIn("must be lowercase", str(e.exception))
        with self.assertRaises(InvalidArgument):
            await self.store.tag("busybox", "foo:bad tag")
        with self.assertRaises(InvalidArgument):
            await self.store.tag("busybox", "foo@sha256:" + "a" * 64)
        with self.assertRaises(NotFound) as nf:
            await self.store.tag("nothere", "foo:1")
        self.assertEqual(str(nf.exception), "No such image: nothere:latest")
        self.assertEqual(await self.state(self.store), before)

    async def test_rmi_deletes_content_and_snapshots(self) -> None:
        """
        Removing the last name deletes the image, its blobs and its
        snapshots; the store is empty again.
        """
        result = await self.store.remove("busybox:latest")
        self.assertEqual(result.untagged, ("Untagged: busybox:latest",))
        chains = chain_ids(self.built.diff_ids)
        self.assertEqual(result.deleted, (f"Deleted: {self.built.config_digest}",
                                          f"Deleted: {chains[1]}", f"Deleted: {chains[0]}"))
        self.assertEqual(await self.state(self.store), ([], [], [], []))
        self.assertEqual(self.store.count, 0)

    async def test_rmi_keeps_shared(self) -> None:
        """
        Removing one of two images sharing a base keeps the base snapshot
        and the blobs the other image references.
        """
        other = docker_archive(Path(self.mktemp()), tags=["other:1"], layers=[BASE, LAYER_B])
        await self.load_file(self.store, other.path)
        await self.store.remove("busybox")
        images, blobs, snapshots, _ = await self.state(self.store)
        self.assertEqual(snapshots, sorted(chain_ids(other.diff_ids)))
        image = await self.store.resolve("other:1")
        expected = {image.target.digest, image.id, *(l.digest for l in image.layers)}
        self.assertEqual(set(blobs), expected)

    async def test_rmi_unknown(self) -> None:
        """
        rmi of an unknown image: NotFound naming it, nothing changes.
        """
        before = await self.state(self.store)
        with self.assertRaises(NotFound) as e:
            await self.store.remove("nothere")
        self.assertEqual(str(e.exception), "No such image: nothere:latest")
        with self.assertRaises(NotFound):
            await self.store.remove("sha256:" + "f" * 64)
        with self.assertRaises(InvalidArgument):
            await self.store.remove("Bad Name")
        self.assertEqual(await self.state(self.store), before)

    async def test_rmi_in_use(self) -> None:
        """
        While a container uses the image, rmi refuses (FailedPrecondition)
        and changes nothing; force untags but keeps the image for the
        container; a running container's image cannot be deleted even
        with force.
        """
        users = {self.built.config_digest: [ImageUser("c" * 64, running=False)]}
        self.store.in_use = lambda: users
        before = await self.state(self.store)
        with self.assertRaises(FailedPrecondition) as e:
            await self.store.remove("busybox")
        self.assertIn("container cccccccccccc is using its referenced image", str(e.exception))
        with self.assertRaises(FailedPrecondition):
            await self.store.remove(self.built.config_digest)
        self.assertEqual(await self.state(self.store), before)
        users[self.built.config_digest] = [ImageUser("d" * 64, running=True)]
        with self.assertRaises(FailedPrecondition) as e:
            await self.store.remove(self.built.config_digest, force=True)
        self.assertIn("cannot be forced", str(e.exception))
        self.assertEqual(await self.state(self.store), before)
        result = await self.store.remove("busybox", force=True)
        self.assertEqual(result.deleted, ())
        image = await self.store.resolve(self.built.config_digest)
        self.assertEqual(image.names, ())

    async def test_prune(self) -> None:
        """
        prune removes dangling images only; -a also removes tagged ones no
        container uses.
        """
        dangling = docker_archive(Path(self.mktemp()), tags=[], layers=[BASE, LAYER_B])
        await self.load_file(self.store, dangling.path)
        lines, reclaimed = await self.store.prune()
        self.assertEqual(lines[0], f"deleted: {dangling.config_digest}")
        self.assertGreater(reclaimed, 0)
        self.assertEqual([s.row.config for s in await self.store.list()], [self.built.config_digest])
        self.store.in_use = lambda: {self.built.config_digest: [ImageUser("c" * 64)]}
        lines, _ = await self.store.prune(all=True)
        self.assertEqual(lines, [])
        self.store.in_use = None
        lines, _ = await self.store.prune(all=True)
        self.assertEqual(lines[:2], ["untagged: busybox:latest", f"deleted: {self.built.config_digest}"])
        self.assertEqual(await self.state(self.store), ([], [], [], []))

    async def test_prune_refuses_unknown_filters(self) -> None:
        """
        A filter image prune does not know, or a bad value for one it does,
        is InvalidArgument with docker's words, and nothing is removed: a
        dropped filter would widen the prune to every unused image.
        """
        before = await self.state(self.store)
        with self.assertRaises(InvalidArgument) as e:
            await self.store.prune(all=True, filters=[("bogus", "1")])
        self.assertEqual(str(e.exception), "invalid filter 'bogus'")
        for bad in [[("reference", "busybox")], [("until", "yesterday")], [("until", "1h"), ("until", "2h")],
                    [("dangling", "maybe")], [("dangling", "true"), ("dangling", "false")]]:
            with self.assertRaises(InvalidArgument):
                await self.store.prune(all=True, filters=bad)
        with self.assertRaises(InvalidArgument):
            await self.store.prune(all=True, filters=[("dangling", "true")])
        self.assertEqual(await self.state(self.store), before)

    async def test_prune_until(self) -> None:
        """
        until=TIME prunes only images created before it (RFC 3339, Unix
        seconds or a duration); the test image was created in November 2023.
        """
        before = await self.state(self.store)
        for until in ("2023-01-01T00:00:00Z", "1600000000", "2023-11-14T22:13:19.5Z"):
            lines, _ = await self.store.prune(all=True, filters=[("until", until)])
            self.assertEqual(lines, [], until)
        self.assertEqual(await self.state(self.store), before)
        lines, _ = await self.store.prune(all=True, filters=[("until", "10m")])
        self.assertEqual(lines[:2], ["untagged: busybox:latest", f"deleted: {self.built.config_digest}"])
        self.assertEqual(await self.state(self.store), ([], [], [], []))

    async def test_prune_labels_and_dangling(self) -> None:
        """
        label!=KEY keeps the images with that label; dangling=false prunes
        tagged images as --all does.
        """
        with io.BytesIO(LAYER_B) as f:
            kept = await self.store.import_image(f, "kept:1", ["LABEL keep=yes"])
        lines, _ = await self.store.prune(filters=[("dangling", "false"), ("label!", "keep")])
        self.assertEqual(lines[:2], ["untagged: busybox:latest", f"deleted: {self.built.config_digest}"])
        self.assertEqual([s.row.config for s in await self.store.list()], [kept])
        lines, _ = await self.store.prune(all=True, filters=[("label", "keep=no")])
        self.assertEqual(lines, [])
        lines, _ = await self.store.prune(all=True, filters=[("label", "keep=yes")])
        self.assertEqual(lines[1], f"deleted: {kept}")

    async def test_history(self) -> None:
        """
        History is newest first; the top entry carries the ID and tags,
        sizes are the uncompressed layer sizes.
        """
        items = await self.store.history("busybox")
        self.assertEqual([i.id for i in items], [self.built.config_digest, "<missing>"])
        self.assertEqual(items[0].tags, ("busybox:latest",))
        self.assertEqual([i.size for i in items], [len(LAYER_A), len(BASE)])
        self.assertEqual(items[1].created_by, "ross.testing layer 0")

    async def test_list_filters(self) -> None:
        await self.store.tag("busybox", "other/name:2")
        self.assertEqual(len(await self.store.list(filters=[("reference", "busybox")])), 1)
        self.assertEqual(len(await self.store.list(filters=[("reference", "nomatch*")])), 0)
        self.assertEqual(len(await self.store.list(filters=[("dangling", "false")])), 1)
        with self.assertRaises(InvalidArgument):
            await self.store.list(filters=[("bogus", "1")])

    async def test_import(self) -> None:
        """
        A rootfs tarball becomes a one-layer OCI image with --change
        applied, unpacked, tagged, with docker's import history.
        """
        with io.BytesIO(gzip.compress(LAYER_B)) as f:
            image_id = await self.store.import_image(
                f, "imported:1", ["CMD [\"/bin/sh\", \"-c\", \"echo hi\"]", "ENV A=1 B=2", "WORKDIR /srv",
                                  "EXPOSE 80", "LABEL x=y", "USER nobody", "STOPSIGNAL SIGINT"])
        image = await self.store.resolve("imported:1")
        self.assertEqual(image.id, image_id)
        c = image.config.config
        self.assertEqual((c.cmd, c.env, c.working_dir, c.exposed_ports, dict(c.labels), c.user, c.stop_signal),
                         (("/bin/sh", "-c", "echo hi"), ("A=1", "B=2"), "/srv", ("80/tcp",), {"x": "y"},
                          "nobody", "SIGINT"))
        self.assertEqual(image.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+gzip")
        await self.store.snapshotter.stat(image.chain_id)
        self.assertEqual(image.config.history[0].comment, "Imported from -")

    async def test_import_events(self) -> None:
        """
        An import publishes one image "import" event, with the image's name
        when it has one; a name it takes from another image untags that one.
        """
        seen: list[Any] = []
        self.events.subscribe(seen.append, EventFilter(types=frozenset({"image"})))
        with io.BytesIO(LAYER_B) as f:
            unnamed = await self.store.import_image(f)
        with io.BytesIO(LAYER_A) as f:
            named = await self.store.import_image(f, "busybox")
        self.assertEqual([(e.action, e.actor_id, e.attributes.get("name")) for e in seen], [
            ("import", unnamed, None),
            ("import", named, "docker.io/library/busybox:latest"),
            ("untag", self.built.config_digest, "docker.io/library/busybox:latest"),
        ])
        self.assertEqual(self.store.count, 3)

    async def test_import_bad_input(self) -> None:
        """
        A bad reference or change, an empty or non-tar input: a clear
        error and no change.
        """
        before = await self.state(self.store)
        with self.assertRaises(InvalidArgument):
            await self.store.import_image(io.BytesIO(LAYER_B), "UPPER")
        with self.assertRaises(InvalidArgument) as e:
            await self.store.import_image(io.BytesIO(LAYER_B), "x:1", ["RUN rm -rf /"])
        self.assertEqual(str(e.exception), "RUN is not a valid change command")
        with self.assertRaises(InvalidArgument):
            await self.store.import_image(io.BytesIO(b""), "x:1")
        with self.assertRaises(InvalidArgument):
            await self.store.import_image(io.BytesIO(gzip.compress(b"not a tar" * 1000)), "x:1")
        self.assertEqual(await self.state(self.store), before)

    async def test_import_corrupt_gzip_leaves_no_ingest(self) -> None:
        """
        A truncated gzip stream is refused and its ingest file removed
        (`head -c 50000 good.tar.gz | ross import - x`).
        """
        before = await self.state(self.store)
        cut = gzip.compress(busybox_layer())[:50000]
        with self.assertRaises(InvalidArgument) as e:
            await self.store.import_image(io.BytesIO(cut), "x:1")
        self.assertEqual(await self.state(self.store), before)
        self.assertIn("truncated gzip data", str(e.exception))

    async def test_import_refuses_what_is_not_a_tar_early(self) -> None:
        """
        64 MiB of zeros (an empty archive: the end-of-archive marker first)
        or of garbage is refused within the first chunk read, not stored
        until the disk is full; the store is unchanged.
        """
        before = await self.state(self.store)
        for filler, message in [(b"\0", "invalid tarball: empty archive"),
                                (b"garbage!", "invalid tarball: not a tar archive")]:
            stream = Endless(64 << 20, filler=filler)
            with self.assertRaises(InvalidArgument) as e:
                await self.store.import_image(stream, "zz:1")
            self.assertTrue(str(e.exception).startswith(message), str(e.exception))
            self.assertLessEqual(stream.read_bytes, 1 << 20)
        zeros = gzip.compress(bytes(64 << 20))
        with self.assertRaises(InvalidArgument) as e:
            await self.store.import_image(io.BytesIO(zeros), "zz:1")
        self.assertIn("empty archive", str(e.exception))
        self.assertEqual(await self.state(self.store), before)

    async def test_import_stops_at_end_of_tar(self) -> None:
        """
        Reading stops at the end-of-archive marker: a tar followed by 64 MiB
        of zeros (or garbage) imports, having read at most one chunk past
        the tar, and the layer is the tar itself.
        """
        tar = small_layer({"f.txt": b"data\n"})
        # The header and data blocks, then the two zero blocks; tarfile
        # pads the rest of its 10 KiB record with zeros.
        archive = tar[:-(-len(tar.rstrip(b"\0")) // 512) * 512 + 1024]
        self.assertLess(len(archive), len(tar))
        for filler in (b"\0", b"garbage!"):
            stream = Endless(len(tar) + (64 << 20), prefix=tar, filler=filler)
            image_id = await self.store.import_image(stream, "ended:1")
            self.assertLessEqual(stream.read_bytes, len(tar) + (1 << 20))
            image = await self.store.resolve("ended:1")
            self.assertEqual(image.id, image_id)
            self.assertEqual(image.layers[0].size, len(archive))
            self.assertEqual(self.store.content.blobs.read_bytes(image.layers[0].digest), archive)
            await self.store.snapshotter.stat(image.chain_id)
        self.assertEqual(os.listdir(self.store.content.blobs.ingest_dir), [])

    async def test_import_compressed_trailing_data(self) -> None:
        """
        Inside a gzip stream, the padding after the end of the tar is part
        of the layer (its diff ID covers it) up to 4 MiB; more is refused.
        """
        padded = gzip.compress(LAYER_A + bytes(1 << 20))
        await self.store.import_image(io.BytesIO(padded), "padded:1")
        image = await self.store.resolve("padded:1")
        self.assertEqual(image.config.diff_ids[0], "sha256:" + hashlib.sha256(LAYER_A + bytes(1 << 20)).hexdigest())
        before = await self.state(self.store)
        with self.assertRaises(InvalidArgument) as e:
            await self.store.import_image(io.BytesIO(gzip.compress(LAYER_A + bytes(64 << 20))), "x:1")
        self.assertIn("after the end of the archive", str(e.exception))
        self.assertEqual(await self.state(self.store), before)

    async def test_import_zstd(self) -> None:
        """
        A zstd stream imports as a zstd layer whose diff ID is the tar's.
        """
        data = zstandard.ZstdCompressor(write_checksum=True).compress(LAYER_B)
        image_id = await self.store.import_image(io.BytesIO(data), "z:1")
        image = await self.store.resolve("z:1")
        self.assertEqual(image.id, image_id)
        self.assertEqual(image.layers[0].media_type, "application/vnd.oci.image.layer.v1.tar+zstd")
        self.assertEqual(image.config.diff_ids, ("sha256:" + hashlib.sha256(LAYER_B).hexdigest(),))

    async def test_save_round_trip(self) -> None:
        """
        What save writes (docker-archive and OCI) loads into an empty store
        with the same ID, diff IDs and, for OCI, manifest digest.
        """
        original = await self.store.resolve("busybox")
        for fmt in ("docker-archive", "oci-archive"):
            total, flow = await self.store.save(["busybox"], fmt)
            data = await drain(flow)
            self.assertEqual(len(data), total)
            other = await self.make_store(f"other-{fmt}")
            archive = Path(self.mktemp())
            archive.write_bytes(data)
            result = await self.load_file(other, archive)
            self.assertEqual(result.loaded, ("Loaded image: busybox:latest",))
            copy = await other.resolve("busybox")
            self.assertEqual((copy.id, copy.config.diff_ids), (original.id, original.config.diff_ids))
            if fmt == "oci-archive":
                self.assertEqual(copy.target.media_type, "application/vnd.oci.image.manifest.v1+json")

    async def test_save_oci_round_trip_keeps_manifest(self) -> None:
        """
        An OCI image saved as an OCI archive loads elsewhere with the very
        same manifest digest.
        """
        layout = oci_layout(Path(self.mktemp()), ref_name="docker.io/library/o:1", layers=[BASE, LAYER_B])
        await self.load_file(self.store, tar_directory(layout.path, Path(self.mktemp())))
        total, flow = await self.store.save(["o:1"], "oci-archive")
        archive = Path(self.mktemp())
        archive.write_bytes(await drain(flow))
        other = await self.make_store("other")
        await self.load_file(other, archive)
        self.assertEqual((await other.resolve("o:1")).target.digest, layout.manifest_digest)

    async def test_load_of_an_image_already_here(self) -> None:
        """
        A docker-save archive of an image the store has under another
        manifest (pulled or loaded with gzip layers) is the same image, as
        docker sees it: the archive's names point at it, and no second
        image with the same ID appears (which an rmi would leave behind).
        """
        layout = oci_layout(Path(self.mktemp()), ref_name="docker.io/library/o:1", layers=[BASE, LAYER_B])
        await self.load_file(self.store, tar_directory(layout.path, Path(self.mktemp())))
        count = self.store.count
        total, flow = await self.store.save(["o:1"], "docker-archive")
        archive = Path(self.mktemp())
        archive.write_bytes(await drain(flow))
        await self.store.tag("o:1", "o:2")
        await self.store.remove("o:1")
        result = await self.load_file(self.store, archive)
        self.assertEqual(result.loaded, ("Loaded image: o:1",))
        self.assertEqual(self.store.count, count)
        for name in ("o:1", "o:2"):
            self.assertEqual((await self.store.resolve(name)).target.digest, layout.manifest_digest)
        self.assertEqual(len([s for s in await self.store.list(all=True) if s.row.config == layout.config_digest]), 1)

    async def test_save_errors(self) -> None:
        with self.assertRaises(NotFound):
            await self.store.save(["nothere"])
        with self.assertRaises(InvalidArgument):
            await self.store.save(["busybox"], "zip")

    async def test_save_corrupt_blob(self) -> None:
        """
        A blob changed on disk is never sent as if it were good: the save
        stream fails with DataLoss.
        """
        image = await self.store.resolve("busybox")
        path = self.store.content.blobs.path(image.layers[0].digest)
        data = bytearray(path.read_bytes())
        data[600] ^= 0xFF
        path.write_bytes(bytes(data))
        total, flow = await self.store.save(["busybox"])
        with self.assertRaises(DataLoss):
            await drain(flow)


class BadInputTests(StoreFixture, TestCase):
    """
    Each malformed archive fails with a clear error and leaves images,
    blobs, snapshots and the ingest directory exactly as they were.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        self.store = await self.make_store()
        existing = docker_archive(Path(self.mktemp()), tags=["keep:1"], layers=[BASE])
        await self.load_file(self.store, existing.path)
        self.before = await self.state(self.store)

    async def assertRefused(self, path: Path, error: type[Exception], text: str) -> None:
        with self.assertRaises(error) as e:
            await self.load_file(self.store, path)
        self.assertIn(text, str(e.exception))
        self.assertEqual(await self.state(self.store), self.before)

    def oci(self, ref: str = "docker.io/library/bad:1") -> Any:
        return oci_layout(Path(self.mktemp()), ref_name=ref, layers=[BASE, LAYER_A])

    async def test_truncated(self) -> None:
        built = docker_archive(Path(self.mktemp()), tags=["t:1"], layers=[BASE, busybox_layer()])
        data = built.path.read_bytes()
        cut = Path(self.mktemp())
        cut.write_bytes(data[: len(data) // 2 + 100])
        await self.assertRefused(cut, InvalidArgument, "invalid archive")

    async def test_garbage(self) -> None:
        junk = Path(self.mktemp())
        junk.write_bytes(os.urandom(50000))
        await self.assertRefused(junk, InvalidArgument, "invalid archive")
        empty = Path(self.mktemp())
        empty.write_bytes(b"")
        await self.assertRefused(empty, InvalidArgument, "invalid archive")

    async def test_neither_format(self) -> None:
        path = Path(self.mktemp())
        with tarfile.open(path, "w") as tar:
            info = tarfile.TarInfo("hello.txt")
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
        await self.assertRefused(path, InvalidArgument, "neither a docker-save archive")

    async def test_missing_blob(self) -> None:
        layout = self.oci()
        (layout.path / "blobs" / "sha256" / layout.config_digest[7:]).unlink()
        await self.assertRefused(tar_directory(layout.path, Path(self.mktemp())), InvalidArgument,
                                 f"blob {layout.config_digest} (application/vnd.oci.image.config.v1+json) "
                                 f"referenced by {layout.manifest_digest} is missing")

    async def test_digest_mismatch(self) -> None:
        layout = self.oci()
        manifest = json.loads((layout.path / "blobs" / "sha256" / layout.manifest_digest[7:]).read_bytes())
        layer = layout.path / "blobs" / "sha256" / manifest["layers"][1]["digest"][7:]
        layer.write_bytes(gzip.compress(LAYER_B, mtime=0)[: layer.stat().st_size].ljust(layer.stat().st_size, b"\0"))
        await self.assertRefused(tar_directory(layout.path, Path(self.mktemp())), DataLoss, "digest mismatch")

    async def test_diff_id_mismatch(self) -> None:
        config = image_config(["sha256:" + "0" * 64])
        built = docker_archive(Path(self.mktemp()), tags=["d:1"], layers=[LAYER_A], config=config)
        await self.assertRefused(built.path, DataLoss, "does not match its diff ID")

    async def test_unknown_media_type(self) -> None:
        layout = self.oci()
        blobs = layout.path / "blobs" / "sha256"
        manifest = json.loads((blobs / layout.manifest_digest[7:]).read_bytes())
        manifest["layers"][0]["mediaType"] = "application/x-not-a-layer"
        data = json.dumps(manifest).encode()
        import hashlib

        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        index = json.loads((layout.path / "index.json").read_text())
        index["manifests"][0].update(digest="sha256:" + digest, size=len(data))
        (layout.path / "index.json").write_text(json.dumps(index))
        await self.assertRefused(tar_directory(layout.path, Path(self.mktemp())), InvalidArgument,
                                 "unsupported media type application/x-not-a-layer")

    def nested(self, levels: int) -> Path:
        """
        An OCI layout tar whose image is C{levels} image indexes deep, each
        pointing at the next (for this host's platform), then a manifest.
        """
        from ross.engine.images.manifest import host_platform

        layout = self.oci()
        blobs = layout.path / "blobs" / "sha256"
        manifest = (blobs / layout.manifest_digest[7:]).read_bytes()
        plat = {"os": "linux", "architecture": host_platform().architecture}
        child = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": layout.manifest_digest,
                 "size": len(manifest), "platform": plat}
        for _ in range(levels):
            index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                                "manifests": [child]}).encode()
            digest = "sha256:" + hashlib.sha256(index).hexdigest()
            (blobs / digest[7:]).write_bytes(index)
            child = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": digest, "size": len(index),
                     "platform": plat}
        child["annotations"] = {"io.containerd.image.name": "docker.io/library/nested:1"}
        del child["platform"]
        (layout.path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [child]}))
        return tar_directory(layout.path, Path(self.mktemp()))

    async def test_index_nested_too_deeply(self) -> None:
        """
        Image indexes nested deeper than 8 levels are InvalidArgument, not
        a recursion error; 3000 levels as much as 9.
        """
        await self.assertRefused(self.nested(3000), InvalidArgument, "image index nested too deeply")
        await self.assertRefused(self.nested(9), InvalidArgument, "image index nested too deeply")

    async def test_index_nested_at_the_limit(self) -> None:
        """
        8 nested indexes still load: the limit refuses only what no image
        tool writes.
        """
        result = await self.load_file(self.store, self.nested(8))
        self.assertEqual(result.loaded, ("Loaded image: nested:1",))

    async def test_json_nested_too_deeply(self) -> None:
        """
        A JSON document nested beyond the parser's recursion limit is
        InvalidArgument, in index.json as in a docker-save manifest.json.
        """
        layout = self.oci()
        (layout.path / "index.json").write_text('{"schemaVersion": 2, "manifests": ' + "[" * 100000 + "]" * 100000 + "}")
        await self.assertRefused(tar_directory(layout.path, Path(self.mktemp())), InvalidArgument,
                                 "nested too deeply")
        path = Path(self.mktemp())
        with tarfile.open(path, "w") as tar:
            data = ("[" * 100000 + "]" * 100000).encode()
            info = tarfile.TarInfo("manifest.json")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        await self.assertRefused(path, InvalidArgument, "nested too deeply")

    async def test_invalid_repo_tag(self) -> None:
        built = docker_archive(Path(self.mktemp()), tags=["Not Valid"], layers=[LAYER_A])
        await self.assertRefused(built.path, InvalidArgument, "invalid tag 'Not Valid'")

    async def test_corrupt_layer_content(self) -> None:
        """
        A layer whose bytes match its digests but are not a tar fails at
        unpack; the snapshots made before it are removed again.
        """
        junk = b"\x01" * 4096
        built = docker_archive(Path(self.mktemp()), tags=["c:1"], layers=[LAYER_A, junk])
        await self.assertRefused(built.path, InvalidArgument, "")

    async def test_corrupt_blob_on_disk_not_used(self) -> None:
        """
        A stored layer blob changed on disk is detected when it is
        unpacked (its content no longer matches the diff ID): the snapshot
        is not committed.
        """
        image = await self.store.resolve("keep:1")
        await self.store.snapshotter.remove(image.chain_id)
        path = self.store.content.blobs.path(image.layers[0].digest)
        data = bytearray(path.read_bytes())
        data[600] ^= 0xFF
        path.write_bytes(bytes(data))
        with self.assertRaises(DataLoss):
            await self.store.ensure_unpacked(image)
        self.assertEqual([s.name for s in await self.store.snapshotter.list()], [])


class RestartTests(StoreFixture, TestCase):
    async def test_start_removes_interrupted_unpacks(self) -> None:
        """
        After a crash mid-load, the next start removes the unfinished
        extraction and the layer snapshots no image records, and keeps
        what images still use.
        """
        store = await self.make_store()
        kept = docker_archive(Path(self.mktemp()), tags=["kept:1"], layers=[BASE])
        await self.load_file(store, kept.path)
        chains = chain_ids([kept.diff_ids[0], docker_archive(Path(self.mktemp()), layers=[LAYER_A]).diff_ids[0]])
        snapshotter = store.snapshotter
        # What a crash between unpacking and recording leaves: a committed
        # layer on top of the kept base, and an extraction in progress.
        await snapshotter.prepare("extract-x", chains[0], {"ross.io/image.layer": "d"})
        await snapshotter.commit(chains[1], "extract-x", {"ross.io/image.layer": "d"})
        await snapshotter.prepare("extract-y", chains[1], {"ross.io/image.layer": "d"})
        stray = store.content.blobs.write_bytes(b"committed, never recorded").digest
        await store.stop()
        restarted = ImageStore(engine_reactor(reactor), self.root / "images", store.content, snapshotter, self.events)
        await restarted.start()
        self.addCleanup(restarted.stop)
        self.assertEqual([s.name for s in await snapshotter.list()], [chains[0]])
        self.assertEqual((await restarted.resolve("kept:1")).chain_id, chains[0])
        self.assertFalse(store.content.blobs.exists(stray))
        self.assertEqual(len(store.content.blobs.list()), 3)
