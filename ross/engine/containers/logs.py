# -*- test-case-name: ross.test.integration.test_containers -*-
"""
Reading a container's JSON-lines log for ``ross logs``: tail, since/until,
following across rotation until the container stops, and searching it
(L{LogFilter}: matching lines with context, as grep does).

The shim writes the files; the daemon only reads them, in a thread, in
large chunks. Following waits on inotify (the reactor's) for the log
directory, so a quiet container costs nothing.
"""

from __future__ import annotations

import itertools
import json
import os
import re
from collections import deque
from operator import itemgetter
from typing import TYPE_CHECKING, Callable, Iterator

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IReactorFDSet
from twisted.python.failure import Failure
from twisted.python.filepath import FilePath

from ross.engine.pipes import in_pool
from ross.engine.reactors import IEngineReactor
from ross.engine.runtime.logread import log_files, parse_time

if TYPE_CHECKING:
    from twisted.internet.inotify import INotify

    from ross.engine.runtime.runtime import ExitStatus

CHUNK = 1 << 20

#: One log line: (stream, time in ns, the logged bytes with their newline,
#: L{MATCH}/L{CONTEXT} and L{GAP} bits when a filter picked it, else 0).
Entry = tuple[str, int, bytes, int]

MATCH = 1
CONTEXT = 2
#: Lines were left out between the previous entry and this one.
GAP = 4


def parse_lines(data: bytes) -> list[Entry]:
    """
    The entries of complete JSON lines (C{data} without its last newline).
    One C-level JSON parse for the whole chunk: parsing line by line costs
    four times as much, and ``logs`` reads hundreds of MB.
    """
    try:
        docs = json.loads(b"[" + data.replace(b"\n", b",") + b"]")
    except ValueError:
        docs = []
        for line in data.split(b"\n"):
            try:
                docs.append(json.loads(line))
            except ValueError:
                continue
    times: dict[str, int] = {}
    entries = []
    for doc in docs:
        try:
            stamp = doc["time"]
            ns = times.get(stamp)
            if ns is None:
                ns = times[stamp] = parse_time(stamp)
            entries.append((doc["stream"], ns, doc["log"].encode("utf-8", "surrogateescape"), 0))
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
    return entries


_stream_of = itemgetter(0)
_line_of = itemgetter(2)


def merge_runs(entries: list[Entry]) -> list[Entry]:
    """
    One entry per run of lines of one stream, their bytes joined (and
    their times dropped). Done with C-level iteration: a plain ``logs``
    of 200 MB is two million lines.
    """
    return [(stream, 0, b"".join(map(_line_of, run)), 0) for stream, run in itertools.groupby(entries, _stream_of)]


_plain_fields = itemgetter("stream", "log", "time")
_text_of = itemgetter(1)


# How the shim's LogWriter frames its lines (ross.engine.runtime.logfile):
# the start of a line, the end of the last one (its stream, a 30-byte time),
# and, per stream, the end of one line of that stream and the start of the
# next. The text between is a JSON string's body, where a quote is escaped.
_LINE_START = b'{"log":"'
_LAST_END = re.compile(rb'","stream":"(stdout|stderr)","time":"[^"]{30}"\}\Z')
_JOINTS = {stream: re.compile(rb'","stream":"%s","time":"[^"]{30}"\}\n\{"log":"' % stream.encode())
           for stream in ("stdout", "stderr")}


def _one_stream(data: bytes) -> list[Entry] | None:
    """
    The text of a chunk of the shim's own lines of one stream, as one run,
    or None for any other chunk. No step per line in Python: the frames
    between the lines are cut out by one substitution, and the texts, now
    one JSON string's body, decoded at once, which checks them too: a frame
    of the other stream or a torn line leaves a bare quote in it, and
    decoding fails.
    """
    last = _LAST_END.search(data, len(data) - 60)
    if last is None or last.start() < len(_LINE_START) or not data.startswith(_LINE_START):
        return None
    stream = last.group(1).decode()
    body = _JOINTS[stream].sub(b"", data[len(_LINE_START):last.start()])
    try:
        text = json.loads(b'"' + body + b'"')
        return [(stream, 0, text.encode("utf-8", "surrogateescape"), 0)]
    except ValueError:
        return None


