# -*- test-case-name: ross.test.integration.test_tui -*-
"""
``ross-tui``: a full-screen console on one or several daemons' API.

The container table follows each daemon's Events stream: a host's feed
lists everything once when it connects, then looks up each container an
event names (in the feed's thread, in event order, so a later event is
never overtaken by an earlier one's answer). Nothing polls. A daemon that
goes away is greyed out and connected again by itself.

Actions are the ``ross`` CLI's own commands, run in this process from a
thread against the container's daemon; the console shows each one's
command line, so it teaches the CLI. Streams (logs, stats, shells) use the
same connection settings (``-H``, TLS and token, or a context's), always
from threads: Textual's event loop never waits on the network.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import grpc
from rich.text import Text
from textual import events, work
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Input, Static, TabbedContent, TabPane
from textual.widgets.data_table import CellDoesNotExist

from ross.client.base import Cli, timestamp_of
from ross.client.settings import Globals, UsageError, parse_globals
from ross.tui.client import Feed, error_text
from ross.tui.hosts import Host
from ross.tui.logs import LogPane
from ross.tui.messages import ContainerChanged, ContainerGone, ContainersListed, EventSeen, FeedLost, Notice, PaneClosed
from ross.tui.panes import ShellPane, StatsPane
from ross.tui.rows import CONTAINER_COLUMNS, container_cells, matches, state_name
from ross.tui.screens import ConfirmScreen, HelpScreen
from ross.tui.terminal import Terminal
from ross.tui.views import (
    EventsView,
    HistoryScreen,
    ImagesView,
    InspectScreen,
    NetworksView,
    ObjectView,
    StatsView,
    VolumesView,
)
from ross.v1 import container_pb2, system_pb2

#: Events older than this are replayed when the feed connects, so nothing
#: between the subscription and the first listing is missed.
REPLAY_SECONDS = 60.0
#: Wait before connecting again after a daemon's event feed is lost.
RECONNECT_SECONDS = 2.0
#: Event types the console follows.
EVENT_TYPES = ["container", "image", "volume", "network"]
#: The views, in tab order (1..6).
VIEWS = ("containers", "images", "volumes", "networks", "events", "stats")
MARK = "● "

USAGE = """\
Usage:  ross-tui [OPTIONS]

A full-screen console for Ross: containers, images, volumes, networks,
events, logs, stats and shells, on one or several daemons

