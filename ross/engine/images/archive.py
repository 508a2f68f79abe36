# -*- test-case-name: ross.test.integration.test_images -*-
"""
Image archives: reading what `ross load` receives (docker-save archives and
OCI layouts, plain or compressed tar) and writing what `ross save` sends.

Reading happens in one pass over the stream: every regular file of the tar
goes straight into its own content-store ingest (a temporary file, hashed
while written), so nothing is held in memory (the JSON documents are read
back from their files when needed) and nothing is written twice. What the archive means is decided once the
stream has ended (docker-save archives keep manifest.json last), and only
the files the images refer to are then committed as blobs; the rest are
dropped with their temporary files.
"""

from __future__ import annotations

import json
import posixpath
import re
import tarfile
import zlib
from typing import IO, Any, Callable, Iterable, Iterator, Mapping, Sequence

import attrs

from ross.engine.content.store import CHUNK, BlobStore, Writer, digest_of
from ross.engine.images import compression
from ross.engine.images.manifest import (
    ANNOTATION_IMAGE_NAME,
    ANNOTATION_REF_NAME,
    Config,
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    canonical_json,
    parse_config,
    parse_index,
    parse_manifest,
    platform_matches,
    sniff_media_type,
)
from ross.engine.records import Descriptor, Platform
from ross.errors import DataLoss, InvalidArgument
from ross.reference import Reference, ReferenceError, parse_normalized

#: Largest archive member read as a JSON document (manifest.json, configs, index.json...).
SMALL = 4 << 20

#: Deepest nesting of image indexes below index.json (an index of indexes
#: is rare; containerd and docker stop unbounded ones with small limits).
MAX_INDEX_DEPTH = 8

_BLOB_PATH = re.compile(r"^blobs/sha256/([0-9a-f]{64})$")


@attrs.define
class Member:
    """
    One regular file of the archive, in its (closed, uncommitted) ingest.
    """

    path: str
    writer: Writer
    _data: bytes | None = None

    @property
    def data(self) -> bytes | None:
        """
        The file's bytes when it is small enough to be a JSON document
        (read back from its ingest file on first use), else None.
        """
        if self.writer.size > SMALL:
            return None
        if self._data is None:
            self._data = self.writer.path.read_bytes()
        return self._data


class Staged:
    """
    The files of an archive, each in an uncommitted ingest.
    """

    def __init__(self) -> None:
        self.files: dict[str, Member] = {}
        self.links: dict[str, str] = {}

    def resolve(self, path: str) -> Member | None:
        """
        The member at C{path}, following the archive's own links (a bounded
        number of hops, so a link cycle resolves to nothing).
        """
        current = _clean(path)
        for _ in range(40):
            if current is None:
                return None
            if current in self.files:
                return self.files[current]
            if current not in self.links:
                return None
            current = self.links[current]
        return None

    def discard(self) -> None:
        for member in self.files.values():
            member.writer.abort()


def _clean(path: str) -> str | None:
    """
    A member path relative to the archive root, or None for one that
    points outside it. A ``..`` that stays inside is fine: docker's save
    links a layer two images share as ``../<other layer>/layer.tar``.
    """
    if path.startswith("/"):
        return None
    p = posixpath.normpath(path)
    if p in (".", "..") or p.startswith("../"):
        return None
    return p


def read_archive(stream: IO[bytes], blobs: BlobStore) -> Staged:
    """
    Read a tar (plain, gzip, bzip2 or xz) from C{stream}, staging each
    regular file as an ingest. InvalidArgument for what is not a readable
    tar; the staged files are dropped then.
    """
    staged = Staged()
    try:
        with tarfile.open(fileobj=stream, mode="r|*") as tar:
            for info in tar:
                path = _clean(info.name)
                if path is None:
                    continue
                if info.isreg():
                    hexpart = _BLOB_PATH.match(path)
                    writer = blobs.writer("sha256:" + hexpart.group(1) if hexpart else None)
                    if path in staged.files:
                        staged.files[path].writer.abort()
                    staged.files[path] = Member(path, writer)
                    source = tar.extractfile(info)
                    assert source is not None
                    remaining = info.size
                    while remaining > 0:
                        data = source.read(min(CHUNK, remaining))
                        if not data:
                            raise InvalidArgument(f"invalid archive: {path} is truncated")
                        writer.write(data)
                        remaining -= len(data)
                    writer.close()
                elif info.issym():
                    target = info.linkname
                    if not target.startswith("/"):
                        target = posixpath.join(posixpath.dirname(path), target)
                    cleaned = _clean(target)
                    if cleaned is not None:
                        staged.links[path] = cleaned
                elif info.islnk():
                    cleaned = _clean(info.linkname)
                    if cleaned is not None:
                        staged.links[path] = cleaned
    except InvalidArgument:
        staged.discard()
        raise
    except OSError as e:
        staged.discard()
        if e.errno is not None:
            # The disk (ENOSPC, EIO...), not the archive: reported as such.
            raise
        # gzip's BadGzipFile and friends carry no errno.
        raise InvalidArgument(f"invalid archive: {_tar_message(e)}") from None
    except (tarfile.TarError, EOFError, zlib.error, ValueError) as e:
        staged.discard()
        raise InvalidArgument(f"invalid archive: {_tar_message(e)}") from None
    except BaseException:
        staged.discard()
        raise
    if not staged.files:
        raise InvalidArgument("invalid archive: it contains no files")
    return staged


