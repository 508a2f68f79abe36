# -*- test-case-name: ross.test.integration.test_image_interop -*-
"""
Interoperability with real tools: images that umoci builds and skopeo
writes (docker-archive and OCI archive) load into Ross and unpack, file by
file, to what `umoci unpack` gives; what `ross save` writes, skopeo reads
back with the same digests.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.test.integration.test_images import StoreFixture, drain
from ross.test.integration.test_layers import tree
from ross.testing.busybox import build_rootfs
from ross.testing.mounts import mount_all, unmount


def run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed: {result.stderr}")
    return result.stdout


def umoci_image(base: Path) -> Path:
    """
    An OCI layout "bb" made by umoci: the busybox root filesystem, then a
    second layer that deletes, adds (owned, setuid, hard- and symlinked)
    and changes files.
    """
    layout = base / "layout"
    bundle = base / "bundle"
    run("umoci", "init", "--layout", str(layout))
    run("umoci", "new", "--image", f"{layout}:bb")
    run("umoci", "unpack", "--image", f"{layout}:bb", str(bundle))
    rootfs = bundle / "rootfs"
    build_rootfs(rootfs)
    run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:bb", str(bundle))
    (rootfs / "etc" / "group").unlink()
    app = rootfs / "opt" / "app"
    app.mkdir(parents=True)
    (app / "data").write_bytes(b"x" * 10000)
    os.chown(app / "data", 1000, 1000)
    os.chmod(app / "data", 0o640)
    os.link(app / "data", app / "data-link")
    os.symlink("/opt/app/data", app / "abs-link")
    (app / "tool").write_bytes(b"#!/bin/sh\necho tool\n")
    os.chmod(app / "tool", 0o4755)
    (rootfs / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    run("umoci", "repack", "--image", f"{layout}:bb", str(bundle))
    run("umoci", "config", "--image", f"{layout}:bb", "--config.cmd", "sh", "--config.workingdir", "/opt/app")
    shutil.rmtree(bundle)
    return layout


class SkopeoUmociTests(StoreFixture, TestCase):
    async def setUp(self) -> None:  # type: ignore[override]
        self.store = await self.make_store()
        self.base = Path(self.mktemp()).absolute()
        self.base.mkdir()
        self.layout = await deferToThread(umoci_image, self.base)
        reference = self.base / "reference"
        await deferToThread(run, "umoci", "unpack", "--image", f"{self.layout}:bb", str(reference))
        self.expected = tree(str(reference / "rootfs"), xattrs=False)

    async def rootfs_of(self, name: str) -> dict[str, Any]:
        """The image's unpacked root filesystem, through a read-only view mount."""
        image = await self.store.resolve(name)
        key = f"view-{name}"
        mounts = await self.store.snapshotter.view(key, image.chain_id)
        target = self.base / key.replace(":", "_").replace("/", "_")
        target.mkdir()
        mount_all(mounts, str(target))
        try:
            return tree(str(target), xattrs=False)
        finally:
            unmount(str(target))
            await self.store.snapshotter.remove(key)

    def assertSameTree(self, ours: dict[str, Any]) -> None:
        self.assertEqual(sorted(ours), sorted(self.expected))
        for name, entry in ours.items():
            self.assertEqual(entry, self.expected[name], name)
        self.assertNotIn("etc/group", ours)
        self.assertGreater(len(ours), 100)

    async def test_skopeo_docker_archive(self) -> None:
        """
        skopeo's docker-archive of the umoci image loads and unpacks to
        umoci's root filesystem.
        """
        archive = self.base / "docker.tar"
        await deferToThread(run, "skopeo", "copy", f"oci:{self.layout}:bb", f"docker-archive:{archive}:busybox:latest")
        result = await self.load_file(self.store, archive)
        self.assertEqual(result.loaded, ("Loaded image: busybox:latest",))
        image = await self.store.resolve("busybox")
        self.assertEqual(image.config.config.working_dir, "/opt/app")
        self.assertEqual(len(image.layers), 2)
        self.assertSameTree(await self.rootfs_of("busybox:latest"))

    async def test_skopeo_oci_archive(self) -> None:
        """
        skopeo's OCI archive loads with the manifest digest umoci made, and
        unpacks to the same root filesystem.
        """
        archive = self.base / "oci.tar"
        await deferToThread(run, "skopeo", "copy", f"oci:{self.layout}:bb",
                            f"oci-archive:{archive}:docker.io/library/bbo:1")
        result = await self.load_file(self.store, archive)
        self.assertEqual(result.loaded, ("Loaded image: bbo:1",))
        index = json.loads((self.layout / "index.json").read_text())
        image = await self.store.resolve("bbo:1")
        self.assertEqual(image.target.digest, index["manifests"][0]["digest"])
        self.assertSameTree(await self.rootfs_of("bbo:1"))

    async def save(self, fmt: str) -> Path:
        total, flow = await self.store.save(["busybox"], fmt)
        path = self.base / f"saved-{fmt}.tar"
        path.write_bytes(await drain(flow))
        self.assertEqual(path.stat().st_size, total)
        return path

    async def test_save_read_by_skopeo(self) -> None:
        """
        `ross save` output: skopeo inspects and copies it with the image's
        config digest and diff IDs (docker-archive) and its manifest
        digest (OCI).
        """
        archive = self.base / "docker.tar"
        await deferToThread(run, "skopeo", "copy", f"oci:{self.layout}:bb", f"docker-archive:{archive}:busybox:latest")
        await self.load_file(self.store, archive)
        image = await self.store.resolve("busybox")

        saved = await self.save("docker-archive")
        info = json.loads(await deferToThread(run, "skopeo", "inspect", f"docker-archive:{saved}"))
        self.assertEqual(info["Layers"], list(image.config.diff_ids))
        raw_config = await deferToThread(run, "skopeo", "inspect", "--config", "--raw", f"docker-archive:{saved}")
        self.assertEqual("sha256:" + hashlib.sha256(raw_config.encode()).hexdigest(), image.id)
        copied = self.base / "copied"
        await deferToThread(run, "skopeo", "copy", f"docker-archive:{saved}", f"dir:{copied}")
        manifest = json.loads((copied / "manifest.json").read_text())
        self.assertEqual(manifest["config"]["digest"], image.id)
        self.assertEqual(
            json.loads((copied / manifest["config"]["digest"][7:]).read_text())["rootfs"]["diff_ids"],
            list(image.config.diff_ids))

        # A docker-typed image goes out as OCI over the same config.
        saved_oci = await self.save("oci-archive")
        raw_config = await deferToThread(run, "skopeo", "inspect", "--config", "--raw", f"oci-archive:{saved_oci}:latest")
        self.assertEqual("sha256:" + hashlib.sha256(raw_config.encode()).hexdigest(), image.id)

    async def test_save_oci_keeps_digests(self) -> None:
        """
        An OCI image saved with --format oci keeps its manifest digest
        through skopeo inspect and skopeo copy.
        """
        archive = self.base / "oci.tar"
        await deferToThread(run, "skopeo", "copy", f"oci:{self.layout}:bb",
                            f"oci-archive:{archive}:docker.io/library/busybox:latest")
        await self.load_file(self.store, archive)
        image = await self.store.resolve("busybox")
        saved_oci = await self.save("oci-archive")
        info = json.loads(await deferToThread(run, "skopeo", "inspect", f"oci-archive:{saved_oci}:latest"))
        self.assertEqual(info["Digest"], image.target.digest)
        self.assertEqual(info["Layers"], [layer.digest for layer in image.layers])
        copied_oci = self.base / "copied-oci"
        await deferToThread(run, "skopeo", "copy", f"oci-archive:{saved_oci}:latest", f"oci:{copied_oci}:y")
        copied_index = json.loads((copied_oci / "index.json").read_text())
        self.assertEqual(copied_index["manifests"][0]["digest"], image.target.digest)
