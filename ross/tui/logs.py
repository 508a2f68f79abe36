# -*- test-case-name: ross.test.integration.test_tui -*-
"""
The log pane: one or several containers' logs, interleaved by time with a
colour per container, followed as they grow.

What the pane can do with them (keys while it has the focus):

  /  search the lines shown (highlighted; n / N next and previous)
  &  filter: ask the daemon for the matching lines only, with C{context}
     lines around them (+ / - change it): a 1 GB log is searched where it
     lies, not shipped
  o  stdout, stderr or both       t  timestamps
  g  jump to a time ("10m", "2026-01-02T10:00:00Z": the log since then)
  f  follow on/off                e  export the lines shown to a file

The view is Textual's line API over a list of records (Toolong's way for
big logs): only the visible lines are drawn.
"""

from __future__ import annotations

import bisect
import re
import shlex
import time
from typing import Any, Callable, NamedTuple

import grpc
from rich.cells import cell_len
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip
from textual.widgets import Input, Label

from ross.client.base import Cli, timestamp_of
from ross.errors import RossError
from ross.humanize import parse_time, rfc3339
from ross.tui.client import Feed, error_text
from ross.tui.text import printable
from ross.v1 import common_pb2, container_pb2

#: Lines of each container's log shown when the pane starts following it.
LOG_TAIL = 500
#: Lines the pane keeps (the oldest go first).
MAX_LINES = 20000
#: Colours of the containers' tags, in order.
PALETTE = ("cyan", "magenta", "green", "yellow", "bright_blue", "bright_red", "bright_cyan", "bright_magenta")
STREAMS = ("both", "stdout", "stderr")

_MATCH = Style(bgcolor="yellow", color="black")
_CURRENT = Style(bgcolor="bright_red", color="white", bold=True)


class Record(NamedTuple):
    time_ns: int
    source: int
    stderr: bool
    text: str
    #: Context around a filter's match (drawn dim).
    context: bool = False
    #: A separator: lines were left out here.
    gap: bool = False


class LogLines(Message):
    """
    Lines of source C{source} (an index into the pane's sources) from its
    stream C{generation}.
    """

    def __init__(self, generation: int, source: int, records: list[Record]) -> None:
        super().__init__()
        self.generation = generation
        self.source = source
        self.records = records


class LogEnded(Message):
    def __init__(self, generation: int, source: int, error: str | None) -> None:
        super().__init__()
        self.generation = generation
        self.source = source
        self.error = error


