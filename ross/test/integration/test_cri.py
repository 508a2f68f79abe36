"""
Kubernetes' CRI (runtime.v1) served by a real daemon on cri.sock, driven
through client stubs generated from the same api.proto kubelet uses; images
come from Ross's own store (busybox loaded through ross.v1) and from a real
local registry.
"""

from __future__ import annotations

import base64
import os
import shutil
import stat
from typing import Any, Callable, TypeVar

import grpc
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.python import usage
from twisted.trial.unittest import TestCase

from ross.cri.v1 import api_pb2, api_pb2_grpc
from ross.engine.registry.auth import Credentials
from ross.testing.containers import ContainerTestCase
from ross.testing.daemon import InProcessDaemon, bounded, short_tempdir
from ross.tap import Options
from ross.testing.registry import RegistryServer, free_port

T = TypeVar("T")

BUSYBOX = "docker.io/library/busybox:latest"


class CRITestCase(ContainerTestCase):
    """
    A daemon with busybox, and the CRI's two services on its cri.sock
    (C{self.runtime}, C{self.images}); every call is bounded.
    """

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        self.cri_socket = str(self.daemon.exec_root / "cri.sock")
        channel = grpc.insecure_channel(f"unix:{self.cri_socket}")
        self.addCleanup(channel.close)
        self.runtime = api_pb2_grpc.RuntimeServiceStub(bounded(channel))
        self.images = api_pb2_grpc.ImageServiceStub(bounded(channel))

    def call(self, fn: Callable[..., T], *args: Any) -> Deferred[T]:
        """
        A blocking stub call, in a thread.
        """
        return deferToThread(fn, *args)

    @inlineCallbacks
    def fails(self, code: grpc.StatusCode, fn: Callable[..., Any], request: Any) -> Any:
        """
        Call C{fn} with C{request} and check it fails with C{code}; fires
        with the error's message.
        """
        error = yield self.assertFailure(self.call(fn, request), grpc.RpcError)
        self.assertEqual(error.code(), code, error.details())
        return error.details()

    @inlineCallbacks
    def listed(self) -> Any:
        """
        (ID, tags) of every image the CRI lists, sorted.
        """
        response = yield self.call(self.images.ListImages, api_pb2.ListImagesRequest())
        return sorted((i.id, tuple(i.repo_tags)) for i in response.images)


class RuntimeTests(CRITestCase):
    @inlineCallbacks
    def test_socket_version(self) -> Any:
        """
        cri.sock sits beside ross.sock with its mode (root's and its
        group's only), and Version names Ross and the v1 API.
        """
        mode = stat.S_IMODE(os.stat(self.cri_socket).st_mode)
        self.assertEqual(mode, stat.S_IMODE(os.stat(self.daemon.socket).st_mode))
        self.assertEqual(mode & 0o007, 0)
        version = yield self.call(self.runtime.Version, api_pb2.VersionRequest(version="0.1.0"))
        self.assertEqual((version.runtime_name, version.runtime_api_version, version.version),
                         ("ross", "v1", "0.1.0"))
        self.assertTrue(version.runtime_version)

    @inlineCallbacks
    def test_status_config(self) -> Any:
        """
        Status has both conditions kubelet needs: the runtime is ready, the
        network (no CNI yet) is not, with a reason; the cgroup driver is
        cgroupfs.
        """
        status = yield self.call(self.runtime.Status, api_pb2.StatusRequest())
        conditions = {c.type: c for c in status.status.conditions}
        self.assertEqual(sorted(conditions), ["NetworkReady", "RuntimeReady"])
        self.assertTrue(conditions["RuntimeReady"].status)
        self.assertFalse(conditions["NetworkReady"].status)
        self.assertEqual(conditions["NetworkReady"].reason, "NetworkPluginNotReady")
        config = yield self.call(self.runtime.RuntimeConfig, api_pb2.RuntimeConfigRequest())
        self.assertEqual(config.linux.cgroup_driver, api_pb2.CGROUPFS)

    @inlineCallbacks
    def test_unimplemented(self) -> Any:
        """
        What is not served yet answers UNIMPLEMENTED, naming the method.
        """
        message = yield self.fails(grpc.StatusCode.UNIMPLEMENTED, self.runtime.RunPodSandbox,
                                   api_pb2.RunPodSandboxRequest())
        self.assertIn("RunPodSandbox", message)
        message = yield self.fails(grpc.StatusCode.UNIMPLEMENTED, self.runtime.ListContainers,
                                   api_pb2.ListContainersRequest())
        self.assertIn("ListContainers", message)


