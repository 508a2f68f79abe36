"""
The TUI's pure parts: what its tables show, which bytes keys become, and
the terminal widget drawing a pyte screen (run headless, without a daemon).
"""

from __future__ import annotations

import asyncio
import io
import sys
from typing import Any

from rich.color import Color
from textual.app import App, ComposeResult
from twisted.trial.unittest import SynchronousTestCase

from ross.tui.app import main
from ross.tui.panes import printable
from ross.tui.rows import container_cells, image_rows, matches, status_text
from ross.tui.terminal import Terminal, key_bytes
from ross.v1 import container_pb2, image_pb2


def container(name: str = "web", status: Any = container_pb2.CONTAINER_STATUS_RUNNING, **state: Any) -> Any:
    c = container_pb2.Container(id="ab" * 32, name=name, image="busybox", command="sleep 1000")
    c.state.status = status
    for key, value in state.items():
        if key in ("started_at", "finished_at"):
            getattr(c.state, key).seconds = value
        else:
            setattr(c.state, key, value)
    return c


class RowsTests(SynchronousTestCase):
    def test_status_from_state_and_clock(self) -> None:
        """
        STATUS reads like docker's and moves on with the clock alone.
        """
        up = container(started_at=1000)
        self.assertEqual(status_text(up, now=1005), "Up 5 seconds")
        self.assertEqual(status_text(up, now=1000 + 180), "Up 3 minutes")
        paused = container(status=container_pb2.CONTAINER_STATUS_PAUSED, started_at=1000)
        self.assertEqual(status_text(paused, now=1002), "Up 2 seconds (Paused)")
        exited = container(status=container_pb2.CONTAINER_STATUS_EXITED, exit_code=137, finished_at=1000)
        self.assertEqual(status_text(exited, now=1010), "Exited (137) 10 seconds ago")
        self.assertEqual(status_text(container(status=container_pb2.CONTAINER_STATUS_CREATED)), "Created")

    def test_cells(self) -> None:
        c = container(started_at=1000)
        c.network_settings.ports.add(container_port="80/tcp", host_ip="127.0.0.1", host_port=8080)
        self.assertEqual(container_cells(c, now=1001),
                         ("abababababab", "web", "busybox", "sleep 1000", "Up 1 second", "127.0.0.1:8080->80/tcp"))

    def test_filter_words(self) -> None:
        """
        Every word of the filter must match the name, image, state or
        status, or start the ID; any case.
        """
        c = container(status=container_pb2.CONTAINER_STATUS_EXITED, exit_code=0, finished_at=1)
        for text in ("", "web", "WEB", "busy", "exited", "web exited", "abab"):
            self.assertTrue(matches(c, text), text)
        for text in ("db", "running", "web running", "ba"):
            self.assertFalse(matches(c, text), text)

    def test_image_rows(self) -> None:
        """
        One row per tag, names shortened as docker does; untagged images
        show <none>.
        """
        tagged = image_pb2.Image(id="sha256:" + "1" * 64, repo_tags=["docker.io/library/busybox:latest",
                                                                     "localhost:5000/x/y:v1"], size=2_000_000)
        bare = image_pb2.Image(id="sha256:" + "2" * 64, size=1000)
        shown = [cells for _, cells in image_rows([tagged, bare], now=0)]
        self.assertEqual(shown, [
            ("busybox", "latest", "111111111111", "N/A", "2MB"),
            ("localhost:5000/x/y", "v1", "111111111111", "N/A", "2MB"),
            ("<none>", "<none>", "222222222222", "N/A", "1kB"),
        ])


class LogTextTests(SynchronousTestCase):
    def test_control_sequences_dropped(self) -> None:
        """
        The log pane shows a terminal's log as text: colours, cursor moves,
        titles and carriage returns are dropped; tabs and newlines stay.
        """
        raw = "\x1b[1;31mred\x1b[0m line\r\n/ # \x1b[6nabc\x1b]0;title\x07 ok\x1bM\tz\r\n"
        self.assertEqual(printable(raw), "red line\n/ # abc ok\tz\n")


class KeyTests(SynchronousTestCase):
    def test_keys(self) -> None:
        """
        Keys become the bytes an xterm sends.
        """
        cases = {
            ("a", "a"): b"a",
            ("A", "A"): b"A",
            ("é", "é"): "é".encode(),
            ("enter", "\r"): b"\r",
            ("backspace", None): b"\x7f",
            ("tab", "\t"): b"\t",
            ("escape", None): b"\x1b",
            ("ctrl+c", None): b"\x03",
            ("ctrl+a", None): b"\x01",
            ("ctrl+z", None): b"\x1a",
            ("up", None): b"\x1b[A",
            ("left", None): b"\x1b[D",
            ("home", None): b"\x1b[H",
            ("end", None): b"\x1b[F",
            ("pageup", None): b"\x1b[5~",
            ("pagedown", None): b"\x1b[6~",
            ("delete", None): b"\x1b[3~",
            ("f1", None): b"\x1bOP",
            ("f5", None): b"\x1b[15~",
            ("f12", None): b"\x1b[24~",
            ("shift+tab", None): b"\x1b[Z",
            ("alt+x", "x"): b"\x1bx",
        }
        for (key, character), expected in cases.items():
            self.assertEqual(key_bytes(key, character), expected, key)
        self.assertIsNone(key_bytes("shift", None))

    def test_application_cursor_keys(self) -> None:
        """
        After DECCKM (vi, top), arrows send ESC O x.
        """
        self.assertEqual(key_bytes("up", None, application_cursor=True), b"\x1bOA")
        self.assertEqual(key_bytes("right", None, application_cursor=True), b"\x1bOC")