def _tar_message(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if "empty file" in text:
        return "empty or not a tar archive"
    if "could not be opened successfully" in text or "invalid header" in text:
        return "not a tar archive (or corrupt)"
    return text


# ---------------------------------------------------------------- planning


@attrs.frozen
class PlannedImage:
    """
    One image an archive holds, checked and ready to record.

    @ivar target: what its names will point at (manifest or index).
    @ivar manifest: the manifest chosen for this host.
    @ivar all_blobs: every blob the image references.
    """

    target: Descriptor
    manifest: Descriptor
    config_digest: str
    config: Config
    layers: tuple[Descriptor, ...]
    names: tuple[Reference, ...]
    all_blobs: frozenset[str]


@attrs.define
class LoadPlan:
    images: list[PlannedImage] = attrs.Factory(list)
    #: digest -> staged member whose bytes are that blob
    stage: dict[str, Member] = attrs.Factory(dict)
    #: digest -> bytes of a blob Ross generated (a docker-archive's manifest)
    generated: dict[str, bytes] = attrs.Factory(dict)
    #: layer digest -> (diff ID, uncompressed size) verified while planning
    layer_facts: dict[str, tuple[str, int]] = attrs.Factory(dict)


def plan(staged: Staged, platform: Platform, known_layer: Callable[[str], tuple[str, int] | None]) -> LoadPlan:
    """
    Decide what the staged archive holds and check all of it: every
    referenced file present, digests matching, media types known. Nothing
    is committed here.
    """
    if staged.resolve("manifest.json") is not None:
        return _plan_docker(staged, known_layer)
    if staged.resolve("index.json") is not None:
        return _plan_oci(staged, platform)
    raise InvalidArgument(
        "invalid archive: neither a docker-save archive (manifest.json) nor an OCI layout (index.json)"
    )


def _json(staged: Staged, path: str, what: str) -> Any:
    member = staged.resolve(path)
    if member is None:
        raise InvalidArgument(f"invalid archive: {what} {path} is missing")
    if member.data is None:
        raise InvalidArgument(f"invalid archive: {what} {path} is too large")
    try:
        return json.loads(member.data)
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument(f"invalid archive: {what} {path} is not valid JSON") from None
    except RecursionError:
        raise InvalidArgument(f"invalid archive: {what} {path} is JSON nested too deeply") from None


def _plan_docker(staged: Staged, known_layer: Callable[[str], tuple[str, int] | None]) -> LoadPlan:
    entries = _json(staged, "manifest.json", "manifest")
    if not isinstance(entries, list) or not entries:
        raise InvalidArgument("invalid archive: manifest.json must list at least one image")
    result = LoadPlan()
    for entry in entries:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("Config"), str) \
                or not isinstance(entry.get("Layers"), list):
            raise InvalidArgument("invalid archive: a manifest.json entry lacks Config or Layers")
        config_member = staged.resolve(entry["Config"])
        if config_member is None:
            raise InvalidArgument(f"invalid archive: config {entry['Config']} is missing")
        if config_member.data is None:
            raise InvalidArgument(f"invalid archive: config {entry['Config']} is too large")
        _check_staged(config_member)
        config_digest = config_member.writer.digest
        config = parse_config(config_member.data)
        if len(entry["Layers"]) != len(config.diff_ids):
            raise InvalidArgument(
                f"invalid archive: image {config_digest} lists {len(entry['Layers'])} layers "
                f"but its config has {len(config.diff_ids)} diff IDs"
            )
        result.stage[config_digest] = config_member
        layers = []
        for path, diff_id in zip(entry["Layers"], config.diff_ids):
            member = staged.resolve(str(path))
            if member is None:
                raise InvalidArgument(f"invalid archive: layer {path} is missing")
            _check_staged(member)
            digest = member.writer.digest
            kind = compression.detect_file(str(member.writer.path))
            if kind == compression.NONE:
                actual, size = digest, member.writer.size
            else:
                known = known_layer(digest)
                actual, size = known if known and known[0] == diff_id else compression.diff_of(str(member.writer.path))
            if actual != diff_id:
                raise DataLoss(f"layer {path} does not match its diff ID: expected {diff_id}, got {actual}")
            result.layer_facts[digest] = (diff_id, size)
            media_type = DOCKER_LAYER + {
                compression.NONE: "", compression.GZIP: ".gzip", compression.ZSTD: ".zstd"}[kind]
            layers.append(Descriptor(media_type, digest, member.writer.size))
            result.stage[digest] = member
        manifest_doc = {
            "schemaVersion": 2,
            "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": DOCKER_CONFIG, "size": config_member.writer.size, "digest": config_digest},
            "layers": [{"mediaType": d.media_type, "size": d.size, "digest": d.digest} for d in layers],
        }
        manifest_bytes = canonical_json(manifest_doc)
        manifest_desc = Descriptor(DOCKER_MANIFEST, digest_of(manifest_bytes), len(manifest_bytes))
        result.generated[manifest_desc.digest] = manifest_bytes
        names = []
        for tag in entry.get("RepoTags") or []:
            try:
                ref = parse_normalized(str(tag))
            except ReferenceError as e:
                raise InvalidArgument(f"invalid archive: invalid tag {tag!r}: {e}") from None
            if ref.digest:
                raise InvalidArgument(f"invalid archive: RepoTags entry {tag!r} has a digest")
            names.append(ref.with_default_tag())
        result.images.append(PlannedImage(
            target=manifest_desc,
            manifest=manifest_desc,
            config_digest=config_digest,
            config=config,
            layers=tuple(layers),
            names=tuple(names),
            all_blobs=frozenset({manifest_desc.digest, config_digest, *(d.digest for d in layers)}),
        ))
    return result