class ImageTests(CRITestCase):
    @inlineCallbacks
    def test_loaded_image_listed(self) -> Any:
        """
        busybox, loaded through ross.v1, is the CRI's too: listed and found
        by reference, by ID and by filter with its full reference, repo
        digest and size; the image filesystem is in use.
        """
        image = yield self.daemon.engine.images.resolve("busybox")
        listed = yield self.listed()
        self.assertEqual(listed, [(image.id, (BUSYBOX,))])
        for name in ("busybox", BUSYBOX, image.id):
            status = yield self.call(self.images.ImageStatus,
                                     api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=name)))
            self.assertEqual(status.image.id, image.id, name)
            self.assertEqual(list(status.image.repo_digests),
                             [f"docker.io/library/busybox@{image.target.digest}"])
            self.assertGreater(status.image.size, 0)
        filtered = yield self.call(self.images.ListImages, api_pb2.ListImagesRequest(
            filter=api_pb2.ImageFilter(image=api_pb2.ImageSpec(image="busybox"))))
        self.assertEqual([i.id for i in filtered.images], [image.id])
        filtered = yield self.call(self.images.ListImages, api_pb2.ListImagesRequest(
            filter=api_pb2.ImageFilter(image=api_pb2.ImageSpec(image="nosuch"))))
        self.assertEqual(list(filtered.images), [])
        info = yield self.call(self.images.ImageFsInfo, api_pb2.ImageFsInfoRequest())
        [filesystem] = info.image_filesystems
        self.assertGreater(filesystem.used_bytes.value, 0)
        self.assertGreater(filesystem.inodes_used.value, 0)
        self.assertTrue(filesystem.fs_id.mountpoint.startswith(str(self.daemon.root)))

    @inlineCallbacks
    def test_remove(self) -> Any:
        """
        RemoveImage by one of its names removes the image with every name,
        as the CRI means; removing it again succeeds (the CRI's
        idempotence), and its status is then empty.
        """
        yield self.daemon.engine.images.tag("busybox", "other/name:v1")
        remove = api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image="other/name:v1"))
        yield self.call(self.images.RemoveImage, remove)
        listed = yield self.listed()
        self.assertEqual(listed, [])
        yield self.call(self.images.RemoveImage, remove)
        status = yield self.call(self.images.ImageStatus,
                                 api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image="busybox")))
        self.assertFalse(status.HasField("image"))

    @inlineCallbacks
    def test_bad_input(self) -> Any:
        """
        An empty or malformed image reference is INVALID_ARGUMENT for
        every image call; the status of an unknown image is empty and its
        removal a no-op; none of it changes the store.
        """
        before = yield self.listed()
        empty = api_pb2.ImageSpec(image="")
        for fn, request in [(self.images.ImageStatus, api_pb2.ImageStatusRequest(image=empty)),
                            (self.images.PullImage, api_pb2.PullImageRequest(image=empty)),
                            (self.images.RemoveImage, api_pb2.RemoveImageRequest(image=empty)),
                            (self.images.PullImage, api_pb2.PullImageRequest(
                                image=api_pb2.ImageSpec(image="Not A/Reference")))]:
            message = yield self.fails(grpc.StatusCode.INVALID_ARGUMENT, fn, request)
            self.assertTrue(message)
        unknown = api_pb2.ImageSpec(image="nosuch:1")
        status = yield self.call(self.images.ImageStatus, api_pb2.ImageStatusRequest(image=unknown))
        self.assertFalse(status.HasField("image"))
        yield self.call(self.images.RemoveImage, api_pb2.RemoveImageRequest(image=unknown))
        after = yield self.listed()
        self.assertEqual(after, before)


