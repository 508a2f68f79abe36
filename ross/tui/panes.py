# -*- test-case-name: ross.test.integration.test_tui -*-
"""
The panes that follow one container: its CPU and memory, and shells (an
exec'd C{sh} or the main process's terminal). The log pane is in
L{ross.tui.logs}.

Each owns its stream (a L{Feed} or a L{Session}) and ends it when it
follows another container or leaves the screen.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import grpc
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label, Sparkline

from ross.client.base import Cli
from ross.client.frames import Frames
from ross.humanize import human_size
from ross.protocols.attach import parse_detach_keys
from ross.tui.client import Feed, Session, attach_again, error_text
from ross.tui.messages import PaneClosed, ShellEnded, StatsSample, StreamEnded
from ross.tui.terminal import Terminal
from ross.v1 import common_pb2, container_pb2

#: Stats samples kept for the sparklines (one a second).
SAMPLES = 60


class StatsPane(Vertical):
    """
    CPU, memory, network and block I/O of the selected container as
    sparklines of the last L{SAMPLES} samples (one a second, from the Stats
    stream); network and block I/O as rates between samples.
    """

    #: (id, label) of every series, in the order drawn.
    SERIES = (("cpu", "CPU"), ("mem", "MEM"), ("net", "NET"), ("blk", "BLOCK I/O"))

    def __init__(self, cli: Cli, id: str | None = None) -> None:
        super().__init__(id=id)
        self.cli = cli
        self.container_id: str | None = None
        self.feed: Feed | None = None
        self.history: dict[str, deque[float]] = {key: deque(maxlen=SAMPLES) for key, _ in self.SERIES}
        self._last: Any = None

    @property
    def cpu(self) -> deque[float]:
        return self.history["cpu"]

    @property
    def memory(self) -> deque[float]:
        return self.history["mem"]

    def compose(self) -> ComposeResult:
        yield Label("stats", id="stats-title", classes="pane-title")
        for key, label in self.SERIES:
            yield Label(label, id=f"{key}-label")
            yield Sparkline([], id=key)

    def follow(self, container_id: str | None, name: str = "") -> None:
        self.stop()
        self.container_id = container_id
        for series in self.history.values():
            series.clear()
        self._last = None
        self._draw()
        self.query_one("#stats-title", Label).update(f"stats: {name or container_id[:12]}" if container_id else "stats")
        for key, label in self.SERIES:
            self.query_one(f"#{key}-label", Label).update(label)
        if container_id is None:
            return
        stub = self.cli.stub("ContainerService")
        request = container_pb2.StatsRequest(container_id=container_id, stream=True)
        cli = self.cli

        def ended(error: grpc.RpcError | None) -> None:
            self.post_message(StreamEnded(container_id, error_text(cli, error) if error else None))

        def deliver(sample: Any) -> None:
            self.post_message(StatsSample(container_id, sample))

        self.feed = Feed(f"stats {container_id[:12]}", lambda: stub.Stats(request), deliver, ended).begin()

    def stop(self) -> None:
        if self.feed is not None:
            self.feed.cancel()
            self.feed = None

    def _draw(self) -> None:
        for key, series in self.history.items():
            self.query_one(f"#{key}", Sparkline).data = list(series)

    def on_stats_sample(self, message: StatsSample) -> None:
        message.stop()
        if message.container_id != self.container_id:
            return
        s, last = message.sample, self._last
        self._last = s
        self.cpu.append(s.cpu_percent)
        self.memory.append(float(s.memory_usage))
        label = lambda key, text: self.query_one(f"#{key}-label", Label).update(text)  # noqa: E731
        label("cpu", f"CPU {s.cpu_percent:.2f}%")
        limit = f" / {human_size(s.memory_limit)}" if s.memory_limit else ""
        label("mem", f"MEM {human_size(s.memory_usage)}{limit}  PIDS {s.pids}")
        if last is not None:
            seconds = max(1e-3, (s.read.seconds - last.read.seconds) + (s.read.nanos - last.read.nanos) / 1e9)
            rx = max(0, s.net_rx_bytes - last.net_rx_bytes) / seconds
            tx = max(0, s.net_tx_bytes - last.net_tx_bytes) / seconds
            read = max(0, s.block_read_bytes - last.block_read_bytes) / seconds
            write = max(0, s.block_write_bytes - last.block_write_bytes) / seconds
            self.history["net"].append(rx + tx)
            self.history["blk"].append(read + write)
            label("net", f"NET in {human_size(rx)}/s out {human_size(tx)}/s")
            label("blk", f"BLOCK I/O read {human_size(read)}/s write {human_size(write)}/s")
        self._draw()

    def on_stream_ended(self, message: StreamEnded) -> None:
        message.stop()
        if message.container_id == self.container_id:
            self.feed = None
            self.query_one("#cpu-label", Label).update(f"CPU [{message.error or 'stopped'}]")

    def on_unmount(self) -> None:
        self.stop()


class ShellPane(Vertical, can_focus=False):
    """
    A terminal on a container: a new C{sh} (C{shell=True}) or the main
    process (attach, with its recent screen replayed first).

    The session starts once the pane is laid out, at the pane's size; it
    ends when the program exits or detaches (the pane then closes itself),
    or when the pane is removed, which detaches: the program runs on, as
    it does when a docker client detaches. On this host's unix socket the
    session asks for a direct channel to the container's shim, as the
    CLI's do (SPEC 3; C{ROSS_DIRECT=0} keeps it on the gRPC stream).
    """

    def __init__(self, cli: Cli, container_id: str, name: str, shell: bool, tty: bool = True,
                 stdin: bool = True, id: str | None = None) -> None:
        super().__init__(id=id, classes="shell")
        self.cli = cli
        self.container_id = container_id
        self.container_name = name
        self.shell = shell
        self.tty = tty
        self.stdin = stdin
        self.session: Session | None = None
        self.closed = False
        self.exec_id = ""
        self.ended: str | None = None
        self._typed_early = bytearray()
        #: The terminal size the pane last gave its session.
        self._window_size = (24, 80)
        self._terminal = Terminal(self._send, self._resize, newline_is_crlf=not tty)

    @property
    def title(self) -> str:
        return f"{'sh' if self.shell else 'attach'}: {self.container_name}"

    def compose(self) -> ComposeResult:
        yield Label(self.title, classes="pane-title")
        yield self._terminal

    @property
    def terminal(self) -> Terminal:
        return self._terminal

    def on_terminal_title_changed(self, message: Terminal.TitleChanged) -> None:
        message.stop()
        title = f"{self.title} — {message.title}" if message.title else self.title
        self.query_one(".pane-title", Label).update(title)

    def _send(self, data: bytes) -> None:
        if not self.stdin:
            return
        if self.session is None:
            # Typed before the pane was laid out: the session starts then.
            self._typed_early += data
        else:
            self.session.send(data)

    def _resize(self, rows: int, cols: int) -> None:
        if self.session is None:
            if self.ended is None:
                self._start(rows, cols)
        elif self.tty:
            self._window_size = (rows, cols)
            self.session.resize(rows, cols)

    def _start(self, rows: int, cols: int) -> None:
        stub = self.cli.stub("ContainerService")
        window = common_pb2.WindowSize(rows=rows, cols=cols)
        self._window_size = (rows, cols)
        reattach = attach_again(self.cli, self.stdin, lambda: self._window_size) if self.tty else None
        direct = self.cli.direct_channels()
        # On a direct channel the detach keys are the pane's to scan: the
        # daemon's default, on a terminal only, as on the stream.
        keys = parse_detach_keys("") if direct and self.tty else b""
        if self.shell:
            start = container_pb2.ExecInput(start=container_pb2.ExecConfig(
                container_id=self.container_id, cmd=["sh"], env=["TERM=xterm"], tty=True, attach_stdin=True,
                window=window, direct=direct))
            self.session = Session(f"exec {self.container_id[:12]}", stub.Exec, Frames(container_pb2.ExecInput),
                                   start, self._on_frame, self._on_end, detach_keys=keys,
                                   reattach=reattach).begin()
        else:
            first = container_pb2.AttachInput(start=container_pb2.AttachStart(
                container_id=self.container_id, attach_stdin=self.stdin, replay=True,
                window=window if self.tty else None, direct=direct))
            self.session = Session(f"attach {self.container_id[:12]}", stub.Attach,
                                   Frames(container_pb2.AttachInput), first, self._on_frame, self._on_end,
                                   detach_keys=keys, reattach=reattach).begin()
        if self._typed_early:
            self.session.send(bytes(self._typed_early))
            self._typed_early.clear()

    # -- the session's thread

    def _on_frame(self, frame: Any) -> None:
        kind = frame.WhichOneof("output")
        if kind == "data":
            # Fed here, in the session's thread: the emulator keeps up with
            # the stream and the widget redraws at its own pace. While it
            # feeds, the stream is not read, and flow control slows the
            # program down to the emulator's speed, never to the screen's.
            if not self.closed:
                self._terminal.feed(frame.data.data)
        elif kind == "started":
            self.exec_id = frame.started.exec_id
        elif kind == "exit":
            error = f": {frame.exit.error}" if frame.exit.error else ""
            self.post_message(ShellEnded(f"{self.title} exited ({frame.exit.status_code}){error}"))
        elif kind == "detached":
            self.post_message(ShellEnded(f"{self.title}: detached"))

    def _on_end(self, error: Exception | None) -> None:
        # After an exit or detached frame this says nothing new (the pane
        # takes the first end it hears of).
        if isinstance(error, grpc.RpcError):
            how = error_text(self.cli, error)
        else:
            how = str(error) if error is not None else "the session ended"
        self.post_message(ShellEnded(f"{self.title}: {how}"))

    # -- the event loop

    def on_shell_ended(self, message: ShellEnded) -> None:
        message.stop()
        if self.ended is not None:
            return
        self.ended = message.text
        self.close()
        self.app.post_message(PaneClosed(self, message.text))

    def close(self) -> None:
        """
        Leave the session (the program runs on) and remove the pane.
        """
        self._leave()
        if self.is_attached:
            self.remove()

    def _leave(self) -> None:
        self.closed = True
        if self.session is not None:
            self.session.close()

    def on_unmount(self) -> None:
        self._leave()
