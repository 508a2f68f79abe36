# -*- test-case-name: ross.test.test_build_parser -*-
"""
What a Dockerfile's instructions mean: each L{ross.engine.build.parser.Node}
checked (flags, argument counts, names) and turned into a typed
instruction, and the instructions grouped into build stages.

Everything here happens before anything is built: a Dockerfile that
passes L{parse_stages} only fails later on what depends on the build
(an image that does not exist, a file missing from the context, a
command that fails). Errors are L{DockerfileError}s with the line, worded
as BuildKit words them.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Callable, Sequence, Union

import attrs

from ross.engine.build.parser import Dockerfile, DockerfileError, Heredoc, Node, chomp, parse_heredoc, _Problem
from ross.engine.build.shell import go_quote

INSTRUCTIONS = ("ADD", "ARG", "CMD", "COPY", "ENTRYPOINT", "ENV", "EXPOSE", "FROM", "HEALTHCHECK", "LABEL",
                "MAINTAINER", "ONBUILD", "RUN", "SHELL", "STOPSIGNAL", "USER", "VOLUME", "WORKDIR")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")
#: RUN flags BuildKit has and this builder does not.
_UNSUPPORTED_RUN_FLAGS = ("mount", "security", "device")
RUN_NETWORKS = ("default", "none", "host")


@attrs.frozen
class KeyValue:
    """An ENV or LABEL pair; C{value} still unexpanded until the build expands it."""

    key: str
    value: str


@attrs.frozen
class Inline:
    """A COPY source written in the Dockerfile: a here-document."""

    name: str
    data: str
    expand: bool


@attrs.frozen(kw_only=True)
class Instruction:
    """
    What every instruction has: its C{keyword} (upper case), the lines it
    spans and its C{code} (the text, continuations joined).
    """

    keyword: str
    line: int
    end_line: int
    code: str

    def __str__(self) -> str:
        return self.code


@attrs.frozen(kw_only=True)
class Env(Instruction):
    pairs: tuple[KeyValue, ...]


@attrs.frozen(kw_only=True)
class Label(Instruction):
    pairs: tuple[KeyValue, ...]


@attrs.frozen(kw_only=True)
class Maintainer(Instruction):
    name: str


@attrs.frozen(kw_only=True)
class Copy(Instruction):
    """
    COPY, or ADD when C{add}: C{sources} (context paths, globs, and for
    ADD URLs) and C{inline} files, to C{dest}. C{source_stage} is COPY
    --from; C{unpack} is ADD's archive extraction (None: the default).
    """

    add: bool
    sources: tuple[str, ...]
    inline: tuple[Inline, ...]
    dest: str
    chown: str = ""
    chmod: str = ""
    source_stage: str = ""
    link: bool = False
    unpack: bool | None = None


@attrs.frozen(kw_only=True)
class Onbuild(Instruction):
    """C{expression}: the trigger's text, here-documents included."""

    expression: str


@attrs.frozen(kw_only=True)
class Workdir(Instruction):
    path: str


@attrs.frozen(kw_only=True)
class CommandLine(Instruction):
    """
    A command: C{args} is the JSON array (exec form), or one string to
    give the shell when C{shell_form}; C{heredocs} as written after it.
    """

    args: tuple[str, ...]
    shell_form: bool
    heredocs: tuple[Heredoc, ...] = ()


@attrs.frozen(kw_only=True)
class Run(CommandLine):
    """C{network}: RUN --network ("default", "none" or "host")."""

    network: str = "default"


@attrs.frozen(kw_only=True)
class Cmd(CommandLine):
    pass


@attrs.frozen(kw_only=True)
class Entrypoint(CommandLine):
    pass


@attrs.frozen(kw_only=True)
class Healthcheck(Instruction):
    """C{test} as the image config holds it (["NONE"], ["CMD", ...], ["CMD-SHELL", "..."])."""

    test: tuple[str, ...]
    interval_ns: int = 0
    timeout_ns: int = 0
    start_period_ns: int = 0
    start_interval_ns: int = 0
    retries: int = 0


@attrs.frozen(kw_only=True)
class Expose(Instruction):
    ports: tuple[str, ...]


@attrs.frozen(kw_only=True)
class User(Instruction):
    user: str


@attrs.frozen(kw_only=True)
class Volume(Instruction):
    paths: tuple[str, ...]


