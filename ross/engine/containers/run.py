# -*- test-case-name: ross.test.integration.test_interactive,ross.test.integration.test_dockerapi_attach -*-
"""
docker's run and start over the container manager, for every listener:
create, start with a hook that runs before the command (where a client
attaches and misses nothing), and the removal of an auto-remove container
whose start failed, as dockerd removes it.
"""

from __future__ import annotations

from typing import Any, Callable

import attrs
from twisted.internet.defer import Deferred

from ross.engine.containers import config as container_config
from ross.engine.containers.manager import ContainerManager
from ross.engine.containers.store import ContainerRecord
from ross.engine.runtime.runtime import ExitStatus
from ross.interfaces import IShim
from ross.protocols.shim import ContainerStartError


@attrs.frozen
class Run:
    """
    A container created and started, or that could not start.

    @ivar record: the container as created.
    @ivar removed: for an auto-remove container, fires with its last exit
        status once it is gone; None for others.
    @ivar start_error: why its command could not run (its exit code and
        message: docker's run exits with that code); None once started.
    """

    record: ContainerRecord
    removed: Deferred[ExitStatus] | None
    start_error: ContainerStartError | None = None


async def start(manager: ContainerManager, ref: str,
                before: Callable[[IShim], Any] | None = None) -> ContainerRecord:
    """
    Start a container (L{ContainerManager.start_container}, C{before(shim)}
    running before its command); one with auto-remove whose command could
    not run is removed before the L{ContainerStartError} is raised.
    """
    record = manager.resolve(ref)
    try:
        return await manager.start_container(record.id, before=before)
    except ContainerStartError:
        if record.host.auto_remove:
            await manager.remove(record.id, force=True, volumes=True)
        raise


async def run(manager: ContainerManager, name: str, config: container_config.ContainerConfig,
              host: container_config.HostConfig,
              before: Callable[[IShim], Any] | None = None) -> Run:
    """
    Create a container and start it (L{start}): a command that could not
    run is no failure of the run, which tells its error. A bad request
    fails as the create does, and creates nothing.
    """
    record = await manager.create(name, config, host)
    # Waited for before the start, which may remove it.
    removed = manager.wait_removed(record.id) if host.auto_remove else None
    try:
        await start(manager, record.id, before)
    except ContainerStartError as e:
        return Run(record, removed, e)
    return Run(record, removed)
