"""
The TUI's pure parts: what its tables show, which bytes keys become, the
terminal widget drawing a pyte screen (run headless, without a daemon),
and a pane's session on a direct channel (against fakes).
"""

from __future__ import annotations

import asyncio
import io
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

import grpc
from rich.color import Color
from textual import events
from textual.app import App, ComposeResult
from twisted.trial.unittest import SynchronousTestCase

from ross.client.direct import DirectError
from ross.client.h2grpc import rpc_error
from ross.client.frames import Frames
from ross.client.settings import Globals
from ross.protocols import shimwire
from ross.tui.client import Session
from ross.tui.app import main, split_hosts, split_serve
from ross.tui.config import ConfigError, load, resolve_hosts
from ross.tui.rows import container_cells, image_rows, matches, status_text
from ross.tui.serve import ServeError
from ross.tui.serve import options as serve_options
from ross.tui.terminal import Terminal, key_bytes, mouse_report, paste_bytes
from ross.tui.text import printable
from ross.tui.vt import backend_name, make_emulator
from ross.v1 import common_pb2, container_pb2, image_pb2


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


class EmulatorTests(SynchronousTestCase):
    """
    Both backends behind L{ross.tui.vt.Emulator} agree on what a program's
    output means.
    """

    backends = ("avt", "pyte")

    def each(self) -> Any:
        for backend in self.backends:
            answers: list[bytes] = []
            yield backend, make_emulator(4, 20, answers.append, backend), answers

    def test_fast_backend_installed(self) -> None:
        """
        pyavt is installed with Ross, so panes get the fast backend.
        """
        self.assertEqual(backend_name(), "avt")

    def test_text_colours_and_cursor(self) -> None:
        for backend, em, _ in self.each():
            em.feed(b"a\x1b[31mred\x1b[0m \x1b[38;5;208mX\x1b[38;2;1;2;3mY\x1b[48;5;17mZ\x1b[0m\r\nnext")
            self.assertEqual([em.text(y) for y in range(em.rows)], ["ared XYZ", "next", "", ""], backend)
            self.assertEqual(em.cursor(), (1, 4, True), backend)
            styles = {s.text: s.style for s in em.row(0)}
            self.assertEqual(styles["red"].color.number, 1, backend)
            self.assertEqual(styles["X"].color.get_truecolor(), (255, 135, 0), backend)
            self.assertEqual(styles["Y"].color.get_truecolor(), (1, 2, 3), backend)
            self.assertEqual(styles["Z"].bgcolor.get_truecolor(), Color.from_ansi(17).get_truecolor(),
                             backend)
            self.assertEqual(sum(s.cell_length for s in em.row(0)), 20, backend)

    def test_scrollback(self) -> None:
        for backend, em, _ in self.each():
            em.feed(b"\r\n".join(b"line%d" % i for i in range(10)))
            self.assertEqual(em.history(), 6, backend)
            self.assertEqual(em.text(-6), "line0", backend)
            self.assertEqual(em.text(-1), "line5", backend)
            self.assertEqual(em.text(0), "line6", backend)
            em.take_scrolled()
            em.feed(b"\r\nmore\r\nmore")
            self.assertEqual(em.take_scrolled(), 2, backend)

    def test_modes_title_and_answers(self) -> None:
        """
        Mouse, paste and cursor-key modes, the title, and the answers to
        cursor position and device attribute queries, even when a sequence
        is cut between two chunks.
        """
        for backend, em, answers in self.each():
            self.assertEqual(em.mouse_tracking(), 0)
            em.feed(b"\x1b[?1000;1006h\x1b[?2004h\x1b[?1h\x1b]0;my ti")
            em.feed(b"tle\x07ab\x1b[6")
            em.feed(b"n")
            self.assertEqual(em.mouse_tracking(), 1000, backend)
            self.assertTrue(em.mode(1006) and em.mode(2004) and em.mode(1), backend)
            self.assertEqual(em.title, "my title", backend)
            self.assertEqual(answers, [b"\x1b[1;3R"], backend)
            em.feed(b"\x1b[?1002h\x1b[?1000l\x1b[?2004l")
            self.assertEqual(em.mouse_tracking(), 1002, backend)
            self.assertFalse(em.mode(2004), backend)

    def test_alternate_screen(self) -> None:
        """
        A full-screen program draws on the alternate screen, without
        scrollback; leaving it brings back what was there.
        """
        em = make_emulator(3, 10, lambda data: None, "avt")
        em.feed(b"1\r\n2\r\n3\r\n4\r\n5")
        self.assertEqual(em.history(), 2)
        em.feed(b"\x1b[?1049h\x1b[Hfull")
        self.assertTrue(em.alternate())
        self.assertEqual(em.history(), 0)
        self.assertEqual(em.text(0), "full")
        em.feed(b"\x1b[?1049l")
        self.assertFalse(em.alternate())
        self.assertEqual([em.text(y) for y in range(3)], ["3", "4", "5"])


