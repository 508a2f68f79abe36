# -*- test-case-name: ross.test.test_runtime_logfile -*-
"""
The container log as the shim writes it: docker's json-file format, one
JSON object per line,

    {"log":"hello\\n","stream":"stdout","time":"2024-05-01T10:00:00.123456789Z"}

or, for a Kubernetes container (L{CRILogWriter}), the CRI's format that
kubelet reads, one line per line of output,

    2024-05-01T10:00:00.123456789Z stdout F hello

with C{max-size}/C{max-files} rotation (C{container.log}, C{container.log.1},
... oldest last). Bytes that are not UTF-8 are written as the lone
surrogates C{surrogateescape} decodes them to (C{"\\udcff"}), so
L{ross.engine.runtime.logread.parse_entry} gives back the exact bytes.

Stdlib only (the shim imports it, once, in the shim parent every shim is
forked from).
"""

from __future__ import annotations

import errno
import os
import time
from json.encoder import encode_basestring_ascii

# Lines longer than this are written in pieces, as docker's 16 KiB buffer does.
MAX_LINE = 16 * 1024

# Bytes that appear unescaped inside a JSON string: printable ASCII but the
# quote and the backslash.
_SAFE = bytes(b for b in range(0x20, 0x7F) if b not in (0x22, 0x5C))
_SAFE_NL = _SAFE + b"\n"


def timestamp(time_ns: int) -> bytes:
    """
    RFC 3339 UTC time with nanoseconds, as bytes.
    """
    seconds, nanos = divmod(time_ns, 1_000_000_000)
    return b"%s.%09dZ" % (time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)).encode(), nanos)


class LogWriter:
    """
    Appends a container's output to its JSON-lines log, rotating by size.

    L{write} takes raw chunks as they come from the container: the time is
    formatted once per chunk, complete lines are encoded in one pass when
    they need no escaping, and a trailing partial line waits for its end
    (or is written on its own once it reaches L{MAX_LINE}, or at L{close}).
    """

    #: The log file's mode.
    MODE = 0o600

    def __init__(self, path: str, max_size: int = 0, max_files: int = 1) -> None:
        self.path = path
        self.max_size = max_size
        self.max_files = max(1, max_files)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, self.MODE)
        self._size = os.fstat(self._fd).st_size
        self._partial: dict[str, bytes] = {}
        #: Bytes of output lost because the disk was full.
        self.dropped = 0

    def write(self, stream: str, data: bytes, now_ns: int | None = None) -> None:
        """
        Log a chunk of C{stream}'s ("stdout" or "stderr") output.
        """
        pending = self._partial.pop(stream, b"")
        if pending:
            data = pending + data
        cut = data.rfind(b"\n") + 1
        rest = data[cut:]
        if len(rest) >= MAX_LINE:
            whole = len(rest) - len(rest) % MAX_LINE
            complete, pieces, rest = data[:cut], rest[:whole], rest[whole:]
        else:
            complete, pieces = data[:cut], b""
        if rest:
            self._partial[stream] = rest
        if not complete and not pieces:
            return
        suffix = b'","stream":"%s","time":"%s"}\n' % (stream.encode(), timestamp(now_ns or time.time_ns()))
        out = []
        if complete:
            out.append(_encode_lines(complete, suffix))
        for i in range(0, len(pieces), MAX_LINE):
            out.append(_encode_one(pieces[i:i + MAX_LINE], suffix))
        self._append(b"".join(out))

    def flush(self, now_ns: int | None = None) -> None:
        """
        Write every partial line as it is (the stream ended without a newline).
        """
        partial, self._partial = self._partial, {}
        for stream, rest in partial.items():
            suffix = b'","stream":"%s","time":"%s"}\n' % (stream.encode(), timestamp(now_ns or time.time_ns()))
            self._append(_encode_one(rest, suffix))

    def close(self) -> None:
        self.flush()
        os.close(self._fd)

    def reopen(self) -> None:
        """
        Go on in a new file at C{path} (the old one was moved away: a
        partial line goes on in the new file).
        """
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, self.MODE)
        self._size = os.fstat(self._fd).st_size

    def _append(self, encoded: bytes) -> None:
        if not self.max_size or self._size + len(encoded) <= self.max_size:
            self._write_all(encoded)
            return
        # Write whole lines up to the limit, rotate, go on with the rest.
        view = memoryview(encoded)
        while len(view):
            room = self.max_size - self._size
            if len(view) <= room:
                self._write_all(view)
                break
            cut = encoded.rfind(b"\n", len(encoded) - len(view), len(encoded) - len(view) + room) + 1
            start = len(encoded) - len(view)
            if cut <= start:
                if self._size == 0:
                    # A single line larger than the limit gets a file of its own.
                    cut = encoded.index(b"\n", start) + 1
                else:
                    cut = start
            self._write_all(view[:cut - start])
            view = view[cut - start:]
            self._rotate()

    def _write_all(self, data: bytes | memoryview) -> None:
        """
        Append whole lines; on a full disk they are dropped (counted in
        L{dropped}), what was written of them taken back, so the log
        holds no torn line and the container runs on.
        """
        view = memoryview(data)
        start = self._size
        try:
            while len(view):
                n = os.write(self._fd, view)
                view = view[n:]
                self._size += n
        except OSError as e:
            if e.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            self.dropped += len(data)
            if self._size != start:
                os.ftruncate(self._fd, start)
                self._size = start

    def _rotate(self) -> None:
        if self.max_files == 1:
            os.ftruncate(self._fd, 0)
            self._size = 0
            return
        for i in range(self.max_files - 2, 0, -1):
            try:
                os.rename(f"{self.path}.{i}", f"{self.path}.{i + 1}")
            except FileNotFoundError:
                pass
        os.rename(self.path, f"{self.path}.1")
        os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._size = 0


