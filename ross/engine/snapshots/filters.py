# -*- test-case-name: ross.test.test_snapshot_filters -*-
"""
containerd-style filters for snapshot listings.

A filter is one or more terms joined by commas, all of which must match:
C{FIELD}, C{FIELD==VALUE}, C{FIELD!=VALUE} or C{FIELD~=REGEX}. Fields are
C{name}, C{parent}, C{kind} and C{labels.KEY} (KEY may be double-quoted when
it contains dots or operators: C{labels."ross.io/in-use"}). Values may be
double-quoted. A bare field matches when it is present and non-empty.
"""

from __future__ import annotations

import re
from typing import Callable, Iterable, Sequence

import attrs

from ross.engine.snapshots.records import SnapshotInfo
from ross.errors import InvalidArgument

_FIELDS = ("name", "parent", "kind")
_OPERATORS = ("==", "!=", "~=")


@attrs.frozen
class Term:
    """
    One C{FIELD OP VALUE} test; C{op} is "" for a presence test.
    """

    field: str
    label: str
    op: str
    value: str
    pattern: re.Pattern[str] | None = None

    def matches(self, info: SnapshotInfo) -> bool:
        actual = self._value_of(info)
        if self.op == "":
            return bool(actual)
        if self.op == "==":
            return actual == self.value
        if self.op == "!=":
            return actual != self.value
        assert self.pattern is not None
        return actual is not None and self.pattern.search(actual) is not None

    def _value_of(self, info: SnapshotInfo) -> str | None:
        if self.field == "labels":
            return info.labels.get(self.label)
        if self.field == "kind":
            return info.kind.value
        return str(getattr(info, self.field))


def _unquote(text: str, what: str, source: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] == '"':
        return text[1:-1].replace('\\"', '"')
    if '"' in text:
        raise InvalidArgument(f"Invalid filter {source!r}: unbalanced quotes in {what}")
    return text


def _split_terms(source: str) -> list[str]:
    # Commas inside double quotes belong to a value or label key.
    terms: list[str] = []
    current: list[str] = []
    quoted = False
    for char in source:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            terms.append("".join(current))
            current = []
        else:
            current.append(char)
    if quoted:
        raise InvalidArgument(f"Invalid filter {source!r}: unbalanced quotes")
    terms.append("".join(current))
    return terms


def _operator_at(term: str) -> tuple[int, str]:
    quoted = False
    for i, char in enumerate(term):
        if char == '"':
            quoted = not quoted
        elif not quoted and term[i : i + 2] in _OPERATORS:
            return i, term[i : i + 2]
    return -1, ""


def parse_term(term: str, source: str) -> Term:
    """
    One term; InvalidArgument naming the filter when it is malformed.
    """
    term = term.strip()
    if not term:
        raise InvalidArgument(f"Invalid filter {source!r}: empty term")
    index, op = _operator_at(term)
    if index < 0:
        field_text, value = term, ""
    else:
        field_text, value = term[:index].strip(), _unquote(term[index + 2 :].strip(), "value", source)
    if field_text.startswith("labels."):
        label = _unquote(field_text[len("labels.") :], "label key", source)
        if not label:
            raise InvalidArgument(f"Invalid filter {source!r}: empty label key")
        field = "labels"
    elif field_text in _FIELDS:
        field, label = field_text, ""
    else:
        known = ", ".join(_FIELDS + ("labels.KEY",))
        raise InvalidArgument(f"Invalid filter {source!r}: unknown field {field_text!r} (known: {known})")
    if field == "kind" and op in ("==", "!=") and value not in ("active", "view", "committed"):
        raise InvalidArgument(f"Invalid filter {source!r}: kind is one of active, view, committed")
    pattern = None
    if op == "~=":
        try:
            pattern = re.compile(value)
        except re.error as e:
            raise InvalidArgument(f"Invalid filter {source!r}: bad regular expression: {e}") from None
    return Term(field=field, label=label, op=op, value=value, pattern=pattern)


def parse_filters(filters: Iterable[str]) -> Callable[[SnapshotInfo], bool]:
    """
    A predicate that is true when every term of every filter matches.
    Raises InvalidArgument before anything is looked at.
    """
    terms: list[Term] = []
    for source in filters:
        terms.extend(parse_term(t, source) for t in _split_terms(source))
    return lambda info: all(term.matches(info) for term in terms)


def apply_filters(infos: Sequence[SnapshotInfo], filters: Iterable[str]) -> list[SnapshotInfo]:
    """
    The snapshots of C{infos} that match every filter, in order.
    """
    matches = parse_filters(filters)
    return [info for info in infos if matches(info)]