class InputBytesTests(SynchronousTestCase):
    def test_mouse_reports(self) -> None:
        """
        SGR reports say press and release apart and any column; X10 reports
        are bytes offset by 32 and release is button 3.
        """
        self.assertEqual(mouse_report(0, 4, 2, True, sgr=True), b"\x1b[<0;5;3M")
        self.assertEqual(mouse_report(0, 4, 2, False, sgr=True), b"\x1b[<0;5;3m")
        self.assertEqual(mouse_report(64, 300, 2, True, sgr=True), b"\x1b[<64;301;3M")
        self.assertEqual(mouse_report(0, 4, 2, True, sgr=False), b"\x1b[M %#")
        self.assertEqual(mouse_report(16, 4, 2, False, sgr=False), b"\x1b[M3%#")
        self.assertEqual(mouse_report(0, 300, 2, True, sgr=False), b"")

    def test_paste(self) -> None:
        self.assertEqual(paste_bytes("a\nb\r\nc", bracketed=False), b"a\rb\rc")
        self.assertEqual(paste_bytes("x\x1b[201~y", bracketed=True), b"\x1b[200~xy\x1b[201~")


class _TerminalApp(App[None]):
    def __init__(self, backend: str | None = None) -> None:
        super().__init__()
        self.backend = backend
        self.sent: list[bytes] = []
        self.sizes: list[tuple[int, int]] = []

    def compose(self) -> ComposeResult:
        yield Terminal(self.sent.append, lambda rows, cols: self.sizes.append((rows, cols)), backend=self.backend)


async def drawn(term: Terminal, pilot: Any) -> None:
    """
    Let the app run until the terminal has drawn everything fed to it.
    """
    for _ in range(500):
        await pilot.pause()
        if term.drawn:
            return
    raise AssertionError("the terminal never drew its output")


async def wheel(term: Terminal, pilot: Any, up: bool, at: tuple[int, int] = (5, 5)) -> None:
    """
    One notch of the mouse wheel over C{term} at (x, y).
    """
    kind = events.MouseScrollUp if up else events.MouseScrollDown
    term.post_message(kind(term, at[0], at[1], 0, 0, 0, False, False, False))
    await pilot.pause()


