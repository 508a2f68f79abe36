# -*- test-case-name: ross.test.integration.test_runtime -*-
"""
The daemon's side of the runtime: spawns a shim per container run
(L{ross.engine.runtime.shim}) and drives it over the shim protocol.

The daemon never forks without exec and never touches namespaces, mounts or
cgroups itself: L{Runtime.create} spawns C{sys.executable} with
C{reactor.spawnProcess} (posix_spawn), hands it one end of a socketpair as
fd 3 and adopts the other end; the shim detaches from the daemon and sets
the container up. Blocking work (probing a shim's lock, reading its exit
status, removing cgroups and state) runs in the reactor's thread pool.

A state directory per container, C{<state_root>/<id>/}, holds the shim's
socket (C{shim.sock}), lock (C{shim.lock}, held while the shim lives),
C{state.json} (shim pid, container pid, cgroup directories), C{exit.json}
(written atomically when the container's PID 1 is gone) and C{shim.log}.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import signal as signals
import socket
import struct
import sys
from collections import deque
from pathlib import Path
from typing import Any, Callable, Coroutine, Mapping, ParamSpec, TypeVar

import attrs
from twisted.internet.defer import Deferred, fail, gatherResults, succeed
from twisted.internet.interfaces import IDelayedCall, IReadDescriptor
from twisted.internet.protocol import ProcessProtocol, Protocol, ServerFactory, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

import ross
from ross import errors
from ross.engine.pipes import in_pool
from ross.engine.reactors import IEngineReactor
from ross.engine.runtime import cgroups
from ross.engine.runtime.seccomp import Program, SeccompCompiler
from ross.engine.runtime.spec import ContainerSpec, ExecProcess, exec_to_wire, to_wire, validate
from ross.interfaces import IRuntime, IShim
from ross.protocols import shimwire
from ross.protocols.shim import ContainerStartError, ShimFactory, ShimGone, ShimProtocol, TransportProducer, error_of
from ross.engine.fsutil import remove_tree

__all__ = ["Runtime", "ShimHandle", "Attachment", "ExecSession", "ExitStatus", "ShimState",
           "ContainerStats", "ContainerStartError", "ShimDetached"]

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ross.__file__)))
# The package root goes on sys.path in the command, not through the child's
# working directory: Twisted uses posix_spawn only when the child keeps the
# daemon's directory, and otherwise forks a process running gRPC threads.
_PARENT_ARGS = ("-S", "-E", "-s", "-c",
                f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
                "from ross.engine.runtime.shim import serve_forks; serve_forks()")

OutputCallback = Callable[[str, bytes], None]
_T = TypeVar("_T")
_P = ParamSpec("_P")
# Exit statuses of finished exec sessions a handle remembers.
MAX_EXEC_EXITS = 256


def _deferred(f: Callable[_P, Coroutine[Any, Any, _T]]) -> Callable[_P, Deferred[_T]]:
    """
    The coroutine method C{f} as a method returning a Deferred, the
    engine's currency.
    """
    @functools.wraps(f)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> Deferred[_T]:
        return Deferred.fromCoroutine(f(*args, **kwargs))
    return wrapper


@attrs.frozen
class ExitStatus:
    """
    How a container's (or exec session's) process ended: C{exit_code} is
    docker's (128+N for signal N; 125-127 when it could not start, with
    C{error} saying why), times in nanoseconds since the epoch.
    """

    exit_code: int
    signal: int = 0
    oom_killed: bool = False
    started_ns: int = 0
    finished_ns: int = 0
    error: str = ""

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> "ExitStatus":
        return cls(int(d.get("exit_code", 255)), int(d.get("signal") or 0), bool(d.get("oom_killed")),
                   int(d.get("started_ns") or 0), int(d.get("finished_ns") or 0), str(d.get("error") or ""))


@attrs.frozen
class ShimState:
    """
    What a shim reports: C{status} is "created", "running", "paused" or
    "stopped"; C{execs} maps exec IDs to dicts (pid, running, exit, tty, args).
    """

    status: str
    pid: int
    shim_pid: int
    execs: dict[str, dict[str, Any]]
    exit: ExitStatus | None


@attrs.frozen
class ContainerStats:
    """
    Cumulative counters of a container (docker's stats inputs).
    """

    read_ns: int
    cpu_usage_ns: int
    system_cpu_ns: int
    online_cpus: int
    memory_usage: int
    memory_limit: int
    pids: int
    net_rx_bytes: int
    net_tx_bytes: int
    block_read_bytes: int
    block_write_bytes: int


class ShimDetached(Exception):
    """
    C{ShimHandle.exited} fails with this after L{ShimHandle.close}: the
    daemon let go of the shim, the container runs on.
    """


class _SpawnWatcher(Protocol):
    """
    The stderr of a new shim until it has forked away (the shim parent's
    child then exits and the shim writes to its log): it explains a shim
    that failed before it could answer. C{ended} fires at its end;
    C{forked}, with the shim's PID once its parent forked it (-1 when it
    could not), or with None when the parent died before. (Never a
    failure: most are never looked at, as a spare's.)
    """

    def __init__(self) -> None:
        self.stderr = bytearray()
        self.ended: Deferred[None] = Deferred()
        self.forked: Deferred[int | None] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        if len(self.stderr) < 65536:
            self.stderr += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.ended.callback(None)


_PID = struct.Struct("=i")


@implementer(IReadDescriptor)
class _ShimParent(ProcessProtocol):
    """
    The process every shim is forked from (L{ross.engine.runtime.shim.serve_forks}):
    its own errors are logged; C{ended} fires once it has exited.

    Each request sent on C{control} is answered there, in order, with the
    PID of the shim it forked (-1 when it could not): L{expect} gives the
    Deferred of the next request's answer, None if the parent dies first.
    The reactor reads the answers (this object is also the control
    socket's IReadDescriptor).
    """

    _log = Logger()

    def __init__(self, reactor: IEngineReactor, control: socket.socket) -> None:
        self._reactor = reactor
        self.control = control
        self.ended: Deferred[None] = Deferred()
        self._answers: deque[Deferred[int | None]] = deque()
        self._received = b""
        reactor.addReader(self)

    def expect(self) -> Deferred[int | None]:
        answer: Deferred[int | None] = Deferred()
        self._answers.append(answer)
        return answer

    # IReadDescriptor, on the control socket

    def fileno(self) -> int:
        return self.control.fileno()

    def logPrefix(self) -> str:
        return "shim parent"

    def doRead(self) -> None:
        try:
            data = self.control.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self.gone()
            return
        self._received += data
        while len(self._received) >= _PID.size and self._answers:
            (pid,) = _PID.unpack_from(self._received)
            self._received = self._received[_PID.size:]
            self._answers.popleft().callback(pid)

    def connectionLost(self, reason: Failure) -> None:
        self.gone()

    def gone(self) -> None:
        """
        Let go of the control socket (the parent, if alive, exits when it
        sees it closed); every request not answered yet never will be.
        """
        if self.control.fileno() >= 0:
            self._reactor.removeReader(self)
            self.control.close()
        answers, self._answers = self._answers, deque()
        for answer in answers:
            answer.callback(None)

    # ProcessProtocol

    def connectionMade(self) -> None:
        self.transport.closeStdin()  # type: ignore[union-attr]

    def errReceived(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            self._log.warn("shim parent: {line}", line=line)

    def processEnded(self, reason: Failure) -> None:
        self.gone()
        self.ended.callback(None)


class Attachment:
    """
    A client's attachment to a session (the main process, or an exec
    session by ID) over a connection of its own: output goes to
    C{on_output(stream, data)} ("stdout"/"stderr"; a TTY's output is
    "stdout"), C{done} fires with the session's L{ExitStatus} once all its
    output was delivered, or with None when the attachment ends first
    (L{detach}, the shim gone). Other attachments are not affected.
    C{producer} (an IPushProducer) pauses the flow: the shim stops reading
    the session's output meanwhile.
    """

    def __init__(self, session: str, protocol: ShimProtocol, on_output: OutputCallback) -> None:
        self.session = session
        #: Where the output this attachment gets begins, in the session's
        #: output bytes (a PTY session's; 0 from its first byte).
        self.offset = 0
        #: With an input name: the bytes of that input the session took
        #: in before this attachment (None: no name was given).
        self.input_offset: int | None = None
        self._protocol = protocol
        self.done: Deferred[ExitStatus | None] = Deferred()
        self.producer = TransportProducer(protocol)
        protocol.on_output = on_output
        protocol.on_event = self._event
        protocol.on_lost = self._lost

    def _event(self, message: dict[str, Any]) -> None:
        if message.get("event") == "exit" and message.get("session") == self.session and not self.done.called:
            self.done.callback(ExitStatus.from_wire(message["status"]))
            self._protocol.transport.loseConnection()  # type: ignore[union-attr]

    def _lost(self, reason: Failure) -> None:
        if not self.done.called:
            self.done.callback(None)

    def write(self, data: bytes) -> None:
        """
        Send C{data} to the session's stdin (attached with stdin=True).
        """
        self._protocol.send_stdin(data)

    def close_stdin(self) -> Deferred[Any]:
        """
        End of input: the pipe closes once what was written is delivered.
        """
        return self._protocol.request("close_stdin", session=self.session)

    def resize(self, rows: int, cols: int) -> Deferred[Any]:
        return self._protocol.request("resize", session=self.session, rows=rows, cols=cols)

    def detach(self) -> None:
        """
        Leave; the session runs on.
        """
        if self._protocol.transport is not None:
            self._protocol.transport.loseConnection()


@attrs.define
class ExecSession:
    """
    A started exec session: its host C{pid}, its L{Attachment} when the
    caller attached, and L{wait} for its exit status.
    """

    exec_id: str
    pid: int
    attachment: Attachment | None
    _shim: "ShimHandle"
    #: The direct channel, for a session started with one.
    channel: socket.socket | None = None

    def wait(self) -> Deferred[ExitStatus]:
        return self._shim.wait_exec(self.exec_id)


def _attach_fields(session: str, stdin: bool, replay: bool, since: int | None, input_id: str) -> dict[str, Any]:
    """
    The shim's C{attach} request fields (see L{ShimHandle.attach}).
    """
    fields: dict[str, Any] = {"session": session, "stdin": stdin, "replay": replay}
    if since is not None:
        fields["since"] = since
    if input_id:
        fields["input_id"] = input_id
    return fields


@attrs.frozen
class DirectAttach:
    """
    A direct channel to an attached session (L{ShimHandle.attach_direct}):
    where its output begins (C{offset}) and, for a client that named its
    input, how much of that input the session took in so far.
    """

    channel: socket.socket
    offset: int = 0
    input_offset: int | None = None


@implementer(IShim)
class ShimHandle:
    """
    The daemon's handle on one container's shim (see L{IShim}).
    """

    _log = Logger()

    def __init__(self, runtime: "Runtime", container_id: str, protocol: ShimProtocol, pid: int,
                 shim_pid: int, status: str, exit: ExitStatus | None = None,
                 execs: Mapping[str, Mapping[str, Any]] | None = None, started_ns: int = 0) -> None:
        self.id = container_id
        #: The exec sessions the shim held when this handle was made (by
        #: L{Runtime.reconnect}): ID -> {pid, running, exit, tty, args}.
        self.execs = dict(execs or {})
        self.pid = pid
        self.shim_pid = shim_pid
        self.status = status
        self.exit_status = exit
        #: When its command started (ns since the epoch), 0 before or when unknown.
        self.started_ns = started_ns
        self._runtime = runtime
        self._waiters: list[Deferred[ExitStatus]] = []
        self.exited: Deferred[ExitStatus] = Deferred()
        if exit is not None:
            self.exited.callback(exit)
        self._exec_exits: dict[str, ExitStatus] = {}
        self._exec_waiters: dict[str, list[Deferred[ExitStatus]]] = {}
        self._disconnected = False
        self._control = protocol
        self._adopt(protocol)

    def _adopt(self, protocol: ShimProtocol) -> None:
        self._control = protocol
        protocol.on_event = self._event
        protocol.on_lost = self._lost

    # events

    def _event(self, message: dict[str, Any]) -> None:
        if message.get("event") != "exit":
            return
        status = ExitStatus.from_wire(message["status"])
        session = str(message.get("session") or "")
        if session:
            self._exec_exits[session] = status
            # Every exec's exit comes here (health checks run for the
            # container's whole life); waiters registered at its start.
            while len(self._exec_exits) > MAX_EXEC_EXITS:
                del self._exec_exits[next(iter(self._exec_exits))]
            for d in self._exec_waiters.pop(session, []):
                d.callback(status)
        else:
            self._exited(status)

    def _exited(self, status: ExitStatus) -> None:
        if self.exit_status is None:
            self.exit_status = status
        self.status = "stopped"
        if not self.exited.called:
            self.exited.callback(self.exit_status)
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.callback(self.exit_status)
        for exec_id, ds in list(self._exec_waiters.items()):
            for d in ds:
                d.callback(self._exec_exits.get(exec_id, ExitStatus(137, signal=9)))
        self._exec_waiters.clear()

    def _lost(self, reason: Failure) -> None:
        if self._disconnected or self.exit_status is not None:
            return
        # The shim closes the connection only when it exits, normally after
        # the exit event; otherwise find out what happened from its files.
        d = self._runtime._probe(self.id)

        def probed(result: tuple[str, Any]) -> None:
            kind, value = result
            if kind == "alive":
                proto = self._runtime._adopt_socket(value)
                self._adopt(proto)
                proto.request("events").addErrback(lambda f: None)
            else:
                self._exited(value)

        d.addCallbacks(probed, lambda f: self._exited(ExitStatus(255, error=f.getErrorMessage())))

    # requests

    def _request(self, op: str, **fields: Any) -> Deferred[dict[str, Any]]:
        if self.exit_status is not None and op not in ("state", "stats"):
            return fail(errors.FailedPrecondition(f"container {self.id} is not running"))
        if self._disconnected:
            return fail(ShimDetached(f"let go of the shim of container {self.id}"))
        return self._control.request(op, **fields)

    def wait(self) -> Deferred[ExitStatus]:
        """
        Deferred firing with the main process's L{ExitStatus} (at once when
        it has exited already). Each call gives a new Deferred.
        """
        if self.exit_status is not None:
            return succeed(self.exit_status)
        if self._disconnected:
            return fail(ShimDetached(f"let go of the shim of container {self.id}"))
        d: Deferred[ExitStatus] = Deferred()
        self._waiters.append(d)
        return d

    def start(self) -> Deferred[int]:
        """
        Exec the container's command (its set-up is done): Deferred[pid],
        or L{ContainerStartError} with exit code 125/126/127.
        """
        def started(answer: dict[str, Any]) -> int:
            self.status = "running"
            return int(answer["pid"])
        return self._request("start").addCallback(started)

    def state(self) -> Deferred[ShimState]:
        def made(a: dict[str, Any]) -> ShimState:
            self.status = a["status"]
            return ShimState(a["status"], int(a["pid"]), int(a["shim_pid"]), dict(a["execs"]),
                             ExitStatus.from_wire(a["exit"]) if a.get("exit") else None)
        return self._request("state").addCallback(made)

    def kill(self, signal: int = signals.SIGKILL, all: bool = False, session: str = "") -> Deferred[None]:
        """
        Send C{signal} to PID 1 (C{all}: to every process of the container;
        C{session}: to the process group of that exec session instead).
        FailedPrecondition when it is not running.
        """
        fields: dict[str, Any] = {"signal": int(signal), "all": all}
        if session:
            fields["session"] = session
        return self._request("kill", **fields).addCallback(lambda _: None)

    def pause(self) -> Deferred[None]:
        def paused(_: object) -> None:
            self.status = "paused"
        return self._request("pause").addCallback(paused)

    def resume(self) -> Deferred[None]:
        def resumed(_: object) -> None:
            self.status = "running"
        return self._request("resume").addCallback(resumed)

    def update(self, resources: Mapping[str, int]) -> Deferred[None]:
        """
        New cgroup limits for the running container (L{cgroups.update}'s
        keys; 0 leaves one as it is).
        """
        def older(failure: Failure) -> None:
            # A container started by an older Ross keeps that Ross's shim,
            # which has no such request.
            failure.trap(errors.InvalidArgument)
            if "unknown request" not in str(failure.value):
                failure.raiseException()
            raise errors.FailedPrecondition(
                f"container {self.id} runs under the shim of an older Ross, which cannot change its limits "
                "while it runs: restart the container, then update it")

        return self._request("update", resources=dict(resources)).addCallbacks(lambda _: None, older)

    def stats(self) -> Deferred[ContainerStats]:
        def made(a: dict[str, Any]) -> ContainerStats:
            return ContainerStats(**{f.name: int(a.get(f.name, 0)) for f in attrs.fields(ContainerStats)})
        return self._request("stats").addCallback(made)

    def reopen_log(self) -> Deferred[None]:
        return self._request("reopen_log").addCallback(lambda _: None)

    def resize(self, rows: int, cols: int, session: str = "") -> Deferred[None]:
        """
        Set the terminal size of the main process (or of exec C{session}).
        """
        return self._request("resize", session=session, rows=rows, cols=cols).addCallback(lambda _: None)

    def close_stdin(self, session: str = "") -> Deferred[None]:
        return self._request("close_stdin", session=session).addCallback(lambda _: None)

    @_deferred
    async def attach(self, on_output: OutputCallback, session: str = "", stdin: bool = False,
                     replay: bool = False, since: int | None = None, input_id: str = "") -> Attachment:
        """
        Attach to the main process (or exec C{session}) on a new connection;
        with C{replay}, a PTY session's recent output (scrollback) comes
        first. With C{since}, a client re-attaches holding that many bytes
        of the session's output: only the scrollback after them comes
        first, and a session that has ended meanwhile gives them and its
        exit status (C{done}) instead of a refusal. C{input_id} names the
        client's input: the session counts what it takes in from it
        (C{input_offset}, for a client re-attaching).
        """
        proto = await self._runtime._connect(self.id)
        attachment = Attachment(session, proto, on_output)
        try:
            answer = await proto.request("attach", **_attach_fields(session, stdin, replay, since, input_id))
        except BaseException:
            attachment.detach()
            raise
        attachment.offset = int(answer.get("offset") or 0)
        if "input_offset" in answer:
            attachment.input_offset = int(answer["input_offset"])
        return attachment

    @_deferred
    async def attach_direct(self, session: str = "", stdin: bool = False, replay: bool = False,
                            window: tuple[int, int] = (0, 0), since: int | None = None,
                            input_id: str = "") -> DirectAttach:
        """
        A direct channel to the main process (or exec C{session}): a new
        connection attached as L{attach}'s (C{since} and C{input_id} as
        its), which the shim then takes only input, resize and end of
        input from, for a client (or the daemon's relay) to hold (SPEC 3).
        With C{window}, the terminal gets that size first.
        """
        fields = {"op": "attach", **_attach_fields(session, stdin, replay, since, input_id)}
        sock, answer = await in_pool(
            self._runtime._reactor, _direct_channel, self._runtime.state_dir(self.id), fields, window)
        return DirectAttach(sock, int(answer.get("offset") or 0),
                            int(answer["input_offset"]) if "input_offset" in answer else None)

    @_deferred
    async def exec(self, exec_id: str, process: ExecProcess, on_output: OutputCallback | None = None,
                   stdin: bool = False, direct: bool = False, input_id: str = "") -> ExecSession:
        """
        Start a process in the container's namespaces and cgroups. With
        C{on_output}, the caller is attached from its first byte (a
        connection of its own); with C{direct}, the session's C{channel}
        is a direct channel to it from its first byte (L{attach_direct}).
        C{input_id} names the attached caller's input (L{attach}'s).
        Fails with L{ContainerStartError} (126/127) when the command
        cannot run.
        """
        if direct:
            sock, answer = await in_pool(
                self._runtime._reactor, _direct_channel, self._runtime.state_dir(self.id),
                {"op": "exec", "exec_id": exec_id, "process": exec_to_wire(process), "attach": True,
                 "stdin": stdin, **({"input_id": input_id} if input_id else {})}, (0, 0))
            return ExecSession(exec_id, int(answer["pid"]), None, self, sock)
        if on_output is None:
            answer = await self._request("exec", exec_id=exec_id, process=exec_to_wire(process))
            return ExecSession(exec_id, int(answer["pid"]), None, self)
        proto = await self._runtime._connect(self.id)
        attachment = Attachment(exec_id, proto, on_output)
        try:
            answer = await proto.request("exec", exec_id=exec_id, process=exec_to_wire(process),
                                         attach=True, stdin=stdin, **({"input_id": input_id} if input_id else {}))
        except BaseException:
            attachment.detach()
            raise
        if input_id:
            # (Attached from the first byte: nothing taken in yet.)
            attachment.input_offset = 0
        return ExecSession(exec_id, int(answer["pid"]), attachment, self)

    def wait_exec(self, exec_id: str) -> Deferred[ExitStatus]:
        """
        The exit status of exec session C{exec_id}, once it has one.
        """
        if exec_id in self._exec_exits:
            return succeed(self._exec_exits[exec_id])
        d: Deferred[ExitStatus] = Deferred()
        self._exec_waiters.setdefault(exec_id, []).append(d)
        return d

    def close(self) -> None:
        """
        Drop the control connection (the daemon is stopping); the shim and
        its container run on, and L{Runtime.reconnect} finds them again.
        C{exited} fails with L{ShimDetached} if it had not fired.
        """
        self._disconnected = True
        if self._control.transport is not None:
            self._control.transport.loseConnection()
        detached = ShimDetached(f"let go of the shim of container {self.id}")
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            d.errback(detached)
        if not self.exited.called:
            self.exited.errback(detached)


@implementer(IRuntime)
class Runtime:
    """
    Runs containers through per-container shims (see the module docstring).

    @param reactor: provides IReactorProcess, IReactorSocket and a thread pool.
    @param state_root: where the containers' state directories live,
        C{<exec_root>/containers}.
    @param python: the interpreter that runs the shim.
    @param seccomp: compiles the containers' seccomp profiles (by default
        one of its own).
    """

    _log = Logger()

    def __init__(self, reactor: IEngineReactor, state_root: Path, python: str = sys.executable,
                 seccomp: SeccompCompiler | None = None) -> None:
        self._reactor = reactor
        self.state_root = Path(state_root)
        self._python = python
        self.seccomp = seccomp if seccomp is not None else SeccompCompiler(reactor)
        self._keep_spare = False
        self._spare: tuple[ShimProtocol, _SpawnWatcher] | None = None
        self._refilling: IDelayedCall | None = None
        self._parent: _ShimParent | None = None

    # Every shim is forked from one long-lived shim parent that imported
    # the shim's modules once: the shims share those pages (a shim's own
    # memory is what it changes), and a fork costs a millisecond where an
    # interpreter's start-up costs tens. A spare shim, forked in advance,
    # takes even that and the handshake off the next container's start.
    # Each shim serves one container run.

    def keep_spare(self) -> None:
        """
        From now on keep a spare shim ready for the next container (the
        daemon calls this at start; without it every create spawns anew).
        """
        self._keep_spare = True
        self._refill(None)

    def close(self) -> Deferred[None]:
        """
        Stop keeping a spare and let it go (running containers and their
        shims are not affected); fires once it has exited.
        """
        self._keep_spare = False
        if self._refilling is not None and self._refilling.active():
            self._refilling.cancel()
        self._refilling = None
        spare, self._spare = self._spare, None
        waits = []
        if spare is not None:
            proto, watcher = spare
            if proto.transport is not None:
                proto.transport.loseConnection()
            waits.append(watcher.ended)
        parent, self._parent = self._parent, None
        if parent is not None:
            # Its end of the control socket closed, it exits.
            parent.gone()
            waits.append(parent.ended)
        return gatherResults(waits).addCallback(lambda _: None)

    def _shim_parent(self) -> _ShimParent:
        """
        The shim parent, started at first use and again if it died.
        """
        if self._parent is not None and not self._parent.ended.called:
            return self._parent
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        # A parent that stops reading fails a spawn rather than blocking
        # the reactor.
        ours.setblocking(False)
        parent = _ShimParent(self._reactor, ours)
        try:
            self._reactor.spawnProcess(
                parent, self._python, [self._python, *_PARENT_ARGS, str(self.state_root)], env={},
                childFDs={0: "w", 1: "r", 2: "r", 3: theirs.fileno()})
        except BaseException:
            parent.gone()
            raise
        finally:
            theirs.close()
        self._parent = parent
        return parent

    def _spawn_shim(self) -> tuple[ShimProtocol, _SpawnWatcher]:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        errors_ours, errors_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            for attempt in (1, 2):
                parent = self._shim_parent()
                try:
                    socket.send_fds(parent.control, [b"s"], [theirs.fileno(), errors_theirs.fileno()])
                    forked = parent.expect()
                    break
                except OSError:
                    # Gone, or not reading: a new one takes the request.
                    self._parent = None
                    parent.gone()
                    if attempt == 2:
                        raise
        except BaseException:
            ours.close()
            errors_ours.close()
            raise
        finally:
            theirs.close()
            errors_theirs.close()
        watcher = _SpawnWatcher()
        forked.chainDeferred(watcher.forked)
        # Not forProtocol: Twisted types its result a Factory, and adopting
        # a connection takes a ServerFactory.
        watching = ServerFactory()
        watching.protocol = lambda: watcher
        self._reactor.adoptStreamConnection(errors_ours.fileno(), socket.AF_UNIX, watching)
        errors_ours.close()
        return self._adopt_socket(ours), watcher

    def _take_shim(self) -> tuple[ShimProtocol, _SpawnWatcher]:
        spare, self._spare = self._spare, None
        if spare is not None and not spare[0].lost and not spare[1].ended.called:
            return spare
        return self._spawn_shim()

    def _refill(self, result: _T) -> _T:
        # Spawned on the next turn, apart from the create it follows: a
        # spare that cannot start must not fail a container that did.
        if self._keep_spare and self._spare is None and self._refilling is None:
            self._refilling = self._reactor.callLater(0, self._spawn_spare)
        return result

    def _spawn_spare(self) -> None:
        self._refilling = None
        if not self._keep_spare or self._spare is not None:
            return
        try:
            self._spare = self._spawn_shim()
        except OSError as e:
            # Out of processes or files (a pids or fd limit): the next
            # container starts its own shim, or reports why it cannot.
            self._log.warn("could not start a spare shim: {error}", error=e)
        except Exception:
            self._log.failure("could not start a spare shim")

    def state_dir(self, container_id: str) -> Path:
        return self.state_root / container_id

    def _adopt_socket(self, sock: socket.socket) -> ShimProtocol:
        factory = ShimFactory()
        self._reactor.adoptStreamConnection(sock.fileno(), socket.AF_UNIX, factory)
        sock.close()
        return factory.built[0]

    # start

    def create(self, spec: ContainerSpec) -> Deferred[IShim]:
        """
        Spawn a shim and set the container up, stopping right before its
        command runs (attach now to see every byte), then L{ShimHandle.start}.
        Fails with InvalidArgument for a bad spec, AlreadyExists when the
        container has a live shim, L{ContainerStartError} (125) when set-up
        failed, with the reason.
        """
        return self._program(spec).addCallback(self._create, spec)

    def check(self, spec: ContainerSpec) -> Deferred[None]:
        """
        Refuse now what L{create} would refuse (InvalidArgument), its
        seccomp profile included (compiled, and kept for the start).
        """
        return self._program(spec).addCallback(lambda _: None)

    def _program(self, spec: ContainerSpec) -> Deferred[Program | None]:
        try:
            validate(spec)
            capabilities = self.seccomp.capabilities(spec.privileged, spec.cap_add, spec.cap_drop)
        except errors.RossError:
            return fail()
        # Compiled once per profile and capability set: at once after that.
        return self.seccomp.program(spec.seccomp, capabilities)

    def _create(self, program: Program | None, spec: ContainerSpec, again: bool = True) -> Deferred[IShim]:
        proto, watcher = self._take_shim()
        d = proto.request("create", spec=to_wire(spec, program), state_dir=str(self.state_dir(spec.id)))
        proto.request("events").addErrback(lambda f: None)

        d.addBoth(self._refill)

        def created(answer: dict[str, Any]) -> IShim:
            return ShimHandle(self, spec.id, proto, int(answer["pid"]), int(answer["shim_pid"]), "created")

        def failed(f: Failure) -> Any:
            if f.check(ShimGone):
                def explain(_: object) -> None:
                    lines = bytes(watcher.stderr).decode("utf-8", "replace").strip().splitlines()
                    raise ContainerStartError(125, "the shim failed: " + (lines[-1] if lines else "no output"))

                def forked(pid: int | None) -> Any:
                    if pid is not None:
                        return watcher.ended.addCallback(explain)
                    # Its parent died first (killed, out of memory): nothing
                    # of this shim ran, so a new parent's shim may try once.
                    if not again:
                        raise ContainerStartError(125, "the shim failed: its parent died before forking it")
                    return self._create(program, spec, again=False)

                return watcher.forked.addCallback(forked)
            return f

        return d.addCallbacks(created, failed)

    @_deferred
    async def start(self, spec: ContainerSpec) -> IShim:
        """
        L{create} then L{ShimHandle.start}: the handle once the command runs.
        A failed start leaves the exit status recorded (L{ShimHandle.wait}
        gives it) and the shim gone.
        """
        handle = await self.create(spec)
        await handle.start()
        return handle

    # after a daemon restart

    def _probe(self, container_id: str) -> Deferred[tuple[str, Any]]:
        return in_pool(self._reactor, _probe, self.state_dir(container_id), container_id)

    @_deferred
    async def reconnect(self, container_id: str) -> IShim | ExitStatus:
        """
        The running shim of a container (a new handle on it), or the
        L{ExitStatus} it recorded when it is gone. NotFound when the
        container has no state here.
        """
        while True:
            kind, value = await self._probe(container_id)
            if kind != "alive":
                return value  # type: ignore[no-any-return]
            proto = self._adopt_socket(value)
            try:
                answer = await proto.request("state")
            except ShimGone:
                # It exited between the probe and the answer: probe again.
                continue
            break
        proto.request("events").addErrback(lambda f: None)
        exit = ExitStatus.from_wire(answer["exit"]) if answer.get("exit") else None
        handle = ShimHandle(self, container_id, proto, int(answer["pid"]), int(answer["shim_pid"]),
                            answer["status"], exit, answer.get("execs"), int(answer.get("started_ns") or 0))
        return handle

    @_deferred
    async def _connect(self, container_id: str) -> ShimProtocol:
        kind, value = await self._probe(container_id)
        if kind != "alive":
            raise errors.FailedPrecondition(f"container {container_id} is not running")
        return self._adopt_socket(value)

    def delete(self, container_id: str) -> Deferred[None]:
        """
        Remove what is left of a container run: processes and cgroup
        directories, the state directory. FailedPrecondition while its shim
        lives; nothing to do is fine.
        """
        return in_pool(self._reactor, _delete, self.state_dir(container_id), container_id)


def _lock_held(state_dir: Path) -> bool:
    try:
        fd = os.open(state_dir / "shim.lock", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _connect_socket(state_dir: Path) -> socket.socket:
    # The socket path may exceed sun_path's 108 bytes; a directory fd
    # through /proc keeps the address short.
    dirfd = os.open(state_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(f"/proc/self/fd/{dirfd}/shim.sock")
        except OSError:
            sock.close()
            raise
    finally:
        os.close(dirfd)
    sock.setblocking(False)
    return sock


#: How long setting up a direct channel may take (the shim answers at once).
DIRECT_TIMEOUT = 10.0


def _direct_channel(state_dir: Path, fields: dict[str, Any],
                    window: tuple[int, int]) -> tuple[socket.socket, dict[str, Any]]:
    """
    A new connection to the shim on which the attach or exec request
    C{fields} was answered, marked direct (a client's from then on), and
    the answer. Blocking: run in a thread.
    """
    try:
        sock = _connect_socket(state_dir)
    except OSError:
        raise errors.FailedPrecondition(f"container {state_dir.name} is not running") from None
    try:
        sock.setblocking(True)
        sock.settimeout(DIRECT_TIMEOUT)
        sock.sendall(shimwire.message({**fields, "id": 1, "direct": True}))
        kind, payload = shimwire.read_frame(sock)
        answer = shimwire.decode_message(payload) if kind == shimwire.MESSAGE else {}
        if not answer.get("ok"):
            raise error_of(answer) if answer else errors.RossError("the shim answered no message")
        if window[0]:
            sock.sendall(shimwire.resize(*window))
        sock.settimeout(None)
        return sock, answer
    except ConnectionError:
        # The shim went as it was asked: the container ended meanwhile.
        sock.close()
        raise errors.FailedPrecondition(f"container {state_dir.name} is not running") from None
    except (OSError, shimwire.FrameError) as e:
        sock.close()
        raise errors.FailedPrecondition(f"container {state_dir.name}: no direct channel: {e}") from None
    except BaseException:
        sock.close()
        raise


def _read_exit(state_dir: Path) -> ExitStatus:
    try:
        with open(state_dir / "exit.json") as f:
            return ExitStatus.from_wire(json.load(f))
    except (OSError, ValueError):
        return ExitStatus(255, error="the shim died without recording an exit status")


def _probe(state_dir: Path, container_id: str) -> tuple[str, Any]:
    if not state_dir.is_dir():
        raise errors.NotFound(f"No such container state: {container_id}")
    if _lock_held(state_dir):
        try:
            return "alive", _connect_socket(state_dir)
        except OSError:
            # Exiting right now: its exit status is written before it
            # closes the socket.
            pass
    return "exited", _read_exit(state_dir)


def _delete(state_dir: Path, container_id: str) -> None:
    if not state_dir.is_dir():
        return
    if _lock_held(state_dir):
        if not (state_dir / "exit.json").exists():
            raise errors.FailedPrecondition(f"container {container_id} is running: kill it first")
        # Its container is gone and the shim is finishing; the caller tries
        # again (a pool thread must not wait out the shim's linger).
        raise errors.FailedPrecondition(f"the shim of container {container_id} is still finishing")
    try:
        with open(state_dir / "state.json") as f:
            groups = json.load(f).get("groups", [])
    except (OSError, ValueError):
        groups = []
    try:
        cgroups.remove(groups)
    except cgroups.CgroupError as e:
        raise errors.FailedPrecondition(f"cannot remove the cgroups of container {container_id}: {e}")
    remove_tree(state_dir, ignore_errors=True)