class LogView(ScrollView, can_focus=True):
    """
    The lines, drawn from the visible part of C{records} only.
    """

    DEFAULT_CSS = """
    LogView { height: 1fr; }
    """

    def __init__(self, id: str | None = None) -> None:
        super().__init__(id=id)
        self.records: list[Record] = []
        self.names: list[str] = []
        self.timestamps = False
        self.search: re.Pattern[str] | None = None
        self.current: int | None = None
        self.follow = True
        self._width = 0

    def prefix(self, record: Record) -> list[tuple[str, Style]]:
        parts: list[tuple[str, Style]] = []
        if self.timestamps and not record.gap:
            parts.append((rfc3339(record.time_ns // 1_000_000_000, record.time_ns % 1_000_000_000) + " ",
                          Style(color="bright_black")))
        if len(self.names) > 1 and not record.gap:
            name = self.names[record.source]
            parts.append((f"{name} | ", Style(color=PALETTE[record.source % len(PALETTE)], bold=True)))
        return parts

    def line_text(self, record: Record) -> str:
        return "".join(text for text, _ in self.prefix(record)) + record.text

    def set_records(self, records: list[Record]) -> None:
        self.records = records
        self.current = None
        self._width = max((cell_len(self.line_text(r)) for r in records[-2000:]), default=0)
        self.virtual_size = Size(self._width, len(records))
        if self.follow:
            self.scroll_end(animate=False, immediate=True)
        self.refresh()

    def add(self, records: list[Record]) -> None:
        """
        New lines, in time order among the others (several containers'
        lines interleave by time).
        """
        at_end = self.is_vertical_scroll_end or not self.records
        for record in records:
            if not self.records or record.time_ns >= self.records[-1].time_ns:
                self.records.append(record)
            else:
                bisect.insort(self.records, record, key=lambda r: r.time_ns)
            self._width = max(self._width, cell_len(self.line_text(record)))
        if len(self.records) > MAX_LINES:
            del self.records[:len(self.records) - MAX_LINES]
            self.current = None
        self.virtual_size = Size(self._width, len(self.records))
        if self.follow and at_end:
            self.scroll_end(animate=False, immediate=True)
        self.refresh()

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        if index >= len(self.records):
            return Strip.blank(width)
        record = self.records[index]
        if record.gap:
            return Strip([Segment("--", Style(color="bright_black"))]).adjust_cell_length(width)
        text = Text.assemble(*self.prefix(record))
        body = Text(record.text, style=Style(dim=True) if record.context else Style())
        if self.search is not None:
            for m in self.search.finditer(record.text):
                body.stylize(_CURRENT if index == self.current else _MATCH, m.start(), m.end())
        text.append_text(body)
        if record.stderr:
            text.stylize(Style(color="red"), len(text) - len(record.text), len(text))
        segments = list(text.render(self.app.console))
        return Strip(segments).crop(scroll_x, scroll_x + width).adjust_cell_length(width)

    def find(self, forward: bool) -> bool:
        """
        Move to the next (or previous) line the search matches, wrapping
        around; False when none does.
        """
        if self.search is None or not self.records:
            return False
        n = len(self.records)
        start = self.current if self.current is not None else (self.scroll_offset.y if forward else n)
        for step in range(1, n + 1):
            index = (start + step) % n if forward else (start - step) % n
            if self.search.search(self.records[index].text):
                self.current = index
                self.follow = False
                self.scroll_to(y=max(0, index - self.size.height // 2), animate=False, immediate=True)
                self.refresh()
                return True
        return False

    def shown_text(self) -> list[str]:
        return ["--" if r.gap else self.line_text(r) for r in self.records]


class LogPane(Vertical):
    """
    Follows the logs of the containers given to L{follow}.
    """

    BINDINGS = [
        Binding("slash", "ask('search')", "Search"),
        Binding("n", "find(True)", "Next", show=False),
        Binding("N", "find(False)", "Previous", show=False),
        Binding("ampersand", "ask('filter')", "Filter"),
        Binding("plus", "context(1)", "More context", show=False),
        Binding("minus", "context(-1)", "Less context", show=False),
        Binding("o", "streams", "Streams"),
        Binding("t", "timestamps", "Timestamps"),
        Binding("g", "ask('since')", "Jump to time"),
        Binding("f", "toggle_follow", "Follow"),
        Binding("e", "ask('export')", "Export"),
    ]

    PROMPTS = {
        "search": "Search (a regular expression)",
        "filter": "Filter in the daemon (a regular expression; empty: none)",
        "since": "Show from (10m, 2h, 2026-01-02T10:00:00Z; empty: the last lines)",
        "export": "Export the lines shown to the file",
    }

    def __init__(self, cli: Cli, id: str | None = None, show_command: Callable[[str], None] | None = None) -> None:
        super().__init__(id=id)
        self.cli = cli
        self.sources: list[tuple[str, str]] = []
        #: The connection to each source's daemon.
        self.clis: list[Cli] = []
        self.feeds: list[Feed] = []
        self.generation = 0
        self.streams = "both"
        self.pattern = ""
        self.context = 2
        self.since: float | None = None
        self._asking = ""
        self._show_command = show_command or (lambda command: None)

    @property
    def container_id(self) -> str | None:
        return self.sources[0][0] if self.sources else None

    @property
    def feed(self) -> Feed | None:
        return self.feeds[0] if self.feeds else None

    def compose(self) -> ComposeResult:
        yield Label("logs", id="logs-title", classes="pane-title")
        yield Input(id="log-input", classes="log-input")
        yield LogView(id="log-view")

    def on_mount(self) -> None:
        self.query_one("#log-input").display = False

    @property
    def view(self) -> LogView:
        return self.query_one(LogView)

    def follow(self, containers: list[tuple[str, str]], clis: list[Cli] | None = None) -> None:
        """
        Show the logs of C{containers} ((id, name) pairs, each on the daemon
        of C{clis}, default the pane's), interleaved, and follow them; an
        empty list stops.
        """
        self.sources = list(containers)
        self.clis = list(clis) if clis is not None else [self.cli] * len(containers)
        self._restart()

    def command(self) -> str:
        """
        The ``ross logs`` command line that shows the same (one container).
        """
        if not self.sources:
            return ""
        parts = ["ross", "logs", "-f"]
        if self.since is None and not self.pattern:
            parts += ["--tail", str(LOG_TAIL)]
        elif self.since is not None:
            parts += ["--since", rfc3339(int(self.since), 0)]
        if self.view.timestamps:
            parts.append("-t")
        if self.pattern:
            parts += ["--grep", shlex.quote(self.pattern), "-C", str(self.context)]
        return " ".join(parts + [self.sources[0][1] or self.sources[0][0][:12]])

    def _restart(self) -> None:
        self.stop()
        self.generation += 1
        view = self.view
        view.names = [name or cid[:12] for cid, name in self.sources]
        view.set_records([])
        names = ", ".join(view.names)
        details = [d for d in (self.streams if self.streams != "both" else "",
                               f"filter /{self.pattern}/ ±{self.context}" if self.pattern else "",
                               "from " + rfc3339(int(self.since), 0) if self.since is not None else "") if d]
        self.query_one("#logs-title", Label).update(
            f"logs: {names}" + (f"  [{'; '.join(details)}]" if details else "") if self.sources else "logs")
        if self.sources:
            self._show_command(self.command())
        for index, (cid, _) in enumerate(self.sources):
            self.feeds.append(self._open(index, cid))

    def _open(self, source: int, container_id: str) -> Feed:
        cli = self.clis[source]
        stub = cli.stub("ContainerService")
        request = container_pb2.GetLogsRequest(container_id=container_id, follow=True, timestamps=True,
                                               stdout=self.streams in ("both", "stdout"),
                                               stderr=self.streams in ("both", "stderr"))
        if self.since is not None:
            request.since.CopyFrom(timestamp_of(self.since))
        elif not self.pattern:
            # (A filter searches the whole log, in the daemon: only the
            # matches and their context come.)
            request.tail = LOG_TAIL
        if self.pattern:
            request.filter.CopyFrom(container_pb2.LogFilter(pattern=self.pattern, regex=True, before=self.context,
                                                            after=self.context))
        generation = self.generation

        def deliver(response: Any) -> None:
            records = []
            for e in response.entries:
                ns = e.time.seconds * 1_000_000_000 + e.time.nanos
                if e.gap:
                    # At the same time as the line after it: lines of equal
                    # times stay in the order they came.
                    records.append(Record(ns, source, False, "", gap=True))
                text = printable(e.line.decode("utf-8", "replace")).rstrip("\n")
                records.append(Record(ns, source, e.stream == common_pb2.STD_STREAM_STDERR, text, context=e.context))
            self.post_message(LogLines(generation, source, records))

        def ended(error: grpc.RpcError | None) -> None:
            self.post_message(LogEnded(generation, source, error_text(cli, error) if error else None))

        return Feed(f"logs {container_id[:12]}", lambda: stub.GetLogs(request), deliver, ended).begin()

    def stop(self) -> None:
        for feed in self.feeds:
            feed.cancel()
        self.feeds = []

    def on_log_lines(self, message: LogLines) -> None:
        message.stop()
        if message.generation == self.generation:
            self.view.add(message.records)

    def on_log_ended(self, message: LogEnded) -> None:
        message.stop()
        if message.generation != self.generation:
            return
        if message.error:
            self.view.add([Record(time.time_ns(), message.source, True, f"[{message.error}]")])
        # The container stopped: its follower is done; the app starts it
        # again when the container does.
        self.feeds = [f for f in self.feeds if f.thread.is_alive() and not f.cancelled]

    def on_unmount(self) -> None:
        self.stop()

    # -- the keys

    def action_ask(self, what: str) -> None:
        box = self.query_one("#log-input", Input)
        self._asking = what
        box.placeholder = self.PROMPTS[what]
        box.value = {"search": self.view.search.pattern if self.view.search else "", "filter": self.pattern,
                     "since": "", "export": "ross-logs.txt"}[what]
        box.display = True
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id != "log-input":
            return
        event.stop()
        box = event.input
        box.display = False
        self.view.focus()
        self.answer(self._asking, event.value)

    def answer(self, what: str, value: str) -> None:
        """
        Do what the prompt C{what} asked for with the user's C{value}.
        """
        if what == "search":
            self.search(value)
        elif what == "filter":
            self.pattern = value
            self._restart()
        elif what == "since":
            try:
                self.since = parse_time(value) if value.strip() else None
            except RossError as e:
                self.app.notify(str(e), severity="error")
                return
            self.view.follow = True
            self._restart()
        elif what == "export":
            self.export(value)

    def search(self, pattern: str) -> None:
        try:
            self.view.search = re.compile(pattern, re.IGNORECASE) if pattern else None
        except re.error as e:
            self.app.notify(f"invalid search: {e}", severity="error")
            return
        self.view.current = None
        self.view.refresh()
        if pattern and not self.view.find(forward=False):
            self.app.notify(f"Not found: {pattern}", severity="warning")

    def export(self, path: str) -> None:
        lines = self.view.shown_text()
        try:
            with open(path, "w", encoding="utf-8") as f:
                f.write("".join(line + "\n" for line in lines))
        except OSError as e:
            self.app.notify(f"export failed: {e.strerror}: {path}", severity="error")
            return
        self.app.notify(f"{len(lines)} lines written to {path}")

    def action_find(self, forward: bool) -> None:
        self.view.find(forward)

    def action_context(self, delta: int) -> None:
        self.context = max(0, self.context + delta)
        if self.pattern:
            self._restart()

    def action_streams(self) -> None:
        self.streams = STREAMS[(STREAMS.index(self.streams) + 1) % len(STREAMS)]
        self._restart()

    def action_timestamps(self) -> None:
        view = self.view
        view.timestamps = not view.timestamps
        view.set_records(view.records)
        self._show_command(self.command())

    def action_toggle_follow(self) -> None:
        view = self.view
        view.follow = not view.follow
        if view.follow:
            view.scroll_end(animate=False)
        self.app.notify("following" if view.follow else "not following")