#: Lines of the other stream a chunk may have for L{_few_switches} to cut
#: it there (a step in Python each).
MAX_SWITCHES = 64
_STREAM_MARKS = ((b'"stream":"stderr"', b'"stream":"stdout"'), (b'"stream":"stdout"', b'"stream":"stderr"'))


def _few_switches(data: bytes) -> list[Entry] | None:
    """
    L{_one_stream} of each run of a chunk of the shim's lines where lines
    of one stream are few among the other's (a program's warnings among
    its output): the chunk is cut around each of those lines, which only
    the stream in their frame tells apart (a quote in a text is escaped,
    so a frame's C{"stream":"..."} is never inside one). None when more
    than L{MAX_SWITCHES} such lines, or for a piece L{_one_stream} does
    not take.
    """
    for rare, common in _STREAM_MARKS:
        if not 0 < data.count(rare) <= MAX_SWITCHES or common not in data:
            continue
        pieces = []
        start = 0
        at = data.find(rare)
        while at >= 0:
            line_start = data.rfind(b"\n", start, at) + 1 or start
            line_end = data.find(b"\n", at)
            line_end = len(data) if line_end < 0 else line_end
            if line_start > start:
                pieces.append(data[start:line_start - 1])
            pieces.append(data[line_start:line_end])
            start = line_end + 1
            at = data.find(rare, start)
        if start < len(data):
            pieces.append(data[start:])
        runs: list[Entry] = []
        for piece in pieces:
            found = _one_stream(piece)
            if found is None:
                return None
            runs.extend(found)
        return merge_runs(runs)
    return None


def plain_runs(data: bytes) -> list[Entry]:
    """
    L{merge_runs} of L{parse_lines} for a plain ``logs``, without a step
    per line in Python: a chunk of one stream's lines as L{_one_stream}
    takes it (three times faster than parsing its JSON), or one with few
    lines of the other stream as L{_few_switches} does, else the whole
    chunk parsed at once, each run of one stream's lines joined as text
    and encoded once, no time parsed (a plain ``logs`` shows none). A
    chunk with anything but well-formed entries takes the general way,
    which skips the bad ones.
    """
    # (A chunk of both streams is not tried as one: that costs as much as
    # parsing it.)
    mixed = all(mark in data for mark in _STREAM_MARKS[0])
    runs = _few_switches(data) if mixed else _one_stream(data)
    if runs is not None:
        return runs
    try:
        docs = json.loads(b"[" + data.replace(b"\n", b",") + b"]")
        fields = list(map(_plain_fields, docs))
        return [(stream, 0, "".join(map(_text_of, run)).encode("utf-8", "surrogateescape"), 0)
                for stream, run in itertools.groupby(fields, _stream_of)]
    except (ValueError, KeyError, TypeError, AttributeError):
        return merge_runs(parse_lines(data))


# A regular expression without these is a plain substring.
_REGEX_SPECIAL = frozenset(".^$*+?{}[]\\|()")


class InvalidFilter(ValueError):
    """
    The filter's pattern is not a regular expression.
    """


@attrs.frozen
class LogFilter:
    """
    Lines that contain C{pattern} (a substring, or a regular expression
    with C{regex}), with C{before}/C{after} lines of context, as grep
    -B/-A.
    """

    pattern: str
    regex: bool = False
    ignore_case: bool = False
    before: int = 0
    after: int = 0

    def matcher(self) -> Callable[[bytes], bool]:
        """
        Whether a line's bytes match. A plain substring is looked for in the
        bytes themselves (no decoding: a search of a large log costs little
        more than reading it); the rest on the text.
        """
        flags = re.IGNORECASE if self.ignore_case else 0
        if not self.regex and not self.ignore_case:
            needle = self.pattern.encode()
            return lambda data: needle in data
        if not self.regex and self.pattern.isascii():
            search_bytes = re.compile(re.escape(self.pattern.encode()), flags).search
            return lambda data: search_bytes(data) is not None
        try:
            search = re.compile(self.pattern if self.regex else re.escape(self.pattern), flags).search
        except re.error as e:
            raise InvalidFilter(f"invalid log filter pattern {self.pattern!r}: {e}") from None
        return lambda data: search(data.decode("utf-8", "replace").rstrip("\n")) is not None

    def raw(self) -> re.Pattern[bytes] | None:
        """
        A search of the log file's own bytes that finds every line that may
        match, or None when there is none (a regular expression that is
        more than a plain substring, characters the JSON escapes). The shim
        writes each line as a JSON string of printable ASCII
        (ross.engine.runtime.logfile), where printable ASCII but C{"} and
        C{\\} stands for itself: a plain substring of those is in the line's
        JSON when it is in its text (and maybe elsewhere in the JSON: those
        candidates are parsed and checked).
        """
        if self.regex and any(c in _REGEX_SPECIAL for c in self.pattern):
            return None
        if not self.pattern or not all(" " <= c <= "~" and c not in '"\\' for c in self.pattern):
            return None
        return re.compile(re.escape(self.pattern.encode()), re.IGNORECASE if self.ignore_case else 0)