def _encode_lines(complete: bytes, suffix: bytes) -> bytes:
    """
    JSON lines for C{complete}, which ends with a newline.
    """
    if not complete.translate(None, _SAFE_NL):
        return b'{"log":"' + complete[:-1].replace(b"\n", b"\\n" + suffix + b'{"log":"') + b"\\n" + suffix
    lines = complete.split(b"\n")
    lines.pop()
    return b"".join(_encode_one(line + b"\n", suffix) for line in lines)


def _encode_one(line: bytes, suffix: bytes) -> bytes:
    """
    One JSON line for C{line} (with its newline, if it has one).
    """
    if not line.translate(None, _SAFE):
        return b'{"log":"' + line + suffix
    if line.endswith(b"\n") and not line[:-1].translate(None, _SAFE):
        return b'{"log":"' + line[:-1] + b"\\n" + suffix
    quoted = encode_basestring_ascii(line.decode("utf-8", "surrogateescape")).encode("ascii")
    return b'{"log":' + quoted + suffix[1:]


class CRILogWriter(LogWriter):
    """
    Appends a container's output to its log in the CRI's format:
    C{<RFC 3339 time> <stream> <tag> <text>}, the tag C{F} for a full line
    and C{P} for a piece of one (a line longer than L{MAX_LINE}, or a
    partial line whose stream went on with more later). A line the stream
    ends without a newline is written full at L{flush}, as containerd does.
    kubelet rotates the file itself (ReopenContainerLog), so no rotation;
    a full disk drops whole lines, as L{LogWriter}'s.
    """

    MODE = 0o640

    def write(self, stream: str, data: bytes, now_ns: int | None = None) -> None:
        """
        Log a chunk of C{stream}'s ("stdout" or "stderr") output.
        """
        data = self._partial.pop(stream, b"") + data
        cut = data.rfind(b"\n") + 1
        complete, rest = data[:cut], data[cut:]
        out = []
        prefix = b"%s %s " % (timestamp(now_ns or time.time_ns()), stream.encode())
        if complete:
            for line in complete[:-1].split(b"\n"):
                out.extend(_cri_pieces(prefix, line))
        whole = len(rest) - len(rest) % MAX_LINE
        for i in range(0, whole, MAX_LINE):
            out.append(prefix + b"P " + rest[i:i + MAX_LINE] + b"\n")
        if rest[whole:]:
            self._partial[stream] = rest[whole:]
        if out:
            self._append(b"".join(out))

    def flush(self, now_ns: int | None = None) -> None:
        """
        Write every partial line as a full one (its stream ended).
        """
        partial, self._partial = self._partial, {}
        for stream, rest in partial.items():
            prefix = b"%s %s " % (timestamp(now_ns or time.time_ns()), stream.encode())
            self._append(b"".join(_cri_pieces(prefix, rest)))


def _cri_pieces(prefix: bytes, line: bytes) -> list[bytes]:
    """
    The CRI lines of one line of output (without its newline): pieces of
    L{MAX_LINE} tagged P, the last tagged F.
    """
    pieces = [line[i:i + MAX_LINE] for i in range(0, len(line), MAX_LINE)] or [b""]
    return [prefix + (b"P " if i < len(pieces) - 1 else b"F ") + piece + b"\n" for i, piece in enumerate(pieces)]
