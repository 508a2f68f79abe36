"""
The container manager's start and docker's run, stop, wait, remove,
prune, restart and restart policies, attach targets, exec sessions,
resize, top's arguments and stats, on a Clock with the scripted runtime (L{ross.testing.fakes}): no process, no
root, no real time. Every runtime and shim call a test does not script
fails it, so these also pin down what each operation asks of the runtime.
"""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Any

import attrs
from twisted.internet.defer import Deferred
from twisted.trial.unittest import SynchronousTestCase

from ross.engine.containers import config as cfg
from ross.engine.containers.execs import MAX_FINISHED_EXECS, ExecInfo
from ross.engine.containers.manager import ContainerManager
from ross.engine.containers.queries import ContainerQueries
from ross.engine.containers.run import run, start
from ross.engine.containers.store import ContainerRecord, ContainerStore
from ross.engine.containers.supervisor import BACKOFF_MAX, BACKOFF_RESET, BACKOFF_START
from ross.engine.events import EventBus, EventFilter
from ross.engine.hostinfo import memory_total
from ross.engine.reactors import engine_reactor
from ross.engine.runtime.runtime import ContainerStats, ExitStatus
from ross.engine.runtime.spec import ExecProcess
from ross.engine.volumes import VolumeStore
from ross.errors import FailedPrecondition, InvalidArgument, NotFound
from ross.protocols.shim import ContainerStartError
from ross.testing.fakes import ANY, FakeImageStore, FakeRuntime, FakeShim, MemorySnapshotter, SynchronousReactor

#: Where the clock starts: a start at time 0 would read as "never started".
EPOCH = 1_700_000_000.0


@attrs.frozen
class _Session:
    """
    The runtime's handle on an exec session, as far as the manager uses it.
    """

    pid: int
    exited: Deferred[ExitStatus]

    def wait(self) -> Deferred[ExitStatus]:
        return self.exited


class LifecycleTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = SynchronousReactor()
        self.reactor.advance(EPOCH)
        self.root = root = Path(self.mktemp()).absolute()
        self.events = EventBus(engine_reactor(self.reactor))
        self.images = FakeImageStore()
        self.images.add("busybox", {"Cmd": ["sh"]})
        self.snapshotter = MemorySnapshotter()
        self.addCleanup(self.snapshotter.close)
        self.runtime = FakeRuntime(self)
        store = ContainerStore(self.reactor, root / "containers.db", pool=self.reactor.pool)
        records: dict[str, ContainerRecord] = {}
        volumes = VolumeStore(engine_reactor(self.reactor), root, self.events,
                              users_of=ContainerQueries(records).volume_users)
        self.manager = ContainerManager(
            engine_reactor(self.reactor), root, root / "exec", self.events, self.images, self.snapshotter,
            self.runtime, volumes, store=store, records=records)
        self.successResultOf(Deferred.fromCoroutine(self.manager.start()))
        self.addCleanup(lambda: self.successResultOf(self.manager.stop()))

    # ---------------------------------------------------------------- helpers

    def create(self, policy: str = "no", retries: int = 0, **config: Any) -> str:
        """
        A created container of busybox with that restart policy; its ID.
        """
        self.runtime.expect_check(ANY)
        host = cfg.HostConfig(restart_policy=cfg.RestartPolicy(name=policy, maximum_retry_count=retries))
        created = self.manager.create("", cfg.ContainerConfig(image="busybox", **config), host)
        return self.successResultOf(Deferred.fromCoroutine(created)).id

    def expect_run(self, cid: str, again: bool = True) -> FakeShim:
        """
        Script one more run of C{cid}: the runtime state of the last run
        deleted (C{again}), a new shim created and started.
        """
        if again:
            self.runtime.expect_delete(cid)
        return self.runtime.expect_create(cid).expect_start()

    def started(self, cid: str) -> FakeShim:
        shim = self.expect_run(cid, again=False)
        self.successResultOf(self.manager.start_container(cid))
        return shim

    def restarts_after(self, cid: str, delay: float) -> FakeShim:
        """
        C{cid}, waiting for its restart, is not restarted until just
        before C{delay} and is just after (the clock's seconds are floats
        near the epoch: an exact sum of steps is not guaranteed); its new
        shim.
        """
        self.reactor.advance(delay * 0.99)
        self.assertEqual(self.record(cid).state.status, "restarting")
        shim = self.expect_run(cid)
        self.reactor.advance(delay * 0.02)
        self.assertEqual(self.record(cid).state.status, "running")
        return shim

    def restarted(self, cid: str, outcome: Any, deleted: bool = False) -> None:
        """
        The daemon again on the same records: a new manager, whose
        reconnect to C{cid}'s shim finds C{outcome} (a shim or the
        ExitStatus a gone one left), and which then deletes that runtime
        state when C{deleted}.
        """
        self.successResultOf(self.manager.stop())
        self.runtime.expect_reconnect(cid, outcome)
        if deleted:
            self.runtime.expect_delete(cid)
        store = ContainerStore(self.reactor, self.root / "containers.db", pool=self.reactor.pool)
        self.manager = ContainerManager(
            engine_reactor(self.reactor), self.root, self.root / "exec", self.events, self.images, self.snapshotter,
            self.runtime, VolumeStore(engine_reactor(self.reactor), self.root, self.events), store=store)
        self.successResultOf(Deferred.fromCoroutine(self.manager.start()))

    def record(self, cid: str) -> ContainerRecord:
        return self.manager.records[cid]

    def actions(self, cid: str) -> list[str]:
        return [e.action for e in self.events.history(EventFilter(types=frozenset({"container"})), 0)
                if e.actor_id == cid]

    # ---------------------------------------------------------------- stop

    def test_start(self) -> None:
        """
        A start creates the container's shim on its snapshot's mounts and
        starts its command; the record says it runs, with its PID.
        """
        cid = self.create()
        shim = self.started(cid)
        (spec,) = self.runtime.specs
        self.assertEqual((spec.id, spec.process.args), (cid, ("sh",)))
        self.assertEqual(list(spec.rootfs), self.successResultOf(self.snapshotter.mounts(cid)))
        state = self.record(cid).state
        self.assertEqual((state.status, state.pid, state.started_ns), ("running", shim.pid, int(EPOCH * 1e9)))

    def test_stop_kills_after_timeout(self) -> None:
        """
        Stop sends SIGTERM, and SIGKILL once the timeout passed without an
        exit; it returns once the container exited.
        """
        cid = self.create()
        shim = self.started(cid)
        shim.expect_kill(signal.SIGTERM)
        stopping = self.manager.stop_container(cid, timeout=5)
        self.reactor.advance(4.9)
        self.assertNoResult(stopping)
        shim.expect_kill(signal.SIGKILL)
        self.reactor.advance(0.1)
        self.assertNoResult(stopping)
        shim.exit(137, signal=signal.SIGKILL)
        self.successResultOf(stopping)
        state = self.record(cid).state
        self.assertEqual((state.status, state.exit_code, state.manually_stopped), ("exited", 137, True))
        self.assertEqual(self.actions(cid)[-2:], ["die", "stop"])
        self.assertEqual(self.reactor.getDelayedCalls(), [])

    def test_stop_in_time(self) -> None:
        """
        A container that exits on its stop signal within the timeout gets
        no SIGKILL; the stop signal and timeout are the container's own.
        """
        cid = self.create(stop_signal="SIGINT", stop_timeout=2)
        shim = self.started(cid)
        shim.expect_kill(signal.SIGINT)
        stopping = self.manager.stop_container(cid)
        self.reactor.advance(1.9)
        shim.exit(130, signal=signal.SIGINT)
        self.successResultOf(stopping)
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(60)
        self.assertEqual(self.record(cid).state.exit_code, 130)

    def test_stop_not_running(self) -> None:
        """
        Stopping a container that does not run succeeds (docker's), changes
        nothing and asks nothing of the runtime.
        """
        cid = self.create()
        before = self.record(cid)
        self.successResultOf(self.manager.stop_container(cid))
        self.assertEqual(self.record(cid), before)

    def test_bad_stop_timeout(self) -> None:
        """
        A stop or restart timeout under -1 is refused with docker's
        message, before the container is looked for, and asks nothing of
        the runtime.
        """
        cid = self.create()
        self.started(cid)
        for ref in (cid, "nosuch"):
            for stopping in (self.manager.stop_container(ref, -2), self.manager.restart_container(ref, -2)):
                failure = self.failureResultOf(stopping, InvalidArgument)
                self.assertEqual(str(failure.value), "invalid stop timeout: must be -1 (wait forever) or more")
        self.assertEqual(self.record(cid).state.status, "running")

    def test_bad_ps_arguments(self) -> None:
        """
        ps arguments no ps could take (a NUL byte, an open quote) are
        refused before the container is looked for.
        """
        for text, message in [("-o pid\0", "invalid ps arguments: they contain a NUL byte"),
                              ("-o 'pid", "invalid ps arguments: No closing quotation")]:
            failure = self.failureResultOf(Deferred.fromCoroutine(self.manager.processes("nosuch", text)),
                                           InvalidArgument)
            self.assertEqual(str(failure.value), message)

    def test_wait_conditions(self) -> None:
        """
        docker's wait: "not-running" fires at once with the last exit of a
        container that is not running, and with the next exit of one that
        runs; "next-exit" waits for the next exit; "removed" for the
        removal; another condition is refused.
        """
        cid = self.create()
        self.assertEqual(self.successResultOf(self.manager.wait(cid)).exit_code, 0)
        next_exit = self.manager.wait(cid, "next-exit")
        self.assertNoResult(next_exit)
        shim = self.started(cid)
        not_running = self.manager.wait(cid, "not-running")
        removed = self.manager.wait(cid, "removed")
        self.assertNoResult(not_running)
        shim.exit(3)
        self.assertEqual(self.successResultOf(next_exit).exit_code, 3)
        self.assertEqual(self.successResultOf(not_running).exit_code, 3)
        self.assertEqual(self.successResultOf(self.manager.wait(cid)).exit_code, 3)
        self.assertNoResult(removed)
        self.runtime.expect_delete(cid)
        self.successResultOf(self.manager.remove(cid))
        self.assertEqual(self.successResultOf(removed).exit_code, 3)
        e = self.assertRaises(InvalidArgument, self.manager.wait, "nosuch", "sometime")
        self.assertEqual(str(e), "invalid condition: 'sometime'")

    def test_stats_memory_limit(self) -> None:
        """
        A running container's counters come from its shim, its memory
        limit as docker shows it: its own when below the host's memory,
        else the host's; a container not running has none.
        """
        cid = self.create()
        self.assertIsNone(self.successResultOf(Deferred.fromCoroutine(self.manager.stats(cid))))
        self.started(cid)
        total = memory_total()
        for limit, shown in [(64 * 1024 * 1024, 64 * 1024 * 1024), (0, total), (2**63 - 1, total)]:
            sample = ContainerStats(read_ns=1, cpu_usage_ns=2, system_cpu_ns=3, online_cpus=4, memory_usage=5,
                                    memory_limit=limit, pids=6, net_rx_bytes=7, net_tx_bytes=8,
                                    block_read_bytes=9, block_write_bytes=10)
            self.runtime.expect(cid, "stats", sample)
            given = self.successResultOf(Deferred.fromCoroutine(self.manager.stats(cid)))
            self.assertEqual(given, attrs.evolve(sample, memory_limit=shown))

    def test_resize(self) -> None:
        """
        A resize reaches the running container's shim; a size no terminal
        has is refused before the container is looked for, a container
        not running and an unknown exec session are refused.
        """
        cid = self.create()
        failure = self.failureResultOf(Deferred.fromCoroutine(self.manager.resize(cid, 24, 80)), FailedPrecondition)
        self.assertIn("is not running", str(failure.value))
        self.started(cid)
        self.runtime.expect(cid, "resize", rows=24, cols=80, session="")
        self.successResultOf(Deferred.fromCoroutine(self.manager.resize(cid, 24, 80)))
        for rows, cols in [(0, 80), (65536, 80), (24, -1)]:
            failure = self.failureResultOf(Deferred.fromCoroutine(self.manager.resize("nosuch", rows, cols)),
                                           InvalidArgument)
            self.assertEqual(str(failure.value), f"invalid terminal size {rows}x{cols}")
        self.failureResultOf(Deferred.fromCoroutine(self.manager.resize(cid, 24, 80, "nosuch")), NotFound)

    def test_session_of(self) -> None:
        """
        The session an attach names: a client coming back to a container
        that is not running hears how it ended, a new client attaches; an
        exec session that ended is told to a client coming back while its
        container is stopped, refused to a new one, and one of another
        container is not found.
        """
        cid = self.create(tty=True)
        shim = self.started(cid)
        self.assertEqual(self.manager.session_of(cid)[1:], (True, None))
        self.assertEqual(self.manager.session_of(cid, since=0)[1:], (True, None))
        self.manager.sessions.execs["e1"] = ExecInfo(id="e1", container_id=cid, args=("sh",), tty=False,
                                            exit=ExitStatus(exit_code=5))
        self.assertEqual(self.manager.session_of(cid, "e1", since=10)[1:], (False, None))
        failure = self.assertRaises(FailedPrecondition, self.manager.session_of, cid, "e1")
        self.assertEqual(str(failure), "exec session e1 has exited (5)")
        self.manager.sessions.execs["e2"] = ExecInfo(id="e2", container_id="other", args=("sh",), tty=False)
        self.assertRaises(NotFound, self.manager.session_of, cid, "e2")
        shim.exit(3, oom_killed=True)
        record, tty, ended = self.manager.session_of(cid, since=0)
        self.assertEqual((record.id, tty, ended), (cid, True, ExitStatus(exit_code=3, oom_killed=True)))
        self.assertEqual(self.manager.session_of(cid, "e1", since=10)[2], ExitStatus(exit_code=5))
        self.assertEqual(self.manager.session_of(cid)[2], None)

    def exec_session(self, cid: str) -> tuple[Any, Any]:
        """
        An exec session of C{cid} started through the manager: its record
        and the runtime's (fake) session, whose C{exited} the test fires.
        """
        session = _Session(pid=7, exited=Deferred())
        process = ExecProcess(args=("true",))
        self.runtime.expect(cid, "exec", session, exec_id=ANY, process=process, stdin=False, direct=False,
                            input_id="")
        return self.successResultOf(Deferred.fromCoroutine(
            self.manager.exec(cid, process, None, stdin=False)))

    def test_exec_sessions(self) -> None:
        """
        An exec session is known by its ID and its container's, with its
        exit once it ends; finished sessions are kept to a bound, oldest
        dropped first; a removed container's sessions go with it.
        """
        cid = self.create()
        shim = self.started(cid)
        info, session = self.exec_session(cid)
        self.assertEqual((info.container_id, info.args, info.pid, info.exit), (cid, ("true",), 7, None))
        self.assertIs(self.manager.exec_info(info.id), info)
        self.assertEqual(self.successResultOf(Deferred.fromCoroutine(
            self.manager.view(self.record(cid)))).exec_ids, (info.id,))
        session.exited.callback(ExitStatus(exit_code=4))
        self.assertEqual(info.exit, ExitStatus(exit_code=4))
        self.assertEqual(self.actions(cid)[-3:], ["exec_create: true", "exec_start: true", "exec_die"])
        later = []
        for _ in range(MAX_FINISHED_EXECS + 1):
            newer, session = self.exec_session(cid)
            session.exited.callback(ExitStatus(exit_code=0))
            later.append(newer.id)
        self.assertEqual(self.manager.sessions.ids_of(cid), tuple(later))
        self.assertRaises(NotFound, self.manager.exec_info, info.id)
        shim.expect_kill(signal.SIGKILL)
        removing = self.manager.remove(cid, force=True)
        self.runtime.expect_delete(cid)
        shim.exit(137, signal=signal.SIGKILL)
        self.successResultOf(removing)
        self.assertEqual((self.manager.sessions.execs, self.manager.sessions.ids_of(cid)), ({}, ()))

    # ---------------------------------------------------------------- remove

    def test_remove_running_refused(self) -> None:
        """
        A running container is not removed without force, and is left as
        it was.
        """
        cid = self.create()
        self.started(cid)
        failure = self.failureResultOf(self.manager.remove(cid), FailedPrecondition)
        self.assertIn("container is running", str(failure.value))
        self.assertEqual(self.record(cid).state.status, "running")

    def test_remove_force(self) -> None:
        """
        A forced removal kills a running container, waits for its exit,
        deletes its runtime state and releases and removes its snapshot.
        """
        cid = self.create()
        shim = self.started(cid)
        shim.expect_kill(signal.SIGKILL)
        removing = self.manager.remove(cid, force=True)
        self.assertNoResult(removing)
        self.runtime.expect_delete(cid)
        shim.exit(137, signal=signal.SIGKILL)
        self.successResultOf(removing)
        self.assertNotIn(cid, self.manager.records)
        self.assertEqual(self.successResultOf(self.snapshotter.list()), [])
        self.failureResultOf(self.manager.stop_container(cid), NotFound)
        self.assertEqual(self.actions(cid)[-1], "destroy")

    def test_remove_waits_for_lingering_shim(self) -> None:
        """
        The runtime state of a container that just exited is deleted once
        its shim let go (FailedPrecondition until then), looked at again
        after a short delay.
        """
        cid = self.create()
        shim = self.started(cid)
        shim.exit(0)
        self.runtime.expect_delete(cid, FailedPrecondition("the shim still runs"))
        removing = self.manager.remove(cid)
        self.assertNoResult(removing)
        self.runtime.expect_delete(cid)
        self.reactor.advance(0.002)
        self.successResultOf(removing)
        self.assertNotIn(cid, self.manager.records)

    def test_prune(self) -> None:
        """
        Prune removes the containers that do not run, created before its
        time and with its labels, and publishes how many it removed.
        """
        labelled = self.create(labels={"prune": "yes"})
        running = self.create(labels={"prune": "yes"})
        self.started(running)
        old = self.create()
        self.reactor.advance(1)
        new = self.create()
        self.runtime.expect_delete(labelled)
        removed = self.successResultOf(Deferred.fromCoroutine(self.manager.prune(labels=[("prune", "yes")])))
        self.assertEqual(removed, [labelled])
        self.runtime.expect_delete(old)
        removed = self.successResultOf(Deferred.fromCoroutine(self.manager.prune(
            until_ns=int(self.reactor.seconds() * 1e9))))
        self.assertEqual(removed, [old])
        self.assertEqual(set(self.manager.records), {running, new})
        prunes = [e for e in self.events.history(EventFilter(types=frozenset({"container"})), 0)
                  if e.action == "prune"]
        self.assertEqual([e.attributes["reclaimed"] for e in prunes], ["1", "1"])

    # ---------------------------------------------------------------- run

    def test_run_hook_before_command(self) -> None:
        """
        A run creates the container and starts it with its hook run on the
        shim before the command starts; it is no auto-remove container,
        so nothing waits for its removal.
        """
        self.runtime.expect_check(ANY)
        shim = self.runtime.expect_create(ANY)
        seen: list[str] = []

        async def before(given: Any) -> None:
            self.assertIs(given, shim)
            self.assertEqual(given.status, "created")
            seen.append("hook")

        shim.expect_start()
        ran = self.successResultOf(Deferred.fromCoroutine(run(
            self.manager, "web", cfg.ContainerConfig(image="busybox"), cfg.HostConfig(), before)))
        self.assertEqual(seen, ["hook"])
        self.assertEqual((ran.record.name, ran.removed, ran.start_error), ("web", None, None))
        self.assertEqual(self.record(ran.record.id).state.status, "running")
        self.assertEqual(self.actions(ran.record.id), ["create", "start"])

    def test_run_start_failed_auto_remove(self) -> None:
        """
        An auto-remove container whose command cannot run is removed; the
        run tells the start's error (docker's exit code for it), and its
        removal wait fires.
        """
        self.runtime.expect_check(ANY)
        shim = self.runtime.expect_create(ANY)
        error = ContainerStartError(127, 'exec: "nosuch": executable file not found in $PATH')
        self.runtime.expect(ANY, "start", error)
        self.runtime.expect_delete(ANY)
        self.runtime.expect_delete(ANY)
        ran = self.successResultOf(Deferred.fromCoroutine(run(
            self.manager, "", cfg.ContainerConfig(image="busybox", cmd=("nosuch",)), cfg.HostConfig(auto_remove=True))))
        self.assertIs(ran.start_error, error)
        self.assertTrue(shim.closed)
        self.assertNotIn(ran.record.id, self.manager.records)
        assert ran.removed is not None
        self.assertEqual(self.successResultOf(ran.removed).exit_code, 127)
        self.assertEqual(self.actions(ran.record.id), ["create", "die", "destroy"])

    def test_start_failed_kept(self) -> None:
        """
        A container without auto-remove whose command cannot run stays,
        created, with the start's exit code; the error is raised.
        """
        cid = self.create()
        shim = self.runtime.expect_create(cid)
        self.runtime.expect(cid, "start", ContainerStartError(126, "permission denied"))
        self.runtime.expect_delete(cid)
        failure = self.failureResultOf(Deferred.fromCoroutine(start(self.manager, cid)), ContainerStartError)
        self.assertEqual(failure.value.exit_code, 126)
        self.assertTrue(shim.closed)
        self.assertEqual((self.record(cid).state.status, self.record(cid).state.exit_code), ("created", 126))

    # ---------------------------------------------------------------- restart

    def test_restart(self) -> None:
        """
        Restart stops a running container and starts it again in a new
        shim, once the old run's state is deleted.
        """
        cid = self.create()
        shim = self.started(cid)
        shim.expect_kill(signal.SIGTERM)
        restarting = self.manager.restart_container(cid, timeout=10)
        second = self.expect_run(cid)
        shim.exit(143, signal=signal.SIGTERM)
        self.successResultOf(restarting)
        state = self.record(cid).state
        self.assertEqual((state.status, state.pid, state.manually_stopped), ("running", second.pid, False))
        self.assertEqual(self.actions(cid)[-3:], ["stop", "start", "restart"])

    # ---------------------------------------------------------------- restart policies

    def test_no_policy(self) -> None:
        """
        Without a restart policy an exited container stays exited.
        """
        cid = self.create()
        self.started(cid).exit(1)
        self.reactor.advance(BACKOFF_MAX)
        self.assertEqual(self.record(cid).state.status, "exited")

    def test_on_failure_retries(self) -> None:
        """
        on-failure restarts a container that failed, a back-off delay after
        its exit that doubles, until the maximum retry count; a clean exit
        is not restarted.
        """
        cid = self.create("on-failure", retries=2)
        shim = self.started(cid)
        for count, delay in ((1, BACKOFF_START), (2, BACKOFF_START * 2)):
            shim.exit(1)
            shim = self.restarts_after(cid, delay)
            self.assertEqual(self.record(cid).state.restart_count, count)
        shim.exit(1)
        self.reactor.advance(BACKOFF_MAX)
        state = self.record(cid).state
        self.assertEqual((state.status, state.exit_code, state.restart_count), ("exited", 1, 2))

    def test_on_failure_clean_exit(self) -> None:
        """
        on-failure leaves a container that exited with 0 exited.
        """
        cid = self.create("on-failure")
        self.started(cid).exit(0)
        self.reactor.advance(BACKOFF_MAX)
        self.assertEqual(self.record(cid).state.status, "exited")

    def test_always_backs_off(self) -> None:
        """
        always restarts whatever the exit code, each delay twice the last
        up to the maximum, back to the first once a run lasted long enough.
        """
        cid = self.create("always")
        shim = self.started(cid)
        delay = BACKOFF_START
        delays: list[float] = []
        while len(delays) < 12:
            shim.exit(len(delays) % 2)
            shim = self.restarts_after(cid, delay)
            delays.append(delay)
            delay = min(BACKOFF_MAX, delay * 2)
        self.assertEqual(delays[:3], [BACKOFF_START, BACKOFF_START * 2, BACKOFF_START * 4])
        self.assertEqual(delays[-1], BACKOFF_MAX)
        self.reactor.advance(BACKOFF_RESET)
        shim.exit(1)
        self.restarts_after(cid, BACKOFF_START)
        self.assertEqual(self.record(cid).state.restart_count, 13)

    def test_unless_stopped(self) -> None:
        """
        unless-stopped restarts a container that exited by itself, not one
        that was stopped.
        """
        cid = self.create("unless-stopped")
        shim = self.started(cid)
        shim.exit(0)
        shim = self.restarts_after(cid, BACKOFF_START)
        shim.expect_kill(signal.SIGTERM)
        stopping = self.manager.stop_container(cid)
        shim.exit(143)
        self.successResultOf(stopping)
        self.reactor.advance(BACKOFF_MAX)
        state = self.record(cid).state
        self.assertEqual((state.status, state.manually_stopped, state.restart_count), ("exited", True, 1))

    def test_stop_while_restarting(self) -> None:
        """
        Stopping a container waiting for its restart cancels the restart.
        """
        cid = self.create("always")
        self.started(cid).exit(1)
        self.assertEqual(self.record(cid).state.status, "restarting")
        self.successResultOf(self.manager.stop_container(cid))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        state = self.record(cid).state
        self.assertEqual((state.status, state.manually_stopped), ("exited", True))

    def test_remove_while_restarting(self) -> None:
        """
        A container waiting for its restart is removed only with force,
        and its restart is cancelled.
        """
        cid = self.create("always")
        self.started(cid).exit(1)
        self.failureResultOf(self.manager.remove(cid), FailedPrecondition)
        self.runtime.expect_delete(cid)
        self.successResultOf(self.manager.remove(cid, force=True))
        self.assertEqual(self.reactor.getDelayedCalls(), [])
        self.reactor.advance(BACKOFF_MAX)
        self.assertNotIn(cid, self.manager.records)

    # ---------------------------------------------------------------- restart

    def test_unrecorded_start_runs_on(self) -> None:
        """
        A daemon killed after its container's command began, before it
        recorded the start: the restarted daemon finishes the start (the
        command runs on, with the PID and start time its shim knows) and
        watches it as any running container.
        """
        cid = self.create()
        shim = self.runtime.shim(cid)
        shim.status, shim.started_ns = "running", 1_600_000_000_000_000_000
        self.restarted(cid, shim)
        state = self.record(cid).state
        self.assertEqual((state.status, state.pid, state.started_ns),
                         ("running", shim.pid, 1_600_000_000_000_000_000))
        self.assertEqual(self.actions(cid), ["create", "start"])
        shim.exit(4, finished_ns=1_600_000_001_000_000_000)
        state = self.record(cid).state
        self.assertEqual((state.status, state.exit_code), ("exited", 4))

    def test_unrecorded_start_exited(self) -> None:
        """
        When that command also ended while the daemon was down, its start
        and its exit are both recorded, with the times its shim kept.
        """
        cid = self.create()
        self.restarted(cid, ExitStatus(exit_code=3, started_ns=10**18, finished_ns=10**18 + 5))
        state = self.record(cid).state
        self.assertEqual((state.status, state.exit_code, state.started_ns, state.finished_ns),
                         ("exited", 3, 10**18, 10**18 + 5))
        self.assertEqual(self.actions(cid), ["create", "start", "die"])

    def test_recorded_exit_not_taken_again(self) -> None:
        """
        The exit a shim left behind that the daemon had recorded already
        changes nothing at the next start: its runtime state goes.
        """
        cid = self.create()
        status = self.started(cid).exit(2, finished_ns=10**18)
        self.restarted(cid, status, deleted=True)
        state = self.record(cid).state
        self.assertEqual((state.status, state.exit_code, state.finished_ns), ("exited", 2, 10**18))
        self.assertEqual(self.actions(cid), ["create", "start", "die"])