def _line_end(data: bytes, position: int) -> int:
    """
    Where the line at C{position} ends (its newline, or the end).
    """
    end = data.find(b"\n", position)
    return len(data) if end < 0 else end


class _Grep:
    """
    L{LogFilter} applied to a stream of entries, batch after batch (context
    carries across batches); used from one thread at a time.
    """

    def __init__(self, spec: LogFilter) -> None:
        self._match = spec.matcher()
        #: See L{LogFilter.raw}.
        self.raw = spec.raw()
        self._after = spec.after
        self._before: deque[Entry] = deque(maxlen=spec.before)
        self._after_left = 0
        # As grep, groups are told apart only when there is context.
        self._mark_gaps = bool(spec.before or spec.after)
        self._gap = False
        self._sent = False

    def _mark(self, entry: Entry, mark: int) -> Entry:
        if self._gap and self._sent and self._mark_gaps:
            mark |= GAP
        self._gap = False
        self._sent = True
        return (entry[0], entry[1], entry[2], mark)

    def skip(self) -> None:
        """
        Lines were left out here without being looked at (they cannot
        match): what was kept for context before a match goes.
        """
        self._gap = True
        self._before.clear()
        self._after_left = 0

    def search_raw(self, data: bytes) -> list[Entry]:
        """
        L{apply} to the complete JSON lines C{data}, parsing only the lines
        that may match and those around them (L{raw}): a search of a large
        log costs little more than reading it.
        """
        assert self.raw is not None
        before, after = self._before.maxlen or 0, self._after
        # Byte ranges (start, end) of whole lines to parse, in order.
        wanted: list[tuple[int, int]] = []
        end = -1
        for _ in range(self._after_left):
            # After-context of a match in the previous chunk.
            if end + 1 >= len(data):
                break
            start, end = end + 1, _line_end(data, end + 1)
            wanted.append((start, end))
        for m in self.raw.finditer(data):
            last = _line_end(data, m.start())
            for _ in range(after):
                if last >= len(data):
                    break
                last = _line_end(data, last + 1)
            if m.start() <= end:
                # In lines already wanted: its own context may go further.
                if last > end:
                    wanted[-1] = (wanted[-1][0], last)
                    end = last
                continue
            start = data.rfind(b"\n", 0, m.start()) + 1
            for _ in range(before):
                if start == 0:
                    break
                start = data.rfind(b"\n", 0, start - 1) + 1
            end = last
            wanted.append((start, end))
        if before:
            # The chunk's last lines, context for a match in the next one.
            start = len(data)
            for _ in range(before):
                if start == 0:
                    break
                start = data.rfind(b"\n", 0, start - 1) + 1
            wanted.append((start, len(data)))
        out: list[Entry] = []
        done = 0
        for start, end in wanted:
            start = max(start, done)
            if start >= end:
                continue
            if start > done:
                self.skip()
            out.extend(self.apply(parse_lines(data[start:end])))
            done = end + 1
        if done < len(data):
            self.skip()
        return out

    def apply(self, entries: list[Entry]) -> list[Entry]:
        out: list[Entry] = []
        before = self._before
        for entry in entries:
            if self._match(entry[2]):
                while before:
                    out.append(self._mark(before.popleft(), CONTEXT))
                out.append(self._mark(entry, MATCH))
                self._after_left = self._after
            elif self._after_left > 0:
                self._after_left -= 1
                out.append(self._mark(entry, CONTEXT))
            elif before.maxlen:
                if len(before) == before.maxlen:
                    self._gap = True
                before.append(entry)
            else:
                self._gap = True
        return out


