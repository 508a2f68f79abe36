# -*- test-case-name: ross.test.test_tui -*-
"""
Terminal emulation behind one small interface, L{Emulator}: bytes in,
styled rows out, plus the few things a pane must know about the program
(modes it asked for, its title, where the cursor is).

Two backends:

  - L{AvtEmulator} on PyPI's C{pyavt} (asciinema's AVT, in Rust): the
    default. Measured here on 7.7 MB of coloured output fed in 16 kB
    chunks: AVT 40-74 MB/s, libghostty through C{pyghostty} 13-27 MB/s,
    pyte 1.2 MB/s (2 loaded cores; bench/tui.py has the end-to-end
    figures). AVT keeps no modes, titles or answers, so a small scanner
    over the same bytes (L{_Sideband}) follows them.
  - L{PyteEmulator} on pyte, the fallback when pyavt cannot be imported
    (or C{ROSS_TUI_VT=pyte}).

An emulator is not thread-safe: L{ross.tui.terminal.Terminal} feeds it in
the session's thread and reads it on the event loop under one lock.
"""

from __future__ import annotations

import codecs
import os
import re
from functools import lru_cache
from typing import Any, Callable, Protocol

from rich.color import Color
from rich.segment import Segment
from rich.style import Style

#: Lines kept above the screen.
SCROLLBACK = 5000

# Mouse tracking modes a program can ask for (DEC private modes), from the
# least to the most it wants reported.
MOUSE_X10 = 9
MOUSE_BUTTONS = 1000
MOUSE_DRAG = 1002
MOUSE_MOTION = 1003
_MOUSE_MODES = (MOUSE_X10, MOUSE_BUTTONS, MOUSE_DRAG, MOUSE_MOTION)
MOUSE_SGR = 1006
BRACKETED_PASTE = 2004
_ALTERNATE = (47, 1047, 1049)
APPLICATION_CURSOR = 1

Row = list[Segment]


class Emulator(Protocol):
    """
    One terminal's state. Rows are numbered from the top of the screen;
    negative rows are scrollback (-1 is the line just above the screen).
    """

    rows: int
    cols: int

    @property
    def title(self) -> str:
        """The program's title (OSC 0/2), "" until it sets one."""

    def feed(self, data: bytes) -> None:
        """Output of the program."""

    def resize(self, rows: int, cols: int) -> None: ...

    def take_dirty(self) -> set[int] | None:
        """Screen rows changed since the last call; None: all of them."""

    def take_scrolled(self) -> int:
        """Lines that went into the scrollback since the last call."""

    def history(self) -> int:
        """How many scrollback lines there are (none on the alternate screen)."""

    def row(self, y: int) -> Row:
        """Row C{y} as styled segments, one cell per column (wide characters take two)."""

    def text(self, y: int) -> str:
        """Row C{y} as text (a wide character once)."""

    def cursor(self) -> tuple[int, int, bool]:
        """(row, column, visible)."""

    def mode(self, mode: int) -> bool:
        """Whether the program set DEC private mode C{mode} (1, 1000, 1006, 2004...)."""

    def mouse_tracking(self) -> int:
        """The mouse mode the program asked for (L{MOUSE_BUTTONS}...), 0 for none."""

    def alternate(self) -> bool:
        """Whether the alternate screen (full-screen programs) is shown."""


@lru_cache(maxsize=512)
def indexed(n: int) -> Color:
    return Color.from_ansi(n)


@lru_cache(maxsize=8192)
def _style(fg: Color | None, bg: Color | None, bold: bool, italic: bool, underline: bool, strike: bool,
           reverse: bool, dim: bool) -> Style:
    return Style(color=fg, bgcolor=bg, bold=bold or None, italic=italic or None, underline=underline or None,
                 strike=strike or None, reverse=reverse or None, dim=dim or None)


# The sequences AVT does not keep track of: private modes set and reset,
# titles, the queries a terminal answers, and a full reset.
_SIDEBAND = re.compile(
    rb"\x1b\[\?([0-9;]*)([hl])"
    rb"|\x1b\][02];([^\x07\x1b]*)(?:\x07|\x1b\\)"
    rb"|\x1b\[([56])n"
    rb"|\x1b\[(>?)0?c"
    rb"|\x1bc"
)
# An escape sequence may be cut by a chunk boundary; this much of a tail
# is kept to be scanned with the next chunk (a title is the longest).
_CARRY = 512


