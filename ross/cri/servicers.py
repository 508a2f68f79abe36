# -*- test-case-name: ross.test.integration.test_cri -*-
"""
The CRI's RuntimeService and ImageService (Kubernetes' runtime.v1) over the
engine, served through the same bridge as ross.v1: their errors become
status codes in one place (L{ross.protocols.bridge.status_of}), and every
method not defined here answers UNIMPLEMENTED with its name.

The image methods follow the CRI's contract where it differs from docker's:
ImageStatus of a missing image answers with no image rather than an
error, and RemoveImage of one that is gone succeeds (kubelet retries it).
"""

from __future__ import annotations

import base64
import binascii
import time
from typing import Any

from twisted.internet.threads import deferToThreadPool

import ross
from ross.cri.v1 import api_pb2
from ross.engine.engine import Engine
from ross.engine.fsutil import disk_usage
from ross.engine.images.store import Image
from ross.engine.registry.auth import ANONYMOUS, Credentials
from ross.errors import InvalidArgument, NotFound, Unimplemented
from ross.protocols.bridge import CallInfo
from ross.reference import parse_normalized

#: The CRI version kubelet's runtime API is numbered by (VersionResponse.version).
KUBELET_API_VERSION = "0.1.0"
#: The CRI API version served: runtime.v1.
RUNTIME_API_VERSION = "v1"
#: The name Ross reports as a CRI runtime.
RUNTIME_NAME = "ross"


class CRIRuntime:
    """
    Reactor-side implementation of runtime.v1.RuntimeService (pods and
    containers are still to come: they answer UNIMPLEMENTED).
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def Version(self, request: api_pb2.VersionRequest, call: CallInfo) -> api_pb2.VersionResponse:
        return api_pb2.VersionResponse(version=KUBELET_API_VERSION, runtime_name=RUNTIME_NAME,
                                       runtime_version=ross.__version__, runtime_api_version=RUNTIME_API_VERSION)

    def Status(self, request: api_pb2.StatusRequest, call: CallInfo) -> api_pb2.StatusResponse:
        # The runtime answers as soon as the daemon serves; pod networking
        # (CNI) has not landed, so the network is honestly not ready and
        # kubelet schedules only host-network pods, as the CRI intends.
        conditions = [
            api_pb2.RuntimeCondition(type="RuntimeReady", status=True),
            api_pb2.RuntimeCondition(type="NetworkReady", status=False, reason="NetworkPluginNotReady",
                                     message="ross: pod networking (CNI) is not implemented yet"),
        ]
        return api_pb2.StatusResponse(status=api_pb2.RuntimeStatus(conditions=conditions))

    def RuntimeConfig(self, request: api_pb2.RuntimeConfigRequest, call: CallInfo) -> api_pb2.RuntimeConfigResponse:
        # Ross manages cgroups itself under --cgroup-parent: kubelet must
        # use the cgroupfs driver too.
        return api_pb2.RuntimeConfigResponse(
            linux=api_pb2.LinuxRuntimeConfiguration(cgroup_driver=api_pb2.CGROUPFS))


class CRIImages:
    """
    Reactor-side implementation of runtime.v1.ImageService on Ross's own
    image store: images pulled or loaded through ross.v1 or the Docker API
    are the CRI's, and the other way round.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._images = engine.images

    async def ListImages(self, request: api_pb2.ListImagesRequest, call: CallInfo) -> api_pb2.ListImagesResponse:
        wanted = request.filter.image.image if request.HasField("filter") else ""
        if wanted:
            found = await self._find(wanted)
            return api_pb2.ListImagesResponse(images=[cri_image(found)] if found is not None else [])
        images = []
        for summary in await self._images.list(True):
            # An image removed since the listing is simply not shown.
            image = await self._find(summary.row.config)
            if image is not None:
                images.append(cri_image(image))
        return api_pb2.ListImagesResponse(images=images)

    async def ImageStatus(self, request: api_pb2.ImageStatusRequest, call: CallInfo) -> api_pb2.ImageStatusResponse:
        image = await self._find(_wanted(request.image))
        if image is None:
            return api_pb2.ImageStatusResponse()
        return api_pb2.ImageStatusResponse(image=cri_image(image))

    async def PullImage(self, request: api_pb2.PullImageRequest, call: CallInfo) -> api_pb2.PullImageResponse:
        name = _wanted(request.image)
        credentials = credentials_of(request.auth) if request.HasField("auth") else ANONYMOUS
        await self._engine.registry.pull(name, "", credentials)
        image = await self._images.resolve(name)
        return api_pb2.PullImageResponse(image_ref=image.id)

    async def RemoveImage(self, request: api_pb2.RemoveImageRequest, call: CallInfo) -> api_pb2.RemoveImageResponse:
        image = await self._find(_wanted(request.image))
        if image is not None:
            # By ID: every name of the image goes with it, as the CRI
            # means; an image a running container uses stays (FAILED_PRECONDITION).
            try:
                await self._images.remove(image.id, force=True)
            except NotFound:
                pass
        return api_pb2.RemoveImageResponse()

    async def ImageFsInfo(self, request: api_pb2.ImageFsInfoRequest, call: CallInfo) -> api_pb2.ImageFsInfoResponse:
        # Unpacked layers and containers' writable layers share the
        # snapshotter's directory, which is what kubelet's image garbage
        # collection watches; walking it is blocking work.
        path = str(self._engine.config.root / "snapshots" / "overlayfs")
        reactor: Any = self._engine.reactor
        usage = await deferToThreadPool(reactor, reactor.getThreadPool(), disk_usage, path)
        filesystem = api_pb2.FilesystemUsage(
            timestamp=time.time_ns(),
            fs_id=api_pb2.FilesystemIdentifier(mountpoint=path),
            used_bytes=api_pb2.UInt64Value(value=usage.size),
            inodes_used=api_pb2.UInt64Value(value=usage.inodes),
        )
        return api_pb2.ImageFsInfoResponse(image_filesystems=[filesystem])

    async def _find(self, name: str) -> Image | None:
        try:
            return await self._images.resolve(name)
        except NotFound:
            return None


