# -*- test-case-name: ross.test.integration.test_images -*-
"""
Test images made offline from the host's busybox-static.

    archive = docker_archive(tmp / "busybox.tar")        # docker-save tar
    layout = oci_layout(tmp / "oci")                     # OCI layout dir
    tar = oci_archive(tmp / "busybox-oci.tar")           # the same, as a tar
    image_id = yield load_busybox(daemon)                # into an InProcessDaemon

Every builder is deterministic (fixed timestamps, root ownership), so the
same arguments give the same digests. The image runs C{sh} by default with
the usual PATH.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from pathlib import Path
from typing import Any, Iterable

import attrs
from twisted.internet.defer import Deferred

from ross.testing.busybox import build_rootfs

#: Fixed modification time of everything the builders write.
EPOCH = 1700000000
CREATED = "2023-11-14T22:13:20Z"
DEFAULT_ENV = ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]


@attrs.frozen
class BuiltImage:
    """
    What a builder wrote.

    @ivar path: the archive (or layout directory).
    @ivar config_digest: the image ID Ross will report.
    @ivar diff_ids: uncompressed layer digests, base first.
    @ivar manifest_digest: digest of the manifest (OCI builders only).
    """

    path: Path
    config_digest: str
    diff_ids: tuple[str, ...]
    manifest_digest: str = ""


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    info.mtime = EPOCH
    return info


def layer_tar(root: Path) -> bytes:
    """
    An uncompressed layer tar of the directory C{root}, owned by root,
    entries sorted.
    """
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                full = os.path.join(dirpath, name)
                arcname = os.path.relpath(full, root)
                info = tar.gettarinfo(full, arcname)
                _root_owned(info)
                if info.isreg():
                    with open(full, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
    return buffer.getvalue()


def busybox_layer() -> bytes:
    """The busybox root filesystem as an uncompressed layer tar."""
    with tempfile.TemporaryDirectory(prefix="ross-bb-") as tmp:
        return layer_tar(build_rootfs(Path(tmp) / "rootfs"))


def image_config(diff_ids: Iterable[str], cmd: list[str] | None = None, env: list[str] | None = None,
                 extra: dict[str, Any] | None = None, history: list[dict[str, Any]] | None = None) -> bytes:
    """An image config (Docker/OCI JSON) for layers C{diff_ids}."""
    diff_ids = list(diff_ids)
    config: dict[str, Any] = {"Env": env if env is not None else DEFAULT_ENV, "Cmd": cmd if cmd is not None else ["sh"]}
    config.update(extra or {})
    doc = {
        "architecture": _arch(),
        "os": "linux",
        "created": CREATED,
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": history if history is not None else [
            {"created": CREATED, "created_by": f"ross.testing layer {i}"} for i in range(len(diff_ids))
        ],
    }
    return json.dumps(doc, sort_keys=True).encode()


def _arch() -> str:
    from ross.engine.images.manifest import host_platform

    return host_platform().architecture


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = _root_owned(tarfile.TarInfo(name))
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def docker_archive(dest: Path, tags: Iterable[str] = ("busybox:latest",), layers: list[bytes] | None = None,
                   compress: bool = False, config: bytes | None = None) -> BuiltImage:
    """
    Write a docker-save archive (manifest.json, repositories, a config, a
    directory per layer) of busybox (or of C{layers}, uncompressed tars).
    """
    layers = layers if layers is not None else [busybox_layer()]
    diff_ids = [_sha(layer) for layer in layers]
    config = config if config is not None else image_config(diff_ids)
    config_digest = _sha(config)
    names = []
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for layer, diff_id in zip(layers, diff_ids):
            name = f"{diff_id[7:]}/layer.tar"
            names.append(name)
            _add(tar, name, gzip.compress(layer, mtime=0) if compress else layer)
        _add(tar, f"{config_digest[7:]}.json", config)
        tags = list(tags)
        manifest = [{"Config": f"{config_digest[7:]}.json", "RepoTags": tags or None, "Layers": names}]
        _add(tar, "manifest.json", json.dumps(manifest).encode())
    return BuiltImage(dest, config_digest, tuple(diff_ids))


def oci_layout(dest: Path, ref_name: str = "busybox:latest", layers: list[bytes] | None = None,
               compress: bool = True) -> BuiltImage:
    """
    Write an OCI image layout directory (oci-layout, index.json, blobs/)
    with one image whose index entry carries C{ref_name}.
    """
    layers = layers if layers is not None else [busybox_layer()]
    diff_ids = [_sha(layer) for layer in layers]
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)

    def put(data: bytes) -> str:
        digest = _sha(data)
        (blobs / digest[7:]).write_bytes(data)
        return digest

    layer_descs = []
    for layer in layers:
        data = gzip.compress(layer, mtime=0) if compress else layer
        media_type = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if compress else "")
        layer_descs.append({"mediaType": media_type, "digest": put(data), "size": len(data)})
    config = image_config(diff_ids)
    config_digest = put(config)
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": layer_descs,
    }).encode()
    manifest_digest = put(manifest)
    entry: dict[str, Any] = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                             "size": len(manifest)}
    if ref_name:
        entry["annotations"] = {"org.opencontainers.image.ref.name": ref_name}
    (dest / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))
    (dest / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    return BuiltImage(dest, config_digest, tuple(diff_ids), manifest_digest)


def tar_directory(directory: Path, dest: Path) -> Path:
    """A tar of C{directory}'s contents (an OCI layout as `ross load` takes it)."""
    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(directory.rglob("*")):
            if path.is_file():
                _add(tar, str(path.relative_to(directory)), path.read_bytes())
    return dest


def oci_archive(dest: Path, ref_name: str = "busybox:latest", compress: bool = True) -> BuiltImage:
    """An OCI layout of busybox, as a tar."""
    with tempfile.TemporaryDirectory(prefix="ross-oci-") as tmp:
        built = oci_layout(Path(tmp) / "layout", ref_name, compress=compress)
        tar_directory(built.path, dest)
    return attrs.evolve(built, path=dest)


def load_archive(clients: Any, path: Path, chunk: int = 1 << 20) -> Any:
    """
    Send C{path} through LoadImages with a C{ross.testing.daemon.Clients}
    (blocking: run it in a thread); returns the LoadImagesResponse.
    """
    from ross.v1 import image_pb2

    def requests() -> Any:
        yield image_pb2.LoadImagesRequest(options=image_pb2.LoadOptions(quiet=True))
        with open(path, "rb") as f:
            while True:
                data = f.read(chunk)
                if not data:
                    return
                yield image_pb2.LoadImagesRequest(data=data)

    return clients.images.LoadImages(requests())


def load_busybox(daemon: Any, tag: str = "busybox:latest") -> Deferred[str]:
    """
    Load the busybox image as C{tag} into a started
    L{ross.testing.daemon.InProcessDaemon}; fires with its image ID.
    """
    clients = daemon.clients()

    def load() -> str:
        with tempfile.TemporaryDirectory(prefix="ross-bb-") as tmp:
            built = docker_archive(Path(tmp) / "busybox.tar", tags=[tag])
            load_archive(clients, built.path)
            return built.config_digest

    result: Deferred[str] = daemon.call(load)
    return result