class TerminalWidgetTests(SynchronousTestCase):
    backend: str | None = None

    def run_app(self, scenario: Any, size: tuple[int, int] = (50, 12)) -> None:
        async def main() -> None:
            app = _TerminalApp(self.backend)
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
            await drawn(term, pilot)
            first = term.render_line(0)
            styles = {segment.text: segment.style for segment in first}
            red = styles["red"]
            assert red is not None
            self.assertTrue(red.bold)
            self.assertEqual(red.color.number if red.color else None, 1)
            bg = styles["bg"]
            assert bg is not None and bg.bgcolor is not None
            self.assertEqual(bg.bgcolor.number, 2)
            second = list(term.render_line(1))
            orange = [s for s in second if s.text == "X"][0].style
            assert orange is not None and orange.color is not None
            self.assertEqual(orange.color.get_truecolor(), Color.parse("#ff8700").get_truecolor())
            cursor = [s for s in second if s.style is not None and s.style.reverse]
            self.assertEqual([s.text for s in cursor], [" "])
            term.feed("\r\n中文ok".encode())
            self.assertEqual(term.lines()[2], "中文ok")
            await drawn(term, pilot)
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
            self.assertEqual((term.emulator.rows, term.emulator.cols), (20, 70))

        self.run_app(scenario)

    def test_scrollback_keys_and_wheel(self) -> None:
        """
        Shift-PageUp shows the lines above the screen and keeps them there
        while output goes on; the wheel scrolls; typing goes back to the
        bottom.
        """

        async def scenario(app: _TerminalApp, term: Terminal, pilot: Any) -> None:
            term.focus()
            term.feed(b"\r\n".join(b"line%d" % i for i in range(100)))
            await drawn(term, pilot)
            self.assertEqual(term.render_line(11).text.rstrip(), "line99")
            await pilot.press("shift+pageup")
            self.assertEqual(term.scrolled_back, 11)
            self.assertEqual(term.render_line(0).text.rstrip(), "line77")
            term.feed(b"\r\nline100\r\nline101")
            await drawn(term, pilot)
            self.assertEqual(term.render_line(0).text.rstrip(), "line77")
            await pilot.press("shift+pagedown")
            self.assertEqual(term.scrolled_back, 2)
            await wheel(term, pilot, up=True)
            self.assertEqual(term.scrolled_back, 5)
            await wheel(term, pilot, up=False)
            self.assertEqual(term.scrolled_back, 2)
            await pilot.press("x")
            self.assertEqual(term.scrolled_back, 0)
            self.assertEqual(term.render_line(11).text.rstrip(), "line101")
            self.assertEqual(app.sent, [b"x"])

        self.run_app(scenario)

    def test_select_and_copy(self) -> None:
        """
        Dragging selects text (drawn reversed) and copies it on release.
        """

        async def scenario(app: _TerminalApp, term: Terminal, pilot: Any) -> None:
            term.feed(b"hello world\r\nsecond line")
            await drawn(term, pilot)
            await pilot.mouse_down(term, offset=(6, 0))
            await pilot.hover(term, offset=(5, 1))
            await pilot.mouse_up(term, offset=(5, 1))
            self.assertEqual(term.selected_text(), "world\nsecond")
            self.assertEqual(app.clipboard, "world\nsecond")
            reversed_ = [s.text for s in term.render_line(0) if s.style and s.style.reverse]
            self.assertEqual("".join(reversed_).rstrip(), "world")
            self.assertEqual(app.sent, [])

        self.run_app(scenario)

    def test_mouse_to_the_program(self) -> None:
        """
        A program that asks for the mouse gets clicks and the wheel as
        reports; Shift keeps them for the pane.
        """

        async def scenario(app: _TerminalApp, term: Terminal, pilot: Any) -> None:
            term.feed(b"\x1b[?1000h\x1b[?1006h")
            await drawn(term, pilot)
            await pilot.click(term, offset=(3, 2))
            self.assertEqual(app.sent, [b"\x1b[<0;4;3M", b"\x1b[<0;4;3m"])
            app.sent.clear()
            await wheel(term, pilot, up=True, at=(1, 1))
            self.assertEqual(app.sent, [b"\x1b[<64;2;2M"])
            app.sent.clear()
            await pilot.click(term, offset=(3, 2), shift=True)
            self.assertEqual(app.sent, [])

        self.run_app(scenario)

    def test_bracketed_paste_and_title(self) -> None:
        async def scenario(app: _TerminalApp, term: Terminal, pilot: Any) -> None:
            term.feed(b"\x1b[?2004h\x1b]2;vi note\x07")
            await drawn(term, pilot)
            term.post_message(events.Paste("a\nb"))
            await pilot.pause()
            self.assertEqual(app.sent, [b"\x1b[200~a\rb\x1b[201~"])
            self.assertEqual(term.title, "vi note")

        self.run_app(scenario)


