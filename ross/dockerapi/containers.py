# -*- test-case-name: ross.test.integration.test_dockerapi -*-
"""
docker's container routes over the container manager: lifecycle, listing
and inspect in docker's schema, logs, wait, top, stats, changes, export,
archives, and attach and exec over hijacked connections.
"""

from __future__ import annotations

import base64
import json
import stat
import time
from signal import SIGKILL
from typing import Any, Callable

import attrs
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.task import deferLater

from ross.dockerapi.router import Call, HTTPError, Reply, Route, route
from ross.dockerapi.schema import (
    container_inspect,
    container_summary,
    create_request,
    endpoint_settings,
    rfc3339_ns,
    time_param,
    updated_resources,
    UPDATABLE_RESOURCES,
)
from ross.dockerapi.streams import Flow, Hijack, frame, send_flow, stream_type
from ross.engine.containers import config as container_config
from ross.engine.containers.copy import PathStat
from ross.engine.containers.filters import listed
from ross.engine.containers.logs import Entry, LogQuery
from ross.engine.containers.manager import ContainerManager
from ross.engine.containers.names import new_id
from ross.engine.containers.run import start
from ross.engine.containers.store import ContainerRecord
from ross.engine.engine import Engine
from ross.errors import FailedPrecondition, InvalidArgument, NotFound
from ross.protocols.attach import DetachScanner, parse_detach_keys
from ross.protocols.shim import ContainerStartError

#: Kinds of C{GET /containers/{id}/changes}.
_CHANGE_KINDS = {"C": 0, "A": 1, "D": 2}


@attrs.define
class DockerExec:
    """
    An exec instance as docker has them: created first, started later
    (C{ross_id} is the engine's session once started).
    """

    id: str
    container_id: str
    process: Any
    attach_stdin: bool
    attach_stdout: bool
    attach_stderr: bool
    detach_keys: str
    ross_id: str = ""
    start_error: str = ""
    start_code: int | None = None


def _drop(d: Deferred[Any]) -> None:
    """
    Cancel a wait nobody needs any more, quietly.
    """
    if not d.called:
        d.addErrback(lambda f: f.trap(CancelledError))
        d.cancel()


def _stop_timeout(call: Call) -> int | None:
    timeout = call.integer("t")
    if timeout is None:
        timeout = call.integer("timeout")
    return timeout


def _window(call: Call) -> tuple[int, int]:
    rows, cols = call.integer("h", 0) or 0, call.integer("w", 0) or 0
    container_config.validate_window(rows, cols)
    return rows, cols


def _path_stat_header(st: PathStat) -> str:
    """
    docker's X-Docker-Container-Path-Stat: the stat as base64 JSON, its
    mode as Go's os.FileMode.
    """
    fields = {"name": st.name, "size": st.size, "mode": go_file_mode(st.mode), "mtime": rfc3339_ns(st.mtime_ns),
            "linkTarget": st.link_target}
    return base64.b64encode(json.dumps(fields).encode()).decode()


#: Go's os.FileMode bits of the Unix file types (a character device is
#: ModeDevice | ModeCharDevice).
_GO_TYPES = {stat.S_IFDIR: 1 << 31, stat.S_IFLNK: 1 << 27, stat.S_IFBLK: 1 << 26, stat.S_IFIFO: 1 << 25,
             stat.S_IFSOCK: 1 << 24, stat.S_IFCHR: (1 << 26) | (1 << 21)}


def go_file_mode(mode: int) -> int:
    """
    Go's os.FileMode of a Unix C{st_mode}, as docker's clients read a
    path's stat: a directory is ModeDir (1 << 31), not S_IFDIR, or
    ``docker cp FILE CTR:/tmp/`` takes /tmp for a file to replace.
    """
    go = (mode & 0o777) | _GO_TYPES.get(stat.S_IFMT(mode), 0)
    for unix, bit in ((stat.S_ISUID, 1 << 23), (stat.S_ISGID, 1 << 22), (stat.S_ISVTX, 1 << 20)):
        if mode & unix:
            go |= bit
    return go


