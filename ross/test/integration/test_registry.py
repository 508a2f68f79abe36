# -*- test-case-name: ross.test.integration.test_registry -*-
"""
Pull, push, login and logout against a real registry (Debian's
docker-registry) started by each test: plain http (insecure), TLS with a
CA the test makes, htpasswd basic auth, bearer tokens (a proxy in front of
the real registry demanding them), injected 500s and connections cut mid
blob; skopeo on the other side for interoperability. After every test: no
ingest files, no leases, the registry stopped, no mounts under the root.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import grpc
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing import certs
from ross.testing.daemon import InProcessDaemon, run_cli
from ross.testing.images import busybox_layer, docker_archive, image_config, load_archive, load_busybox, oci_archive
from ross.testing.leaks import mounts_under
from ross.testing.registry import FaultyProxy, RegistryServer, Rule, TokenServer
from ross.v1 import common_pb2, image_pb2 as pb

SKOPEO = "/usr/bin/skopeo"


def skopeo(*args: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run([SKOPEO, *args], capture_output=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"skopeo {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
    return result


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def multi_layer_oci(dest: Path, sizes: list[int], ref_name: str = "latest") -> tuple[str, list[bytes]]:
    """
    An OCI layout tar with busybox plus layers of random files of C{sizes}
    bytes (gzip); its manifest digest and the uncompressed layers.
    """
    layers = [busybox_layer()]
    for i, size in enumerate(sizes):
        buffer = tempfile.SpooledTemporaryFile()
        with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
            info = tarfile.TarInfo(f"data{i}.bin")
            info.size = size
            info.mtime = 1700000000
            tar.addfile(info, _Random(size, seed=i))
        buffer.seek(0)
        layers.append(buffer.read())
    return _write_layout(dest, layers, ref_name), layers


class _Random:
    def __init__(self, size: int, seed: int) -> None:
        self.left = size
        self.block = hashlib.sha512(str(seed).encode()).digest()

    def read(self, n: int = -1) -> bytes:
        n = self.left if n < 0 else min(n, self.left)
        out = bytearray()
        while len(out) < n:
            self.block = hashlib.sha512(self.block).digest()
            out += self.block
        self.left -= n
        return bytes(out[:n])


def _compressed(layer: bytes, kind: str) -> tuple[str, bytes]:
    """Media type and bytes of C{layer} compressed with C{kind} (gzip, zstd or none)."""
    if kind == "gzip":
        return "application/vnd.oci.image.layer.v1.tar+gzip", gzip.compress(layer, mtime=0)
    if kind == "zstd":
        import zstandard

        return "application/vnd.oci.image.layer.v1.tar+zstd", zstandard.ZstdCompressor().compress(layer)
    return "application/vnd.oci.image.layer.v1.tar", layer


def _write_layout(dest: Path, layers: list[bytes], ref_name: str, arch: str = "",
                  compressions: list[str] | None = None) -> str:
    with tempfile.TemporaryDirectory(prefix="ross-layout-") as tmp:
        root = Path(tmp)
        blobs = root / "blobs" / "sha256"
        blobs.mkdir(parents=True)

        def put(data: bytes) -> dict[str, Any]:
            (blobs / sha(data)[7:]).write_bytes(data)
            return {"digest": sha(data), "size": len(data)}

        descs = []
        for layer, kind in zip(layers, compressions or ["gzip"] * len(layers)):
            media_type, data = _compressed(layer, kind)
            descs.append({"mediaType": media_type, **put(data)})
        config = json.loads(image_config([sha(l) for l in layers]))
        if arch:
            config["architecture"] = arch
        config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json", **put(json.dumps(config).encode())}
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": config_desc, "layers": descs}).encode()
        mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(manifest),
                 "annotations": {"org.opencontainers.image.ref.name": ref_name}}
        (root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [mdesc]}))
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        with tarfile.open(dest, "w") as tar:
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    tar.add(path, str(path.relative_to(root)))
    return str(mdesc["digest"])


class RegistryTestCase(TestCase):
    """
    A registry (plain http unless C{tls}), an in-process daemon that
    treats it as insecure (or trusts its CA), and the leak checks.
    """

    tls = False
    users: dict[str, str] = {}
    token_users: dict[str, str] = {}

    async def setUp(self) -> None:  # type: ignore[override]
        self.tmp = Path(self.mktemp())
        self.tmp.mkdir(parents=True)
        tls_files = None
        self.certs_dir = self.tmp / "certs.d"
        self.certs_dir.mkdir()
        if self.tls:
            self.ca = certs.authority()
            tls_files = self.ca.issue("localhost", server=True).write(self.tmp, "registry")
        self.tokens = None
        if self.token_users:
            self.tokens = TokenServer(dict(self.token_users))
            self.tokens.start()
            self.addCleanup(self.tokens.stop)
        self.registry = RegistryServer(self.tmp / "registry", tls=tls_files, users=dict(self.users), token=self.tokens)
        await self.registry.start()
        self.addCleanup(self._registry_gone)
        insecure = () if self.tls else (self.registry.host,)
        self.daemon = InProcessDaemon(self, insecure_registries=insecure, registry_certs_dir=self.certs_dir)
        await self.daemon.start()
        self.clients = self.daemon.clients()
        self.addCleanup(self._nothing_left)

    async def _registry_gone(self) -> None:
        pid = self.registry.pid
        await self.registry.stop()
        self.registry.remove()
        self.assertFalse(os.path.exists(f"/proc/{pid}/cmdline") and
                         "docker-registry" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"))

    def _nothing_left(self) -> None:
        blobs = self.daemon.engine.content.blobs
        self.assertEqual(sorted(os.listdir(blobs.ingest_dir)), [])
        self.assertEqual(blobs.lease_count(), 0)
        self.assertEqual([m for m in mounts_under(self.daemon.root) if "/snapshots/" in m and "extract" in m], [])

    def trust_ca(self) -> None:
        directory = self.certs_dir / self.registry.host
        directory.mkdir(exist_ok=True)
        (directory / "ca.crt").write_bytes(self.ca.pem)

    def pull(self, name: str, **kwargs: Any) -> Deferred[list[Any]]:
        request = pb.PullImageRequest(image_name=name, **kwargs)
        return deferToThread(lambda: list(self.clients.images.PullImage(request, timeout=120)))

    def push(self, name: str, **kwargs: Any) -> Deferred[list[Any]]:
        request = pb.PushImageRequest(image_name=name, **kwargs)
        return deferToThread(lambda: list(self.clients.images.PushImage(request, timeout=120)))

    async def code_of(self, d: Deferred[Any]) -> tuple[grpc.StatusCode, str]:
        try:
            await d
        except grpc.RpcError as e:
            return e.code(), e.details() or ""
        self.fail("the call succeeded")

    async def images(self) -> list[tuple[str, tuple[str, ...], str]]:
        r = await deferToThread(self.clients.images.ListImages, pb.ListImagesRequest())
        return sorted((i.id, tuple(i.repo_tags), i.target.digest) for i in r.images)

    def skopeo_push(self, archive: Path, name: str, transport: str = "oci-archive") -> Deferred[Any]:
        flags = ["--dest-tls-verify=false"] if not self.tls else [f"--dest-cert-dir={self.certs_dir / self.registry.host}"]
        return deferToThread(skopeo, "copy", "-q", *flags, f"{transport}:{archive}", f"docker://{self.registry.host}/{name}")

    def skopeo_inspect(self, name: str, raw: bool = False) -> Deferred[Any]:
        flags = ["--tls-verify=false"] if not self.tls else [f"--cert-dir={self.certs_dir / self.registry.host}"]
        return deferToThread(lambda: json.loads(skopeo("inspect", *flags, *(["--raw"] if raw else []),
                                                       f"docker://{self.registry.host}/{name}").stdout))


def statuses(messages: list[Any]) -> list[str]:
    return [f"{m.id}: {m.status}" if m.id else m.status for m in messages if m.status and m.status != "Downloading"]


class PullTests(RegistryTestCase):
    async def test_pull_what_skopeo_pushed(self) -> None:
        """
        An image skopeo pushed (OCI, gzip layers) pulls with docker's
        lines, lists under its name with the registry's manifest digest,
        and runs from unpacked layers; a second pull is up to date.
        """
        archive = self.tmp / "multi.tar"
        digest, layers = await deferToThread(multi_layer_oci, archive, [3 << 20, 1 << 20, 1 << 19])
        await self.skopeo_push(archive, "multi:v1")
        messages = await self.pull(f"{self.registry.host}/multi:v1")
        lines = statuses(messages)
        self.assertEqual(lines[0], "v1: Pulling from multi")
        short = [sha(gzip.compress(l, mtime=0))[7:19] for l in layers]
        # Three downloads at a time: the fourth layer waits its turn.
        self.assertEqual([l for l in lines if l.endswith("Waiting")], [f"{short[3]}: Waiting"])
        for s in short:
            self.assertIn(f"{s}: Pulling fs layer", lines)
            self.assertIn(f"{s}: Download complete", lines)
            self.assertIn(f"{s}: Pull complete", lines)
        # Layers are unpacked base first.
        self.assertEqual([l for l in lines if l.endswith("Pull complete")], [f"{s}: Pull complete" for s in short])
        self.assertEqual(lines[-2:], [f"Digest: {digest}", f"Status: Downloaded newer image for {self.registry.host}/multi:v1"])
        self.assertTrue(messages[-1].done)
        self.assertEqual(messages[-1].digest, digest)
        listed = await self.images()
        self.assertEqual([(tags, target) for _, tags, target in listed], [((f"{self.registry.host}/multi:v1",), digest)])
        inspect = await deferToThread(self.clients.images.InspectImage, pb.InspectImageRequest(name=f"{self.registry.host}/multi:v1"))
        self.assertEqual(list(inspect.diff_ids), [sha(l) for l in layers])
        self.assertIn(f"{self.registry.host}/multi@{digest}", list(inspect.image.repo_digests))
        again = statuses(await self.pull(f"{self.registry.host}/multi:v1"))
        self.assertEqual(again, ["v1: Pulling from multi", f"Digest: {digest}",
                                 f"Status: Image is up to date for {self.registry.host}/multi:v1"])
        # By digest too: the layers are already there.
        by_digest = statuses(await self.pull(f"{self.registry.host}/multi@{digest}"))
        self.assertEqual(by_digest[0], f"{digest}: Pulling from multi")
        self.assertEqual(by_digest.count(f"{short[0]}: Already exists"), 1)

    async def test_pull_what_skopeo_pushed_from_ross_save(self) -> None:
        """
        `ross save` output pushed by skopeo (docker-archive) pulls back as
        the same image.
        """
        image_id = await load_busybox(self.daemon, "busybox:latest")
        archive = self.tmp / "saved.tar"

        def save() -> None:
            with open(archive, "wb") as f:
                for message in self.clients.images.SaveImages(pb.SaveImagesRequest(names=["busybox"])):
                    if message.WhichOneof("response") == "data":
                        f.write(message.data)

        await deferToThread(save)
        await self.skopeo_push(archive, "saved:v1", transport="docker-archive")
        await deferToThread(self.clients.images.RemoveImage, pb.RemoveImageRequest(name="busybox"))
        self.assertEqual(await self.images(), [])
        await self.pull(f"{self.registry.host}/saved:v1")
        self.assertEqual([(i, tags) for i, tags, _ in await self.images()],
                         [(image_id, (f"{self.registry.host}/saved:v1",))])

    async def test_layer_compressions(self) -> None:
        """
        gzip and zstd layers of one image pull and unpack to their diff
        IDs; the blobs are stored as the registry has them.
        """
        layers = [busybox_layer()]
        for name in ("plain", "zstd"):
            buffer = tempfile.SpooledTemporaryFile()
            with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
                data = name.encode() * 1000
                info = tarfile.TarInfo(f"{name}.txt")
                info.size = len(data)
                info.mtime = 1700000000
                tar.addfile(info, io.BytesIO(data))
            buffer.seek(0)
            layers.append(buffer.read())
        archive = self.tmp / "mixed.tar"
        compressions = ["gzip", "none", "zstd"]
        await deferToThread(_write_layout, archive, layers, "latest", "", compressions)
        await self.skopeo_push(archive, "mixed:latest")
        await self.pull(f"{self.registry.host}/mixed")
        inspect = await deferToThread(self.clients.images.InspectImage,
                                      pb.InspectImageRequest(name=f"{self.registry.host}/mixed"))
        self.assertEqual(list(inspect.diff_ids), [sha(l) for l in layers])
        # skopeo compresses the plain layer on the way up (Ross's own
        # pushes keep plain layers plain: PushTests pulls those back).
        raw = await self.skopeo_inspect("mixed:latest", raw=True)
        self.assertEqual([d["mediaType"].rpartition("+")[2] for d in raw["layers"]], ["gzip", "gzip", "zstd"])
        blobs = self.daemon.engine.content.blobs
        for desc in raw["layers"]:
            self.assertTrue(blobs.exists(desc["digest"]))

    async def test_unknown_and_unreachable(self) -> None:
        """
        An unknown tag or repository is NOT_FOUND (manifest unknown), a
        host nobody listens on UNAVAILABLE, a malformed reference
        INVALID_ARGUMENT; nothing is stored.
        """
        code, message = await self.code_of(self.pull(f"{self.registry.host}/nothere:v1"))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("manifest unknown", message)
        self.assertIn(f"{self.registry.host}/nothere:v1", message)
        # The error is also the stream's last message, as the proto says.
        call = self.clients.images.PullImage(pb.PullImageRequest(image_name=f"{self.registry.host}/nothere:v1"))
        received: list[Any] = []

        def read() -> None:
            try:
                for m in call:
                    received.append(m)
            except grpc.RpcError:
                pass

        await deferToThread(read)
        self.assertEqual(received[-1].error, message)
        from ross.testing.registry import free_port

        port = free_port()
        self.daemon.engine.registry.hosts.insecure = frozenset({f"localhost:{port}"})
        code, message = await self.code_of(self.pull(f"localhost:{port}/x"))
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("connection refused", message)
        code, _ = await self.code_of(self.pull(f"{self.registry.host}/UPPER"))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        code, _ = await self.code_of(self.pull(f"{self.registry.host}/x", all_tags=True, tag="v1"))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        self.assertEqual(await self.images(), [])

    async def test_multi_platform_index(self) -> None:
        """
        From an index of two platforms, the host's manifest is pulled (and
        only its layers); --platform picks the other; a platform the index
        lacks is NOT_FOUND.
        """
        from ross.engine.images.manifest import host_platform

        host = host_platform().architecture
        other = "arm64" if host != "arm64" else "amd64"
        layout = self.tmp / "index"
        blobs = layout / "blobs" / "sha256"
        blobs.mkdir(parents=True)

        def put(data: bytes) -> dict[str, Any]:
            (blobs / sha(data)[7:]).write_bytes(data)
            return {"digest": sha(data), "size": len(data)}

        manifests = []
        layer_digests = {}
        for arch, content in ((host, busybox_layer()), (other, b"")):
            if not content:
                buffer = tempfile.SpooledTemporaryFile()
                with tarfile.open(fileobj=buffer, mode="w") as tar:
                    info = tarfile.TarInfo("only-on-" + arch)
                    info.mtime = 1700000000
                    tar.addfile(info)
                buffer.seek(0)
                content = buffer.read()
            gz = gzip.compress(content, mtime=0)
            layer_digests[arch] = sha(gz)
            config = json.loads(image_config([sha(content)]))
            config["architecture"] = arch
            config_desc = put(json.dumps(config).encode())
            manifest = json.dumps({
                "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_desc},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(gz)}]}).encode()
            manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **put(manifest),
                              "platform": {"os": "linux", "architecture": arch}})
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": manifests}).encode()
        index_desc = put(index)
        (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [
            {"mediaType": "application/vnd.oci.image.index.v1+json", **index_desc,
             "annotations": {"org.opencontainers.image.ref.name": "latest"}}]}))
        (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        flags = ["--dest-tls-verify=false"]
        await deferToThread(skopeo, "copy", "-q", "--all", *flags, f"oci:{layout}:latest",
                            f"docker://{self.registry.host}/multiarch:latest")
        name = f"{self.registry.host}/multiarch"
        lines = statuses(await self.pull(name))
        self.assertIn(f"{layer_digests[host][7:19]}: Pull complete", lines)
        self.assertNotIn(f"{layer_digests[other][7:19]}: Pulling fs layer", lines)
        listed = await self.images()
        self.assertEqual(listed[0][2], index_desc["digest"])
        self.assertFalse(self.daemon.engine.content.blobs.exists(layer_digests[other]))
        lines = statuses(await self.pull(name + ":latest", platform=common_pb2.Platform(os="linux", architecture=other)))
        self.assertIn(f"{layer_digests[other][7:19]}: Pull complete", lines)
        self.assertIn(f"Digest: {index_desc['digest']}", lines)
        # The name now means the other platform's image, as docker's would.
        inspect = await deferToThread(self.clients.images.InspectImage, pb.InspectImageRequest(name=name))
        self.assertEqual(inspect.platform.architecture, other)
        self.assertEqual(inspect.image.target.digest, manifests[1]["digest"])
        code, message = await self.code_of(self.pull(name, platform=common_pb2.Platform(os="linux", architecture="s390x")))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        self.assertIn("no matching manifest for linux/s390x", message)

    async def test_run_pulls_a_missing_image(self) -> None:
        """
        run and create pull an image they do not have, as docker's do
        (--pull missing), saying so on stderr; --pull never does not,
        and --pull always pulls even an image that is there.
        """
        archive = self.tmp / "bb.tar"
        await deferToThread(docker_archive, archive, ["bb:v1"])
        await self.skopeo_push(archive, "bb:v1", transport="docker-archive")
        name = f"{self.registry.host}/bb:v1"
        result = await deferToThread(run_cli, self.daemon.address, "run", "--rm", "--pull", "never", name, "true")
        self.assertEqual((result.returncode, result.stderr), (125, f"Error: No such image: {name}\n".encode()))
        self.assertEqual(await self.images(), [])
        result = await deferToThread(run_cli, self.daemon.address, "run", "--rm", name, "echo", "hi")
        self.assertEqual((result.returncode, result.stdout), (0, b"hi\n"), result.stderr)
        err = result.stderr.decode()
        self.assertTrue(err.startswith(f"Unable to find image '{name}' locally\nv1: Pulling from bb\n"), err)
        self.assertIn(f"Status: Downloaded newer image for {name}\n", err)
        result = await deferToThread(run_cli, self.daemon.address, "create", "--pull", "always", name)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"Status: Image is up to date for {name}", result.stderr.decode())
        self.assertEqual(len(result.stdout.strip()), 64)
        await deferToThread(run_cli, self.daemon.address, "rm", result.stdout.strip().decode())
        result = await deferToThread(run_cli, self.daemon.address, "run", "--rm", f"{self.registry.host}/nosuch",
                                     "true")
        self.assertEqual(result.returncode, 125)
        self.assertIn(f"Unable to find image '{self.registry.host}/nosuch:latest' locally", result.stderr.decode())
        self.assertIn("Error: ", result.stderr.decode())

    async def test_all_tags(self) -> None:
        """pull -a pulls every tag of the repository."""
        archive = self.tmp / "bb.tar"
        await deferToThread(oci_archive, archive)
        await self.skopeo_push(archive, "bb:one")
        await self.skopeo_push(archive, "bb:two")
        lines = statuses(await self.pull(f"{self.registry.host}/bb", all_tags=True))
        self.assertIn("one: Pulling from bb", lines)
        self.assertIn("two: Pulling from bb", lines)
        tags = sorted(t for _, ts, _ in await self.images() for t in ts)
        self.assertEqual(tags, [f"{self.registry.host}/bb:one", f"{self.registry.host}/bb:two"])


class FaultTests(RegistryTestCase):
    """Through a proxy that injects failures in front of the real registry."""

    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.proxy = FaultyProxy(self.registry)
        self.proxy.start()
        self.addCleanup(self.proxy.stop)
        self.daemon.engine.registry.hosts.insecure = frozenset({self.registry.host, self.proxy.host})
        self.archive = self.tmp / "multi.tar"
        self.digest, self.layers = await deferToThread(multi_layer_oci, self.archive, [4 << 20])
        await self.skopeo_push(self.archive, "multi:v1")
        self.big = sha(gzip.compress(self.layers[1], mtime=0))

    async def test_server_error(self) -> None:
        """A registry answering 500 for a blob is UNAVAILABLE; nothing stays."""
        self.proxy.rules.append(Rule("GET", f"/blobs/{self.big}", status=500))
        code, message = await self.code_of(self.pull(f"{self.proxy.host}/multi:v1"))
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("500", message)
        self.assertEqual(await self.images(), [])
        self.assertEqual(self.daemon.engine.content.blobs.list(), [])

    async def test_cut_mid_blob_resumes(self) -> None:
        """
        A connection cut in the middle of a blob is resumed with a Range
        request from where it stopped; the image is complete and correct.
        """
        self.proxy.rules.append(Rule("GET", f"/blobs/{self.big}", cut_after=1 << 20))
        await self.pull(f"{self.proxy.host}/multi:v1")
        ranges = [r for method, path, r in self.proxy.log if path.endswith(self.big)]
        self.assertEqual(len(ranges), 2)
        self.assertEqual(ranges[0], "")
        self.assertTrue(ranges[1].startswith("bytes="))
        self.assertGreater(int(ranges[1][len("bytes="):].rstrip("-")), 0)
        self.assertEqual([t for _, _, t in await self.images()], [self.digest])

    async def test_cut_without_range_support(self) -> None:
        """
        When the registry answers a resumed request with the whole blob
        (no Range support), the download starts again and still ends
        right, with no ingest left.
        """
        self.proxy.rules += [Rule("GET", f"/blobs/{self.big}", cut_after=1 << 20),
                             Rule("GET", f"/blobs/{self.big}", ignore_range=True)]
        await self.pull(f"{self.proxy.host}/multi:v1")
        ranges = [r for method, path, r in self.proxy.log if path.endswith(self.big)]
        self.assertEqual(len(ranges), 2)
        self.assertTrue(ranges[1].startswith("bytes="))
        self.assertEqual([t for _, _, t in await self.images()], [self.digest])

    async def test_cut_again_and_again(self) -> None:
        """A blob whose connection is cut every time is given up: UNAVAILABLE."""
        self.proxy.rules.append(Rule("GET", f"/blobs/{self.big}", cut_after=1000, times=100))
        code, message = await self.code_of(self.pull(f"{self.proxy.host}/multi:v1"))
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("giving up", message)
        self.assertEqual(len([p for _, p, _ in self.proxy.log if p.endswith(self.big)]), 6)
        self.assertEqual(await self.images(), [])

    async def test_digest_mismatch(self) -> None:
        """
        A registry serving other bytes than the digest names is DATA_LOSS,
        and the wrong bytes never become a blob.
        """
        layer_path = (self.registry.storage / "docker/registry/v2/blobs/sha256" / self.big[7:9] / self.big[7:] / "data")
        data = bytearray(layer_path.read_bytes())
        data[100] ^= 0xFF
        layer_path.write_bytes(bytes(data))
        code, message = await self.code_of(self.pull(f"{self.registry.host}/multi:v1"))
        self.assertEqual(code, grpc.StatusCode.DATA_LOSS)
        self.assertIn(self.big, message)
        self.assertEqual(await self.images(), [])
        self.assertEqual(self.daemon.engine.content.blobs.list(), [])

    async def test_cancel_mid_pull(self) -> None:
        """
        A client that goes away mid-download stops the pull: no ingest, no
        lease, no blob, no image (the leak checks run after the test).
        """
        # The big blob's first megabyte arrives, then nothing more.
        stalled: Deferred[None] = Deferred()
        self.proxy.rules.append(Rule("GET", f"/blobs/{self.big}", stall_after=1 << 20,
                                     on_stall=lambda: stalled.callback(None)))
        request = pb.PullImageRequest(image_name=f"{self.proxy.host}/multi:v1")
        call = self.clients.images.PullImage(request, timeout=120)

        def read_until_downloading() -> None:
            for message in call:
                if message.status == "Downloading" and message.id == self.big[7:19] \
                        and message.progress_detail.current > 0:
                    return

        await deferToThread(read_until_downloading)
        await stalled
        blobs = self.daemon.engine.content.blobs
        # The download is under way: its ingest exists, its lease is held.
        self.assertGreaterEqual(len(os.listdir(blobs.ingest_dir)), 1)
        self.assertEqual(blobs.lease_count(), 1)
        call.cancel()
        # The daemon sees the cancellation and undoes the pull.
        for _ in range(200):
            if self.daemon.engine.content.blobs.lease_count() == 0 and not os.listdir(
                    self.daemon.engine.content.blobs.ingest_dir):
                break
            await deferLater(0.05)
        self.assertEqual(await self.images(), [])
        self.assertEqual(self.daemon.engine.content.blobs.list(), [])


def deferLater(seconds: float) -> Deferred[None]:
    from twisted.internet import reactor
    from twisted.internet.task import deferLater as later

    return later(reactor, seconds, lambda: None)


class PushTests(RegistryTestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        self.name = f"{self.registry.host}/busybox:v1"
        # Plain (uncompressed) layers, as docker-save writes them.
        built = await deferToThread(docker_archive, self.tmp / "bb.tar", [self.name], None, False)
        self.image_id = built.config_digest
        await deferToThread(load_archive, self.clients, built.path)

    async def test_push_pull_round_trip(self) -> None:
        """
        A pushed image has the local manifest digest on the registry
        (skopeo agrees), and pulls back into a fresh store with the same
        ID and digest; a second push finds every layer there.
        """
        messages = await self.push(self.name)
        lines = statuses(messages)
        self.assertEqual(lines[0], f"The push refers to repository [{self.registry.host}/busybox]")
        local = await deferToThread(self.clients.images.InspectImage, pb.InspectImageRequest(name=self.name))
        digest = local.image.target.digest
        self.assertIn(f"v1: digest: {digest} size: {local.image.target.size}", lines)
        self.assertTrue(any(l.endswith(": Pushed") for l in lines))
        self.assertEqual(messages[-1].digest, digest)
        inspected = await self.skopeo_inspect("busybox:v1")
        self.assertEqual(inspected["Digest"], digest)
        raw = await self.skopeo_inspect("busybox:v1", raw=True)
        self.assertEqual(raw["layers"][0]["mediaType"], "application/vnd.docker.image.rootfs.diff.tar")
        again = statuses(await self.push(self.name))
        self.assertTrue(all(not l.endswith("Pushed") for l in again))
        self.assertTrue(any(l.endswith("Layer already exists") for l in again))
        await deferToThread(self.clients.images.RemoveImage, pb.RemoveImageRequest(name=self.name))
        self.assertEqual(await self.images(), [])
        await self.pull(self.name)
        self.assertEqual(await self.images(), [(self.image_id, (self.name,), digest)])
        from ross.engine.events import EventFilter

        events = [(e.action, e.actor_id, dict(e.attributes)) for e in self.daemon.engine.events.history(
            EventFilter(types=frozenset({"image"}), actions=frozenset({"push", "pull"})), 0)]
        self.assertEqual(events, [("push", self.image_id, {"name": self.name})] * 2
                         + [("pull", self.image_id, {"name": self.name})])

    async def test_chunked_upload_and_mount(self) -> None:
        """
        Large blobs go up in PATCH chunks; pushing the same image to
        another repository of the registry mounts its layers from the
        first instead of uploading them.
        """
        pusher = self.daemon.engine.registry.pusher
        self.patch(pusher, "monolithic_max", 1024)
        self.patch(pusher, "chunk_size", 256 << 10)
        proxy = FaultyProxy(self.registry)
        proxy.start()
        self.addCleanup(proxy.stop)
        self.daemon.engine.registry.hosts.insecure = frozenset({self.registry.host, proxy.host})
        name = f"{proxy.host}/busybox:v1"
        await deferToThread(self.clients.images.TagImage, pb.TagImageRequest(source=self.name, target=name))
        await self.push(name)
        local = await deferToThread(self.clients.images.InspectImage, pb.InspectImageRequest(name=self.name))
        layer = json.loads(local.manifest_json)["layers"][0]
        patches = [path for method, path, _ in proxy.log if method == "PATCH"]
        self.assertGreaterEqual(len(patches), -(-layer["size"] // (256 << 10)))
        puts = [path for method, path, _ in proxy.log if method == "PUT" and "digest=" in path]
        self.assertIn(layer["digest"].replace(":", "%3A"), " ".join(puts))
        other = f"{proxy.host}/copy:v1"
        await deferToThread(self.clients.images.TagImage, pb.TagImageRequest(source=self.name, target=other))
        proxy.log.clear()
        lines = statuses(await self.push(other))
        self.assertTrue(any(l.endswith("Mounted from busybox") for l in lines), lines)
        self.assertEqual([m for m, _, _ in proxy.log if m == "PATCH"], [])
        inspected = await self.skopeo_inspect("copy:v1")
        self.assertEqual(inspected["Layers"], [layer["digest"]])

    async def test_push_corrupt_blob(self) -> None:
        """
        A stored layer that no longer matches its digest is DATA_LOSS,
        whether it goes up in one PUT (Ross checks it before sending) or
        in chunks (the registry finds the digest wrong); the tag is not
        created.
        """
        local = await deferToThread(self.clients.images.InspectImage, pb.InspectImageRequest(name=self.name))
        layer = json.loads(local.manifest_json)["layers"][0]
        path = self.daemon.engine.content.blobs.path(layer["digest"])
        data = bytearray(path.read_bytes())
        data[-100] ^= 0xFF
        path.write_bytes(bytes(data))
        pusher = self.daemon.engine.registry.pusher
        for monolithic in (64 << 20, 1024):
            self.patch(pusher, "monolithic_max", monolithic)
            code, message = await self.code_of(self.push(self.name))
            self.assertEqual(code, grpc.StatusCode.DATA_LOSS, message)
        result = await deferToThread(subprocess.run, [SKOPEO, "inspect", "--tls-verify=false",
                                                      f"docker://{self.name}"], capture_output=True)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"manifest unknown", result.stderr)

    async def test_skopeo_copies_what_ross_pushed(self) -> None:
        """skopeo copies a Ross-pushed image into an OCI layout intact."""
        await self.push(self.name)
        out = self.tmp / "copied"
        await deferToThread(skopeo, "copy", "-q", "--src-tls-verify=false", f"docker://{self.name}", f"oci:{out}:x")
        index = json.loads((out / "index.json").read_text())
        manifest_digest = index["manifests"][0]["digest"]
        manifest = json.loads((out / "blobs/sha256" / manifest_digest[7:]).read_text())
        config = json.loads((out / "blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
        local = await deferToThread(self.clients.images.InspectImage, pb.InspectImageRequest(name=self.name))
        self.assertEqual(config["rootfs"]["diff_ids"], list(local.diff_ids))

    async def test_push_unknown_and_errors(self) -> None:
        """
        Pushing an image that is not there is NOT_FOUND; a digest
        reference INVALID_ARGUMENT; a registry failing the manifest PUT
        UNAVAILABLE.
        """
        code, _ = await self.code_of(self.push(f"{self.registry.host}/nothere:v1"))
        self.assertEqual(code, grpc.StatusCode.NOT_FOUND)
        code, _ = await self.code_of(self.push(f"{self.registry.host}/busybox@sha256:{'a' * 64}"))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        proxy = FaultyProxy(self.registry, rules=[Rule("PUT", "/manifests/", status=503)])
        proxy.start()
        self.addCleanup(proxy.stop)
        self.daemon.engine.registry.hosts.insecure = frozenset({self.registry.host, proxy.host})
        name = f"{proxy.host}/busybox:v1"
        await deferToThread(self.clients.images.TagImage, pb.TagImageRequest(source=self.name, target=name))
        code, message = await self.code_of(self.push(name))
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("503", message)


class CLITests(RegistryTestCase):
    async def test_pull_and_push_cli(self) -> None:
        """ross pull and ross push print docker's lines when piped."""
        archive = self.tmp / "bb.tar"
        await deferToThread(oci_archive, archive)
        await self.skopeo_push(archive, "bb:latest")
        name = f"{self.registry.host}/bb"
        result = await deferToThread(run_cli, self.daemon.address, "pull", name)
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout.decode().splitlines()
        self.assertEqual(out[:2], ["Using default tag: latest", "latest: Pulling from bb"])
        self.assertTrue(out[-3].startswith("Digest: sha256:"))
        self.assertEqual(out[-2], f"Status: Downloaded newer image for {name}:latest")
        self.assertEqual(out[-1], f"{name}:latest")
        result = await deferToThread(run_cli, self.daemon.address, "pull", "-q", name)
        self.assertEqual(result.stdout.decode(), f"{name}:latest\n")
        other = f"{self.registry.host}/other:v2"
        await deferToThread(run_cli, self.daemon.address, "tag", name, other)
        result = await deferToThread(run_cli, self.daemon.address, "push", other)
        self.assertEqual(result.returncode, 0, result.stderr)
        out = result.stdout.decode().splitlines()
        self.assertEqual(out[0], f"The push refers to repository [{self.registry.host}/other]")
        self.assertRegex(out[-1], r"^v2: digest: sha256:[0-9a-f]{64} size: \d+$")
        result = await deferToThread(run_cli, self.daemon.address, "pull", f"{self.registry.host}/missing")
        self.assertEqual(result.returncode, 1)
        self.assertIn("manifest unknown", result.stderr.decode())


