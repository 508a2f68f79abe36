# -*- test-case-name: ross.test.test_build_parser -*-
"""
The Dockerfile's syntax: lines, continuations, comments, parser directives,
JSON and shell forms, flags and heredocs, into one L{Node} per
instruction, as BuildKit's parser reads them (the same trees: L{dump}
prints them in its notation).

What the words mean (flags allowed, argument counts, stages) is
L{ross.engine.build.instructions}; variables are expanded at build time
(L{ross.engine.build.shell}). Every error is a L{DockerfileError} naming
the line.
"""

from __future__ import annotations

import json
import re
from typing import Callable

import attrs

from ross.engine.build.shell import ExpansionError, Lex, go_quote
from ross.errors import InvalidArgument

#: Longest line BuildKit's scanner takes (its buffer, newline included).
MAX_LINE = 65536

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$", re.ASCII)
_DIRECTIVE = re.compile(r"^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$", re.ASCII)
_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC_INSTRUCTIONS = ("add", "copy", "run")
_NOT_STRINGS = "when using JSON array syntax, arrays must be comprised of strings only"


class DockerfileError(InvalidArgument):
    """
    A Dockerfile that cannot be built: C{line} is where (1-based; 0 when
    the whole file is at fault), C{problem} what.
    """

    def __init__(self, problem: str, line: int) -> None:
        super().__init__(f"dockerfile parse error on line {line}: {problem}" if line else problem)
        self.problem = problem
        self.line = line


class _Problem(Exception):
    """A problem found while reading one instruction; the caller knows the line."""


@attrs.frozen
class Heredoc:
    """
    A here-document: C{name} is its delimiter word; C{content} the lines
    up to it (newlines kept); C{expand} false when the delimiter was
    quoted (no variable expansion in the content); C{chomp} for C{<<-}
    (leading tabs removed); C{fd} the descriptor number written before
    C{<<}, 0 when none.
    """

    name: str
    content: str = ""
    expand: bool = True
    chomp: bool = False
    fd: int = 0


@attrs.frozen
class Node:
    """
    One instruction.

    @ivar keyword: the instruction word as written ("RUN", "run").
    @ivar args: its arguments as the parser splits them for that
        instruction: the words of a JSON array, one string for a shell
        form, (key, value, "=" or "") triples for ENV and LABEL.
    @ivar flags: the C{--name=value} words before the arguments.
    @ivar json: the arguments were a JSON array (exec form).
    @ivar original: the instruction's text, continuation lines joined.
    @ivar child: ONBUILD's instruction.
    """

    keyword: str
    args: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()
    json: bool = False
    original: str = ""
    start_line: int = 0
    end_line: int = 0
    heredocs: tuple[Heredoc, ...] = ()
    child: Node | None = None

    @property
    def name(self) -> str:
        """The instruction in lower case ("run")."""
        return self.keyword.lower()

    def all_args(self) -> tuple[str, ...]:
        """The arguments, with ONBUILD's instruction word and arguments."""
        if self.child is not None:
            return (self.child.keyword, *self.child.all_args())
        return self.args


@attrs.frozen
class Dockerfile:
    """
    A parsed Dockerfile: its instructions, the escape character, the
    directives at its top (name -> value, e.g. "syntax") and warnings for
    the build output.
    """

    nodes: tuple[Node, ...]
    escape: str = "\\"
    directives: tuple[tuple[str, str], ...] = ()
    warnings: tuple[str, ...] = ()

    def directive(self, name: str) -> str:
        return dict(self.directives).get(name, "")


class _State:
    """The parser's directives: escape character and what was seen at the top."""

    def __init__(self) -> None:
        self.escape = "\\"
        self.continuation = _continuation("\\")
        self.directives: list[tuple[str, str]] = []
        self._done = False

    def directive(self, line: str) -> bool:
        """Take C{line} as a directive when it is one; errors as L{_Problem}."""
        if self._done:
            return False
        if not line.startswith("#"):
            self._done = True
            return False
        match = _DIRECTIVE.match(line[1:].lstrip())
        if match is None or match.group(1).lower() not in _DIRECTIVES:
            self._done = True
            return False
        name, value = match.group(1).lower(), match.group(2)
        if any(seen == name for seen, _ in self.directives):
            raise _Problem(f"only one {name} parser directive can be used")
        self.directives.append((name, value))
        if name == "escape":
            if value not in ("`", "\\"):
                raise _Problem(f"invalid escape token '{value}' does not match ` or \\")
            self.escape = value
            self.continuation = _continuation(value)
        return True