@attrs.frozen(kw_only=True)
class StopSignal(Instruction):
    signal: str


@attrs.frozen(kw_only=True)
class Arg(Instruction):
    """C{pairs}: name and default (None: declared without one)."""

    pairs: tuple[tuple[str, str | None], ...]


@attrs.frozen(kw_only=True)
class Shell(Instruction):
    shell: tuple[str, ...]


Command = Union[Env, Label, Maintainer, Copy, Onbuild, Workdir, Run, Cmd, Entrypoint, Healthcheck, Expose, User,
                Volume, StopSignal, Arg, Shell]


@attrs.frozen(kw_only=True)
class Stage(Instruction):
    """
    A FROM and the instructions up to the next one. C{name} is the AS
    name in lower case ("" when none), C{index} the stage's position.
    """

    base: str
    name: str
    platform: str
    index: int
    commands: tuple[Command, ...] = ()


@attrs.frozen
class Stages:
    """The stages of a Dockerfile and the ARGs before its first FROM."""

    stages: tuple[Stage, ...]
    meta_args: tuple[Arg, ...]

    def index_of(self, name: str) -> int | None:
        """The index of the stage named C{name} (case-insensitive), if any."""
        for stage in self.stages:
            if stage.name and stage.name == name.lower():
                return stage.index
        return None


# ---------------------------------------------------------------- flags


class _Flags:
    """
    An instruction's C{--name=value} flags, declared by the instruction
    before they are parsed (BuildKit's BFlags).
    """

    def __init__(self, args: Sequence[str]) -> None:
        self._args = args
        self._kinds: dict[str, str] = {}
        self.values: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        self.used: list[str] = []

    def boolean(self, name: str) -> None:
        self._kinds[name] = "bool"
        self.values[name] = "false"

    def string(self, name: str, default: str = "") -> None:
        self._kinds[name] = "string"
        self.values[name] = default

    def strings(self, name: str) -> None:
        self._kinds[name] = "strings"
        self.lists[name] = []

    def parse(self) -> None:
        for arg in self._args:
            if arg == "--":
                return
            if not arg.startswith("--"):
                raise _Problem(f"arg should start with -- : {arg}")
            flag, has_value, value = arg.partition("=")
            name = flag[2:]
            kind = self._kinds.get(name)
            if kind is None:
                raise _Problem(f"unknown flag: {flag}" + _suggestion(name, list(self._kinds), prefix="--"))
            if name in self.used and kind != "strings":
                raise _Problem(f"duplicate flag specified: {flag}")
            self.used.append(name)
            if kind == "bool":
                if has_value and not value:
                    raise _Problem(f"missing a value on flag: {flag}")
                if value.lower() not in ("true", "false", ""):
                    raise _Problem(f"expecting boolean value for flag {flag}, not: {value}")
                self.values[name] = "false" if value.lower() == "false" else "true"
            elif not has_value:
                raise _Problem(f"missing a value on flag: {flag}")
            elif kind == "string":
                self.values[name] = value
            else:
                self.lists[name].append(value)

    def flag(self, name: str) -> bool:
        return self.values[name] == "true"


def _suggestion(word: str, candidates: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word.lower(), [c.lower() for c in candidates], n=1, cutoff=0.6)
    if not close:
        return ""
    original = next(c for c in candidates if c.lower() == close[0])
    return f" (did you mean {prefix}{original}?)"


# ---------------------------------------------------------------- instructions


def parse_stages(dockerfile: Dockerfile) -> Stages:
    """
    The stages of C{dockerfile}, every instruction checked; a
    L{DockerfileError} for the first one that is wrong.
    """
    stages: list[Stage] = []
    commands: list[Command] = []
    meta_args: list[Arg] = []
    for node in dockerfile.nodes:
        try:
            parsed = parse_instruction(node)
        except _Problem as e:
            raise DockerfileError(str(e), node.start_line) from None
        if isinstance(parsed, Stage):
            if stages:
                stages[-1] = attrs.evolve(stages[-1], commands=tuple(commands))
            if parsed.name and any(s.name == parsed.name for s in stages):
                raise DockerfileError(f"duplicate stage name {go_quote(parsed.name)}", node.start_line)
            stages.append(attrs.evolve(parsed, index=len(stages)))
            commands = []
        elif not stages and isinstance(parsed, Arg):
            meta_args.append(parsed)
        elif not stages:
            raise DockerfileError("no build stage in current context", node.start_line)
        else:
            commands.append(parsed)
    if stages:
        stages[-1] = attrs.evolve(stages[-1], commands=tuple(commands))
    else:
        raise DockerfileError("no build stage in current context: the Dockerfile has no FROM", 0)
    return Stages(tuple(stages), tuple(meta_args))


