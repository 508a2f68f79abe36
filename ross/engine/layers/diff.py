# -*- test-case-name: ross.test.integration.test_layers -*-
"""
Producing a layer tar from an overlay upper directory.

The upper directory of a snapshot is its diff against the parent (Ross
turns off overlay's redirect_dir, index and metacopy, which would make it
something else). Overlay whiteouts (character devices 0/0) become OCI
C{.wh.NAME} entries and opaque directories (C{trusted.overlay.opaque=y})
get a C{.wh..wh..opq} entry. Output is deterministic: entries in byte
order of their paths, a directory before its contents, PAX headers with
whole-second times, no user or group names, gzip without a timestamp.
"""

from __future__ import annotations

import errno
import hashlib
import os
import queue
import stat
import tarfile
import threading
from typing import Any, Collection, Protocol

import attrs
from isal import isal_zlib

from ross.engine.layers.apply import NO_XATTR, OPAQUE_MARKER, WHITEOUT_PREFIX, is_opaque
from ross.engine.layers.beneath import Tree

MEDIA_TYPE_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MEDIA_TYPE_TAR = "application/vnd.oci.image.layer.v1.tar"
_COPY = 1 << 20
# Chunks of _COPY between the diff's two threads.
_DEPTH = 4
# ISA-L's level 2: about fifteen times zlib's default speed for output
# about a tenth larger; compression is most of the cost of a diff.
_LEVEL = 2


class LayerSink(Protocol):
    """
    Where a layer's bytes go, written in order from one thread (the
    diff's output thread): a file, a content-store writer, a commit's
    ingest.
    """

    def write(self, data: bytes, /) -> object:
        """Append C{data}."""


@attrs.frozen
class DiffResult:
    """
    A layer written by L{write_diff}. Its blob's digest is the sink's to
    know (a content-store writer hashes what it is given): hashing it here
    too would cost a diff a fifth of its time.

    @ivar size: bytes written.
    @ivar diff_id: "sha256:..." of the uncompressed tar.
    @ivar media_type: OCI media type of what was written.
    """

    size: int
    diff_id: str
    media_type: str