def _continuation(escape: str) -> re.Pattern[str]:
    # The escape character last on a line (spaces after it allowed) joins
    # the next line, unless it is itself escaped.
    e = re.escape(escape)
    return re.compile(rf"([^{e}]){e}[ \t]*$|^{e}[ \t]*$")


def _lines(text: str) -> list[str]:
    """The lines of C{text}, each with its newline (the last may lack one)."""
    parts = text.split("\n")
    lines = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def _is_comment(line: str) -> bool:
    return line.lstrip().startswith("#")


def parse(source: bytes | str) -> Dockerfile:
    """
    The instructions of Dockerfile C{source}; L{DockerfileError} for
    anything BuildKit's parser refuses.
    """
    text = source.decode("utf-8", errors="replace") if isinstance(source, bytes) else source
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = _lines(text)
    state = _State()
    nodes: list[Node] = []
    warnings: list[str] = []
    current = 0
    index = 0

    def take() -> str:
        nonlocal index, current
        line = lines[index]
        index += 1
        current += 1
        if len(line.encode("utf-8", errors="surrogateescape")) > MAX_LINE:
            raise DockerfileError(f"dockerfile line greater than max allowed size of {MAX_LINE - 1}", current)
        return line

    def process(raw: str, strip: bool) -> str:
        line = raw.rstrip("\r\n")
        if strip:
            line = line.lstrip()
        try:
            state.directive(line)
        except _Problem as e:
            raise DockerfileError(str(e), current) from None
        return "" if _is_comment(line) else line

    while index < len(lines):
        line = process(take(), strip=True)
        start = current
        line, ended = _trim_continuation(line, state)
        if ended and not line:
            continue
        joined = [line]
        empty_continuation = False
        while not ended and index < len(lines):
            raw = take()
            line = process(raw, strip=False)
            if _is_comment(raw):
                continue
            if not line.strip():
                empty_continuation = True
                continue
            line, ended = _trim_continuation(line, state)
            joined.append(line)
        original = "".join(joined)
        if empty_continuation:
            warnings.append(f"Empty continuation line found in: {original}")
        try:
            node = _node(original, state)
            if _can_have_heredocs(node) and "<<" in original:
                heredocs = []
                for heredoc in _heredocs_of(original):
                    content = []
                    while True:
                        if index >= len(lines):
                            raise DockerfileError("unterminated heredoc", start)
                        raw = take()
                        candidate = raw.rstrip("\r\n")
                        if heredoc.chomp:
                            candidate = candidate.lstrip("\t")
                        if candidate == heredoc.name:
                            break
                        content.append(raw)
                    heredocs.append(attrs.evolve(heredoc, content="".join(content)))
                node = _with_heredocs(node, tuple(heredocs))
        except _Problem as e:
            raise DockerfileError(str(e), start) from None
        nodes.append(attrs.evolve(node, start_line=start, end_line=current))
    if not nodes:
        raise DockerfileError("file with no instructions", current)
    return Dockerfile(nodes=tuple(nodes), escape=state.escape, directives=tuple(state.directives),
                      warnings=tuple(warnings))


def _trim_continuation(line: str, state: _State) -> tuple[str, bool]:
    if state.continuation.search(line):
        return state.continuation.sub(r"\1", line, count=1), False
    return line, True


def _with_heredocs(node: Node, heredocs: tuple[Heredoc, ...]) -> Node:
    if node.child is not None and node.name == "onbuild":
        return attrs.evolve(node, child=attrs.evolve(node.child, heredocs=heredocs))
    return attrs.evolve(node, heredocs=heredocs)


def _can_have_heredocs(node: Node) -> bool:
    if node.name == "onbuild" and node.child is not None:
        node = node.child
    return node.name in _HEREDOC_INSTRUCTIONS and not node.json


def _heredocs_of(line: str) -> list[Heredoc]:
    lex = Lex(raw_quotes=True, raw_escapes=True, skip_unset=True)
    try:
        words = lex.process_words(line, {})
    except ExpansionError:
        words = []
    found = []
    for word in words:
        heredoc = parse_heredoc(word)
        if heredoc is not None:
            found.append(heredoc)
    return found


