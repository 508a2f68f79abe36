# -*- test-case-name: ross.test.integration.test_tui -*-
"""
The views beside the container table: images, volumes, networks and the
event stream, each listing every connected daemon's objects; and the
screens they open (inspect as folding JSON, image history, a prompt).

A view lists in a worker thread and gets the rows back as a message; the
app asks it to list again when an event says its objects changed.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Callable, Iterable

import grpc
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Input, Label, Static, Tree
from textual.widgets.data_table import CellDoesNotExist
from textual.widgets.tree import TreeNode

from ross.humanize import human_duration, human_size, rfc3339
from ross.tui.rows import IMAGE_COLUMNS, image_rows
from ross.v1 import image_pb2, network_pb2, volume_pb2

if TYPE_CHECKING:
    from ross.tui.hosts import Host

#: Events kept in the events view.
EVENTS_KEPT = 2000


class Listed(Message):
    def __init__(self, view: ObjectView, host: int, rows: list[tuple[str, tuple[str, ...], Any]]) -> None:
        super().__init__()
        self.view = view
        self.host = host
        self.rows = rows


class StatsSeen(Message):
    """
    A stats sample of the container with row key C{key}.
    """

    def __init__(self, key: str, sample: Any) -> None:
        super().__init__()
        self.key = key
        self.sample = sample


class HostsTable(Vertical):
    """
    A table of rows from every daemon (L{hosts}): with more than one, its
    first column names the daemon of each row.
    """

    columns: tuple[str, ...] = ()

    def __init__(self, hosts: list[Host], id: str | None = None) -> None:
        super().__init__(id=id)
        self.hosts = hosts

    def compose(self) -> ComposeResult:
        yield DataTable(cursor_type="row", zebra_stripes=True)

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one(DataTable)

    def on_mount(self) -> None:
        if len(self.hosts) > 1:
            self.table.add_column("HOST", key="HOST")
        for column in self.columns:
            self.table.add_column(column, key=column)


class ObjectView(HostsTable):
    """
    A table of one kind of object on every daemon. Subclasses say how to
    list them (L{rows}), and what their keys do.
    """

    #: Event types after which the view lists again.
    kind = ""
    #: The CLI command that removes one (its name last).
    remover: tuple[str, ...] = ()

    def __init__(self, hosts: list[Host], id: str | None = None) -> None:
        super().__init__(hosts, id=id)
        self.objects: dict[str, tuple[Host, Any]] = {}
        self._rows: dict[int, list[tuple[str, tuple[str, ...], Any]]] = {}

    def rows(self, host: Host) -> Iterable[tuple[str, tuple[str, ...], Any]]:
        """
        (key, cells, object) of every object on C{host}; runs in a thread.
        """
        raise NotImplementedError

    @work(thread=True, group="lists")
    def reload(self, host: Host) -> None:
        try:
            rows = list(self.rows(host))
        except grpc.RpcError:
            # The event feed tells the user the daemon went away.
            return
        self.post_message(Listed(self, host.index, rows))

    def on_listed(self, message: Listed) -> None:
        message.stop()
        self._rows[message.host] = message.rows
        self.draw()

    def draw(self) -> None:
        table = self.table
        selected = self.selected_key()
        table.clear()
        self.objects = {}
        many = len(self.hosts) > 1
        for index, rows in sorted(self._rows.items()):
            host = self.hosts[index]
            for key, cells, obj in rows:
                full = f"{index}:{key}"
                self.objects[full] = (host, obj)
                table.add_row(*((host.name,) if many else ()), *cells, key=full)
        keys = list(self.objects)
        if selected in keys:
            table.move_cursor(row=keys.index(selected))

    def selected_key(self) -> str | None:
        table = self.table
        if not table.row_count:
            return None
        try:
            return table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        except CellDoesNotExist:
            return None

    def selected(self) -> tuple[Host, Any] | None:
        key = self.selected_key()
        found = self.objects.get(key) if key else None
        if found is None:
            self.app.notify("Nothing selected", severity="warning")
        return found

    def target(self) -> tuple[Host, str] | None:
        """
        The selected object's daemon and the name the CLI knows it by.
        """
        found = self.selected()
        return None if found is None else (found[0], found[1].name)

    def action_remove(self) -> None:
        target = self.target()
        if target is not None:
            host, name = target
            words = (*self.remover, name)
            self.app.confirm_command(host, " ".join(words), f"Remove {self.kind} {name}?",  # type: ignore[attr-defined]
                                     *words)

    def action_inspect(self) -> None:
        target = self.target()
        if target is not None:
            self.app.inspect(target[0], self.kind, target[1])  # type: ignore[attr-defined]

    def shown(self) -> list[tuple[str, ...]]:
        """
        The table's cells, row by row (for tests).
        """
        return [tuple(str(c) for c in self.table.get_row(r)) for r in self.table.rows]


class ImagesView(ObjectView):
    kind = "image"
    columns = IMAGE_COLUMNS
    remover = ("rmi",)

    BINDINGS = [
        Binding("P", "pull", "Pull", id="image.pull"),
        Binding("T", "tag", "Tag", id="image.tag"),
        Binding("d,delete", "remove", "Remove", id="image.remove"),
        Binding("h", "history", "History", id="image.history"),
        Binding("i", "inspect", "Inspect", id="image.inspect"),
    ]

    def rows(self, host: Host) -> Iterable[tuple[str, tuple[str, ...], Any]]:
        images = host.cli.stub("ImageService").ListImages(image_pb2.ListImagesRequest()).images
        by_id = {image.id: image for image in images}
        for key, cells in image_rows(images):
            yield key, cells, by_id[key.split(" ", 1)[0]]

    def target(self) -> tuple[Host, str] | None:
        found = self.selected()
        if found is None:
            return None
        host, image = found
        key = self.selected_key() or ""
        tag = key.split(" ", 1)[1] if " " in key else image.id
        return host, (tag if not tag.startswith("<none>") else image.id)

    def action_pull(self) -> None:
        host = self.hosts[0] if len(self.hosts) == 1 else (self.selected() or (self.hosts[0], None))[0]

        def answered(ref: str | None) -> None:
            if ref:
                self.app.run_command(host, f"pull {ref}", "pull", ref)  # type: ignore[attr-defined]

        self.app.push_screen(PromptScreen("Pull which image? (e.g. busybox, localhost:5000/app:1)"), answered)

    def action_tag(self) -> None:
        target = self.target()
        if target is None:
            return
        host, ref = target

        def answered(new: str | None) -> None:
            if new:
                self.app.run_command(host, f"tag {ref} {new}", "tag", ref, new)  # type: ignore[attr-defined]

        self.app.push_screen(PromptScreen(f"New tag for {ref}:"), answered)

    def action_history(self) -> None:
        target = self.target()
        if target is not None:
            self.app.show_history(*target)  # type: ignore[attr-defined]


class VolumesView(ObjectView):
    kind = "volume"
    remover = ("volume", "rm")
    columns = ("DRIVER", "VOLUME NAME", "MOUNTPOINT")

    BINDINGS = [
        Binding("d,delete", "remove", "Remove", id="volume.remove"),
        Binding("i", "inspect", "Inspect", id="volume.inspect"),
    ]

    def rows(self, host: Host) -> Iterable[tuple[str, tuple[str, ...], Any]]:
        for v in host.cli.stub("VolumeService").ListVolumes(volume_pb2.ListVolumesRequest()).volumes:
            yield v.name, (v.driver, v.name, v.mountpoint), v


class NetworksView(ObjectView):
    kind = "network"
    remover = ("network", "rm")
    columns = ("NETWORK ID", "NAME", "DRIVER", "SCOPE")

    BINDINGS = [
        Binding("d,delete", "remove", "Remove", id="network.remove"),
        Binding("i", "inspect", "Inspect", id="network.inspect"),
    ]

    def rows(self, host: Host) -> Iterable[tuple[str, tuple[str, ...], Any]]:
        for n in host.cli.stub("NetworkService").ListNetworks(network_pb2.ListNetworksRequest()).networks:
            yield n.id, (n.id[:12], n.name, n.driver, n.scope), n


class EventsView(Vertical):
    """
    Every daemon's events as they come, newest last.
    """

    def __init__(self, hosts: list[Host], id: str | None = None) -> None:
        super().__init__(id=id)
        self.hosts = hosts
        self.count = 0

    def compose(self) -> ComposeResult:
        yield DataTable(cursor_type="row", zebra_stripes=True)

    @property
    def table(self) -> DataTable[Any]:
        return self.query_one(DataTable)

    def on_mount(self) -> None:
        if len(self.hosts) > 1:
            self.table.add_column("HOST")
        for column in ("TIME", "TYPE", "ACTION", "ACTOR", "ATTRIBUTES"):
            self.table.add_column(column)

    def add(self, host: Host, event: Any) -> None:
        table = self.table
        at_end = table.cursor_row >= table.row_count - 1
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(event.attributes.items()))
        cells = (rfc3339(event.time.seconds, event.time.nanos), event.type, event.action, event.actor_id[:24], attrs)
        table.add_row(*((host.name,) if len(self.hosts) > 1 else ()), *cells, key=str(self.count))
        self.count += 1
        if table.row_count > EVENTS_KEPT:
            table.remove_row(str(self.count - table.row_count))
        if at_end:
            table.move_cursor(row=table.row_count - 1)


def _json_node(node: TreeNode[Any], key: str, value: Any, expand: bool) -> None:
    if isinstance(value, dict):
        child = node.add(Text.assemble((key, "bold cyan"), f" {{{len(value)}}}"), expand=expand)
        for k, v in value.items():
            _json_node(child, str(k), v, False)
    elif isinstance(value, list):
        child = node.add(Text.assemble((key, "bold cyan"), f" [{len(value)}]"), expand=expand)
        for i, v in enumerate(value):
            _json_node(child, str(i), v, False)
    else:
        node.add_leaf(Text.assemble((key, "cyan"), ": ", (json.dumps(value), "green" if isinstance(value, str)
                                                           else "yellow")))


class InspectScreen(ModalScreen[None]):
    """
    An inspect document as a tree that folds (Enter or a click opens and
    closes a branch); c copies it as JSON.
    """

    BINDINGS = [
        Binding("escape,q", "close", "Close"),
        Binding("c", "copy", "Copy JSON"),
    ]

    def __init__(self, title: str, document: Any, command: str) -> None:
        super().__init__()
        self.title_text = title
        self.document = document
        self.command = command

    def compose(self) -> ComposeResult:
        with Vertical(id="inspect"):
            yield Label(f"{self.title_text}   [dim]$ {self.command}[/dim]", classes="pane-title")
            tree: Tree[Any] = Tree(self.title_text, id="inspect-tree")
            tree.show_root = False
            items = self.document.items() if isinstance(self.document, dict) else enumerate(self.document)
            for key, value in items:
                _json_node(tree.root, str(key), value, expand=False)
            tree.root.expand()
            yield tree

    def on_mount(self) -> None:
        self.query_one(Tree).focus()

    def action_copy(self) -> None:
        self.app.copy_to_clipboard(json.dumps(self.document, indent=4))
        self.app.notify("Copied the JSON")

    def action_close(self) -> None:
        self.dismiss(None)


class HistoryScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "close", "Close")]

    def __init__(self, ref: str, entries: list[Any], command: str) -> None:
        super().__init__()
        self.ref = ref
        self.entries = entries
        self.command = command

    def compose(self) -> ComposeResult:
        with Vertical(id="inspect"):
            yield Label(f"history of {self.ref}   [dim]$ {self.command}[/dim]", classes="pane-title")
            yield DataTable(cursor_type="row", zebra_stripes=True, id="history-table")

    def on_mount(self) -> None:
        import time

        table = self.query_one(DataTable)
        for column in ("IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"):
            table.add_column(column)
        now = time.time()
        for e in self.entries:
            created = e.created.seconds
            table.add_row(e.id[7:19] if e.id.startswith("sha256:") else e.id,
                          human_duration(now - created) + " ago" if created else "N/A",
                          e.created_by[:60], human_size(e.size), e.comment)
        table.focus()

    def action_close(self) -> None:
        self.dismiss(None)


class PromptScreen(ModalScreen[str | None]):
    """
    One line of text from the user; None on Escape.
    """

    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, question: str, value: str = "") -> None:
        super().__init__()
        self.question = question
        self.value = value

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(self.question, id="question")
            yield Input(value=self.value, id="answer")

    def on_mount(self) -> None:
        self.query_one(Input).focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value.strip())

    def action_cancel(self) -> None:
        self.dismiss(None)


#: Samples kept per container in the stats view's trend column.
TREND = 30
_BARS = "▁▂▃▄▅▆▇█"


def trend(values: Iterable[float], top: float) -> str:
    """
    C{values} as a row of bars, full height at C{top}.
    """
    return "".join(_BARS[min(len(_BARS) - 1, int(v / top * (len(_BARS) - 1)))] if top > 0 else _BARS[0]
                   for v in values)


class StatsView(HostsTable):
    """
    Every running container's CPU, memory, network and block I/O, a sample
    a second (one Stats stream each while the view is shown), with a CPU
    trend, and a line for all of them together.
    """

    columns = ("NAME", "CPU %", "CPU (last 30 s)", "MEM", "NET IN/OUT /s", "BLOCK R/W /s", "PIDS")

    def __init__(self, hosts: list[Host], id: str | None = None) -> None:
        super().__init__(hosts, id=id)
        self.feeds: dict[str, Any] = {}
        self.samples: dict[str, list[Any]] = {}
        self.names: dict[str, str] = {}

    def follow(self, running: dict[str, tuple[Host, str]]) -> None:
        """
        Follow the containers of C{running} (row key -> (host, name)), and
        only those.
        """
        from ross.tui.client import Feed
        from ross.v1 import container_pb2

        for key in [k for k in self.feeds if k not in running]:
            self.feeds.pop(key).cancel()
            self.samples.pop(key, None)
        for key, (host, name) in running.items():
            if key in self.feeds:
                continue
            self.names[key] = name
            self.samples[key] = []
            stub = host.cli.stub("ContainerService")
            request = container_pb2.StatsRequest(container_id=key.split(":", 1)[1], stream=True)

            self.feeds[key] = Feed(f"stats {key[:14]}", self._opener(stub, request), self._deliverer(key)).begin()
        self.draw()

    @staticmethod
    def _opener(stub: Any, request: Any) -> Callable[[], Any]:
        return lambda: stub.Stats(request)

    def _deliverer(self, key: str) -> Callable[[Any], None]:
        def deliver(sample: Any) -> None:
            self.post_message(StatsSeen(key, sample))

        return deliver

    def stop(self) -> None:
        for feed in self.feeds.values():
            feed.cancel()
        self.feeds.clear()
        self.samples.clear()

    def on_unmount(self) -> None:
        self.stop()

    def on_stats_seen(self, message: StatsSeen) -> None:
        message.stop()
        kept = self.samples.get(message.key)
        if kept is None:
            return
        kept.append(message.sample)
        del kept[:-TREND - 1]
        self.draw()

    @staticmethod
    def _rates(kept: list[Any]) -> tuple[float, float, float, float]:
        if len(kept) < 2:
            return 0.0, 0.0, 0.0, 0.0
        a, b = kept[-2], kept[-1]
        seconds = max(1e-3, (b.read.seconds - a.read.seconds) + (b.read.nanos - a.read.nanos) / 1e9)
        rx, tx, read, write = (max(0, getattr(b, f) - getattr(a, f)) / seconds
                               for f in ("net_rx_bytes", "net_tx_bytes", "block_read_bytes", "block_write_bytes"))
        return rx, tx, read, write

    def rows(self) -> list[tuple[str, tuple[str, ...]]]:
        """
        (row key, cells) of every container followed, then the total.
        """
        found: list[tuple[str, tuple[str, ...]]] = []
        totals = [0.0] * 7
        for key, kept in sorted(self.samples.items(), key=lambda kv: self.names.get(kv[0], "")):
            if not kept:
                continue
            s = kept[-1]
            rx, tx, read, write = self._rates(kept)
            cpu = [k.cpu_percent for k in kept[-TREND:]]
            for i, value in enumerate((s.cpu_percent, s.memory_usage, rx, tx, read, write, s.pids)):
                totals[i] += value
            found.append((key, (self.names[key], f"{s.cpu_percent:.2f}", trend(cpu, max(100.0, *cpu)),
                                human_size(s.memory_usage), f"{human_size(rx)} / {human_size(tx)}",
                                f"{human_size(read)} / {human_size(write)}", str(s.pids))))
        if found:
            cpu_all, mem, rx, tx, read, write, pids = totals
            found.append(("all", (f"all ({len(found)})", f"{cpu_all:.2f}", "", human_size(mem),
                                  f"{human_size(rx)} / {human_size(tx)}", f"{human_size(read)} / {human_size(write)}",
                                  str(int(pids)))))
        return found

    def draw(self) -> None:
        table = self.table
        many = len(self.hosts) > 1
        with self.app.batch_update():
            table.clear()
            for key, cells in self.rows():
                host = "" if key == "all" else self.hosts[int(key.split(":", 1)[0])].name
                table.add_row(*((host,) if many else ()), *cells, key=key)

    def shown(self) -> list[tuple[str, ...]]:
        return [tuple(str(c) for c in self.table.get_row(r)) for r in self.table.rows]