class PullTests(CRITestCase):
    def daemon_options(self) -> dict[str, Any]:
        base = short_tempdir("ross-reg-")
        self.addCleanup(shutil.rmtree, base, True)
        self.registry = RegistryServer(base, port=free_port(), users={"kube": "let-me-in"})
        return {"insecure_registries": (self.registry.host,)}

    @inlineCallbacks
    def test_pull_with_auth(self) -> Any:
        """
        From a registry that wants a password: a pull without credentials
        is UNAUTHENTICATED, one with a username and password (or docker's
        base64 auth) lands the image, whose ID it answers; an unknown tag
        is NOT_FOUND; failed pulls change nothing.
        """
        yield self.registry.start()
        self.addCleanup(self.registry.stop)
        name = f"{self.registry.host}/bb:1"
        engine = self.daemon.engine
        yield engine.images.tag("busybox", name)
        yield engine.registry.push(name, "", Credentials("kube", "let-me-in"))
        yield engine.images.remove(name)
        before = yield self.listed()
        spec = api_pb2.ImageSpec(image=name)
        yield self.fails(grpc.StatusCode.UNAUTHENTICATED, self.images.PullImage, api_pb2.PullImageRequest(image=spec))
        wrong = api_pb2.AuthConfig(username="kube", password="wrong")
        yield self.fails(grpc.StatusCode.UNAUTHENTICATED, self.images.PullImage,
                         api_pb2.PullImageRequest(image=spec, auth=wrong))
        missing = api_pb2.ImageSpec(image=f"{self.registry.host}/bb:nosuch")
        good = api_pb2.AuthConfig(username="kube", password="let-me-in")
        yield self.fails(grpc.StatusCode.NOT_FOUND, self.images.PullImage,
                         api_pb2.PullImageRequest(image=missing, auth=good))
        after = yield self.listed()
        self.assertEqual(after, before)
        pulled = yield self.call(self.images.PullImage, api_pb2.PullImageRequest(image=spec, auth=good))
        image = yield engine.images.resolve(name)
        self.assertEqual(pulled.image_ref, image.id)
        status = yield self.call(self.images.ImageStatus, api_pb2.ImageStatusRequest(image=spec))
        self.assertIn(name, status.image.repo_tags)
        yield self.call(self.images.RemoveImage, api_pb2.RemoveImageRequest(image=spec))
        encoded = api_pb2.AuthConfig(auth=base64.b64encode(b"kube:let-me-in").decode())
        pulled = yield self.call(self.images.PullImage, api_pb2.PullImageRequest(image=spec, auth=encoded))
        self.assertEqual(pulled.image_ref, image.id)


class ListenTests(TestCase):
    timeout = 120

    def parse(self, *argv: str) -> Options:
        options = Options()
        options.parseOptions(list(argv))
        return options

    def test_option(self) -> None:
        """
        --cri-listen: None by default (cri.sock in the exec root), none
        turns it off, it repeats; a TCP address (the CRI takes no token)
        and none with another address are usage errors.
        """
        self.assertIsNone(self.parse()["cri-listeners"])
        self.assertEqual(self.parse("--cri-listen", "none")["cri-listeners"], [])
        options = self.parse("--cri-listen", "unix:///tmp/c.sock", "--cri-listen", "unix:///tmp/d.sock")
        self.assertEqual([str(x) for x in options["cri-listeners"]], ["unix:///tmp/c.sock", "unix:///tmp/d.sock"])
        for argv, message in [
            (["--cri-listen", "tcp://127.0.0.1:10010"], "the CRI is served on unix sockets only"),
            (["--cri-listen", "none", "--cri-listen", "unix:///tmp/c.sock"], "--cri-listen none turns the CRI off"),
        ]:
            e = self.assertRaises(usage.UsageError, self.parse, *argv)
            self.assertIn(message, str(e))

    @inlineCallbacks
    def test_apart_from_the_api(self) -> Any:
        """
        cri.sock serves the CRI alone, without the API's bearer token (a
        kubelet sends none); ross.sock serves ross.v1 alone, token required.
        """
        from ross.v1 import system_pb2, system_pb2_grpc

        daemon = InProcessDaemon(self, token="t0ken")
        yield daemon.start()
        cri = grpc.insecure_channel(f"unix:{daemon.exec_root / 'cri.sock'}")
        api = grpc.insecure_channel(f"unix:{daemon.socket}")
        self.addCleanup(cri.close)
        self.addCleanup(api.close)
        bearer = [("authorization", "Bearer t0ken")]

        def check() -> None:
            version = api_pb2_grpc.RuntimeServiceStub(cri).Version(api_pb2.VersionRequest(), timeout=10)
            self.assertEqual(version.runtime_name, "ross")
            for channel, metadata, code in ((cri, bearer, grpc.StatusCode.UNIMPLEMENTED),
                                            (api, None, grpc.StatusCode.UNAUTHENTICATED)):
                with self.assertRaises(grpc.RpcError) as caught:
                    system_pb2_grpc.SystemServiceStub(channel).Ping(system_pb2.PingRequest(), timeout=10,
                                                                     metadata=metadata)
                self.assertEqual(caught.exception.code(), code)
            with self.assertRaises(grpc.RpcError) as caught:
                api_pb2_grpc.RuntimeServiceStub(api).Version(api_pb2.VersionRequest(), timeout=10, metadata=bearer)
            self.assertEqual(caught.exception.code(), grpc.StatusCode.UNIMPLEMENTED)
            system_pb2_grpc.SystemServiceStub(api).Ping(system_pb2.PingRequest(), timeout=10, metadata=bearer)

        yield deferToThread(check)

    @inlineCallbacks
    def test_none(self) -> Any:
        """
        With no CRI listener (--cri-listen none) there is no cri.sock; the
        API's own socket is served as ever.
        """
        daemon = InProcessDaemon(self, cri_listeners=[])
        yield daemon.start()
        self.assertTrue(os.path.exists(daemon.socket))
        self.assertFalse(os.path.exists(daemon.exec_root / "cri.sock"))
