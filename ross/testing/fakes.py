# -*- test-case-name: ross.test.test_fakes,ross.test.test_interfaces -*-
"""
Verified fakes of the engine's contracts (L{ross.interfaces}), for tests
of the code that uses them: each declares its interface, is checked with
C{verifyObject} (L{ross.test.test_interfaces}) and, where the contract
has a conformance suite, passes it as the real driver does.

    MemorySnapshotter       ISnapshotter: records in memory, no files
    SynchronousReactor      a Clock whose thread pools run work at once, on
                            the calling thread: deferToThreadPool fires
                            before it returns (Synapse's memory reactor
                            without its queue)
    FakeImageStore          IImageStore: images a test adds, without layers
    FakeRuntime, FakeShim   IRuntime, IShim: scripted, as Buildbot's fake
                            reactor's expect_spawn: a test says which calls
                            come, in order, and what each returns; any other
                            call, or one that never comes, fails the test
"""

from __future__ import annotations

import builtins
import itertools
import json
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

import attrs
from twisted.internet.defer import Deferred, fail, maybeDeferred, succeed
from twisted.internet.interfaces import IReactorThreads
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool
from zope.interface import implementer

from ross.engine.content.store import digest_of
from ross.engine.images.manifest import parse_config
from ross.engine.images.catalog import Image
from ross.engine.records import Descriptor, Mount
from ross.engine.runtime.runtime import ExitStatus, ShimDetached
from ross.engine.snapshots.filters import parse_filters
from ross.engine.snapshots.metastore import MemoryMetaStore, Record
from ross.engine.snapshots.overlay import validate_key
from ross.engine.snapshots.records import Kind, SnapshotInfo, Usage
from ross.errors import FailedPrecondition, NotFound
from ross.interfaces import IImageStore, IRuntime, IShim, ISnapshotter

class InlinePool(ThreadPool):
    """
    A thread pool that starts no thread: each piece of work runs at once
    on the calling thread.
    """

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def callInThreadWithCallback(self, onResult: Callable[[bool, Any], object] | None,
                                 func: Callable[..., Any], *args: Any, **kw: Any) -> None:
        try:
            result = func(*args, **kw)
        except BaseException:
            if onResult is not None:
                onResult(False, Failure())
        else:
            if onResult is not None:
                onResult(True, result)


@implementer(IReactorThreads)
class SynchronousReactor(Clock):
    """
    A Clock with threads that are not: its thread pool is an L{InlinePool}
    and callFromThread and callInThread call at once, so work handed to
    threads is done when the call returns and time moves only with
    C{advance}.
    """

    def __init__(self) -> None:
        super().__init__()
        self.pool = InlinePool()

    def getThreadPool(self) -> InlinePool:
        return self.pool

    def callFromThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        callable(*args, **kwargs)

    def callInThread(self, callable: Callable[..., Any], *args: object, **kwargs: object) -> None:
        self.pool.callInThread(callable, *args, **kwargs)

    def suggestThreadPoolSize(self, size: int) -> None:
        """
        The inline pool has no threads to size.
        """


