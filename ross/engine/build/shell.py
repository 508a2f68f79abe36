# -*- test-case-name: ross.test.test_build_shell -*-
"""
Dockerfile words: quote removal, escapes and variable substitution, as
BuildKit's shell lexer does them (and docker's classic builder with it).

    lex = Lex()
    lex.process_word('"$HOME"/bin', {"HOME": "/root"})   -> "/root/bin"
    lex.process_words("a ${B:-b c}", {})                  -> ["a", "b", "c"]

Supported: C{$NAME}, C{${NAME}}, C{${NAME:-default}} / C{${NAME-default}},
C{${NAME:+alt}} / C{${NAME+alt}}, C{${NAME:?message}} / C{${NAME?message}},
C{${NAME#pattern}} (C{##}, C{%}, C{%%}) and C{${NAME/pattern/replacement}}
(C{//}); single quotes keep everything literal, double quotes expand
variables and let the escape character quote C{"}, C{$} and itself.
Anything else is an L{ExpansionError} naming the word.
"""

from __future__ import annotations

import re
from typing import Mapping

from ross.errors import InvalidArgument

_EOF = ""
_SPECIAL_PARAMETERS = "@*#?-$!0"
_WHITESPACE = "\t\r "


class ExpansionError(InvalidArgument):
    """A word that cannot be expanded: an unterminated quote, a bad ${}."""


class _Error(Exception):
    """Raised inside the lexer; the public calls name the word it came from."""


def go_quote(text: str) -> str:
    """
    C{text} in double quotes with Go's C{%q} escapes, as BuildKit quotes
    words in its messages and its parse-tree dumps.
    """
    out = ['"']
    for ch in text:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch.isprintable():
            out.append(ch)
        elif ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\x{ord(ch):02x}")
        elif ord(ch) < 0x10000:
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(f"\\U{ord(ch):08x}")
    out.append('"')
    return "".join(out)


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t",
               "\v": "\\v"}


