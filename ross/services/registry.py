# -*- test-case-name: ross.test.integration.test_registry -*-
"""
The registry RPCs of ImageService (PullImage, PushImage, Login, Logout)
over L{ross.engine.registry.manager.Registry}: convert, call, stream the
progress. L{ross.services.images.ImageAPI} inherits them.
"""

from __future__ import annotations

from ross.engine.records import Platform
from ross.engine.registry.auth import Credentials
from ross.engine.registry.manager import Registry
from ross.engine.registry.progress import Progress
from ross.errors import InvalidArgument, RossError, Unimplemented
from ross.protocols.bridge import CallInfo, Outbound
from ross.v1 import common_pb2, image_pb2


def credentials_of(auth: common_pb2.RegistryAuth) -> Credentials:
    return Credentials(auth.username, auth.password, auth.identity_token)


def platform_of(p: common_pb2.Platform) -> Platform | None:
    if not (p.os or p.architecture or p.variant):
        return None
    if not p.architecture:
        raise InvalidArgument(f"invalid platform {p.os}/: an architecture is required")
    return Platform(os=p.os or "linux", architecture=p.architecture, variant=p.variant)


def pull_progress(p: Progress) -> image_pb2.PullImageProgress:
    return image_pb2.PullImageProgress(
        status=p.status, id=p.id, progress=p.text,
        progress_detail=common_pb2.ProgressDetail(current=p.current, total=p.total))


def push_progress(p: Progress) -> image_pb2.PushImageProgress:
    return image_pb2.PushImageProgress(
        status=p.status, id=p.id, progress=p.text,
        progress_detail=common_pb2.ProgressDetail(current=p.current, total=p.total),
        digest=p.digest, size=p.size)


class RegistryAPI:
    """
    PullImage, PushImage, Login and Logout; UNIMPLEMENTED without a
    registry subsystem.
    """

    def __init__(self, registry: Registry | None) -> None:
        self._registry = registry

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            raise Unimplemented("this daemon has no registry client")
        return self._registry

    async def PullImage(self, request: image_pb2.PullImageRequest, out: Outbound, call: CallInfo) -> None:
        registry = self.registry
        platform = platform_of(request.platform)
        try:
            digests = await registry.pull(
                request.image_name, request.tag, credentials_of(request.registry_auth), platform,
                request.all_tags, lambda p: out.write(pull_progress(p)))
        except RossError as e:
            # The proto's contract: the error as a last message, then the status.
            out.write(image_pb2.PullImageProgress(error=e.message))
            raise
        await out.send(image_pb2.PullImageProgress(digest=digests[-1] if digests else "", done=True))

    async def PushImage(self, request: image_pb2.PushImageRequest, out: Outbound, call: CallInfo) -> None:
        registry = self.registry
        try:
            results = await registry.push(request.image_name, request.tag, credentials_of(request.registry_auth),
                                          lambda p: out.write(push_progress(p)))
        except RossError as e:
            out.write(image_pb2.PushImageProgress(error=e.message))
            raise
        last = results[-1]
        await out.send(image_pb2.PushImageProgress(digest=last.digest, size=last.size, done=True))

    async def Login(self, request: image_pb2.LoginRequest, call: CallInfo) -> image_pb2.LoginResponse:
        auth = request.auth
        if not auth.username and not auth.identity_token:
            raise InvalidArgument("login needs a username (or an identity token)")
        status = await self.registry.login(auth.server_address, credentials_of(auth))
        return image_pb2.LoginResponse(status=status)

    async def Logout(self, request: image_pb2.LogoutRequest, call: CallInfo) -> image_pb2.LogoutResponse:
        self.registry.logout(request.server_address)
        return image_pb2.LogoutResponse()

