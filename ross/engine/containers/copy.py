# -*- test-case-name: ross.test.integration.test_cp -*-
"""
``ross cp`` in the daemon: every run is a child process
(L{ross.engine.containers.cphelper}) that enters the container's
filesystem (its mount namespace when it runs, a private mount of its root
filesystem and volumes when not), so paths are resolved by the kernel
inside the container and never on the host. The daemon only moves bytes:
the archive flows over a pipe with a 1 MiB buffer, read or written by a
thread of its own (L{Outflow} and L{Inflow} keep both sides bounded), and
the helper reports its stat and outcome as JSON lines on a third pipe.
The job is the first line the helper reads on its stdin, so one can be
started ahead of need. For a client on this host, the daemon's end of the
archive's pipe can be handed to the client instead (L{Copier.archive} and
L{Copier.extract} given a C{hand}), and then no byte of it crosses the
daemon.

A client that goes away: the helper gets SIGTERM, removes its staging
directory, and the operation's Deferred fires only once it has exited.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections import deque
from pathlib import Path
from typing import Any, Awaitable, Callable

import attrs
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

import ross
from ross.engine.fsutil import private_dir
from ross.engine.pipes import Inflow, Outflow, PipeClosed, grow_pipe, in_thread
from ross.engine.reactors import IEngineReactor
from ross.errors import FailedPrecondition, InvalidArgument, NotFound, ResourceExhausted, RossError

_PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(ross.__file__)))
# As the shim's: the package on sys.path in the command keeps posix_spawn.
_HELPER_ARGS = ("-E", "-s", "-c",
                f"import sys; sys.path.insert(0, {_PACKAGE_ROOT!r}); "
                "from ross.engine.containers.cphelper import main; main()")
_CHUNK = 1 << 20
_SPARES = 2

_ERRORS: dict[str, type[RossError]] = {
    "not_found": NotFound, "invalid": InvalidArgument, "precondition": FailedPrecondition,
    "exhausted": ResourceExhausted,
}


@attrs.frozen
class PathStat:
    """
    What a path in a container is (docker's ContainerPathStat).

    @ivar mode: the Unix C{st_mode} (type and permission bits).
    @ivar link_target: for a symlink, its target fully resolved inside the
        container, as an absolute path; else empty.
    """

    name: str
    size: int
    mode: int
    mtime_ns: int
    link_target: str


@attrs.frozen
class CopyTarget:
    """
    The container a copy works in: C{pid} of its init process when it is
    running or paused, else C{spec}, the runtime's wire spec (its root
    filesystem and mounts). C{ref} is the name the user gave, for messages.
    """

    ref: str
    pid: int = 0
    spec: dict[str, Any] | None = None


class _Helper(ProcessProtocol):
    """
    The helper's status lines (fd 3) and log (fd 2), and its end.
    """

    _log = Logger()

    def __init__(self, stdin: int, stdout: int) -> None:
        self.stdin = stdin
        self.stdout = stdout
        self._partial = b""
        self._messages: deque[dict[str, Any]] = deque()
        self._waiter: Deferred[dict[str, Any] | None] | None = None
        self._stderr = bytearray()
        self._ended: list[Deferred[None]] = []
        self._terminated = False
        self.finished = False
        self.succeeded = False
        self.done = False

    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if childFD == 3:
            *lines, self._partial = (self._partial + data).split(b"\n")
            for line in lines:
                message = json.loads(line)
                self.finished = self.finished or "ok" in message or "error" in message
                self.succeeded = self.succeeded or "ok" in message
                self._messages.append(message)
            self._wake()
        elif childFD == 2 and len(self._stderr) < 65536:
            self._stderr += data

    def processEnded(self, reason: Failure) -> None:
        self.done = True
        if self._stderr:
            self._log.warn("cp helper: {text}", text=self._stderr.decode(errors="replace").strip())
        self._wake()
        ended, self._ended = self._ended, []
        for d in ended:
            d.callback(None)

    def wait_ended(self) -> Deferred[None]:
        """Fires once the helper has exited."""
        if self.done:
            return succeed(None)
        d: Deferred[None] = Deferred()
        self._ended.append(d)
        return d

    def _wake(self) -> None:
        if self._waiter is not None and (self._messages or self.done):
            waiter, self._waiter = self._waiter, None
            waiter.callback(self._messages.popleft() if self._messages else None)

    def message(self) -> Deferred[dict[str, Any] | None]:
        """The next status line; None when the helper ended without one."""
        if self._messages:
            return succeed(self._messages.popleft())
        if self.done:
            return succeed(None)
        d: Deferred[dict[str, Any] | None] = Deferred()
        self._waiter = d
        return d

    def close_fds(self) -> None:
        """Close the daemon's ends of the data pipes (a waiting helper then exits)."""
        for fd in (self.stdin, self.stdout):
            try:
                os.close(fd)
            except OSError:
                pass

    def terminate(self) -> None:
        """
        SIGTERM, once, and only before the helper said how it ended: a
        second one could cut its own clean-up short.
        """
        if not (self.done or self.finished or self._terminated) and self.transport is not None:
            self._terminated = True
            try:
                self.transport.signalProcess("TERM")
            except OSError:
                pass


