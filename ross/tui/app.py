# -*- test-case-name: ross.test.integration.test_tui -*-
"""
``ross-tui``: a full-screen console on the daemon's API.

The container table follows the daemon's Events stream: the feed lists
everything once when it connects, then looks up each container an event
names (in the feed's thread, in event order, so a later event is never
overtaken by an earlier one's answer). Nothing polls. Actions, logs,
stats and shells use the same connection as the CLI (``-H``, TLS and token
settings included), always from threads: Textual's event loop never waits
on the network.
"""

from __future__ import annotations

import sys
import time
from typing import Any, Callable

import grpc
from textual import events, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Footer, Header, Input, TabbedContent, TabPane
from textual.widgets.data_table import CellDoesNotExist

from ross.cli.base import Cli, timestamp_of
from ross.cli.main import Globals, UsageError, parse_globals
from ross.tui.client import Feed, connect, error_text
from ross.tui.messages import (
    ContainerChanged,
    ContainerGone,
    ContainersListed,
    FeedLost,
    ImagesListed,
    Notice,
    PaneClosed,
)
from ross.tui.panes import LogPane, ShellPane, StatsPane
from ross.tui.rows import CONTAINER_COLUMNS, IMAGE_COLUMNS, container_cells, image_rows, matches, state_name
from ross.tui.screens import ConfirmScreen, HelpScreen
from ross.tui.terminal import Terminal
from ross.v1 import container_pb2, image_pb2, system_pb2

#: Events older than this are replayed when the feed connects, so nothing
#: between the subscription and the first listing is missed.
REPLAY_SECONDS = 60.0
#: Wait before connecting again after the event feed is lost.
RECONNECT_SECONDS = 2.0

USAGE = """\
Usage:  ross-tui [OPTIONS]

A full-screen console for Ross: containers, images, logs, stats and shells

Options:
  -H, --host string      Daemon address: unix:///path or tcp://HOST:PORT
                         (default $ROSS_HOST or unix:///run/ross/ross.sock)
      --tls-ca string    CA certificate the daemon's must chain to ($ROSS_TLS_CA)
      --tls-cert string  Client certificate, for mutual TLS ($ROSS_TLS_CERT)
      --tls-key string   Client private key ($ROSS_TLS_KEY)
      --token string     Bearer token for the daemon ($ROSS_TOKEN)
  -h, --help             Print this help

Press ? in the console for its keys.
"""


