# -*- test-case-name: ross.test.integration.test_build -*-
"""
Builds: a Dockerfile's stages, one step at a time, as docker's classic
builder runs them, with BuildKit's choice of stages (only those the
target needs).

    plan = prepare(request, dockerfile_bytes)        # every check, nothing run
    result = yield builder.build(plan, context, output)

Every step leaves an image (untagged, in the image store) and a cache
entry; a step whose key is cached reuses the image. A failed or
cancelled build stops at its next step, removes what the step in
progress made (container, workspace, layer) and keeps the steps that
finished.
"""

from __future__ import annotations

import copy
import hashlib
import os
import posixpath
import re
import tempfile
import time
from pathlib import Path
from typing import IO, Any, Callable, Iterator, Mapping, Protocol, Sequence, TypeVar, cast

import attrs
from twisted.internet.defer import Deferred
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.threadpool import ThreadPool

from ross.engine.build import files
from ross.engine.build import instructions as ins
from ross.engine.build.backend import SCRATCH, BuildBackend, BuildImage, Container, Root, RunOutput, RunSpec
from ross.engine.build.cache import BuildCache, step_key
from ross.engine.build.context import ContextArchive
from ross.engine.build.parser import Dockerfile, DockerfileError, chomp, parse, parse_heredoc
from ross.engine.build.shell import ExpansionError, Lex, go_quote
from ross.engine.containers.config import signal_number
from ross.engine.layers.apply import apply_files
from ross.engine.pipes import Guard
from ross.engine.reactors import IEngineReactor
from ross.errors import FailedPrecondition, InvalidArgument, NotFound
from ross.reference import Reference, parse_tag

_T = TypeVar("_T")

DEFAULT_SHELL = ("/bin/sh", "-c")
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: Build args docker passes to RUN without a declaring ARG, and keeps out
#: of the image's history and cache keys unless one declares them.
PROXY_ARGS = ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "FTP_PROXY", "ftp_proxy",
              "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy")
_URL = re.compile(r"^(https?://|git@|git://|github\.com/)")
_PORT = re.compile(r"^(\d+)(?:-(\d+))?$")