class _Sideband:
    """
    Follows modes, title and queries in a byte stream, for a backend that
    does not. C{answer} gets the terminal's answers to queries.
    """

    def __init__(self, answer: Callable[[bytes], None]) -> None:
        self.answer = answer
        self.modes: set[int] = set()
        self.title = ""
        self._carry = b""

    def scan(self, data: bytes, feed: Callable[[bytes], None], cursor: Callable[[], tuple[int, int]]) -> None:
        """
        Feed C{data} to the emulator, split after each query so that the
        answer (a cursor position) is the one at the query.
        """
        buffer = self._carry + data
        skip = len(self._carry)
        fed = 0
        for m in _SIDEBAND.finditer(buffer):
            if m.end() <= skip:
                continue
            params, flag, title, status, secondary = m.groups()
            if flag is not None:
                for p in params.split(b";"):
                    if p.isdigit():
                        (self.modes.add if flag == b"h" else self.modes.discard)(int(p))
            elif title is not None:
                self.title = title.decode("utf-8", "replace")
            elif status is not None or secondary is not None:
                end = m.end() - skip
                feed(data[fed:end])
                fed = end
                if status == b"6":
                    row, col = cursor()
                    self.answer(b"\x1b[%d;%dR" % (row + 1, col + 1))
                elif status == b"5":
                    self.answer(b"\x1b[0n")
                elif secondary:
                    self.answer(b"\x1b[>0;276;0c")
                else:
                    self.answer(b"\x1b[?62;22c")
            else:
                self.modes.clear()
                self.title = ""
        if fed < len(data):
            feed(data[fed:])
        tail = buffer.rfind(b"\x1b", max(0, len(buffer) - _CARRY))
        self._carry = buffer[tail:] if tail >= 0 and not _SIDEBAND.match(buffer, tail) else b""