def parse_heredoc(word: str) -> Heredoc | None:
    """
    The here-document a word like C{<<EOF}, C{<<-'EOF'} or C{3<<EOF}
    starts, or None when it is not one. A malformed one (an unterminated
    quote) is a L{_Problem}.
    """
    match = _HEREDOC.match(word)
    if match is None or not match.group(3):
        return None
    fd = int(match.group(1)) if match.group(1) else 0
    rest = match.group(3)
    try:
        words = Lex(skip_unset=True).process_words(rest, {})
        if len(words) != 1:
            return None
        raw = Lex(raw_quotes=True, skip_unset=True).process_words(rest, {})
    except ExpansionError as e:
        raise _Problem(str(e)) from None
    if len(raw) != len(words):
        raise _Problem(f"internal lexing of heredoc produced inconsistent results: {rest}")
    quotes = words[0].count("'") + words[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return Heredoc(name=words[0], expand=quotes == raw_quotes, chomp=match.group(2) == "-", fd=fd)


def chomp(content: str) -> str:
    """A C{<<-} here-document's content: leading tabs removed from each line."""
    return re.sub(r"(?m)^\t+", "", content)


# ---------------------------------------------------------------- one line


def _node(line: str, state: _State) -> Node:
    keyword, flags, rest = _split_command(line, state)
    reader = _READERS.get(keyword.lower())
    if reader is None:
        # Refused later, with the instruction's line: unknown instruction.
        return Node(keyword=keyword, args=("",), flags=flags, original=line)
    if keyword.lower() == "onbuild":
        child = _node(rest, state) if rest else None
        return Node(keyword=keyword, flags=flags, original=line, child=child)
    args, is_json = reader(rest, state)
    return Node(keyword=keyword, args=tuple(args), flags=flags, json=is_json, original=line)


def _split_command(line: str, state: _State) -> tuple[str, tuple[str, ...], str]:
    parts = _WHITESPACE.split(line.strip(), maxsplit=1)
    if len(parts) < 2:
        return parts[0], (), ""
    rest, flags = _builder_flags(parts[1], state.escape)
    return parts[0], tuple(flags), rest.strip()


def _builder_flags(line: str, escape: str) -> tuple[str, list[str]]:
    """
    The C{--flag} words at the start of C{line} (a C{--} word ends them)
    and the rest of the line.
    """
    words: list[str] = []
    word: list[str] = []
    in_word = in_quote = False
    quote = ""
    blank_ok = False
    pos = 0
    while pos <= len(line):
        ch = line[pos] if pos < len(line) else ""
        if not in_word and not in_quote:
            if pos == len(line):
                break
            if ch.isspace():
                pos += 1
                continue
            if not (ch == "-" and pos + 1 < len(line) and line[pos + 1] == "-"):
                return line[pos:], words
            in_word = True
        if pos == len(line):
            text = "".join(word)
            if text != "--" and (blank_ok or text):
                words.append(text)
            break
        if in_quote:
            if ch == quote:
                in_quote = False
                in_word = True
                pos += 1
                continue
            if ch == escape:
                if pos + 1 == len(line):
                    in_quote = False
                    pos += 1
                    continue
                pos += 1
                ch = line[pos]
            word.append(ch)
            pos += 1
            continue
        if ch.isspace():
            text = "".join(word)
            in_word = False
            if text == "--":
                return line[pos:], words
            if blank_ok or text:
                words.append(text)
            word = []
            blank_ok = False
            pos += 1
            continue
        if ch in ("'", '"'):
            quote = ch
            blank_ok = True
            in_quote = True
            in_word = False
            pos += 1
            continue
        if ch == escape:
            if pos + 1 == len(line):
                pos += 1
                continue
            pos += 1
            ch = line[pos]
        word.append(ch)
        pos += 1
    return "", words


def _words(rest: str, escape: str) -> list[str]:
    """
    Words separated by spaces, quotes and escape characters kept (they
    are removed when the words are expanded).
    """
    words: list[str] = []
    word: list[str] = []
    phase = "spaces"
    quote = ""
    blank_ok = False
    pos = 0
    while pos <= len(rest):
        ch = rest[pos] if pos < len(rest) else ""
        if phase == "spaces":
            if pos == len(rest):
                break
            if ch.isspace():
                pos += 1
                continue
            phase = "word"
        if pos == len(rest):
            if blank_ok or word:
                words.append("".join(word))
            break
        if phase == "word":
            if ch.isspace():
                phase = "spaces"
                if blank_ok or word:
                    words.append("".join(word))
                word = []
                blank_ok = False
                pos += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = "quote"
            if ch == escape:
                if pos + 1 == len(rest):
                    pos += 1
                    continue
                word.append(ch)
                pos += 1
                ch = rest[pos]
            word.append(ch)
            pos += 1
            continue
        if ch == quote:
            phase = "word"
        if ch == escape and quote != "'":
            if pos + 1 == len(rest):
                phase = "word"
                pos += 1
                continue
            word.append(ch)
            pos += 1
            ch = rest[pos]
        word.append(ch)
        pos += 1
    return words


Reader = Callable[[str, _State], "tuple[list[str], bool]"]


def _json_array(rest: str) -> list[str] | None:
    """The strings of a JSON array, None when C{rest} is not one."""
    rest = rest.lstrip()
    if not rest.startswith("["):
        return None
    try:
        value = json.loads(rest, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(value, list):
        return None
    if not all(isinstance(item, str) for item in value):
        raise _Problem(_NOT_STRINGS)
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _maybe_json(rest: str, state: _State) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    array = _json_array(rest)
    if array is not None:
        return array, True
    return [rest], False


def _maybe_json_list(rest: str, state: _State) -> tuple[list[str], bool]:
    array = _json_array(rest)
    if array is not None:
        return array, True
    return _whitespace_delimited(rest, state)


def _whitespace_delimited(rest: str, state: _State) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    return _WHITESPACE.split(rest), False


def _string(rest: str, state: _State) -> tuple[list[str], bool]:
    return ([rest] if rest else []), False


def _name_or_name_value(rest: str, state: _State) -> tuple[list[str], bool]:
    return _words(rest, state.escape), False


def _name_value(keyword: str) -> Reader:
    def read(rest: str, state: _State) -> tuple[list[str], bool]:
        words = _words(rest, state.escape)
        if not words:
            return [], False
        if "=" not in words[0]:
            # The old form, "ENV name value with spaces".
            parts = _WHITESPACE.split(rest, maxsplit=1)
            if len(parts) < 2:
                raise _Problem(f"{keyword} must have two arguments")
            return [parts[0], parts[1], ""], False
        args = []
        for word in words:
            if "=" not in word:
                raise _Problem(f"Syntax error - can't find = in {go_quote(word)}. Must be of the form: name=value")
            key, _, value = word.partition("=")
            args += [key, value, "="]
        return args, False

    return read


def _health(rest: str, state: _State) -> tuple[list[str], bool]:
    if not rest:
        return [], False
    parts = rest.split(None, 1)
    command, is_json = _maybe_json(parts[1] if len(parts) > 1 else "", state)
    return [parts[0], *command], is_json


_READERS: dict[str, Reader] = {
    "add": _maybe_json_list,
    "arg": _name_or_name_value,
    "cmd": _maybe_json,
    "copy": _maybe_json_list,
    "entrypoint": _maybe_json,
    "env": _name_value("ENV"),
    "expose": _whitespace_delimited,
    "from": _whitespace_delimited,
    "healthcheck": _health,
    "label": _name_value("LABEL"),
    "maintainer": _string,
    "onbuild": _string,
    "run": _maybe_json,
    "shell": _maybe_json,
    "stopsignal": _string,
    "user": _string,
    "volume": _maybe_json_list,
    "workdir": _string,
}


# ---------------------------------------------------------------- dump


def dump(dockerfile: Dockerfile) -> str:
    """The instructions in BuildKit's parse-tree notation, one per line."""
    return "".join(f"({_dump_node(node)})\n" for node in dockerfile.nodes)


def _dump_node(node: Node) -> str:
    text = node.keyword.lower()
    if node.flags:
        text += " [" + " ".join(go_quote(flag) for flag in node.flags) + "]"
    if node.child is not None:
        return f"{text} ({_dump_node(node.child)})"
    for arg in node.args:
        text += " " + go_quote(arg)
    return text.strip()
