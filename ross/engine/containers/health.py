# -*- test-case-name: ross.test.test_health -*-
"""
Container health checks, run as docker runs them.

A running (not paused) container whose effective config has a CMD or
CMD-SHELL health check has a L{HealthMonitor}: an interval after it starts,
and then an interval after each check ended, it runs the check in the
container through the shim's exec path (L{exec_check}), one at a time,
killing it (its whole process group) past its timeout. Each result is
folded into the container's state with docker's rules (L{fold}): one
success makes it healthy; C{retries} failures in a row make it unhealthy;
failures before the first success within the start period do not count.
The last five results are kept, each output cut to 4096 bytes.

Health checks are quiet: no exec events, no exec IDs in inspect; only
changes of status are published, as docker's ``health_status: STATUS``.
"""

from __future__ import annotations

import signal
from typing import Any, Callable, Coroutine, Mapping

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from ross.engine.containers.config import ContainerConfig, HealthConfig
from ross.engine.containers.names import new_id
from ross.engine.containers.store import ContainerRecord, HealthResult, State
from ross.engine.events import EventBus
from ross.engine.runtime.spec import ExecProcess
from ross.errors import RossError
from ross.interfaces import IShim
from ross.protocols.shim import ContainerStartError

SECOND_NS = 1_000_000_000
DEFAULT_INTERVAL_NS = 30 * SECOND_NS
DEFAULT_TIMEOUT_NS = 30 * SECOND_NS
DEFAULT_RETRIES = 3
MAX_OUTPUT = 4096
MAX_LOG = 5
# How long a check killed for its timeout may take to end before the
# monitor lets go of it (docker's termProcessTimeout).
KILL_GRACE = 10.0
# Exec IDs of health checks start with this: a restarted daemon finds the
# checks its predecessor left running.
EXEC_PREFIX = "health-"


@attrs.frozen
class Probe:
    """
    A health check as it runs: the command and every setting, with
    docker's defaults for what was not given.
    """

    args: tuple[str, ...]
    interval_ns: int
    timeout_ns: int
    start_period_ns: int
    retries: int


def probe_of(config: HealthConfig | None) -> Probe | None:
    """
    The check a container's effective health config runs, or None for no
    check (none configured, or "NONE"). CMD-SHELL runs under /bin/sh -c.
    """
    if config is None or not config.test or config.test[0] not in ("CMD", "CMD-SHELL"):
        return None
    command = config.test[1:]
    args = command if config.test[0] == "CMD" else ("/bin/sh", "-c", *command)
    return Probe(
        args=tuple(args),
        interval_ns=config.interval_ns if config.interval_ns > 0 else DEFAULT_INTERVAL_NS,
        timeout_ns=config.timeout_ns if config.timeout_ns > 0 else DEFAULT_TIMEOUT_NS,
        start_period_ns=max(0, config.start_period_ns),
        retries=config.retries if config.retries > 0 else DEFAULT_RETRIES,
    )


def fold(state: State, result: HealthResult, probe: Probe) -> dict[str, Any]:
    """
    The state changes one check's C{result} makes (docker's
    handleProbeResult): the result joins the log (the last L{MAX_LOG}); a
    success makes the container healthy and clears the failing streak; a
    failure adds to the streak, unless the container has not been healthy
    yet and the check started within the start period, and the streak
    reaching C{retries} makes it unhealthy.
    """
    log = (state.health_log + (result,))[-MAX_LOG:]
    if result.exit_code == 0:
        return {"health": "healthy", "failing_streak": 0, "health_log": log}
    status, streak = state.health, state.failing_streak
    if status != "starting" or result.start_ns - state.started_ns >= probe.start_period_ns:
        streak += 1
        if streak >= probe.retries:
            status = "unhealthy"
    return {"health": status, "failing_streak": streak, "health_log": log}


def go_duration(ns: int) -> str:
    """
    A duration as Go prints it (docker's messages do): "200ms", "1.5s",
    "1m30s", "1h0m0s".
    """
    if ns == 0:
        return "0s"
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < SECOND_NS:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _fraction(ns, size) + unit
    hours, rest = divmod(ns, 3600 * SECOND_NS)
    minutes, rest = divmod(rest, 60 * SECOND_NS)
    seconds = _fraction(rest, SECOND_NS) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{seconds}"
    if minutes:
        return f"{sign}{minutes}m{seconds}"
    return sign + seconds