def parse_instruction(node: Node) -> Stage | Command:
    """
    The instruction C{node} is; L{_Problem} (no line yet) when it is wrong.
    """
    reader = _INSTRUCTIONS.get(node.name)
    if reader is None:
        raise _Problem(f"unknown instruction: {node.keyword}" + _suggestion(node.keyword, INSTRUCTIONS))
    return reader(node, _Flags(node.flags))


def _common(node: Node) -> dict[str, Any]:
    return {"keyword": node.name.upper(), "line": node.start_line, "end_line": node.end_line,
            "code": node.original.strip()}


def _at_least_one(node: Node, what: str) -> None:
    if not node.args:
        raise _Problem(f"{what} requires at least one argument")


def _exactly_one(node: Node, what: str) -> str:
    if len(node.args) != 1:
        raise _Problem(f"{what} requires exactly one argument")
    return node.args[0]


def _pairs(node: Node, what: str) -> tuple[KeyValue, ...]:
    _at_least_one(node, what)
    args = node.args
    if len(args) % 3:
        raise _Problem(f"Bad input to {what}, too many arguments")
    pairs = []
    for i in range(0, len(args), 3):
        if not args[i]:
            raise _Problem(f"{what} names can not be blank")
        pairs.append(KeyValue(args[i], args[i + 1]))
    return tuple(pairs)


def _env(node: Node, flags: _Flags) -> Env:
    flags.parse()
    return Env(pairs=_pairs(node, "ENV"), **_common(node))


def _label(node: Node, flags: _Flags) -> Label:
    flags.parse()
    return Label(pairs=_pairs(node, "LABEL"), **_common(node))


def _maintainer(node: Node, flags: _Flags) -> Maintainer:
    name = _exactly_one(node, "MAINTAINER")
    flags.parse()
    return Maintainer(name=name, **_common(node))


def _sources_and_dest(node: Node, what: str) -> tuple[tuple[str, ...], tuple[Inline, ...], str]:
    if len(node.args) < 2:
        raise _Problem(f"{what} requires at least two arguments, but only one was provided. "
                       "Destination could not be determined")
    *sources, dest = node.args
    if parse_heredoc(dest) is not None:
        raise _Problem(f"{what} cannot accept a heredoc as a destination")
    docs = {h.name: h for h in node.heredocs}
    paths: list[str] = []
    inline: list[Inline] = []
    for source in sources:
        heredoc = parse_heredoc(source)
        if heredoc is None:
            paths.append(source)
            continue
        content = docs[heredoc.name].content if heredoc.name in docs else ""
        if heredoc.chomp:
            content = chomp(content)
        inline.append(Inline(name=heredoc.name, data=content, expand=heredoc.expand))
    return tuple(paths), tuple(inline), dest


def _copy(node: Node, flags: _Flags) -> Copy:
    if len(node.args) < 2:
        _sources_and_dest(node, "COPY")
    for name in ("chown", "from", "chmod"):
        flags.string(name)
    flags.boolean("link")
    flags.boolean("parents")
    flags.strings("exclude")
    flags.parse()
    if flags.flag("parents"):
        raise _Problem("COPY --parents is not supported by Ross's builder")
    _no_exclude(flags, "COPY")
    sources, inline, dest = _sources_and_dest(node, "COPY")
    return Copy(add=False, sources=sources, inline=inline, dest=dest, chown=flags.values["chown"],
                chmod=flags.values["chmod"], source_stage=flags.values["from"], link=flags.flag("link"),
                **_common(node))