def _wanted(spec: api_pb2.ImageSpec) -> str:
    if not spec.image:
        raise InvalidArgument("image reference must not be empty: set image.image")
    return spec.image


def cri_image(image: Image) -> api_pb2.Image:
    """
    The CRI's view of an image: full references (docker.io/library/busybox:latest)
    as tags, each repository at the image's manifest digest as digests, and
    the config's user as a uid when numeric, else a name.
    """
    tags = [n for n in image.names if "@" not in n]
    digests = sorted({f"{parse_normalized(n).name}@{image.target.digest}" for n in image.names})
    found = api_pb2.Image(id=image.id, repo_tags=tags, repo_digests=digests, size=image.size,
                          spec=api_pb2.ImageSpec(image=image.id))
    user = image.config.config.user.partition(":")[0]
    if user.isdigit():
        found.uid.value = int(user)
    elif user:
        found.username = user
    return found


def credentials_of(auth: api_pb2.AuthConfig) -> Credentials:
    """
    Registry credentials of a pull: a username and password, given apart
    or as C{auth} (base64 of "user:password"), or an identity token.
    """
    if auth.registry_token:
        raise Unimplemented("a registry token (AuthConfig.registry_token) is not supported: "
                            "give a username and password or an identity token")
    username, password = auth.username, auth.password
    if not username and auth.auth:
        try:
            username, _, password = base64.b64decode(auth.auth, validate=True).decode().partition(":")
        except (ValueError, binascii.Error):
            raise InvalidArgument("invalid AuthConfig.auth: not base64 of user:password")
    return Credentials(username, password, auth.identity_token)
