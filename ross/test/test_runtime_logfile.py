"""
Tests for L{ross.engine.runtime.logfile} and L{ross.engine.runtime.logread}.
"""

from __future__ import annotations

import json
import os

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.runtime.logfile import MAX_LINE, CRILogWriter, LogWriter, timestamp
from ross.engine.runtime.logread import log_files, parse_entry, parse_time

T = 1_700_000_000_123_456_789


class LogWriterTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())

    def entries(self, path: str | None = None) -> list:  # type: ignore[type-arg]
        with open(path or self.path, "rb") as f:
            return [parse_entry(line) for line in f]

    def test_docker_format(self) -> None:
        """
        One JSON object per line with log, stream and an RFC 3339 time, as
        docker's json-file writes it.
        """
        w = LogWriter(self.path)
        w.write("stdout", b"a\nb\n", T)
        w.close()
        with open(self.path) as f:
            lines = [json.loads(line) for line in f]
        self.assertEqual(lines, [{"log": "a\n", "stream": "stdout", "time": "2023-11-14T22:13:20.123456789Z"},
                                 {"log": "b\n", "stream": "stdout", "time": "2023-11-14T22:13:20.123456789Z"}])
        self.assertEqual(parse_time(timestamp(T).decode()), T)

    def test_disk_full_drops_whole_lines(self) -> None:
        """
        Output that finds no room (ENOSPC, here after part of a chunk was
        written) is dropped whole and counted: the log keeps no torn line,
        and lines written once there is room again follow on.
        """
        import errno

        w = LogWriter(self.path)
        w.write("stdout", b"before\n", T)
        real_write = os.write
        calls = []

        def full_disk(fd: int, data: bytes | memoryview) -> int:
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "write", full_disk)
        w.write("stdout", b"lost one\nlost two\n", T)
        self.assertEqual(len(calls), 2)
        self.patch(os, "write", real_write)
        w.write("stdout", b"after\n", T)
        w.close()
        self.assertEqual([e.data for e in self.entries()], [b"before\n", b"after\n"])
        self.assertEqual(w.dropped, calls[0])

    def test_bytes_round_trip(self) -> None:
        """
        Escapes, control characters, UTF-8 and invalid UTF-8 come back as
        the same bytes; partial lines wait for their end.
        """
        data = b'q"\\\t\r\x01\xc3\xa9\xff\xfe\n' + bytes(range(256)) + b"\nend"
        w = LogWriter(self.path)
        w.write("stderr", data[:5], T)
        w.write("stderr", data[5:], T)
        w.close()
        got = self.entries()
        self.assertEqual(b"".join(e.data for e in got), data)
        self.assertEqual(got[-1].data, b"end")
        self.assertEqual({e.stream for e in got}, {"stderr"})

    def test_long_line_split(self) -> None:
        w = LogWriter(self.path)
        w.write("stdout", b"x" * (MAX_LINE * 2 + 10), T)
        self.assertEqual([len(e.data) for e in self.entries()], [MAX_LINE, MAX_LINE])
        w.close()
        self.assertEqual(len(self.entries()), 3)

    def test_rotation(self) -> None:
        """
        Files rotate at max-size, keep max-file files, whole lines only.
        """
        w = LogWriter(self.path, max_size=300, max_files=3)
        for i in range(50):
            w.write("stdout", b"line %d\n" % i, T)
        w.close()
        files = log_files(self.path, 3)
        self.assertEqual(files, [self.path + ".2", self.path + ".1", self.path])
        data = b"".join(e.data for f in files for e in self.entries(f))
        lines = data.decode().split()
        self.assertEqual(lines[-1], "49")
        for f in files:
            self.assertLessEqual(os.path.getsize(f), 300)
        self.assertEqual([int(x) for x in lines[1::2]], list(range(int(lines[1]), 50)))

    def test_single_file_truncates(self) -> None:
        w = LogWriter(self.path, max_size=200, max_files=1)
        for i in range(20):
            w.write("stdout", b"line %d\n" % i, T)
        w.close()
        self.assertLessEqual(os.path.getsize(self.path), 200)
        self.assertFalse(os.path.exists(self.path + ".1"))
        self.assertEqual(self.entries()[-1].data, b"line 19\n")


class CRILogWriterTests(SynchronousTestCase):
    """
    The CRI's log format (what kubelet reads): TIME STREAM TAG TEXT.
    """

    def setUp(self) -> None:
        self.path = os.path.abspath(self.mktemp())

    def lines(self, path: str | None = None) -> list[bytes]:
        with open(path or self.path, "rb") as f:
            return f.read().splitlines()

    def test_format(self) -> None:
        """
        A line per line of output with its time, stream and F; bytes as
        they came; a partial line waits for its end, across writes.
        """
        w = CRILogWriter(self.path)
        w.write("stdout", b"one\n\xff two\npart", T)
        w.write("stderr", b"err\n", T)
        w.write("stdout", b"ial\n", T)
        w.close()
        stamp = b"2023-11-14T22:13:20.123456789Z"
        self.assertEqual(self.lines(), [stamp + b" stdout F one", stamp + b" stdout F \xff two",
                                        stamp + b" stderr F err", stamp + b" stdout F partial"])

    def test_long_and_unfinished_lines(self) -> None:
        """
        A line longer than MAX_LINE is written in pieces tagged P, its last
        piece F; a line the stream ends without a newline is F at close; an
        empty line is an F line with no text.
        """
        w = CRILogWriter(self.path)
        w.write("stdout", b"x" * (MAX_LINE + 5) + b"\n\n", T)
        w.write("stdout", b"y" * (MAX_LINE + 1), T)
        w.write("stderr", b"tail", T)
        w.close()
        tags = [line.split(b" ", 3)[1:3] + [len(line.split(b" ", 3)[3])] for line in self.lines()]
        self.assertEqual(tags, [[b"stdout", b"P", MAX_LINE], [b"stdout", b"F", 5], [b"stdout", b"F", 0],
                                [b"stdout", b"P", MAX_LINE], [b"stdout", b"F", 1], [b"stderr", b"F", 4]])

    def test_reopen(self) -> None:
        """
        After the file is moved away, reopen writes to a new one at the
        path (kubelet's rotation).
        """
        w = CRILogWriter(self.path)
        w.write("stdout", b"before\n", T)
        os.rename(self.path, self.path + ".1")
        w.reopen()
        w.write("stdout", b"after\n", T)
        w.close()
        self.assertEqual([line.split(b" ", 3)[3] for line in self.lines(self.path + ".1")], [b"before"])
        self.assertEqual([line.split(b" ", 3)[3] for line in self.lines()], [b"after"])

    def test_disk_full_drops_whole_lines(self) -> None:
        """
        As the json log: output that finds no room is dropped whole and
        counted, no torn line kept, and lines written once there is room
        follow on (the shim reads the count when the container ends).
        """
        import errno

        w = CRILogWriter(self.path)
        w.write("stdout", b"before\n", T)
        real_write = os.write
        calls = []

        def full_disk(fd: int, data: bytes | memoryview) -> int:
            calls.append(len(data))
            if len(calls) == 1:
                return real_write(fd, bytes(data[:10]))
            raise OSError(errno.ENOSPC, "No space left on device")

        self.patch(os, "write", full_disk)
        w.write("stdout", b"lost one\nlost two\n", T)
        self.assertEqual(len(calls), 2)
        self.patch(os, "write", real_write)
        w.write("stdout", b"after\n", T)
        w.close()
        self.assertEqual([line.split(b" ", 3)[3] for line in self.lines()], [b"before", b"after"])
        self.assertEqual(w.dropped, calls[0])
