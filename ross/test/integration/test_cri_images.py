"""
The CRI's ImageService on Ross's own image store: listing, status, pulls
with credentials (from a real registry with basic auth, and through a
mirror), removal, and the image filesystem's usage.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks

from ross.cri.images import PAUSE_IMAGE
from ross.cri.v1 import api_pb2
from ross.engine.registry.auth import Credentials
from ross.testing.cri import CRITestCase
from ross.testing.registry import RegistryServer, free_port

USER, PASSWORD = "kube", "s3cret"


def spec(name: str) -> api_pb2.ImageSpec:
    return api_pb2.ImageSpec(image=name)


class ImageTests(CRITestCase):
    @inlineCallbacks
    def test_shared_store(self) -> Any:
        """
        The image Ross loaded is the CRI's, under its name, its ID and its
        digest; its status says whom it runs as; one that is not here has
        an empty status, not an error.
        """
        listed = yield self.call(self.cri.images.ListImages, api_pb2.ListImagesRequest())
        [image] = [i for i in listed.images if "docker.io/library/busybox:latest" in i.repo_tags]
        ross_images = yield self.ross("images", "-q", "--no-trunc")
        self.assertIn(image.id, ross_images.stdout.decode().split())
        self.assertFalse(image.pinned)
        for name in ("busybox", image.id, image.repo_digests[0]):
            status = yield self.call(self.cri.images.ImageStatus, api_pb2.ImageStatusRequest(image=spec(name)))
            self.assertEqual(status.image.id, image.id, name)
            self.assertEqual((status.image.uid.value, status.image.username), (0, ""))
        missing = yield self.call(self.cri.images.ImageStatus, api_pb2.ImageStatusRequest(image=spec("not/here:1")))
        self.assertFalse(missing.HasField("image"))
        only = yield self.call(self.cri.images.ListImages,
                               api_pb2.ListImagesRequest(filter=api_pb2.ImageFilter(image=spec("busybox"))))
        self.assertEqual([i.id for i in only.images], [image.id])

    @inlineCallbacks
    def test_remove(self) -> Any:
        """
        RemoveImage removes the image under every name (as containerd), is
        idempotent, and the image is gone for ross too.
        """
        yield self.ross("tag", "busybox", "second:name")
        yield self.call(self.cri.images.RemoveImage, api_pb2.RemoveImageRequest(image=spec("second:name")))
        for name in ("busybox", "second:name"):
            status = yield self.call(self.cri.images.ImageStatus, api_pb2.ImageStatusRequest(image=spec(name)))
            self.assertFalse(status.HasField("image"), name)
        yield self.call(self.cri.images.RemoveImage, api_pb2.RemoveImageRequest(image=spec("busybox")))
        listed = yield self.ross("images", "-q")
        self.assertEqual(listed.stdout.strip(), b"")

    @inlineCallbacks
    def test_bad_input(self) -> Any:
        """
        No image name is INVALID_ARGUMENT for each RPC that takes one, and
        changes nothing.
        """
        for fn, request in [(self.cri.images.ImageStatus, api_pb2.ImageStatusRequest()),
                            (self.cri.images.PullImage, api_pb2.PullImageRequest()),
                            (self.cri.images.RemoveImage, api_pb2.RemoveImageRequest())]:
            code = yield self.failure_code(fn, request)
            self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        code = yield self.failure_code(self.cri.images.PullImage, api_pb2.PullImageRequest(
            image=spec("busybox"), auth=api_pb2.AuthConfig(auth="not base64!")))
        self.assertEqual(code, grpc.StatusCode.INVALID_ARGUMENT)
        listed = yield self.call(self.cri.images.ListImages, api_pb2.ListImagesRequest())
        self.assertEqual([list(i.repo_tags) for i in listed.images], [["docker.io/library/busybox:latest"]])

    @inlineCallbacks
    def test_fs_info(self) -> Any:
        """
        ImageFsInfo reports the usage of the filesystem holding the layers.
        """
        info = yield self.call(self.cri.images.ImageFsInfo, api_pb2.ImageFsInfoRequest())
        [usage] = info.image_filesystems
        self.assertTrue(usage.fs_id.mountpoint.startswith(str(self.daemon.root)))
        self.assertGreater(usage.used_bytes.value, 0)
        self.assertGreater(usage.inodes_used.value, 0)
        self.assertGreater(usage.timestamp, 0)


class PullTests(CRITestCase):
    """
    Pulls from a registry with basic auth, directly and as a mirror of
    another registry.
    """

    def daemon_options(self) -> dict[str, Any]:
        self.registry = RegistryServer(Path(self.mktemp()), users={USER: PASSWORD}, port=free_port())
        return {"insecure_registries": (self.registry.host,),
                "registry_mirrors": (("registry.example.invalid", self.registry.host),)}

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        yield self.registry.start()
        self.addCleanup(self.registry.stop)
        name = f"{self.registry.host}/team/busybox:1"
        yield self.ross("tag", "busybox", name)
        yield self.daemon.engine.registry.push(name, credentials=Credentials(USER, PASSWORD))
        yield self.ross("rmi", name, "busybox")
        self.name = name

    @inlineCallbacks
    def test_pull_with_auth(self) -> Any:
        """
        A pull with the registry's credentials (as username and password,
        or docker's base64 "auth") gives the image ID, and ross sees it; a
        pull without them fails and leaves nothing.
        """
        code = yield self.failure_code(self.cri.images.PullImage, api_pb2.PullImageRequest(image=spec(self.name)))
        self.assertIn(code, (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED))
        listed = yield self.ross("images", "-q")
        self.assertEqual(listed.stdout.strip(), b"")
        for auth in (api_pb2.AuthConfig(username=USER, password=PASSWORD),
                     api_pb2.AuthConfig(auth=base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode())):
            pulled = yield self.call(self.cri.images.PullImage, api_pb2.PullImageRequest(image=spec(self.name),
                                                                                       auth=auth))
            status = yield self.call(self.cri.images.ImageStatus, api_pb2.ImageStatusRequest(image=spec(self.name)))
            self.assertEqual(pulled.image_ref, status.image.id)
            listed = yield self.ross("images", "-q", "--no-trunc")
            self.assertEqual(listed.stdout.decode().split(), [pulled.image_ref])
            yield self.call(self.cri.images.RemoveImage, api_pb2.RemoveImageRequest(image=spec(self.name)))

    @inlineCallbacks
    def test_mirror(self) -> Any:
        """
        A registry with a mirror is pulled from the mirror; the image keeps
        the name asked for.
        """
        wanted = "registry.example.invalid/team/busybox:1"
        pulled = yield self.call(self.cri.images.PullImage, api_pb2.PullImageRequest(
            image=spec(wanted), auth=api_pb2.AuthConfig(username=USER, password=PASSWORD)))
        status = yield self.call(self.cri.images.ImageStatus, api_pb2.ImageStatusRequest(image=spec(wanted)))
        self.assertEqual(list(status.image.repo_tags), [wanted])
        self.assertEqual(status.image.id, pulled.image_ref)


class PauseImageTests(CRITestCase):
    @inlineCallbacks
    def test_pause_image(self) -> Any:
        """
        The first pod makes the pause image: listed, pinned (kubelet's
        garbage collection leaves it).
        """
        yield self.run_pod()
        status = yield self.call(self.cri.images.ImageStatus, api_pb2.ImageStatusRequest(image=spec(PAUSE_IMAGE)))
        self.assertTrue(status.image.pinned)
        self.assertEqual(list(status.image.repo_tags), [PAUSE_IMAGE])
