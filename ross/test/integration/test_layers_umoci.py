# -*- test-case-name: ross.test.integration.test_layers_umoci -*-
"""
Ross's unpacking against a reference: the same three layers (whiteouts,
an opaque directory, hard links, symlinks, devices, setuid, owners) give,
file by file, the root filesystem `umoci unpack` gives.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import subprocess
import tarfile
from pathlib import Path
from typing import Any, Generator

from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.test.integration.test_layers import make_tar, member, tree
from ross.test.integration.test_overlay_snapshotter import _snapshotter
from ross.test.snapshotter_suite import SnapshotterFixture


def layers() -> list[bytes]:
    return [
        make_tar([
            member("bin", tarfile.DIRTYPE),
            member("bin/sh", data=b"\x7fELF shell", mode=0o755),
            member("bin/su", data=b"\x7fELF su", mode=0o4755),
            member("bin/ash", tarfile.LNKTYPE, linkname="bin/sh"),
            member("usr/bin", tarfile.DIRTYPE),
            member("usr/bin/env", tarfile.SYMTYPE, linkname="/bin/sh"),
            member("etc", tarfile.DIRTYPE, mode=0o755),
            member("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
            member("etc/shadow", data=b"root:*:1::::::\n", mode=0o640, gid=42),
            member("var/lib/app", tarfile.DIRTYPE, uid=1000, gid=1000, mode=0o750),
            member("var/lib/app/state", data=b"v1", uid=1000, gid=1000),
            member("var/lib/app/cache/blob", data=b"c" * 5000, uid=1000, gid=1000),
            member("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3, mode=0o666),
            member("run/fifo", tarfile.FIFOTYPE, mode=0o600),
        ]),
        make_tar([
            member("etc/.wh.shadow"),
            member("var/lib/app", tarfile.DIRTYPE, uid=1000, gid=1000, mode=0o750),
            member("var/lib/app/.wh..wh..opq"),
            member("var/lib/app/state", data=b"v2", uid=1000, gid=1000),
            member("bin/.wh.su"),
        ]),
        make_tar([
            member("etc/passwd", data=b"root:x:0:0::/root:/bin/ash\n"),
            member("opt/tool", data=b"#!/bin/sh\n", mode=0o755, uid=7, gid=8),
            member("opt/tool-link", tarfile.LNKTYPE, linkname="opt/tool"),
        ]),
    ]


def write_layout(path: Path, gz_layers: list[bytes], diff_ids: list[str]) -> None:
    blobs = path / "blobs" / "sha256"
    blobs.mkdir(parents=True)

    def put(data: bytes) -> dict[str, Any]:
        digest = hashlib.sha256(data).hexdigest()
        (blobs / digest).write_bytes(data)
        return {"digest": "sha256:" + digest, "size": len(data)}

    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **put(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **put(g)} for g in gz_layers],
    }).encode()
    (path / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **put(manifest),
        "annotations": {"org.opencontainers.image.ref.name": "test"},
    }]}))
    (path / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


class UmociComparisonTests(SnapshotterFixture, TestCase):
    def make_snapshotter(self) -> Deferred[Any]:
        return _snapshotter(self)

    @inlineCallbacks
    def test_same_rootfs_as_umoci(self) -> Generator[Any, Any, None]:
        """
        The merged view of Ross's snapshots equals umoci's unpacked rootfs:
        types, modes, owners, contents, link targets, devices.
        """
        raws = layers()
        gz = [gzip.compress(r, mtime=0) for r in raws]
        base = Path(self.mktemp()).absolute()
        layout = base / "oci"
        write_layout(layout, gz, ["sha256:" + hashlib.sha256(r).hexdigest() for r in raws])
        bundle = base / "bundle"
        yield deferToThread(
            subprocess.run, ["umoci", "unpack", "--image", f"{layout}:test", str(bundle)],
            check=True, capture_output=True,
        )
        parent = ""
        for i, blob in enumerate(gz):
            path = base / f"layer{i}.tar.gz"
            path.write_bytes(blob)
            yield self.snapshotter.prepare(f"l{i}-x", parent)
            yield self.snapshotter.apply_layer(f"l{i}-x", path)
            yield self.snapshotter.commit(f"l{i}", f"l{i}-x")
            parent = f"l{i}"
        view = self.mounted((yield self.snapshotter.view("v", parent)))
        ours = tree(view, xattrs=False)
        theirs = tree(str(bundle / "rootfs"), xattrs=False)
        self.assertEqual(sorted(ours), sorted(theirs))
        self.assertGreater(len(ours), 15)
        for name in ours:
            self.assertEqual(ours[name], theirs[name], name)
        self.assertNotIn("etc/shadow", ours)
        self.assertEqual(sorted(os.listdir(os.path.join(view, "var/lib/app"))), ["state"])
