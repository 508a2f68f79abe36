# -*- test-case-name: ross.test.integration.test_tui -*-
"""
The daemons one console shows: each its own connection (address, TLS files,
token), its own event feed, and its own idea of whether it is reachable.
"""

from __future__ import annotations

import io
import threading
from concurrent.futures import Future
from typing import Any

import grpc

from ross.cli.main import load, resolve
from ross.client.base import Cli, run_command
from ross.client.settings import Globals
from ross.tui.client import Feed, connect


class Host:
    """
    One daemon. C{index} is its place in the console's list (row keys start
    with it); C{name} what the HOST column shows (a context's name or the
    address).
    """

    def __init__(self, index: int, name: str, cli: Cli, owned: bool = False) -> None:
        self.index = index
        self.name = name
        self.cli = cli
        self.feed: Feed | None = None
        self.connected = False
        self.told_lost = False
        self._owned = owned
        self._prefetched: Future[list[Any]] | None = None

    @classmethod
    def open(cls, index: int, name: str, g: Globals) -> Host:
        return cls(index, name, connect(g), owned=True)

    def prefetch(self) -> None:
        """
        List the daemon's containers now, in a thread, while the console is
        still starting: the first table needs them and nothing else (the
        event feed replays the last minute, so nothing between this listing
        and its subscription is missed).
        """
        from ross.v1 import container_pb2

        future: Future[list[Any]] = Future()
        stub = self.cli.stub("ContainerService")

        def run() -> None:
            try:
                future.set_result(list(stub.ListContainers(container_pb2.ListContainersRequest(all=True)).containers))
            except grpc.RpcError as e:
                future.set_exception(e)

        self._prefetched = future
        threading.Thread(target=run, name=f"ross-tui prefetch {self.index}", daemon=True).start()

    def take_prefetched(self) -> Future[list[Any]] | None:
        """
        The listing L{prefetch} started, once.
        """
        found, self._prefetched = self._prefetched, None
        return found

    @property
    def globals(self) -> Globals:
        return self.cli.globals

    def command_prefix(self, many: bool) -> list[str]:
        """
        The ``ross`` command's connection flags for this daemon, when the
        console shows several (one daemon: the user's own settings).
        """
        return ["-H", self.globals.host] if many else []

    def run(self, argv: list[str]) -> tuple[int, str, str]:
        """
        Run ``ross ARGV`` against this daemon, in this process (blocking:
        call it from a thread): (exit code, stdout, stderr). The console's
        actions are the CLI's own commands, so what it shows as their
        command line is what ran.
        """
        command, target, args = resolve(argv)
        function = load(target)
        out, err = io.StringIO(), io.StringIO()
        if function is None:
            return 125, "", f"Error: '{command}' is not implemented yet\n"
        code = run_command(function, Cli(self.globals, command, out, err), args)
        return code, out.getvalue(), err.getvalue()

    def close(self) -> None:
        if self.feed is not None:
            self.feed.cancel()
            self.feed = None
        if self._owned:
            self.cli.close()