class AvtEmulator:
    def __init__(self, rows: int, cols: int, answer: Callable[[bytes], None]) -> None:
        from avt._avt import Color as AvtColor, Vt

        self._rgb = AvtColor.RGB
        self.rows, self.cols = rows, cols
        self._vt = Vt(cols, rows, scrollback_limit=SCROLLBACK)
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._sideband = _Sideband(answer)
        self._dirty: set[int] | None = set()
        self._evicted = 0
        self._counted = 0
        self._lines: list[Any] | None = None

    @property
    def title(self) -> str:
        return self._sideband.title

    def feed(self, data: bytes) -> None:
        self._sideband.scan(data, self._feed, lambda: self.cursor()[:2])

    def _feed(self, data: bytes) -> None:
        changed, evicted = self._vt.feed_str(self._decoder.decode(data))
        if self._dirty is not None:
            self._dirty.update(changed)
        self._evicted += len(evicted)
        self._lines = None

    def resize(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self._vt.resize(cols, rows)
        self._dirty = None
        self._lines = None

    def take_dirty(self) -> set[int] | None:
        dirty, self._dirty = self._dirty, set()
        return dirty

    def take_scrolled(self) -> int:
        # AVT tells the lines it dropped off the scrollback's far end, not
        # those it took in: the count is worked out from the scrollback's
        # length, which costs a copy of it (a few ms), so only a view
        # scrolled back asks.
        history = self.history()
        scrolled = history - self._counted + self._evicted
        self._counted, self._evicted = history, 0
        return max(0, scrolled)

    def _all_lines(self) -> list[Any]:
        if self._lines is None:
            self._lines = self._vt.lines()
        return self._lines

    def history(self) -> int:
        return 0 if self.alternate() else len(self._all_lines()) - self.rows

    def _line(self, y: int) -> Any:
        if y >= 0:
            return self._vt[y]
        lines = self._all_lines()
        return lines[len(lines) - self.rows + y]

    def row(self, y: int) -> Row:
        segments: Row = []
        pen: Any = None
        style: Style | None = None
        text: list[str] = []
        for cell in self._line(y).cells:
            width = cell.width
            if width == 0:
                continue
            p = cell.pen
            if pen is None or p != pen:
                if text:
                    segments.append(Segment("".join(text), style))
                    text = []
                pen = p
                style = _style(self._color(p.foreground), self._color(p.background), p.bold, p.italic,
                               p.underline, p.strikethrough, p.inverse, p.faint)
            text.append(cell.char)
        if text:
            segments.append(Segment("".join(text), style))
        return segments

    def _color(self, color: Any) -> Color | None:
        if color is None:
            return None
        if isinstance(color, self._rgb):
            return Color.from_rgb(color[0], color[1], color[2])
        return indexed(color[0])

    def text(self, y: int) -> str:
        return "".join(cell.char for cell in self._line(y).cells if cell.width).rstrip()

    def cursor(self) -> tuple[int, int, bool]:
        c = self._vt.cursor
        return c.row, c.col, c.visible

    def mode(self, mode: int) -> bool:
        if mode == APPLICATION_CURSOR:
            return bool(self._vt.cursor_key_app_mode)
        return mode in self._sideband.modes

    def mouse_tracking(self) -> int:
        return max((m for m in _MOUSE_MODES if m in self._sideband.modes), default=0)

    def alternate(self) -> bool:
        return any(m in self._sideband.modes for m in _ALTERNATE)


# pyte's names for the 16 colours.
_PYTE_NAMES = {"brown": "yellow"}


@lru_cache(maxsize=1024)
def _pyte_color(name: str) -> Color | None:
    if name == "default":
        return None
    if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
        return Color.parse("#" + name)
    bright = name.startswith("bright")
    base = name[6:] if bright else name
    try:
        return Color.parse(("bright_" if bright else "") + _PYTE_NAMES.get(base, base))
    except Exception:
        return None


class PyteEmulator:
    """
    The fallback, on pyte's HistoryScreen (pure Python: about 1 MB/s).
    """

    def __init__(self, rows: int, cols: int, answer: Callable[[bytes], None]) -> None:
        import pyte

        emulator = self

        class Screen(pyte.HistoryScreen):
            # A real terminal answers the program's queries.
            def write_process_input(self, data: str) -> None:
                answer(data.encode())

            def set_title(self, param: str) -> None:
                super().set_title(param)
                emulator.title = param

            def index(self) -> None:
                bottom = self.margins.bottom if self.margins else self.lines - 1
                if self.cursor.y == bottom:
                    emulator._scrolled += 1
                super().index()

        self._pyte = pyte
        self.rows, self.cols = rows, cols
        self.title = ""
        self._scrolled = 0
        self._all_dirty = False
        self._screen = Screen(cols, rows, history=SCROLLBACK, ratio=0.5)
        self._stream = pyte.ByteStream(self._screen)
        self._modes: set[int] = set()

    def feed(self, data: bytes) -> None:
        # pyte keeps DEC private modes shifted by 5 among its own; mouse and
        # paste modes it ignores, so they are followed here.
        for m in _SIDEBAND.finditer(data):
            params, flag = m.group(1), m.group(2)
            if flag is not None:
                for p in params.split(b";"):
                    if p.isdigit():
                        (self._modes.add if flag == b"h" else self._modes.discard)(int(p))
        self._stream.feed(data)

    def resize(self, rows: int, cols: int) -> None:
        self.rows, self.cols = rows, cols
        self._screen.resize(rows, cols)
        self._all_dirty = True

    def take_dirty(self) -> set[int] | None:
        dirty = None if self._all_dirty else set(self._screen.dirty)
        self._screen.dirty.clear()
        self._all_dirty = False
        return dirty

    def take_scrolled(self) -> int:
        scrolled, self._scrolled = self._scrolled, 0
        return min(scrolled, self.history())

    def history(self) -> int:
        return 0 if self.alternate() else len(self._screen.history.top)

    def _chars(self, y: int) -> Any:
        if y >= 0:
            return self._screen.buffer[y]
        top = self._screen.history.top
        return top[len(top) + y]

    def row(self, y: int) -> Row:
        chars = self._chars(y)
        segments: Row = []
        text: list[str] = []
        current: Style | None = None
        for x in range(self.cols):
            char = chars[x]
            if not char.data:
                continue
            style = _style(_pyte_color(char.fg), _pyte_color(char.bg), char.bold, char.italics, char.underscore,
                           char.strikethrough, char.reverse, False)
            if style is not current and text:
                segments.append(Segment("".join(text), current))
                text = []
            current = style
            text.append(char.data)
        if text:
            segments.append(Segment("".join(text), current))
        return segments

    def text(self, y: int) -> str:
        chars = self._chars(y)
        return "".join(chars[x].data for x in range(self.cols)).rstrip()

    def cursor(self) -> tuple[int, int, bool]:
        c = self._screen.cursor
        return c.y, c.x, not c.hidden

    def mode(self, mode: int) -> bool:
        if mode == APPLICATION_CURSOR:
            return (mode << 5) in self._screen.mode
        return mode in self._modes

    def mouse_tracking(self) -> int:
        return max((m for m in _MOUSE_MODES if m in self._modes), default=0)

    def alternate(self) -> bool:
        return any(m in self._modes for m in _ALTERNATE)


def backend_name() -> str:
    """
    "avt" when pyavt imports (and C{ROSS_TUI_VT} does not say "pyte"),
    else "pyte".
    """
    if os.environ.get("ROSS_TUI_VT", "") == "pyte":
        return "pyte"
    try:
        import avt  # noqa: F401
    except ImportError:
        return "pyte"
    return "avt"


def make_emulator(rows: int, cols: int, answer: Callable[[bytes], None], backend: str | None = None) -> Emulator:
    name = backend or backend_name()
    if name == "avt":
        return AvtEmulator(rows, cols, answer)
    return PyteEmulator(rows, cols, answer)
