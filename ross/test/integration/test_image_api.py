# -*- test-case-name: ross.test.integration.test_image_api -*-
"""
ImageService over real gRPC (the in-process daemon) and the `ross` image
commands against it: every local-image RPC, streams both ways, status
codes for bad input, and docker's output formats.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import grpc
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from ross.engine.images.manifest import chain_ids
from ross.errors import InvalidArgument
from ross.testing.daemon import InProcessDaemon, run_cli
from ross.testing.direct import open_pipe, write_and_close
from ross.testing.images import busybox_layer, docker_archive, image_config, load_archive, load_busybox
from ross.v1 import common_pb2
from ross.v1 import image_pb2 as pb
from ross.v1 import system_pb2


def chunks(first: Any, data: bytes, kind: Any, field: str = "data", size: int = 65536) -> Iterator[Any]:
    yield first
    for i in range(0, len(data), size):
        yield kind(**{field: data[i:i + size]})


class ImageAPITests(TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.daemon = InProcessDaemon(self)
        await self.daemon.start()
        self.clients = self.daemon.clients()
        self.stub = self.clients.images
        self.image_id = await load_busybox(self.daemon)

    def call(self, method: str, request: Any) -> Deferred[Any]:
        fn = getattr(self.stub, method)
        if method in ("SaveImages", "PullImage"):
            return self.daemon.call(lambda: list(fn(request, timeout=60)))
        return self.daemon.call(fn, request, timeout=60)

    async def code_of(self, method: str, request: Any) -> tuple[grpc.StatusCode, str | None]:
        try:
            await self.call(method, request)
        except grpc.RpcError as e:
            return e.code(), e.details()
        self.fail(f"{method} succeeded")

    async def listing(self) -> list[tuple[str, tuple[str, ...]]]:
        r = await self.call("ListImages", pb.ListImagesRequest())
        return sorted((i.id, tuple(i.repo_tags)) for i in r.images)

    async def test_list_and_inspect(self) -> None:
        """
        ListImages and InspectImage describe the loaded busybox image; Info
        counts it.
        """
        self.assertEqual(await self.listing(), [(self.image_id, ("docker.io/library/busybox:latest",))])
        r = await self.call("InspectImage", pb.InspectImageRequest(name="busybox"))
        self.assertEqual(r.image.id, self.image_id)
        self.assertEqual(json.loads(r.config_json)["config"]["Cmd"], ["sh"])
        self.assertEqual(r.chain_id, chain_ids(list(r.diff_ids))[-1])
        self.assertGreater(r.image.size, 1_000_000)
        self.assertEqual(r.image.created.seconds, 1700000000)
        info = await self.daemon.call(self.clients.system.Info, system_pb2.InfoRequest())
        self.assertEqual(info.images, 1)

    async def test_not_found_and_invalid(self) -> None:
        """
        Unknown images are NOT_FOUND, malformed references INVALID_ARGUMENT
        (for a pull too); nothing changes.
        """
        before = await self.listing()
        self.assertEqual(await self.code_of("InspectImage", pb.InspectImageRequest(name="nothere")),
                         (grpc.StatusCode.NOT_FOUND, "No such image: nothere:latest"))
        self.assertEqual((await self.code_of("RemoveImage", pb.RemoveImageRequest(name="nothere")))[0],
                         grpc.StatusCode.NOT_FOUND)
        code, message = await self.code_of("TagImage", pb.TagImageRequest(source="busybox", target="UP:per"))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("must be lowercase", message)
        self.assertEqual((await self.code_of("InspectImage", pb.InspectImageRequest(name="")))[0],
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual((await self.code_of("PullImage", pb.PullImageRequest(image_name="UP:per")))[0],
                         grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(await self.listing(), before)

    async def test_tag_history_remove(self) -> None:
        await self.call("TagImage", pb.TagImageRequest(source="busybox", target="localhost:5000/bb:v2"))
        self.assertEqual(await self.listing(), [(self.image_id, ("docker.io/library/busybox:latest",
                                                                 "localhost:5000/bb:v2"))])
        # A reference filter shows the names it matches, not all the image's
        # (docker's `images REPO[:TAG]`).
        for pattern, shown in [("localhost:5000/bb", ["localhost:5000/bb:v2"]),
                               ("busybox:*", ["docker.io/library/busybox:latest"])]:
            r = await self.call("ListImages", pb.ListImagesRequest(
                filters=[common_pb2.Filter(key="reference", value=pattern)]))
            self.assertEqual([list(i.repo_tags) for i in r.images], [shown], pattern)
        history = await self.call("ImageHistory", pb.ImageHistoryRequest(name="localhost:5000/bb:v2"))
        self.assertEqual(history.entries[0].id, self.image_id)
        r = await self.call("RemoveImage", pb.RemoveImageRequest(name="localhost:5000/bb:v2"))
        self.assertEqual(list(r.untagged), ["Untagged: localhost:5000/bb:v2"])
        r = await self.call("RemoveImage", pb.RemoveImageRequest(name=self.image_id[7:19]))
        self.assertEqual(list(r.deleted)[0], f"Deleted: {self.image_id}")
        self.assertEqual(await self.listing(), [])

    async def test_save_stream(self) -> None:
        """
        SaveImages streams a total size first, then chunks under 4 MB that
        add up to it and form a loadable archive.
        """
        def save() -> tuple[int, list[bytes]]:
            total = -1
            pieces = []
            for message in self.stub.SaveImages(pb.SaveImagesRequest(names=["busybox"])):
                if message.WhichOneof("response") == "total_size":
                    total = message.total_size
                else:
                    pieces.append(message.data)
            return total, pieces

        total, pieces = await self.daemon.call(save)
        data = b"".join(pieces)
        self.assertEqual(len(data), total)
        self.assertTrue(all(len(p) <= 2 << 20 for p in pieces))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        self.assertEqual(manifest[0]["RepoTags"], ["busybox:latest"])
        code, _ = await self.code_of("SaveImages", pb.SaveImagesRequest(names=["nothere"]))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)

    async def test_load_bad_stream(self) -> None:
        """
        A truncated archive over the stream is INVALID_ARGUMENT and leaves
        the images as they were; a stream without options first too.
        """
        before = await self.listing()
        built = docker_archive(Path(self.mktemp()), tags=["x:1"], layers=[busybox_layer()])
        data = built.path.read_bytes()[:700_000]
        requests = chunks(pb.LoadImagesRequest(options=pb.LoadOptions()), data, pb.LoadImagesRequest)
        code, message = await self.code_of("LoadImages", requests)
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("invalid archive", message)
        requests = chunks(pb.LoadImagesRequest(data=b"x"), b"", pb.LoadImagesRequest)
        self.assertEqual((await self.code_of("LoadImages", requests))[0], grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(await self.listing(), before)

    async def test_import_stream(self) -> None:
        layer = gzip.compress(busybox_layer())
        requests = chunks(pb.ImportImageRequest(options=pb.ImportOptions(reference="imp:1", changes=["CMD ls"])),
                          layer, pb.ImportImageRequest)
        r = await self.call("ImportImage", requests)
        inspect = await self.call("InspectImage", pb.InspectImageRequest(name="imp:1"))
        self.assertEqual(inspect.image.id, r.id)
        self.assertEqual(json.loads(inspect.config_json)["config"]["Cmd"], ["/bin/sh", "-c", "ls"])

    async def test_import_zeros_refused_early(self) -> None:
        """
        64 MiB of zeros is not a tarball: the import is refused with
        InvalidArgument after the first chunk, the rest of the client's
        stream is not read, and nothing is left in ingest/ (`ross import
        /dev/zero zz` fills no disk).
        """
        store = self.daemon.engine.images
        before = await self.listing()
        sent: list[int] = []
        zeros = bytes(1 << 20)

        def requests() -> Iterator[Any]:
            yield pb.ImportImageRequest(options=pb.ImportOptions(reference="zz:1"))
            for i in range(64):
                sent.append(i)
                yield pb.ImportImageRequest(data=zeros)

        outcome: list[Any] = []
        ended: Deferred[None] = Deferred()
        import_image = store.import_image

        def watched(*args: Any) -> Deferred[str]:
            def end(result: Any) -> Any:
                outcome.append(result)
                ended.callback(None)
                return result

            return import_image(*args).addBoth(end)

        self.patch(store, "import_image", watched)
        future = self.stub.ImportImage.future(requests(), timeout=60)
        await ended
        self.assertIsInstance(outcome[0], Failure)
        self.assertTrue(outcome[0].check(InvalidArgument))
        self.assertIn("invalid tarball: empty archive", str(outcome[0].value))
        self.assertLess(len(sent), 64)
        self.assertEqual(os.listdir(store.content.blobs.ingest_dir), [])
        # The client, still sending, gets the answer: the bridge stops
        # reading its stream once the method has answered.
        error = await deferToThread(future.exception, 30)
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT)
        self.assertIn("empty archive", error.details())
        self.assertEqual(await self.listing(), before)

    async def test_prune_filters(self) -> None:
        """
        An unknown prune filter is INVALID_ARGUMENT and deletes nothing
        (it used to be dropped, pruning every unused image); until=10m
        prunes the image created in 2023.
        """
        from ross.v1 import common_pb2

        before = await self.listing()
        code, message = await self.code_of("PruneImages", pb.PruneImagesRequest(
            all=True, filters=[common_pb2.Filter(key="bogus", value="1")]))
        self.assertEqual((code, message), (grpc.StatusCode.INVALID_ARGUMENT, "invalid filter 'bogus'"))
        self.assertEqual(await self.listing(), before)
        r = await self.call("PruneImages", pb.PruneImagesRequest(
            all=True, filters=[common_pb2.Filter(key="until", value="10m")]))
        self.assertIn(f"deleted: {self.image_id}", list(r.images_deleted))
        self.assertEqual(await self.listing(), [])

    async def test_prune(self) -> None:
        layer = io.BytesIO()
        with tarfile.open(fileobj=layer, mode="w") as tar:
            info = tarfile.TarInfo("only.txt")
            info.size = 3
            tar.addfile(info, io.BytesIO(b"abc"))
        built = docker_archive(Path(self.mktemp()), tags=[], layers=[layer.getvalue()])
        await self.daemon.call(load_archive, self.clients, built.path)
        r = await self.call("PruneImages", pb.PruneImagesRequest())
        self.assertEqual(list(r.images_deleted), [f"deleted: {built.config_digest}"] +
                         [f"deleted: {built.diff_ids[0]}"])
        self.assertEqual(await self.listing(), [(self.image_id, ("docker.io/library/busybox:latest",))])


class ImageCLITests(TestCase):
    """
    The `ross` image commands as a user runs them (child processes).
    """

    async def setUp(self) -> None:  # type: ignore[override]
        self.daemon = InProcessDaemon(self)
        await self.daemon.start()
        self.image_id = await load_busybox(self.daemon)

    def ross(self, *args: str, input: bytes | None = None) -> Deferred[Any]:
        return self.daemon.call(run_cli, self.daemon.address, *args, input=input)

    async def test_images_table(self) -> None:
        r = await self.ross("images")
        lines = r.stdout.decode().splitlines()
        self.assertEqual(lines[0].split(), ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"])
        self.assertEqual(lines[1].split()[:3], ["busybox", "latest", self.image_id[7:19]])
        self.assertRegex(lines[1], r"(years|months|weeks|days) ago\s+\d+(\.\d+)?MB$")
        r = await self.ross("images", "-q")
        self.assertEqual(r.stdout.decode(), self.image_id[7:19] + "\n")
        r = await self.ross("image", "ls", "--format", "json")
        doc = [json.loads(line) for line in r.stdout.splitlines()]
        self.assertEqual((doc[0]["Repository"], doc[0]["Tag"], doc[0]["ID"]), ("busybox", "latest", self.image_id[7:19]))
        # docker's times: Go's String() in listings, RFC 3339 in history.
        self.assertEqual(doc[0]["CreatedAt"], "2023-11-14 22:13:20 +0000 UTC")
        r = await self.ross("history", "--format", "{{.CreatedAt}}", "busybox")
        self.assertEqual(r.stdout, b"2023-11-14T22:13:20Z\n")
        r = await self.ross("images", "--digests")
        self.assertIn("DIGEST", r.stdout.decode().splitlines()[0])

    async def test_inspect_tag_history_rmi(self) -> None:
        r = await self.ross("image", "inspect", "busybox")
        doc = json.loads(r.stdout)
        self.assertEqual((doc[0]["Id"], doc[0]["RepoTags"], doc[0]["Config"]["Cmd"]),
                         (self.image_id, ["busybox:latest"], ["sh"]))
        r = await self.ross("image", "inspect", "-f", "{{.Os}}", "busybox")
        self.assertEqual(r.stdout, b"linux\n")
        # docker's Config fields are there when the image leaves them out.
        r = await self.ross("image", "inspect", "-f", "[{{.Config.Hostname}}] {{.Config.Entrypoint}} "
                            "{{.Config.Labels}} {{.Config.Tty}}", "busybox")
        self.assertEqual((r.stdout, r.stderr), (b"[] [] map[] false\n", b""))
        r = await self.ross("tag", "busybox", "mine:1")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = await self.ross("history", "mine:1")
        self.assertEqual(r.stdout.decode().splitlines()[0].split(), ["IMAGE", "CREATED", "CREATED", "BY", "SIZE",
                                                                      "COMMENT"])
        r = await self.ross("rmi", "mine:1")
        self.assertEqual(r.stdout, b"Untagged: mine:1\n")
        r = await self.ross("rmi", "nothere")
        self.assertEqual((r.returncode, r.stderr), (1, b"Error response from daemon: No such image: nothere:latest\n"))
        r = await self.ross("tag", "busybox", "Bad")
        self.assertEqual(r.returncode, 125)
        self.assertIn(b"must be lowercase", r.stderr)
        r = await self.ross("image", "inspect", "nothere")
        self.assertEqual((r.returncode, r.stderr), (1, b"Error: No such image: nothere:latest\n"))

    async def test_top_level_inspect(self) -> None:
        """
        `ross inspect` shows an image that is not a container as `ross
        image inspect` does; what is neither is "No such object".
        """
        r = await self.ross("inspect", "busybox")
        self.assertEqual(r.returncode, 0, r.stderr)
        doc = json.loads(r.stdout)
        self.assertEqual((doc[0]["Id"], doc[0]["RepoTags"], doc[0]["Config"]["Cmd"]),
                         (self.image_id, ["busybox:latest"], ["sh"]))
        image = await self.ross("image", "inspect", "busybox")
        self.assertEqual(json.loads(image.stdout), doc)
        r = await self.ross("inspect", "-f", "{{.Id}}", "busybox")
        self.assertEqual(r.stdout.decode(), self.image_id + "\n")
        r = await self.ross("inspect", "nosuchthing")
        self.assertEqual((r.returncode, r.stderr), (1, b"Error: No such object: nosuchthing\n"))

    async def test_prune_unknown_filter(self) -> None:
        """
        `ross image prune -a --filter bogus=1 -f` fails and deletes nothing.
        """
        r = await self.ross("image", "prune", "-a", "--filter", "bogus=1", "-f")
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"invalid filter 'bogus'", r.stderr)
        r = await self.ross("images", "-q")
        self.assertEqual(r.stdout.decode(), self.image_id[7:19] + "\n")

    async def test_load_on_both_paths(self) -> None:
        """
        `load` with its archive on the direct channel (a local client's
        default) and on the gRPC stream (ROSS_DIRECT=0), from a file and
        from stdin: the same image, the same lines.
        """
        archive = Path(self.daemon.base) / "both.tar"
        r = await self.ross("save", "-o", str(archive), "busybox")
        self.assertEqual(r.returncode, 0, r.stderr)
        for direct in ("1", "0"):
            for how in ("file", "stdin"):
                await self.ross("rmi", "busybox")
                r = await self.daemon.call(
                    run_cli, self.daemon.address, "load", *(("-i", str(archive)) if how == "file" else ()),
                    input=archive.read_bytes() if how == "stdin" else None, env={"ROSS_DIRECT": direct})
                self.assertEqual((r.returncode, r.stdout), (0, b"Loaded image: busybox:latest\n"), (direct, how))
                r = await self.ross("images", "-q", "--no-trunc")
                self.assertEqual(r.stdout.decode(), self.image_id + "\n", (direct, how))

    async def test_import_from_a_url(self) -> None:
        """
        `import URL` takes the tarball a web server hands out (docker's);
        a 404 or nothing listening is a clear error, and imports nothing.
        """
        import http.server

        served = Path(self.mktemp())
        served.mkdir()
        (served / "root.tar").write_bytes(busybox_layer())

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(served), **kwargs)

            def log_message(self, *args: Any) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        base = f"http://127.0.0.1:{server.server_address[1]}"
        r = await self.ross("import", "-c", "CMD sh", f"{base}/root.tar", "fromurl:1")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = await self.ross("run", "--rm", "--network", "none", "fromurl:1", "sh", "-c", "echo ran")
        self.assertEqual((r.returncode, r.stdout), (0, b"ran\n"), r.stderr)
        r = await self.ross("import", f"{base}/missing.tar", "missing:1")
        self.assertEqual(r.returncode, 125)
        self.assertIn(b"the server answered 404", r.stderr)
        server.shutdown()
        server.server_close()
        r = await self.ross("import", f"{base}/root.tar", "gone:1")
        self.assertIn(b"Connection refused", r.stderr)
        r = await self.ross("images", "-q", "missing")
        self.assertEqual(r.stdout, b"")

    async def test_import_on_both_paths(self) -> None:
        """`import` of a root filesystem tarball on the direct channel and on the stream: the same image."""
        ids = []
        for direct in ("1", "0"):
            r = await self.daemon.call(run_cli, self.daemon.address, "import", "-c", "CMD sh", "-", f"imp:{direct}",
                                       input=busybox_layer(), env={"ROSS_DIRECT": direct})
            self.assertEqual(r.returncode, 0, r.stderr)
            ids.append(r.stdout.decode().strip())
            r = await self.ross("run", "--rm", "--network", "none", f"imp:{direct}", "sh", "-c", "echo ran")
            self.assertEqual((r.returncode, r.stdout), (0, b"ran\n"), r.stderr)
        self.assertRegex(ids[0], r"^sha256:[0-9a-f]{64}$")
        # The config has the import's time: the layers are what must match.
        r = await self.ross("image", "inspect", "imp:1", "imp:0")
        self.assertEqual(r.returncode, 0, r.stderr)
        layers = [doc["RootFS"]["Layers"] for doc in json.loads(r.stdout)]
        self.assertEqual(len(layers[0]), 1)
        self.assertEqual(layers[0], layers[1])

    async def test_save_load_import_prune(self) -> None:
        base = Path(self.daemon.base)
        archive = base / "saved.tar"
        r = await self.ross("save", "-o", str(archive), "busybox")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = await self.ross("save", "busybox")
        self.assertEqual(r.stdout, archive.read_bytes())
        r = await self.ross("rmi", "busybox")
        self.assertIn(b"Deleted: " + self.image_id.encode(), r.stdout)
        r = await self.ross("load", "-i", str(archive))
        self.assertEqual((r.returncode, r.stdout), (0, b"Loaded image: busybox:latest\n"), r.stderr)
        r = await self.ross("load", input=archive.read_bytes())
        self.assertEqual(r.stdout, b"Loaded image: busybox:latest\n")
        r = await self.ross("save", "--format", "oci", "-o", str(base / "oci.tar"), "busybox")
        self.assertEqual(r.returncode, 0, r.stderr)
        with tarfile.open(base / "oci.tar") as tar:
            self.assertIn("index.json", tar.getnames())
        r = await self.ross("import", "-c", "CMD sh", "-", "imported:v1", input=busybox_layer())
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout.decode(), r"^sha256:[0-9a-f]{64}\n$")
        r = await self.ross("rmi", "imported:v1")
        self.assertEqual(r.returncode, 0, r.stderr)
        r = await self.ross("image", "prune", "-f")
        self.assertEqual(r.stdout, b"Total reclaimed space: 0B\n")
        r = await self.ross("load", "-i", str(base / "missing.tar"))
        self.assertEqual(r.returncode, 125)
        os.remove(archive)


    async def test_rmi_by_id_of_several_tags(self) -> None:
        """
        rmi by ID of an image with two tags, even in one repository, is
        refused without -f (docker's), and removes nothing; -f removes it.
        """
        await self.ross("tag", "busybox", "busybox:two")
        r = await self.ross("rmi", self.image_id[7:19])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn(b"(must be forced) - image is referenced in multiple repositories", r.stderr)
        r = await self.ross("images", "--format", "{{.Repository}}:{{.Tag}}")
        self.assertEqual(sorted(r.stdout.split()), [b"busybox:latest", b"busybox:two"])
        r = await self.ross("rmi", "-f", self.image_id[7:19])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(f"Deleted: {self.image_id}".encode(), r.stdout)

    async def test_load_shared_layers(self) -> None:
        """
        A docker-save archive of two images that share a layer (docker
        writes the second's as a symlink, ``../<first>/layer.tar``) loads
        both; a link out of the archive is no layer.
        """
        base, extra = busybox_layer(), _layer({"extra": b"more\n"})
        ids = [hashlib.sha256(layer).hexdigest() for layer in (base, extra)]
        archive = Path(self.daemon.base) / "shared.tar"
        manifest = []
        with tarfile.open(archive, "w") as tar:
            _member(tar, f"{ids[0]}/layer.tar", base)
            _member(tar, f"{ids[1]}/layer.tar", extra)
            link = tarfile.TarInfo(f"{'f' * 64}/layer.tar")
            link.type, link.linkname = tarfile.SYMTYPE, f"../{ids[0]}/layer.tar"
            tar.addfile(link)
            for name, layers in (("one:1", [f"{ids[0]}/layer.tar"]),
                                 ("two:1", [f"{'f' * 64}/layer.tar", f"{ids[1]}/layer.tar"])):
                config = image_config([f"sha256:{ids[0]}"] + ([f"sha256:{ids[1]}"] if len(layers) > 1 else []))
                config_name = hashlib.sha256(config).hexdigest() + ".json"
                _member(tar, config_name, config)
                manifest.append({"Config": config_name, "RepoTags": [name], "Layers": layers})
            _member(tar, "manifest.json", json.dumps(manifest).encode())
        r = await self.ross("load", "-i", str(archive))
        self.assertEqual((r.returncode, r.stdout), (0, b"Loaded image: one:1\nLoaded image: two:1\n"), r.stderr)
        r = await self.ross("run", "--rm", "two:1", "cat", "/extra")
        self.assertEqual(r.stdout, b"more\n", r.stderr)
        # Out of the archive: refused, nothing loaded.
        with tarfile.open(archive, "w") as tar:
            link = tarfile.TarInfo(f"{'f' * 64}/layer.tar")
            link.type, link.linkname = tarfile.SYMTYPE, f"../../{ids[0]}/layer.tar"
            tar.addfile(link)
            config = image_config([f"sha256:{ids[0]}"])
            _member(tar, "c.json", config)
            _member(tar, "manifest.json", json.dumps([{"Config": "c.json", "RepoTags": ["three:1"],
                                                          "Layers": [f"{'f' * 64}/layer.tar"]}]).encode())
        r = await self.ross("load", "-i", str(archive))
        self.assertIn(b"is missing", r.stderr)
        r = await self.ross("images", "-q", "three")
        self.assertEqual(r.stdout, b"")


class CancelledImportTests(TestCase):
    async def test_cancel_after_upload(self) -> None:
        """
        A client that cancels an import after sending all of it, while the
        daemon is still storing the layer, leaves no ingest file, no blob
        and no image: the import finishes its step, then undoes it.
        """
        from ross.engine.content.store import Writer

        daemon = InProcessDaemon(self)
        await daemon.start()
        clients = daemon.clients()
        store = daemon.engine.images
        blobs = store.content.blobs
        reached = threading.Event()
        release = threading.Event()
        close = Writer.close

        def slow_close(writer: Writer) -> None:
            # The first close is the layer's, once the whole upload is read.
            first = not reached.is_set()
            reached.set()
            if first:
                release.wait(30)
            close(writer)

        self.patch(Writer, "close", slow_close)
        aborted: Deferred[None] = Deferred()
        ended: Deferred[None] = Deferred()
        import_image = store.import_image

        def watched(stream: Any, *args: Any) -> Deferred[str]:
            # The cancellation reaches the import when its stream is aborted.
            abort = stream.abort

            def noting_abort(reason: BaseException | None = None) -> None:
                abort(reason)
                if not aborted.called:
                    aborted.callback(None)

            stream.abort = noting_abort
            d = import_image(stream, *args)

            def end(result: Any) -> Any:
                ended.callback(None)
                return result

            return d.addBoth(end)

        self.patch(store, "import_image", watched)
        layer = gzip.compress(busybox_layer())
        requests = chunks(pb.ImportImageRequest(options=pb.ImportOptions(reference="gone:1")), layer,
                          pb.ImportImageRequest)
        future = clients.images.ImportImage.future(requests)
        await daemon.call(reached.wait, 30)
        future.cancel()
        await aborted
        release.set()
        await ended
        self.assertEqual(os.listdir(blobs.ingest_dir), [])
        self.assertEqual(blobs.list(), [])
        listing = await daemon.call(clients.images.ListImages, pb.ListImagesRequest())
        self.assertEqual(list(listing.images), [])


class CancelledLoadTests(TestCase):
    async def test_client_goes_away(self) -> None:
        """
        A client that cancels a load mid-stream leaves no image, no blob
        and no temporary file behind, and the daemon keeps serving.
        """
        daemon = InProcessDaemon(self)
        await daemon.start()
        clients = daemon.clients()
        built = docker_archive(Path(self.mktemp()), tags=["gone:1"], layers=[busybox_layer()])
        data = built.path.read_bytes()
        sent_half = threading.Event()
        release = threading.Event()

        def requests() -> Iterator[Any]:
            yield pb.LoadImagesRequest(options=pb.LoadOptions())
            yield pb.LoadImagesRequest(data=data[: len(data) // 2])
            sent_half.set()
            release.wait(30)

        content = daemon.engine.images.content.blobs

        def wait_for(condition: Any) -> None:
            for _ in range(400):
                if condition():
                    return
                time.sleep(0.025)

        future = clients.images.LoadImages.future(requests())
        await daemon.call(sent_half.wait, 30)
        # The daemon is mid-way: a layer is being written into an ingest file.
        await daemon.call(wait_for, lambda: os.listdir(content.ingest_dir))
        self.assertNotEqual(os.listdir(content.ingest_dir), [])
        future.cancel()
        release.set()
        await daemon.call(wait_for, lambda: not os.listdir(content.ingest_dir))
        self.assertEqual(os.listdir(content.ingest_dir), [])
        self.assertEqual(content.list(), [])
        listing = await daemon.call(clients.images.ListImages, pb.ListImagesRequest())
        self.assertEqual(list(listing.images), [])


class DirectLoadTests(TestCase):
    """
    LoadImagesDirect: the archive on a pipe from the client; what a client
    that cuts it short, or goes away holding the pipe, leaves.
    """

    async def setUp(self) -> None:  # type: ignore[override]
        self.daemon = InProcessDaemon(self)
        await self.daemon.start()
        self.clients = self.daemon.clients()
        built = docker_archive(Path(self.mktemp()), tags=["direct:1"], layers=[busybox_layer()])
        self.data = built.path.read_bytes()

    async def check_nothing_left(self) -> None:
        content = self.daemon.engine.images.content.blobs

        def settled() -> None:
            for _ in range(400):
                if not os.listdir(content.ingest_dir):
                    return
                time.sleep(0.025)

        await self.daemon.call(settled)
        self.assertEqual(os.listdir(content.ingest_dir), [])
        self.assertEqual(content.list(), [])
        listing = await self.daemon.call(self.clients.images.ListImages, pb.ListImagesRequest())
        self.assertEqual(list(listing.images), [])

    def open_load(self) -> tuple[Any, int]:
        """(blocking) A LoadImagesDirect call and its redeemed pipe."""
        # bounded: the call's deadline ends every wait on its stream.
        stream = self.clients.images.LoadImagesDirect(pb.LoadOptions(), timeout=30)
        return stream, open_pipe(stream)[0]

    async def test_whole(self) -> None:
        rest, error = await self.daemon.call(lambda: write_and_close(*self.open_load(), self.data))
        self.assertIsNone(error)
        self.assertEqual(list(rest[-1].done.loaded), ["Loaded image: direct:1"])

    async def test_cut_short(self) -> None:
        """Half an archive, then the pipe closed: INVALID_ARGUMENT, nothing left."""
        _, error = await self.daemon.call(lambda: write_and_close(*self.open_load(), self.data[: len(self.data) // 2]))
        assert error is not None, "the cut archive was taken"
        self.assertEqual(error.code(), grpc.StatusCode.INVALID_ARGUMENT, error.details())
        await self.check_nothing_left()

    async def test_cancelled_pipe_held(self) -> None:
        """
        A client that cancels its call but keeps the pipe open, half
        written: the daemon's reader gives up, nothing is left.
        """
        def start() -> Any:
            stream, fd = self.open_load()
            os.write(fd, self.data[: len(self.data) // 2])
            return stream, fd

        stream, fd = await self.daemon.call(start)
        try:
            content = self.daemon.engine.images.content.blobs

            def writing() -> None:
                for _ in range(400):
                    if os.listdir(content.ingest_dir):
                        return
                    time.sleep(0.025)

            await self.daemon.call(writing)
            stream.cancel()
            await self.check_nothing_left()
        finally:
            os.close(fd)


def _member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _layer(files: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, data in files.items():
            _member(tar, name, data)
    return out.getvalue()