class _TerminalApp(App[None]):
    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.sizes: list[tuple[int, int]] = []

    def compose(self) -> ComposeResult:
        yield Terminal(self.sent.append, lambda rows, cols: self.sizes.append((rows, cols)))


class TerminalWidgetTests(SynchronousTestCase):
    def run_app(self, scenario: Any, size: tuple[int, int] = (50, 12)) -> None:
        async def main() -> None:
            app = _TerminalApp()
            async with app.run_test(size=size) as pilot:
                await pilot.pause()
                await scenario(app, app.query_one(Terminal), pilot)

        asyncio.run(main())

    def test_size_colours_cursor(self) -> None:
        """
        The terminal takes the widget's size (and says so once), draws
        colours and attributes from the program's escape sequences, and the
        cursor where the program left it.
        """

        async def scenario(app: _TerminalApp, term: Terminal, pilot: Any) -> None:
            self.assertEqual(app.sizes, [(12, 50)])
            self.assertEqual(term.terminal_size, (12, 50))
            term.feed(b"plain \x1b[1;31mred\x1b[0m \x1b[42mbg\x1b[0m\r\nnext\x1b[38;5;208mX\x1b[0m")
            self.assertEqual(term.lines()[:2], ["plain red bg", "nextX"])
            self.assertEqual(term.cursor, (1, 5))
            term.focus()
            await pilot.pause()
            first = term.render_line(0)
            styles = {segment.text: segment.style for segment in first}
            red = styles["red"]
            assert red is not None
            self.assertTrue(red.bold)
            self.assertEqual(red.color, Color.parse("red"))
            bg = styles["bg"]
            assert bg is not None
            self.assertEqual(bg.bgcolor, Color.parse("green"))
            second = list(term.render_line(1))
            orange = [s for s in second if s.text == "X"][0].style
            assert orange is not None
            self.assertEqual(orange.color, Color.parse("#ff8700"))
            cursor = [s for s in second if s.style is not None and s.style.reverse]
            self.assertEqual([s.text for s in cursor], [" "])
            term.feed("\r\n中文ok".encode())
            self.assertEqual(term.lines()[2], "中文ok")
            third = term.render_line(2)
            self.assertEqual(third.text.rstrip(), "中文ok")
            self.assertEqual(third.cell_length, 50)

        self.run_app(scenario)

    def test_keys_and_answers_go_to_the_program(self) -> None:
        """
        Keys the widget receives are sent, Tab and Ctrl-C included (no
        focus change, no quit); a cursor-position query is answered.
        """

        async def scenario(app: _TerminalApp, term: Terminal, pilot: Any) -> None:
            term.focus()
            await pilot.press("l", "s", "tab", "ctrl+c", "up", "enter")
            self.assertEqual(b"".join(app.sent), b"ls\t\x03\x1b[A\r")
            self.assertIs(app.focused, term)
            self.assertTrue(app.is_running)
            app.sent.clear()
            term.feed(b"ab\x1b[6n")
            self.assertEqual(app.sent, [b"\x1b[1;3R"])
            app.sent.clear()
            term.feed(b"\x1b[?1h")
            await pilot.press("down")
            self.assertEqual(app.sent, [b"\x1bOB"])

        self.run_app(scenario)

    def test_resize_follows_the_widget(self) -> None:
        async def scenario(app: _TerminalApp, term: Terminal, pilot: Any) -> None:
            await pilot.resize_terminal(70, 20)
            await pilot.pause()
            self.assertEqual(app.sizes, [(12, 50), (20, 70)])
            self.assertEqual((term.screen_buffer.lines, term.screen_buffer.columns), (20, 70))

        self.run_app(scenario)


class MainTests(SynchronousTestCase):
    def test_bad_flags(self) -> None:
        """
        Unknown flags and arguments exit 125 before anything is drawn.
        """
        err = io.StringIO()
        self.patch(sys, "stderr", err)
        self.assertEqual(main(["--bogus"]), 125)
        self.assertEqual(main(["extra"]), 125)
        self.assertEqual(err.getvalue(), "ross-tui: unknown flag: --bogus\n"
                         "ross-tui: unexpected argument 'extra'\nSee 'ross-tui --help'.\n")