class PyteTerminalWidgetTests(TerminalWidgetTests):
    """
    The same with the fallback backend.
    """

    backend = "pyte"


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


class ConfigTests(SynchronousTestCase):
    """
    ~/.config/ross/tui.toml: keys, and contexts with their own settings.
    """

    def write(self, text: str) -> Path:
        path = Path(self.mktemp())
        path.write_text(text)
        return path

    def test_contexts_and_keys(self) -> None:
        token = Path(self.mktemp())
        token.write_text("t0ken\n")
        config = load(self.write(f"""
hosts = ["prod", "unix:///tmp/other.sock"]
[keys]
stop = "k"
[contexts.prod]
host = "tcp://prod.example:2376"
tls_ca = "/ca.pem"
token_file = "{token}"
"""))
        self.assertEqual(config.keys, {"stop": "k"})
        base = Globals()
        base.host, base.tls_cert, base.token = "unix:///run/ross/ross.sock", "/mine.pem", "flag-token"
        hosts = resolve_hosts([], base, config)
        self.assertEqual([name for name, _ in hosts], ["prod", "unix:///tmp/other.sock"])
        prod, other = hosts[0][1], hosts[1][1]
        self.assertEqual((prod.host, prod.tls_ca, prod.tls_cert, prod.token),
                         ("tcp://prod.example:2376", "/ca.pem", "/mine.pem", "t0ken"))
        self.assertEqual((other.host, other.token), ("unix:///tmp/other.sock", "flag-token"))
        self.assertEqual(base.host, "unix:///run/ross/ross.sock")
        self.assertEqual([n for n, _ in resolve_hosts(["unix:///a.sock"], base, config)], ["unix:///a.sock"])
        self.assertEqual(resolve_hosts([], base, load(Path(self.mktemp()))), [(base.host, base)])

    def test_bad_files(self) -> None:
        for text, message in (("[contexts.x]\ntls_ca = '/ca'\n", "context 'x' needs a host"),
                              ("[contexts.x]\nhost = 'unix:///s'\nport = 1\n", "unknown settings port"),
                              ("[keys]\nstop = 1\n", "[keys] maps action names"),
                              ("hosts = [", "")):
            with self.assertRaises(ConfigError) as raised:
                load(self.write(text))
            self.assertIn(message, str(raised.exception))
        with self.assertRaises(ConfigError) as raised:
            resolve_hosts(["nowhere"], Globals(), load(self.write("")))
        self.assertIn("no such context: nowhere", str(raised.exception))


class ArgumentTests(SynchronousTestCase):
    def test_hosts_and_serve(self) -> None:
        self.assertEqual(split_hosts(["-H", "a", "--token", "t", "--host=b"]), (["a", "b"], ["--token", "t"]))
        self.assertEqual(split_serve(["--serve", "-H", "a"]), ("", ["-H", "a"]))
        self.assertEqual(split_serve(["--serve", "0.0.0.0:9", "-H", "a"]), ("0.0.0.0:9", ["-H", "a"]))
        self.assertEqual(split_serve(["--serve=:9"]), (":9", []))
        self.assertEqual(split_serve(["-H", "a"]), (None, ["-H", "a"]))

    def test_serve_options(self) -> None:
        """
        Loopback by default with a random token; off loopback only with
        TLS; a certificate goes with its key.
        """
        default = serve_options("", None, None, None)
        self.assertEqual((default.host, default.port, default.tls), ("127.0.0.1", 8000, False))
        self.assertGreaterEqual(len(default.token), 24)
        self.assertNotEqual(serve_options("", None, None, None).token, default.token)
        self.assertEqual(serve_options("[::1]:8080", None, None, None).url, "http://[::1]:8080")
        with self.assertRaises(ServeError) as raised:
            serve_options("0.0.0.0:8000", None, None, None)
        self.assertIn("without TLS", str(raised.exception))
        with self.assertRaises(ServeError):
            serve_options("", "/cert.pem", None, None)
        tls = serve_options("192.0.2.1:8443", "/cert.pem", "/key.pem", None)
        self.assertEqual(tls.url, "https://192.0.2.1:8443")
        token = Path(self.mktemp())
        token.write_text("abc\n")
        self.assertEqual(serve_options("", None, None, str(token)).token, "abc")


