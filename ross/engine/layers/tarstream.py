# -*- test-case-name: ross.test.test_layer_tar -*-
"""
A streaming reader of tar headers (ustar, GNU long names, PAX), yielding
one L{Entry} per file with its extended attributes and nanosecond times.
File data stays in the stream: the caller consumes exactly C{entry.size}
bytes (see L{ross.engine.layers.stream.ChunkReader}) before the next entry.
"""

from __future__ import annotations

import tarfile
from typing import Iterator

import attrs

from ross.engine.layers.stream import ChunkReader
from ross.errors import InvalidArgument

BLOCK = 512

REGULAR = b"0"
HARDLINK = b"1"
SYMLINK = b"2"
CHARDEV = b"3"
BLOCKDEV = b"4"
DIRECTORY = b"5"
FIFO = b"6"

_TYPES = {
    tarfile.REGTYPE: REGULAR,
    tarfile.AREGTYPE: REGULAR,
    tarfile.CONTTYPE: REGULAR,
    tarfile.LNKTYPE: HARDLINK,
    tarfile.SYMTYPE: SYMLINK,
    tarfile.CHRTYPE: CHARDEV,
    tarfile.BLKTYPE: BLOCKDEV,
    tarfile.DIRTYPE: DIRECTORY,
    tarfile.FIFOTYPE: FIFO,
}


@attrs.frozen
class Entry:
    """
    One member of a layer tar.

    @ivar name: path as written in the archive (not yet made safe).
    @ivar type: one of the type constants above.
    @ivar xattrs: extended attributes from PAX C{SCHILY.xattr.*} records.
    """

    name: str
    type: bytes
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ns: int
    atime_ns: int
    linkname: str
    devmajor: int
    devminor: int
    xattrs: dict[str, bytes]


def _ns(text: str, what: str, archive: str) -> int:
    try:
        if "." in text:
            whole, frac = text.split(".", 1)
            sign = -1 if whole.startswith("-") else 1
            return int(whole) * 1_000_000_000 + sign * int((frac + "000000000")[:9])
        return int(text) * 1_000_000_000
    except ValueError:
        raise InvalidArgument(f"Corrupt {archive}: bad PAX {what} {text!r}") from None


