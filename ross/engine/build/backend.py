# -*- test-case-name: ross.test.integration.test_build -*-
"""
What the builder needs of the engine, and nothing more: images to start
from, writable roots on them, containers that run a step's command, and
commits that turn a root's changes into an image.

The builder only talks to a L{BuildBackend}; L{ross.engine.build.enginebackend}
implements it over the container manager and the image store, so either
can change shape without the builder noticing.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IPushProducer


@attrs.frozen
class BuildImage:
    """
    An image a step starts from or made. C{id} is "" for scratch;
    C{config} is the whole image config document (architecture, os,
    config, history, rootfs...), as read.
    """

    id: str
    config: Mapping[str, Any] = attrs.field(factory=dict)

    @property
    def short_id(self) -> str:
        return self.id[len("sha256:"):][:12] if self.id else ""

    @property
    def run_config(self) -> Mapping[str, Any]:
        """The "config" object: Env, Cmd, Entrypoint, WorkingDir..."""
        value = self.config.get("config")
        return value if isinstance(value, Mapping) else {}


SCRATCH = BuildImage(id="")


@attrs.frozen
class RunSpec:
    """
    A step's command and how it runs: C{args} (no entrypoint), the whole
    environment, user and working directory, the network ("default",
    "none", "host" or a network's name) and read-only bind mounts
    (host path, path in the container).
    """

    args: tuple[str, ...]
    env: tuple[str, ...] = ()
    user: str = ""
    workdir: str = ""
    network: str = "default"
    binds: tuple[tuple[str, str], ...] = ()


class Root(Protocol):
    """
    A root filesystem a step reads or writes: C{upper} (its own layer
    directory; "" for a read-only view) over C{lowers} (the image's
    layers, nearest first).
    """

    upper: str
    lowers: tuple[str, ...]


class Container(Root, Protocol):
    """A step's container, created and not started; C{id} its container ID."""

    id: str


class RunOutput(Protocol):
    """Where a step's container output goes, with flow control (a push consumer)."""

    def write(self, stream: str, data: bytes) -> None:
        """C{data} the command wrote to C{stream} ("stdout" or "stderr")."""

    def registerProducer(self, producer: IPushProducer, streaming: bool) -> None:
        """The container's output can be paused through C{producer}."""

    def unregisterProducer(self) -> None:
        """The container's output is over."""


class BuildBackend(Protocol):
    """
    The engine as a build sees it. Every call is made from the reactor
    thread and answers with a Deferred.
    """

    def image(self, reference: str, pull: bool = False) -> Deferred[BuildImage]:
        """
        The image C{reference} (a name or an image ID) names; pulled when
        C{pull} or when it is not here and a registry can give it.
        NotFound when there is none.
        """

    def workspace(self, parent: BuildImage) -> Deferred[Root]:
        """A new writable root on C{parent} (scratch: an empty one)."""

    def view(self, image: BuildImage) -> Deferred[Root]:
        """A read-only root of C{image}, for COPY --from."""

    def create(self, parent: BuildImage, spec: RunSpec) -> Deferred[Container]:
        """A container of C{parent} for C{spec}, not started."""

    def start(self, container: Container, output: RunOutput) -> Deferred[int]:
        """
        Start C{container} with its output going to C{output}; fires with
        its exit code once it exited and all of its output was delivered.
        """

    def kill(self, container: Container) -> Deferred[None]:
        """Stop C{container} now (SIGKILL); nothing when it is not running."""

    def commit(self, root: Root | None, parent: BuildImage, config: Mapping[str, Any], created_by: str,
               author: str = "") -> Deferred[BuildImage]:
        """
        An image of C{parent} plus what changed in C{root} (no layer when
        nothing did, or without a C{root}), C{config} as its "config"
        object and one more history entry (C{created_by}, C{author}).
        All or nothing: a failure leaves no blob, snapshot or record.
        """

    def release(self, root: Root) -> Deferred[None]:
        """Remove a workspace, view or container (and its snapshot)."""

    def tag(self, image: BuildImage, reference: str) -> Deferred[None]:
        """Point C{reference} at C{image}."""
