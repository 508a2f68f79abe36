# -*- test-case-name: ross.test.test_gotemplate -*-
"""
The part of Go's text/template that docker's ``--format`` users write:
``{{.State.Status}}``, ``{{json .Config}}``, ``{{range .Mounts}}{{.Source}}
{{end}}``, ``{{index .Config.Labels "k"}}``, ``{{if .State.Running}}...
{{else}}...{{end}}``, pipes (``{{.Names | upper}}``), fields of a
parenthesized call (``{{(index $conf 0).HostPort}}``), variables
(``{{range $k, $v := .Labels}}``, ``{{$x := .Name}}``, ``{{with $x :=
...}}``), and docker's functions (json, join, split, upper, lower, title,
truncate, pad, println) with Go's own (index, slice, len, print, printf
with its widths and verbs, html, urlquery, not, and, or, eq, ne, lt, le,
gt, ge). Values print as
Go's ``%v`` does: ``[a b]`` for a list, ``map[k:v]`` for a map,
``<no value>`` for a missing key.

The data is what ``--format json`` prints (dicts, lists, strings,
numbers); a callable in a dict is a method (``{{.Label "k"}}``).
Rendering never evaluates anything but these: the template is the user's
own, but it is still only read.
"""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from typing import Any, Callable, Iterator