def parse_pax(data: bytes, archive: str = "layer") -> dict[str, bytes]:
    """
    The records of a PAX extended header (C{"LEN KEY=VALUE\\n"}), values raw.
    C{archive} names what the header is in, for errors.
    """
    records: dict[str, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            break
        space = data.find(b" ", pos)
        if space < 0:
            raise InvalidArgument(f"Corrupt {archive}: malformed PAX header")
        try:
            length = int(data[pos:space])
        except ValueError:
            raise InvalidArgument(f"Corrupt {archive}: malformed PAX header") from None
        end = pos + length
        if length <= 0 or end > len(data) or data[end - 1 : end] != b"\n":
            raise InvalidArgument(f"Corrupt {archive}: malformed PAX header")
        key, eq, value = data[space + 1 : end - 1].partition(b"=")
        if not eq:
            raise InvalidArgument(f"Corrupt {archive}: malformed PAX record")
        records[key.decode("utf-8", "surrogateescape")] = value
        pos = end
    return records


def _decode(value: bytes) -> str:
    return value.decode("utf-8", "surrogateescape")


def _read_exact(reader: ChunkReader, n: int, what: str, archive: str) -> bytes:
    data = reader.read(n)
    if len(data) != n:
        raise InvalidArgument(f"Truncated {archive}: the archive ends inside {what}")
    return data


def _padded(size: int) -> int:
    return (size + BLOCK - 1) // BLOCK * BLOCK


def entries(reader: ChunkReader, archive: str = "layer") -> Iterator[Entry]:
    """
    The entries of the tar in C{reader}, until its end-of-archive marker.
    InvalidArgument for a corrupt, truncated or unsupported archive, named
    C{archive} ("layer", "archive") in the message.
    """
    global_pax: dict[str, bytes] = {}
    pax: dict[str, bytes] = {}
    long_name: str | None = None
    long_link: str | None = None
    first = True
    while True:
        block = reader.read(BLOCK)
        if len(block) == 0 and first:
            raise InvalidArgument(f"{archive.capitalize()} is empty: not a tar archive")
        if len(block) < BLOCK:
            raise InvalidArgument(f"Truncated {archive}: the archive ends without its end-of-archive marker")
        if block.count(0) == BLOCK:
            return
        try:
            info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
        except tarfile.HeaderError as e:
            what = "not a tar archive" if first else "bad tar header"
            raise InvalidArgument(f"Corrupt {archive}: {what} ({e})") from None
        first = False
        kind = info.type
        if kind in (tarfile.XHDTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.XGLTYPE):
            records = parse_pax(_read_exact(reader, _padded(info.size), "a PAX header", archive)[: info.size], archive)
            if kind == tarfile.XGLTYPE:
                global_pax.update(records)
            else:
                pax.update(records)
            continue
        if kind in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
            data = _read_exact(reader, _padded(info.size), "a GNU long name", archive)[: info.size]
            text = _decode(data.split(b"\x00", 1)[0])
            if kind == tarfile.GNUTYPE_LONGNAME:
                long_name = text
            else:
                long_link = text
            continue
        if kind == tarfile.GNUTYPE_SPARSE or any(k.startswith("GNU.sparse.") for k in pax):
            raise InvalidArgument(f"{archive.capitalize()} entry {info.name!r} is a sparse file; Ross does not read sparse files")
        entry_type = _TYPES.get(kind)
        if entry_type is None:
            raise InvalidArgument(f"{archive.capitalize()} entry {info.name!r} has unsupported tar type {kind!r}")
        records = {**global_pax, **pax} if global_pax else pax
        name = info.name
        linkname = info.linkname
        size = info.size
        mtime_ns = int(info.mtime) * 1_000_000_000
        atime_ns = mtime_ns
        uid, gid = info.uid, info.gid
        xattrs: dict[str, bytes] = {}
        if records:
            for key, value in records.items():
                if key == "path":
                    name = _decode(value)
                elif key == "linkpath":
                    linkname = _decode(value)
                elif key == "size":
                    size = int(value)
                elif key == "uid":
                    uid = int(value)
                elif key == "gid":
                    gid = int(value)
                elif key == "mtime":
                    mtime_ns = _ns(_decode(value), "mtime", archive)
                elif key == "atime":
                    atime_ns = _ns(_decode(value), "atime", archive)
                elif key.startswith("SCHILY.xattr."):
                    xattrs[key[len("SCHILY.xattr.") :]] = value
            if "atime" not in records:
                atime_ns = mtime_ns
        if long_name is not None:
            name = long_name
        if long_link is not None:
            linkname = long_link
        pax = {}
        long_name = long_link = None
        # Only regular files carry data (as Go's archive/tar reads them).
        data_size = size if entry_type == REGULAR else 0
        if name.endswith("/"):
            if entry_type == REGULAR and kind == tarfile.AREGTYPE:
                entry_type, data_size = DIRECTORY, 0
            name = name.rstrip("/") or "/"
        start = reader.offset
        yield Entry(
            name=name,
            type=entry_type,
            size=data_size,
            mode=info.mode,
            uid=uid,
            gid=gid,
            mtime_ns=mtime_ns,
            atime_ns=atime_ns,
            linkname=linkname,
            devmajor=info.devmajor,
            devminor=info.devminor,
            xattrs=xattrs,
        )
        # Skip whatever data the caller left unread, and the block padding.
        left = data_size - (reader.offset - start)
        try:
            reader.skip(left + _padded(data_size) - data_size)
        except EOFError:
            raise InvalidArgument(f"Truncated {archive}: the archive ends inside {name!r}") from None
