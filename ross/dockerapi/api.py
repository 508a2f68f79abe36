# -*- test-case-name: ross.test.integration.test_dockerapi -*-
"""
The Docker API's site: every route group over one engine.
"""

from __future__ import annotations

from ross.dockerapi.build import BuildRoutes
from ross.dockerapi.containers import ContainerRoutes
from ross.dockerapi.images import ImageRoutes
from ross.dockerapi.networks import NetworkRoutes, VolumeRoutes
from ross.dockerapi.router import Route, Router
from ross.protocols.hijack import HijackSite
from ross.dockerapi.system import SystemRoutes
from ross.engine.engine import Engine


def routes(engine: Engine) -> list[Route]:
    """Every route of the API, on C{engine}."""
    return [*SystemRoutes(engine).routes(), *ContainerRoutes(engine).routes(),
            *ImageRoutes(engine).routes(), *NetworkRoutes(engine).routes(), *VolumeRoutes(engine).routes(),
            *BuildRoutes(engine).routes()]


def docker_site(engine: Engine, token: str | None = None) -> HijackSite:
    """
    The site serving docker's API from C{engine}; with C{token}, to
    clients that send it as a bearer token only.
    """
    return HijackSite(Router(routes(engine), token))