def stats_json(record: ContainerRecord, previous: Any, current: Any) -> dict[str, Any]:
    """
    docker's stats object from two samples of the engine's counters (the
    CLI computes CPU % from their difference).
    """

    def cpu(sample: Any) -> dict[str, Any]:
        if sample is None:
            return {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0, "usage_in_usermode": 0},
                    "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}
        return {"cpu_usage": {"total_usage": sample.cpu_usage_ns, "usage_in_kernelmode": 0,
                              "usage_in_usermode": 0},
                "system_cpu_usage": sample.system_cpu_ns, "online_cpus": sample.online_cpus,
                "throttling_data": {"periods": 0, "throttled_periods": 0, "throttled_time": 0}}

    found: dict[str, Any] = {"name": f"/{record.name}", "id": record.id, "read": rfc3339_ns(0),
                             "preread": rfc3339_ns(previous.read_ns if previous is not None else 0),
                             "pids_stats": {}, "blkio_stats": {"io_service_bytes_recursive": None},
                             "num_procs": 0, "storage_stats": {}, "cpu_stats": cpu(current),
                             "precpu_stats": cpu(previous), "memory_stats": {}}
    if current is None:
        return found
    found.update({
        "read": rfc3339_ns(current.read_ns),
        "pids_stats": {"current": current.pids},
        "blkio_stats": {"io_service_bytes_recursive": [
            {"major": 0, "minor": 0, "op": "read", "value": current.block_read_bytes},
            {"major": 0, "minor": 0, "op": "write", "value": current.block_write_bytes}]},
        "memory_stats": {"usage": current.memory_usage, "stats": {}, "limit": current.memory_limit},
        "networks": {"eth0": {"rx_bytes": current.net_rx_bytes, "rx_packets": 0, "rx_errors": 0, "rx_dropped": 0,
                              "tx_bytes": current.net_tx_bytes, "tx_packets": 0, "tx_errors": 0,
                              "tx_dropped": 0}},
    })
    return found