class _FakeCall:
    """
    A bidirectional call as grpcio's: its request iterator consumed in a
    thread of its own (what it sent is in C{sent}), C{frames} as output.
    """

    def __init__(self, requests: Any, frames: list[Any]) -> None:
        self.sent: list[Any] = []
        self.cancelled = False
        self._frames = frames
        self.requests = threading.Thread(target=lambda: self.sent.extend(requests), daemon=True)
        self.requests.start()

    def __iter__(self) -> Any:
        return iter(self._frames)

    def cancel(self) -> None:
        self.cancelled = True


class _DirectSocket:
    """
    The daemon's direct socket for one ticket: hands over one end of a
    socket pair, the other being the shim's end (C{shim}).
    """

    def __init__(self, path: str, ticket: str) -> None:
        self.path = path
        self.shim, self._client = socket.socketpair()
        self.shim.settimeout(10)
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._listener.bind(path)
        self._listener.listen(1)
        self._listener.settimeout(10)
        self._ticket = ticket
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self._listener.accept()  # bounded: the listener's timeout
        with conn:
            conn.settimeout(10)
            line = conn.recv(512)
            if line == self._ticket.encode() + b"\n":
                socket.send_fds(conn, [b"k"], [self._client.fileno()])
            else:
                conn.sendall(b"eunknown ticket\n")
        self._client.close()
        self._listener.close()

    def read_frames(self, count: int) -> list[tuple[int, bytes]]:
        decoder = shimwire.FrameDecoder()
        frames: list[tuple[int, bytes]] = []
        while len(frames) < count:
            data = self.shim.recv(65536)
            if not data:
                break
            frames += decoder.feed(data)
        return frames