def _add(node: Node, flags: _Flags) -> Copy:
    if len(node.args) < 2:
        _sources_and_dest(node, "ADD")
    for name in ("chown", "chmod", "checksum"):
        flags.string(name)
    for name in ("link", "keep-git-dir", "unpack"):
        flags.boolean(name)
    flags.strings("exclude")
    flags.parse()
    _no_exclude(flags, "ADD")
    if flags.values["checksum"]:
        # A checksum is for an HTTP(S) source, which this builder does not
        # fetch: taken and never checked, it would promise what it is not.
        raise _Problem("ADD --checksum is not supported by Ross's builder: it is for HTTP(S) sources, "
                       "and Ross's builder adds local files only")
    sources, inline, dest = _sources_and_dest(node, "ADD")
    unpack = flags.flag("unpack") if "unpack" in flags.used else None
    return Copy(add=True, sources=sources, inline=inline, dest=dest, chown=flags.values["chown"],
                chmod=flags.values["chmod"], link=flags.flag("link"), unpack=unpack, **_common(node))


def _no_exclude(flags: _Flags, instruction: str) -> None:
    """
    Refuse --exclude (BuildKit's labs syntax), which this builder does
    not apply: copied anyway, the excluded files would reach the image.
    """
    if flags.lists["exclude"]:
        raise _Problem(f"{instruction} --exclude is not supported by Ross's builder")


def _from(node: Node, flags: _Flags) -> Stage:
    args = node.args
    name = ""
    if len(args) == 3 and args[1].lower() == "as":
        name = args[2].lower()
        if not _STAGE_NAME.match(name):
            raise _Problem(f"invalid name for build stage: {go_quote(args[2])}, "
                           "name can't start with a number or contain symbols")
    elif len(args) != 1:
        raise _Problem("FROM requires either one or three arguments")
    flags.string("platform")
    flags.parse()
    return Stage(base=args[0], name=name, platform=flags.values["platform"], index=0,
                 **_common(node))


def _onbuild(node: Node, flags: _Flags) -> Onbuild:
    if node.child is None:
        raise _Problem("ONBUILD requires at least one argument")
    flags.parse()
    trigger = node.child.keyword.upper()
    if trigger == "ONBUILD":
        raise _Problem("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
    if trigger in ("MAINTAINER", "FROM"):
        raise _Problem(f"{trigger} isn't allowed as an ONBUILD trigger")
    expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original)
    for heredoc in node.child.heredocs:
        expression += "\n" + heredoc.content + heredoc.name
    return Onbuild(expression=expression, **_common(node))


def _workdir(node: Node, flags: _Flags) -> Workdir:
    path = _exactly_one(node, "WORKDIR")
    flags.parse()
    return Workdir(path=path, **_common(node))


def _command_args(node: Node) -> tuple[str, ...]:
    if not node.args:
        return ()
    if node.json:
        return node.args
    return (" ".join(node.args),)


def _run(node: Node, flags: _Flags) -> Run:
    flags.string("network", "default")
    for name in _UNSUPPORTED_RUN_FLAGS:
        flags.strings(name)
    flags.parse()
    for name in _UNSUPPORTED_RUN_FLAGS:
        if flags.lists[name]:
            raise _Problem(f"RUN --{name} is not supported by Ross's builder")
    network = flags.values["network"]
    if network not in RUN_NETWORKS:
        raise _Problem(f"unsupported network mode {go_quote(network)}: use default, none or host")
    args = _command_args(node)
    if node.heredocs and (len(args) != 1 or node.json):
        raise _Problem(f"parsing produced an invalid run command: {list(args)}")
    return Run(args=args, shell_form=not node.json, heredocs=node.heredocs, network=network,
               **_common(node))


def _cmd(node: Node, flags: _Flags) -> Cmd:
    flags.parse()
    return Cmd(args=_command_args(node), shell_form=not node.json, **_common(node))


def _entrypoint(node: Node, flags: _Flags) -> Entrypoint:
    flags.parse()
    return Entrypoint(args=_command_args(node), shell_form=not node.json, **_common(node))


def parse_duration(text: str) -> int:
    """
    Nanoseconds of a Go duration ("1m30s", "300ms", "1.5h"); L{_Problem}
    when it is not one.
    """
    units = {"ns": 1, "us": 1_000, "µs": 1_000, "μs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
             "m": 60_000_000_000, "h": 3_600_000_000_000}
    rest = text
    sign = 1
    if rest[:1] in ("+", "-"):
        sign = -1 if rest[0] == "-" else 1
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise _Problem(f"time: invalid duration {go_quote(text)}")
    total = 0.0
    for number, unit in re.findall(r"(\d+(?:\.\d*)?|\.\d+)([a-zµμ]*)", rest):
        if not unit:
            raise _Problem(f"time: missing unit in duration {go_quote(text)}")
        if unit not in units:
            raise _Problem(f"time: unknown unit {go_quote(unit)} in duration {go_quote(text)}")
        total += float(number) * units[unit]
    if re.sub(r"(\d+(?:\.\d*)?|\.\d+)([a-zµμ]*)", "", rest):
        raise _Problem(f"time: invalid duration {go_quote(text)}")
    return sign * int(total)