def _check_staged(member: Member) -> None:
    if member.writer.expected is not None and member.writer.digest != member.writer.expected:
        raise DataLoss(
            f"digest mismatch for blob {member.path}: expected {member.writer.expected}, got {member.writer.digest}"
        )


def _plan_oci(staged: Staged, platform: Platform) -> LoadPlan:
    layout = staged.resolve("oci-layout")
    if layout is not None:
        doc = _json(staged, "oci-layout", "OCI layout marker")
        if not isinstance(doc, Mapping) or not isinstance(doc.get("imageLayoutVersion"), str):
            raise InvalidArgument("invalid OCI layout: oci-layout has no imageLayoutVersion")
    index_member = staged.resolve("index.json")
    assert index_member is not None
    if index_member.data is None:
        raise InvalidArgument("invalid OCI layout: index.json is too large")
    media_type = sniff_media_type(index_member.data)
    if media_type not in INDEX_TYPES:
        raise InvalidArgument(f"invalid OCI layout: index.json has media type {media_type}")
    index = parse_index(index_member.data, media_type)
    if not index.manifests:
        raise InvalidArgument("invalid OCI layout: index.json lists no images")
    result = LoadPlan()
    for top in index.manifests:
        blobs: set[str] = set()
        chosen = _walk(staged, top, "index.json", platform, blobs, result, 1)
        config_member = _blob(staged, chosen.config, chosen.manifest.digest)
        assert config_member.data is not None
        config = parse_config(config_member.data)
        if len(config.diff_ids) != len(chosen.layers):
            raise InvalidArgument(
                f"invalid image {chosen.manifest.digest}: {len(chosen.layers)} layers "
                f"but {len(config.diff_ids)} diff IDs in its config"
            )
        result.images.append(PlannedImage(
            target=attrs.evolve(top, annotations={}, platform=None),
            manifest=chosen.manifest,
            config_digest=chosen.config.digest,
            config=config,
            layers=chosen.layers,
            names=tuple(_names_of(top)),
            all_blobs=frozenset(blobs),
        ))
    return result


@attrs.frozen
class _Chosen:
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]


def _blob(staged: Staged, desc: Descriptor, parent: str) -> Member:
    member = staged.resolve("blobs/sha256/" + desc.digest[len("sha256:"):])
    if member is None:
        raise InvalidArgument(
            f"invalid archive: blob {desc.digest} ({desc.media_type}) referenced by {parent} is missing"
        )
    _check_staged(member)
    if member.writer.size != desc.size:
        raise DataLoss(
            f"size mismatch for blob {desc.digest}: the descriptor says {desc.size} bytes, the blob has {member.writer.size}"
        )
    return member