class DirectSessionTests(SynchronousTestCase):
    """
    L{ross.tui.client.Session} on a direct channel, against a fake call and
    a fake direct socket.
    """

    def session(self, ticket: str = "t1") -> tuple[Session, _DirectSocket, list[Any], list[Any], list[_FakeCall]]:
        """
        A session whose call's started frame carries C{ticket}, the direct
        socket that knows "t1", and what the session reported (frames, ends)
        and called.
        """
        base = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, base, True)
        direct = _DirectSocket(os.path.join(base, "direct.sock"), "t1")
        self.addCleanup(direct.shim.close)
        started = container_pb2.InteractiveOutput(started=container_pb2.Started(
            container_id="c1", exec_id="e1", direct_socket=direct.path, direct_ticket=ticket))
        calls: list[_FakeCall] = []

        def call(requests: Any) -> _FakeCall:
            calls.append(_FakeCall(requests, [started]))
            return calls[-1]

        first = container_pb2.ExecInput(start=container_pb2.ExecConfig(container_id="c1", cmd=["sh"], direct=True))
        frames: list[Any] = []
        ends: list[Any] = []
        session = Session("test", call, Frames(container_pb2.ExecInput), first, frames.append, ends.append,
                          detach_keys=b"\x10\x11")
        self.addCleanup(session.close)
        return session, direct, frames, ends, calls

    def ended(self, session: Session) -> None:
        session.thread.join(10)
        self.assertFalse(session.thread.is_alive())

    def test_input_output_exit(self) -> None:
        """
        Input queued before the channel came goes over it, not the stream
        (which carried the start frame only and was cancelled); the shim's
        output and exit event arrive as the stream's frames, then the end.
        """
        session, direct, frames, ends, calls = self.session()
        session.send(b"early")
        session.begin()
        session.resize(30, 100)
        session.send(b"late")
        got = direct.read_frames(3)
        self.assertEqual(got, [(shimwire.STDIN, b"early"), (shimwire.RESIZE, shimwire.resize(30, 100)[5:]),
                               (shimwire.STDIN, b"late")])
        direct.shim.sendall(shimwire.frame(shimwire.STDOUT, b"out") + shimwire.frame(shimwire.STDERR, b"err")
                            + shimwire.message({"event": "exit", "session": "e1",
                                                "status": {"exit_code": 3, "signal": 0, "error": ""}}))
        self.ended(session)
        self.assertTrue(session.direct)
        self.assertEqual([f.WhichOneof("output") for f in frames], ["started", "data", "data", "exit"])
        self.assertEqual([(f.data.stream, f.data.data) for f in frames[1:3]],
                         [(common_pb2.STD_STREAM_STDOUT, b"out"), (common_pb2.STD_STREAM_STDERR, b"err")])
        self.assertEqual(frames[3].exit.status_code, 3)
        self.assertEqual(ends, [None])
        calls[0].requests.join(10)
        self.assertFalse(calls[0].requests.is_alive())
        self.assertEqual(len(calls[0].sent), 1)
        self.assertTrue(calls[0].cancelled)
        self.assertEqual(direct.shim.recv(10), b"")

    def test_detach_keys_and_close(self) -> None:
        """
        The detach keys end the session (the bytes before them are sent,
        the keys are not) with a C{detached} frame; C{close()} afterwards
        is harmless.
        """
        session, direct, frames, ends, calls = self.session()
        session.begin()
        session.send(b"ab\x10")
        session.send(b"\x11cd")
        self.ended(session)
        self.assertEqual(direct.read_frames(1), [(shimwire.STDIN, b"ab")])
        self.assertEqual(direct.shim.recv(10), b"")
        self.assertEqual(frames[-1].WhichOneof("output"), "detached")
        session.close()

    def test_close_leaves_the_channel(self) -> None:
        """
        C{close()} closes the channel (the shim detaches the client) and
        ends the thread without C{on_end}.
        """
        session, direct, frames, ends, calls = self.session()
        session.begin()
        session.send(b"x")
        self.assertEqual(direct.read_frames(1), [(shimwire.STDIN, b"x")])
        session.close()
        self.ended(session)
        self.assertEqual(direct.shim.recv(10), b"")
        self.assertEqual(ends, [])

    def test_channel_gone_or_refused(self) -> None:
        """
        A channel that ends before the exit event, or a ticket refused, ends
        the session with the error.
        """
        session, direct, frames, ends, calls = self.session()
        session.begin()
        session.send(b"x")
        direct.read_frames(1)
        direct.shim.close()
        self.ended(session)
        self.assertIsInstance(ends[0], DirectError)
        self.assertIn("before its exit status", str(ends[0]))

        refused, _, _, ends, _ = self.session(ticket="forged")
        refused.begin()
        self.ended(refused)
        self.assertIsInstance(ends[0], DirectError)
        self.assertIn("unknown ticket", str(ends[0]))


class _BrokenCall(_FakeCall):
    """
    A call whose output ends in C{error} (a lost daemon's UNAVAILABLE).
    """

    def __init__(self, requests: Any, frames: list[Any], error: Exception | None,
                 gate: threading.Event | None = None) -> None:
        super().__init__(requests, frames)
        self._error = error
        self._gate = gate

    def __iter__(self) -> Any:
        for i, frame in enumerate(self._frames):
            if i == 1 and self._gate is not None:
                # (After the started frame: the session is live.)
                self._gate.wait(10)
            yield frame
        if self._error is not None:
            raise self._error