def _fraction(value: int, size: int) -> str:
    whole, rest = divmod(value, size)
    if not rest:
        return str(whole)
    digits = str(rest).rjust(len(str(size)) - 1, "0").rstrip("0")
    return f"{whole}.{digits}"


class LimitedOutput:
    """
    A check's stdout and stderr as they come, the first L{MAX_OUTPUT}
    bytes kept (docker's limitedBuffer).
    """

    def __init__(self) -> None:
        self._data = bytearray()
        self._truncated = False

    def write(self, stream: str, data: bytes) -> None:
        room = MAX_OUTPUT - len(self._data)
        if room > 0:
            self._data += data[:room]
        if len(data) > room:
            self._truncated = True

    def text(self) -> str:
        """
        What was kept, as text (invalid UTF-8 replaced), "..." after it
        when more was written.
        """
        return self._data.decode("utf-8", "replace") + ("..." if self._truncated else "")


@attrs.define
class RunningCheck:
    """
    A check started in a container. C{done} fires with its exit status
    (anything with C{exit_code}) once all its output came, or with None
    when the session was lost; C{kill} kills it with what it started;
    C{abandon} lets go of it (C{done} then fires with None).
    """

    done: Deferred[Any]
    kill: Callable[[], None]
    abandon: Callable[[], None]
    output: LimitedOutput


async def exec_check(shim: IShim, args: tuple[str, ...]) -> RunningCheck:
    """
    Start C{args} in the container of C{shim} as an exec session (the
    container's user, directory and environment, no stdin, no terminal),
    attached to collect its output. Fails as the shim's exec does
    (L{ContainerStartError} when the command cannot run).
    """
    output = LimitedOutput()
    exec_id = EXEC_PREFIX + new_id()
    session = await shim.exec(exec_id, ExecProcess(args=args), output.write, False)
    attachment = session.attachment
    # Attached from its first byte: its output goes to on_output.
    assert attachment is not None

    def kill() -> None:
        # Failing means the container is gone, and the check with it.
        shim.kill(signal.SIGKILL, session=exec_id).addErrback(lambda f: None)

    return RunningCheck(done=attachment.done, kill=kill, abandon=attachment.detach, output=output)


class HealthMonitor:
    """
    Runs one container's checks, one at a time, until L{stop}: the first
    an interval after L{start}, each next an interval after the previous
    one ended. C{start_check(args)} starts one (a Deferred
    L{RunningCheck}); C{report(result)} hears every result, never after
    L{stop}.
    """

    _log = Logger()

    def __init__(self, reactor: IReactorTime, probe: Probe,
                 start_check: Callable[[tuple[str, ...]], Deferred[RunningCheck]],
                 report: Callable[[HealthResult], None]) -> None:
        self._reactor = reactor
        self.probe = probe
        self._start_check = start_check
        self._report_to = report
        self._timer: IDelayedCall | None = None
        self._check: RunningCheck | None = None
        self._stopped = False

    @property
    def checking(self) -> bool:
        """
        Whether a check is running now.
        """
        return self._check is not None

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        """
        No more checks; the one running is killed and its result ignored.
        """
        self._stopped = True
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        if self._check is not None:
            self._check.kill()

    def _now(self) -> int:
        return int(self._reactor.seconds() * SECOND_NS)

    def _schedule(self) -> None:
        if not self._stopped:
            self._timer = self._reactor.callLater(self.probe.interval_ns / SECOND_NS, self._run)

    def _run(self) -> None:
        self._timer = None
        d = Deferred.fromCoroutine(self._once())
        d.addErrback(lambda f: self._log.failure("a health check failed to run", f))
        d.addBoth(lambda _: self._schedule())

    def _report(self, result: HealthResult) -> None:
        if not self._stopped:
            self._report_to(result)

    async def _once(self) -> None:
        start = self._now()
        try:
            check = await self._start_check(self.probe.args)
        except ContainerStartError as e:
            self._report(HealthResult(start, self._now(), e.exit_code, e.message))
            return
        except RossError as e:
            self._report(HealthResult(start, self._now(), -1, str(e)))
            return
        if self._stopped:
            check.kill()
            return
        self._check = check
        try:
            ended, status = await self._within(check.done, self.probe.timeout_ns / SECOND_NS)
            if ended:
                # None: the session was lost (the container is going away).
                if status is not None:
                    self._report(HealthResult(start, self._now(), status.exit_code, check.output.text()))
                return
            self._report(HealthResult(start, self._now(), -1,
                                      f"Health check exceeded timeout ({go_duration(self.probe.timeout_ns)})"))
            check.kill()
            # The next check waits for this one to end: checks never pile
            # up. One that outlives SIGKILL of its group is let go.
            ended, _ = await self._within(check.done, KILL_GRACE)
            if not ended:
                self._log.warn("a health check outlived its kill; letting go of it")
                check.abandon()
        finally:
            self._check = None

    def _within(self, d: Deferred[Any], seconds: float) -> Deferred[tuple[bool, Any]]:
        """
        (True, result) when C{d} fires within C{seconds}, else (False, None)
        then. C{d} is left firing on its own.
        """
        outcome: Deferred[tuple[bool, Any]] = Deferred()

        def expired() -> None:
            if not outcome.called:
                outcome.callback((False, None))

        timer = self._reactor.callLater(seconds, expired)

        def fired(result: Any) -> Any:
            if timer.active():
                timer.cancel()
            if isinstance(result, Failure):
                self._log.failure("a health check's session failed", result)
                result = None
            if not outcome.called:
                outcome.callback((True, result))
            return result

        d.addBoth(fired)
        return outcome


