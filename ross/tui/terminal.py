# -*- test-case-name: ross.test.test_tui -*-
"""
A terminal in a widget: an L{ross.tui.vt.Emulator} fed with a program's
output, drawn with its colours and cursor, and Textual's keys, mouse and
pastes turned back into the bytes an xterm sends.

Output is fed from any thread (the session's): the emulator takes it at
once, under a lock, and the widget redraws only the rows that changed, at
most L{FPS} times a second (L{BACKGROUND_FPS} without the focus), on the
event loop. A flood of output costs the event loop one bounded redraw per
frame, so keys are still answered.

The widget knows nothing of gRPC: it calls C{send(bytes)} and
C{resize(rows, cols)} on whatever carries the session.

Scrollback: Shift-PageUp/PageDown and the wheel (unless the program asked
for the mouse: then the wheel is the program's, and Shift takes it back).
Dragging selects, and the selection is copied on release (OSC 52, through
Textual's clipboard).
"""

from __future__ import annotations

import threading
import time
from typing import Callable

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.geometry import Region, Size
from textual.message import Message
from textual.strip import Strip
from textual.widget import Widget

from ross.tui.vt import (
    APPLICATION_CURSOR,
    BRACKETED_PASTE,
    MOUSE_DRAG,
    MOUSE_MOTION,
    MOUSE_SGR,
    MOUSE_X10,
    Emulator,
    Row,
    make_emulator,
)

#: Most redraws a second, of the pane being typed into and of the others
#: (a pane flooding in the background leaves the event loop to the keys).
FPS = 30
BACKGROUND_FPS = 10

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

#: Keys the pane keeps for its scrollback.
SCROLL_KEYS = {"shift+pageup": -1, "shift+pagedown": 1}
#: Lines a wheel notch scrolls.
WHEEL_LINES = 3


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


def mouse_report(button: int, x: int, y: int, press: bool, sgr: bool) -> bytes:
    """
    An xterm mouse report: C{button} is xterm's code (0-2 buttons, +32
    motion, 64/65 wheel, +4/+8/+16 Shift/Meta/Ctrl), C{x}, C{y} 0-based
    cells. SGR encoding (mode 1006) when C{sgr}, else the X10 bytes, which
    cannot say beyond column 223.
    """
    if sgr:
        return b"\x1b[<%d;%d;%d%s" % (button, x + 1, y + 1, b"M" if press else b"m")
    if x > 222 or y > 222:
        return b""
    code = button if press else (button & ~3) | 3
    return b"\x1b[M" + bytes([32 + code, 33 + x, 33 + y])


def paste_bytes(text: str, bracketed: bool) -> bytes:
    """
    What a terminal sends for a paste: lines end with CR, as typed; in
    bracketed paste mode (2004) the text is framed, and an end marker
    inside it cannot end the frame early.
    """
    data = text.replace("\r\n", "\r").replace("\n", "\r").encode()
    if not bracketed:
        return data
    return b"\x1b[200~" + data.replace(b"\x1b[201~", b"") + b"\x1b[201~"


def _flip(strip: Strip, start: int, end: int) -> Strip:
    """
    C{strip} with cells C{start}..C{end} in reverse video (cursor,
    selection).
    """
    if start >= end:
        return strip
    before, middle, after = strip.divide([start, end, strip.cell_length])
    flipped = Strip([Segment(s.text, (s.style or Style()) + Style(reverse=not (s.style and s.style.reverse)))
                     for s in middle])
    return Strip.join([before, flipped, after])