class StreamReattachTests(SynchronousTestCase):
    """
    L{ross.tui.client.Session} on the stream, attaching again when the
    stream is lost, against fake calls.
    """

    def session(self, outcomes: list[tuple[list[Any], Exception | None]],
                reattach: bool = True) -> tuple[Session, list[Any], list[Any], list[_FakeCall], list[tuple[Any, int]]]:
        calls: list[_FakeCall] = []
        asked: list[tuple[Any, int]] = []

        def call(requests: Any) -> _FakeCall:
            frames, error = outcomes[len(calls)]
            calls.append(_BrokenCall(requests, frames, error))
            return calls[-1]

        def again(started: Any, since: int) -> tuple[Any, Frames, Any]:
            asked.append((started, since))
            return call, Frames(container_pb2.AttachInput), container_pb2.AttachInput(
                start=container_pb2.AttachStart(container_id=started.container_id, exec_id=started.exec_id,
                                                since=since))

        first = container_pb2.ExecInput(start=container_pb2.ExecConfig(container_id="c1", cmd=["sh"], tty=True))
        frames: list[Any] = []
        ends: list[Any] = []
        session = Session("test", call, Frames(container_pb2.ExecInput), first, frames.append, ends.append,
                          reattach=again if reattach else None)
        self.patch(Session, "REATTACH_TIMEOUT", 5.0)
        self.addCleanup(session.close)
        return session, frames, ends, calls, asked

    def test_attaches_again_from_what_it_holds(self) -> None:
        """
        A stream lost with UNAVAILABLE after 5 bytes of output is followed
        by an Attach to the same session from byte 5; its output and exit
        reach the pane, and the session ends once.
        """
        unavailable = rpc_error("UNAVAILABLE", "daemon gone")
        started = container_pb2.InteractiveOutput(started=container_pb2.Started(container_id="c1", exec_id="e1"))
        again = container_pb2.InteractiveOutput(started=container_pb2.Started(
            container_id="c1", exec_id="e1", output_offset=5))
        outcomes: list[tuple[list[Any], Exception | None]] = [
            ([started, _data(b"hello")], unavailable),
            ([again, _data(b" world"), container_pb2.InteractiveOutput(exit=container_pb2.ExitResult(status_code=7))],
             None),
        ]
        session, frames, ends, calls, asked = self.session(outcomes)
        session.begin()
        session.thread.join(10)
        self.assertFalse(session.thread.is_alive())
        self.assertEqual([(s.exec_id, since) for s, since in asked], [("e1", 5)])
        self.assertEqual(calls[1].sent[0].start.since, 5)
        self.assertEqual(b"".join(f.data.data for f in frames if f.WhichOneof("output") == "data"), b"hello world")
        self.assertEqual(frames[-1].exit.status_code, 7)
        self.assertEqual((ends, session.reattached), ([None], 1))

    def test_other_errors_end_it(self) -> None:
        """
        A stream that fails otherwise (here NOT_FOUND), or a session
        without a way to attach again, ends with its error.
        """
        started = container_pb2.InteractiveOutput(started=container_pb2.Started(container_id="c1", exec_id="e1"))
        for error, reattach in ((rpc_error("NOT_FOUND", "gone"), True),
                                (rpc_error("UNAVAILABLE", "away"), False)):
            session, frames, ends, calls, asked = self.session([([started], error)], reattach)
            session.begin()
            session.thread.join(10)
            self.assertEqual((len(calls), asked, ends), (1, [], [error]))

    def gap_session(self, call: Callable[[Any], _FakeCall], typed: bytes) -> tuple[Session, list[Any]]:
        """
        A TTY session on the calls C{call} makes, which sends C{typed} as
        it attaches again (what the UI sent while the stream was away),
        and the list its end comes to.
        """
        def again(started_frame: Any, since: int) -> tuple[Any, Frames, Any]:
            session.send(typed)
            return call, Frames(container_pb2.AttachInput), container_pb2.AttachInput(
                start=container_pb2.AttachStart(container_id="c1", since=since))

        first = container_pb2.ExecInput(start=container_pb2.ExecConfig(container_id="c1", cmd=["sh"], tty=True))
        ends: list[Any] = []
        session = Session("test", call, Frames(container_pb2.ExecInput), first, lambda frame: None, ends.append,
                          reattach=again)
        self.addCleanup(session.close)
        return session, ends

    def test_input_during_the_gap(self) -> None:
        """
        What the UI sends after the stream was lost goes out on the next.
        """
        unavailable = rpc_error("UNAVAILABLE", "daemon gone")
        started = container_pb2.InteractiveOutput(started=container_pb2.Started(container_id="c1", exec_id="e1"))
        gate = threading.Event()
        calls: list[_FakeCall] = []
        outcomes: list[tuple[list[Any], Exception | None, threading.Event | None]] = [
            ([started], unavailable, None),
            ([started, container_pb2.InteractiveOutput(exit=container_pb2.ExitResult(status_code=0))], None, gate)]

        def call(requests: Any) -> _FakeCall:
            calls.append(_BrokenCall(requests, *outcomes[len(calls)]))
            return calls[-1]

        session, ends = self.gap_session(call, b"typed")
        session.begin()
        deadline = time.monotonic() + 10
        while not (len(calls) == 2 and len(calls[1].sent) == 2) and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        session.thread.join(10)
        self.assertEqual([f.WhichOneof("input") for f in calls[1].sent], ["start", "stdin"])
        self.assertEqual(calls[1].sent[1].stdin, b"typed")
        self.assertEqual(ends, [None])

    def test_lost_input_sent_again(self) -> None:
        """
        Input a lost stream took that the session never took in (the new
        stream's C{started} says it has 1 byte of it) goes out again on
        the next stream, before what the UI sent during the gap; every
        start frame names the same input.
        """
        unavailable = rpc_error("UNAVAILABLE", "daemon gone")
        started = container_pb2.InteractiveOutput(started=container_pb2.Started(container_id="c1", exec_id="e1"))
        taken = container_pb2.InteractiveOutput(started=container_pb2.Started(
            container_id="c1", exec_id="e1", input_offset=1))
        calls: list[_FakeCall] = []

        class Taking(_BrokenCall):
            # Fails once its request thread took the input.
            def __iter__(self) -> Any:
                yield from self._frames
                deadline = time.monotonic() + 10
                while len(self.sent) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
                raise unavailable

        gate = threading.Event()

        def call(requests: Any) -> _FakeCall:
            if not calls:
                calls.append(Taking(requests, [started], None))
            else:
                calls.append(_BrokenCall(requests, [taken, container_pb2.InteractiveOutput(
                    exit=container_pb2.ExitResult(status_code=0))], None, gate))
            return calls[-1]

        session, ends = self.gap_session(call, b"late")
        session.begin()
        session.send(b"abc")
        deadline = time.monotonic() + 10
        while not (len(calls) == 2 and len(calls[1].sent) == 3) and time.monotonic() < deadline:
            time.sleep(0.01)
        gate.set()
        session.thread.join(10)
        self.assertEqual(calls[0].sent[1].stdin, b"abc")
        self.assertEqual([f.WhichOneof("input") for f in calls[1].sent], ["start", "stdin", "stdin"])
        self.assertEqual([f.stdin for f in calls[1].sent[1:]], [b"bc", b"late"])
        self.assertEqual(len(calls[0].sent[0].start.input_id), 16)
        self.assertEqual(calls[1].sent[0].start.input_id, calls[0].sent[0].start.input_id)
        self.assertEqual(ends, [None])


def _data(data: bytes) -> Any:
    return container_pb2.InteractiveOutput(data=container_pb2.OutputData(stream=common_pb2.STD_STREAM_STDOUT,
                                                                         data=data))
