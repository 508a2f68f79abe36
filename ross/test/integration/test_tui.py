"""
``ross-tui`` against a real daemon with real containers, driven with
Textual's pilot: the live table, filtering, actions with confirmation, logs,
stats, shell panes; then once through a real terminal (tmux).

The app runs on its own asyncio loop in a thread (trial's reactor runs the
in-process daemon meanwhile); CLI calls from the scenarios go to threads so
the app's loop keeps turning.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from typing import Any, Awaitable, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.task import deferLater
from textual import events
from textual.command import CommandList, CommandPalette
from textual.widgets import Input, Sparkline, Tree
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.address import parse_listen
from ross.client.frames import Frames
from ross.client.settings import Globals
from ross.services.grpc_server import TLSFiles
from ross.testing import certs
from ross.testing.containers import ContainerTestCase
from ross.testing.daemon import REPO, DaemonProcess, InProcessDaemon, run_cli, short_tempdir
from ross.testing.images import docker_archive
from ross.tui.app import RossApp
from ross.tui.client import Session, attach_again, connect
from ross.tui.hosts import Host
from ross.tui.logs import LogPane
from ross.tui.panes import ShellPane, StatsPane
from ross.tui.screens import ConfirmScreen, HelpScreen
from ross.tui.views import (
    EventsView,
    HistoryScreen,
    ImagesView,
    InspectScreen,
    NetworksView,
    PromptScreen,
    StatsView,
    VolumesView,
)
from ross.v1 import common_pb2, container_pb2

Scenario = Callable[[RossApp, Any], Awaitable[None]]


def tui_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("ross-tui")]


async def until(predicate: Callable[[], Any], what: str, timeout: float = 20.0,
                show: Callable[[], str] = lambda: "") -> Any:
    """
    Wait, letting the app run, until C{predicate()} is true; on time-out,
    the failure shows C{show()}.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}\n{show()}")
        await asyncio.sleep(0.02)


async def type_text(pilot: Any, text: str) -> None:
    await pilot.press(*["space" if c == " " else c for c in text])


def rows(app: RossApp) -> dict[str, tuple[str, ...]]:
    """
    The container table as shown: name -> cells.
    """
    table = app.table
    shown = {}
    for row in table.rows:
        cells = tuple(str(c) for c in table.get_row(row))
        shown[cells[1]] = cells
    return shown


def settings(address: str, **tls: str) -> Globals:
    """
    Connection settings for C{address}, ignoring the test's environment.
    """
    g = Globals()
    g.host, g.tls_ca, g.tls_cert, g.tls_key, g.token = address, None, None, None, None
    for key, value in tls.items():
        setattr(g, key, value)
    return g


def run_pilot(g: Globals, scenario: Scenario, size: tuple[int, int] = (140, 48),
              prepare: Callable[[RossApp], Any] = lambda app: None,
              keymap: dict[str, str] | None = None) -> Deferred[None]:
    """
    Run the app headless on its own loop in a thread, connected as C{g}
    says, and C{scenario} against it with Textual's pilot; C{prepare} sees
    the app before it starts.
    """

    def run() -> None:
        cli = connect(g)

        async def main() -> None:
            app = RossApp(cli, keymap=keymap)
            prepare(app)
            async with app.run_test(size=size) as pilot:
                await scenario(app, pilot)

        try:
            asyncio.run(main())
            # The app ends its streams itself, before its channel closes.
            deadline = time.monotonic() + 15
            while tui_threads():
                if time.monotonic() > deadline:
                    raise AssertionError(f"threads outlived the app: {tui_threads()}")
                time.sleep(0.02)
        finally:
            cli.close()

    result: Deferred[None] = deferToThread(run)
    return result