@attrs.frozen
class LogQuery:
    stdout: bool = True
    stderr: bool = True
    since_ns: int | None = None
    until_ns: int | None = None
    tail: int | None = None
    follow: bool = False
    #: Only the lines that match, with context (after the fields above).
    filter: LogFilter | None = None
    #: Lines of one stream in a row come as one entry, their times
    #: dropped (a plain ``logs``: no timestamps, no filter).
    merged: bool = False

    @property
    def everything(self) -> bool:
        """
        Whether every line is wanted (both streams, any time).
        """
        return self.stdout and self.stderr and self.since_ns is None and self.until_ns is None

    def select(self, entries: list[Entry]) -> list[Entry]:
        """
        The entries this query wants.
        """
        if self.everything:
            return entries
        since = self.since_ns if self.since_ns is not None else -1
        until = self.until_ns if self.until_ns is not None else 1 << 63
        streams = {s for s, on in (("stdout", self.stdout), ("stderr", self.stderr)) if on}
        return [e for e in entries if e[0] in streams and since <= e[1] <= until]


#: The first block a tail reads back from the end of a log file; each next
#: one is twice as large, up to L{CHUNK}: ``--tail 10`` reads one small
#: block of a log of any size, a long tail few large ones.
TAIL_BLOCK = 64 * 1024


def _newlines_backwards(fd: int, size: int) -> Iterator[int]:
    """
    The offsets of the newlines of the open file C{fd} of C{size} bytes,
    the last one first, reading back from the end a block at a time.
    """
    block = TAIL_BLOCK
    end = size
    while end > 0:
        start = max(0, end - block)
        data = os.pread(fd, end - start, start)
        if len(data) < end - start:
            # Truncated under us (rotation with max-file 1): nothing older.
            return
        cursor = len(data)
        while (nl := data.rfind(b"\n", 0, cursor)) >= 0:
            yield start + nl
            cursor = nl
        end = start
        block = min(block * 2, CHUNK)


def _whole_entry(fd: int, start: int, end: int) -> bool:
    """
    Whether the bytes [start, end) of C{fd}, a last line without its
    newline, are a whole entry (rather than one the shim was writing, or
    died writing: the reader leaves those out).
    """
    data = os.pread(fd, end - start, start)
    return len(data) == end - start and bool(parse_lines(data))


def _tail_start(files: list[tuple[int, int]], count: int) -> tuple[int, int]:
    """
    (index into files, byte offset) where the last C{count} entries of the
    log begin, reading its files (open descriptors, and the size each is
    read up to) back from the end (L{_newlines_backwards}): a tail costs
    what it returns, whatever the size of the log.
    """
    if count <= 0:
        return len(files) - 1, files[-1][1]
    remaining = count
    for index in range(len(files) - 1, -1, -1):
        fd, size = files[index]
        # Where the line after the newline found last begins; the first
        # "line" is what follows the file's last newline: nothing, or a
        # line written in part.
        boundary = size
        last = True
        for nl in _newlines_backwards(fd, size):
            if not last or (nl + 1 < size and _whole_entry(fd, nl + 1, size)):
                remaining -= 1
                if remaining == 0:
                    return index, nl + 1
            boundary, last = nl + 1, False
        # The file's first line begins at its start.
        if boundary > 0 and (not last or _whole_entry(fd, 0, size)):
            remaining -= 1
            if remaining == 0:
                return index, 0
    return 0, 0


class _Cursor:
    """
    An open log file and where we are in it; used only from one thread at a
    time.
    """

    def __init__(self, path: str, offset: int) -> None:
        self.path = path
        self.file = open(path, "rb")
        self.file.seek(offset)
        self.inode = os.fstat(self.file.fileno()).st_ino
        self.partial = b""
        #: Where reading stops (the file's size when a read that does not
        #: follow began), or None: on to whatever is written.
        self.end: int | None = None

    def read(self) -> bytes:
        """
        The next complete JSON lines (without the last newline), b"" when
        there is none yet.
        """
        size = CHUNK if self.end is None else min(CHUNK, self.end - self.file.tell())
        data = self.file.read(size) if size > 0 else b""
        if not data:
            return b""
        data = self.partial + data
        cut = data.rfind(b"\n")
        if cut < 0:
            self.partial = data
            return b""
        self.partial = data[cut + 1:]
        return data[:cut]

    def replaced(self) -> bool:
        """
        The path now names another file (the log rotated).
        """
        try:
            return os.stat(self.path).st_ino != self.inode
        except FileNotFoundError:
            return True

    def close(self) -> None:
        self.file.close()


