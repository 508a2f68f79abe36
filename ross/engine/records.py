"""
Small immutable records shared by several engine areas.
"""

from __future__ import annotations

from typing import Mapping

import attrs


@attrs.frozen
class Mount:
    """
    A mount description, as the snapshotter returns it and the runtime
    performs it: the arguments of mount(8), not a mounted thing.
    """

    type: str
    source: str
    target: str = ""
    options: tuple[str, ...] = ()


@attrs.frozen
class Descriptor:
    """
    An OCI content descriptor.
    """

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = attrs.field(factory=dict)
    platform: "Platform | None" = None


@attrs.frozen
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""
