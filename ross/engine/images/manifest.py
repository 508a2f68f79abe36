# -*- test-case-name: ross.test.test_image_units -*-
"""
OCI and Docker schema2 documents: indexes (manifest lists), manifests and
image configs, parsed and checked; chain IDs; platform selection.

Both families of media types are understood everywhere; Ross writes OCI
documents for what it creates (import) and keeps what it is given as is
(load), so digests survive a round trip.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
from typing import Any, Mapping, Sequence

import attrs

from ross.engine.records import Descriptor, Platform
from ross.errors import InvalidArgument
from ross.platforms import go_arch

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
OCI_LAYER_ND = "application/vnd.oci.image.layer.nondistributable.v1.tar"
OCI_LAYER_ND_GZIP = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
OCI_LAYER_ND_ZSTD = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_LAYER_ZSTD = "application/vnd.docker.image.rootfs.diff.tar.zstd"
DOCKER_FOREIGN_GZIP = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
LAYER_TYPES = frozenset({
    OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD, OCI_LAYER_ND, OCI_LAYER_ND_GZIP, OCI_LAYER_ND_ZSTD,
    DOCKER_LAYER, DOCKER_LAYER_GZIP, DOCKER_LAYER_ZSTD, DOCKER_FOREIGN_GZIP,
})

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"



def host_platform() -> Platform:
    machine = _platform.machine()
    arch = go_arch(machine)
    variant = "v8" if arch == "arm64" else ("v7" if machine == "armv7l" else "")
    return Platform(os="linux", architecture=arch, variant=variant)


def descriptor_of(data: Mapping[str, Any], where: str) -> Descriptor:
    """
    A descriptor from its JSON form, checked enough to be trusted as a name.
    """
    if not isinstance(data, Mapping):
        raise InvalidArgument(f"invalid descriptor in {where}")
    media_type = data.get("mediaType")
    digest = data.get("digest")
    size = data.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str) or not isinstance(size, int):
        raise InvalidArgument(f"invalid descriptor in {where}: mediaType, digest and size are required")
    if not (digest.startswith("sha256:") and len(digest) == 71 and all(c in "0123456789abcdef" for c in digest[7:])):
        raise InvalidArgument(f"invalid descriptor in {where}: unsupported digest {digest!r}")
    if size < 0:
        raise InvalidArgument(f"invalid descriptor in {where}: negative size")
    annotations = data.get("annotations") or {}
    plat = data.get("platform")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        annotations={str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, Mapping) else {},
        platform=Platform(
            os=str(plat.get("os", "")),
            architecture=str(plat.get("architecture", "")),
            variant=str(plat.get("variant", "")),
        ) if isinstance(plat, Mapping) else None,
    )


def descriptor_json(d: Descriptor) -> dict[str, Any]:
    out: dict[str, Any] = {"mediaType": d.media_type, "digest": d.digest, "size": d.size}
    if d.annotations:
        out["annotations"] = dict(d.annotations)
    if d.platform is not None:
        p: dict[str, Any] = {"architecture": d.platform.architecture, "os": d.platform.os}
        if d.platform.variant:
            p["variant"] = d.platform.variant
        out["platform"] = p
    return out


def _load_json(data: bytes, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        raise InvalidArgument(f"invalid {what}: not JSON ({e})") from None
    except RecursionError:
        raise InvalidArgument(f"invalid {what}: JSON nested too deeply") from None
    if not isinstance(doc, dict):
        raise InvalidArgument(f"invalid {what}: not a JSON object")
    return doc


def sniff_media_type(data: bytes) -> str:
    """
    Media type of a manifest or index whose descriptor does not say (an
    OCI layout written by old tools): the mediaType field, else its shape.
    """
    doc = _load_json(data, "manifest")
    media_type = doc.get("mediaType")
    if isinstance(media_type, str) and media_type:
        return media_type
    if "manifests" in doc:
        return OCI_INDEX
    if "config" in doc and "layers" in doc:
        return OCI_MANIFEST
    raise InvalidArgument("unknown document: neither a manifest nor an index")


@attrs.frozen
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


@attrs.frozen
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


def parse_index(data: bytes, media_type: str) -> Index:
    doc = _load_json(data, "image index")
    declared = doc.get("mediaType")
    if declared and declared != media_type:
        raise InvalidArgument(f"image index declares media type {declared} but was referenced as {media_type}")
    if doc.get("schemaVersion") != 2:
        raise InvalidArgument("invalid image index: schemaVersion must be 2")
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise InvalidArgument("invalid image index: no manifests")
    return Index(media_type, tuple(descriptor_of(m, "image index") for m in manifests))


def parse_manifest(data: bytes, media_type: str) -> Manifest:
    doc = _load_json(data, "image manifest")
    declared = doc.get("mediaType")
    if declared and declared != media_type:
        raise InvalidArgument(f"image manifest declares media type {declared} but was referenced as {media_type}")
    if doc.get("schemaVersion") != 2:
        raise InvalidArgument("invalid image manifest: schemaVersion must be 2")
    config = descriptor_of(doc.get("config"), "image manifest config")  # type: ignore[arg-type]
    if config.media_type not in CONFIG_TYPES:
        raise InvalidArgument(f"unsupported media type {config.media_type} for an image config")
    layers_doc = doc.get("layers")
    if not isinstance(layers_doc, list):
        raise InvalidArgument("invalid image manifest: no layers")
    layers = tuple(descriptor_of(layer, "image manifest layers") for layer in layers_doc)
    for layer in layers:
        if layer.media_type not in LAYER_TYPES:
            raise InvalidArgument(f"unsupported media type {layer.media_type} for layer {layer.digest}")
    return Manifest(media_type, config, layers)


@attrs.frozen
class ImageConfig:
    """
    What a container takes from an image config ("config" of the OCI
    image config), plus the fields listings and history show.
    """

    env: tuple[str, ...] = ()
    cmd: tuple[str, ...] | None = None
    entrypoint: tuple[str, ...] | None = None
    working_dir: str = ""
    user: str = ""
    exposed_ports: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    labels: Mapping[str, str] = attrs.field(factory=dict)
    stop_signal: str = ""
    healthcheck: Mapping[str, Any] | None = None


@attrs.frozen
class History:
    created: str
    created_by: str
    comment: str
    empty_layer: bool
    author: str = ""


@attrs.frozen
class Config:
    """
    A parsed image config.
    """

    raw: Mapping[str, Any]
    diff_ids: tuple[str, ...]
    platform: Platform
    created: str
    author: str
    config: ImageConfig
    history: tuple[History, ...]

    @property
    def comment(self) -> str:
        return str(self.raw.get("comment", "") or "")


def _strings(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        return tuple(str(v) for v in value)
    raise InvalidArgument("invalid image config: expected a list of strings")


def parse_config(data: bytes) -> Config:
    doc = _load_json(data, "image config")
    rootfs = doc.get("rootfs")
    if not isinstance(rootfs, Mapping) or rootfs.get("type") != "layers":
        raise InvalidArgument("invalid image config: rootfs.type must be \"layers\"")
    diff_ids = rootfs.get("diff_ids") or []
    if not isinstance(diff_ids, list) or not all(isinstance(d, str) and d.startswith("sha256:") and len(d) == 71 for d in diff_ids):
        raise InvalidArgument("invalid image config: rootfs.diff_ids must be sha256 digests")
    c = doc.get("config") or {}
    if not isinstance(c, Mapping):
        raise InvalidArgument("invalid image config: config is not an object")
    labels = c.get("Labels") or {}
    history = []
    for h in doc.get("history") or []:
        if isinstance(h, Mapping):
            history.append(History(
                created=str(h.get("created", "") or ""),
                created_by=str(h.get("created_by", "") or ""),
                comment=str(h.get("comment", "") or ""),
                empty_layer=bool(h.get("empty_layer", False)),
                author=str(h.get("author", "") or ""),
            ))
    return Config(
        raw=doc,
        diff_ids=tuple(diff_ids),
        platform=Platform(
            os=str(doc.get("os", "") or ""),
            architecture=str(doc.get("architecture", "") or ""),
            variant=str(doc.get("variant", "") or ""),
        ),
        created=str(doc.get("created", "") or ""),
        author=str(doc.get("author", "") or ""),
        config=ImageConfig(
            env=_strings(c.get("Env")) or (),
            cmd=_strings(c.get("Cmd")),
            entrypoint=_strings(c.get("Entrypoint")),
            working_dir=str(c.get("WorkingDir", "") or ""),
            user=str(c.get("User", "") or ""),
            exposed_ports=tuple(sorted((c.get("ExposedPorts") or {}).keys())),
            volumes=tuple(sorted((c.get("Volumes") or {}).keys())),
            labels={str(k): str(v) for k, v in labels.items()} if isinstance(labels, Mapping) else {},
            stop_signal=str(c.get("StopSignal", "") or ""),
            healthcheck=c.get("Healthcheck") if isinstance(c.get("Healthcheck"), Mapping) else None,
        ),
        history=tuple(history),
    )


def chain_ids(diff_ids: Sequence[str]) -> list[str]:
    """
    containerd's (and the OCI spec's) ChainID of each layer prefix:
    ChainID(L0) = DiffID(L0); ChainID(L0..n) = sha256(ChainID(L0..n-1) + " " + DiffID(Ln)).
    """
    out: list[str] = []
    for diff_id in diff_ids:
        if not out:
            out.append(diff_id)
        else:
            out.append("sha256:" + hashlib.sha256(f"{out[-1]} {diff_id}".encode()).hexdigest())
    return out


def platform_matches(want: Platform, have: Platform | None) -> bool:
    if have is None:
        return False
    if have.os != want.os or have.architecture != want.architecture:
        return False
    if want.variant and have.variant and want.variant != have.variant:
        return False
    return True


def canonical_json(doc: Any) -> bytes:
    """
    Compact JSON, keys in insertion order: how Ross writes the documents it
    creates, so the same input always gives the same digest.
    """
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


_TO_OCI_LAYER = {
    DOCKER_LAYER: OCI_LAYER,
    DOCKER_LAYER_GZIP: OCI_LAYER_GZIP,
    DOCKER_LAYER_ZSTD: OCI_LAYER_ZSTD,
    DOCKER_FOREIGN_GZIP: OCI_LAYER_ND_GZIP,
}


def to_oci_manifest(data: bytes) -> bytes:
    """
    A Docker schema2 manifest rewritten with OCI media types, over the
    same config and layer blobs; an OCI manifest is returned unchanged.
    """
    doc = _load_json(data, "image manifest")
    if doc.get("mediaType") == OCI_MANIFEST:
        return data
    out: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": dict(doc["config"], mediaType=OCI_CONFIG),
        "layers": [dict(layer, mediaType=_TO_OCI_LAYER.get(layer["mediaType"], layer["mediaType"]))
                   for layer in doc["layers"]],
    }
    if doc.get("annotations"):
        out["annotations"] = doc["annotations"]
    return canonical_json(out)