@implementer(ISnapshotter)
class MemorySnapshotter:
    """
    A snapshotter that keeps its records in memory (the overlay
    snapshotter's metadata rules, on an in-memory database) and holds no
    files: every Deferred has fired when a method returns. Its mounts are
    bind mounts of directories under C{root} that do not exist; nothing
    mounts them but a fake runtime. Usage is zero, as it stores nothing.
    """

    name = "memory"

    def __init__(self, root: str = "/nonexistent/ross-memory-snapshotter") -> None:
        self.root = root
        self._meta = MemoryMetaStore()

    def _mounts(self, record: Record) -> builtins.list[Mount]:
        kind = record.info.kind
        if kind is Kind.COMMITTED:
            raise FailedPrecondition(
                f"Snapshot {record.info.name} is committed; only active snapshots and views have mounts")
        return [Mount(type="bind", source=f"{self.root}/{record.id}/fs",
                      options=("rbind", "rw" if kind is Kind.ACTIVE else "ro"))]

    def _create(self, kind: Kind, key: str, parent: str,
                labels: Mapping[str, str] | None) -> builtins.list[Mount]:
        validate_key(key)
        with self._meta.write() as tx:
            return self._mounts(tx.create(key, parent, kind, dict(labels or {})))

    def prepare(self, key: str, parent: str = "",
                labels: Mapping[str, str] | None = None) -> Deferred[builtins.list[Mount]]:
        return maybeDeferred(self._create, Kind.ACTIVE, key, parent, labels)

    def view(self, key: str, parent: str = "",
             labels: Mapping[str, str] | None = None) -> Deferred[builtins.list[Mount]]:
        return maybeDeferred(self._create, Kind.VIEW, key, parent, labels)

    def mounts(self, key: str) -> Deferred[builtins.list[Mount]]:
        def mounts() -> builtins.list[Mount]:
            with self._meta.read() as tx:
                return self._mounts(tx.get(key))

        return maybeDeferred(mounts)

    def commit(self, name: str, key: str, labels: Mapping[str, str] | None = None) -> Deferred[None]:
        def commit() -> None:
            validate_key(name, "name")
            validate_key(key)
            with self._meta.write() as tx:
                tx.commit(name, key, dict(labels or {}))

        return maybeDeferred(commit)

    def remove(self, key: str) -> Deferred[None]:
        def remove() -> None:
            with self._meta.write() as tx:
                tx.remove(key)

        return maybeDeferred(remove)

    def stat(self, key: str) -> Deferred[SnapshotInfo]:
        def stat() -> SnapshotInfo:
            with self._meta.read() as tx:
                return tx.get(key).info

        return maybeDeferred(stat)

    def list(self, filters: Iterable[str] = ()) -> Deferred[builtins.list[SnapshotInfo]]:
        def list_() -> builtins.list[SnapshotInfo]:
            matches = parse_filters(filters)
            with self._meta.read() as tx:
                return [r.info for r in tx.all() if matches(r.info)]

        return maybeDeferred(list_)

    def update(self, key: str, labels: Mapping[str, str | None]) -> Deferred[SnapshotInfo]:
        def update() -> SnapshotInfo:
            with self._meta.write() as tx:
                return tx.update_labels(key, labels).info

        return maybeDeferred(update)

    def hold(self, key: str, holder: str) -> Deferred[SnapshotInfo]:
        def hold() -> SnapshotInfo:
            with self._meta.write() as tx:
                return tx.hold(key, holder).info

        return maybeDeferred(hold)

    def release(self, key: str, holder: str) -> Deferred[SnapshotInfo]:
        def release() -> SnapshotInfo:
            with self._meta.write() as tx:
                return tx.release(key, holder).info

        return maybeDeferred(release)

    def usage(self, key: str) -> Deferred[Usage]:
        def usage() -> Usage:
            with self._meta.read() as tx:
                tx.get(key)
            return Usage(size=0, inodes=0)

        return maybeDeferred(usage)

    def cleanup(self) -> Deferred[int]:
        # No directories, so no orphans.
        return maybeDeferred(lambda: 0)

    def close(self) -> None:
        self._meta.close()


