# -*- test-case-name: ross.test.test_build_shell -*-
"""
Dockerfile word expansion (L{ross.engine.build.shell}): quotes, escapes
and every substitution form, against the cases BuildKit's lexer is
tested with.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.build.shell import ExpansionError, Lex, go_quote

ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "NULL": ""}

# (word, expansion); None: refused.
WORDS: list[tuple[str, str | None]] = [
    ("hello", "hello"),
    ("he'll'o", "hello"),
    ("he'llo", None),
    ("he\\'llo", "he'llo"),
    ("he\\\\'llo", None),
    ("abc\\tdef", "abctdef"),
    ('"abc\\tdef"', "abc\\tdef"),
    ('"abc\\\\tdef"', "abc\\tdef"),
    ("'abc\\tdef'", "abc\\tdef"),
    ("hello\\", "hello"),
    ("hello\\\\", "hello\\"),
    ('"hello', None),
    ('"hello\\"', None),
    ('"hel\'lo"', "hel'lo"),
    ("'hello\\'", "hello\\"),
    ("'hello\\\\there'", "hello\\\\there"),
    ("\"''\"", "''"),
    ("$.", "$."),
    ("he$1x", "hex"),
    ("he$.x", "he$.x"),
    ("he$pwd.", "he."),
    ("he$PWD", "he/home"),
    ("he\\$PWD", "he$PWD"),
    ("he\\\\$PWD", "he\\/home"),
    ('"he\\$PWD"', "he$PWD"),
    ('"he\\\\$PWD"', "he\\/home"),
    ("\\${}", "${}"),
    ("he\\${}xx", "he${}xx"),
    ("${}", None),
    ("he${}xx", None),
    ("he${hi}xx", "hexx"),
    ("he${PWD}", "he/home"),
    ("he${.}", None),
    ("he${XXX:-000}xx", "he000xx"),
    ("he${PWD:-000}xx", "he/homexx"),
    ("he${XXX:-$PWD}xx", "he/homexx"),
    ("he${XXX:-${PWD:-yyy}}xx", "he/homexx"),
    ("he${XXX:-${YYY:-yyy}}xx", "heyyyxx"),
    ("he${XXX:YYY}", None),
    ("he${XXX?}", None),
    ("he${XXX:?}", None),
    ("he${PWD?}", "he/home"),
    ("he${NULL?}", "he"),
    ("he${NULL:?}", None),
    ("he${XXX:+${PWD}}xx", "hexx"),
    ("he${PWD:+${XXX}}xx", "hexx"),
    ("he${PWD:+${SHELL}}xx", "hebashxx"),
    ("he${XXX:+000}xx", "hexx"),
    ("he${PWD:+000}xx", "he000xx"),
    ("he${NULL-default}", "he"),
    ("he${NULL:-default}", "hedefault"),
    ("he${NULL+alt}", "healt"),
    ("he${NULL:+alt}", "he"),
    ("'he${XX}'", "he${XX}"),
    ('"he${PWD}"', "he/home"),
    ("\"he'$PWD'\"", "he'/home'"),
    ("'$PWD'", "$PWD"),
    ("he${PWD", None),
    ("he${PWD:=000}xx", None),
    ("he${PWD:+${PWD}:}xx", "he/home:xx"),
    ("he${XXX:-\\$PWD:}xx", "he$PWD:xx"),
    ("he${XXX:-\\${PWD}z}xx", "he${PWDz}xx"),
    ("안녕$KOREAN", "안녕한국어"),
    ("${aaa}}", "}"),
    ("${aaa:-bbb {foo}", "bbb {foo"),
    ("${:-bbb}", None),
    ("${1:-bbb}", "bbb"),
    ("$999aaa", "aaa"),
    ("$@@@", "@@"),
    ("${@:-bbb}aaa", "bbbaaa"),
    ("${#:+bbb}", ""),
    ("${PWD#/ho}", "me"),
    ("${PWD##*o}", "me"),
    ("${PWD%e}", "/hom"),
    ("${SHELL%%a*}", "b"),
    ("${SHELL/a/A}", "bAsh"),
    ("${KOREAN//어/X}", "한국X"),
    ("${PWD:#x}", None),
]


class ExpansionTests(SynchronousTestCase):
    def test_words(self) -> None:
        """
        Every form expands as BuildKit's lexer expands it; what it
        refuses is an ExpansionError naming the word.
        """
        for word, expected in WORDS:
            if expected is None:
                e = self.assertRaises(ExpansionError, Lex().process_word, word, ENV)
                self.assertIn("failed to process", str(e), word)
            else:
                self.assertEqual(Lex().process_word(word, ENV), expected, word)

    def test_split(self) -> None:
        """
        Words split on unquoted spaces after expansion; quoted text and
        escaped spaces stay one word.
        """
        env = {"space": "abc  def", "leading": "  ab c", "trailing": "ab c   "}
        cases = [
            ("hello${space}bye", ["helloabc", "defbye"]),
            ('hello"${space}"bye', ["helloabc  defbye"]),
            ("hello${leading}def", ["hello", "ab", "cdef"]),
            ('hello"${leading}" def', ["hello  ab c", "def"]),
            ("hello${trailing}d", ["helloab", "c", "d"]),
            ("hello\\ there", ["hello there"]),
            ('hello\\" there', ['hello"', "there"]),
            ("hello'$there'", ["hello$there"]),
            ('"" a', ["a"]),
        ]
        for word, expected in cases:
            self.assertEqual(Lex().process_words(word, env), expected, word)

    def test_escape_token(self) -> None:
        """With the backtick escape, a backslash is an ordinary character."""
        self.assertEqual(Lex("`").process_word("C:\\dir`$PWD", ENV), "C:\\dir$PWD")

    def test_matches(self) -> None:
        """Which names a word used and which it lacked are reported."""
        result, matched, unmatched = Lex().process_word_with_matches("${FOO:-a} $BAR ${PWD}", ENV)
        self.assertEqual((result, matched, unmatched), ("a  /home", {"PWD"}, {"FOO", "BAR"}))

    def test_skip_unset(self) -> None:
        """Unset references stay as written when asked (the parser's heredoc markers)."""
        self.assertEqual(Lex(skip_unset=True).process_word("$X ${Y} ${Z:-d} $PWD", ENV), "$X ${Y} ${Z:-d} /home")

    def test_skip_quotes(self) -> None:
        """Quotes can be ordinary characters (a COPY here-document's content)."""
        self.assertEqual(Lex(skip_quotes=True).process_word("'$PWD' \"x\"", ENV), "'/home' \"x\"")

    def test_mandatory_message(self) -> None:
        """${VAR?message} fails with the message, variables in it expanded."""
        e = self.assertRaises(ExpansionError, Lex().process_word, "${VAR?message here$PWD}", ENV)
        self.assertIn("VAR: message here/home", str(e))

    def test_go_quote(self) -> None:
        """Quoting follows Go's %q."""
        self.assertEqual(go_quote('a"b\\c\n\x00\u2603'), '"a\\"b\\\\c\\n\\x00\u2603"')