class LogStream:
    """
    One reader of one container's log.

    @param running: tells whether the container may still write.
    @param exited: a Deferred that fires when the container stops (only used
        when following).
    """

    def __init__(self, reactor: IEngineReactor, path: str, max_files: int, query: LogQuery,
                 running: Callable[[], bool], exited: Deferred[ExitStatus] | None, watcher: LogWatcher) -> None:
        self._reactor = reactor
        self._watcher = watcher
        self.path = path
        self.max_files = max_files
        self.query = query
        self._running = running
        self._exited = exited
        #: The log's files after the cursor's, open (see L{_open}).
        self._queued: list[_Cursor] = []
        self._grep = _Grep(query.filter) if query.filter is not None else None
        self._cursor: _Cursor | None = None
        self._wakeup: Deferred[None] | None = None
        self._unwatch_directory: Callable[[], None] | None = None
        self._stopped = False

    def _open(self) -> None:
        """
        Open the log's files, from the one the tail begins in. Held open,
        a rotation meanwhile changes nothing of what is read; not
        following, the current file is read up to its size now, however
        fast the container writes on (docker's tail is such a section too):
        a --tail N is N lines, and a read of a busy log ends.
        """
        opened: list[_Cursor] = []
        try:
            for path in log_files(self.path, self.max_files):
                try:
                    opened.append(_Cursor(path, 0))
                except FileNotFoundError:
                    # Rotated away since it was listed: older than the rest.
                    continue
        except BaseException:
            for cursor in opened:
                cursor.close()
            raise
        if not opened:
            return
        sizes = [os.fstat(c.file.fileno()).st_size for c in opened]
        if not self.query.follow:
            opened[-1].end = sizes[-1]
        index, offset = 0, 0
        if self.query.tail is not None and self.query.tail >= 0:
            index, offset = _tail_start([(c.file.fileno(), size) for c, size in zip(opened, sizes)],
                                        self.query.tail)
        for cursor in opened[:index]:
            cursor.close()
        self._cursor, self._queued = opened[index], opened[index + 1:]
        self._cursor.file.seek(offset)

    def _read(self, writing: bool) -> tuple[bytes, bool]:
        """
        The next complete JSON lines, and whether the reader is at the end
        of what is written so far. C{writing}: whether the container may
        still write (asked on the reactor thread, where its state lives).
        """
        if self._cursor is None:
            if self.query.follow and os.path.exists(self.path):
                self._cursor = _Cursor(self.path, 0)
            else:
                return b"", True
        data = self._cursor.read()
        if data:
            return data, False
        if self._cursor.partial and not writing:
            # The container is gone: its last line had no newline.
            tail, self._cursor.partial = self._cursor.partial, b""
            return tail, False
        if self._queued:
            self._cursor.close()
            self._cursor = self._queued.pop(0)
            return b"", False
        if self._cursor.end is not None:
            return b"", True
        if self._cursor.replaced() and os.path.exists(self.path):
            self._cursor.close()
            self._cursor = _Cursor(self.path, 0)
            return b"", False
        return b"", True

    def _next(self, writing: bool) -> tuple[list[Entry], bool]:
        """
        L{_read}, and the entries the query wants of what it read (a search
        runs here, in the thread, not on the reactor).
        """
        data, at_end = self._read(writing)
        if not data:
            return [], at_end
        if self._grep is None:
            if self.query.merged and self.query.everything:
                return plain_runs(data), at_end
            entries = self.query.select(parse_lines(data))
            return (merge_runs(entries) if self.query.merged else entries), at_end
        if self._grep.raw is not None and self.query.everything:
            return self._grep.search_raw(data), at_end
        return self._grep.apply(self.query.select(parse_lines(data))), at_end

    def _close(self) -> None:
        for cursor in [self._cursor, *self._queued]:
            if cursor is not None:
                cursor.close()
        self._cursor, self._queued = None, []

    def _step(self, writing: bool, opening: bool, last: bool) -> tuple[list[Entry], bool]:
        """
        One pass in a pool thread: L{_open} first when C{opening}, then
        L{_next}; on the C{last} pass, the files are closed once it is at
        the end. (A C{logs --tail} is then one trip to the pool, not five.)
        """
        if opening:
            self._open()
        entries, at_end = self._next(writing)
        if at_end and last:
            self._close()
        return entries, at_end

    async def run(self, deliver: Callable[[list[Entry]], Deferred[None]]) -> None:
        """
        Deliver batches of matching entries; returns at the end of the log,
        or, when following, once the container stopped and everything it
        wrote was delivered.
        """
        opening = True
        closed = False
        try:
            if self.query.follow and self._running():
                self._watch()
            while not self._stopped:
                writing = self._running()
                # Not following, or the container stopped (this pass reads
                # what it wrote just before its exit): the end is the end.
                last = not self.query.follow or not writing
                wanted, at_end = await in_pool(self._reactor, self._step, writing, opening, last)
                opening = False
                if wanted:
                    await deliver(wanted)
                if not at_end:
                    continue
                if last:
                    closed = True
                    return
                await self._wait()
        finally:
            self._unwatch()
            if not closed:
                await in_pool(self._reactor, self._close)

    def _watch(self) -> None:
        self._unwatch_directory = self._watcher.watch(os.path.dirname(self.path), self._wake)
        if self._exited is not None:
            self._exited.addBoth(self._wake_passing)

    def _unwatch(self) -> None:
        if self._unwatch_directory is not None:
            self._unwatch_directory()
            self._unwatch_directory = None

    def _wake(self) -> None:
        waiter, self._wakeup = self._wakeup, None
        if waiter is not None:
            waiter.callback(None)

    def _wake_passing(self, result: object) -> object:
        """
        Wake the reader when the container exits, passing C{result} on
        untouched.
        """
        self._wake()
        return result

    def _wait(self) -> Deferred[None]:
        self._wakeup = Deferred()
        # A safety net for events inotify cannot see (another mount).
        timer = self._reactor.callLater(1.0, self._wake)

        def disarm(result: Failure | None) -> Failure | None:
            if timer.active():
                timer.cancel()
            return result

        return self._wakeup.addBoth(disarm)

    def stop(self) -> None:
        self._stopped = True
        self._wake()