def _raise_for(message: dict[str, Any] | None) -> dict[str, Any]:
    if message is None:
        raise FailedPrecondition("the copy helper ended without a word (see the daemon's log)")
    if "error" in message:
        if message["error"] == "cancelled":
            raise CancelledError(message["message"])
        if message["error"] == "internal":
            raise RuntimeError(f"copy helper: {message['message']}")
        raise _ERRORS.get(message["error"], InvalidArgument)(message["message"])
    return message


def _valid_path(path: str) -> str:
    """
    C{path}, or InvalidArgument for one no file system could have.
    """
    if "\0" in path:
        raise InvalidArgument(f"invalid path {path[:256]!r}: contains a NUL byte")
    return path


class Copier:
    """
    Runs copies for the container manager.

    Spare helpers, already started and their modules imported (most of a
    small copy's time), wait for their job: the first line on their
    stdin. Two, since a copy into a container takes two in a row (the
    client asks what the destination is, then sends the archive).

    @param workdir: where a copy into a stopped container makes its
        (private) mount point, C{<exec_root>/copy}; removed after each run.
    """

    _log = Logger()

    def __init__(self, reactor: IEngineReactor, workdir: Path, python: str = sys.executable) -> None:
        self._reactor = reactor
        self.workdir = workdir
        self._python = python
        self._keep_spare = False
        self._spares: list[_Helper] = []
        self._refilling: IDelayedCall | None = None
        self.running: set[int] = set()

    @property
    def spare_pids(self) -> list[int]:
        return [spare.transport.pid for spare in self._spares if spare.transport is not None]

    def keep_spare(self) -> None:
        """
        From now on keep a helper ready for the next copy, once a first copy
        was made: an idle helper costs ~25 MiB, not worth it for a daemon
        that never copies.
        """
        self._keep_spare = True

    async def close(self) -> None:
        """Stop keeping spares and let them go (they exit on end of input)."""
        self._keep_spare = False
        if self._refilling is not None and self._refilling.active():
            self._refilling.cancel()
        self._refilling = None
        spares, self._spares = self._spares, []
        for spare in spares:
            spare.close_fds()
        for spare in spares:
            await self._finish(spare)

    def _refill(self) -> None:
        # On the next turn, apart from the copy that took a spare: a spare
        # that cannot start must not fail a copy that did.
        if self._keep_spare and len(self._spares) < _SPARES and self._refilling is None:
            self._refilling = self._reactor.callLater(0, self._spawn_spares)

    def _spawn_spares(self) -> None:
        self._refilling = None
        while self._keep_spare and len(self._spares) < _SPARES:
            try:
                self._spares.append(self._spawn())
            except Exception:
                self._log.failure("could not start a spare copy helper")
                return

    def _spawn(self) -> _Helper:
        to_child, stdin = os.pipe2(os.O_CLOEXEC)
        stdout, from_child = os.pipe2(os.O_CLOEXEC)
        for fd in (stdin, stdout):
            grow_pipe(fd, _CHUNK)
        helper = _Helper(stdin, stdout)
        try:
            self._reactor.spawnProcess(
                helper, self._python, [self._python, *_HELPER_ARGS, str(self.workdir)], env={},
                childFDs={0: to_child, 1: from_child, 2: "r", 3: "r"})
        except BaseException:
            helper.close_fds()
            raise
        finally:
            os.close(to_child)
            os.close(from_child)
        return helper

    def _start(self, job: dict[str, Any], target: CopyTarget) -> _Helper:
        """A helper (the spare when there is one) at work on C{job}."""
        if target.spec is not None:
            private_dir(self.workdir)
        live = [spare for spare in self._spares if not spare.done]
        if live:
            helper = live.pop(0)
        else:
            helper = self._spawn()
            # None was ready (the first copy): the next helper, usually
            # this copy's own second step (cp asks what the destination is,
            # then sends the archive), starts now rather than after this.
            self._refill()
        self._spares = live
        job = dict(job, ref=target.ref, pid=target.pid, spec=target.spec)
        # The pipe is new and empty, and far larger than a job: this write
        # never waits.
        os.write(helper.stdin, json.dumps(job).encode() + b"\n")
        assert helper.transport is not None
        pid = helper.transport.pid
        self.running.add(pid)

        def ended(_: object) -> None:
            self.running.discard(pid)
            # Replaced once done: a helper starting up meanwhile would take
            # the processor from this copy.
            self._refill()
            if target.spec is not None:
                try:
                    os.rmdir(self.workdir / str(pid))
                except FileNotFoundError:
                    pass
                except OSError:
                    self._log.failure("cannot remove the copy mount point {pid}", pid=pid)

        helper.wait_ended().addCallback(ended)
        return helper

    async def stat(self, target: CopyTarget, path: str, follow_link: bool = False) -> PathStat:
        """What C{path} is in the container (NotFound when nothing is there)."""
        helper = self._start({"op": "stat", "path": _valid_path(path), "follow_link": follow_link}, target)
        helper.close_fds()
        try:
            message = _raise_for(await helper.message())
            _raise_for(await helper.message())
        finally:
            await self._finish(helper)
        return PathStat(**message["stat"])

    async def archive(self, target: CopyTarget, path: str, follow_link: bool,
                      deliver: Callable[[PathStat | bytes], Awaitable[None]],
                      hand: Callable[[io.FileIO], Awaitable[None]] | None = None) -> None:
        """
        C{deliver} the stat of C{path}, then the tar of it in chunks, with
        docker's naming: entries start with the path's last component (its
        contents for a path ending in C{/.}); with C{follow_link} a symlink
        at the end is followed and its target archived under the link's name.

        With C{hand}, the tar is not delivered: after the stat, C{hand} is
        given the read end of the pipe it is written to, and owns it from
        then on; this returns once the helper wrote all of the tar there.
        """
        helper = self._start({"op": "archive", "path": _valid_path(path), "follow_link": follow_link}, target)
        os.close(helper.stdin)
        if hand is not None:
            read_end = io.FileIO(helper.stdout, "rb")
            handed = False
            try:
                message = _raise_for(await helper.message())
                await deliver(PathStat(**message["stat"]))
                handed = True
                await hand(read_end)
                _raise_for(await helper.message())
            finally:
                if not handed:
                    read_end.close()
                await self._finish(helper)
            return
        read = helper.stdout
        flow = Outflow(self._reactor)

        def pump() -> None:
            try:
                _move_chunks(lambda: os.read(read, _CHUNK), flow.put)
            finally:
                os.close(read)
            flow.finish()

        pumping = in_thread(self._reactor, pump, name="ross-cp-out")
        pumping.addErrback(lambda f: f.trap(PipeClosed))
        try:
            message = _raise_for(await helper.message())
            await deliver(PathStat(**message["stat"]))
            while True:
                chunk = await flow.get()
                if chunk is None:
                    break
                await deliver(chunk)
            _raise_for(await helper.message())
        finally:
            flow.cancel()
            await self._finish(helper)
            await pumping

    async def extract(self, target: CopyTarget, path: str, copy_uid_gid: bool, no_overwrite: bool,
                      receive: Callable[[], Awaitable[bytes | None]] | None = None,
                      hand: Callable[[io.FileIO], Awaitable[None]] | None = None, own_root: bool = False) -> int:
        """
        Extract the archive whose chunks C{receive} gives (None at the end)
        into directory C{path} of the container, all or nothing. Returns
        the archive's size in bytes. With C{own_root}, C{path} itself takes
        the owner and mode of the archive's C{.} entry (a volume's copy-up).

        With C{hand} instead, C{hand} is given the write end of the pipe the
        archive is read from, and owns it from then on; whoever writes
        there ends the archive by closing it. A write end closed before the
        archive's end-of-archive blocks (its writer went away) fails the
        copy with nothing changed. Returns 0: the daemon never sees the
        bytes.
        """
        helper = self._start({"op": "extract", "path": _valid_path(path), "copy_uid_gid": copy_uid_gid,
                              "no_overwrite": no_overwrite, "own_root": own_root}, target)
        os.close(helper.stdout)
        if hand is not None:
            try:
                await hand(io.FileIO(helper.stdin, "wb"))
                _raise_for(await helper.message())
            except BaseException:
                helper.terminate()
                raise
            finally:
                await self._finish(helper, target)
            return 0
        assert receive is not None
        write = helper.stdin
        flow = Inflow(self._reactor)

        def put(data: bytes) -> None:
            view = memoryview(data)
            while view:
                view = view[os.write(write, view):]

        def pump() -> None:
            try:
                _move_chunks(lambda: flow.read(_CHUNK), put)
            except (BrokenPipeError, PipeClosed):
                # The helper stopped reading: its status says why.
                pass
            finally:
                flow.reader_done()
                os.close(write)

        pumping = in_thread(self._reactor, pump, name="ross-cp-in")
        try:
            while True:
                chunk = await receive()
                if chunk is None:
                    flow.close()
                    break
                if not await flow.feed(chunk):
                    break
            await pumping
            _raise_for(await helper.message())
        except BaseException:
            flow.abort()
            helper.terminate()
            raise
        finally:
            await self._finish(helper, target)
            await pumping
        return flow.received

    async def _finish(self, helper: _Helper, target: CopyTarget | None = None) -> None:
        """
        Wait until the helper has exited (asked to, when it still runs),
        even when the caller is cancelled meanwhile: its clean-up must be
        over before the operation reports that it ended.

        Except for an extraction into a running container (C{target})
        that the helper reported done: it has nothing left to undo and
        holds no mount, and its exit is when the kernel frees the files
        the copy replaced (L{cphelper._replace_file}).
        """
        if target is not None and target.spec is None and helper.succeeded:
            return
        helper.terminate()
        while not helper.done:
            try:
                await helper.wait_ended()
            except CancelledError:
                continue


def _move_chunks(take: Callable[[], bytes], put: Callable[[bytes], None]) -> None:
    """C{put} what C{take} gives until it gives nothing (blocking: a pump thread)."""
    while True:
        data = take()
        if not data:
            return
        put(data)