@implementer(IImageStore)
class FakeImageStore:
    """
    Images a test adds (L{add}): no layers, so a container's root starts
    from no parent and nothing is unpacked. It resolves them by name or
    ID; C{list} and C{commit}, which would need the content store, fail
    with FailedPrecondition.
    """

    def __init__(self) -> None:
        self.in_use: Callable[[], Mapping[str, Any]] | None = None
        self._images: dict[str, Image] = {}

    def add(self, name: str, config: Mapping[str, Any] | None = None) -> Image:
        """
        A new image called C{name} whose config's "config" object (Cmd,
        Env, StopSignal...) is C{config}.
        """
        config_json = json.dumps({
            "architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
            "config": dict(config or {}),
        }, sort_keys=True).encode()
        digest = digest_of(config_json)
        descriptor = Descriptor(media_type="application/vnd.oci.image.config.v1+json", digest=digest,
                                size=len(config_json))
        image = Image(id=digest, name=name, names=(name,), target=descriptor, manifest=descriptor,
                      config=parse_config(config_json), config_json=config_json, manifest_json=b"{}",
                      layers=(), chain_ids=(), created_ns=0, size=0)
        self._images[name] = image
        return image

    def resolve(self, name: str) -> Deferred[Image]:
        for image in self._images.values():
            if name in (image.name, image.id):
                return succeed(image)
        return fail(NotFound(f"No such image: {name}"))

    def list(self, all: bool = False, filters: Sequence[tuple[str, str]] = ()) -> Deferred[Any]:
        return fail(FailedPrecondition("the fake image store keeps no summaries"))

    def ensure_unpacked(self, image: Image) -> Deferred[str]:
        return succeed(image.chain_id)

    def commit(self, base: Any, write_layer: Any, config: Any, container_id: str, created_by: str = "",
               comment: str = "", author: str = "", changes: Iterable[str] = (),
               reference: str = "") -> Deferred[str]:
        return fail(FailedPrecondition("the fake image store has no content store to commit to"))


class _Any:
    def __repr__(self) -> str:
        return "ANY"


#: An expected argument any value meets: the ID of a container not made
#: yet (the runtime checks a container's spec before create returns its ID).
ANY: Any = _Any()


class _TestCase(Protocol):
    def addCleanup(self, f: Callable[..., object], *args: object) -> None: ...


@attrs.frozen
class Call:
    """
    One call a test expects: to the runtime (C{container_id} "" for calls
    not about one container: none yet) or to the shim of C{container_id},
    with its arguments by name, and what it returns: a value, an exception
    (the Deferred fails with it) or a Deferred the test fires.
    """

    target: str
    method: str
    arguments: Mapping[str, Any]
    result: Any = None

    def meets(self, call: Call) -> bool:
        """
        Whether C{call} is this one (an argument expected as L{ANY} takes
        any value).
        """
        return ((self.target, self.method, set(self.arguments)) == (call.target, call.method, set(call.arguments))
                and all(value is ANY or value == call.arguments[name] for name, value in self.arguments.items()))

    def describe(self) -> str:
        arguments = ", ".join(f"{k}={v!r}" for k, v in self.arguments.items())
        return f"{self.target}.{self.method}({arguments})"