class _Output:
    """
    Tar bytes in; hashed, optionally gzip-compressed, out to the sink. The
    tar is hashed in the caller's thread and compressed and written by a
    thread of its own (L{_drain}; both release the GIL): the two halves of
    a diff's cost run on two processors. Use as a context
    manager: leaving it early (an error) stops that thread.
    """

    def __init__(self, sink: LayerSink, compression: str, tap: LayerSink | None = None) -> None:
        self._sink = sink
        self._tap = tap
        self._tar_hash = hashlib.sha256()
        self.size = 0
        self._buffer: list[bytes] = []
        self._buffered = 0
        if compression == "gzip":
            self._compressor: Any = isal_zlib.compressobj(_LEVEL, isal_zlib.DEFLATED, 31)
        elif compression == "none":
            self._compressor = None
        else:
            raise ValueError(f"unknown compression {compression!r}")
        self._queue: queue.Queue[bytes | None] = queue.Queue(_DEPTH)
        self._failure: BaseException | None = None
        self._stopping = threading.Event()
        self._worker = threading.Thread(target=self._drain, name="ross-layer-out", daemon=True)
        self._worker.start()

    def __enter__(self) -> _Output:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        if kind is not None:
            self._stopping.set()
            self._worker.join()

    def write(self, data: bytes | memoryview) -> None:
        self._buffer.append(data if isinstance(data, bytes) else bytes(data))
        self._buffered += len(data)
        if self._buffered >= _COPY:
            self._flush()

    def _flush(self) -> None:
        if not self._buffer:
            return
        data = self._buffer[0] if len(self._buffer) == 1 else b"".join(self._buffer)
        self._buffer, self._buffered = [], 0
        self._tar_hash.update(data)
        self._hand(data)
        if self._tap is not None:
            self._tap.write(data)

    def _hand(self, item: bytes | None) -> None:
        """C{item} to the output thread; its failure (the sink's) raised here."""
        while self._failure is None:
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue
        raise self._failure

    def _drain(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    data = self._queue.get(timeout=0.1)
                except queue.Empty:
                    continue
                if data is None:
                    if self._compressor is not None:
                        self._emit(self._compressor.flush())
                    return
                self._emit(self._compressor.compress(data) if self._compressor is not None else data)
        except BaseException as e:
            self._failure = e

    def _emit(self, data: bytes) -> None:
        if data:
            self.size += len(data)
            self._sink.write(data)

    def close(self) -> str:
        """The tar's digest (the diff ID), once all of it was written."""
        self._flush()
        self._hand(None)
        self._worker.join()
        if self._failure is not None:
            raise self._failure
        return "sha256:" + self._tar_hash.hexdigest()


def _xattrs(path: str) -> dict[str, str]:
    result: dict[str, str] = {}
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as e:
        if e.errno in NO_XATTR:
            return result
        raise
    for name in sorted(names):
        if name.startswith("trusted.overlay."):
            continue
        value = os.getxattr(path, name, follow_symlinks=False)
        result["SCHILY.xattr." + name] = value.decode("utf-8", "surrogateescape")
    return result


class _TarInfo(tarfile.TarInfo):
    """
    A TarInfo whose PAX records carry binary values (capabilities xattrs)
    as raw bytes, as Go's archive/tar writes them, instead of tarfile's
    C{hdrcharset=BINARY} record, which GNU tar and others warn about.
    """

    @classmethod
    def _create_pax_generic_header(cls, pax_headers: dict[str, str], type: bytes, encoding: str) -> bytes:
        records = []
        for keyword, value in pax_headers.items():
            key = keyword.encode("utf-8")
            raw = value.encode("utf-8", "surrogateescape")
            # The length prefix counts itself.
            body = len(key) + len(raw) + 3
            length = body + len(str(body))
            if len(str(length)) != len(str(body)):
                length = body + len(str(length))
            records.append(b"%d %s=%s\n" % (length, key, raw))
        payload = b"".join(records)
        info = {"name": "././@PaxHeader", "type": type, "size": len(payload), "magic": tarfile.POSIX_MAGIC}
        header: bytes = cls._create_header(info, tarfile.USTAR_FORMAT, "ascii", "replace")  # type: ignore[attr-defined]
        return header + cls._create_payload(payload)  # type: ignore[attr-defined, no-any-return]


def _header(info: tarfile.TarInfo) -> bytes:
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _info(name: str, st: os.stat_result, kind: bytes) -> tarfile.TarInfo:
    info = _TarInfo(name)
    info.type = kind
    info.mode = stat.S_IMODE(st.st_mode)
    info.uid = st.st_uid
    info.gid = st.st_gid
    info.uname = info.gname = ""
    info.mtime = int(st.st_mtime)
    return info


def entry_info(name: str, st: os.stat_result) -> tarfile.TarInfo | None:
    """
    The tar header of entry C{name} of lstat C{st} (numeric owners, whole
    seconds), but for a symlink's target: None for a socket, which has no
    tar form.
    """
    mode = st.st_mode
    if stat.S_ISDIR(mode):
        return _info(name, st, tarfile.DIRTYPE)
    if stat.S_ISLNK(mode):
        return _info(name, st, tarfile.SYMTYPE)
    if stat.S_ISREG(mode):
        info = _info(name, st, tarfile.REGTYPE)
        info.size = st.st_size
        return info
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        info = _info(name, st, tarfile.CHRTYPE if stat.S_ISCHR(mode) else tarfile.BLKTYPE)
        info.devmajor = os.major(st.st_rdev)
        info.devminor = os.minor(st.st_rdev)
        return info
    if stat.S_ISFIFO(mode):
        return _info(name, st, tarfile.FIFOTYPE)
    return None


def write_diff(upper: str | os.PathLike[str], sink: LayerSink, compression: str = "gzip",
               exclude: Collection[str] = (), tap: LayerSink | None = None) -> DiffResult:
    """
    Write the layer of upper directory C{upper} to C{sink}, as a tar compressed with C{compression} ("gzip" or
    "none"), without the entries named in C{exclude} (paths relative to
    the root, like "etc/hosts"; a directory's contents go with it). With
    C{tap}, the uncompressed tar goes to it as well, in order, from this
    thread (a commit extracts the layer as it is written); its C{write}
    must not raise. Blocking: run it in a worker thread.
    """
    with Tree(os.fspath(upper)) as tree, _Output(sink, compression, tap) as out:
        return _write_entries(tree, out, compression, exclude)


def _write_entries(tree: Tree, out: _Output, compression: str, exclude: Collection[str]) -> DiffResult:
    links: dict[tuple[int, int], str] = {}
    excluded = frozenset(exclude)
    excluded_dirs = tuple(e + "/" for e in excluded)

    def skip(name: str) -> bool:
        return name in excluded or bool(excluded_dirs and name.startswith(excluded_dirs))

    for entry in tree.walk(skip):
        name, st, path = entry.name, entry.stat, entry.at
        source: int | None = None
        mode = st.st_mode
        if stat.S_ISCHR(mode) and st.st_rdev == 0:
            parent, _, base = name.rpartition("/")
            whiteout = _info((parent + "/" if parent else "") + WHITEOUT_PREFIX + base, st, tarfile.REGTYPE)
            whiteout.mode = 0o644
            out.write(_header(whiteout))
            continue
        info = entry_info(name, st)
        if info is None:
            continue
        if info.isreg():
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in links:
                info.type = tarfile.LNKTYPE
                info.linkname = links[key]
                info.size = 0
            else:
                source = tree.open_file(name, st)
                if source is None:
                    continue  # replaced since it was listed: left out
                if st.st_nlink > 1:
                    links[key] = name
        try:
            try:
                if info.type == tarfile.SYMTYPE:
                    info.linkname = os.readlink(path)
                info.pax_headers = _xattrs(path)
                opaque = stat.S_ISDIR(mode) and is_opaque(path)
            except OSError as e:
                if e.errno in (errno.ENOENT, errno.EINVAL):
                    continue  # deleted, or no longer a symlink, since it was listed
                raise
            out.write(_header(info))
            if source is not None:
                _copy(source, info.size, out)
        finally:
            if source is not None:
                os.close(source)
        if opaque:
            marker = _info(name + "/" + OPAQUE_MARKER, st, tarfile.REGTYPE)
            marker.mode = 0o644
            out.write(_header(marker))
    out.write(b"\x00" * (tarfile.BLOCKSIZE * 2))
    diff_id = out.close()
    media_type = MEDIA_TYPE_GZIP if compression == "gzip" else MEDIA_TYPE_TAR
    return DiffResult(size=out.size, diff_id=diff_id, media_type=media_type)


def _copy(fd: int, size: int, out: _Output) -> None:
    left = size
    while left > 0:
        data = os.read(fd, min(_COPY, left))
        if not data:
            # The file shrank while being read: pad to the promised size.
            data = b"\x00" * left
        out.write(data)
        left -= len(data)
    padding = -size % tarfile.BLOCKSIZE
    if padding:
        out.write(b"\x00" * padding)
