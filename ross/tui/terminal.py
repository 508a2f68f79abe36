# -*- test-case-name: ross.test.test_tui -*-
"""
A terminal in a widget: a pyte screen fed with a container's output,
drawn cell by cell with its colours and cursor, and Textual's key events
turned back into the bytes an xterm sends.

The widget knows nothing of gRPC: it calls C{send(bytes)} and
C{resize(rows, cols)} on whatever carries the session, and is fed with
L{Terminal.feed}.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

import pyte
from rich.color import Color, ColorParseError
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Size
from textual.strip import Strip
from textual.widget import Widget

# DEC private mode 1 (DECCKM), as pyte stores private modes.
_DECCKM = 1 << 5

_CURSOR_KEYS = {"up": "A", "down": "B", "right": "C", "left": "D", "home": "H", "end": "F"}

# What an xterm sends for the keys that are not characters.
KEYS: dict[str, bytes] = {
    "enter": b"\r",
    "tab": b"\t",
    "shift+tab": b"\x1b[Z",
    "backspace": b"\x7f",
    "ctrl+h": b"\x08",
    "escape": b"\x1b",
    "insert": b"\x1b[2~",
    "delete": b"\x1b[3~",
    "pageup": b"\x1b[5~",
    "pagedown": b"\x1b[6~",
    "f1": b"\x1bOP",
    "f2": b"\x1bOQ",
    "f3": b"\x1bOR",
    "f4": b"\x1bOS",
    "f5": b"\x1b[15~",
    "f6": b"\x1b[17~",
    "f7": b"\x1b[18~",
    "f8": b"\x1b[19~",
    "f9": b"\x1b[20~",
    "f10": b"\x1b[21~",
    "f11": b"\x1b[23~",
    "f12": b"\x1b[24~",
    "ctrl+space": b"\x00",
    "ctrl+at": b"\x00",
    "ctrl+left_square_bracket": b"\x1b",
    "ctrl+backslash": b"\x1c",
    "ctrl+circumflex_accent": b"\x1e",
    "ctrl+underscore": b"\x1f",
}


def key_bytes(key: str, character: str | None, application_cursor: bool = False) -> bytes | None:
    """
    The bytes an xterm sends for a Textual key, or None for keys a terminal
    does not send (e.g. a bare modifier).

    @param application_cursor: the program asked for application cursor
        keys (DECCKM, as C{vi} and C{top} do): arrows send C{ESC O x}.
    """
    if key in _CURSOR_KEYS:
        return (b"\x1bO" if application_cursor else b"\x1b[") + _CURSOR_KEYS[key].encode()
    if key in KEYS:
        return KEYS[key]
    modifiers, _, name = key.rpartition("+")
    if modifiers == "ctrl" and len(name) == 1 and name.isalpha():
        return bytes([ord(name.lower()) & 0x1F])
    if modifiers == "alt" and character:
        return b"\x1b" + character.encode()
    if character and character.isprintable():
        return character.encode()
    return None


@lru_cache(maxsize=1024)
def _color(name: str) -> Color | None:
    """
    A rich colour for a pyte colour: a name ("red", "brightbrown"), six hex
    digits (256 and true colours), or "default" (None: the pane's own).
    """
    if name == "default":
        return None
    if len(name) == 6 and all(c in "0123456789abcdefABCDEF" for c in name):
        return Color.parse("#" + name)
    bright = name.startswith("bright")
    base = name[6:] if bright else name
    base = {"brown": "yellow"}.get(base, base)
    try:
        return Color.parse(("bright_" if bright else "") + base)
    except ColorParseError:
        return None


@lru_cache(maxsize=4096)
def _style(fg: str, bg: str, bold: bool, italics: bool, underscore: bool, strikethrough: bool,
           reverse: bool, cursor: bool) -> Style:
    return Style(color=_color(fg), bgcolor=_color(bg), bold=bold or None, italic=italics or None,
                 underline=underscore or None, strike=strikethrough or None,
                 reverse=(reverse != cursor) or None)


class _Screen(pyte.Screen):
    """
    A pyte screen that answers the terminal's queries (cursor position,
    device attributes) to the program, as a real terminal does.
    """

    def __init__(self, columns: int, lines: int, answer: Callable[[bytes], None]) -> None:
        super().__init__(columns, lines)
        self._answer = answer

    def write_process_input(self, data: str) -> None:
        self._answer(data.encode())


class Terminal(Widget, can_focus=True):
    """
    A VT100/xterm screen of the pane's size.

    @param send: called with the bytes of every key typed (and the
        terminal's answers to the program's queries).
    @param resize: called with (rows, cols) whenever the pane's size
        changes, the first time once it is laid out.
    @param newline_is_crlf: for output without a terminal behind it (a
        container without -t), whose lines end with a bare LF.
    """

    DEFAULT_CSS = """
    Terminal {
        width: 1fr;
        height: 1fr;
        background: black;
        color: white;
    }
    """

    def __init__(
        self,
        send: Callable[[bytes], None],
        resize: Callable[[int, int], None],
        newline_is_crlf: bool = False,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self._send = send
        self._resize = resize
        self.screen_buffer = _Screen(80, 24, self._answer)
        if newline_is_crlf:
            self.screen_buffer.set_mode(pyte.modes.LNM)
        self._stream = pyte.ByteStream(self.screen_buffer)
        self.terminal_size: tuple[int, int] | None = None

    def _answer(self, data: bytes) -> None:
        self._send(data)

    # -- output

    def feed(self, data: bytes) -> None:
        """
        Output of the program: update the screen and redraw what changed.
        """
        self._stream.feed(data)
        self.screen_buffer.dirty.clear()
        self.refresh()

    def lines(self) -> list[str]:
        """
        The screen as text, one string per row (for tests and screen
        readers).
        """
        return [line.rstrip() for line in self.screen_buffer.display]

    @property
    def cursor(self) -> tuple[int, int]:
        """
        (row, column) of the cursor, 0-based.
        """
        return self.screen_buffer.cursor.y, self.screen_buffer.cursor.x

    def render_line(self, y: int) -> Strip:
        screen = self.screen_buffer
        width = self.size.width
        if y >= screen.lines:
            return Strip.blank(width)
        row = screen.buffer[y]
        show_cursor = self.has_focus and not screen.cursor.hidden and screen.cursor.y == y
        segments: list[Segment] = []
        text: list[str] = []
        current: Style | None = None
        for x in range(min(screen.columns, width)):
            char = row[x]
            if not char.data:
                # The right half of a wide character drawn in the cell before.
                continue
            style = _style(char.fg, char.bg, char.bold, char.italics, char.underscore, char.strikethrough,
                           char.reverse, show_cursor and x == screen.cursor.x)
            if style is not current and text:
                segments.append(Segment("".join(text), current))
                text = []
            current = style
            text.append(char.data)
        if text:
            segments.append(Segment("".join(text), current))
        return Strip(segments).adjust_cell_length(width)

    # -- input

    def on_key(self, event: events.Key) -> None:
        self.take_key(event)

    def take_key(self, event: events.Key) -> None:
        """
        Send C{event}'s key to the program. The pane takes the key: no
        binding (Tab's focus change, Ctrl-C's quit hint) sees it.
        """
        data = key_bytes(event.key, event.character, _DECCKM in self.screen_buffer.mode)
        if data is None:
            return
        event.stop()
        event.prevent_default()
        self._send(data)

    def on_paste(self, event: events.Paste) -> None:
        event.stop()
        self._send(event.text.encode())

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        self._fit(event.size)

    def _fit(self, size: Size) -> None:
        rows, cols = size.height, size.width
        if rows <= 0 or cols <= 0 or self.terminal_size == (rows, cols):
            return
        self.terminal_size = (rows, cols)
        self.screen_buffer.resize(rows, cols)
        self.refresh()
        self._resize(rows, cols)