Options:
  -H, --host string      Daemon address (unix:///path or tcp://HOST:PORT) or
                         a context from ~/.config/ross/tui.toml; repeat it to
                         show several daemons in one table
                         (default $ROSS_HOST or unix:///run/ross/ross.sock)
      --tls-ca string    CA certificate the daemon's must chain to ($ROSS_TLS_CA)
      --tls-cert string  Client certificate, for mutual TLS ($ROSS_TLS_CERT)
      --tls-key string   Client private key ($ROSS_TLS_KEY)
      --token string     Bearer token for the daemon ($ROSS_TOKEN)
      --serve [ADDR]     Serve the console to web browsers instead
                         (default 127.0.0.1:8000; a token is printed)
      --serve-cert file  TLS certificate for --serve (needed off loopback)
      --serve-key file   Its private key
      --serve-token-file file
                         The token for --serve (default: a random one)
  -h, --help             Print this help

Press ? in the console for its keys, Ctrl-P for every action by name.
"""


class RossApp(App[None]):
    """
    The console on C{cli}'s daemon, or on every daemon of C{hosts}.
    C{keymap} maps binding ids to keys (the config file's [keys]).
    """

    # Absolute: Textual resolves a relative path from a subclass's module.
    CSS_PATH = str(Path(__file__).with_name("ross.tcss"))
    TITLE = "Ross"

    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit"),
        Binding("question_mark", "help", "Help", id="help"),
        Binding("slash", "filter", "Filter", id="filter"),
        Binding("s", "start", "Start", id="start"),
        Binding("x", "stop", "Stop", id="stop"),
        Binding("r", "restart", "Restart", id="restart"),
        Binding("p", "pause", "Pause", id="pause"),
        Binding("d,delete", "remove", "Remove", id="remove"),
        Binding("i", "inspect", "Inspect", id="inspect"),
        Binding("space", "mark", "Mark", id="mark"),
        Binding("asterisk", "mark_all", "Mark all", show=False, id="mark_all"),
        Binding("l", "logs", "Logs", id="logs"),
        Binding("t", "stats", "Stats", id="stats"),
        Binding("e", "exec", "Shell", id="exec"),
        Binding("a", "attach", "Attach", id="attach"),
        Binding("w", "close_pane", "Close pane", id="close_pane"),
        Binding("1", "tab('containers')", "Containers", show=False, id="view.containers"),
        Binding("2", "tab('images')", "Images", show=False, id="view.images"),
        Binding("3", "tab('volumes')", "Volumes", show=False, id="view.volumes"),
        Binding("4", "tab('networks')", "Networks", show=False, id="view.networks"),
        Binding("5", "tab('events')", "Events", show=False, id="view.events"),
        Binding("6", "tab('stats')", "Stats of all", show=False, id="view.stats"),
        Binding("ctrl+right_square_bracket", "leave_pane", "Leave pane", show=False, priority=True, id="leave_pane"),
        # Escape leaves the filter box; a terminal pane keeps it for its program.
        Binding("escape", "leave_pane", show=False),
        # Not a priority binding (Textual's is): in a terminal pane Ctrl-P
        # is the program's (a shell's previous line, the first of docker's
        # detach keys).
        Binding("ctrl+p", "command_palette", "Palette", show=False, id="palette"),
    ]

    #: Actions on containers: (binding id, what the palette calls it).
    CONTAINER_ACTIONS = [
        ("start", "Start the marked or selected containers"),
        ("stop", "Stop the marked or selected containers"),
        ("restart", "Restart the marked or selected containers"),
        ("pause", "Pause or unpause the marked or selected containers"),
        ("remove", "Remove the marked or selected containers"),
        ("inspect", "Inspect the selected container"),
        ("logs", "Follow the logs of the marked or selected containers"),
        ("stats", "CPU, memory, network and block I/O of the selected container"),
        ("exec", "Open a shell in the selected container"),
        ("attach", "Attach to the selected container's main process"),
        ("mark", "Mark or unmark the selected container"),
        ("mark_all", "Mark every container shown, or clear the marks"),
        ("close_pane", "Close the last shell pane used"),
        ("filter", "Filter the containers"),
    ]
    VIEW_ACTIONS = [
        ("images", "pull", "Pull an image"),
        ("images", "tag", "Tag the selected image"),
        ("images", "remove", "Remove the selected image"),
        ("images", "history", "History of the selected image"),
        ("images", "inspect", "Inspect the selected image"),
        ("volumes", "remove", "Remove the selected volume"),
        ("volumes", "inspect", "Inspect the selected volume"),
        ("networks", "remove", "Remove the selected network"),
        ("networks", "inspect", "Inspect the selected network"),
    ]

    def __init__(self, cli: Cli | None = None, hosts: list[Host] | None = None,
                 keymap: dict[str, str] | None = None) -> None:
        super().__init__()
        if hosts is None:
            assert cli is not None
            hosts = [Host(0, cli.globals.host, cli)]
        self.hosts = hosts
        self._keymap = keymap or {}
        #: Row key ("HOST-INDEX:ID") -> the container as last seen.
        self.containers: dict[str, Any] = {}
        # Row keys in the order they were marked (a dict keeps it): the
        # command line names them as the user picked them.
        self.marked: dict[str, None] = {}
        self.command_line = ""
        self._last_pane: ShellPane | None = None
        self._panes = 0

    @property
    def cli(self) -> Cli:
        return self.hosts[0].cli

    @property
    def many(self) -> bool:
        return len(self.hosts) > 1

    @property
    def connected(self) -> bool:
        return all(h.connected for h in self.hosts)

    # -- layout

    def compose(self) -> ComposeResult:
        yield Header()
        with TabbedContent(initial="containers", id="tabs"):
            with TabPane("Containers [1]", id="containers"):
                yield Input(placeholder="Filter: name, image, status or host (/)", id="filter")
                yield DataTable(id="container-table", cursor_type="row", zebra_stripes=True)
            with TabPane("Images [2]", id="images"):
                yield ImagesView(self.hosts, id="images-view")
            with TabPane("Volumes [3]", id="volumes"):
                yield VolumesView(self.hosts, id="volumes-view")
            with TabPane("Networks [4]", id="networks"):
                yield NetworksView(self.hosts, id="networks-view")
            with TabPane("Events [5]", id="events"):
                yield EventsView(self.hosts, id="events-view")
            with TabPane("Stats [6]", id="stats-tab"):
                yield StatsView(self.hosts, id="stats-view")
        with Horizontal(id="details"):
            yield LogPane(self.cli, id="logs", show_command=self.show_command)
            yield StatsPane(self.cli, id="stats")
        yield Horizontal(id="shells")
        yield Static("", id="command")
        yield Footer()

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one("#container-table", DataTable)

    def _taken_down(self) -> bool:
        """
        The feeds' threads post messages until they are cancelled: one may
        arrive as the app is being taken down, its widgets gone already
        (more often since a daemon replays its journal on reconnect).
        """
        return not self.query("#container-table")

    def views(self) -> list[ObjectView]:
        return [self.query_one(ImagesView), self.query_one(VolumesView), self.query_one(NetworksView)]

    def on_mount(self) -> None:
        if self._keymap:
            self.set_keymap(self._keymap)
        self._show_hosts()
        if self.many:
            self.table.add_column("HOST", key="HOST")
        for key in CONTAINER_COLUMNS:
            self.table.add_column(key, key=key)
        for widget in ("#logs", "#stats", "#details", "#shells"):
            self.query_one(widget).display = False
        self.table.focus()
        for host in self.hosts:
            self._connect(host)
        # Only the clock moves "Up 3 minutes" on: redraw it, asking nobody.
        self.set_interval(5.0, self._refresh_status)

    def on_unmount(self) -> None:
        for host in self.hosts:
            host.close()

    def _show_hosts(self) -> None:
        if not self.many:
            host = self.hosts[0]
            self.sub_title = host.globals.host if host.connected else f"{host.globals.host} (disconnected)"
            return
        self.sub_title = ", ".join(h.name if h.connected else f"{h.name} (disconnected)" for h in self.hosts)

    # -- the event feeds

    def _connect(self, host: Host) -> None:
        # Stubs come from the event loop only (the Cli's cache is not made
        # for threads); making one does no I/O beyond reading TLS files once.
        system = host.cli.stub("SystemService")
        containers = host.cli.stub("ContainerService")
        since = time.time() - REPLAY_SECONDS

        prefetched = host.take_prefetched()

        def start() -> Any:
            call = system.Events(system_pb2.EventsRequest(types=EVENT_TYPES, since=timestamp_of(since)))
            try:
                if prefetched is not None:
                    listed = prefetched.result()
                else:
                    listed = containers.ListContainers(container_pb2.ListContainersRequest(all=True)).containers
            except grpc.RpcError:
                call.cancel()
                raise
            self.post_message(ContainersListed(host.index, list(listed)))
            return call

        def on_event(event: Any) -> None:
            # A "lagging" marker (this follower fell behind; the events it
            # missed follow, or some are lost) is no event: look again.
            if event.HasField("lagging"):
                listed = containers.ListContainers(container_pb2.ListContainersRequest(all=True)).containers
                self.post_message(ContainersListed(host.index, list(listed)))
                return
            self.post_message(EventSeen(host.index, event))
            if event.type != "container" or not event.actor_id or event.action.startswith("exec_"):
                return
            if event.action == "destroy":
                self.post_message(ContainerGone(host.index, event.actor_id))
                return
            try:
                found = containers.InspectContainer(container_pb2.InspectContainerRequest(container_id=event.actor_id))
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.NOT_FOUND:
                    raise
                self.post_message(ContainerGone(host.index, event.actor_id))
                return
            self.post_message(ContainerChanged(host.index, found.container))

        def on_end(error: grpc.RpcError | None) -> None:
            text = error_text(host.cli, error) if error else "the daemon ended the event stream"
            self.post_message(FeedLost(host.index, text))

        host.feed = Feed(f"events {host.index}", start, on_event, on_end).begin()

    def on_containers_listed(self, message: ContainersListed) -> None:
        if self._taken_down():
            return
        host = self.hosts[message.host]
        host.connected = True
        host.told_lost = False
        self._show_hosts()
        prefix = f"{host.index}:"
        self.containers = {k: c for k, c in self.containers.items() if not k.startswith(prefix)}
        self.containers.update({prefix + c.id: c for c in message.containers})
        self._refresh_table()
        for view in self.views():
            view.reload(host)

    def on_container_changed(self, message: ContainerChanged) -> None:
        if self._taken_down():
            return
        c = message.container
        key = f"{message.host}:{c.id}"
        self.containers[key] = c
        self._refresh_table()
        self._follow_all_stats()
        logs, stats = self.query_one(LogPane), self.query_one(StatsPane)
        running = state_name(c) == "running"
        # A pane whose stream ended with the container picks it up again.
        if running and logs.display and c.id in [cid for cid, _ in logs.sources] and not logs.feeds:
            logs.follow(logs.sources, logs.clis)
        if running and stats.display and stats.container_id == c.id and stats.feed is None:
            stats.follow(c.id, c.name)

    def on_container_gone(self, message: ContainerGone) -> None:
        if self._taken_down():
            return
        key = f"{message.host}:{message.container_id}"
        self.marked.pop(key, None)
        if self.containers.pop(key, None) is not None:
            self._refresh_table()
            self._follow_all_stats()

    def on_event_seen(self, message: EventSeen) -> None:
        if self._taken_down():
            return
        host = self.hosts[message.host]
        event = message.event
        self.query_one(EventsView).add(host, event)
        for view in self.views():
            if view.kind == event.type:
                view.reload(host)

    def on_feed_lost(self, message: FeedLost) -> None:
        host = self.hosts[message.host]
        host.feed = None
        # Once per loss: retries that fail the same way say nothing new.
        if not host.told_lost:
            host.told_lost = True
            title = f"Event stream lost: {host.name}" if self.many else "Event stream lost"
            self.notify(message.error, title=title, severity="error")
        host.connected = False
        self._show_hosts()
        self._refresh_table(force=True)
        self.set_timer(RECONNECT_SECONDS, lambda: self._connect(host))

    # -- the container table

    def host_of(self, key: str) -> Host:
        return self.hosts[int(key.split(":", 1)[0])]

    def shown_containers(self) -> list[tuple[str, Any]]:
        """
        (row key, container) of those the filter selects, newest first.
        """
        text = self.query_one("#filter", Input).value
        shown = [(k, c) for k, c in self.containers.items()
                 if matches(c, text) or (self.many and text.lower() in self.host_of(k).name.lower())]
        return sorted(shown, key=lambda kc: (kc[1].created.seconds, kc[1].created.nanos), reverse=True)

    def _cells(self, key: str, c: Any) -> list[Any]:
        cells: list[Any] = list(container_cells(c))
        if key in self.marked:
            cells[0] = MARK + cells[0]
        host = self.host_of(key)
        if self.many:
            cells.insert(0, host.name)
        if not host.connected:
            # A daemon that went away: its last known rows, greyed out.
            status = CONTAINER_COLUMNS.index("STATUS") + (1 if self.many else 0)
            cells[status] = f"{cells[status]} (unreachable)"
            cells = [Text(str(cell), style="dim") for cell in cells]
        return cells

    def _refresh_table(self, force: bool = False) -> None:
        """
        Bring the table in line with C{self.containers} and the filter:
        cells change in place; rows come and go with the cursor kept on
        the same container.
        """
        table = self.table
        shown = self.shown_containers()
        keys = [k for k, _ in shown]
        current = [row.value for row in table.rows]
        columns = [c.key for c in table.columns.values()]
        if keys == current and not force:
            for key, c in shown:
                for column, value in zip(columns, self._cells(key, c)):
                    if table.get_cell(key, column) != value:
                        table.update_cell(key, column, value)
            return
        selected = self.selected_key()
        # One repaint for the lot, not one per row.
        with self.batch_update():
            table.clear()
            for key, c in shown:
                table.add_row(*self._cells(key, c), key=key)
            if selected in keys:
                table.move_cursor(row=keys.index(selected))

    def _refresh_status(self) -> None:
        # The interval can fire once more while the app is taken down.
        if self.containers and not self._taken_down():
            self._refresh_table()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self._refresh_table()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            self.table.focus()

    def selected_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except CellDoesNotExist:
            return None
        return key.value

    def selected(self) -> Any:
        key = self.selected_key()
        return self.containers.get(key) if key else None

    def targets(self) -> list[tuple[str, Any]]:
        """
        (row key, container) of the marked containers, or of the selected
        one when none is marked.
        """
        if self.marked:
            return [(k, self.containers[k]) for k in self.marked if k in self.containers]
        key = self.selected_key()
        return [(key, self.containers[key])] if key and key in self.containers else []

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "container-table":
            return
        key = self.selected_key()
        c = self.selected()
        logs, stats = self.query_one(LogPane), self.query_one(StatsPane)
        if logs.display and not self.marked and (c is None or logs.container_id != c.id):
            self._follow_logs(logs, [(key, c)] if key and c else [])
        if stats.display and (c is None or stats.container_id != c.id):
            stats.cli = self.host_of(key).cli if key else self.cli
            stats.follow(c.id if c else None, c.name if c else "")

    # -- commands: every action is a ross command line

    def show_command(self, command: str) -> None:
        self.command_line = command
        self.query_one("#command", Static).update(f"[dim]$[/dim] {command}" if command else "")

    def command_text(self, host: Host, argv: list[str]) -> str:
        return shlex.join(["ross", *host.command_prefix(self.many), *argv])

    def run_command(self, host: Host, what: str, *argv: str) -> None:
        """
        Run ``ross ARGV`` on C{host} in a thread, showing its command line;
        its failure is shown with the CLI's message. The views change by
        themselves, from the events.
        """
        self.show_command(self.command_text(host, list(argv)))
        self._run(host, what, list(argv))

    @work(thread=True, group="actions")
    def _run(self, host: Host, what: str, argv: list[str]) -> None:
        code, out, err = host.run(argv)
        if code != 0:
            message = err.strip().removeprefix("Error: ").removeprefix("Error response from daemon: ")
            self.post_message(Notice(f"{what}: {message}", "error"))
        elif argv[0] == "pull":
            self.post_message(Notice(out.strip().splitlines()[-1] if out.strip() else f"pulled {argv[-1]}"))

    def confirm_command(self, host: Host, what: str, question: str, *argv: str) -> None:
        def answered(yes: bool | None) -> None:
            if yes:
                self.run_command(host, what, *argv)

        self.push_screen(ConfirmScreen(f"{question}\n\n$ {self.command_text(host, list(argv))}"), answered)

    def on_notice(self, message: Notice) -> None:
        self.notify(message.text, severity=message.severity)

    def _container_command(self, verb: str, argv: Callable[[list[Any]], list[str]] | None = None,
                           confirm: str | None = None, picked: list[tuple[str, Any]] | None = None) -> None:
        """
        ``ross VERB NAMES...`` for the targets, one command per daemon,
        after a yes to C{confirm} when there is a question.
        """
        targets = self.targets() if picked is None else picked
        if not targets:
            self.notify("No container selected", severity="warning")
            return
        by_host: dict[int, list[Any]] = {}
        for key, c in targets:
            by_host.setdefault(self.host_of(key).index, []).append(c)
        for index, cs in by_host.items():
            host = self.hosts[index]
            names = [c.name or c.id[:12] for c in cs]
            words = (argv(cs) if argv else [verb]) + names
            what = f"{verb} {', '.join(names)}"
            if confirm is None:
                self.run_command(host, what, *words)
            else:
                many = f"{len(names)} containers ({', '.join(names)})" if len(names) > 1 else \
                    f"container {names[0]} ({cs[0].id[:12]})"
                self.confirm_command(host, what, confirm.format(what=many), *words)

    def action_start(self) -> None:
        self._container_command("start")

    def action_stop(self) -> None:
        self._container_command("stop", confirm="Stop {what}?")

    def action_restart(self) -> None:
        self._container_command("restart")

    def action_pause(self) -> None:
        targets = self.targets()
        paused = [t for t in targets if state_name(t[1]) == "paused"]
        if paused:
            self._container_command("unpause", picked=paused)
        others = [t for t in targets if state_name(t[1]) != "paused"]
        if others or not targets:
            self._container_command("pause", picked=others)

    def action_remove(self) -> None:
        targets = self.targets()
        # Like `ross rm -f` once the user said yes to a warning that says so.
        running = any(state_name(c) in ("running", "paused", "restarting") for _, c in targets)
        warning = " Running ones will be killed." if running else ""
        # Marks of removed containers go with them (on_container_gone): a
        # "no" keeps them.
        self._container_command("remove", lambda cs: ["rm", "-f"] if running else ["rm"],
                                confirm="Remove {what}?" + warning)

    def action_mark(self) -> None:
        key = self.selected_key()
        if key is None:
            return
        if key in self.marked:
            del self.marked[key]
        else:
            self.marked[key] = None
        self._refresh_table(force=True)
        if self.table.cursor_row < self.table.row_count - 1:
            self.table.move_cursor(row=self.table.cursor_row + 1)

    def action_mark_all(self) -> None:
        shown = [k for k, _ in self.shown_containers()]
        self.marked = {} if set(shown) <= self.marked.keys() else dict.fromkeys(shown)
        self._refresh_table(force=True)

    # -- inspect and history

    def action_inspect(self) -> None:
        key = self.selected_key()
        c = self.selected()
        if key is None or c is None:
            self.notify("No container selected", severity="warning")
            return
        self.inspect(self.host_of(key), "container", c.name or c.id)

    _INSPECT = {"container": ["inspect", "--type", "container"], "image": ["image", "inspect"],
                "volume": ["volume", "inspect"], "network": ["network", "inspect"]}

    def inspect(self, host: Host, kind: str, name: str) -> None:
        argv = [*self._INSPECT[kind], name]
        self.show_command(self.command_text(host, argv))
        self._inspect(host, kind, name, argv)

    @work(thread=True, group="inspect")
    def _inspect(self, host: Host, kind: str, name: str, argv: list[str]) -> None:
        import json

        code, out, err = host.run(argv)
        if code != 0:
            self.post_message(Notice(f"inspect {name}: {err.strip().removeprefix('Error: ')}", "error"))
            return
        document = json.loads(out)
        document = document[0] if isinstance(document, list) and len(document) == 1 else document
        command = self.command_text(host, argv)
        self.call_from_thread(self.push_screen, InspectScreen(f"{kind} {name}", document, command))

    def show_history(self, host: Host, ref: str) -> None:
        argv = ["history", ref]
        command = self.command_text(host, argv)
        self.show_command(command)
        self._history(host, ref, command)

    @work(thread=True, group="inspect")
    def _history(self, host: Host, ref: str, command: str) -> None:
        from ross.v1 import image_pb2

        try:
            found = host.cli.stub("ImageService").ImageHistory(image_pb2.ImageHistoryRequest(name=ref)).entries
        except grpc.RpcError as e:
            self.post_message(Notice(f"history {ref}: {error_text(host.cli, e)}", "error"))
            return
        self.call_from_thread(self.push_screen, HistoryScreen(ref, list(found), command))

    # -- views, help, palette

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_filter(self) -> None:
        self.action_tab("containers")
        self.query_one("#filter", Input).focus()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = "stats-tab" if tab == "stats" else tab
        if tab == "containers":
            self.table.focus()
        else:
            self.query_one(f"#{tab}-view").query_one(DataTable).focus()
        self._follow_all_stats()

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self._follow_all_stats()

    def _follow_all_stats(self) -> None:
        """
        The stats view follows every running container while it is shown,
        and nothing otherwise.
        """
        view = self.query_one(StatsView)
        if self.query_one(TabbedContent).active != "stats-tab":
            view.stop()
            return
        view.follow({k: (self.host_of(k), c.name or c.id[:12]) for k, c in self.containers.items()
                     if state_name(c) == "running" and self.host_of(k).connected})

    def view_action(self, tab: str, action: str) -> None:
        self.action_tab(tab)
        view = self.query_one(f"#{tab}-view")
        getattr(view, f"action_{action}")()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        yield from super().get_system_commands(screen)
        keys = {b.id: self._keymap.get(b.id, b.key) for b in self.BINDINGS if isinstance(b, Binding) and b.id}
        for action, text in self.CONTAINER_ACTIONS:
            yield SystemCommand(text, f"containers: {action}" + (f" ({keys[action]})" if action in keys else ""),
                                getattr(self, f"action_{action}"))
        for tab, action, text in self.VIEW_ACTIONS:
            yield SystemCommand(text, f"{tab}: {action}", lambda t=tab, a=action: self.view_action(t, a))
        for tab in VIEWS:
            yield SystemCommand(f"Show {tab}", f"view {VIEWS.index(tab) + 1}", lambda t=tab: self.action_tab(t))

    # -- logs and stats

    def _show_details(self) -> None:
        self.query_one("#details").display = self.query_one(LogPane).display or self.query_one(StatsPane).display

    def _follow_logs(self, pane: LogPane, targets: list[tuple[str, Any]]) -> None:
        pane.follow([(c.id, c.name) for _, c in targets], [self.host_of(k).cli for k, _ in targets])

    def action_logs(self) -> None:
        """
        Follow the logs of the marked containers (interleaved by time), or
        of the selected one.
        """
        pane = self.query_one(LogPane)
        pane.display = not pane.display
        if pane.display:
            self._follow_logs(pane, self.targets())
        else:
            pane.stop()
        self._show_details()

    def action_stats(self) -> None:
        pane = self.query_one(StatsPane)
        pane.display = not pane.display
        key = self.selected_key()
        c = self.selected()
        if pane.display:
            pane.cli = self.host_of(key).cli if key else self.cli
            pane.follow(c.id if c else None, c.name if c else "")
            if c is not None:
                self.show_command(self.command_text(self.host_of(key or "0:"), ["stats", c.name or c.id]))
        else:
            pane.stop()
        self._show_details()

    # -- shell panes

    async def _open_pane(self, shell: bool) -> None:
        key = self.selected_key()
        c = self.selected()
        if key is None or c is None:
            self.notify("No container selected", severity="warning")
            return
        if state_name(c) != "running":
            self.notify(f"{c.name} is not running: start it first", severity="warning")
            return
        host = self.host_of(key)
        self._panes += 1
        if shell:
            pane = ShellPane(host.cli, c.id, c.name, shell=True, id=f"pane-{self._panes}")
            self.show_command(self.command_text(host, ["exec", "-it", c.name or c.id, "sh"]))
        else:
            pane = ShellPane(host.cli, c.id, c.name, shell=False, tty=c.config.tty, stdin=c.config.open_stdin,
                             id=f"pane-{self._panes}")
            self.show_command(self.command_text(host, ["attach", c.name or c.id]))
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

    async def action_quit(self) -> None:
        """
        Quit; but Ctrl-Q right after Ctrl-P in a terminal pane completes
        docker's detach keys, which are the pane's.
        """
        focused = self.focused
        if isinstance(focused, Terminal) and focused.last_key == "ctrl+p":
            focused.take_key(events.Key("ctrl+q", "\x11"))
            return
        await super().action_quit()

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


def split_hosts(argv: list[str]) -> tuple[list[str], list[str]]:
    """
    Take every -H/--host out of C{argv} (the console takes it more than
    once): (hosts, the other arguments).
    """
    hosts: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if name in ("-H", "--host"):
            if not eq:
                i += 1
                if i >= len(argv):
                    raise UsageError(f"flag needs an argument: {name}")
                value = argv[i]
            hosts.append(value)
        else:
            rest.append(arg)
        i += 1
    return hosts, rest


def split_serve(argv: list[str]) -> tuple[str | None, list[str]]:
    """
    Take --serve [ADDR] out of C{argv}: (the address, "" for the default;
    None without --serve), the rest.
    """
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        if name == "--serve":
            if eq:
                return value, argv[:i] + argv[i + 1:]
            if i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                return argv[i + 1], argv[:i] + argv[i + 2:]
            return "", argv[:i] + argv[i + 1:]
    return None, argv


def main(argv: list[str] | None = None) -> int:
    from ross.tui.config import ConfigError, load, resolve_hosts
    from ross.tui.serve import ServeError, serve_console, split_options

    argv = sys.argv[1:] if argv is None else argv
    try:
        serve, console_argv = split_serve(argv)
        serve_flags: dict[str, str] = {}
        if serve is not None:
            serve_flags, console_argv = split_options(console_argv)
        names, rest = split_hosts(console_argv)
        g, rest = parse_globals(rest)
    except (UsageError, ServeError) as e:
        sys.stderr.write(f"ross-tui: {e}\n")
        return 125
    if rest[:1] in (["-h"], ["--help"]):
        sys.stdout.write(USAGE)
        return 0
    if rest:
        sys.stderr.write(f"ross-tui: unexpected argument {rest[0]!r}\nSee 'ross-tui --help'.\n")
        return 125
    try:
        config = load()
        hosts = resolve_hosts(names, g, config)
    except ConfigError as e:
        sys.stderr.write(f"ross-tui: {e}\n")
        return 125
    if serve is not None:
        return serve_console(serve, serve_flags, console_argv)
    return run(hosts, config.keys)


#: The GIL's switch interval in the console (CPython's default is 5 ms). A
#: pane's session thread feeding a flood holds the GIL; each time the event
#: loop gives it up (every select) it waits up to this long to get it back,
#: and handling one key takes many turns of the loop.
SWITCH_INTERVAL = 0.0005


def run(hosts: list[tuple[str, Globals]], keymap: dict[str, str]) -> int:
    sys.setswitchinterval(SWITCH_INTERVAL)
    opened = [Host.open(i, name, g) for i, (name, g) in enumerate(hosts)]
    for host in opened:
        host.prefetch()
    try:
        RossApp(hosts=opened, keymap=keymap).run()
    finally:
        for host in opened:
            host.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
