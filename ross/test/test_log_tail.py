"""
``logs --tail N`` (L{ross.engine.containers.logs.LogStream} with a tail):
the last N entries of a log as the shim writes it, across rotated files,
with a last line written in part, and without reading a large log.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, succeed
from twisted.trial.unittest import TestCase

from ross.engine.containers.logs import Entry, LogQuery, LogStream, LogWatcher
from ross.engine.reactors import engine_reactor
from ross.engine.runtime.logfile import LogWriter

NOW = 1_700_000_000_000_000_000


def read_io() -> int:
    """
    The bytes this process has read so far (every thread's, the
    threadpool's included).
    """
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


class LogTailTests(TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.dir.mkdir()
        self.path = str(self.dir / "c-json.log")

    def write(self, lines: list[str], max_size: int = 0, max_files: int = 1) -> None:
        writer = LogWriter(self.path, max_size, max_files)
        for i, line in enumerate(lines):
            writer.write("stdout" if i % 2 == 0 else "stderr", line.encode() + b"\n", NOW + i)
        writer.close()

    async def entries(self, query: LogQuery, max_files: int = 1, running: bool = False) -> list[Entry]:
        """
        The entries a read of the log with C{query} delivers, of a
        container that is C{running} or not.
        """
        got: list[Entry] = []

        def deliver(entries: list[Entry]) -> Deferred[None]:
            got.extend(entries)
            return succeed(None)

        stream = LogStream(engine_reactor(reactor), self.path, max_files, query, lambda: running, None,
                           LogWatcher(reactor))
        await stream.run(deliver)
        return got

    async def tail(self, count: int | None, max_files: int = 1, running: bool = False) -> list[str]:
        """
        The lines C{logs --tail count} gives, of a container that is
        C{running} or not.
        """
        got = await self.entries(LogQuery(tail=count), max_files, running)
        return [data.decode() for _, _, data, _ in got]

    async def test_merged(self) -> None:
        """
        With C{merged}, lines of one stream in a row come as one entry
        (what a plain ``logs`` shows), in order, streams kept apart, and
        the streams not asked for left out.
        """
        writer = LogWriter(self.path)
        for i, (stream, text) in enumerate([("stdout", b"a\n"), ("stdout", b"b\n"), ("stderr", b"c\n"),
                                            ("stderr", b"d\n"), ("stdout", b"e\n")]):
            writer.write(stream, text, NOW + i)
        writer.close()
        self.assertEqual(await self.entries(LogQuery(merged=True)),
                         [("stdout", 0, b"a\nb\n", 0), ("stderr", 0, b"c\nd\n", 0), ("stdout", 0, b"e\n", 0)])
        self.assertEqual(await self.entries(LogQuery(merged=True, stderr=False)), [("stdout", 0, b"a\nb\ne\n", 0)])
        self.assertEqual(await self.entries(LogQuery(merged=True, tail=1)), [("stdout", 0, b"e\n", 0)])
        self.assertEqual([e[2] for e in await self.entries(LogQuery())], [b"a\n", b"b\n", b"c\n", b"d\n", b"e\n"])

    async def test_tail(self) -> None:
        """
        The last N lines, in order, with their streams; all of them when
        the log has fewer; none for 0.
        """
        lines = [f"line {i}" for i in range(1000)]
        self.write(lines)
        self.assertEqual(await self.tail(3), ["line 997\n", "line 998\n", "line 999\n"])
        self.assertEqual(await self.tail(1000), [line + "\n" for line in lines])
        self.assertEqual(await self.tail(5000), [line + "\n" for line in lines])
        self.assertEqual(await self.tail(0), [])
        self.assertEqual(await self.tail(None), [line + "\n" for line in lines])

    async def test_written_on_while_read(self) -> None:
        """
        A read that does not follow gives the log as it was when the read
        began: what the container writes meanwhile (here, while the first
        lines are delivered) is not in it, so a tail of N is N lines.
        """
        self.write([f"line {i}" for i in range(10)])

        async def read(query: LogQuery) -> list[str]:
            got: list[str] = []

            def deliver(entries: list[Entry]) -> Deferred[None]:
                if not got:
                    writer = LogWriter(self.path)
                    for i in range(5):
                        writer.write("stdout", f"later {i}\n".encode(), NOW + 100 + i)
                    writer.close()
                got.extend(data.decode() for _, _, data, _ in entries)
                return succeed(None)

            stream = LogStream(engine_reactor(reactor), self.path, 1, query, lambda: True, None,
                               LogWatcher(reactor))
            await stream.run(deliver)
            return got

        self.assertEqual(await read(LogQuery(tail=3)), ["line 7\n", "line 8\n", "line 9\n"])
        self.assertEqual(len(await read(LogQuery())), 15)
        self.assertEqual(len(await read(LogQuery(tail=100))), 20)

    async def test_empty_log(self) -> None:
        self.write([])
        self.assertEqual(await self.tail(10), [])
        self.assertEqual(await self.tail(0), [])

    async def test_long_lines_across_blocks(self) -> None:
        """
        Lines longer than the blocks read back from the end count as one.
        """
        lines = ["a" * 100_000, "b" * 3, "c" * 70_000]
        self.write(lines)
        self.assertEqual(await self.tail(1), ["c" * 70_000 + "\n"])
        self.assertEqual(await self.tail(2), ["bbb\n", "c" * 70_000 + "\n"])
        self.assertEqual("".join(await self.tail(100)), "".join(line + "\n" for line in lines))

    async def test_partial_last_line(self) -> None:
        """
        A last line the shim was writing (or died writing) is not an entry:
        the tail is the N whole entries before it. A last entry that only
        lacks its newline is one.
        """
        self.write([f"line {i}" for i in range(10)])
        with open(self.path, "rb") as f:
            whole = f.read()
        last = whole.rstrip(b"\n").rsplit(b"\n", 1)[1]
        with open(self.path, "ab") as f:
            f.write(last[:len(last) // 2])
        self.assertEqual(await self.tail(2), ["line 8\n", "line 9\n"])
        self.assertEqual(len(await self.tail(100)), 10)
        with open(self.path, "wb") as f:
            f.write(whole[:-1])
        self.assertEqual(await self.tail(2), ["line 8\n", "line 9\n"])
        # Only a line in part: nothing.
        with open(self.path, "wb") as f:
            f.write(last[:10])
        self.assertEqual(await self.tail(2), [])

    async def test_rotated(self) -> None:
        """
        A tail longer than the current file goes on in the rotated ones,
        newest first, and gives the lines in order.
        """
        lines = [f"line {i:04}" for i in range(400)]
        self.write(lines, max_size=4096, max_files=5)
        files = sorted(os.listdir(self.dir))
        self.assertEqual(files, ["c-json.log", "c-json.log.1", "c-json.log.2", "c-json.log.3", "c-json.log.4"])
        kept = sum(open(self.dir / name, "rb").read().count(b"\n") for name in files)
        with open(self.path, "rb") as f:
            current = f.read().count(b"\n")
        self.assertEqual(await self.tail(current), [line + "\n" for line in lines[-current:]])
        # A log read as one of max-file 1 has only its current file.
        self.assertEqual(await self.tail(current + 1), [line + "\n" for line in lines[-current:]])
        self.assertEqual(await self.tail(current + 1, max_files=5), [line + "\n" for line in lines[-current - 1:]])
        self.assertEqual(await self.tail(current + 60, max_files=5), [line + "\n" for line in lines[-current - 60:]])
        self.assertEqual(await self.tail(10_000, max_files=5), [line + "\n" for line in lines[-kept:]])
        self.assertEqual(await self.tail(0, max_files=5), [])

    async def test_large_log(self) -> None:
        """
        The tail of a 1 GiB log (a sparse one, read as fast as memory) reads
        a block or two of it, not the log.
        """
        with open(self.path, "wb") as f:
            f.truncate(1 << 30)
        self.write([f"line {i}" for i in range(100)])
        before = read_io()
        self.assertEqual(await self.tail(10), [f"line {i}\n" for i in range(90, 100)])
        self.assertLess(read_io() - before, 1 << 20)