class _Words:
    """Splits expanded text into words; quoted text never splits."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self._buffer: list[str] = []
        self._length = 0
        self._in_word = False

    def _push(self) -> None:
        self.words.append("".join(self._buffer))
        self._buffer = []
        self._length = 0
        self._in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            # An empty quoted string ("") makes no word of its own.
            if self._in_word and self._length:
                self._push()
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self._buffer.append(ch)
        self._length += len(ch)
        self._in_word = True

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self._buffer.append(text)
        self._length += len(text)
        self._in_word = True

    def result(self) -> list[str]:
        if self._length:
            self._push()
        return self.words


class _Scanner:
    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0

    def peek(self) -> str:
        return self._text[self._pos] if self._pos < len(self._text) else _EOF

    def next(self) -> str:
        ch = self.peek()
        if ch:
            self._pos += 1
        return ch


class Lex:
    """
    The lexer. C{escape} is the Dockerfile's escape character (C{\\} or
    C{`}). The flags serve the parser's own uses: C{raw_quotes} and
    C{raw_escapes} keep quotes and escape characters in the result,
    C{skip_unset} leaves references to unset variables as they are
    written, C{skip_quotes} makes quotes ordinary characters (a COPY
    here-document's content).
    """

    def __init__(self, escape: str = "\\", raw_quotes: bool = False, raw_escapes: bool = False,
                 skip_unset: bool = False, skip_quotes: bool = False) -> None:
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        self.skip_quotes = skip_quotes

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        """C{word} expanded as one word (spaces kept)."""
        return _Word(self, word, env).run()[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        """C{word} expanded, then split on unquoted spaces."""
        return _Word(self, word, env).run()[1]

    def process_word_with_matches(self, word: str, env: Mapping[str, str]) -> tuple[str, set[str], set[str]]:
        """
        C{word} expanded as one word, with the names it used that C{env}
        has and those it lacks.
        """
        state = _Word(self, word, env)
        result = state.run()[0]
        return result, state.matched, state.unmatched


class _Word:
    def __init__(self, lex: Lex, word: str, env: Mapping[str, str]) -> None:
        self.lex = lex
        self.source = word
        self.env = env
        self.scanner = _Scanner(word)
        self.raw_escapes = lex.raw_escapes
        self.matched: set[str] = set()
        self.unmatched: set[str] = set()

    def run(self) -> tuple[str, list[str]]:
        try:
            return self._until(_EOF, self.raw_escapes)
        except _Error as e:
            raise ExpansionError(f"failed to process {go_quote(self.source)}: {e}") from None

    def _until(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        """Process up to C{stop} (consumed) or the end; the text and its words."""
        saved, self.raw_escapes = self.raw_escapes, raw_escapes
        try:
            return self._scan(stop)
        finally:
            self.raw_escapes = saved

    def _scan(self, stop: str) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        scanner = self.scanner
        escape = self.lex.escape
        while scanner.peek() != _EOF:
            ch = scanner.peek()
            if stop and ch == stop:
                scanner.next()
                return "".join(result), words.result()
            if ch == "$":
                text = self._dollar()
                result.append(text)
                words.add_string(text)
            elif ch == "<":
                text = self._possible_heredoc()
                result.append(text)
                words.add_raw_string(text)
            elif ch == "'" and not self.lex.skip_quotes:
                text = self._single_quote()
                result.append(text)
                words.add_raw_string(text)
            elif ch == '"' and not self.lex.skip_quotes:
                text = self._double_quote()
                result.append(text)
                words.add_raw_string(text)
            else:
                ch = scanner.next()
                if ch == escape:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    # The escape character quotes the next one; at the very
                    # end of the word it vanishes.
                    ch = scanner.next()
                    if ch == _EOF:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
        if stop:
            raise _Error(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words.result()

    def _single_quote(self) -> str:
        scanner = self.scanner
        out = []
        quote = scanner.next()
        if self.lex.raw_quotes:
            out.append(quote)
        while True:
            ch = scanner.next()
            if ch == _EOF:
                raise _Error("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def _double_quote(self) -> str:
        scanner = self.scanner
        escape = self.lex.escape
        out = []
        quote = scanner.next()
        if self.lex.raw_quotes:
            out.append(quote)
        while True:
            ch = scanner.peek()
            if ch == _EOF:
                raise _Error("unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                scanner.next()
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if ch == "$":
                out.append(self._dollar())
                continue
            ch = scanner.next()
            if ch == escape:
                if self.raw_escapes:
                    out.append(ch)
                following = scanner.peek()
                if following == _EOF:
                    continue
                if following in ('"', "$", escape):
                    ch = scanner.next()
            out.append(ch)

    def _possible_heredoc(self) -> str:
        # "<< EOF" stays one word, so the parser can find heredoc markers.
        scanner = self.scanner
        scanner.next()
        if scanner.peek() != "<":
            return "<"
        scanner.next()
        space = []
        while scanner.peek() and scanner.peek() in _WHITESPACE:
            space.append(scanner.next())
        return "<<" + "".join(space)

    def _name(self) -> str:
        scanner = self.scanner
        name: list[str] = []
        while scanner.peek() != _EOF:
            ch = scanner.peek()
            if not name and ch.isdigit():
                while scanner.peek() != _EOF and scanner.peek().isdigit():
                    name.append(scanner.next())
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMETERS:
                return scanner.next()
            if not (ch.isalpha() or ch.isdigit() or ch == "_"):
                break
            name.append(scanner.next())
        return "".join(name)

    def _lookup(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            self.matched.add(name)
            return self.env[name], True
        self.unmatched.add(name)
        return "", False

    def _dollar(self) -> str:
        scanner = self.scanner
        scanner.next()
        if scanner.peek() != "{":
            name = self._name()
            if not name:
                return "$"
            value, found = self._lookup(name)
            if not found and self.lex.skip_unset:
                return "$" + name
            return value
        scanner.next()
        following = scanner.peek()
        if following == _EOF:
            raise _Error("syntax error: missing '}'")
        if following in "{}:":
            raise _Error("syntax error: bad substitution")
        name = self._name()
        ch = scanner.next()
        if ch == "}":
            value, found = self._lookup(name)
            if not found and self.lex.skip_unset:
                return "${" + name + "}"
            return value
        if ch == "/":
            return self._replace(name)
        modifier = ch
        null_is_unset = False
        if ch == ":":
            null_is_unset = True
            ch = scanner.next()
            modifier += ch
        elif ch not in "+-?#%" or not ch:
            raise _Error(f"unsupported modifier ({modifier}) in substitution")
        raw = ch in ("#", "%")
        if null_is_unset and raw:
            raise _Error(f"unsupported modifier ({modifier}) in substitution")
        try:
            word = self._until("}", raw)[0]
        except _Error:
            if scanner.peek() == _EOF:
                raise _Error("syntax error: missing '}'") from None
            raise
        value, found = self._lookup(name)
        if not found and self.lex.skip_unset:
            return "${" + name + modifier + word + "}"
        empty = not found or (null_is_unset and value == "")
        if ch == "-":
            return word if empty else value
        if ch == "+":
            return "" if empty else word
        if ch == "?":
            if not found:
                raise _Error(f"{name}: {word or 'is not allowed to be unset'}")
            if null_is_unset and value == "":
                raise _Error(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        if ch in ("#", "%"):
            greedy = word.startswith(ch)
            if greedy:
                word = word[1:]
            if ch == "%":
                return _trim_suffix(word, value, greedy)
            return _trim_prefix(word, value, greedy)
        raise _Error(f"unsupported modifier ({modifier}) in substitution")

    def _replace(self, name: str) -> str:
        scanner = self.scanner
        replace_all = scanner.peek() == "/"
        if replace_all:
            scanner.next()
        try:
            pattern = self._until("/", True)[0]
        except _Error:
            if scanner.peek() == _EOF:
                raise _Error("syntax error: missing '/' in ${}") from None
            raise
        try:
            replacement = self._until("}", True)[0]
        except _Error:
            if scanner.peek() == _EOF:
                raise _Error("syntax error: missing '}'") from None
            raise
        value, found = self._lookup(name)
        if not found and self.lex.skip_unset:
            return "${" + name + "/" + pattern + "/" + replacement + "}"
        expression = _pattern_regex(pattern, greedy=True, anchored=False)
        if replace_all:
            return expression.sub(lambda _: replacement, value)
        return expression.sub(lambda _: replacement, value, count=1)


def _pattern_regex(pattern: str, greedy: bool, anchored: bool) -> re.Pattern[str]:
    """
    A shell wildcard pattern (C{*}, C{?}, C{\\} escapes; no brackets) as a
    regular expression; C{*} matches the shortest text unless C{greedy}.
    """
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append(star)
        elif ch == "?":
            out.append(".")
        elif ch == "\\":
            following = pattern[i] if i < len(pattern) else ""
            if following in ("}", "/"):
                # The escape only kept them from ending the ${}.
                continue
            if following not in ("*", "?", "\\"):
                raise _Error(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{following}'")
            out.append(re.escape(following))
            i += 1
        else:
            out.append(re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    match = _pattern_regex(pattern, greedy, anchored=True).search(value)
    return value[match.end():] if match else value


def _reverse_pattern(pattern: str) -> str:
    """C{pattern} reversed, an escape staying before what it escapes."""
    pieces = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            pieces.append(pattern[i:i + 2])
            i += 2
        else:
            pieces.append(pattern[i])
            i += 1
    return "".join(reversed(pieces))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # The shortest match at the right end is the shortest at the left of the
    # reversed text.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]