def _walk(staged: Staged, desc: Descriptor, parent: str, platform: Platform, blobs: set[str], out: LoadPlan,
          depth: int) -> _Chosen:
    """
    Stage the blobs of C{desc} (an index or a manifest listed C{depth}
    levels below index.json) and choose the manifest for C{platform}.
    """
    media_type = desc.media_type
    if media_type in INDEX_TYPES and depth > MAX_INDEX_DEPTH:
        raise InvalidArgument(
            f"invalid archive: image index nested too deeply ({desc.digest} is more than "
            f"{MAX_INDEX_DEPTH} levels below index.json)"
        )
    member = _blob(staged, desc, parent)
    if media_type in INDEX_TYPES or media_type in MANIFEST_TYPES:
        if member.data is None:
            raise InvalidArgument(f"invalid archive: {media_type} {desc.digest} is too large")
    blobs.add(desc.digest)
    out.stage[desc.digest] = member
    if media_type in INDEX_TYPES:
        assert member.data is not None
        index = parse_index(member.data, media_type)
        chosen: _Chosen | None = None
        for child in index.manifests:
            present = staged.resolve("blobs/sha256/" + child.digest[len("sha256:"):]) is not None
            wanted = platform_matches(platform, child.platform) and chosen is None
            if wanted:
                chosen = _walk(staged, child, desc.digest, platform, blobs, out, depth + 1)
            elif present and child.media_type in MANIFEST_TYPES | INDEX_TYPES:
                _walk(staged, child, desc.digest, platform, blobs, out, depth + 1)
        if chosen is None:
            raise InvalidArgument(
                f"image index {desc.digest} has no manifest for {platform.os}/{platform.architecture}"
            )
        return chosen
    if media_type in MANIFEST_TYPES:
        assert member.data is not None
        manifest = parse_manifest(member.data, media_type)
        config_member = _blob(staged, manifest.config, desc.digest)
        if config_member.data is None:
            raise InvalidArgument(f"invalid archive: config {manifest.config.digest} is too large")
        blobs.add(manifest.config.digest)
        out.stage[manifest.config.digest] = config_member
        for layer in manifest.layers:
            out.stage[layer.digest] = _blob(staged, layer, desc.digest)
            blobs.add(layer.digest)
        return _Chosen(desc, manifest.config, manifest.layers)
    raise InvalidArgument(f"unsupported media type {media_type} for {desc.digest} in index.json")


def _names_of(desc: Descriptor) -> list[Reference]:
    """
    Names an OCI layout gives an image, as containerd reads them: the
    full name annotation, else a ref.name that is a full reference (a bare
    tag names no repository, so the image is loaded untagged).
    """
    name = desc.annotations.get(ANNOTATION_IMAGE_NAME) or ""
    if not name:
        ref_name = desc.annotations.get(ANNOTATION_REF_NAME) or ""
        if any(c in ref_name for c in "/:@"):
            name = ref_name
    if not name:
        return []
    try:
        ref = parse_normalized(name)
    except ReferenceError as e:
        raise InvalidArgument(f"invalid OCI layout: image name {name!r}: {e}") from None
    return [ref.with_default_tag() if not ref.digest else ref]


# ---------------------------------------------------------------- writing


@attrs.frozen
class Source:
    """
    Where a member's bytes come from: C{data}, or the blob C{digest}
    (decompressed when C{decompress} names its compression).
    """

    data: bytes | None = None
    digest: str = ""
    decompress: str = compression.NONE


@attrs.frozen
class OutMember:
    name: str
    size: int
    source: Source
    mtime: int = 0


def header(member: OutMember) -> bytes:
    info = tarfile.TarInfo(member.name)
    info.size = member.size
    info.mode = 0o644
    info.mtime = member.mtime
    info.type = tarfile.REGTYPE
    info.uname = info.gname = ""
    return info.tobuf(format=tarfile.PAX_FORMAT)


def archive_size(members: Sequence[OutMember]) -> int:
    total = 0
    for member in members:
        total += len(header(member)) + member.size + (-member.size % 512)
    return total + 1024


def write_archive(members: Iterable[OutMember], blobs: BlobStore, put: Callable[[bytes], None]) -> None:
    """
    Write a tar of C{members} through C{put} in chunks of about 1 MiB,
    checking every blob against its digest and size as it is read.
    """
    buffer = bytearray()

    def emit(data: bytes | memoryview) -> None:
        buffer.extend(data)
        if len(buffer) >= CHUNK:
            put(bytes(buffer))
            buffer.clear()

    for member in members:
        emit(header(member))
        written = 0
        for piece in _content(member.source, blobs):
            written += len(piece)
            if written > member.size:
                break
            emit(piece)
        if written != member.size:
            raise DataLoss(f"{member.name}: expected {member.size} bytes, the store has {written}")
        emit(b"\0" * (-member.size % 512))
    emit(b"\0" * 1024)
    if buffer:
        put(bytes(buffer))


def _content(source: Source, blobs: BlobStore) -> Iterator[bytes]:
    if source.data is not None:
        yield source.data
        return
    with blobs.reader(source.digest) as raw:
        stream = compression.decompressed(raw, source.decompress)  # type: ignore[arg-type]
        while True:
            data = stream.read(CHUNK)
            if not data:
                break
            yield data
        # Reading to the end of the decompressed stream may leave the raw
        # blob's tail unread; its digest is checked over every byte.
        while raw.read(CHUNK):
            pass