class StepFailed(FailedPrecondition):
    """A RUN step's command failed: C{exit_code} is its exit code."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@attrs.frozen
class BuildRequest:
    """
    What to build. C{dockerfile}: its contents, or None to read
    C{dockerfile_path} from the context. C{build_args}: name -> value
    (None: declared on the command line without one, ignored as docker
    does when the client's environment had none).
    """

    dockerfile: bytes | None = None
    dockerfile_path: str = "Dockerfile"
    tags: tuple[str, ...] = ()
    build_args: Mapping[str, str | None] = attrs.field(factory=dict)
    no_cache: bool = False
    pull: bool = False
    target: str = ""
    labels: Mapping[str, str] = attrs.field(factory=dict)
    network: str = "default"


@attrs.frozen
class BuildResult:
    image_id: str
    tags: tuple[str, ...]


#: Brings the content of context files (by name) from the client.
Fetch = Callable[[list[str]], Deferred[None]]


class BuildOutput(RunOutput, Protocol):
    """Where a build reports: its step lines, and its containers' output."""

    def line(self, text: str) -> None:
        """One line of the build's own output (no newline)."""


@attrs.frozen
class Plan:
    """
    A checked build: the request, the Dockerfile and its stages, the
    stages the target needs (in order) and the number of steps.
    """

    request: BuildRequest
    dockerfile: Dockerfile
    stages: ins.Stages
    needed: tuple[int, ...]
    steps: int
    tags: tuple[Reference, ...]
    meta: Mapping[str, str]


# ---------------------------------------------------------------- arguments


class _Args:
    """docker's BuildArgs: what ARGs a stage declared, and their values."""

    def __init__(self, options: Mapping[str, str | None]) -> None:
        self.options = options
        self.allowed: dict[str, str | None] = {}
        self.meta: dict[str, str | None] = {}
        self.referenced: set[str] = set()

    def clone_for_stage(self) -> _Args:
        other = _Args(self.options)
        other.meta = dict(self.meta)
        other.referenced = self.referenced
        return other

    def add(self, key: str, value: str | None) -> None:
        self.allowed[key] = value
        self.referenced.add(key)

    def _value(self, key: str, mapping: Mapping[str, str | None]) -> str | None:
        given = self.options.get(key)
        if given is not None:
            return given
        if key in mapping and mapping[key] is not None:
            return mapping[key]
        if mapping.get(key) is None:
            meta = self.meta.get(key)
            if meta is not None:
                return meta
        return None

    def _all(self, mapping: Mapping[str, str | None]) -> dict[str, str]:
        values = {}
        for key in [*mapping, *PROXY_ARGS]:
            value = self._value(key, mapping)
            if value is not None:
                values[key] = value
        return values

    def all_allowed(self) -> dict[str, str]:
        return self._all(self.allowed)

    def all_meta(self) -> dict[str, str]:
        return self._all(self.meta)

    def not_in(self, env: Sequence[str]) -> list[str]:
        """The allowed args C{env} does not set, as KEY=VALUE, sorted."""
        keys = {e.partition("=")[0] for e in env}
        return sorted(f"{k}={v}" for k, v in self.all_allowed().items() if k not in keys)

    def recorded(self, key: str) -> bool:
        """Whether an arg's value goes into history and cache keys (proxy args only when declared)."""
        return key in self.allowed or key not in PROXY_ARGS


def _env_map(env: Sequence[str]) -> dict[str, str]:
    values = {}
    for entry in env:
        key, _, value = entry.partition("=")
        values[key] = value
    return values


# ---------------------------------------------------------------- planning


def prepare(request: BuildRequest, dockerfile: bytes) -> Plan:
    """
    Everything that can be refused before anything runs: the Dockerfile,
    the tags, the target, the stages' names and references. Raises
    InvalidArgument (L{DockerfileError} with the line for the Dockerfile).
    """
    parsed = parse(dockerfile)
    stages = ins.parse_stages(parsed)
    tags = tuple(_tag(tag) for tag in request.tags)
    if request.network not in ins.RUN_NETWORKS and not re.match(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]*$", request.network):
        raise InvalidArgument(f"invalid network {request.network!r}")
    last = len(stages.stages) - 1
    if request.target:
        found = stages.index_of(request.target)
        if found is None:
            raise InvalidArgument(f"target stage {request.target!r} could not be found")
        last = found
    args = _Args(request.build_args)
    lex = Lex(parsed.escape)
    for meta in stages.meta_args:
        env = args.all_allowed()
        for key, value in meta.pairs:
            key = _expand(lex, key, env, meta)
            expanded = _expand(lex, value, env, meta) if value is not None else None
            args.add(key, expanded)
            args.meta[key] = expanded
    meta_values = args.all_meta()
    depends: dict[int, set[int]] = {}
    for stage in stages.stages[:last + 1]:
        needs = set()
        base = _expand(lex, stage.base, meta_values, stage)
        if not base:
            raise DockerfileError(f"base name ({stage.base}) should not be blank", stage.line)
        found = stages.index_of(base)
        if found is not None and found < stage.index:
            needs.add(found)
        for command in stage.commands:
            if isinstance(command, ins.Copy) and command.source_stage:
                source = _expand(lex, command.source_stage, meta_values, command)
                index = _stage_reference(stages, source, stage.index, command)
                if index is not None:
                    needs.add(index)
        depends[stage.index] = needs
    needed: set[int] = set()
    pending = [last]
    while pending:
        index = pending.pop()
        if index not in needed:
            needed.add(index)
            pending.extend(depends[index])
    order = tuple(sorted(needed))
    steps = len(stages.meta_args) + sum(1 + len(stages.stages[i].commands) for i in order) + len(request.labels)
    return Plan(request=request, dockerfile=parsed, stages=stages, needed=order, steps=steps, tags=tags,
                meta={k: v for k, v in meta_values.items()})


def _tag(tag: str) -> Reference:
    try:
        return parse_tag(tag)
    except InvalidArgument as e:
        raise InvalidArgument(f"invalid tag {tag!r}: {e}") from None


def _expand(lex: Lex, word: str, env: Mapping[str, str], where: ins.Instruction) -> str:
    try:
        return lex.process_word(word, env)
    except ExpansionError as e:
        raise DockerfileError(str(e), where.line) from None


def _stage_reference(stages: ins.Stages, source: str, current: int, where: ins.Instruction) -> int | None:
    """
    The stage COPY --from=C{source} names (an earlier stage's name or
    index), None for an image.
    """
    index = stages.index_of(source)
    if index is not None and index < current:
        return index
    if source.isdigit():
        number = int(source)
        if number == current:
            raise DockerfileError(f"invalid from flag value {source}: refers to current build stage", where.line)
        if number > current:
            raise DockerfileError(f"invalid from flag value {source}: index out of bounds", where.line)
        return number
    return None


# ---------------------------------------------------------------- building


class _State:
    """A stage being built: its image, the config it has so far, its args."""

    def __init__(self, stage: ins.Stage, image: BuildImage, args: _Args) -> None:
        self.stage = stage
        self.image = image
        config = copy.deepcopy(dict(image.run_config))
        env = list(config.get("Env") or [])
        if not any(e.partition("=")[0] == "PATH" for e in env):
            env.append(DEFAULT_PATH)
        config["Env"] = env
        self.config: dict[str, Any] = config
        self.args = args
        self.maintainer = ""
        self.cmd_set = False
        self.busted = False

    @property
    def shell(self) -> list[str]:
        return list(self.config.get("Shell") or DEFAULT_SHELL)

    @property
    def env(self) -> list[str]:
        return list(self.config.get("Env") or [])

    def expansion_env(self) -> dict[str, str]:
        env = self.env
        return {**_env_map(self.args.not_in(env)), **_env_map(env)}


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    if value is None or value == {} or value == "":
        config.pop(key, None)
    else:
        config[key] = value


def go_list(values: Sequence[str]) -> str:
    """A string list as Go's C{%q} prints it: C{["a" "b"]}."""
    return "[" + " ".join(go_quote(v) for v in values) + "]"


class Builder:
    """
    Runs builds over a L{BuildBackend}, with a L{BuildCache}. C{workdir}
    holds each build's temporary files (its context, RUN here-documents);
    C{threads} is the pool for file work.
    """

    _log = Logger()

    def __init__(self, reactor: IEngineReactor, backend: BuildBackend, cache: BuildCache, workdir: Path, platform: str,
                 threads: ThreadPool | None = None) -> None:
        self._reactor = reactor
        self.backend = backend
        self.cache = cache
        self.workdir = workdir
        self.platform = platform
        self._threads = threads

    def _in_thread(self, fn: Callable[..., _T], *args: object) -> Deferred[_T]:
        pool = self._threads or self._reactor.getThreadPool()
        return deferToThreadPool(self._reactor, pool, fn, *args)

    def scratch_dir(self) -> str:
        """A new private directory for one build's files (the caller removes it)."""
        return tempfile.mkdtemp(prefix="build-", dir=self.workdir)

    def build(self, plan: Plan, context: ContextArchive, output: BuildOutput, scratch: str,
              fetch: Fetch | None = None) -> Deferred[BuildResult]:
        """
        Build C{plan} from C{context}, reporting to C{output}; fires with
        the image (tagged). C{fetch} brings files of a context that came as
        a manifest when a step needs their content. Cancelling stops the
        build at its next step, after the one in progress is undone.
        """
        run = _Run(self, plan, context, output, scratch, fetch)
        guard = Guard(run.cancel)
        run.guard = guard
        return guard.run(run.build())


class _Run:
    """One build in progress."""

    _log = Logger()

    def __init__(self, builder: Builder, plan: Plan, context: ContextArchive, output: BuildOutput,
                 scratch: str, fetch: Fetch | None = None) -> None:
        self.builder = builder
        self.fetch = fetch
        self.backend = builder.backend
        self.cache = builder.cache
        self.plan = plan
        self.request = plan.request
        self.context = context
        self.output = output
        self.scratch = scratch
        self.lex = Lex(plan.dockerfile.escape)
        self.guard = Guard()
        self.step = 0
        self.results: dict[int, tuple[BuildImage, dict[str, Any]]] = {}
        self._running: Container | None = None
        self._hashes: dict[tuple[str, ...], str] = {}

    def cancel(self) -> None:
        running = self._running
        if running is not None:
            self.backend.kill(running).addErrback(
                lambda f: self._log.failure("could not stop build container {id}", f, id=running.id))

    def line(self, text: str) -> None:
        self.output.line(text)

    def next_step(self, what: object) -> None:
        self.guard.check()
        self.step += 1
        self.line(f"Step {self.step}/{self.plan.steps} : {what}")

    async def build(self) -> BuildResult:
        plan = self.plan
        syntax = plan.dockerfile.directive("syntax")
        if syntax:
            self.line(f"# syntax={syntax} ignored: Ross builds every Dockerfile with its own frontend")
        for warning in plan.dockerfile.warnings:
            self.line(f"[WARNING]: {warning}")
        if plan.dockerfile.warnings:
            self.line("[WARNING]: Empty continuation lines will become errors in a future release.")
        args = _Args(self.request.build_args)
        for meta in plan.stages.meta_args:
            self.next_step(meta)
            env = args.all_allowed()
            for key, value in meta.pairs:
                key = _expand(self.lex, key, env, meta)
                expanded = _expand(self.lex, value, env, meta) if value is not None else None
                args.add(key, expanded)
                args.meta[key] = expanded
        state: _State | None = None
        last = plan.needed[-1]
        for index in plan.needed:
            stage = plan.stages.stages[index]
            state = await self.build_stage(stage, args.clone_for_stage(), labels=index == last)
            args.referenced |= state.args.referenced
            self.results[index] = (state.image, state.config)
        assert state is not None
        unused = sorted(k for k in self.request.build_args if k not in args.referenced and k not in PROXY_ARGS)
        if unused:
            self.line(f"[Warning] One or more build-args [{' '.join(unused)}] were not consumed")
        image = state.image
        if not image.id:
            raise InvalidArgument("No image was generated. Is your Dockerfile empty?")
        self.line(f"Successfully built {image.short_id}")
        for ref in plan.tags:
            self.guard.check()
            await self.backend.tag(image, str(ref))
            self.line(f"Successfully tagged {ref.familiar()}")
        return BuildResult(image_id=image.id, tags=tuple(str(ref) for ref in plan.tags))

    # -- stages

    async def base_image(self, stage: ins.Stage) -> BuildImage:
        name = _expand(self.lex, stage.base, self.plan.meta, stage)
        if name == "scratch":
            return SCRATCH
        index = self.plan.stages.index_of(name)
        if index is not None and index < stage.index:
            return self.results[index][0]
        try:
            return await self.backend.image(name, pull=self.request.pull)
        except NotFound as e:
            raise NotFound(f"{e} (FROM {name}, line {stage.line})") from None

    async def build_stage(self, stage: ins.Stage, args: _Args, labels: bool) -> _State:
        self.next_step(stage)
        image = await self.base_image(stage)
        state = _State(stage, image, args)
        self.line(f" ---> {image.short_id}")
        triggers = list(state.config.pop("OnBuild", None) or [])
        if triggers:
            self.line(f"# Executing {len(triggers)} build trigger{'s' if len(triggers) > 1 else ''}")
            for trigger in triggers:
                try:
                    nodes = parse(trigger).nodes
                    if len(nodes) != 1:
                        raise InvalidArgument("onbuild trigger should be a single expression")
                    command = ins.parse_instruction(nodes[0])
                except DockerfileError as e:
                    raise InvalidArgument(f"invalid ONBUILD trigger {trigger!r} of {stage.base}: {e.problem}") from None
                except Exception as e:
                    raise InvalidArgument(f"invalid ONBUILD trigger {trigger!r} of {stage.base}: {e}") from None
                if isinstance(command, ins.Stage):
                    raise InvalidArgument(f"FROM isn't allowed as an ONBUILD trigger ({stage.base})")
                await self.dispatch(state, command)
        commands: list[ins.Command] = list(stage.commands)
        if labels:
            for key in sorted(self.request.labels):
                commands.append(ins.Label(pairs=(ins.KeyValue(key, self.request.labels[key]),), keyword="LABEL",
                                          line=0, end_line=0, code=f"LABEL {key}={self.request.labels[key]}"))
        for command in commands:
            self.next_step(command)
            await self.dispatch(state, command, expand=command.line > 0 or not labels)
            self.line(f" ---> {state.image.short_id}")
        return state

    # -- steps

    async def dispatch(self, state: _State, command: ins.Command, expand: bool = True) -> None:
        env = state.expansion_env()

        def word(text: str) -> str:
            return _expand(self.lex, text, env, command) if expand else text

        if isinstance(command, ins.Env):
            values = state.env
            parts = []
            for pair in command.pairs:
                key, value = word(pair.key), word(pair.value)
                parts.append(f"{key}={value}")
                for i, entry in enumerate(values):
                    if entry.partition("=")[0] == key:
                        values[i] = f"{key}={value}"
                        break
                else:
                    values.append(f"{key}={value}")
            state.config["Env"] = values
            await self.commit_config(state, "ENV " + " ".join(parts))
        elif isinstance(command, ins.Label):
            labels = dict(state.config.get("Labels") or {})
            parts = []
            for pair in command.pairs:
                key, value = word(pair.key), word(pair.value)
                labels[key] = value
                parts.append(f"{key}={value}")
            state.config["Labels"] = labels
            await self.commit_config(state, "LABEL " + " ".join(parts))
        elif isinstance(command, ins.Maintainer):
            state.maintainer = command.name
            await self.commit_config(state, "MAINTAINER " + command.name)
        elif isinstance(command, ins.Arg):
            parts = []
            for name, default in command.pairs:
                name = word(name)
                expanded = word(default) if default is not None else None
                state.args.add(name, expanded)
                parts.append(name if expanded is None else f"{name}={expanded}")
            await self.commit_config(state, "ARG " + " ".join(parts))
        elif isinstance(command, ins.Workdir):
            await self.workdir(state, word(command.path))
        elif isinstance(command, ins.Run):
            await self.run(state, command)
        elif isinstance(command, ins.Cmd):
            cmd = state.shell + list(command.args) if command.shell_form else list(command.args)
            state.config["Cmd"] = cmd
            if command.args:
                state.cmd_set = True
            await self.commit_config(state, f"CMD {go_list(cmd)}")
        elif isinstance(command, ins.Entrypoint):
            entrypoint: list[str] | None = None
            if command.args:
                entrypoint = state.shell + list(command.args) if command.shell_form else list(command.args)
            _set(state.config, "Entrypoint", entrypoint)
            if not state.cmd_set:
                state.config.pop("Cmd", None)
            await self.commit_config(state, f"ENTRYPOINT {go_list(entrypoint or [])}")
        elif isinstance(command, ins.Healthcheck):
            await self.healthcheck(state, command)
        elif isinstance(command, ins.Expose):
            ports = []
            for port in command.ports:
                try:
                    ports += self.lex.process_words(port, env)
                except ExpansionError as e:
                    raise DockerfileError(str(e), command.line) from None
            exposed = dict(state.config.get("ExposedPorts") or {})
            for port in ports:
                for spec in _port_specs(port, command):
                    exposed[spec] = {}
            state.config["ExposedPorts"] = exposed
            await self.commit_config(state, "EXPOSE " + " ".join(ports))
        elif isinstance(command, ins.User):
            state.config["User"] = word(command.user)
            await self.commit_config(state, f"USER {state.config['User']}")
        elif isinstance(command, ins.Volume):
            volumes = dict(state.config.get("Volumes") or {})
            paths = [word(p) for p in command.paths]
            for path in paths:
                if not path:
                    raise DockerfileError("VOLUME specified can not be an empty string", command.line)
                volumes[path] = {}
            state.config["Volumes"] = volumes
            await self.commit_config(state, f"VOLUME [{' '.join(paths)}]")
        elif isinstance(command, ins.StopSignal):
            signal = word(command.signal)
            try:
                signal_number(signal)
            except InvalidArgument:
                raise DockerfileError(f"Invalid signal: {signal}", command.line) from None
            state.config["StopSignal"] = signal
            await self.commit_config(state, f"STOPSIGNAL {signal}")
        elif isinstance(command, ins.Shell):
            state.config["Shell"] = list(command.shell)
            await self.commit_config(state, f"SHELL [{' '.join(command.shell)}]")
        elif isinstance(command, ins.Onbuild):
            state.config["OnBuild"] = list(state.config.get("OnBuild") or []) + [command.expression]
            await self.commit_config(state, "ONBUILD " + command.expression)
        elif isinstance(command, ins.Copy):
            await self.copy(state, command, word)

    async def probe(self, state: _State, key: str) -> bool:
        """Take the cached image for C{key} when there is one (and the cache was not busted)."""
        if self.request.no_cache or state.busted:
            return False
        cached = self.cache.get(key)
        if cached is not None:
            try:
                image = await self.backend.image(cached)
            except NotFound:
                await self.cache.forget([key])
            else:
                self.line(" ---> Using cache")
                state.image = image
                return True
        state.busted = True
        return False

    def key(self, state: _State, command: list[str]) -> str:
        return step_key(state.image.id, state.config, command, state.maintainer, self.builder.platform)

    async def commit(self, state: _State, key: str, root: Root | None, created_by: str) -> None:
        parent = state.image
        image = await self.backend.commit(root, parent, state.config, created_by, state.maintainer)
        await self.cache.put(key, image.id, parent.id)
        state.image = image

    async def commit_config(self, state: _State, comment: str) -> None:
        """A step that changes only the config: docker's C{#(nop)} commit."""
        command = state.shell + ["#(nop) ", comment]
        key = self.key(state, command)
        if await self.probe(state, key):
            return
        self.guard.check()
        await self.commit(state, key, None, " ".join(command))

    async def workdir(self, state: _State, path: str) -> None:
        current = state.config.get("WorkingDir") or "/"
        workdir = posixpath.normpath(posixpath.join(current, path))
        if workdir.startswith("//"):
            workdir = "/" + workdir.lstrip("/")
        state.config["WorkingDir"] = workdir
        command = state.shell + [f"#(nop) WORKDIR {workdir}"]
        key = self.key(state, command)
        if await self.probe(state, key):
            return
        self.guard.check()
        root = await self.backend.workspace(state.image)
        try:
            await self.builder._in_thread(_make_workdir, root.upper, root.lowers, workdir,
                                          int(self.builder._reactor.seconds() * 1e9))
            self.guard.check()
            await self.commit(state, key, root, " ".join(command))
        finally:
            await self.backend.release(root)

    async def healthcheck(self, state: _State, command: ins.Healthcheck) -> None:
        old = state.config.get("Healthcheck") or {}
        old_test = list(old.get("Test") or [])
        if old_test and old_test[0] != "NONE":
            self.line(f"Note: overriding previous HEALTHCHECK: [{' '.join(old_test)}]")
        health: dict[str, Any] = {"Test": list(command.test)}
        for key, value in (("Interval", command.interval_ns), ("Timeout", command.timeout_ns),
                           ("StartPeriod", command.start_period_ns), ("StartInterval", command.start_interval_ns),
                           ("Retries", command.retries)):
            if value:
                health[key] = value
        state.config["Healthcheck"] = health
        described = " ".join(f"{k}:{v}" for k, v in health.items() if k != "Test")
        await self.commit_config(state, f"HEALTHCHECK &{{Test:[{' '.join(command.test)}] {described}}}".rstrip())

    # -- RUN

    def run_command(self, state: _State, command: ins.Run) -> tuple[list[str], tuple[tuple[str, str], ...]]:
        """The container's command for C{command}, and the files it needs mounted."""
        args = list(command.args)
        binds: tuple[tuple[str, str], ...] = ()
        if command.heredocs:
            first = command.heredocs[0]
            if parse_heredoc(args[0]) is not None:
                data = chomp(first.content) if first.chomp else first.content
                if data.startswith("#!"):
                    directory = os.path.join(self.scratch, f"pipes-{self.step}")
                    os.makedirs(directory, exist_ok=True)
                    script = os.path.join(directory, first.name.replace("/", "_") or "script")
                    with open(script, "w") as f:
                        f.write(data)
                    os.chmod(script, 0o755)
                    target = "/dev/pipes/" + os.path.basename(script)
                    binds = ((script, target),)
                    args = [target]
                else:
                    args = [data]
            else:
                text = args[0]
                for heredoc in command.heredocs:
                    text += "\n" + heredoc.content + heredoc.name
                args = [text]
        if command.shell_form:
            args = state.shell + args
        return args, binds

    async def run(self, state: _State, command: ins.Run) -> None:
        cmd, binds = self.run_command(state, command)
        env = state.env
        build_args = state.args.not_in(env)
        saved = list(cmd)
        if build_args:
            recorded = [a for a in build_args if state.args.recorded(a.partition("=")[0])]
            saved = [f"|{len(recorded)}", *recorded, *cmd]
        key = self.key(state, saved)
        if await self.probe(state, key):
            return
        self.guard.check()
        network = command.network if command.network != "default" else self.request.network
        spec = RunSpec(args=tuple(cmd), env=tuple(env + build_args), user=str(state.config.get("User") or ""),
                       workdir=str(state.config.get("WorkingDir") or ""), network=network, binds=binds)
        container = await self.backend.create(state.image, spec)
        try:
            self.line(f" ---> Running in {container.id[:12]}")
            self._running = container
            try:
                self.guard.check()
                code = await self.backend.start(container, self.output)
            finally:
                self._running = None
            self.guard.check()
            if code != 0:
                raise StepFailed(f"The command '{' '.join(cmd)}' returned a non-zero code: {code}", code)
            await self.commit(state, key, container, " ".join(saved))
        finally:
            await self.backend.release(container)
        self.line(f" ---> Removed intermediate container {container.id[:12]}")

    # -- COPY and ADD

    async def copy(self, state: _State, command: ins.Copy, word: Callable[[str], str]) -> None:
        what = "ADD" if command.add else "COPY"
        sources = [word(s) for s in command.sources]
        dest = word(command.dest)
        chown = word(command.chown)
        chmod = word(command.chmod)
        mode = _chmod(chmod, command) if chmod else None
        view_root: Root | None = None
        source_image: BuildImage | None = None
        if command.source_stage:
            source = _expand(self.lex, command.source_stage, self.plan.meta, command)
            index = _stage_reference(self.plan.stages, source, state.stage.index, command)
            if index is not None:
                source_image = self.results[index][0]
            else:
                source_image = await self.base_image_named(source, command)
        for source in sources:
            if _URL.match(source):
                if command.add:
                    raise InvalidArgument(f"ADD failed: cannot fetch {source}: the Ross daemon builds offline "
                                          "(remote URLs and git sources are not supported); download the file "
                                          "into the build context and ADD it from there")
                raise InvalidArgument("COPY failed: source can't be a URL for COPY")
        try:
            tree: files.Tree
            if source_image is not None:
                if not source_image.id:
                    tree = files.LayersView([])
                else:
                    view_root = await self.backend.view(source_image)
                    tree = files.LayersView([view_root.upper, *view_root.lowers])
            else:
                tree = self.context
            inline = [(doc.name, word_raw(self.lex, doc.data, state.expansion_env()) if doc.expand else doc.data)
                      for doc in command.inline]
            found = await self.builder._in_thread(
                _sources, tree, sources, command, source_image, self._hashes if source_image is None else {})
            count = len(found) + len(inline)
            if count == 0:
                raise InvalidArgument(f"{what} failed: no source files were specified")
            if count > 1 and not dest.endswith("/"):
                raise InvalidArgument(f"When using {what} with more than one source file, "
                                      "the destination must be a directory and end with a /")
            hashes = [h for _, _, h in found] + [_data_hash(name, data) for name, data in inline]
            summary = hashes[0] if len(hashes) == 1 else _multi_hash(hashes)
            comment = f"{what} {f'--chown={chown} ' if chown else ''}{f'--chmod={chmod} ' if chmod else ''}" \
                      f"{summary} in {dest} "
            command_line = state.shell + [f"#(nop) {comment}"]
            key = self.key(state, command_line)
            if await self.probe(state, key):
                return
            self.guard.check()
            if tree is self.context:
                await self.fetch_files([real for _, real, _ in found])
            root = await self.backend.workspace(state.image)
            try:
                job = _CopyJob(tree=tree, found=found, inline=inline, dest=dest,
                               workdir=str(state.config.get("WorkingDir") or "/"), chown=chown, mode=mode,
                               preserve=source_image is not None and not chown,
                               unpack=command.add and command.unpack is not False, now_ns=time.time_ns())
                await self.builder._in_thread(_apply_copy, job, root.upper, root.lowers)
                self.guard.check()
                await self.commit(state, key, root, " ".join(command_line))
            finally:
                await self.backend.release(root)
        finally:
            if view_root is not None:
                await self.backend.release(view_root)

    async def fetch_files(self, roots: list[tuple[str, ...]]) -> None:
        """Have the content of the context's files at or below C{roots} here."""
        missing: list[str] = await self.builder._in_thread(self.context.missing, roots)
        if not missing:
            return
        if self.fetch is None:
            raise InvalidArgument(f"build context: {missing[0]} has no content")
        await self.fetch(missing)
        self.guard.check()

    async def base_image_named(self, name: str, command: ins.Instruction) -> BuildImage:
        if name == "scratch":
            return SCRATCH
        try:
            return await self.backend.image(name, pull=self.request.pull)
        except NotFound as e:
            raise NotFound(f"{e} (COPY --from={name}, line {command.line})") from None


def word_raw(lex: Lex, data: str, env: Mapping[str, str]) -> str:
    """A here-document's content with its variables expanded, quotes left alone (BuildKit's ExpandRaw)."""
    try:
        return Lex(skip_quotes=True).process_word(data, env)
    except ExpansionError as e:
        raise InvalidArgument(str(e)) from None


def _chmod(text: str, command: ins.Instruction) -> int:
    if not re.fullmatch(r"[0-7]{1,4}", text):
        raise DockerfileError(f"invalid chmod parameter {text!r}: use an octal mode such as 755", command.line)
    return int(text, 8)


def _port_specs(port: str, command: ins.Instruction) -> list[str]:
    """The ExposedPorts keys of one EXPOSE word ("80", "53/udp", "8000-8002")."""
    number, _, proto = port.rpartition(":")[2].partition("/")
    proto = (proto or "tcp").lower()
    if proto not in ("tcp", "udp", "sctp"):
        raise DockerfileError(f"invalid proto: {proto}", command.line)
    match = _PORT.match(number)
    if not match:
        raise DockerfileError(f"invalid containerPort: {number}", command.line)
    start = int(match.group(1))
    end = int(match.group(2) or start)
    if end < start or end > 65535:
        raise DockerfileError(f"invalid containerPort: {number}", command.line)
    return [f"{p}/{proto}" for p in range(start, end + 1)]


def _data_hash(name: str, data: str) -> str:
    return "file:" + hashlib.sha256(name.encode() + b"\0" + data.encode("utf-8", "surrogateescape")).hexdigest()


def _multi_hash(hashes: Sequence[str]) -> str:
    return "multi:" + hashlib.sha256(",".join(hashes).encode()).hexdigest()


def _sources(tree: files.Tree, sources: Sequence[str], command: ins.Copy, image: BuildImage | None,
             hashes: dict[tuple[str, ...], str]) -> list[tuple[str, tuple[str, ...], str]]:
    """
    (name as written, real path, checksum) of every file a COPY or ADD
    names in C{tree} (blocking): patterns expanded, a symlink named
    directly followed.
    """
    what = "ADD" if command.add else "COPY"
    found = []
    for source in sources:
        matches = files.expand_source(tree, source)
        if not matches and files.has_wildcards(source):
            continue
        for parts in matches:
            real = files.resolve(tree, parts)
            if tree.lookup(real) is None:
                missing = "/".join(parts) or "."
                if image is None:
                    raise InvalidArgument(f"{what} failed: file not found in build context or excluded by "
                                          f".dockerignore: stat {missing}: file does not exist")
                raise InvalidArgument(f"{what} failed: stat {missing}: file does not exist in {image.short_id}")
            if image is not None:
                checksum = f"image:{image.id}:/{'/'.join(real)}"
            else:
                checksum = files.content_hash(tree, real, hashes)
            found.append((parts[-1] if parts else "", real, checksum))
    return found


@attrs.frozen
class _CopyJob:
    tree: files.Tree
    found: list[tuple[str, tuple[str, ...], str]]
    inline: list[tuple[str, str]]
    dest: str
    workdir: str
    chown: str
    mode: int | None
    preserve: bool
    unpack: bool
    now_ns: int


def _apply_copy(job: _CopyJob, upper: str, lowers: tuple[str, ...]) -> None:
    """Place a COPY's files in the root C{upper} over C{lowers} (blocking)."""
    view = files.LayersView([upper, *lowers])
    dest = job.dest if job.dest.startswith("/") else posixpath.join(job.workdir, job.dest)
    as_dir = job.dest.endswith("/") or job.dest.endswith("/.") or job.dest in (".", "")
    root_owner = files.Owner(0, 0)
    owner = files.lookup_owner(view, job.chown) if job.chown else (None if job.preserve else root_owner)
    target = files.resolve(view, dest)
    placements: list[files.Placement] = []
    new_dirs: dict[tuple[str, ...], files.Owner] = {}

    def make(parts: tuple[str, ...], who: files.Owner | None) -> None:
        for missing in files.missing_dirs(view, parts):
            if missing not in new_dirs:
                new_dirs[missing] = who or root_owner

    existing = view.lookup(target)
    target_is_dir = existing is not None and existing.kind == files.DIRECTORY
    for name, real, _ in job.found:
        info = job.tree.lookup(real)
        assert info is not None
        if info.kind == files.DIRECTORY:
            make(target[:-1], root_owner)
            make(target, owner)
            placements.append(files.Placement(job.tree, real, info, target, owner, job.mode))
        elif job.unpack and info.kind == files.FILE and _is_archive(job.tree, info):
            make(target, root_owner)
            placements.append(files.Placement(job.tree, real, info, target, owner, job.mode, unpack=True))
        else:
            place = target + (name,) if (as_dir or target_is_dir) else target
            make(place[:-1], owner)
            placements.append(files.Placement(job.tree, real, info, place, owner, job.mode))
    for name, data in job.inline:
        place = target + (name,) if (as_dir or target_is_dir) else target
        make(place[:-1], owner)
        encoded = data.encode("utf-8", "surrogateescape")
        inline = files.InlineTree(encoded, job.now_ns)
        placements.append(files.Placement(inline, (), inline.info, place, owner or root_owner, job.mode))
    tar = files.copy_tar(placements, sorted(new_dirs.items()), job.now_ns, _unpacked)
    apply_files(cast(IO[bytes], files.TarStream(tar)), upper, lowers)


def _make_workdir(upper: str, lowers: tuple[str, ...], workdir: str, now_ns: int) -> None:
    view = files.LayersView([upper, *lowers])
    target = files.resolve(view, workdir)
    missing = files.missing_dirs(view, target)
    if missing:
        owner = files.Owner(0, 0)
        tar = files.copy_tar([], [(parts, owner) for parts in missing], now_ns)
        apply_files(cast(IO[bytes], files.TarStream(tar)), upper, lowers)


def _is_archive(tree: files.Tree, info: files.FileInfo) -> bool:
    """Whether a file is a tar (plain or compressed), which ADD extracts."""
    return files.archive_kind(b"".join(_head(tree, info, 1 << 16))) is not None


def _head(tree: files.Tree, info: files.FileInfo, size: int) -> Iterator[bytes]:
    taken = 0
    for chunk in tree.chunks(info):
        yield chunk
        taken += len(chunk)
        if taken >= size:
            return


def _unpacked(placement: files.Placement) -> Iterator[bytes]:
    """The entries of an archive ADD extracts, renamed below the destination."""
    return files.archive_entries(placement.tree, placement.info, placement.dest)
