# -*- test-case-name: ross.test.integration.test_images -*-
"""
Images going out as archives (docker save): a docker-archive tar, or an OCI
layout tar ("oci-archive"), written from the content store by a thread of
its own while the caller drains it.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, List, Sequence

from twisted.internet.interfaces import IReactorThreads
from twisted.python.failure import Failure

from ross.engine.content.store import ContentStore, digest_of
from ross.engine.images import compression
from ross.engine.images.manifest import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_INDEX,
    OCI_MANIFEST,
    canonical_json,
    descriptor_json,
    parse_index,
    parse_manifest,
    to_oci_manifest,
)
from ross.engine.images.archive import OutMember, Source, archive_size, write_archive
from ross.engine.images.catalog import Image, ImageCatalog, display
from ross.engine.pipes import Outflow, in_pool
from ross.engine.records import Descriptor
from ross.errors import DataLoss, InvalidArgument
from ross.reference import parse_normalized


class Saver:
    """
    Writes the images C{catalog} records, and their blobs from C{content},
    as archives.
    """

    def __init__(self, reactor: IReactorThreads, content: ContentStore, catalog: ImageCatalog) -> None:
        self._reactor = reactor
        self._content = content
        self._catalog = catalog

    async def save(self, names: Sequence[str], format: str = "docker-archive") -> tuple[int, Outflow]:
        """
        Start writing C{names} as a docker-archive (or "oci-archive") tar:
        the archive's exact size and an L{Outflow} of ~1 MiB chunks the
        caller drains (cancel it to stop the writer).
        """
        if format not in ("docker-archive", "oci-archive", "oci", "docker"):
            raise InvalidArgument(f"unknown archive format {format!r}: use docker-archive or oci-archive")
        if not names:
            raise InvalidArgument("save needs at least one image")
        members = await in_pool(self._reactor, self._plan, names, "oci" if format.startswith("oci") else "docker")
        total = archive_size(members)
        out = Outflow(self._reactor)
        blobs = self._content.blobs

        def write() -> None:
            try:
                write_archive(members, blobs, out.put)
            except BaseException:
                out.fail(Failure())
                return
            out.finish()

        threading.Thread(target=write, name="ross-save", daemon=True).start()
        return total, out

    def _plan(self, names: Sequence[str], format: str) -> List[OutMember]:
        chosen: List[tuple[Image, str]] = []
        for name in names:
            rows, matched = self._catalog.lookup(name)
            image = self._catalog.image(rows[0], matched)
            chosen.append((image, matched if matched and "@" not in matched else ""))
        if format == "oci":
            return self._oci_members(chosen)
        return self._docker_members(chosen)

    def _docker_members(self, chosen: Sequence[tuple[Image, str]]) -> List[OutMember]:
        db = self._catalog.db
        blobs = self._content.blobs
        members: List[OutMember] = []
        written: set[str] = set()
        entries: List[dict[str, Any]] = []
        by_config: dict[str, dict[str, Any]] = {}
        for image, name in chosen:
            tag = display(name) if name else None
            if image.id in by_config:
                if tag and tag not in by_config[image.id]["RepoTags"]:
                    by_config[image.id]["RepoTags"].append(tag)
                continue
            config_name = image.id[len("sha256:"):] + ".json"
            members.append(OutMember(config_name, len(image.config_json), Source(data=image.config_json)))
            layer_names = []
            for layer, diff_id in zip(image.layers, image.config.diff_ids):
                layer_name = diff_id[len("sha256:"):] + ".tar"
                layer_names.append(layer_name)
                if layer_name in written:
                    continue
                written.add(layer_name)
                facts = db.layer(layer.digest)
                kind = compression.detect_file(str(blobs.path(layer.digest)))
                if facts is None or facts[0] != diff_id:
                    actual, size = compression.diff_of(str(blobs.path(layer.digest)))
                    if actual != diff_id:
                        raise DataLoss(f"layer {layer.digest} does not match its diff ID {diff_id}")
                    db.record_layer(layer.digest, diff_id, size)
                else:
                    size = facts[1]
                members.append(OutMember(layer_name, size, Source(digest=layer.digest, decompress=kind)))
            entry = {"Config": config_name, "RepoTags": [tag] if tag else [], "Layers": layer_names}
            by_config[image.id] = entry
            entries.append(entry)
        repositories: dict[str, dict[str, str]] = {}
        for entry in entries:
            for tag in entry["RepoTags"]:
                repo, _, t = tag.rpartition(":")
                top = entry["Layers"][-1][:-len(".tar")] if entry["Layers"] else ""
                repositories.setdefault(repo, {})[t] = top
        manifest_json = canonical_json([
            {"Config": e["Config"], "RepoTags": e["RepoTags"] or None, "Layers": e["Layers"]} for e in entries
        ])
        members.append(OutMember("manifest.json", len(manifest_json), Source(data=manifest_json)))
        if repositories:
            repo_json = canonical_json(repositories)
            members.append(OutMember("repositories", len(repo_json), Source(data=repo_json)))
        return members

    def _oci_members(self, chosen: Sequence[tuple[Image, str]]) -> List[OutMember]:
        blobs = self._content.blobs
        members: List[OutMember] = []
        written: set[str] = set()

        def add_blob(digest: str) -> None:
            if digest in written:
                return
            written.add(digest)
            members.append(OutMember("blobs/sha256/" + digest[len("sha256:"):], blobs.info(digest).size,
                                     Source(digest=digest)))

        index_entries = []
        for image, name in chosen:
            target = image.target
            if target.media_type in (DOCKER_MANIFEST, DOCKER_LIST):
                # OCI readers (skopeo) only take OCI media types from an
                # index: the host's manifest goes out as an OCI manifest
                # over the same config and layer blobs (same image ID).
                converted = to_oci_manifest(image.manifest_json)
                target = Descriptor(OCI_MANIFEST, digest_of(converted), len(converted))
                if target.digest not in written:
                    written.add(target.digest)
                    members.append(OutMember("blobs/sha256/" + target.digest[len("sha256:"):], len(converted),
                                             Source(data=converted)))
            else:
                target_bytes = blobs.read_bytes(target.digest)
                add_blob(target.digest)
                if target.media_type in INDEX_TYPES:
                    for child in parse_index(target_bytes, target.media_type).manifests:
                        if blobs.exists(child.digest) and child.digest != image.manifest.digest:
                            self._add_manifest_blobs(child, add_blob)
                add_blob(image.manifest.digest)
            add_blob(image.id)
            for layer in image.layers:
                add_blob(layer.digest)
            desc = descriptor_json(target)
            if name:
                ref = parse_normalized(name)
                desc["annotations"] = {ANNOTATION_IMAGE_NAME: str(ref), ANNOTATION_REF_NAME: ref.tag}
            index_entries.append(desc)
        index_json = canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": index_entries})
        layout = canonical_json({"imageLayoutVersion": "1.0.0"})
        return [OutMember("oci-layout", len(layout), Source(data=layout))] + members + [
            OutMember("index.json", len(index_json), Source(data=index_json))]

    def _add_manifest_blobs(self, desc: Descriptor, add_blob: Callable[[str], None]) -> None:
        blobs = self._content.blobs
        if desc.media_type not in MANIFEST_TYPES:
            return
        manifest = parse_manifest(blobs.read_bytes(desc.digest), desc.media_type)
        if not blobs.exists(manifest.config.digest) or not all(blobs.exists(l.digest) for l in manifest.layers):
            return
        add_blob(desc.digest)
        add_blob(manifest.config.digest)
        for layer in manifest.layers:
            add_blob(layer.digest)