class RossApp(App[None]):
    """
    The console. C{cli} is the connection (L{ross.tui.client.connect}).
    """

    CSS_PATH = "ross.tcss"
    TITLE = "Ross"

    BINDINGS = [
        Binding("q", "quit", "Quit"),
        Binding("question_mark", "help", "Help"),
        Binding("slash", "filter", "Filter"),
        Binding("s", "start", "Start"),
        Binding("x", "stop", "Stop"),
        Binding("r", "restart", "Restart"),
        Binding("p", "pause", "Pause"),
        Binding("d,delete", "remove", "Remove"),
        Binding("l", "logs", "Logs"),
        Binding("t", "stats", "Stats"),
        Binding("e", "exec", "Shell"),
        Binding("a", "attach", "Attach"),
        Binding("w", "close_pane", "Close pane"),
        Binding("1", "tab('containers')", "Containers", show=False),
        Binding("2", "tab('images')", "Images", show=False),
        Binding("ctrl+right_square_bracket", "leave_pane", "Leave pane", show=False, priority=True),
        # Escape leaves the filter box; a terminal pane keeps it for its program.
        Binding("escape", "leave_pane", show=False),
    ]

    def __init__(self, cli: Cli) -> None:
        super().__init__()
        self.cli = cli
        self.containers: dict[str, Any] = {}
        self.feed: Feed | None = None
        self.connected = False
        self._told_lost = False
        self._last_pane: ShellPane | None = None
        self._panes = 0

    # -- layout

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="containers", id="tabs"):
            with TabPane("Containers", id="containers"):
                yield Input(placeholder="Filter: name, image or status (/)", id="filter")
                yield DataTable(id="container-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Images", id="images"):
                yield DataTable(id="image-table", cursor_type="row", zebra_stripes=True)
        with Horizontal(id="details"):
            yield LogPane(self.cli, id="logs")
            yield StatsPane(self.cli, id="stats")
        yield Horizontal(id="shells")
        yield Footer()

    @property
    def table(self) -> DataTable[str]:
        return self.query_one("#container-table", DataTable)

    @property
    def image_table(self) -> DataTable[str]:
        return self.query_one("#image-table", DataTable)

    def on_mount(self) -> None:
        self.sub_title = self.cli.globals.host
        for key in CONTAINER_COLUMNS:
            self.table.add_column(key, key=key)
        for key in IMAGE_COLUMNS:
            self.image_table.add_column(key, key=key)
        self.query_one("#logs").display = False
        self.query_one("#stats").display = False
        self.query_one("#details").display = False
        self.query_one("#shells").display = False
        self.table.focus()
        self._connect()
        # Only the clock moves "Up 3 minutes" on: redraw it, asking nobody.
        self.set_interval(5.0, self._refresh_status)

    def on_unmount(self) -> None:
        if self.feed is not None:
            self.feed.cancel()
            self.feed = None

    # -- the event feed

    def _connect(self) -> None:
        # Stubs come from the event loop only (the Cli's cache is not made
        # for threads); making one does no I/O beyond reading TLS files once.
        system = self.cli.stub("SystemService")
        containers = self.cli.stub("ContainerService")
        images = self.cli.stub("ImageService")
        since = time.time() - REPLAY_SECONDS

        def start() -> Any:
            call = system.Events(system_pb2.EventsRequest(types=["container", "image"], since=timestamp_of(since)))
            try:
                listed = containers.ListContainers(container_pb2.ListContainersRequest(all=True)).containers
                self.post_message(ContainersListed(list(listed)))
                self.post_message(ImagesListed(list(images.ListImages(image_pb2.ListImagesRequest()).images)))
            except grpc.RpcError:
                call.cancel()
                raise
            return call

        def on_event(event: Any) -> None:
            if event.type == "image":
                self.post_message(ImagesListed(list(images.ListImages(image_pb2.ListImagesRequest()).images)))
                return
            if not event.actor_id or event.action.startswith("exec_"):
                return
            if event.action == "destroy":
                self.post_message(ContainerGone(event.actor_id))
                return
            try:
                found = containers.InspectContainer(container_pb2.InspectContainerRequest(container_id=event.actor_id))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                self.post_message(ContainerGone(event.actor_id))
                return
            self.post_message(ContainerChanged(found.container))

        def on_end(error: grpc.RpcError | None) -> None:
            self.post_message(FeedLost(error_text(self.cli, error) if error else "the daemon ended the event stream"))

        self.feed = Feed("events", start, on_event, on_end).begin()

    def on_containers_listed(self, message: ContainersListed) -> None:
        self.connected = True
        self._told_lost = False
        self.sub_title = self.cli.globals.host
        self.containers = {c.id: c for c in message.containers}
        self._refresh_table()

    def on_container_changed(self, message: ContainerChanged) -> None:
        c = message.container
        self.containers[c.id] = c
        self._refresh_table()
        logs, stats = self.query_one(LogPane), self.query_one(StatsPane)
        running = state_name(c) == "running"
        # A pane whose stream ended with the container picks it up again.
        if running and logs.display and logs.container_id == c.id and logs.feed is None:
            logs.follow(c.id, c.name)
        if running and stats.display and stats.container_id == c.id and stats.feed is None:
            stats.follow(c.id, c.name)

    def on_container_gone(self, message: ContainerGone) -> None:
        if self.containers.pop(message.container_id, None) is not None:
            self._refresh_table()

    def on_images_listed(self, message: ImagesListed) -> None:
        table = self.image_table
        table.clear()
        for key, cells in image_rows(message.images):
            table.add_row(*cells, key=key)

    def on_feed_lost(self, message: FeedLost) -> None:
        self.feed = None
        # Once per loss: retries that fail the same way say nothing new.
        if not self._told_lost:
            self._told_lost = True
            self.notify(message.error, title="Event stream lost", severity="error")
        self.connected = False
        self.sub_title = f"{self.cli.globals.host} (disconnected)"
        self.set_timer(RECONNECT_SECONDS, self._connect)

    # -- the container table

    def shown_containers(self) -> list[Any]:
        """
        The containers the filter selects, newest first.
        """
        text = self.query_one("#filter", Input).value
        shown = [c for c in self.containers.values() if matches(c, text)]
        return sorted(shown, key=lambda c: (c.created.seconds, c.created.nanos), reverse=True)

    def _refresh_table(self) -> None:
        """
        Bring the table in line with C{self.containers} and the filter:
        cells change in place; rows come and go with the cursor kept on
        the same container.
        """
        table = self.table
        shown = self.shown_containers()
        keys = [c.id for c in shown]
        current = [row.value for row in table.rows]
        if keys == current:
            for c in shown:
                for column, value in zip(CONTAINER_COLUMNS, container_cells(c)):
                    if table.get_cell(c.id, column) != value:
                        table.update_cell(c.id, column, value)
            return
        selected = self.selected_id()
        table.clear()
        for c in shown:
            table.add_row(*container_cells(c), key=c.id)
        if selected in keys:
            table.move_cursor(row=keys.index(selected))

    def _refresh_status(self) -> None:
        if self.containers:
            self._refresh_table()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self._refresh_table()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.table.focus()

    def selected_id(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except CellDoesNotExist:
            return None
        return key.value

    def selected(self) -> Any:
        cid = self.selected_id()
        return self.containers.get(cid) if cid else None

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "container-table":
            return
        c = self.selected()
        for pane in (self.query_one(LogPane), self.query_one(StatsPane)):
            if pane.display and (c is None or pane.container_id != c.id):
                pane.follow(c.id if c else None, c.name if c else "")

    # -- actions on the selected container

    def _with_selected(self) -> Any:
        c = self.selected()
        if c is None:
            self.notify("No container selected", severity="warning")
        return c

    @work(thread=True, group="actions")
    def _call(self, what: str, name: str, call: Callable[[], Any]) -> None:
        """
        Run an action off the event loop; its failure is shown with the
        daemon's message. The table changes by itself, from the events.
        """
        try:
            call()
        except grpc.RpcError as e:
            self.post_message(Notice(f"{what} {name}: {error_text(self.cli, e)}", "error"))

    def on_notice(self, message: Notice) -> None:
        self.notify(message.text, severity=message.severity)

    def _action(self, what: str, call: Callable[[Any, str], Any], confirm: str | None = None) -> None:
        """
        C{call(stub, container_id)} for the selected container, in a thread,
        after a yes to C{confirm} when there is a question.
        """
        c = self._with_selected()
        if c is None:
            return
        stub = self.cli.stub("ContainerService")

        def go() -> None:
            self._call(what, c.name, lambda: call(stub, c.id))

        if confirm is None:
            go()
            return

        def answered(yes: bool | None) -> None:
            if yes:
                go()

        self.push_screen(ConfirmScreen(confirm.format(name=c.name, id=c.id[:12])), answered)

    def action_start(self) -> None:
        self._action("start", lambda stub, cid: stub.StartContainer(
            container_pb2.StartContainerRequest(container_id=cid)))

    def action_stop(self) -> None:
        self._action("stop", lambda stub, cid: stub.StopContainer(
            container_pb2.StopContainerRequest(container_id=cid)), confirm="Stop container {name} ({id})?")

    def action_restart(self) -> None:
        self._action("restart", lambda stub, cid: stub.RestartContainer(
            container_pb2.RestartContainerRequest(container_id=cid)))

    def action_pause(self) -> None:
        c = self.selected()
        if c is not None and state_name(c) == "paused":
            self._action("unpause", lambda stub, cid: stub.UnpauseContainer(
                container_pb2.UnpauseContainerRequest(container_id=cid)))
        else:
            self._action("pause", lambda stub, cid: stub.PauseContainer(
                container_pb2.PauseContainerRequest(container_id=cid)))

    def action_remove(self) -> None:
        c = self.selected()
        # Like `ross rm -f` once the user said yes to a warning that says so.
        running = c is not None and state_name(c) in ("running", "paused", "restarting")
        warning = " It is running: it will be killed." if running else ""
        self._action("remove", lambda stub, cid: stub.RemoveContainer(
            container_pb2.RemoveContainerRequest(container_id=cid, force=running)),
            confirm="Remove container {name} ({id})?" + warning)

    # -- views

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_filter(self) -> None:
        self.action_tab("containers")
        self.query_one("#filter", Input).focus()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        (self.table if tab == "containers" else self.image_table).focus()

    def _toggle(self, pane: LogPane | StatsPane) -> None:
        pane.display = not pane.display
        c = self.selected()
        if pane.display:
            pane.follow(c.id if c else None, c.name if c else "")
        else:
            pane.stop()
        self.query_one("#details").display = self.query_one(LogPane).display or self.query_one(StatsPane).display

    def action_logs(self) -> None:
        self._toggle(self.query_one(LogPane))

    def action_stats(self) -> None:
        self._toggle(self.query_one(StatsPane))

    # -- shell panes

    async def _open_pane(self, shell: bool) -> None:
        c = self._with_selected()
        if c is None:
            return
        if state_name(c) != "running":
            self.notify(f"{c.name} is not running: start it first", severity="warning")
            return
        self._panes += 1
        if shell:
            pane = ShellPane(self.cli, c.id, c.name, shell=True, id=f"pane-{self._panes}")
        else:
            pane = ShellPane(self.cli, c.id, c.name, shell=False, tty=c.config.tty, stdin=c.config.open_stdin,
                             id=f"pane-{self._panes}")
        shells = self.query_one("#shells")
        shells.display = True
        # Keys typed right after "e" are the shell's: the pane is mounted and
        # focused before the next key is handled.
        await shells.mount(pane)
        self.screen.set_focus(pane.terminal)
        self._last_pane = pane

    async def action_exec(self) -> None:
        await self._open_pane(shell=True)

    async def action_attach(self) -> None:
        await self._open_pane(shell=False)

    def on_key(self, event: events.Key) -> None:
        """
        A key that reaches the app while a terminal pane has the focus was
        sent to the widget focused before it (typed right after "e"): it is
        the pane's, not a binding's.
        """
        if isinstance(self.focused, Terminal):
            self.focused.take_key(event)

    def on_descendant_focus(self, event: events.DescendantFocus) -> None:
        for node in event.widget.ancestors_with_self:
            if isinstance(node, ShellPane):
                self._last_pane = node

    def action_leave_pane(self) -> None:
        # At once, not with focus()'s call_later: a key typed right after
        # Ctrl-] (already queued) must reach the table, not the pane.
        self.screen.set_focus(self.table)

    def action_close_pane(self) -> None:
        panes = list(self.query(ShellPane))
        if not panes:
            return
        pane = self._last_pane if self._last_pane in panes else panes[-1]
        pane.close()
        self._pane_closed(pane)

    def on_pane_closed(self, message: PaneClosed) -> None:
        self.notify(message.text)
        self._pane_closed(message.pane)

    def _pane_closed(self, pane: ShellPane) -> None:
        if self._last_pane is pane:
            self._last_pane = None
        left = [p for p in self.query(ShellPane) if p is not pane]
        if not left:
            self.query_one("#shells").display = False
            self.table.focus()
        elif self.focused is None or pane in self.focused.ancestors_with_self:
            left[-1].terminal.focus()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        g, rest = parse_globals(argv)
    except UsageError as e:
        sys.stderr.write(f"ross-tui: {e}\n")
        return 125
    if rest[:1] in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return 0
    if rest:
        sys.stderr.write(f"ross-tui: unexpected argument {rest[0]!r}\nSee 'ross-tui --help'.\n")
        return 125
    return run(g)


#: The GIL's switch interval in the console (CPython's default is 5 ms). A
#: pane's session thread feeding a flood holds the GIL; each time the event
#: loop gives it up (every select) it waits up to this long to get it back,
#: and handling one key takes many turns of the loop.
SWITCH_INTERVAL = 0.0005


def run(g: Globals) -> int:
    sys.setswitchinterval(SWITCH_INTERVAL)
    cli = connect(g)
    try:
        RossApp(cli).run()
    finally:
        cli.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