class HealthChecks:
    """
    The health monitors of a container manager's containers. The manager
    calls L{resume} when a container runs (started, unpaused, found
    running after a daemon restart) and L{stop} when it stops, is paused
    or goes away; L{on_start} gives the state a start resets.

    @param records: container ID -> record, the manager's (read only).
    @param shim_of: the running shim of a container (FailedPrecondition
        when it is not running).
    @param update: C{update(cid, **state_changes)}, the manager's
        persisted state change.
    """

    _log = Logger()

    def __init__(self, reactor: IReactorTime, records: Mapping[str, ContainerRecord], shim_of: Callable[[str], IShim],
                 update: Callable[..., Coroutine[Any, Any, Any]], events: EventBus) -> None:
        self._reactor = reactor
        self._records = records
        self._shim_of = shim_of
        self._update = update
        self._events = events
        self._monitors: dict[str, HealthMonitor] = {}

    @staticmethod
    def on_start(config: ContainerConfig) -> dict[str, Any]:
        """
        The state changes of a (re)start: status "starting" and no failing
        streak for a container with a health check; its log stays, as
        docker's does.
        """
        if probe_of(config.healthcheck) is None:
            return {}
        return {"health": "starting", "failing_streak": 0}

    def monitoring(self, cid: str) -> bool:
        return cid in self._monitors

    def resume(self, cid: str) -> None:
        """
        Run the checks of container C{cid} if it is running, has a health
        check, and they do not run yet.
        """
        record = self._records.get(cid)
        if record is None or record.state.status != "running" or cid in self._monitors:
            return
        probe = probe_of(record.config.healthcheck)
        if probe is None:
            return

        def start_check(args: tuple[str, ...]) -> Deferred[RunningCheck]:
            return Deferred.fromCoroutine(self._start_check(cid, args))

        monitor = HealthMonitor(self._reactor, probe, start_check, lambda result: self._report(cid, probe, result))
        self._monitors[cid] = monitor
        monitor.start()

    async def adopt(self, cid: str) -> None:
        """
        L{resume} for a container found running by a restarted daemon,
        after killing the checks the previous daemon left running: nobody
        enforces their timeout any more.
        """
        try:
            shim = self._shim_of(cid)
            state = await shim.state()
            for exec_id, session in state.execs.items():
                if exec_id.startswith(EXEC_PREFIX) and session.get("running"):
                    await shim.kill(signal.SIGKILL, session=exec_id)
        except RossError as e:
            self._log.info("could not look for left-over health checks of {id}: {error}", id=cid, error=e)
        self.resume(cid)

    def stop(self, cid: str) -> None:
        monitor = self._monitors.pop(cid, None)
        if monitor is not None:
            monitor.stop()

    def close(self) -> None:
        """
        Stop every monitor (the daemon is stopping).
        """
        for cid in list(self._monitors):
            self.stop(cid)

    async def _start_check(self, cid: str, args: tuple[str, ...]) -> RunningCheck:
        return await exec_check(self._shim_of(cid), args)

    def _report(self, cid: str, probe: Probe, result: HealthResult) -> None:
        record = self._records.get(cid)
        if record is None or record.state.status != "running":
            return
        changes = fold(record.state, result, probe)
        Deferred.fromCoroutine(self._update(cid, **changes)).addErrback(
            lambda f: self._log.failure("could not record the health of {id}", f, id=cid))
        if changes["health"] != record.state.health:
            self._events.publish("container", f"health_status: {changes['health']}", cid,
                                 name=record.name, image=record.image)
