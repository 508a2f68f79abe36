# -*- test-case-name: ross.test.test_container_lifecycle,ross.test.integration.test_interactive -*-
"""
Sessions in containers: the exec sessions the daemon started (kept, with
their exit, for inspect and for clients coming back to them), and the
attachments waiting for a container's next start (``start -a``).
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import attrs
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure

from ross.engine.containers.names import new_id
from ross.engine.containers.store import ContainerRecord
from ross.engine.events import EventBus
from ross.engine.runtime import spec as runtime_spec
from ross.engine.runtime.runtime import Attachment, ExitStatus, ShimDetached
from ross.errors import FailedPrecondition, NotFound
from ross.interfaces import IShim

#: Finished exec sessions kept per container, for inspect.
MAX_FINISHED_EXECS = 64

#: A hook run on a container's shim as it starts, and what to tell when
#: that start fails.
AttachHook = tuple[Callable[[IShim], Any], Callable[[BaseException], None]]


@attrs.define
class ExecInfo:
    """
    An exec session the daemon started: its container, command, and exit
    status once known.
    """

    id: str
    container_id: str
    args: tuple[str, ...]
    tty: bool
    pid: int = 0
    exit: ExitStatus | None = None


class Sessions:
    """
    The exec sessions and pending attachments of a container manager's
    containers. The manager resolves references and finds running shims;
    this keeps what sessions there are.

    @param records: container ID -> record, the manager's (read only).
    """

    _log = Logger()

    def __init__(self, records: Mapping[str, ContainerRecord], events: EventBus) -> None:
        self._records = records
        self._events = events
        #: Exec ID -> its session.
        self.execs: dict[str, ExecInfo] = {}
        #: Each container's exec sessions' IDs, oldest first: a listing or
        #: a new exec looks at one container's, not at every container's.
        self._execs_of: dict[str, dict[str, None]] = {}
        self._pending_attach: dict[str, list[AttachHook]] = {}

    def ids_of(self, cid: str) -> tuple[str, ...]:
        """
        The IDs of the container's exec sessions, oldest first.
        """
        return tuple(self._execs_of.get(cid, ()))

    def info(self, exec_id: str) -> ExecInfo:
        try:
            return self.execs[exec_id]
        except KeyError:
            raise NotFound(f"No such exec instance: {exec_id}")

    def session_of(self, record: ContainerRecord, exec_id: str = "",
                   since: int | None = None) -> tuple[ContainerRecord, bool, ExitStatus | None]:
        """
        See L{ross.engine.containers.manager.ContainerManager.session_of}.
        """
        running = record.state.running
        if exec_id:
            info = self.info(exec_id)
            if info.container_id != record.id:
                raise NotFound(f"No such exec instance: {exec_id}")
            if info.exit is not None and since is None:
                raise FailedPrecondition(f"exec session {exec_id} has exited ({info.exit.exit_code})")
            # (With the container running, its shim still has the
            # session's last output to give.)
            return record, info.tty, info.exit if not running else None
        if since is not None and not running:
            state = record.state
            return record, record.config.tty, ExitStatus(exit_code=state.exit_code, oom_killed=state.oom_killed,
                                                         error=state.error)
        return record, record.config.tty, None

    async def exec(self, record: ContainerRecord, shim: IShim, process: runtime_spec.ExecProcess,
                   on_output: Callable[[str, bytes], None] | None, stdin: bool, direct: bool,
                   input_id: str) -> tuple[ExecInfo, Any]:
        """
        Start an exec session in the running container of C{record}, whose
        shim is C{shim}. See L{ross.engine.containers.manager.ContainerManager.exec}.
        """
        # Finished sessions are kept for inspect, but not without bound.
        own = self._execs_of.get(record.id, {})
        finished = [eid for eid in own if self.execs[eid].exit is not None]
        for old in finished[:-MAX_FINISHED_EXECS]:
            del self.execs[old], own[old]
        exec_id = new_id()
        session = await shim.exec(exec_id, process, on_output, stdin, direct, input_id)
        info = ExecInfo(id=exec_id, container_id=record.id, args=tuple(process.args), tty=process.tty,
                        pid=session.pid)
        if record.id in self._records:
            # (Not for a container removed meanwhile: nothing would drop it.)
            self.execs[exec_id] = info
            self._execs_of.setdefault(record.id, {})[exec_id] = None
        self._track(record, info, session.wait())
        # docker's: the command in the action ("exec_start: sh -c ..."),
        # which an event filter on "exec_start" still matches.
        command = " ".join(process.args)
        for action in ("exec_create", "exec_start"):
            self._events.publish("container", f"{action}: {command}", record.id, execID=exec_id, name=record.name,
                                 image=record.image)
        return info, session

    def _track(self, record: ContainerRecord, info: ExecInfo, exited: Deferred[ExitStatus]) -> None:
        """
        Record the exit of exec session C{info} when C{exited} fires.
        """
        def ended(status: ExitStatus) -> ExitStatus:
            info.exit = status
            self._events.publish("container", "exec_die", record.id, execID=info.id,
                                 exitCode=str(status.exit_code), name=record.name, image=record.image)
            return status

        def lost(failure: Failure) -> None:
            # The daemon let go of the shim (stopping): the session runs on.
            if not failure.check(ShimDetached):
                self._log.failure("lost exec session {id}", failure, id=info.id)

        exited.addCallback(ended).addErrback(lost)

    def adopt(self, record: ContainerRecord, shim: IShim) -> None:
        """
        Know again the exec sessions of a container whose shim a restarted
        daemon reconnected to, so their clients can attach to them again
        (SPEC 3) and inspect finds them.
        """
        for exec_id, held in shim.execs.items():
            info = ExecInfo(id=exec_id, container_id=record.id, args=tuple(held.get("args") or ()),
                            tty=bool(held.get("tty")), pid=int(held.get("pid") or 0))
            self.execs[exec_id] = info
            self._execs_of.setdefault(record.id, {})[exec_id] = None
            if held.get("running"):
                self._track(record, info, shim.wait_exec(exec_id))
            else:
                info.exit = ExitStatus.from_wire(held.get("exit") or {})

    async def attach_next_start(self, cid: str, on_output: Callable[[str, bytes], None], stdin: bool) -> Attachment:
        """
        See L{ross.engine.containers.manager.ContainerManager.attach_next_start}.
        """
        ready: Deferred[Attachment] = Deferred()

        async def hook(shim: IShim) -> None:
            try:
                attachment = await shim.attach(on_output, stdin=stdin)
            except BaseException as e:
                failed(e)
                raise
            if ready.called:
                # The caller left while the container was starting.
                attachment.detach()
            else:
                ready.callback(attachment)

        def failed(error: BaseException) -> None:
            if not ready.called:
                ready.errback(error)

        forget = self._attach_at_start(cid, hook, failed)
        try:
            return await ready
        finally:
            forget()

    def _attach_at_start(self, cid: str, hook: Callable[[IShim], Any],
                        failed: Callable[[BaseException], None]) -> Callable[[], None]:
        """
        Run C{hook(shim)} when the container next starts, before its command
        runs (``start -a``); C{failed(error)} when that start fails. Returns
        a function that takes the hook back.
        """
        entry = (hook, failed)
        self._pending_attach.setdefault(cid, []).append(entry)

        def forget() -> None:
            entries = self._pending_attach.get(cid, [])
            if entry in entries:
                entries.remove(entry)

        return forget

    def take_attach_hooks(self, cid: str) -> list[AttachHook]:
        """
        The hooks waiting for the container's start, which is now.
        """
        return self._pending_attach.pop(cid, [])

    def forget(self, cid: str) -> None:
        """
        The container is gone, and so are its sessions.
        """
        self._pending_attach.pop(cid, None)
        for exec_id in self._execs_of.pop(cid, {}):
            del self.execs[exec_id]