@implementer(IRuntime)
class FakeRuntime:
    """
    A scripted runtime. Expectations (C{expect_*}, on it and on the shims
    it hands out) form one queue, met in order; a call that is not the next
    one expected fails (an AssertionError in its Deferred) and fails the
    test at cleanup, as do expected calls that never came. A call's
    container is named by its ID (or L{ANY}): C{create(spec)} matches
    C{spec.id}, and the specs it got are in L{specs}.
    """

    def __init__(self, testcase: _TestCase) -> None:
        self.expected: builtins.list[Call] = []
        self.problems: builtins.list[str] = []
        self.specs: builtins.list[Any] = []
        self._pids = itertools.count(100)
        testcase.addCleanup(self.assert_all_called)

    # ---------------------------------------------------------------- script

    def expect(self, target: str, method: str, result: Any = None, **arguments: Any) -> None:
        self.expected.append(Call(target, method, arguments, result))

    def shim(self, container_id: str) -> FakeShim:
        """
        A new shim for C{container_id}, its PID the next of a counter.
        """
        return FakeShim(self, container_id, pid=next(self._pids))

    def expect_create(self, container_id: str, result: Any = None) -> FakeShim:
        """
        C{create} of a spec for C{container_id} comes next; it fires with
        a new shim (returned here, status "created") or fails with
        C{result} when that is an exception.
        """
        shim = self.shim(container_id)
        self.expect("runtime", "create", shim if result is None else result, container_id=container_id)
        return shim

    def expect_start(self, container_id: str, result: Any = None) -> FakeShim:
        """
        C{start} of a spec for C{container_id} (create and start in one)
        comes next; it fires with a new running shim (returned here) or
        fails with C{result} when that is an exception.
        """
        shim = self.shim(container_id)
        shim.status = "running"
        self.expect("runtime", "start", shim if result is None else result, container_id=container_id)
        return shim

    def expect_check(self, container_id: str, result: Any = None) -> None:
        self.expect("runtime", "check", result, container_id=container_id)

    def expect_reconnect(self, container_id: str, result: Any) -> None:
        """
        C{reconnect(container_id)} comes next and gives C{result}: a
        shim, an ExitStatus, or an exception (NotFound: no state).
        """
        self.expect("runtime", "reconnect", result, container_id=container_id)

    def expect_delete(self, container_id: str, result: Any = None) -> None:
        self.expect("runtime", "delete", result, container_id=container_id)

    def assert_all_called(self) -> None:
        """
        Fail unless every call came as expected (run at the test's cleanup).
        """
        missing = [call.describe() for call in self.expected]
        if self.problems or missing:
            raise AssertionError(f"unexpected calls: {self.problems}; expected calls that never came: {missing}")

    def called(self, target: str, method: str, **arguments: Any) -> Deferred[Any]:
        """
        Meet the next expectation with this call: its result as a Deferred.
        """
        call = Call(target, method, arguments)
        if not self.expected:
            return self._unexpected(f"{call.describe()}, expecting nothing more")
        following = self.expected[0]
        if not following.meets(call):
            return self._unexpected(f"{call.describe()}, expecting {following.describe()}")
        del self.expected[0]
        result = following.result
        if isinstance(result, Deferred):
            return result
        if isinstance(result, BaseException):
            return fail(result)
        return succeed(result)

    def _unexpected(self, text: str) -> Deferred[Any]:
        self.problems.append(text)
        return fail(AssertionError(f"unexpected call: {text}"))

    # ---------------------------------------------------------------- IRuntime

    def create(self, spec: Any) -> Deferred[Any]:
        self.specs.append(spec)
        return self.called("runtime", "create", container_id=spec.id)

    def check(self, spec: Any) -> Deferred[None]:
        return self.called("runtime", "check", container_id=spec.id)

    def start(self, spec: Any) -> Deferred[Any]:
        self.specs.append(spec)
        return self.called("runtime", "start", container_id=spec.id)

    def reconnect(self, container_id: str) -> Deferred[Any]:
        return self.called("runtime", "reconnect", container_id=container_id)

    def delete(self, container_id: str) -> Deferred[None]:
        return self.called("runtime", "delete", container_id=container_id)