def record_notifications(app: RossApp, seen: list[str] | None = None) -> list[str]:
    """
    Records what the app tells the user (Textual's notify) in C{seen}.
    """
    seen = [] if seen is None else seen
    original = app.notify

    def notify(message: str, **kwargs: Any) -> None:
        seen.append(message)
        original(message, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    return seen


def screen_text(pane: ShellPane) -> str:
    return "\n".join(pane.terminal.lines())


class TuiTestCase(ContainerTestCase):
    """
    The console against the test's daemon, driven by the pilot.
    """

    timeout = 180

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        self.addCleanup(self.check_no_threads)

    def check_no_threads(self) -> Any:
        """
        Every stream's thread ended with the app.
        """
        return self.wait_for(lambda: not tui_threads())

    def cli(self, *args: str) -> Awaitable[Any]:
        """
        The ``ross`` CLI as a user runs it, from a scenario (in a thread,
        so the app keeps running); fails on a non-zero exit.
        """

        def run() -> Any:
            result = run_cli(self.daemon.address, *args)
            if result.returncode != 0:
                raise AssertionError(f"ross {' '.join(args)} failed: {result.stderr!r}")
            return result.stdout.decode()

        return asyncio.to_thread(run)

    def pilot(self, scenario: Scenario, size: tuple[int, int] = (140, 48)) -> Deferred[None]:
        return run_pilot(settings(self.daemon.address), scenario, size)

    async def select(self, app: RossApp, pilot: Any, name: str) -> None:
        await until(lambda: name in rows(app), name)
        names = list(rows(app))
        app.table.move_cursor(row=names.index(name))
        await pilot.pause()
        self.assertEqual(app.selected().name, name)


class TuiTests(TuiTestCase):
    """
    The table, actions, logs, stats and views.
    """
    # -- step 1: the live table, images, filter, help, quit

    @inlineCallbacks
    def test_table_follows_events(self) -> Any:
        """
        The table lists the containers when it starts, then follows the
        event stream: a container run, stopped and removed with the CLI
        appears, changes state and disappears without a refresh; the image
        list shows busybox.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            await until(lambda: "first" in rows(app), "the existing container")
            self.assertTrue(rows(app)["first"][4].startswith("Up"))
            self.assertEqual(rows(app)["first"][2], "busybox")
            await self.cli("run", "-d", "--name", "second", "busybox", "sleep", "1000")
            await until(lambda: "second" in rows(app) and rows(app)["second"][4].startswith("Up"), "second up")
            await self.cli("stop", "-t", "0", "second")
            await until(lambda: rows(app)["second"][4].startswith("Exited (137)"), "second exited")
            await self.cli("rm", "second")
            await until(lambda: "second" not in rows(app), "second gone")
            self.assertIn("first", rows(app))
            images = await until(lambda: app.query_one(ImagesView).shown(), "the image list")
            self.assertEqual([cells[:2] for cells in images], [("busybox", "latest")])

        result = yield self.ross("run", "-d", "--name", "first", "busybox", "sleep", "1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.pilot(scenario)

    @inlineCallbacks
    def test_filter_help_quit(self) -> Any:
        """
        The filter box narrows the table by name, image or status; ? shows
        the help and Escape closes it; q quits.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            await until(lambda: {"alpha", "beta"} <= set(rows(app)), "both containers")
            await pilot.press("slash")
            await type_text(pilot, "alp")
            await until(lambda: set(rows(app)) == {"alpha"}, "only alpha")
            await pilot.press("backspace", "backspace", "backspace")
            await type_text(pilot, "exited")
            await until(lambda: set(rows(app)) == {"beta"}, "only the exited beta")
            await pilot.press("ctrl+a", "ctrl+k")
            await until(lambda: set(rows(app)) == {"alpha", "beta"}, "both again")
            await pilot.press("enter")
            self.assertIs(app.focused, app.table)
            await pilot.press("question_mark")
            await until(lambda: isinstance(app.screen, HelpScreen), "the help")
            await pilot.press("escape")
            await until(lambda: not isinstance(app.screen, HelpScreen), "the help closed")
            await pilot.press("q")
            await until(lambda: not app.is_running, "the app to quit")

        yield self.ross("run", "-d", "--name", "alpha", "busybox", "sleep", "1000")
        yield self.ross("run", "--name", "beta", "busybox", "true")
        yield self.pilot(scenario)

    # -- step 2: actions

    @inlineCallbacks
    def test_stop_and_remove_confirmed(self) -> Any:
        """
        Stop and remove ask first: "n" leaves the container alone, "y" does
        it; the table follows.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            await self.select(app, pilot, "victim")
            await pilot.press("x")
            await until(lambda: isinstance(app.screen, ConfirmScreen), "the stop question")
            await pilot.press("n")
            await until(lambda: not isinstance(app.screen, ConfirmScreen), "the question gone")
            self.assertEqual(self.record("victim").state.status, "running")
            await pilot.press("x")
            await until(lambda: isinstance(app.screen, ConfirmScreen), "the stop question")
            await pilot.press("y")
            await until(lambda: rows(app)["victim"][4].startswith("Exited"), "victim exited")
            await pilot.press("s")
            await until(lambda: rows(app)["victim"][4].startswith("Up"), "victim started again")
            await pilot.press("p")
            await until(lambda: rows(app)["victim"][4].endswith("(Paused)"), "victim paused")
            await pilot.press("p")
            await until(lambda: not rows(app)["victim"][4].endswith("(Paused)"), "victim unpaused")
            await pilot.press("d")
            await until(lambda: isinstance(app.screen, ConfirmScreen), "the remove question")
            await pilot.press("y")
            await until(lambda: "victim" not in rows(app), "victim removed")

        yield self.ross("run", "-d", "--name", "victim", "busybox", "sleep", "1000")
        yield self.pilot(scenario)
        self.assertEqual(list(self.daemon.engine.containers.records), [])

    @inlineCallbacks
    def test_action_error_shown(self) -> Any:
        """
        A refused action shows the daemon's message and changes nothing.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            seen = record_notifications(app)
            await self.select(app, pilot, "done")
            await until(lambda: rows(app)["done"][4].startswith("Exited"), "done exited")
            await pilot.press("p")
            await until(lambda: any("pause done:" in text for text in seen), "the error")
            [text] = [t for t in seen if "pause done:" in t]
            self.assertIn("is not running", text)
            self.assertNotIn("Traceback", text)

        yield self.ross("run", "--name", "done", "busybox", "true")
        yield self.pilot(scenario)
        self.assertEqual(self.record("done").state.status, "exited")

    # -- step 3: logs and stats

    @inlineCallbacks
    def test_logs_follow_and_stop(self) -> Any:
        """
        The log pane shows the selected container's output and new lines as
        they come; selecting another container or closing the pane ends the
        stream's thread.
        """
        script = "echo first-line; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second-line; sleep 1000"

        async def scenario(app: RossApp, pilot: Any) -> None:
            await self.select(app, pilot, "talker")
            await pilot.press("l")
            logs = app.query_one(LogPane)
            text = lambda: "\n".join(logs.view.shown_text())  # noqa: E731
            await until(lambda: "first-line" in text(), "the first line")
            self.assertNotIn("second-line", text())
            await self.cli("exec", "talker", "touch", "/tmp/go")
            await until(lambda: "second-line" in text(), "the followed line")
            feed = logs.feed
            assert feed is not None
            await self.select(app, pilot, "quiet")
            old = feed
            await until(lambda: not old.thread.is_alive(), "the old stream's thread to end")
            self.assertEqual(logs.container_id, self.record("quiet").id)
            await until(lambda: "quiet-line" in text(), "the other container's log")
            self.assertNotIn("first-line", text())
            last = logs.feed
            assert last is not None
            await pilot.press("l")
            await until(lambda: not last.thread.is_alive(), "the stream's thread to end with the pane")
            self.assertFalse(logs.display)

        yield self.ross("run", "-d", "--name", "talker", "busybox", "sh", "-c", script)
        yield self.ross("run", "-d", "--name", "quiet", "busybox", "sh", "-c", "echo quiet-line; sleep 1000")
        yield self.pilot(scenario)

    @inlineCallbacks
    def test_stats_sparklines(self) -> Any:
        """
        The stats pane draws CPU and memory samples from the Stats stream.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            await self.select(app, pilot, "busy")
            await pilot.press("t")
            stats = app.query_one(StatsPane)
            await until(lambda: len(stats.memory) >= 2, "two samples")
            data = stats.query_one("#mem", Sparkline).data or []
            self.assertGreaterEqual(len(data), 2)
            self.assertTrue(all(value > 0 for value in data))
            self.assertTrue(str(stats.query_one("#cpu-label").render()).startswith("CPU "))
            await until(lambda: stats.history["blk"], "a block I/O rate")
            self.assertTrue(str(stats.query_one("#net-label").render()).startswith("NET in "))
            # Every running container, and all of them together.
            await pilot.press("6")
            every = app.query_one(StatsView)
            await until(lambda: [r[0] for r in every.shown()] == ["busy", "idle", "all (2)"], "the stats of all",
                        show=lambda: repr(every.shown()))
            await until(lambda: float(every.shown()[0][1]) > float(every.shown()[1][1]), "busy busier than idle")
            await pilot.press("1")
            await until(lambda: not every.feeds, "the streams ended with the view")

        yield self.ross("run", "-d", "--name", "busy", "busybox", "sh", "-c", "while true; do :; done")
        yield self.ross("run", "-d", "--name", "idle", "busybox", "sleep", "1000")
        yield self.pilot(scenario)

    # -- issue 17: logs you can work with

    @inlineCallbacks
    def test_log_search_filter_streams_export(self) -> Any:
        """
        The log pane searches what it shows (highlighted, n for the next),
        filters in the daemon with context, shows stderr only, timestamps,
        and exports what it shows; it shows the ross logs command.
        """
        script = ("i=0; while [ $i -lt 400 ]; do if [ $((i % 100)) = 7 ]; then echo needle$i; "
                  "else echo hay$i; fi; i=$((i+1)); done; sleep 0.5; echo oops >&2; sleep 1000")
        export = os.path.join(self.mktemp() + "-export.txt")

        async def scenario(app: RossApp, pilot: Any) -> None:
            await self.select(app, pilot, "haystack")
            await pilot.press("l")
            logs = app.query_one(LogPane)
            view = logs.view
            await until(lambda: "oops" in view.shown_text(), "the log")
            self.assertEqual(app.command_line, "ross logs -f --tail 500 haystack")
            view.focus()
            await pilot.press("slash")
            await type_text(pilot, "needle3")
            await pilot.press("enter")
            await until(lambda: view.current is not None, "a search hit")
            assert view.current is not None
            self.assertEqual(view.records[view.current].text, "needle307")
            strip = view.render_line(view.current - view.scroll_offset.y)
            self.assertIn("needle3", [s.text for s in strip if s.style and s.style.bgcolor])
            await pilot.press("ampersand")
            await pilot.press("ctrl+u")
            await type_text(pilot, "needle[0-9]+")
            await pilot.press("enter")
            await until(lambda: [r.text for r in view.records if not r.context and not r.gap] ==
                        ["needle7", "needle107", "needle207", "needle307"], "the daemon's matches",
                        show=lambda: repr(view.shown_text()))
            self.assertEqual(view.shown_text()[:6], ["hay5", "hay6", "needle7", "hay8", "hay9", "--"])
            self.assertIn("--grep 'needle[0-9]+' -C 2", app.command_line)
            await pilot.press("ampersand", "ctrl+u", "enter")
            await until(lambda: len(view.records) == 401, "the whole log again")
            await pilot.press("o")
            await until(lambda: len(view.records) == 400 and not any(r.stderr for r in view.records), "stdout only")
            await pilot.press("o")
            await until(lambda: [r.text for r in view.records] == ["oops"], "stderr only")
            self.assertTrue(view.records[0].stderr)
            await pilot.press("o")
            await until(lambda: len(view.records) == 401, "both streams")
            await pilot.press("t")
            await until(lambda: view.shown_text()[0].endswith("Z hay0"), "timestamps")
            await pilot.press("e")
            await pilot.press("ctrl+u")
            await type_text(pilot, export)
            await pilot.press("enter")
            await until(lambda: os.path.exists(export), "the export")
            with open(export) as f:
                self.assertEqual(f.read().splitlines(), view.shown_text())

        yield self.ross("run", "-d", "--name", "haystack", "busybox", "sh", "-c", script)
        yield self.pilot(scenario)

    @inlineCallbacks
    def test_filter_a_large_log(self) -> Any:
        """
        The filter searches a whole 500 MB log in the daemon, not the
        lines the pane tails: the pane gets the matches from anywhere in it
        with their context, and nothing else of it.
        """
        # 500,000 lines of 1 kB; the needles are far from the tail.
        script = ("awk 'BEGIN { s = sprintf(\"%1000s\", \"\"); gsub(/ /, \"x\", s); "
                  "for (i = 0; i < 500000; i++) if (i % 100000 == 7) print \"needle\" i; else print i s }'; "
                  "echo done; sleep 1000")

        async def scenario(app: RossApp, pilot: Any) -> None:
            await self.select(app, pilot, "large")
            await pilot.press("l")
            view = app.query_one(LogPane).view
            await until(lambda: "done" in view.shown_text(), "the log's end", timeout=120)
            view.focus()
            await pilot.press("ampersand", "ctrl+u")
            await type_text(pilot, "needle[0-9]+")
            await pilot.press("enter")
            expected = [f"needle{i}" for i in range(7, 500000, 100000)]
            await until(lambda: [r.text for r in view.records if not r.context and not r.gap] == expected,
                        "the daemon's matches", timeout=120, show=lambda: repr(view.shown_text()[:20]))
            # Each match with its two lines of context on either side, and
            # "--" between the groups: nothing else came.
            self.assertEqual(len(view.records), 5 * 5 + 4)
            self.assertEqual(view.shown_text()[:3], ["5" + "x" * 1000, "6" + "x" * 1000, "needle7"])
            self.assertEqual(app.command_line, "ross logs -f --grep 'needle[0-9]+' -C 2 large")

        yield self.ross("run", "-d", "--name", "large", "busybox", "sh", "-c", script)
        path = self.daemon.engine.containers.log_path(self.record("large").id)
        yield self.wait_for(lambda: os.path.exists(path) and os.path.getsize(path) > 500_000_000, timeout=120)
        yield self.pilot(scenario)

    @inlineCallbacks
    def test_logs_of_several_containers(self) -> Any:
        """
        Marked containers' logs interleave in one pane, each line tagged
        with its container.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            await self.select(app, pilot, "left")
            await pilot.press("space")
            await self.select(app, pilot, "right")
            await pilot.press("space")
            self.assertEqual(len(app.marked), 2)
            await pilot.press("l")
            view = app.query_one(LogPane).view
            await until(lambda: {"left | from-left", "right | from-right"} <= set(view.shown_text()),
                        "both logs", show=lambda: repr(view.shown_text()))
            self.assertEqual(view.records, sorted(view.records, key=lambda r: r.time_ns))

        yield self.ross("run", "-d", "--name", "left", "busybox", "sh", "-c", "echo from-left; sleep 1000")
        yield self.ross("run", "-d", "--name", "right", "busybox", "sh", "-c", "echo from-right; sleep 1000")
        yield self.pilot(scenario)

    # -- issue 17: views, marks, palette, keys

    @inlineCallbacks
    def test_marks_and_bulk_stop_via_palette(self) -> Any:
        """
        Two marked containers are stopped with one confirmation, chosen in
        the command palette; the command line shown is ross stop's.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            await self.select(app, pilot, "one")
            await pilot.press("space")
            await self.select(app, pilot, "two")
            await pilot.press("space")
            self.assertTrue(rows(app)["one"][0].startswith("● "))
            await pilot.press("ctrl+p")
            await type_text(pilot, "stop the marked")
            await until(lambda: isinstance(app.screen, CommandPalette)
                        and app.screen.query_one(CommandList).option_count > 0, "the palette's choices")
            self.assertIn("Stop the marked", str(app.screen.query_one(CommandList).get_option_at_index(0).prompt))
            await pilot.press("enter")
            question = await until(lambda: app.screen if isinstance(app.screen, ConfirmScreen) else None,
                                   "the question")
            self.assertIn("2 containers", question.question)
            await pilot.press("y")
            await until(lambda: all(rows(app)[n][4].startswith("Exited") for n in ("one", "two")), "both stopped",
                        timeout=60, show=lambda: repr(rows(app)))
            self.assertEqual(app.command_line, "ross stop one two")

        # They stop on SIGTERM at once (a PID 1 sleep would wait for the kill).
        for name in ("one", "two"):
            yield self.ross("run", "-d", "--name", name, "busybox", "sh", "-c",
                            "trap 'exit 0' TERM; while :; do sleep 0.1; done")
        yield self.pilot(scenario)

    @inlineCallbacks
    def test_remapped_keys(self) -> Any:
        """
        Keys from the config file's [keys] replace the defaults.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            await self.select(app, pilot, "keyed")
            await pilot.press("x")
            await pilot.pause()
            self.assertNotIsInstance(app.screen, ConfirmScreen)
            await pilot.press("k")
            await until(lambda: isinstance(app.screen, ConfirmScreen), "stop's question on k")
            await pilot.press("n")

        config = self.mktemp()
        with open(config, "w") as f:
            f.write('[keys]\nstop = "k"\n')
        self.patch(os, "environ", dict(os.environ, ROSS_TUI_CONFIG=config))
        from ross.tui.config import load

        keymap = load().keys
        yield self.ross("run", "-d", "--name", "keyed", "busybox", "sleep", "1000")
        yield run_pilot(settings(self.daemon.address), scenario, keymap=keymap)

    @inlineCallbacks
    def test_inspect_and_views(self) -> Any:
        """
        Inspect shows the container as a folding tree; the images view tags,
        shows history and removes; volumes and networks made with the CLI
        appear and are removed from their views; the events view shows
        what happened.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            await self.select(app, pilot, "looked")
            await pilot.press("i")
            screen = await until(lambda: app.screen if isinstance(app.screen, InspectScreen) else None, "inspect")
            self.assertEqual(screen.document["Name"], "/looked")
            tree = screen.query_one(Tree)
            labels = [str(node.label) for node in tree.root.children]
            self.assertIn("Config {", " ".join(labels))
            config = [n for n in tree.root.children if str(n.label).startswith("Config")][0]
            self.assertFalse(config.is_expanded)
            config.expand()
            await pilot.pause()
            self.assertTrue(any(str(n.label).startswith("Image: ") for n in config.children))
            self.assertEqual(app.command_line, "ross inspect --type container looked")
            await pilot.press("escape")
            await pilot.press("2")
            images = app.query_one(ImagesView)
            await until(lambda: images.shown(), "the images")
            await pilot.press("T")
            await until(lambda: isinstance(app.screen, PromptScreen), "the tag prompt")
            await type_text(pilot, "mine:v1")
            await pilot.press("enter")
            await until(lambda: ("mine", "v1") in [r[:2] for r in images.shown()], "the new tag")
            self.assertEqual(app.command_line, "ross tag busybox:latest mine:v1")
            mine = [r[:2] for r in images.shown()].index(("mine", "v1"))
            images.table.move_cursor(row=mine)
            await pilot.press("h")
            await until(lambda: isinstance(app.screen, HistoryScreen), "the history")
            await pilot.press("escape")
            await pilot.press("d")
            await until(lambda: isinstance(app.screen, ConfirmScreen), "the rmi question")
            await pilot.press("y")
            await until(lambda: ("mine", "v1") not in [r[:2] for r in images.shown()], "the tag removed")
            await self.cli("volume", "create", "keepsake")
            await self.cli("network", "create", "mesh")
            await pilot.press("3")
            volumes = app.query_one(VolumesView)
            await until(lambda: any(r[1] == "keepsake" for r in volumes.shown()), "the volume")
            await pilot.press("d")
            await until(lambda: isinstance(app.screen, ConfirmScreen), "the volume question")
            await pilot.press("y")
            await until(lambda: not any(r[1] == "keepsake" for r in volumes.shown()), "the volume removed")
            await pilot.press("4")
            networks = app.query_one(NetworksView)
            await until(lambda: any(r[1] == "mesh" for r in networks.shown()), "the network")
            names = [r[1] for r in networks.shown()]
            networks.table.move_cursor(row=names.index("mesh"))
            await pilot.press("d")
            await until(lambda: isinstance(app.screen, ConfirmScreen), "the network question")
            await pilot.press("y")
            await until(lambda: "mesh" not in [r[1] for r in networks.shown()], "the network removed")
            await pilot.press("5")
            events = app.query_one(EventsView).table
            shown = lambda: [tuple(str(c) for c in events.get_row(r))[1:3] for r in events.rows]  # noqa: E731
            await until(lambda: ("volume", "destroy") in shown() and ("network", "destroy") in shown(),
                        "the events", show=lambda: repr(shown()))

        yield self.ross("run", "-d", "--name", "looked", "busybox", "sleep", "1000")
        yield self.pilot(scenario)

class TuiPaneTests(TuiTestCase):
    """
    Shell panes on the direct channel, a local client's default (SPEC 3).
    """

    #: C{ROSS_DIRECT} for the console.
    direct = "1"

    @inlineCallbacks
    def setUp(self) -> Any:  # type: ignore[override]
        yield super().setUp()
        # The pilot's console runs in this process and reads the setting as
        # each pane opens.
        previous = os.environ.get("ROSS_DIRECT")
        os.environ["ROSS_DIRECT"] = self.direct
        self.addCleanup(self._restore_direct, previous)
        self.addCleanup(self.check_path)

    def _restore_direct(self, previous: str | None) -> None:
        if previous is None:
            os.environ.pop("ROSS_DIRECT", None)
        else:
            os.environ["ROSS_DIRECT"] = previous

    def check_path(self) -> None:
        """
        The panes' sessions went the way the test says.
        """
        handed = self.daemon.daemon.direct.handed
        if self.direct == "0":
            self.assertEqual(handed, 0)
        else:
            self.assertGreater(handed, 0)

    def assert_path(self, pane: ShellPane) -> None:
        """
        C{pane}'s session is on the path the test says.
        """
        assert pane.session is not None
        self.assertEqual(pane.session.direct, self.direct == "1")

    async def shell_pane(self, app: RossApp, pilot: Any, container: str) -> ShellPane:
        """
        Open a shell pane (C{e}) on C{container}; once its shell prompts.
        """
        await self.select(app, pilot, container)
        await pilot.press("e")
        pane = await until(lambda: app.query(ShellPane).first() if app.query(ShellPane) else None, "a pane")
        await until(lambda: "/ #" in screen_text(pane), "the prompt")
        return pane

    # -- step 4: shell panes

    @inlineCallbacks
    def test_shell_pane(self) -> Any:
        """
        A shell pane is a terminal: commands run and print on its screen,
        the shell sees the pane's size, arrow keys edit the line, Ctrl-C
        interrupts the foreground command.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            pane = await self.shell_pane(app, pilot, "box")
            self.assert_path(pane)
            self.assertIs(app.focused, pane.terminal)
            await type_text(pilot, "echo $((6*7)); stty size")
            await pilot.press("enter")
            rows_, cols = pane.terminal.terminal_size or (0, 0)
            await until(lambda: "42" in pane.terminal.lines() and f"{rows_} {cols}" in pane.terminal.lines(),
                        "the output and the pane's size")
            await type_text(pilot, "printf '\\033[31mred-%s\\033[0m\\n' text")
            await pilot.press("enter")
            found = await until(lambda: [y for y, line in enumerate(pane.terminal.lines()) if line == "red-text"],
                                "the coloured line")
            await until(lambda: pane.terminal.drawn, "the screen drawn")
            styles = {segment.text: segment.style for segment in pane.terminal.render_line(found[0])}
            red = styles["red-text"]
            self.assertEqual(red.color.number if red and red.color else None, 1)
            await type_text(pilot, "echo ab")
            await pilot.press("left")
            await type_text(pilot, "X")
            await pilot.press("enter")
            await until(lambda: "aXb" in pane.terminal.lines(), "the line edited with an arrow key")
            await type_text(pilot, "sleep 1000")
            await pilot.press("enter")
            await until(lambda: "sleep 1000" in run_cli(self.daemon.address, "exec", "box", "ps", "-o", "args")
                        .stdout.decode(), "sleep to run")
            await pilot.press("ctrl+c")
            await type_text(pilot, "echo alive")
            await pilot.press("enter")
            await until(lambda: "alive" in pane.terminal.lines(), "the shell back after Ctrl-C")
            await pilot.resize_terminal(100, 40)
            await until(lambda: pane.terminal.terminal_size != (rows_, cols), "the pane resized")
            rows_, cols = pane.terminal.terminal_size or (0, 0)
            await type_text(pilot, "clear; stty size")
            await pilot.press("enter")
            await until(lambda: f"{rows_} {cols}" in pane.terminal.lines(), "the shell to see the new size",
                        show=lambda: screen_text(pane))
            # Ctrl-Q quits from a pane too (run_pilot checks that the
            # session's thread ends with the app).
            await pilot.press("ctrl+q")
            await until(lambda: not app.is_running, "the app to quit")

        yield self.ross("run", "-d", "--name", "box", "busybox", "sleep", "1000")
        yield self.pilot(scenario)

    @inlineCallbacks
    def test_ctrl_p_and_detach_keys(self) -> Any:
        """
        In a pane Ctrl-P is the program's, not the palette's (the shell
        recalls its last line with it), and Ctrl-P Ctrl-Q, docker's detach
        keys, detach the pane without quitting the console; the shell runs
        on.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            pane = await self.shell_pane(app, pilot, "box")
            self.assert_path(pane)
            await type_text(pilot, "echo recalled-$((1+1))")
            await pilot.press("enter")
            await until(lambda: "recalled-2" in pane.terminal.lines(), "the first answer")
            await pilot.press("ctrl+p")
            await pilot.press("enter")
            await until(lambda: pane.terminal.lines().count("recalled-2") == 2, "the line recalled and run again",
                        show=lambda: screen_text(pane))
            self.assertNotIsInstance(app.screen, CommandPalette)
            await pilot.press("ctrl+p", "ctrl+q")
            await until(lambda: not app.query(ShellPane), "the pane detached")
            self.assertTrue(app.is_running)

        yield self.ross("run", "-d", "--name", "box", "busybox", "sleep", "1000")
        yield self.pilot(scenario)
        # The pane's shell was detached, not ended.
        listed = yield self.ross("exec", "box", "ps", "-o", "args")
        self.assertIn(b"sh", [line.strip() for line in listed.stdout.splitlines()], listed.stdout)

    @inlineCallbacks
    def test_top_and_vi(self) -> Any:
        """
        Full-screen programs draw on the pane: busybox top fills it with its
        header and process list; vi shows its empty-line tildes down to the
        status line, takes insert mode, Escape and arrow keys, and writes
        the file.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            pane = await self.shell_pane(app, pilot, "editor")
            rows_, cols = pane.terminal.terminal_size or (0, 0)
            await type_text(pilot, "top")
            await pilot.press("enter")
            await until(lambda: pane.terminal.lines()[0].startswith("Mem:")
                        and any(line.lstrip().startswith("PID") for line in pane.terminal.lines()),
                        "top's screen")
            # top draws its screen in pieces: its own line may come a write later.
            await until(lambda: any(line.endswith(" top") for line in pane.terminal.lines()), "top's own line",
                        show=lambda: screen_text(pane))
            await pilot.press("q")
            await until(lambda: pane.terminal.lines()[pane.terminal.cursor[0]].startswith("/ #"), "the prompt after top")
            await type_text(pilot, "clear; vi /tmp/note")
            await pilot.press("enter")
            await until(lambda: pane.terminal.lines()[1:rows_ - 1] == ["~"] * (rows_ - 2), "vi's empty buffer")
            status = lambda: pane.terminal.lines()[rows_ - 1]  # noqa: E731
            await pilot.press("i")
            # vi tells its mode on the status line: "I" inserting, "-" not.
            # Waiting for it keeps Escape apart from the next key's escape
            # sequence, as a person's typing does.
            await until(lambda: status().startswith("I"), "insert mode", show=status)
            await type_text(pilot, "hello world")
            await pilot.press("escape")
            await until(lambda: status().startswith("-"), "command mode", show=status)
            await pilot.press("left", "left", "left", "left")
            await type_text(pilot, "i")
            await until(lambda: status().startswith("I"), "insert mode", show=status)
            await type_text(pilot, "BIG ")
            await pilot.press("escape")
            await until(lambda: status().startswith("-"), "command mode again", show=status)
            await until(lambda: pane.terminal.lines()[0] == "hello BIG world", "the edit made with arrow keys",
                        show=lambda: screen_text(pane))
            await type_text(pilot, ":wq")
            await pilot.press("enter")
            await type_text(pilot, "clear; cat /tmp/note")
            await pilot.press("enter")
            await until(lambda: "hello BIG world" in pane.terminal.lines(), "the file vi wrote")
            self.assertEqual(pane.terminal.emulator.cols, cols)

        yield self.ross("run", "-d", "--name", "editor", "busybox", "sleep", "1000")
        yield self.pilot(scenario)

    @inlineCallbacks
    def test_two_panes_and_attach_replay(self) -> Any:
        """
        Two panes side by side, each its own session; attaching to the main
        process shows its recent screen; closing a pane detaches, as the
        detach keys do, and the container keeps running.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            seen = record_notifications(app)
            await self.select(app, pilot, "keeper")
            await pilot.press("a")
            await until(lambda: len(app.query(ShellPane)) == 1, "the attach pane")
            attached = app.query(ShellPane)[0]
            await until(lambda: "marker-2" in screen_text(attached), "the replayed screen")
            await pilot.press("ctrl+right_square_bracket")
            self.assertIs(app.focused, app.table)
            await pilot.press("e")
            await until(lambda: len(app.query(ShellPane)) == 2, "the exec pane")
            shell = app.query(ShellPane)[1]
            await until(lambda: "/ #" in screen_text(shell), "the exec prompt")
            await until(lambda: shell.terminal.terminal_size is not None, "the pane laid out")
            self.assertLess(shell.region.width, app.size.width // 2 + 2)
            self.assertEqual(shell.region.y, attached.region.y)
            await type_text(pilot, "echo in-exec-$((2+2))")
            await pilot.press("enter")
            await until(lambda: "in-exec-4" in shell.terminal.lines(), "the exec pane's output")
            self.assertNotIn("in-exec-4", attached.terminal.lines())
            attached.terminal.focus()
            await type_text(pilot, "echo in-main-$((3+3))")
            await pilot.press("enter")
            await until(lambda: "in-main-6" in attached.terminal.lines(), "the attached pane's output")
            self.assertNotIn("in-main-6", shell.terminal.lines())
            self.assert_path(attached)
            self.assert_path(shell)
            sessions = [attached.session, shell.session]
            # The exec'd shell exits: its pane closes and says how.
            shell.terminal.focus()
            await type_text(pilot, "exit 3")
            await pilot.press("enter")
            await until(lambda: len(app.query(ShellPane)) == 1, "the exec pane closed")
            await until(lambda: "sh: keeper exited (3)" in seen, "the exit told", show=lambda: repr(seen))
            self.assertIs(app.focused, attached.terminal)
            # Closing the other detaches from the main process.
            await pilot.press("ctrl+right_square_bracket", "w")
            await until(lambda: not app.query(ShellPane), "both panes closed")
            for session in sessions:
                assert session is not None
                await until(lambda: not session.thread.is_alive(), "the session's thread to end")
            self.assertIs(app.focused, app.table)
            # Attached again, the screen is as it was left; the detach keys
            # (docker's default) leave it, on either path.
            await pilot.press("a")
            again = await until(lambda: app.query(ShellPane).first() if app.query(ShellPane) else None,
                                "the pane attached again")
            await until(lambda: "in-main-6" in screen_text(again), "the screen as it was left")
            self.assert_path(again)
            # (Pasted: the command palette has Ctrl-P.)
            again.terminal.post_message(events.Paste("\x10\x11"))
            await until(lambda: "attach: keeper: detached" in seen, "the detach told", show=lambda: repr(seen))
            await until(lambda: not app.query(ShellPane), "the pane closed on the detach keys")

        yield self.ross("run", "-dit", "--name", "keeper", "busybox", "sh", "-c", "echo marker-$((1+1)); exec sh")
        yield self.pilot(scenario)
        self.assertEqual(self.record("keeper").state.status, "running")

    # -- issue 17: panes that keep up

    @inlineCallbacks
    def test_flood_keys_still_answer(self) -> Any:
        """
        While a shell pane floods (5 MB and more of output), keys still
        work: the user leaves the pane, filters the table and opens the
        help, and the flood is still going on after each of them.
        """

        async def scenario(app: RossApp, pilot: Any) -> None:
            pane = await self.shell_pane(app, pilot, "flooder")
            await type_text(pilot, "while :; do cat /tmp/big; done")
            await pilot.press("enter")
            term = pane.terminal
            await until(lambda: term.bytes_fed > 1 << 20, "the flood")
            self.assert_path(pane)
            await pilot.press("ctrl+right_square_bracket")
            self.assertIs(app.focused, app.table)
            await pilot.press("slash")
            await type_text(pilot, "flood")
            await until(lambda: app.query_one("#filter", Input).value == "flood", "the typed filter")
            self.assertEqual(set(rows(app)), {"flooder"})
            handled = term.bytes_fed
            await until(lambda: term.bytes_fed > handled, "more of the flood after the keys")
            await pilot.press("enter", "question_mark")
            await until(lambda: isinstance(app.screen, HelpScreen), "the help")
            handled = term.bytes_fed
            await until(lambda: term.bytes_fed > handled, "more of the flood with the help open")
            await pilot.press("escape")
            await until(lambda: term.bytes_fed > 5_000_000, "5 MB through the pane", timeout=120)
            self.assertGreater(len(term.history()), 1000)
            term.focus()
            await pilot.press("ctrl+c")
            await type_text(pilot, "echo after-$((1+1))")
            await pilot.press("enter")
            await until(lambda: "after-2" in term.lines(), "the shell back after the flood", timeout=60)

        yield self.ross("run", "-d", "--name", "flooder", "busybox", "sh", "-c",
                        "yes 'a line of the flood, coloured \033[31mred\033[0m and plain' | head -c 2000000 "
                        "> /tmp/big; sleep 1000")
        yield self.pilot(scenario)

    # -- once through a real terminal

    @inlineCallbacks
    def test_real_terminal(self) -> Any:
        """
        ``ross-tui`` in tmux: the container table on the screen, a shell
        pane's output, and the terminal's settings as they were after q.
        """
        if not shutil.which("tmux"):
            self.fail("tmux is not installed: ./dev setup installs it")
        yield self.ross("run", "-d", "--name", "tmuxed", "busybox", "sleep", "1000")
        base = self.mktemp()
        os.makedirs(base)
        session = "ross-tui-test"
        # tmux's own socket, in a directory of the test's (-L would leave one
        # in /tmp/tmux-UID).
        sockets = short_tempdir()
        self.addCleanup(shutil.rmtree, sockets, True)
        socket = str(sockets / "tmux.sock")
        # The console script as installed (./dev setup installs it).
        script_path = os.path.join(os.path.dirname(sys.executable), "ross-tui")
        if not os.path.exists(script_path):
            self.fail(f"{script_path} is missing: run ./dev setup")
        tui = shlex.join([script_path, "-H", self.daemon.address])
        script = (f"stty -a > {base}/before; {tui}; echo exit=$? > {base}/status; stty -a > {base}/after; "
                  "echo back-at-the-shell; sleep 1000")
        env = dict(os.environ, PYTHONPATH=str(REPO), TERM="xterm-256color", ROSS_DIRECT=self.direct)
        for name in ("ROSS_TLS_CA", "ROSS_TLS_CERT", "ROSS_TLS_KEY", "ROSS_TOKEN"):
            env.pop(name, None)

        def tmux(*args: str) -> str:
            return subprocess.run(["tmux", "-S", socket, *args], env=env, capture_output=True, text=True,
                                  check=True, timeout=30).stdout

        def screen_until(text: str) -> str:
            deadline = time.monotonic() + 30
            while True:
                shown = tmux("capture-pane", "-p", "-t", session)
                if text in shown:
                    return shown
                if time.monotonic() > deadline:
                    raise AssertionError(f"timed out waiting for {text!r} on:\n{shown}")
                time.sleep(0.05)

        def scenario() -> tuple[str, str]:
            tmux("new-session", "-d", "-s", session, "-x", "140", "-y", "44", "sh", "-c", script)
            table = screen_until("tmuxed")
            # Typed at once, as a paste: what follows "e" is the shell's,
            # even while its pane is still being made.
            tmux("send-keys", "-t", session, "eecho hello-$((40+2))", "Enter")
            shell = screen_until("│hello-42")
            tmux("send-keys", "-t", session, "C-]")
            tmux("send-keys", "-t", session, "q")
            screen_until("back-at-the-shell")
            return table, shell

        self.addCleanup(lambda: subprocess.run(["tmux", "-S", socket, "kill-server"], capture_output=True,
                                                    timeout=30))
        table, shell = yield deferToThread(scenario)
        self.assertIn("CONTAINER ID", table)
        self.assertIn("busybox", table)
        self.assertIn("sh: tmuxed", shell)
        with open(f"{base}/status") as f:
            self.assertEqual(f.read(), "exit=0\n")
        with open(f"{base}/before") as f, open(f"{base}/after") as g:
            self.assertEqual(f.read(), g.read())



class GrpcPathTuiPaneTests(TuiPaneTests):
    """
    Shell panes on the gRPC stream (C{ROSS_DIRECT=0}, what remote consoles
    use).
    """

    direct = "0"


class TuiRemoteTests(TestCase):
    """
    The console over TCP with mutual TLS and a token, configured as the
    CLI is.
    """

    timeout = 60

    @inlineCallbacks
    def test_tls_and_token(self) -> Any:
        """
        With the right certificates and token the event feed connects; with
        a wrong token the user reads the daemon's refusal, not a traceback.
        """
        ca = certs.authority()
        server = ca.issue("ross-daemon", server=True)
        daemon = InProcessDaemon(self, listeners=[parse_listen("tcp://127.0.0.1:0")],
                                 tls=TLSFiles(cert=server.cert, key=server.key, ca=ca.pem), token="s3cret")
        yield daemon.start()
        api = daemon.daemon.api
        address = api.address_of(api.listeners[0])
        d = short_tempdir()
        self.addCleanup(shutil.rmtree, d)
        (d / "ca.pem").write_bytes(ca.pem)
        cert, key = ca.issue("tui").write(d, "tui")
        good = settings(address, tls_ca=str(d / "ca.pem"), tls_cert=cert, tls_key=key, token="s3cret")

        async def connected(app: RossApp, pilot: Any) -> None:
            await until(lambda: app.connected, "the event feed over TLS")
            self.assertEqual(app.sub_title, address)

        yield run_pilot(good, connected)
        bad = settings(address, tls_ca=str(d / "ca.pem"), tls_cert=cert, tls_key=key, token="wrong")

        seen: list[str] = []

        async def refused(app: RossApp, pilot: Any) -> None:
            await until(lambda: seen, "the refusal")
            self.assertIn("refused the credentials", seen[0])
            self.assertFalse(app.connected)
            self.assertTrue(app.sub_title.endswith("(disconnected)"))

        yield run_pilot(bad, refused, prepare=lambda app: record_notifications(app, seen))
        deadline = time.monotonic() + 15
        while tui_threads():
            self.assertLess(time.monotonic(), deadline, f"threads left: {tui_threads()}")
            yield deferLater(reactor, 0.05, lambda: None)


class TuiReconnectTests(TestCase):
    """
    The console outlives a daemon restart (a real ``twistd -n ross``).
    """

    timeout = 180

    def setUp(self) -> None:
        self.daemon = DaemonProcess()
        self.addCleanup(self.daemon.cleanup)
        self.addCleanup(self.remove_all)

    def remove_all(self) -> Any:
        if self.daemon.process is None or self.daemon.process.poll() is not None:
            return None

        def remove() -> None:
            ids = self.daemon.ross("ps", "-aq", "--no-trunc").stdout.split()
            if ids:
                self.daemon.ross("rm", "-f", *[i.decode() for i in ids])

        return deferToThread(remove)

    def ross_ok(self, *args: str) -> str:
        result = self.daemon.ross(*args)
        if result.returncode != 0:
            raise AssertionError(f"ross {' '.join(args)} failed: {result.stderr.decode()}")
        return result.stdout.decode()

    @inlineCallbacks
    def test_reconnects_after_daemon_restart(self) -> Any:
        """
        When the daemon goes away the console says so once and shows itself
        disconnected; when it is back the console connects again by itself
        and the table follows events again.
        """

        def prepare() -> None:
            self.daemon.start()
            self.ross_ok("load", "-i", str(docker_archive(self.daemon.base / "busybox.tar").path))
            self.ross_ok("run", "-d", "--name", "survivor", "busybox", "sleep", "1000")

        yield deferToThread(prepare)
        seen: list[str] = []

        async def scenario(app: RossApp, pilot: Any) -> None:
            await until(lambda: "survivor" in rows(app), "the container")
            await asyncio.to_thread(self.daemon.stop)
            await until(lambda: not app.connected, "the loss noticed")
            self.assertTrue(app.sub_title.endswith("(disconnected)"))
            await until(lambda: seen, "the user told")
            await asyncio.to_thread(self.daemon.start)
            await until(lambda: app.connected, "connected again", timeout=60)
            self.assertTrue(rows(app)["survivor"][4].startswith("Up"))
            await asyncio.to_thread(self.ross_ok, "stop", "-t", "0", "survivor")
            await until(lambda: rows(app)["survivor"][4].startswith("Exited"), "an event after the restart")
            self.assertEqual(len(seen), 1, seen)

        yield run_pilot(settings(self.daemon.address), scenario, prepare=lambda app: record_notifications(app, seen))


class TuiManyHostsTests(ContainerTestCase):
    """
    Two daemons in one table: the in-process one and a real ``twistd -n
    ross``, each with its own connection.
    """

    timeout = 240

    @inlineCallbacks
    def test_two_daemons_one_table(self) -> Any:
        """
        Both daemons' containers are in the table with a HOST column; an
        action goes to the right daemon and shows -H; a daemon that goes
        away is greyed out and comes back by itself.
        """
        other = DaemonProcess()
        self.addCleanup(other.cleanup)

        def prepare() -> None:
            other.start()
            for args in (("load", "-i", str(docker_archive(other.base / "busybox.tar").path)),
                         ("run", "-d", "--name", "there", "busybox", "sleep", "1000")):
                result = other.ross(*args)
                if result.returncode != 0:
                    raise AssertionError(result.stderr.decode())

        yield deferToThread(prepare)
        self.addCleanup(lambda: deferToThread(other.ross, "rm", "-f", "there"))
        yield self.ross("run", "-d", "--name", "here", "busybox", "sleep", "1000")

        def table(app: RossApp) -> dict[str, tuple[str, ...]]:
            return {cells[2]: cells for cells in (tuple(str(c) for c in app.table.get_row(r)) for r in app.table.rows)}

        async def scenario(app: RossApp, pilot: Any) -> None:
            await until(lambda: {"here", "there"} <= set(table(app)), "both daemons' containers",
                        show=lambda: repr(table(app)))
            self.assertEqual(table(app)["here"][0], "near")
            self.assertEqual(table(app)["there"][0], "far")
            names = list(table(app))
            app.table.move_cursor(row=names.index("there"))
            await pilot.press("p")
            await until(lambda: table(app)["there"][5].endswith("(Paused)"), "there paused")
            self.assertEqual(app.command_line, f"ross -H {other.address} pause there")
            self.assertFalse(table(app)["here"][5].endswith("(Paused)"))
            await asyncio.to_thread(other.stop)
            await until(lambda: table(app)["there"][5].endswith("(unreachable)"), "there greyed out")
            self.assertTrue(app.sub_title.endswith("far (disconnected)"))
            self.assertFalse(table(app)["here"][5].endswith("(unreachable)"))
            await asyncio.to_thread(other.start)
            await until(lambda: app.connected, "far connected again", timeout=60)
            await until(lambda: not table(app)["there"][5].endswith("(unreachable)"), "there back")

        def run() -> None:
            hosts = [Host.open(0, "near", settings(self.daemon.address)),
                     Host.open(1, "far", settings(other.address))]

            async def main() -> None:
                app = RossApp(hosts=hosts)
                async with app.run_test(size=(160, 48)) as pilot:
                    await scenario(app, pilot)

            try:
                asyncio.run(main())
            finally:
                for host in hosts:
                    host.close()

        yield deferToThread(run)


class PaneSessionSurvivalTests(TestCase):
    """
    A pane's TTY session on the gRPC stream (C{ROSS_DIRECT=0}, as with a
    remote daemon) outlives a daemon SIGKILL: it attaches again by itself
    (L{ross.tui.client.attach_again}, what the pane gives its session).
    """

    timeout = 120

    def setUp(self) -> None:
        self.daemon = DaemonProcess()
        self.addCleanup(self.daemon.cleanup)
        self.patch(os, "environ", dict(os.environ, ROSS_DIRECT="0"))

    def scenario(self) -> None:
        daemon = self.daemon
        daemon.start()
        archive = docker_archive(daemon.base / "busybox.tar")
        self.assertEqual(daemon.ross("load", "-i", str(archive.path)).returncode, 0)
        self.assertEqual(daemon.ross("run", "-d", "-it", "--name", "box", "busybox", "sh").returncode, 0)
        cli = connect(settings(daemon.address))
        self.addCleanup(cli.close)
        output = bytearray()
        exits: list[Any] = []
        grew = threading.Condition()

        def on_frame(frame: Any) -> None:
            with grew:
                kind = frame.WhichOneof("output")
                if kind == "data":
                    output.extend(frame.data.data)
                elif kind == "exit":
                    exits.append(frame.exit)
                grew.notify_all()

        def wait_for(predicate: Callable[[], bool]) -> None:
            with grew:
                if not grew.wait_for(predicate, timeout=30):
                    self.fail(f"timed out; output ends with {bytes(output[-500:])!r}")

        start = container_pb2.ExecInput(start=container_pb2.ExecConfig(
            container_id="box", cmd=["sh"], tty=True, attach_stdin=True,
            window=common_pb2.WindowSize(rows=24, cols=80), direct=cli.direct_channels()))
        session = Session("survivor", cli.stub("ContainerService").Exec, Frames(container_pb2.ExecInput), start,
                          on_frame, lambda error: None, reattach=attach_again(cli, True, lambda: (30, 100)))
        self.addCleanup(session.close)
        session.begin()
        wait_for(lambda: b"# " in output)
        session.send(b"echo before-$((1+1))\r")
        wait_for(lambda: b"before-2\r\n" in output)
        daemon.kill()
        session.send(b"echo during-$((2+2))\r")
        time.sleep(1)
        daemon.start()
        wait_for(lambda: b"during-4\r\n" in output)
        session.send(b"stty size\r")
        wait_for(lambda: b"30 100\r\n" in output)
        session.send(b"exit 5\r")
        wait_for(lambda: bool(exits))
        self.assertEqual(exits[0].status_code, 5)
        self.assertFalse(session.direct)
        self.assertGreaterEqual(session.reattached, 1)
        self.assertEqual(output.count(b"before-2\r\n"), 1)
        self.assertEqual(output.count(b"during-4\r\n"), 1)

    def test_daemon_killed(self) -> Any:
        return deferToThread(self.scenario)