class TemplateError(ValueError):
    """The template cannot be parsed, or not applied to the data."""


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<declare>:=)
  | (?P<punct>[|(),=])
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)
  | (?P<field>(?:\.[A-Za-z0-9_]+)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""", re.X)


def gofmt(value: Any) -> str:
    """C{value} as Go's C{%v} prints it."""
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e21:
        return str(int(value))
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(gofmt(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{gofmt(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def _truth(value: Any) -> bool:
    return bool(value) and value != 0


def _index(value: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(value, dict):
            # A map of strings (labels, options) gives "" for a key it lacks,
            # as docker's typed map[string]string does; other maps nil.
            default = "" if all(isinstance(v, str) for v in value.values()) else None
            value = value.get(key, default)
        elif isinstance(value, (list, tuple, str)) and isinstance(key, int):
            if not 0 <= key < len(value):
                raise TemplateError(f"error calling index: index out of range: {key}")
            value = value[key]
        else:
            raise TemplateError(f"error calling index: cannot index {gofmt(value)} with {gofmt(key)}")
    return value


def _gotype(value: Any) -> str:
    """The Go type docker's templates see for C{value} (C{%T})."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, dict):
        return "map[string]interface {}"
    if isinstance(value, (list, tuple)):
        return "[]interface {}"
    return "string"


def _printf(fmt: str, *args: Any) -> str:
    """
    Go's Sprintf for the verbs templates use: v s q d x X o b c e E f F g
    G t T, with flags (- + # 0 space), width and precision.
    """
    it = iter(args)

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "%%":
            return "%"
        flags, width, precision, verb = m.group(1), m.group(2), m.group(3), m.group(4)
        try:
            v = next(it)
        except StopIteration:
            return f"%!{verb}(MISSING)"
        # Go's bounds: a width or precision over a million is refused.
        if width and int(width) > 1_000_000:
            return "%!(BADWIDTH)"
        if precision and int(precision) > 1_000_000:
            return "%!(BADPREC)"
        number = isinstance(v, (int, float)) and not isinstance(v, bool)
        spec = flags.replace("-", "<" if width else "") if "-" in flags else flags
        if verb in "dxXobc" and number:
            text = format(int(v), spec.replace("#", "") + (width or "") + ("" if verb == "d" else verb))
            if "#" in flags and verb in "xXo":
                text = {"x": "0x", "X": "0X", "o": "0"}[verb] + text.lstrip()
            return chr(int(v)) if verb == "c" else text
        if verb in "eEfFgG" and number:
            return format(float(v), spec + (width or "") + (f".{precision}" if precision is not None else "") + verb)
        if verb in "xX":
            text = (gofmt(v).encode().hex())
            text = text.upper() if verb == "X" else text
        elif verb == "q":
            text = json.dumps(gofmt(v), ensure_ascii=False)
        elif verb == "t":
            text = gofmt(v) if isinstance(v, bool) else f"%!t({_gotype(v)}={gofmt(v)})"
        elif verb == "T":
            text = _gotype(v)
        else:
            text = gofmt(v)
            if precision is not None and verb in "sv":
                text = text[:int(precision)]
        if width:
            text = text.ljust(int(width)) if "-" in flags else text.rjust(int(width))
        return text

    return re.sub(r"%%|%([-+# 0]*)(\d+)?(?:\.(\d+))?([vsqdxXobceEfFgGtT])", one, fmt)


def _compare(name: str, test: Callable[[Any, Any], bool]) -> Callable[..., bool]:
    def compare(a: Any, *others: Any) -> bool:
        try:
            return any(test(a, b) for b in others) if name == "eq" else all(test(a, b) for b in others)
        except TypeError:
            raise TemplateError(f"error calling {name}: incompatible types for comparison") from None
    return compare


def _data(value: Any) -> Any:
    """
    C{value} without the methods a row carries (a listing's C{.Label "k"}),
    which Go's json leaves out of a struct too.
    """
    if isinstance(value, dict):
        return {k: _data(v) for k, v in value.items() if not callable(v)}
    if isinstance(value, (list, tuple)):
        return [_data(v) for v in value]
    return value


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # Compact and unescaped, as docker's json (SetEscapeHTML(false)).
    "json": lambda v: json.dumps(_data(v), ensure_ascii=False, separators=(",", ":")),
    "join": lambda items, sep: sep.join(gofmt(i) for i in (items or [])),
    "split": lambda s, sep: s.split(sep),
    "upper": lambda s: gofmt(s).upper(),
    "lower": lambda s: gofmt(s).lower(),
    "title": lambda s: gofmt(s).title(),
    "truncate": lambda s, n: gofmt(s)[:int(n)],
    "pad": lambda s, left, right: " " * int(left) + gofmt(s) + " " * int(right),
    "println": lambda *a: " ".join(gofmt(v) for v in a) + "\n",
    "print": lambda *a: "".join(gofmt(v) for v in a),
    "printf": _printf,
    "slice": lambda v, *ix: v[int(ix[0]) if ix else 0:int(ix[1]) if len(ix) > 1 else None],
    "html": lambda v: html.escape(gofmt(v)).replace("&#x27;", "&#39;"),
    "urlquery": lambda *a: urllib.parse.quote_plus("".join(gofmt(v) for v in a)),
    "index": _index,
    "len": lambda v: len(v) if v is not None else 0,
    "not": lambda v: not _truth(v),
    "and": lambda *a: next((v for v in a if not _truth(v)), a[-1]),
    "or": lambda *a: next((v for v in a if _truth(v)), a[-1]),
    "eq": _compare("eq", lambda a, b: a == b),
    "ne": _compare("ne", lambda a, b: a != b),
    "lt": _compare("lt", lambda a, b: a < b),
    "le": _compare("le", lambda a, b: a <= b),
    "gt": _compare("gt", lambda a, b: a > b),
    "ge": _compare("ge", lambda a, b: a >= b),
}


# ------------------------------------------------------------------ parsing

# A node: ("text", str) | ("print", pipe) | ("if", [(pipe, nodes)...], else_nodes)
# | ("range"/"with", names, pipe, nodes, else_nodes). A pipe: a list of
# commands, each a list of operands; an operand: ("field", parts),
# ("var", name, parts), ("lit", value), ("ident", name) or ("pipe", pipe).


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise TemplateError(f"unexpected {text[pos]!r} in command")
        pos = m.end()
        if m.lastgroup == "field" and out and out[-1] == ("punct", ")") and m.group() != "." \
                and text[m.start() - 1] == ")":
            # A field of what the parentheses give: (index .Ports 0).HostPort.
            out.append(("chain", m.group()))
        elif m.lastgroup != "space":
            out.append((m.lastgroup or "", m.group()))
    return out


def _pipe(tokens: list[tuple[str, str]], pos: int, close: str = "") -> tuple[list[list[Any]], int]:
    commands: list[list[Any]] = [[]]
    while pos < len(tokens):
        kind, text = tokens[pos]
        if kind == "punct" and text == ")" and close == ")":
            return commands, pos + 1
        pos += 1
        if kind == "punct" and text == "|":
            if not commands[-1]:
                raise TemplateError("missing command before |")
            commands.append([])
        elif kind == "punct" and text == "(":
            inner, pos = _pipe(tokens, pos, ")")
            operand: Any = ("pipe", inner)
            while pos < len(tokens) and tokens[pos][0] == "chain":
                operand = ("chain", operand, [p for p in tokens[pos][1].split(".") if p])
                pos += 1
            commands[-1].append(operand)
        elif kind == "field":
            commands[-1].append(("field", [p for p in text.split(".") if p]))
        elif kind == "var":
            name, *parts = text.split(".")
            commands[-1].append(("var", name, parts))
        elif kind == "string":
            commands[-1].append(("lit", json.loads(text)))
        elif kind == "raw":
            commands[-1].append(("lit", text[1:-1]))
        elif kind == "number":
            commands[-1].append(("lit", float(text) if "." in text else int(text)))
        elif kind == "ident" and text in ("true", "false", "nil"):
            commands[-1].append(("lit", {"true": True, "false": False, "nil": None}[text]))
        elif kind == "ident":
            if text not in FUNCTIONS:
                raise TemplateError(f'function "{text}" not defined')
            commands[-1].append(("ident", text))
        else:
            raise TemplateError(f"unexpected {text!r} in command")
    if close:
        raise TemplateError("unclosed left paren")
    if not commands[-1]:
        raise TemplateError("missing value for command")
    return commands, pos


def _parse(template: str) -> list[Any]:
    nodes: list[Any] = []
    stack: list[tuple[Any, list[Any]]] = []
    current = nodes
    pos = 0
    pieces = list(_ACTION.finditer(template))
    for i, m in enumerate(pieces):
        text = template[pos:m.start()]
        if "{{" in text:
            raise TemplateError("unclosed action")
        if m.group(1):
            text = text.rstrip()
        if i and pieces[i - 1].group(3):
            text = text.lstrip()
        if text:
            current.append(("text", text))
        pos = m.end()
        action = m.group(2).strip()
        if action.startswith("/*"):
            continue
        tokens = _tokens(action)
        if not tokens:
            raise TemplateError("missing value for command")
        word = tokens[0][1] if tokens[0][0] == "ident" else ""
        if word in ("if", "range", "with"):
            names: list[str] = []
            rest = tokens[1:]
            if word in ("range", "with") and any(k == "declare" for k, _ in rest):
                at = next(j for j, (k, _) in enumerate(rest) if k == "declare")
                names = [t for k, t in rest[:at] if k == "var"]
                rest = rest[at + 1:]
            pipe, _ = _pipe(rest, 0)
            body: list[Any] = []
            node: list[Any] = ["if", [(pipe, body)], None] if word == "if" else [word, names, pipe, body, None]
            current.append(node)
            stack.append((node, current))
            current = body
        elif word == "else":
            if not stack:
                raise TemplateError("unexpected {{else}}")
            node, _ = stack[-1]
            if len(tokens) > 1 and tokens[1] == ("ident", "if") and node[0] == "if":
                pipe, _ = _pipe(tokens[2:], 0)
                node[1].append((pipe, []))
                current = node[1][-1][1]
            else:
                node[-1] = current = []
        elif word == "end":
            if not stack:
                raise TemplateError("unexpected {{end}}")
            _, current = stack.pop()
        elif len(tokens) > 2 and tokens[0][0] == "var" and "." not in tokens[0][1] \
                and tokens[1] in (("declare", ":="), ("punct", "=")):
            # {{$x := pipeline}} and {{$x = pipeline}}: print nothing.
            pipe, _ = _pipe(tokens[2:], 0)
            current.append(("set", tokens[0][1], pipe))
        else:
            pipe, _ = _pipe(tokens, 0)
            current.append(("print", pipe))
    tail = template[pos:]
    if "{{" in tail:
        raise TemplateError("unclosed action")
    if pieces and pieces[-1].group(3):
        tail = tail.lstrip()
    if tail:
        current.append(("text", tail))
    if stack:
        raise TemplateError(f"unexpected EOF: {{{{{stack[-1][0][0]}}}}} without {{{{end}}}}")
    return nodes


# --------------------------------------------------------------- evaluation


def _field(value: Any, parts: list[str], args: list[Any]) -> Any:
    """C{value}'s field C{parts}, a method among them called (the last with C{args})."""
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        if not isinstance(value, dict):
            raise TemplateError(f"can't evaluate field {part} in type {type(value).__name__}")
        if part not in value:
            if last and not args:
                return None
            raise TemplateError(f"can't evaluate field {part}")
        value = value[part]
        if callable(value):
            value = value(*(args if last else []))
        elif last and args:
            raise TemplateError(f"{part} is not a method but has arguments")
    return value


def _operand(op: Any, dot: Any, scope: dict[str, Any]) -> Any:
    kind = op[0]
    if kind == "field":
        return _field(dot, op[1], [])
    if kind == "var":
        if op[1] not in scope:
            raise TemplateError(f"undefined variable: {op[1]}")
        return _field(scope[op[1]], op[2], []) if op[2] else scope[op[1]]
    if kind == "lit":
        return op[1]
    if kind == "pipe":
        return _run(op[1], dot, scope)
    if kind == "chain":
        return _field(_operand(op[1], dot, scope), op[2], [])
    raise TemplateError(f"{op[1]} needs arguments")


def _command(command: list[Any], dot: Any, scope: dict[str, Any], piped: tuple[Any, ...]) -> Any:
    head, rest = command[0], command[1:]
    args = [_operand(op, dot, scope) for op in rest] + list(piped)
    if head[0] == "ident":
        try:
            return FUNCTIONS[head[1]](*args)
        except TemplateError:
            raise
        except (TypeError, ValueError, AttributeError) as e:
            raise TemplateError(f"error calling {head[1]}: {e}") from None
    if head[0] == "field" and args:
        return _field(dot, head[1], args)
    if args:
        raise TemplateError("can't give arguments to a non-function")
    return _operand(head, dot, scope)


def _run(pipe: list[list[Any]], dot: Any, scope: dict[str, Any]) -> Any:
    value: tuple[Any, ...] = ()
    for command in pipe:
        value = (_command(command, dot, scope, value),)
    return value[0]


def _items(value: Any) -> Iterator[tuple[Any, Any]]:
    if isinstance(value, dict):
        return ((k, value[k]) for k in sorted(value))
    if isinstance(value, (list, tuple)):
        return enumerate(value)
    if value is None:
        return iter(())
    raise TemplateError(f"range can't iterate over {gofmt(value)}")


def _render(nodes: list[Any], dot: Any, scope: dict[str, Any], out: list[str]) -> None:
    for node in nodes:
        kind = node[0]
        if kind == "text":
            out.append(node[1])
        elif kind == "print":
            out.append(gofmt(_run(node[1], dot, scope)))
        elif kind == "set":
            scope[node[1]] = _run(node[2], dot, scope)
        elif kind == "if":
            for pipe, body in node[1]:
                if _truth(_run(pipe, dot, scope)):
                    _render(body, dot, scope, out)
                    break
            else:
                if node[2] is not None:
                    _render(node[2], dot, scope, out)
        elif kind == "with":
            value = _run(node[2], dot, scope)
            if _truth(value):
                inner = dict(scope)
                if node[1]:
                    inner[node[1][0]] = value
                _render(node[3], value, inner, out)
            elif node[4] is not None:
                _render(node[4], dot, scope, out)
        else:
            names, items = node[1], list(_items(_run(node[2], dot, scope)))
            for key, item in items:
                inner = dict(scope)
                if len(names) == 1:
                    inner[names[0]] = item
                elif len(names) == 2:
                    inner[names[0]], inner[names[1]] = key, item
                _render(node[3], item, inner, out)
            if not items and node[4] is not None:
                _render(node[4], dot, scope, out)


def render(template: str, data: Any) -> str:
    """C{template} applied to C{data}; L{TemplateError} on a bad one."""
    out: list[str] = []
    _render(_parse(template), data, {"$": data}, out)
    return "".join(out)


def parse(template: str) -> None:
    """Check C{template} parses (before any data is asked for); L{TemplateError} if not."""
    _parse(template)
