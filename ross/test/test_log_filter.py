"""
Searching a log (L{ross.engine.containers.logs.LogFilter}): which lines
match, the context around them, and where lines were left out.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.containers.logs import CONTEXT, GAP, MATCH, Entry, InvalidFilter, LogFilter, _Grep


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

    def test_invalid_regex(self) -> None:
        with self.assertRaises(InvalidFilter) as raised:
            LogFilter("(", regex=True).matcher()
        self.assertIn("invalid log filter pattern '('", str(raised.exception))
