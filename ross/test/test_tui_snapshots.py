"""
Each view of ``ross-tui`` as an SVG screenshot, compared with the one kept
in ross/test/snapshots/ (Textual's export_screenshot, the same SVG that
pytest-textual-snapshot compares). The app is fed fixed containers, images,
volumes, networks and events instead of a daemon's, at a fixed time.

After a deliberate change of the layout, write the new screenshots with
``ROSS_UPDATE_SNAPSHOTS=1`` and look at them before committing.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any

from twisted.trial.unittest import SynchronousTestCase

from ross.client.base import Cli
from ross.client.settings import Globals
from ross.tui import rows
from ross.tui.app import RossApp
from ross.tui.hosts import Host
from ross.tui.messages import ContainersListed, EventSeen
from ross.tui.views import ImagesView, Listed, NetworksView, ObjectView, StatsSeen, StatsView, VolumesView
from ross.v1 import container_pb2, image_pb2, network_pb2, system_pb2, volume_pb2

SNAPSHOTS = Path(__file__).parent / "snapshots"
NOW = 1_800_000_000


class _Clock:
    @staticmethod
    def time() -> float:
        return NOW


class StillApp(RossApp):
    """
    The console without event feeds: the test tells it what there is.
    """

    def _connect(self, host: Host) -> None:
        pass

    def views(self) -> list[ObjectView]:
        # Nothing to list from: the test posts the lists.
        return []

    def _follow_all_stats(self) -> None:
        pass


def containers() -> list[Any]:
    found = []
    for i, (name, status, image) in enumerate([("web", container_pb2.CONTAINER_STATUS_RUNNING, "nginx:1.27"),
                                                ("db", container_pb2.CONTAINER_STATUS_PAUSED, "postgres:17"),
                                                ("job", container_pb2.CONTAINER_STATUS_EXITED, "busybox")]):
        c = container_pb2.Container(id=f"{i + 1:x}" * 64, name=name, image=image, command="sh -c run")
        c.created.seconds = NOW - 3600 * (i + 1)
        c.state.status = status
        c.state.started_at.seconds = NOW - 600 * (i + 1)
        c.state.finished_at.seconds = NOW - 60
        c.state.exit_code = 3 if name == "job" else 0
        if name == "web":
            c.network_settings.ports.add(container_port="80/tcp", host_ip="0.0.0.0", host_port=8080)
        found.append(c)
    return found


def images() -> list[Any]:
    image = image_pb2.Image(id="sha256:" + "ab" * 32, repo_tags=["docker.io/library/busybox:latest"], size=2_200_000)
    image.created.seconds = NOW - 86400 * 3
    return [image]


class SnapshotTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.patch(rows, "time", _Clock)

    def check(self, view: str, svg: str) -> None:
        # Rich names the SVG's classes after a hash that changes between
        # runs of the same picture.
        svg = re.sub(r"terminal-\d+", "terminal", svg)
        path = SNAPSHOTS / f"{view}.svg"
        if os.environ.get("ROSS_UPDATE_SNAPSHOTS"):
            path.write_text(svg)
        if not path.exists():
            self.fail(f"no snapshot {path}: write it with ROSS_UPDATE_SNAPSHOTS=1 and look at it")
        self.assertEqual(svg, path.read_text(), f"{view} looks different from {path}")

    def test_views(self) -> None:
        """
        Containers (one marked), images, volumes, networks, events and the
        stats of all look as they did.
        """
        shots: dict[str, str] = {}

        async def main() -> None:
            g = Globals()
            g.host = "unix:///run/ross/ross.sock"
            cli = Cli(g, "ross-tui")
            app = StillApp(hosts=[Host(0, g.host, cli)])
            async with app.run_test(size=(120, 30)) as pilot:
                app.post_message(ContainersListed(0, containers()))
                await pilot.pause()
                app.marked["0:" + "2" * 64] = None
                app._refresh_table(force=True)
                host = app.hosts[0]
                image_view = app.query_one(ImagesView)
                image_view.post_message(Listed(image_view, 0, list(
                    (key, cells, None) for key, cells in rows.image_rows(images()))))
                volume = volume_pb2.Volume(name="data", driver="local", mountpoint="/var/lib/ross/volumes/data")
                volume_view = app.query_one(VolumesView)
                volume_view.post_message(Listed(volume_view, 0, [("data", ("local", "data", volume.mountpoint), volume)]))
                network = network_pb2.Network(id="c" * 64, name="ross0", driver="bridge", scope="local")
                network_view = app.query_one(NetworksView)
                network_view.post_message(Listed(network_view, 0, [(network.id, (network.id[:12], "ross0", "bridge",
                                                                                 "local"), network)]))
                for action in ("create", "start"):
                    event = system_pb2.Event(type="container", action=action, actor_id="1" * 64,
                                             attributes={"name": "web", "image": "nginx:1.27"})
                    event.time.seconds = NOW - 600
                    app.post_message(EventSeen(host.index, event))
                await pilot.pause()
                await pilot.pause()
                for view in ("containers", "images", "volumes", "networks", "events", "stats"):
                    app.action_tab(view)
                    if view == "stats":
                        stats = app.query_one(StatsView)
                        key = "0:" + "1" * 64
                        stats.names[key], stats.samples[key] = "web", []
                        for i, cpu in enumerate((5.0, 42.5, 12.25)):
                            sample = container_pb2.StatsResponse(
                                cpu_percent=cpu, memory_usage=50_000_000 + i * 1_000_000, net_rx_bytes=1000 * i,
                                net_tx_bytes=500 * i, block_read_bytes=4096 * i, pids=3)
                            sample.read.seconds = NOW + i
                            stats.post_message(StatsSeen(key, sample))
                    # A table sizes its columns on the refresh after it is
                    # shown: let that and the tab's underline settle.
                    for _ in range(3):
                        await pilot.wait_for_scheduled_animations()
                        await pilot.pause()
                    shots[view] = app.export_screenshot(title=f"ross-tui {view}")
            cli.close()

        asyncio.run(main())
        for view, svg in shots.items():
            self.check(view, svg)
