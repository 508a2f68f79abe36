# -*- test-case-name: ross.test.integration.test_snapshot_layers_api -*-
"""
ExtractLayer and Diff over real gRPC, with layer blobs in the daemon's
content store.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import tarfile
from typing import Any, Generator

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.testing.daemon import InProcessDaemon
from ross.v1 import common_pb2, image_pb2
from ross.v1 import snapshot_pb2 as pb


def layer_tar() -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in (("etc/motd", b"hello\n"), ("bin/tool", b"#!/bin/sh\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o755
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


class LayerAPITests(TestCase):
    # trial runs a Deferred-returning setUp; its TestCase keeps unittest's
    # `-> None` (twisted/twisted#12037).
    @inlineCallbacks
    def setUp(self) -> Generator[Any, Any, None]:  # type: ignore[override]
        self.daemon = InProcessDaemon(self)
        yield self.daemon.start()
        self.stub = self.daemon.clients().snapshots
        self.content = self.daemon.engine.content

    def call(self, method: str, request: Any) -> Any:
        return self.daemon.call(getattr(self.stub, method), request, timeout=60)

    def store(self, data: bytes) -> Any:
        def ingest() -> Any:
            writer = self.content.writer()
            writer.write(data)
            return writer.commit()

        return deferToThread(ingest)

    def descriptor(self, data: bytes) -> common_pb2.Descriptor:
        return common_pb2.Descriptor(
            media_type="application/vnd.oci.image.layer.v1.tar+gzip",
            digest="sha256:" + hashlib.sha256(data).hexdigest(),
            size=len(data),
        )

    @inlineCallbacks
    def test_extract_and_diff(self) -> Generator[Any, Any, None]:
        """
        ExtractLayer applies a stored gzip layer and answers its diff ID;
        Diff of that snapshot stores a layer blob that extracts to the same
        files.
        """
        raw = layer_tar()
        blob = gzip.compress(raw)
        yield self.store(blob)
        yield self.call("Prepare", pb.PrepareSnapshotRequest(key="a"))
        extracted = yield self.call("ExtractLayer", pb.ExtractLayerRequest(key="a", layer=self.descriptor(blob)))
        self.assertEqual(extracted.diff_id, "sha256:" + hashlib.sha256(raw).hexdigest())
        self.assertEqual(extracted.size, len(raw))
        diff = yield self.call("Diff", pb.DiffSnapshotRequest(key="a"))
        self.assertEqual(diff.layer.media_type, "application/vnd.oci.image.layer.v1.tar+gzip")
        path = self.content.path(diff.layer.digest)
        with open(path, "rb") as f:
            stored = f.read()
        self.assertEqual(diff.layer.size, len(stored))
        self.assertEqual(diff.diff_id, "sha256:" + hashlib.sha256(gzip.decompress(stored)).hexdigest())
        yield self.call("Prepare", pb.PrepareSnapshotRequest(key="b"))
        again = yield self.call("ExtractLayer", pb.ExtractLayerRequest(key="b", layer=diff.layer))
        self.assertEqual(again.diff_id, diff.diff_id)
        mounts = yield self.call("Mounts", pb.MountsRequest(key="b"))
        with open(os.path.join(mounts.mounts[0].source, "etc/motd"), "rb") as f:
            self.assertEqual(f.read(), b"hello\n")
        plain = yield self.call("Diff", pb.DiffSnapshotRequest(key="b", media_type="application/vnd.oci.image.layer.v1.tar"))
        self.assertEqual(plain.layer.digest, plain.diff_id)

    @inlineCallbacks
    def test_diff_blob_outlives_content_gc(self) -> Generator[Any, Any, None]:
        """
        Nothing refers to a blob Diff just wrote, yet the content GC that
        an image prune runs leaves it for the client to reference, while
        it takes an unreferenced blob stored the same way without a lease.
        """
        layer = self.descriptor(gzip.compress(layer_tar(), mtime=0))
        yield self.store(gzip.compress(layer_tar(), mtime=0))
        yield self.call("Prepare", pb.PrepareSnapshotRequest(key="d"))
        yield self.call("ExtractLayer", pb.ExtractLayerRequest(key="d", layer=layer))
        diff = yield self.call("Diff", pb.DiffSnapshotRequest(key="d"))
        images = self.daemon.clients().images
        yield self.daemon.call(images.PruneImages, image_pb2.PruneImagesRequest(all=True), timeout=60)
        self.assertTrue(os.path.exists(self.content.blobs.blob_path(diff.layer.digest)))
        self.assertFalse(os.path.exists(self.content.blobs.blob_path(layer.digest)))

    @inlineCallbacks
    def test_bad_layers(self) -> Generator[Any, Any, None]:
        """
        A missing blob is NOT_FOUND, a malformed digest INVALID_ARGUMENT, a
        corrupt layer INVALID_ARGUMENT leaving the snapshot empty, a
        committed target FAILED_PRECONDITION; snapshots are unchanged.
        """
        corrupt = gzip.compress(layer_tar())[:-30]
        yield self.store(corrupt)
        yield self.call("Prepare", pb.PrepareSnapshotRequest(key="c-x"))
        yield self.call("Commit", pb.CommitSnapshotRequest(name="c", key="c-x"))
        yield self.call("Prepare", pb.PrepareSnapshotRequest(key="t"))
        missing = self.descriptor(b"never stored")
        code = grpc.StatusCode
        cases = [
            (pb.ExtractLayerRequest(key="t", layer=missing), code.NOT_FOUND),
            (pb.ExtractLayerRequest(key="t", layer=common_pb2.Descriptor(digest="sha256:xyz")), code.INVALID_ARGUMENT),
            (pb.ExtractLayerRequest(key="t", layer=self.descriptor(corrupt)), code.INVALID_ARGUMENT),
            (pb.ExtractLayerRequest(key="c", layer=self.descriptor(corrupt)), code.FAILED_PRECONDITION),
            (pb.ExtractLayerRequest(key="nope", layer=self.descriptor(corrupt)), code.NOT_FOUND),
        ]
        before = yield self.call("List", pb.ListSnapshotsRequest())
        for request, expected in cases:
            error = yield self.assertFailure(self.call("ExtractLayer", request), grpc.RpcError)
            self.assertEqual(error.code(), expected, error.details())
            self.assertEqual((yield self.call("List", pb.ListSnapshotsRequest())), before)
        mounts = yield self.call("Mounts", pb.MountsRequest(key="t"))
        self.assertEqual(os.listdir(mounts.mounts[0].source), [])
        error = yield self.assertFailure(self.call("Diff", pb.DiffSnapshotRequest(key="nope")), grpc.RpcError)
        self.assertEqual(error.code(), code.NOT_FOUND)
