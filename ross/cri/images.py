# -*- test-case-name: ross.test.integration.test_cri_images -*-
"""
The CRI's ImageService over Ross's own image store: an image pulled by
kubelet is in ``ross images`` and one pulled by ``ross pull`` is the
CRI's, as containerd's k8s.io namespace shares its content.
"""

from __future__ import annotations

import base64
import binascii
import os
import time

from twisted.internet.defer import DeferredLock
from twisted.internet.threads import deferToThreadPool

from ross.cri.v1 import api_pb2
from ross.engine.engine import Engine
from ross.engine.images.catalog import Image
from ross.engine.registry.auth import Credentials
from ross.errors import InvalidArgument, NotFound
from ross.protocols.bridge import CallInfo

#: The image a pod sandbox runs from: empty (its PID 1 runs no command),
#: made by the daemon on first need, and pinned (kubelet's garbage
#: collection leaves it).
PAUSE_IMAGE = "localhost/ross/pause:1"


def credentials_of(auth: api_pb2.AuthConfig) -> Credentials:
    """
    The registry credentials of a CRI AuthConfig: username and password,
    "auth" (base64 of "user:password", docker's config.json form), or an
    identity token; a registry token is sent as a bearer identity token.
    """
    username, password = auth.username, auth.password
    if auth.auth and not (username or password):
        try:
            decoded = base64.b64decode(auth.auth, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidArgument("invalid auth: not base64 of user:password")
        username, sep, password = decoded.partition(":")
        if not sep:
            raise InvalidArgument("invalid auth: not base64 of user:password")
    return Credentials(username, password, auth.identity_token or auth.registry_token)


def _user_of(image: Image) -> tuple[int | None, str]:
    """
    The uid an image runs as when its USER is a number, else its user name
    (kubelet checks runAsNonRoot with these).
    """
    user = image.config.config.user.partition(":")[0]
    if user.isdigit():
        return int(user), ""
    return (0, "") if not user else (None, user)


def _repo(name: str) -> str:
    return name.partition("@")[0] if "@" in name else name.rpartition(":")[0] if ":" in name.rpartition("/")[2] else name


def image_to_proto(image: Image) -> api_pb2.Image:
    uid, username = _user_of(image)
    return api_pb2.Image(
        id=image.id,
        repo_tags=[n for n in image.names if "@" not in n],
        repo_digests=sorted({f"{_repo(n)}@{image.target.digest}" for n in image.names}),
        size=image.size,
        uid=api_pb2.Int64Value(value=uid) if uid is not None else None,
        username=username,
        spec=api_pb2.ImageSpec(image=image.id),
        pinned=PAUSE_IMAGE in image.names,
    )


class ImageAPI:
    """
    Reactor-side runtime.v1.ImageService.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._remove_lock = DeferredLock()

    async def _find(self, name: str) -> Image | None:
        try:
            return await self._engine.images.resolve(name)
        except NotFound:
            return None

    async def ListImages(self, request: api_pb2.ListImagesRequest, call: CallInfo) -> api_pb2.ListImagesResponse:
        wanted = request.filter.image.image
        if wanted:
            found = await self._find(wanted)
            return api_pb2.ListImagesResponse(images=[image_to_proto(found)] if found is not None else [])
        summaries = await self._engine.images.list()
        images = []
        for summary in summaries:
            image = await self._find(summary.row.config)
            if image is not None:
                images.append(image_to_proto(image))
        return api_pb2.ListImagesResponse(images=images)

    async def ImageStatus(self, request: api_pb2.ImageStatusRequest,
                          call: CallInfo) -> api_pb2.ImageStatusResponse:
        if not request.image.image:
            raise InvalidArgument("ImageStatus: no image given")
        # An image that is not here is an answer, not an error (the CRI).
        found = await self._find(request.image.image)
        if found is None:
            return api_pb2.ImageStatusResponse()
        info = {"info": found.config_json.decode()} if request.verbose else {}
        return api_pb2.ImageStatusResponse(image=image_to_proto(found), info=info)

    async def PullImage(self, request: api_pb2.PullImageRequest, call: CallInfo) -> api_pb2.PullImageResponse:
        name = request.image.image
        if not name:
            raise InvalidArgument("PullImage: no image given")
        credentials = credentials_of(request.auth)
        await self._engine.registry.pull(name, credentials=credentials)
        image = await self._engine.images.resolve(name)
        return api_pb2.PullImageResponse(image_ref=image.id)

    async def RemoveImage(self, request: api_pb2.RemoveImageRequest,
                          call: CallInfo) -> api_pb2.RemoveImageResponse:
        name = request.image.image
        if not name:
            raise InvalidArgument("RemoveImage: no image given")
        # One at a time: of two removals of one image, the second finds
        # it gone rather than half removed.
        await self._remove_lock.acquire()
        try:
            found = await self._find(name)
            if found is not None:
                # Every name of it, as containerd removes an image (kubelet
                # names images by ID); refused while a running container
                # uses it.
                await self._engine.images.remove(found.id, force=True)
        except NotFound:
            pass
        finally:
            self._remove_lock.release()
        # Gone, now or before: removing is idempotent in the CRI.
        return api_pb2.RemoveImageResponse()

    async def ImageFsInfo(self, request: api_pb2.ImageFsInfoRequest,
                          call: CallInfo) -> api_pb2.ImageFsInfoResponse:
        reactor = self._engine.reactor
        root = self._engine.config.root
        usage = await deferToThreadPool(reactor, reactor.getThreadPool(), filesystem_usage, root / "snapshots")
        return api_pb2.ImageFsInfoResponse(image_filesystems=[usage], container_filesystems=[usage])


def filesystem_usage(path: os.PathLike[str]) -> api_pb2.FilesystemUsage:
    """
    Bytes and inodes in use on the filesystem holding C{path} (blocking):
    images and containers' layers share it, as kubelet's eviction reads.
    """
    st = os.statvfs(path)
    return api_pb2.FilesystemUsage(
        timestamp=time.time_ns(),
        fs_id=api_pb2.FilesystemIdentifier(mountpoint=os.fspath(path)),
        used_bytes=api_pb2.UInt64Value(value=(st.f_blocks - st.f_bfree) * st.f_frsize),
        inodes_used=api_pb2.UInt64Value(value=st.f_files - st.f_ffree),
    )