class ContainerRoutes:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._manager: ContainerManager = engine.containers
        self._reactor = engine.reactor
        self._execs: dict[str, DockerExec] = {}

    def routes(self) -> list[Route]:
        return [
            route("POST", "/containers/create", self.create),
            route("GET", "/containers/json", self.listing),
            route("POST", "/containers/prune", self.prune),
            route("GET", "/containers/{id}/json", self.inspect),
            route("POST", "/containers/{id}/start", self.start),
            route("POST", "/containers/{id}/stop", self.stop),
            route("POST", "/containers/{id}/restart", self.restart),
            route("POST", "/containers/{id}/kill", self.kill),
            route("POST", "/containers/{id}/pause", self.pause),
            route("POST", "/containers/{id}/unpause", self.unpause),
            route("POST", "/containers/{id}/rename", self.rename),
            route("POST", "/containers/{id}/wait", self.wait),
            route("DELETE", "/containers/{id}", self.remove),
            route("GET", "/containers/{id}/logs", self.logs),
            route("GET", "/containers/{id}/top", self.top),
            route("GET", "/containers/{id}/stats", self.stats),
            route("GET", "/containers/{id}/changes", self.changes),
            route("GET", "/containers/{id}/export", self.export),
            route("HEAD", "/containers/{id}/archive", self.archive_stat),
            route("GET", "/containers/{id}/archive", self.archive_get),
            route("PUT", "/containers/{id}/archive", self.archive_put),
            route("POST", "/containers/{id}/resize", self.resize),
            route("POST", "/containers/{id}/update", self.update),
            route("POST", "/containers/{id}/attach", self.attach),
            route("POST", "/containers/{id}/exec", self.exec_create),
            route("POST", "/exec/{id}/start", self.exec_start),
            route("POST", "/exec/{id}/resize", self.exec_resize),
            route("GET", "/exec/{id}/json", self.exec_inspect),
        ]

    # -- lifecycle

    async def create(self, call: Call) -> Reply:
        request = create_request(call.json())
        try:
            self._engine.network.network_for_mode(request.host.network_mode)
            networks = [(self._engine.network.lookup(e.network), e) for e in request.networks]
        except NotFound as e:
            # 400, as dockerd's: docker's CLI takes a 404 from create for
            # a missing image, and would go and pull it.
            raise InvalidArgument(str(e)) from None
        record = await self._manager.create(call.query("name"), request.config, request.host)
        try:
            for network, endpoint in networks:
                await self._engine.network.connect(network.id, record, 0, endpoint.ip, endpoint.aliases,
                                                   endpoint.ip6)
        except BaseException:
            await self._manager.remove(record.id, force=True, volumes=True)
            raise
        return Reply(201, {"Id": record.id, "Warnings": container_config.create_warnings(request.host)})

    async def start(self, call: Call) -> None:
        record = self._manager.resolve(call["id"])
        if record.state.status == "running":
            raise HTTPError(304)
        try:
            await start(self._manager, record.id)
        except ContainerStartError as e:
            raise InvalidArgument(e.message)

    async def stop(self, call: Call) -> None:
        record = self._manager.resolve(call["id"])
        if not record.state.running and record.state.status != "restarting":
            raise HTTPError(304)
        await self._manager.stop_container(record.id, _stop_timeout(call), call.query("signal"))

    async def restart(self, call: Call) -> None:
        await self._manager.restart_container(call["id"], _stop_timeout(call))

    async def kill(self, call: Call) -> None:
        record = self._manager.resolve(call["id"])
        if not record.state.running:
            raise FailedPrecondition(f"Cannot kill container: {call['id']}: Container {record.id} is not running")
        signal = call.query("signal")
        if signal and container_config.signal_number(signal) != SIGKILL:
            await self._manager.kill_container(record.id, signal)
            return
        # As dockerd: a SIGKILL is answered once the container is dead, so
        # that the next inspect shows it exited.
        exited = self._manager.wait_exit(record.id)
        try:
            await self._manager.kill_container(record.id, signal)
            await exited
        finally:
            _drop(exited)

    async def pause(self, call: Call) -> None:
        await self._manager.pause_container(call["id"])

    async def unpause(self, call: Call) -> None:
        await self._manager.unpause_container(call["id"])

    async def rename(self, call: Call) -> None:
        name = call.query("name")
        if not name:
            raise InvalidArgument("Neither old nor new names may be empty")
        await self._manager.rename(call["id"], name)

    async def remove(self, call: Call) -> None:
        await self._manager.remove(call["id"], call.flag("force"), call.flag("v"))

    async def prune(self, call: Call) -> Any:
        filters = call.filters()
        until = None
        labels = []
        for key, values in filters.items():
            for value in values:
                if key == "until":
                    until = time_param(value, self._reactor.seconds())
                elif key == "label":
                    k, _, v = value.partition("=")
                    labels.append((k, v))
                else:
                    raise InvalidArgument(f"invalid filter '{key}'")
        # What their writable layers hold, measured before they go.
        sizes = {}
        for record in list(self._manager.records.values()):
            if not record.state.running and record.state.status != "restarting":
                sizes[record.id] = (await self._manager.view(record, size=True)).size_rw
        removed = await self._manager.prune(until, labels)
        return {"ContainersDeleted": removed or None, "SpaceReclaimed": sum(sizes.get(cid, 0) for cid in removed)}

    async def update(self, call: Call) -> Any:
        """
        docker update: the restart policy and the memory, CPU and pids
        limits, at once on a running container; other limits cannot
        change on a container Ross made (501 when asked to).
        """
        body = call.json() or {}
        if not isinstance(body, dict):
            raise InvalidArgument("invalid update: expected a JSON object")
        changed = sorted(k for k, v in body.items()
                         if k != "RestartPolicy" and k not in UPDATABLE_RESOURCES and v not in (None, 0, "", [], {}))
        if changed:
            raise HTTPError(501, f"updating {', '.join(changed)} of a container is not supported by Ross: "
                                 "only its restart policy, memory, CPU and pids limits")
        policy = body.get("RestartPolicy")
        restart_policy = None
        if policy is not None:
            if not isinstance(policy, dict):
                raise InvalidArgument("invalid RestartPolicy: expected an object")
            count = policy.get("MaximumRetryCount") or 0
            if not isinstance(count, int):
                raise InvalidArgument("invalid RestartPolicy.MaximumRetryCount: wrong type")
            restart_policy = container_config.RestartPolicy(str(policy.get("Name") or "no"), count)
        record = self._manager.resolve(call["id"])
        await self._manager.update(record.id, updated_resources(body, record.host.resources), restart_policy)
        return {"Warnings": []}

    # -- listing

    async def listing(self, call: Call) -> Any:
        filters = [(key, value) for key, values in call.filters().items() for value in values]
        # docker's limit of -1 is none. Kubernetes' containers (the CRI's)
        # are not docker's to list.
        records = listed(self._manager, filters, call.flag("all"), max(call.integer("limit", 0) or 0, 0))
        now = time.time_ns()
        if call.flag("size"):
            views = [await self._manager.view(r, True) for r in records]
            return [container_summary(v.record, v.networks, now, v.size_rw) for v in views]
        # The hot path of every ps: the network settings alone, not a whole view.
        settings = self._engine.network.settings
        return [container_summary(r, settings(r), now) for r in records]

    async def inspect(self, call: Call) -> Any:
        record = self._manager.resolve(call["id"])
        size = call.flag("size")
        view = await self._manager.view(record, size)
        return container_inspect(view, endpoint_settings(view, self._engine.network.members), size)

    # -- waiting

    async def wait(self, call: Call) -> None:
        waiting = self._manager.wait(call["id"], call.query("condition") or "not-running")
        # The head goes out once the waiter is in place: docker's CLI
        # starts the container when it has it, and must not miss its exit.
        call.start()
        try:
            status = await waiting
        finally:
            _drop(waiting)
        call.write_json({"StatusCode": status.exit_code, "Error": None})

    # -- logs

    async def logs(self, call: Call) -> None:
        record = self._manager.resolve(call["id"])
        stdout, stderr = call.flag("stdout"), call.flag("stderr")
        if not (stdout or stderr):
            raise InvalidArgument("Bad parameters: you must choose at least one stream")
        tail_text = call.query("tail", "all")
        if tail_text != "all" and not tail_text.lstrip("-").isdigit():
            raise InvalidArgument(f"invalid tail {tail_text[:32]!r}: a number or all")
        tail = int(tail_text) if tail_text != "all" and int(tail_text) >= 0 else None
        now = self._reactor.seconds()
        query = LogQuery(stdout=stdout, stderr=stderr, since_ns=time_param(call.query("since"), now),
                         until_ns=time_param(call.query("until"), now), tail=tail, follow=call.flag("follow"))
        tty = record.config.tty
        timestamps = call.flag("timestamps")
        call.start(stream_type(call, tty))
        flow = Flow(call)

        def deliver(entries: list[Entry]) -> Deferred[None]:
            chunks = []
            for stream, ns, data, _ in entries:
                if timestamps:
                    data = rfc3339_ns(ns).encode() + b" " + data
                chunks.append(data if tty else frame(stream, data))
            call.write(b"".join(chunks))
            return flow.ready()

        try:
            await self._manager.logs(record.id, query, deliver)
        finally:
            flow.close()

    # -- inspection

    async def top(self, call: Call) -> Any:
        titles, rows = await self._manager.processes(call["id"], call.query("ps_args"))
        return {"Titles": titles, "Processes": rows}

    async def stats(self, call: Call) -> None:
        record = self._manager.resolve(call["id"])
        stream = call.flag("stream", True)
        one_shot = call.flag("one-shot")
        if not record.state.running:
            # docker answers a stopped container's stats with empty ones.
            call.write_json(stats_json(record, None, None))
            return
        previous = None
        if not one_shot or stream:
            # Before the head: a container removed meanwhile is a 404.
            previous = await self._manager.stats(record.id)
        call.start()
        if not one_shot or stream:
            await deferLater(self._reactor, 1.0 if stream else 0.25, lambda: None)
        flow = Flow(call)
        try:
            while True:
                current = await self._manager.stats(record.id)
                call.write_json(stats_json(record, previous, current))
                if not stream or current is None:
                    return
                await flow.ready()
                previous = current
                await deferLater(self._reactor, 1.0, lambda: None)
        finally:
            flow.close()

    async def changes(self, call: Call) -> Any:
        found = await self._manager.changes(call["id"])
        # A list, empty too: docker's CLI reads an empty 204 as a broken
        # answer (EOF).
        return Reply(200, [{"Path": path, "Kind": _CHANGE_KINDS[kind]} for kind, path in found])

    async def export(self, call: Call) -> None:
        flow = await self._manager.export(call["id"])
        await send_flow(call, flow, "application/x-tar")

    # -- archives (docker cp)

    def _archive_path(self, call: Call) -> str:
        path = call.query("path")
        if not path:
            raise InvalidArgument("path is required: give the path in the container")
        return path

    async def archive_stat(self, call: Call) -> Reply:
        path = self._archive_path(call)
        copier = self._manager.copier
        st = await self._manager.copying(call["id"], "", lambda target: copier.stat(target, path, False))
        return Reply(200, None, headers={"X-Docker-Container-Path-Stat": _path_stat_header(st)})

    async def archive_get(self, call: Call) -> None:
        path = self._archive_path(call)
        copier = self._manager.copier
        control: list[Flow] = []

        async def deliver(item: PathStat | bytes) -> None:
            if isinstance(item, PathStat):
                call.request.setHeader("X-Docker-Container-Path-Stat", _path_stat_header(item))
                call.start("application/x-tar")
                control.append(Flow(call))
                return
            call.write(item)
            await control[0].ready()

        try:
            await self._manager.copying(call["id"], "archive-path",
                                        lambda target: copier.archive(target, path, False, deliver))
        except Exception:
            if control:
                # Begun: its end would read as a whole, shorter tar.
                call.cut()
            raise
        finally:
            for flow in control:
                flow.close()

    async def archive_put(self, call: Call) -> Reply:
        path = self._archive_path(call)
        content = call.request.content
        if content is None:
            raise InvalidArgument("the archive is missing")
        content.seek(0)
        copier = self._manager.copier

        async def receive() -> bytes | None:
            from twisted.internet.threads import deferToThreadPool

            assert content is not None
            chunk: bytes = await deferToThreadPool(self._reactor, self._reactor.getThreadPool(), content.read,
                                                   1 << 20)
            return chunk or None

        await self._manager.copying(
            call["id"], "extract-to-dir",
            lambda target: copier.extract(target, path, call.flag("copyUIDGID"), call.flag("noOverwriteDirNonDir"),
                                          receive))
        return Reply(200)

    # -- terminals

    async def resize(self, call: Call) -> Reply:
        rows, cols = _window(call)
        record = self._manager.resolve(call["id"])
        self._manager.running_shim(record.id)
        # As dockerd: a container without a terminal ignores the size.
        if record.config.tty:
            await self._manager.resize(record.id, rows, cols)
        return Reply(200)

    async def attach(self, call: Call) -> None:
        """
        Attach over a hijacked connection. The attachment (or, for a
        container not running, its hook on the next start) is in place
        before the head goes out: the CLI's run starts the container as
        soon as it has the head, and nothing of its output may be missed.
        Its output waits while the logs asked for are replayed.
        """
        record = self._manager.resolve(call["id"])
        keys = parse_detach_keys(call.query("detachKeys"))
        stdin, stdout, stderr = call.flag("stdin"), call.flag("stdout"), call.flag("stderr")
        tty = record.config.tty
        held = _Held()
        attachment: Any = None
        attaching: Deferred[Any] | None = None
        if call.flag("stream"):
            if record.state.running:
                attachment = await self._manager.running_shim(record.id).attach(held, stdin=stdin)
            else:
                attaching = Deferred.fromCoroutine(self._manager.attach_next_start(record.id, held, stdin))
        try:
            hijack = Hijack(call, stream_type(call, tty))
            wanted = {s for s, on in (("stdout", stdout), ("stderr", stderr)) if on}
            output = _output(hijack, tty, wanted)
            if call.flag("logs"):
                await self._manager.logs(record.id, LogQuery(stdout=stdout, stderr=stderr),
                                         lambda entries: _replay(output, entries))
            held.release(output)
            if attaching is not None:
                attachment = await attaching
            if attachment is None:
                return
            await _session(hijack, attachment, DetachScanner(keys if tty else b""),
                           stdin, close_on_end=record.config.stdin_once and not tty)
        finally:
            if attaching is not None:
                # Gone before the container started: take the hook back;
                # started meanwhile: let go of the attachment made for it.
                _drop(attaching)
                attaching.addCallbacks(lambda made: made and made.detach(), lambda _: None)
            elif attachment is not None:
                attachment.detach()

    # -- exec

    async def exec_create(self, call: Call) -> Reply:
        from ross.engine.runtime.spec import ExecProcess

        body = call.json() or {}
        if not isinstance(body, dict):
            raise InvalidArgument("invalid exec config: expected a JSON object")
        record = self._manager.resolve(call["id"])
        if not record.state.running:
            raise FailedPrecondition(f"Container {record.id} is not running")
        self._manager.running_shim(record.id)
        cmd = body.get("Cmd") or []
        env = body.get("Env") or []
        if not isinstance(cmd, list) or not all(isinstance(c, str) for c in cmd):
            raise InvalidArgument("No exec command specified")
        if not isinstance(env, list) or not all(isinstance(e, str) for e in env):
            raise InvalidArgument("invalid environment variables")
        size = body.get("ConsoleSize") or [24, 80]
        if not (isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) for n in size)):
            raise InvalidArgument("invalid ConsoleSize: expected [height, width]")
        attach_stdin = bool(body.get("AttachStdin"))
        process = ExecProcess(args=tuple(cmd), env=tuple(env), cwd=str(body.get("WorkingDir") or ""),
                              user=str(body.get("User") or ""), tty=bool(body.get("Tty")),
                              open_stdin=attach_stdin, privileged=bool(body.get("Privileged")),
                              console_size=(size[0] or 24, size[1] or 80))
        # Refused at create, as dockerd refuses it, not when started.
        container_config.validate_exec(process)
        detach_keys = str(body.get("DetachKeys") or "")
        parse_detach_keys(detach_keys)
        self._forget_finished_execs()
        exec_id = new_id()
        self._execs[exec_id] = DockerExec(exec_id, record.id, process, attach_stdin,
                                          bool(body.get("AttachStdout")), bool(body.get("AttachStderr")),
                                          detach_keys)
        return Reply(201, {"Id": exec_id})

    def _forget_finished_execs(self) -> None:
        """
        Exec instances whose container is gone or whose session the engine
        forgot are forgotten too, as docker's.
        """
        for e in list(self._execs.values()):
            gone = e.container_id not in self._manager.records
            if gone or (e.ross_id and e.ross_id not in self._manager.sessions.execs):
                del self._execs[e.id]

    def _exec(self, exec_id: str) -> DockerExec:
        found = self._execs.get(exec_id)
        if found is None:
            raise NotFound(f"No such exec instance: {exec_id}")
        return found

    async def exec_start(self, call: Call) -> None:
        e = self._exec(call["id"])
        if e.ross_id or e.start_code is not None:
            raise FailedPrecondition(f"Error: Exec command {e.id} has already run")
        body = call.json() or {}
        if not isinstance(body, dict):
            raise InvalidArgument("invalid exec start config: expected a JSON object")
        process = e.process
        size = body.get("ConsoleSize")
        if isinstance(size, list) and len(size) == 2 and all(isinstance(n, int) and n > 0 for n in size):
            process = attrs.evolve(process, console_size=(size[0], size[1]))
        if body.get("Detach"):
            await self._start_exec(e, process, None)
            return
        # As dockerd: the start request's Tty, not the exec's, says whether
        # the stream is raw or framed.
        raw = bool(body.get("Tty"))
        hijack = Hijack(call, stream_type(call, raw))
        wanted = {s for s, on in (("stdout", e.attach_stdout), ("stderr", e.attach_stderr)) if on}
        session = await self._start_exec(e, process, _output(hijack, raw, wanted))
        if session is None:
            hijack.write(e.start_error.encode() + b"\r\n" if raw else frame("stderr", e.start_error.encode() + b"\n"))
            return
        keys = parse_detach_keys(e.detach_keys)
        await _session(hijack, session.attachment, DetachScanner(keys if process.tty else b""), e.attach_stdin,
                       close_on_end=not process.tty)

    async def _start_exec(self, e: DockerExec, process: Any, output: Callable[[str, bytes], None] | None) -> Any:
        """
        Start the exec's session (attached when C{output} is given); None
        when its command could not run (inspect tells the code).
        """
        try:
            info, session = await self._manager.exec(e.container_id, process, output, e.attach_stdin)
        except ContainerStartError as error:
            e.start_code, e.start_error = error.exit_code, error.message
            return None
        e.ross_id = info.id
        return session

    async def exec_resize(self, call: Call) -> Reply:
        rows, cols = _window(call)
        e = self._exec(call["id"])
        if not e.ross_id:
            raise FailedPrecondition(f"Exec {e.id} is not running")
        self._manager.running_shim(e.container_id)
        if e.process.tty:
            await self._manager.resize(e.container_id, rows, cols, e.ross_id)
        return Reply(201)

    async def exec_inspect(self, call: Call) -> Any:
        e = self._exec(call["id"])
        running, code, pid = False, e.start_code, 0
        if e.ross_id:
            info = self._manager.exec_info(e.ross_id)
            running, pid = info.exit is None, info.pid
            code = info.exit.exit_code if info.exit is not None else None
        p = e.process
        return {
            "CanRemove": False, "ContainerID": e.container_id, "DetachKeys": e.detach_keys, "ExitCode": code,
            "ID": e.id, "OpenStderr": e.attach_stderr, "OpenStdin": e.attach_stdin, "OpenStdout": e.attach_stdout,
            "ProcessConfig": {"arguments": list(p.args[1:]), "entrypoint": p.args[0], "privileged": p.privileged,
                              "tty": p.tty, "user": p.user},
            "Running": running, "Pid": pid,
        }