class LogWatcher:
    """
    One inotify instance for every follower of every container's log (the
    kernel allows a user only so many), watching each log directory while
    someone follows it.
    """

    def __init__(self, reactor: IReactorFDSet) -> None:
        self._reactor = reactor
        self._notifier: INotify | None = None
        self._callbacks: dict[str, list[Callable[[], None]]] = {}

    def watch(self, directory: str, callback: Callable[[], None]) -> Callable[[], None]:
        """
        Call C{callback} whenever something in C{directory} is written,
        created or renamed into it; returns the function that stops it.
        """
        from twisted.internet import inotify

        notifier = self._notifier
        if notifier is None:
            notifier = self._notifier = inotify.INotify(self._reactor)
            notifier.startReading()
        callbacks = self._callbacks.get(directory)
        if callbacks is None:
            callbacks = self._callbacks[directory] = []
            notifier.watch(
                FilePath(directory),
                mask=inotify.IN_MODIFY | inotify.IN_CREATE | inotify.IN_MOVED_TO | inotify.IN_CLOSE_WRITE,
                callbacks=[lambda ignored, path, mask: self._changed(directory)],
            )
        callbacks.append(callback)

        def unwatch() -> None:
            if callback in callbacks:
                callbacks.remove(callback)
            if not callbacks and self._callbacks.get(directory) is callbacks:
                del self._callbacks[directory]
                # The notifier that watches it: none is dropped while a
                # directory is watched.
                notifier.ignore(FilePath(directory))
            if not self._callbacks and self._notifier is not None:
                self._notifier.loseConnection()
                self._notifier = None

        return unwatch

    def _changed(self, directory: str) -> None:
        for callback in list(self._callbacks.get(directory, ())):
            callback()