class TLSTests(RegistryTestCase):
    tls = True

    async def test_tls_verified(self) -> None:
        """
        Over TLS, a registry whose CA is not trusted is refused
        (UNAVAILABLE, the message says why); with its CA in the certs
        directory, pull and push work.
        """
        archive = self.tmp / "bb.tar"
        await deferToThread(oci_archive, archive)
        self.trust_ca()
        await self.skopeo_push(archive, "bb:latest")
        (self.certs_dir / self.registry.host / "ca.crt").rename(self.tmp / "moved.crt")
        code, message = await self.code_of(self.pull(f"{self.registry.host}/bb"))
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("certificate", message)
        self.assertEqual(await self.images(), [])
        self.trust_ca()
        await self.pull(f"{self.registry.host}/bb")
        self.assertEqual(len(await self.images()), 1)
        await deferToThread(self.clients.images.TagImage,
                            pb.TagImageRequest(source=f"{self.registry.host}/bb", target=f"{self.registry.host}/pushed:v1"))
        await self.push(f"{self.registry.host}/pushed:v1")
        inspected = await self.skopeo_inspect("pushed:v1")
        self.assertEqual(inspected["Name"], f"{self.registry.host}/pushed")

    async def test_host_name_verified(self) -> None:
        """
        A certificate from the trusted CA but for another host name is
        refused: the host name is verified, not only the chain.
        """
        import datetime

        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "elsewhere.example")]))
                .issuer_name(self.ca.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("elsewhere.example")]), critical=False)
                .sign(self.ca.key, hashes.SHA256()))
        (self.tmp / "other.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (self.tmp / "other-key.pem").write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        other = RegistryServer(self.tmp / "other", tls=(str(self.tmp / "other.pem"), str(self.tmp / "other-key.pem")))
        await other.start()
        self.addCleanup(other.remove)
        self.addCleanup(other.stop)
        directory = self.certs_dir / other.host
        directory.mkdir()
        (directory / "ca.crt").write_bytes(self.ca.pem)
        code, message = await self.code_of(self.pull(f"{other.host}/bb"))
        self.assertEqual(code, grpc.StatusCode.UNAVAILABLE)
        self.assertIn("does not match the host name", message)



def auth(username: str, password: str) -> common_pb2.RegistryAuth:
    return common_pb2.RegistryAuth(username=username, password=password)


class BasicAuthTests(RegistryTestCase):
    """The registry's own htpasswd (basic) authentication."""

    users = {"alice": "s3cret"}

    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        archive = self.tmp / "bb.tar"
        await deferToThread(oci_archive, archive)
        await deferToThread(skopeo, "copy", "-q", "--dest-tls-verify=false", "--dest-creds", "alice:s3cret",
                            f"oci-archive:{archive}", f"docker://{self.registry.host}/bb:latest")
        self.name = f"{self.registry.host}/bb:latest"

    async def test_basic_auth(self) -> None:
        """
        Without credentials, or with a wrong password, a pull is
        UNAUTHENTICATED; with the right ones pull and push work.
        """
        code, message = await self.code_of(self.pull(self.name))
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("unauthorized", message)
        code, _ = await self.code_of(self.pull(self.name, registry_auth=auth("alice", "wrong")))
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(await self.images(), [])
        await self.pull(self.name, registry_auth=auth("alice", "s3cret"))
        other = f"{self.registry.host}/mine:v1"
        await deferToThread(self.clients.images.TagImage, pb.TagImageRequest(source=self.name, target=other))
        code, _ = await self.code_of(self.push(other))
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        await self.push(other, registry_auth=auth("alice", "s3cret"))

    async def test_login_logout_cli(self) -> None:
        """
        ross login checks the password with the registry and stores it in
        docker's config.json format (0600); pull uses it; a wrong password
        stores nothing; ross logout forgets it.
        """
        config_dir = self.tmp / "cli-config"
        env = {"ROSS_CONFIG": str(config_dir)}
        host = self.registry.host

        def cli(*args: str, input: bytes | None = None) -> Any:
            return run_cli(self.daemon.address, *args, input=input, env=env)

        result = await deferToThread(cli, "login", "-u", "alice", "--password-stdin", host, input=b"wrong\n")
        self.assertEqual(result.returncode, 1)
        self.assertIn("unauthorized", result.stderr.decode())
        self.assertFalse((config_dir / "config.json").exists())
        result = await deferToThread(cli, "login", "-u", "alice", "--password-stdin", host, input=b"s3cret\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.decode(), "Login Succeeded\n")
        config = config_dir / "config.json"
        self.assertEqual(config.stat().st_mode & 0o777, 0o600)
        import base64

        self.assertEqual(json.loads(config.read_text()),
                         {"auths": {host: {"auth": base64.b64encode(b"alice:s3cret").decode()}}})
        result = await deferToThread(cli, "pull", "-q", self.name)
        self.assertEqual(result.returncode, 0, result.stderr)
        result = await deferToThread(cli, "logout", host)
        self.assertEqual(result.stdout.decode(), f"Removing login credentials for {host}\n")
        self.assertEqual(json.loads(config.read_text()), {"auths": {}})
        result = await deferToThread(cli, "pull", self.name)
        self.assertEqual(result.returncode, 1)
        self.assertIn("unauthorized", result.stderr.decode())


class BearerTests(RegistryTestCase):
    """
    Docker Hub's scheme: the real registry in token mode, verifying the
    JWTs a token server on the test's reactor signs.
    """

    token_users = {"bob": "hunter2"}

    async def setUp(self) -> None:  # type: ignore[override]
        await super().setUp()
        archive = self.tmp / "bb.tar"
        await deferToThread(oci_archive, archive)
        await deferToThread(skopeo, "copy", "-q", "--dest-tls-verify=false", "--dest-creds", "bob:hunter2",
                            f"oci-archive:{archive}", f"docker://{self.registry.host}/bb:latest")
        self.name = f"{self.registry.host}/bb:latest"

    async def test_bearer_token(self) -> None:
        """
        A 401 naming a realm sends Ross there for a token with the
        credentials and the pull scope; the token is reused for the next
        pull; a push asks for pull,push; bad credentials are
        UNAUTHENTICATED; login checks them against the token server.
        """
        assert self.tokens is not None
        code, _ = await self.code_of(self.pull(self.name))
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        code, message = await self.code_of(self.pull(self.name, registry_auth=auth("bob", "nope")))
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        self.assertIn("incorrect username or password", message)
        self.tokens.requests.clear()
        await self.pull(self.name, registry_auth=auth("bob", "hunter2"))
        self.assertEqual(self.tokens.requests, ["repository:bb:pull"])
        await self.pull(self.name, registry_auth=auth("bob", "hunter2"))
        self.assertEqual(len(self.tokens.requests), 1)
        # The cached token is bob's with his password only.
        code, _ = await self.code_of(self.pull(self.name, registry_auth=auth("bob", "guess")))
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
        # Logout drops the daemon's tokens: the next pull asks again.
        await deferToThread(self.clients.images.Logout, pb.LogoutRequest(server_address=self.registry.host))
        self.tokens.requests.clear()
        await self.pull(self.name, registry_auth=auth("bob", "hunter2"))
        self.assertEqual(self.tokens.requests, ["repository:bb:pull"])
        other = f"{self.registry.host}/pushed:v1"
        await deferToThread(self.clients.images.TagImage, pb.TagImageRequest(source=self.name, target=other))
        await self.push(other, registry_auth=auth("bob", "hunter2"))
        # Mounting from bb needs pull on it too.
        self.assertEqual(self.tokens.requests[-1:], ["repository:pushed:pull,push repository:bb:pull"])
        skopeo_flags = ["--tls-verify=false", "--creds", "bob:hunter2"]
        inspected = await deferToThread(lambda: json.loads(skopeo(
            "inspect", *skopeo_flags, f"docker://{other}").stdout))
        self.assertEqual(inspected["Name"], f"{self.registry.host}/pushed")
        login = await deferToThread(self.clients.images.Login, pb.LoginRequest(
            auth=common_pb2.RegistryAuth(username="bob", password="hunter2", server_address=self.registry.host)))
        self.assertEqual(login.status, "Login Succeeded")
        code, _ = await self.code_of(deferToThread(self.clients.images.Login, pb.LoginRequest(
            auth=common_pb2.RegistryAuth(username="bob", password="x", server_address=self.registry.host))))
        self.assertEqual(code, grpc.StatusCode.UNAUTHENTICATED)