def _output(hijack: Hijack, raw: bool, wanted: set[str]) -> Callable[[str, bytes], None]:
    """
    A session's output into the hijacked stream: C{raw} (a terminal's), or
    in docker's frames; streams the client did not ask for dropped.
    """

    def on_output(stream: str, data: bytes) -> None:
        if stream not in wanted:
            return
        hijack.write(data if raw else frame(stream, data))

    return on_output


class _Held:
    """
    A session's output, held back until L{release} gives where it goes.
    """

    def __init__(self) -> None:
        self._target: Callable[[str, bytes], None] | None = None
        self._held: list[tuple[str, bytes]] = []

    def __call__(self, stream: str, data: bytes) -> None:
        if self._target is not None:
            self._target(stream, data)
        else:
            self._held.append((stream, data))

    def release(self, target: Callable[[str, bytes], None]) -> None:
        held, self._held = self._held, []
        for stream, data in held:
            target(stream, data)
        self._target = target


def _replay(output: Callable[[str, bytes], None], entries: list[Entry]) -> Deferred[None]:
    for stream, _, data, _ in entries:
        output(stream, data)
    return succeed(None)


async def _session(hijack: Hijack, attachment: Any, scanner: DetachScanner, stdin: bool, close_on_end: bool) -> None:
    """
    Pump an attached session over a hijacked connection: the client's
    input to the process (its half-close closing the process's stdin when
    C{close_on_end}), the process's output to the client (paused while the
    client is slow), until the session ends or the client types the detach
    keys. A client that goes away leaves the process running.
    """
    detached: Deferred[None] = Deferred()

    def on_input(data: bytes) -> None:
        if not stdin or detached.called:
            return
        data, hit = scanner.feed(data)
        if data:
            attachment.write(data)
        if hit:
            detached.callback(None)

    def on_end() -> None:
        if stdin and close_on_end and not detached.called:
            held = scanner.flush()
            if held:
                attachment.write(held)
            attachment.close_stdin().addErrback(lambda _: None)

    hijack.register(attachment.producer)
    hijack.listen(on_input, on_end)
    first: Deferred[Any] = Deferred()

    def settle(result: Any) -> Any:
        if not first.called:
            first.callback(None)
        return result

    attachment.done.addBoth(settle)
    detached.addCallback(settle)
    try:
        await first
    finally:
        hijack.unregister()
        attachment.detach()