class Terminal(Widget, can_focus=True):
    """
    A VT100/xterm screen of the widget's size.

    @param send: called with the bytes of every key typed (and the
        terminal's answers to the program's queries).
    @param resize: called with (rows, cols) whenever the pane's size
        changes, the first time once it is laid out.
    @param newline_is_crlf: for output without a terminal behind it (a
        container without -t), whose lines end with a bare LF.
    @param backend: the emulator ("avt" or "pyte"; L{ross.tui.vt}
        chooses by default).
    """

    ALLOW_SELECT = False

    DEFAULT_CSS = """
    Terminal {
        width: 1fr;
        height: 1fr;
        background: black;
        color: white;
    }
    """

    class TitleChanged(Message):
        """The program set its title (OSC 0 or 2)."""

        def __init__(self, terminal: Terminal, title: str) -> None:
            super().__init__()
            self.terminal = terminal
            self.title = title

    class _Changed(Message):
        """Output was fed: a redraw is due."""

    def __init__(
        self,
        send: Callable[[bytes], None],
        resize: Callable[[int, int], None],
        newline_is_crlf: bool = False,
        backend: str | None = None,
        id: str | None = None,
        classes: str | None = None,
    ) -> None:
        super().__init__(id=id, classes=classes)
        self._send = send
        self._resize = resize
        self._crlf = newline_is_crlf
        self._lock = threading.Lock()
        self.emulator: Emulator = make_emulator(24, 80, self._answer, backend)
        self.terminal_size: tuple[int, int] | None = None
        #: Scrollback lines the view is scrolled up by (0: following).
        self.scrolled_back = 0
        self.title = ""
        #: Bytes of output fed so far.
        self.bytes_fed = 0
        #: The last key sent to the program.
        self.last_key = ""
        # The rows as last drawn, for render_line (which takes no lock).
        self._rows: list[Row] = []
        self._cursor: tuple[int, int, bool] = (0, 0, True)
        self._paint_due = False
        self._last_paint = 0.0
        # (row, column) where a drag started and where it is, in
        # emulator rows (negative: scrollback).
        self._selection: tuple[tuple[int, int], tuple[int, int]] | None = None
        self._selecting = False
        self._mouse_buttons = 0

    def _answer(self, data: bytes) -> None:
        self._send(data)

    # -- output (any thread)

    def feed(self, data: bytes) -> None:
        """
        Output of the program, from any thread: the screen changes now and
        is redrawn within a frame.
        """
        if self._crlf:
            data = data.replace(b"\n", b"\r\n")
        with self._lock:
            self.emulator.feed(data)
            self.bytes_fed += len(data)
            due, self._paint_due = self._paint_due, True
        if not due:
            self.post_message(self._Changed())

    def lines(self) -> list[str]:
        """
        The screen as text, one string per row (for tests and screen
        readers).
        """
        with self._lock:
            return [self.emulator.text(y) for y in range(self.emulator.rows)]

    def history(self) -> list[str]:
        """
        The scrollback as text, oldest line first.
        """
        with self._lock:
            return [self.emulator.text(y) for y in range(-self.emulator.history(), 0)]

    @property
    def cursor(self) -> tuple[int, int]:
        """
        (row, column) of the cursor, 0-based.
        """
        with self._lock:
            row, col, _ = self.emulator.cursor()
        return row, col

    def mode(self, mode: int) -> bool:
        with self._lock:
            return self.emulator.mode(mode)

    @property
    def drawn(self) -> bool:
        """
        Whether the screen as drawn shows all the output fed so far.
        """
        with self._lock:
            return not self._paint_due

    # -- drawing (event loop)

    def on_terminal__changed(self, message: _Changed) -> None:
        message.stop()
        wait = self._last_paint + 1 / (FPS if self.has_focus else BACKGROUND_FPS) - time.monotonic()
        if wait > 0:
            self.set_timer(wait, self._paint)
        else:
            self._paint()

    def _paint(self, everything: bool = False) -> None:
        """
        Take the rows that changed from the emulator and redraw them.
        """
        self._last_paint = time.monotonic()
        with self._lock:
            self._paint_due = False
            em = self.emulator
            dirty = em.take_dirty()
            if self.scrolled_back:
                scrolled = em.take_scrolled()
                if scrolled:
                    # Scrolled back, the view stays on the same lines while
                    # output goes on below; a selection moves with them.
                    self.scrolled_back = min(self.scrolled_back + scrolled, em.history())
                    if self._selection is not None:
                        (ay, ax), (by, bx) = self._selection
                        self._selection = ((ay - scrolled, ax), (by - scrolled, bx))
                dirty = None
            elif self._selection is not None and (dirty is None or dirty):
                # Following, output moves the text under a selection.
                self._selection = None
                dirty = None
            if len(self._rows) != em.rows or everything:
                self._rows = [[] for _ in range(em.rows)]
                dirty = None
            rows = range(em.rows) if dirty is None else [y for y in dirty if y < em.rows]
            for y in rows:
                self._rows[y] = em.row(y - self.scrolled_back)
            old_cursor, self._cursor = self._cursor, em.cursor()
            title = em.title
        width = self.size.width
        if dirty is None:
            self.refresh()
        else:
            for y in {*rows, old_cursor[0], self._cursor[0]}:
                self.refresh(Region(0, y, width, 1))
        if title != self.title:
            self.title = title
            self.post_message(self.TitleChanged(self, title))

    def render_line(self, y: int) -> Strip:
        width = self.size.width
        if y >= len(self._rows):
            return Strip.blank(width)
        strip = Strip(self._rows[y]).adjust_cell_length(width)
        if self._selection is not None:
            (ay, ax), (by, bx) = sorted(self._selection)
            row = y - self.scrolled_back
            if ay <= row <= by:
                start = ax if row == ay else 0
                end = bx + 1 if row == by else width
                strip = _flip(strip, start, min(end, width))
        cy, cx, visible = self._cursor
        if self.has_focus and visible and self.scrolled_back == 0 and cy == y:
            strip = _flip(strip, cx, cx + 1)
        return strip

    # -- the scrollback

    def scroll_lines(self, lines: int) -> None:
        """
        Move the view C{lines} down (negative: up into the scrollback).
        """
        with self._lock:
            if self.scrolled_back == 0 and lines < 0:
                # Start counting what scrolls by from here.
                self.emulator.take_scrolled()
            offset = max(0, min(self.scrolled_back - lines, self.emulator.history()))
        if offset != self.scrolled_back:
            self.scrolled_back = offset
            self._paint(everything=True)

    def _follow(self) -> None:
        if self.scrolled_back:
            self.scrolled_back = 0
            self._paint(everything=True)

    # -- input

    def on_key(self, event: events.Key) -> None:
        self.take_key(event)

    def take_key(self, event: events.Key) -> None:
        """
        Send C{event}'s key to the program. The pane takes the key: no
        binding (Tab's focus change, Ctrl-C's quit hint) sees it.
        """
        if event.key in SCROLL_KEYS:
            event.stop()
            event.prevent_default()
            self.scroll_lines(SCROLL_KEYS[event.key] * max(1, self.emulator.rows - 1))
            return
        data = key_bytes(event.key, event.character, self.mode(APPLICATION_CURSOR))
        if data is None:
            return
        event.stop()
        event.prevent_default()
        self._follow()
        self.last_key = event.key
        self._send(data)

    def on_paste(self, event: events.Paste) -> None:
        event.stop()
        self._follow()
        self._send(paste_bytes(event.text, self.mode(BRACKETED_PASTE)))

    def _tracking(self, event: events.MouseEvent) -> int:
        """
        The program's mouse mode when this event is the program's (Shift
        keeps the mouse for selection and scrollback, as in xterm).
        """
        if event.shift:
            return 0
        with self._lock:
            return self.emulator.mouse_tracking()

    def _report(self, event: events.MouseEvent, button: int, press: bool, mode: int) -> None:
        if mode != MOUSE_X10:
            button |= (8 if event.meta else 0) | (16 if event.ctrl else 0)
        data = mouse_report(button, event.x, event.y, press, self.mode(MOUSE_SGR))
        if data:
            self._send(data)

    def on_mouse_down(self, event: events.MouseDown) -> None:
        event.stop()
        self.focus()
        mode = self._tracking(event)
        button = max(0, event.button - 1)
        if mode:
            self._mouse_buttons |= 1 << button
            self.capture_mouse()
            self._report(event, button, True, mode)
            return
        if event.button == 1:
            point = (event.y - self.scrolled_back, event.x)
            self._selection = (point, point)
            self._selecting = True
            self.capture_mouse()
            self.refresh()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        mode = self._tracking(event)
        if mode:
            held = self._mouse_buttons
            if mode == MOUSE_MOTION or (mode == MOUSE_DRAG and held):
                button = (held & -held).bit_length() - 1 if held else 3
                self._report(event, 32 + button, True, mode)
            return
        if self._selecting and self._selection is not None:
            start = self._selection[0]
            y = max(0, min(event.y, self.emulator.rows - 1))
            self._selection = (start, (y - self.scrolled_back, max(0, event.x)))
            self.refresh()

    def on_mouse_up(self, event: events.MouseUp) -> None:
        event.stop()
        self.release_mouse()
        mode = self._tracking(event)
        button = max(0, event.button - 1)
        if mode:
            self._mouse_buttons &= ~(1 << button)
            if mode != MOUSE_X10:
                self._report(event, button, False, mode)
            return
        if self._selecting:
            self._selecting = False
            text = self.selected_text()
            if text:
                self.app.copy_to_clipboard(text)
            else:
                self._selection = None
                self.refresh()

    def selected_text(self) -> str:
        """
        The selection's text, lines joined with newlines.
        """
        if self._selection is None:
            return ""
        (ay, ax), (by, bx) = sorted(self._selection)
        if (ay, ax) == (by, bx):
            return ""
        lines = []
        with self._lock:
            for row in range(ay, by + 1):
                if -self.emulator.history() <= row < self.emulator.rows:
                    text = self.emulator.text(row)
                    lines.append(text[ax if row == ay else 0:bx + 1 if row == by else None])
        return "\n".join(line.rstrip() for line in lines)

    def _wheel(self, event: events.MouseEvent, up: bool) -> None:
        event.stop()
        event.prevent_default()
        mode = self._tracking(event)
        if mode and mode != MOUSE_X10:
            self._report(event, 64 if up else 65, True, mode)
            return
        with self._lock:
            alternate = self.emulator.alternate()
        if alternate and not event.shift:
            # A full-screen program without the mouse: the wheel moves its
            # cursor, as xterm's alternateScroll does.
            arrow = key_bytes("up" if up else "down", None, self.mode(APPLICATION_CURSOR)) or b""
            self._send(arrow * WHEEL_LINES)
            return
        self.scroll_lines(-WHEEL_LINES if up else WHEEL_LINES)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._wheel(event, up=True)

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        self._wheel(event, up=False)

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
        with self._lock:
            self.emulator.resize(rows, cols)
            self.scrolled_back = min(self.scrolled_back, self.emulator.history())
        self._paint(everything=True)
        self._resize(rows, cols)