@implementer(IShim)
class FakeShim:
    """
    The scripted handle of one container's shim (made by L{FakeRuntime}):
    its requests are expectations of its runtime's queue. The container
    exits when the test says so (L{exit}), which fires C{exited} and every
    C{wait()}; C{close} fails C{exited} with ShimDetached as the real one.
    Waiting and closing are not requests to the shim and are not scripted.
    """

    def __init__(self, runtime: FakeRuntime, container_id: str, pid: int) -> None:
        self._runtime = runtime
        self.id = container_id
        self.pid = pid
        self.shim_pid = pid - 1
        self.status = "created"
        self.started_ns = 0
        self.exit_status: ExitStatus | None = None
        self.exited: Deferred[ExitStatus] = Deferred()
        self.execs: dict[str, Any] = {}
        self.closed = False
        self._waiters: builtins.list[Deferred[ExitStatus]] = []

    # ---------------------------------------------------------------- script

    def _expect(self, method: str, result: Any = None, **arguments: Any) -> FakeShim:
        self._runtime.expect(self.id, method, result, **arguments)
        return self

    def expect_start(self) -> FakeShim:
        """
        C{start()} comes next: the container runs, with its PID.
        """
        return self._expect("start")

    def expect_kill(self, signal: int, all: bool = False, session: str = "", result: Any = None) -> FakeShim:
        return self._expect("kill", result, signal=signal, all=all, session=session)

    def expect_pause(self) -> FakeShim:
        return self._expect("pause")

    def expect_resume(self) -> FakeShim:
        return self._expect("resume")

    def exit(self, exit_code: int = 0, signal: int = 0, oom_killed: bool = False,
             finished_ns: int = 0) -> ExitStatus:
        """
        The container's PID 1 ends now, with this status.
        """
        status = ExitStatus(exit_code=exit_code, signal=signal, oom_killed=oom_killed, finished_ns=finished_ns)
        self.status = "stopped"
        self.exit_status = status
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(status)
        self.exited.callback(status)
        return status

    def _called(self, method: str, **arguments: Any) -> Deferred[Any]:
        return self._runtime.called(self.id, method, **arguments)

    # ---------------------------------------------------------------- IShim

    def start(self) -> Deferred[int]:
        def started(_: object) -> int:
            self.status = "running"
            return self.pid

        return self._called("start").addCallback(started)

    def wait(self) -> Deferred[ExitStatus]:
        if self.exit_status is not None:
            return succeed(self.exit_status)
        waiter: Deferred[ExitStatus] = Deferred()
        self._waiters.append(waiter)
        return waiter

    def state(self) -> Deferred[Any]:
        return self._called("state")

    def kill(self, signal: int, all: bool = False, session: str = "") -> Deferred[None]:
        return self._called("kill", signal=signal, all=all, session=session)

    def pause(self) -> Deferred[None]:
        def paused(_: object) -> None:
            self.status = "paused"

        return self._called("pause").addCallback(paused)

    def resume(self) -> Deferred[None]:
        def resumed(_: object) -> None:
            self.status = "running"

        return self._called("resume").addCallback(resumed)

    def update(self, resources: Any) -> Deferred[None]:
        return self._called("update", resources=resources)

    def stats(self) -> Deferred[Any]:
        return self._called("stats")

    def reopen_log(self) -> Deferred[None]:
        return self._called("reopen_log")

    def attach(self, on_output: Callable[[str, bytes], object], session: str = "", stdin: bool = False,
               replay: bool = False, since: int | None = None, input_id: str = "") -> Deferred[Any]:
        return self._called("attach", session=session, stdin=stdin, replay=replay, since=since, input_id=input_id)

    def attach_direct(self, session: str = "", stdin: bool = False, replay: bool = False,
                      window: tuple[int, int] = (0, 0), since: int | None = None,
                      input_id: str = "") -> Deferred[Any]:
        return self._called("attach_direct", session=session, stdin=stdin, replay=replay, window=window,
                            since=since, input_id=input_id)

    def exec(self, exec_id: str, process: Any, on_output: Callable[[str, bytes], object] | None = None,
             stdin: bool = False, direct: bool = False, input_id: str = "") -> Deferred[Any]:
        return self._called("exec", exec_id=exec_id, process=process, stdin=stdin, direct=direct,
                            input_id=input_id)

    def wait_exec(self, exec_id: str) -> Deferred[ExitStatus]:
        return self._called("wait_exec", exec_id=exec_id)

    def resize(self, rows: int, cols: int, session: str = "") -> Deferred[None]:
        return self._called("resize", rows=rows, cols=cols, session=session)

    def close_stdin(self, session: str = "") -> Deferred[None]:
        return self._called("close_stdin", session=session)

    def close(self) -> None:
        self.closed = True
        if not self.exited.called:
            self.exited.errback(ShimDetached(f"let go of the shim of {self.id}"))