def _interval(flags: _Flags, name: str) -> int:
    value = flags.values[name]
    if not value:
        return 0
    duration = parse_duration(value)
    if duration == 0:
        return 0
    if duration < 1_000_000:
        raise _Problem(f"Interval {go_quote(name)} cannot be less than 1ms")
    return duration


def _healthcheck(node: Node, flags: _Flags) -> Healthcheck:
    _at_least_one(node, "HEALTHCHECK")
    kind = node.args[0].upper()
    args = node.args[1:]
    if kind == "NONE":
        if args:
            raise _Problem("HEALTHCHECK NONE takes no arguments")
        return Healthcheck(test=("NONE",), **_common(node))
    for name in ("interval", "timeout", "start-period", "start-interval", "retries"):
        flags.string(name)
    flags.parse()
    if kind != "CMD":
        raise _Problem(f"Unknown type {go_quote(kind)} in HEALTHCHECK (try CMD)")
    command = args if node.json else ((" ".join(args),) if args else ())
    if not command:
        raise _Problem("Missing command after HEALTHCHECK CMD")
    test = ("CMD", *command) if node.json else ("CMD-SHELL", *command)
    retries = 0
    if flags.values["retries"]:
        try:
            retries = int(flags.values["retries"], 10)
        except ValueError:
            raise _Problem(f"strconv.ParseInt: parsing {go_quote(flags.values['retries'])}: invalid syntax") from None
        if retries < 0:
            raise _Problem(f"--retries cannot be negative ({retries})")
    return Healthcheck(test=test, interval_ns=_interval(flags, "interval"), timeout_ns=_interval(flags, "timeout"),
                       start_period_ns=_interval(flags, "start-period"),
                       start_interval_ns=_interval(flags, "start-interval"), retries=retries,
                       **_common(node))


def _expose(node: Node, flags: _Flags) -> Expose:
    _at_least_one(node, "EXPOSE")
    flags.parse()
    return Expose(ports=tuple(sorted(node.args)), **_common(node))


def _user(node: Node, flags: _Flags) -> User:
    user = _exactly_one(node, "USER")
    flags.parse()
    return User(user=user, **_common(node))


def _volume(node: Node, flags: _Flags) -> Volume:
    _at_least_one(node, "VOLUME")
    flags.parse()
    paths = []
    for path in node.args:
        if not path.strip():
            raise _Problem("VOLUME specified can not be an empty string")
        paths.append(path.strip())
    return Volume(paths=tuple(paths), **_common(node))


def _stopsignal(node: Node, flags: _Flags) -> StopSignal:
    signal = _exactly_one(node, "STOPSIGNAL")
    flags.parse()
    return StopSignal(signal=signal, **_common(node))


def _arg(node: Node, flags: _Flags) -> Arg:
    _at_least_one(node, "ARG")
    flags.parse()
    pairs: list[tuple[str, str | None]] = []
    for word in node.args:
        if "=" in word:
            key, _, value = word.partition("=")
            if not key:
                raise _Problem("ARG names can not be blank")
            pairs.append((key, value))
        else:
            pairs.append((word, None))
    return Arg(pairs=tuple(pairs), **_common(node))


def _shell(node: Node, flags: _Flags) -> Shell:
    flags.parse()
    if not node.args:
        raise _Problem("SHELL requires at least one argument")
    if not node.json:
        raise _Problem("SHELL requires the arguments to be in JSON form")
    return Shell(shell=node.args, **_common(node))


_INSTRUCTIONS: dict[str, Callable[[Node, _Flags], Stage | Command]] = {
    "add": _add, "arg": _arg, "cmd": _cmd, "copy": _copy, "entrypoint": _entrypoint, "env": _env,
    "expose": _expose, "from": _from, "healthcheck": _healthcheck, "label": _label, "maintainer": _maintainer,
    "onbuild": _onbuild, "run": _run, "shell": _shell, "stopsignal": _stopsignal, "user": _user,
    "volume": _volume, "workdir": _workdir,
}
