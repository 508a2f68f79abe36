"""
Searching a log (L{ross.engine.containers.logs.LogFilter}): which lines
match, the context around them, and where lines were left out.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

import random

from ross.engine.containers.logs import (
    CONTEXT,
    GAP,
    MATCH,
    Entry,
    InvalidFilter,
    LogFilter,
    MAX_SWITCHES,
    _Grep,
    _few_switches,
    _one_stream,
    merge_runs,
    parse_lines,
    plain_runs,
)
from ross.engine.runtime.logfile import LogWriter, _encode_lines


def entries(*lines: str) -> list[Entry]:
    return [("stdout", i, (line + "\n").encode(), 0) for i, line in enumerate(lines)]


def shown(found: list[Entry]) -> list[str]:
    """
    The lines found as grep -n would mark them: "=" a match, "-" context,
    with a "--" line where lines were left out.
    """
    out = []
    for _, _, data, mark in found:
        if mark & GAP:
            out.append("--")
        out.append(("=" if mark & MATCH else "-" if mark & CONTEXT else "?") + data.decode().rstrip("\n"))
    return out


class LogFilterTests(SynchronousTestCase):
    def test_substring_regex_and_case(self) -> None:
        log = entries("GET /a 200", "get /b 500", "POST /c 500", "Über", "a.c")
        self.assertEqual(shown(_Grep(LogFilter("500")).apply(log)), ["=get /b 500", "=POST /c 500"])
        self.assertEqual(shown(_Grep(LogFilter("get", ignore_case=True)).apply(log)),
                         ["=GET /a 200", "=get /b 500"])
        self.assertEqual(shown(_Grep(LogFilter(r"^[A-Z]+ /\w 5\d\d$", regex=True)).apply(log)), ["=POST /c 500"])
        self.assertEqual(shown(_Grep(LogFilter("über", ignore_case=True)).apply(log)), ["=Über"])
        self.assertEqual(shown(_Grep(LogFilter("a.c")).apply(log)), ["=a.c"])
        # Without context, no separators (as grep).
        self.assertEqual(shown(_Grep(LogFilter("b 500|Über", regex=True)).apply(log)), ["=get /b 500", "=Über"])

    def test_context_across_batches(self) -> None:
        """
        Context lines before and after each match, as grep -B/-A, also
        when the match and its context come in different batches; a gap is
        marked only where lines were left out.
        """
        grep = _Grep(LogFilter("hit", before=1, after=2))
        log = entries("a", "b", "hit1", "c", "d", "e", "f", "hit2", "g", "hit3", "h", "i", "j")
        found = grep.apply(log[:3]) + grep.apply(log[3:8]) + grep.apply(log[8:])
        self.assertEqual(shown(found), ["-b", "=hit1", "-c", "-d", "--", "-f", "=hit2", "-g", "=hit3", "-h", "-i"])

    def test_raw_search_finds_what_parsing_all_finds(self) -> None:
        """
        Searching the log file's bytes and parsing only the lines around
        candidates gives the same lines and marks as parsing every line,
        chunk after chunk, whatever the context, case, and escapes in the
        lines (quotes, tabs, non-ASCII, the pattern in the JSON's keys).
        """
        rng = random.Random(17)
        words = ["hay", "needle", "NEEDLE", "stdout", "time", "a\tb", 'say "hi"', "Ü", "log", "x" * 50]
        text = [" ".join(rng.choice(words) for _ in range(rng.randint(0, 4))) for _ in range(3000)]
        suffix = b'","stream":"stdout","time":"2026-01-01T00:00:00.000000001Z"}\n'
        data = _encode_lines("".join(line + "\n" for line in text).encode(), suffix).rstrip(b"\n")
        lines = data.split(b"\n")
        for pattern in ("needle", "stdout", "log", "time", "Z", "x" * 50):
            for ignore_case in (False, True):
                for before, after in ((0, 0), (1, 0), (0, 2), (3, 1)):
                    spec = LogFilter(pattern, ignore_case=ignore_case, before=before, after=after)
                    assert spec.raw() is not None
                    whole, raw = _Grep(spec), _Grep(spec)
                    cuts = sorted(rng.sample(range(1, len(lines)), 5))
                    chunks = [b"\n".join(lines[a:b]) for a, b in zip([0, *cuts], [*cuts, len(lines)])]
                    expected = [e for chunk in chunks for e in whole.apply(parse_lines(chunk))]
                    found = [e for chunk in chunks for e in raw.search_raw(chunk)]
                    self.assertEqual(found, expected, (pattern, ignore_case, before, after))
        self.assertIsNone(LogFilter('say "hi"').raw())
        self.assertIsNone(LogFilter("a.b", regex=True).raw())
        self.assertIsNotNone(LogFilter("needle 42", regex=True).raw())
        self.assertIsNone(LogFilter("Ü").raw())

    def test_invalid_regex(self) -> None:
        with self.assertRaises(InvalidFilter) as raised:
            LogFilter("(", regex=True).matcher()
        self.assertIn("invalid log filter pattern '('", str(raised.exception))


class PlainRunsTests(SynchronousTestCase):
    """
    L{plain_runs}, a plain ``logs``'s fast way, gives what the general
    way (L{merge_runs} of L{parse_lines}) gives, for the shim's own lines
    and for chunks it would not write.
    """

    def test_as_the_general_way(self) -> None:
        rng = random.Random(5)
        words = ["hay", 'say "hi"', "a\tb", "Ü", "\\", "x" * 300]
        lines = []
        for i in range(2000):
            stream = "stderr" if rng.random() < 0.2 else "stdout"
            suffix = b'","stream":"%s","time":"2026-01-01T00:00:00.%09dZ"}\n' % (stream.encode(), i)
            text = (" ".join(rng.choice(words) for _ in range(rng.randint(0, 3))) + "\n").encode()
            if rng.random() < 0.05:
                text = b"\xff\xfe bytes that are not UTF-8\n"
            lines.append(_encode_lines(text, suffix).rstrip(b"\n"))
        data = b"\n".join(lines)
        self.assertEqual(plain_runs(data), merge_runs(parse_lines(data)))
        self.assertGreater(len(plain_runs(data)), 100)
        # Lines the shim would not write: the general way skips them.
        for bad in (b'{"log":"x\\n"}', b"not json", b'["a list"]', b'{"log":1,"stream":"stdout","time":"z"}'):
            broken = data + b"\n" + bad
            self.assertEqual(plain_runs(broken), merge_runs(parse_lines(broken)), bad)

    def written(self, stream: str, chunks: list[bytes]) -> bytes:
        """
        What the shim's L{LogWriter} writes for C{chunks} of one stream,
        without its last newline (as the reader hands chunks over).
        """
        path = self.mktemp()
        writer = LogWriter(path)
        for i, chunk in enumerate(chunks):
            writer.write(stream, chunk, now_ns=1_790_000_000_000_000_000 + i)
        writer.close()
        with open(path, "rb") as f:
            return f.read().rstrip(b"\n")

    def test_one_stream(self) -> None:
        """
        A chunk of one stream's lines, any bytes in them, takes the way
        without a parse per line, and gives what the general way gives.
        """
        chunks = [b"plain\n" * 50, b'say "hi"\tand \\n\n', "\u00dc \U0001f600\n".encode(),
                  b"\xff\xfe not UTF-8\n", b"\x1b[31mred\x1b[0m\n", b"\n", b"x" * 20000 + b"\n", b"no newline"]
        for stream in ("stdout", "stderr"):
            data = self.written(stream, chunks)
            self.assertEqual(_one_stream(data), [(stream, 0, b"".join(chunks), 0)])
            self.assertEqual(plain_runs(data), merge_runs(parse_lines(data)))

    def test_not_one_stream(self) -> None:
        """
        Any other chunk is left to the general way: both streams, a torn
        line, a time of another length, a line not of the shim.
        """
        lines = self.written("stdout", [b"one\ntwo\n"]).split(b"\n")
        other = self.written("stderr", [b"three\n"])
        for bad in (lines[0] + b"\n" + other,
                    other + b"\n" + lines[0],
                    lines[0][:20] + b"\n" + lines[1],
                    lines[0][:20] + lines[1],
                    lines[0].replace(b"Z", b"1Z") + b"\n" + lines[1],
                    lines[0] + b'\n{"log":"x","stream":"stdout"}\n' + lines[1],
                    b'{"log":","stream":"stdout","time":"2026-01-01T00:00:00.000000000Z"}'):
            self.assertIsNone(_one_stream(bad), bad)
            self.assertEqual(plain_runs(bad), merge_runs(parse_lines(bad)), bad)

    def test_few_switches(self) -> None:
        """
        A chunk with a few lines of the other stream (first, last, in a
        row, alone) is cut around them; one with many takes the general
        way. Both give what the general way gives.
        """
        out = [line for line in self.written("stdout", [b"out %d\n" % i for i in range(50)]).split(b"\n")]
        err = [line for line in self.written("stderr", [b'err "%d"\n' % i for i in range(5)]).split(b"\n")]
        data = b"\n".join([err[0], *out[:10], err[1], err[2], *out[10:40], err[3], *out[40:], err[4]])
        runs = _few_switches(data)
        self.assertEqual([stream for stream, _, _, _ in runs or []],
                         ["stderr", "stdout", "stderr", "stdout", "stderr", "stdout", "stderr"])
        self.assertEqual(plain_runs(data), merge_runs(parse_lines(data)))
        many = self.written("stdout", [b"x\n"] * (MAX_SWITCHES + 1)).split(b"\n")
        other = self.written("stderr", [b"y\n"] * (MAX_SWITCHES + 1)).split(b"\n")
        mixed = b"\n".join(line for pair in zip(many, other) for line in pair)
        self.assertIsNone(_few_switches(mixed))
        self.assertEqual(plain_runs(mixed), merge_runs(parse_lines(mixed)))
        broken = data.replace(out[20], out[20][:30])
        self.assertIsNone(_few_switches(broken))
        self.assertEqual(plain_runs(broken), merge_runs(parse_lines(broken)))
