# -*- test-case-name: ross.test.test_build_parser -*-
"""
The Dockerfile parser and its instructions (L{ross.engine.build.parser},
L{ross.engine.build.instructions}): the syntax BuildKit's parser accepts,
checked with the same parse-tree notation its tests use, and every error
refused with its line number.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.build import instructions as ins
from ross.engine.build.parser import DockerfileError, Heredoc, dump, parse, parse_heredoc, _Problem


def tree(source: str) -> str:
    return dump(parse(source))


class SyntaxTests(SynchronousTestCase):
    """What each instruction's arguments become."""

    def test_forms(self) -> None:
        """
        Shell forms stay one string, JSON arrays become their strings,
        whitespace lists split; unknown instructions keep an empty word.
        """
        self.assertEqual(tree(
            'FROM ubuntu:14.04 AS base\n'
            'RUN apt-get update && apt-get install -y foo\n'
            'CMD ["a", "b"]\n'
            'CMD [ "a",\t"b" ]\t\n'
            'CMD []\n'
            'CMD [""]\n'
            'ENTRYPOINT /bin/sh -c\n'
            'EXPOSE 80   443/tcp\n'
            'VOLUME ["/a", "/b"]\n'
            'VOLUME /c /d\n'
            'ADD a b /dest/\n'
            'COPY ["with space", "/dest"]\n'
            'USER  nobody:nogroup \n'
            'WORKDIR /a b\n'
            'STOPSIGNAL SIGKILL\n'
            'MAINTAINER Someone <x@y>\n'
            'SHELL ["/bin/bash", "-c"]\n'
            'ARG a b=c "d e"=f\n'
            'NOSUCH thing\n'),
            '(from "ubuntu:14.04" "AS" "base")\n'
            '(run "apt-get update && apt-get install -y foo")\n'
            '(cmd "a" "b")\n'
            '(cmd "a" "b")\n'
            '(cmd)\n'
            '(cmd "")\n'
            '(entrypoint "/bin/sh -c")\n'
            '(expose "80" "443/tcp")\n'
            '(volume "/a" "/b")\n'
            '(volume "/c" "/d")\n'
            '(add "a" "b" "/dest/")\n'
            '(copy "with space" "/dest")\n'
            '(user "nobody:nogroup")\n'
            '(workdir "/a b")\n'
            '(stopsignal "SIGKILL")\n'
            '(maintainer "Someone <x@y>")\n'
            '(shell "/bin/bash" "-c")\n'
            '(arg "a" "b=c" "\\"d e\\"=f")\n'
            '(nosuch "")\n')

    def test_json_strings(self) -> None:
        """JSON escapes are decoded; anything but strings in the array is refused."""
        self.assertEqual(tree('CMD ["abc 123", "♥", "\\" \\\\ \\/ \\b \\f \\n \\r \\t \\u0000"]\n'),
                         '(cmd "abc 123" "♥" "\\" \\\\ / \\b \\f \\n \\r \\t \\x00")\n')
        for bad in ('["a",42,"b"]', '["a",{},"b"]', '["a",["c"]]', '["a",true]', '["a",null]'):
            e = self.assertRaises(DockerfileError, parse, f"FROM x\nCMD {bad}\n")
            self.assertEqual(str(e), "dockerfile parse error on line 2: "
                                     "when using JSON array syntax, arrays must be comprised of strings only")
        self.assertEqual(tree('CMD [ "a" \nCMD ["a", NaN]\nCMD {"a": 1}\n'),
                         '(cmd "[ \\"a\\"")\n(cmd "[\\"a\\", NaN]")\n(cmd "{\\"a\\": 1}")\n')

    def test_env(self) -> None:
        """ENV and LABEL: the old NAME VALUE form and NAME=VALUE pairs, quotes kept for expansion."""
        self.assertEqual(tree(
            'ENV name value with  spaces\n'
            'ENV name=value name2=value2\n'
            'ENV name="value value1"\n'
            'ENV name=value\\ value2\n'
            "ENV name='a\\'b''\n"
            'ENV name=value \\\n    name2="a \\\n  b"\n'
            'LABEL "com.example"=x\n'),
            '(env "name" "value with  spaces" "")\n'
            '(env "name" "value" "=" "name2" "value2" "=")\n'
            '(env "name" "\\"value value1\\"" "=")\n'
            '(env "name" "value\\\\ value2" "=")\n'
            '(env "name" "\'a\\\\\'b\'\'" "=")\n'
            '(env "name" "value" "=" "name2" "\\"a   b\\"" "=")\n'
            '(label "\\"com.example\\"" "x" "=")\n')

    def test_env_errors(self) -> None:
        """An ENV without a value, or a word without =, names its line."""
        e = self.assertRaises(DockerfileError, parse, "FROM x\n\nENV alone\n")
        self.assertEqual((e.line, e.problem), (3, "ENV must have two arguments"))
        e = self.assertRaises(DockerfileError, parse, "FROM x\nLABEL a=b c\n")
        self.assertEqual((e.line, e.problem),
                         (2, 'Syntax error - can\'t find = in "c". Must be of the form: name=value'))

    def test_flags(self) -> None:
        """Flags are the --words before the arguments; a lone -- ends them."""
        self.assertEqual(tree(
            'COPY --user=me --doit=true foo /tmp/\n'
            'COPY --doit=true -- foo /tmp/\n'
            'COPY -- foo /tmp/\n'
            'CMD --doit [ "a", "b" ]\n'
            'CMD --doit -- [ ]\n'
            'COPY --chown="a b" x y\n'
            'COPY -x /tmp/\n'),
            '(copy ["--user=me" "--doit=true"] "foo" "/tmp/")\n'
            '(copy ["--doit=true"] "foo" "/tmp/")\n'
            '(copy "foo" "/tmp/")\n'
            '(cmd ["--doit"] "a" "b")\n'
            '(cmd ["--doit"])\n'
            '(copy ["--chown=a b"] "x" "y")\n'
            '(copy "-x" "/tmp/")\n')

    def test_healthcheck(self) -> None:
        """HEALTHCHECK keeps its type word apart from the command."""
        self.assertEqual(tree(
            'HEALTHCHECK\n'
            'HEALTHCHECK --interval=5s --retries=3 \\\n  CMD /check --quiet\n'
            'HEALTHCHECK CMD\n'
            'HEALTHCHECK   CMD   a b\n'
            'HEALTHCHECK --timeout=3s CMD ["foo"]\n'
            'HEALTHCHECK NONE\n'),
            '(healthcheck)\n'
            '(healthcheck ["--interval=5s" "--retries=3"] "CMD" "/check --quiet")\n'
            '(healthcheck "CMD")\n'
            '(healthcheck "CMD" "a b")\n'
            '(healthcheck ["--timeout=3s"] "CMD" "foo")\n'
            '(healthcheck "NONE")\n')

    def test_onbuild(self) -> None:
        """ONBUILD holds its instruction as a child."""
        self.assertEqual(tree('ONBUILD RUN echo hi\nONBUILD ADD ["a", "b"]\n'),
                         '(onbuild (run "echo hi"))\n(onbuild (add "a" "b"))\n')

    def test_continuations_and_comments(self) -> None:
        """
        A trailing escape joins the next line (spaces after it allowed),
        comment lines inside an instruction are skipped, an escaped escape
        does not continue, a continuation may end the file.
        """
        self.assertEqual(tree(
            '# a comment\n'
            'RUN echo \\\n'
            '# not part of it\n'
            '  hello \\   \n'
            '  world\n'
            '   # indented comment\n'
            'RUN echo a\\\\\n'
            'RUN echo \\\n'
            '\\\n'
            'x\n'
            'RUN tail \\'),
            '(run "echo   hello   world")\n'
            '(run "echo a\\\\\\\\")\n'
            '(run "echo x")\n'
            '(run "tail")\n')

    def test_empty_continuation_warns(self) -> None:
        """Blank lines inside an instruction are skipped with a warning."""
        parsed = parse("FROM x\nRUN something \\\n\n    following \\\n\n    more\nRUN a \\\n  b\n")
        self.assertEqual(dump(parsed), '(from "x")\n(run "something     following     more")\n(run "a   b")\n')
        self.assertEqual(parsed.warnings, ("Empty continuation line found in: RUN something     following     more",))

    def test_escape_directive(self) -> None:
        """
        # escape=` makes the backtick the escape (Windows paths keep their
        backslashes); directives must be first; a repeated or bad one is refused.
        """
        parsed = parse("# escape=`\nFROM x\nCOPY C:\\a `\n  C:\\b\nRUN a \\\n")
        self.assertEqual(parsed.escape, "`")
        self.assertEqual(dump(parsed), '(from "x")\n(copy "C:\\\\a" "C:\\\\b")\n(run "a \\\\")\n')
        late = parse("FROM x\n# escape=`\nRUN a `\n")
        self.assertEqual(late.escape, "\\")
        after_comment = parse("# comment\n# escape=`\nFROM x\n")
        self.assertEqual(after_comment.escape, "\\")
        e = self.assertRaises(DockerfileError, parse, "# escape=`\n# escape=\\\nFROM x\n")
        self.assertEqual((e.line, e.problem), (2, "only one escape parser directive can be used"))
        e = self.assertRaises(DockerfileError, parse, "# escape=x\nFROM x\n")
        self.assertEqual((e.line, e.problem), (1, "invalid escape token 'x' does not match ` or \\"))

    def test_syntax_directive(self) -> None:
        """# syntax= is kept (the builder says it ignores it); case does not matter."""
        parsed = parse("# Syntax = docker/dockerfile:1.4\n#check=skip=all\nFROM x\n")
        self.assertEqual(parsed.directive("syntax"), "docker/dockerfile:1.4")
        self.assertEqual(parsed.directive("check"), "skip=all")

    def test_bom_crlf_case(self) -> None:
        """A byte-order mark, CRLF line ends and lower-case instructions are fine."""
        parsed = parse(b"\xef\xbb\xbffrom x\r\nrun echo hi\r\n")
        self.assertEqual(dump(parsed), '(from "x")\n(run "echo hi")\n')
        self.assertEqual(parsed.nodes[0].keyword, "from")

    def test_line_numbers(self) -> None:
        """Every instruction knows the lines it spans."""
        parsed = parse("\n# c\nFROM x\n\nRUN a \\\n  b \\\n\n  c\nCMD d\n")
        self.assertEqual([(n.start_line, n.end_line) for n in parsed.nodes], [(3, 3), (5, 8), (9, 9)])

    def test_empty(self) -> None:
        """A file without instructions is refused."""
        self.assertEqual(str(self.assertRaises(DockerfileError, parse, b"")), "file with no instructions")
        e = self.assertRaises(DockerfileError, parse, "# only\n\n# comments\n")
        self.assertEqual((e.line, e.problem), (3, "file with no instructions"))

    def test_line_too_long(self) -> None:
        """A line longer than BuildKit's scanner takes is refused with its number."""
        e = self.assertRaises(DockerfileError, parse, "FROM x\nLABEL a=" + "a" * 70000 + "\n")
        self.assertEqual((e.line, e.problem), (2, "dockerfile line greater than max allowed size of 65535"))


class HeredocTests(SynchronousTestCase):
    """Here-documents in RUN, COPY and ADD."""

    def test_heredocs(self) -> None:
        """Delimiters, quoting (no expansion), <<- and descriptors, as BuildKit reads them."""
        source = (
            "FROM x\n"
            "RUN <<EMPTY\nEMPTY\n"
            "RUN 3<<EMPTY2\nEMPTY2\n"
            'RUN "<<NOHEREDOC"\n'
            "RUN <<INDENT\n\tfoo\n\tbar\nINDENT\n"
            "RUN <<-UNINDENT\n\tbaz\n\tquux\n\tUNINDENT\n"
            "RUN <<-'NOEXPAND'\n\tdon't expand $NAME\nNOEXPAND\n"
            "RUN <<COMMENT\n# internal comment\necho foo # trailing\nCOMMENT\n"
            "RUN --mount=type=cache,target=/foo <<MOUNT\necho hello\nMOUNT\n"
            "COPY <<FILE1 <<FILE2 /dest\ncontent 1\nFILE1\ncontent 2\nFILE2\n"
            "COPY <<X <<Y /dest\nY\nX\nX\nY\n"
            "RUN <<COMPLEX python3\nprint('hello world')\nCOMPLEX\n"
            "RUN <<eo'f'\necho foo\neof\n"
            "RUN <<eo\\'f\necho foo\neo'f\n"
            "RUN <<'one two'\necho bar\none two\n"
            "RUN <<$EOF\n$EOF\n"
            "RUN <<  EOF  > foo\nEOF\n"
            'RUN ["<<EOF"]\n'
            "USER <<INVALID\n"
        )
        heredocs = [node.heredocs for node in parse(source).nodes[1:]]
        self.assertEqual(heredocs, [
            (Heredoc("EMPTY"),),
            (Heredoc("EMPTY2", fd=3),),
            (),
            (Heredoc("INDENT", "\tfoo\n\tbar\n"),),
            (Heredoc("UNINDENT", "\tbaz\n\tquux\n", chomp=True),),
            (Heredoc("NOEXPAND", "\tdon't expand $NAME\n", expand=False, chomp=True),),
            (Heredoc("COMMENT", "# internal comment\necho foo # trailing\n"),),
            (Heredoc("MOUNT", "echo hello\n"),),
            (Heredoc("FILE1", "content 1\n"), Heredoc("FILE2", "content 2\n")),
            (Heredoc("X", "Y\n"), Heredoc("Y", "X\n")),
            (Heredoc("COMPLEX", "print('hello world')\n"),),
            (Heredoc("eof", "echo foo\n", expand=False),),
            (Heredoc("eo'f", "echo foo\n"),),
            (Heredoc("one two", "echo bar\n", expand=False),),
            (Heredoc("$EOF"),),
            (Heredoc("EOF"),),
            (),
            (),
        ])

    def test_onbuild_heredoc(self) -> None:
        """ONBUILD's instruction may have a here-document."""
        node = parse("ONBUILD RUN <<EOF\necho hi\nEOF\n").nodes[0]
        assert node.child is not None
        self.assertEqual(node.child.heredocs, (Heredoc("EOF", "echo hi\n"),))

    def test_unterminated(self) -> None:
        """A here-document without its delimiter names the line it starts on."""
        e = self.assertRaises(DockerfileError, parse, "FROM x\nRUN <<EOF\necho\n EOF\n")
        self.assertEqual((e.line, e.problem), (2, "unterminated heredoc"))

    def test_markers(self) -> None:
        """What is and is not a here-document marker."""
        for word in ("<<EOF", "<<'EOF'", '<<"EOF"', "<<-EOF", "<<-'EOF'", '<<EO"F"', "<< EOF", "<<- EOF"):
            heredoc = parse_heredoc(word)
            assert heredoc is not None, word
            self.assertEqual(heredoc.name, "EOF")
        for word in ("", "EOF", "<<", "<<-", "<EOF", "<<<EOF", "<<EOF sh"):
            self.assertIsNone(parse_heredoc(word), word)
        for word in ("<<'EOF", '<<"EOF', "<<EOF'", '<<EOF"'):
            self.assertRaises(_Problem, parse_heredoc, word)


def stages_of(source: str) -> ins.Stages:
    return ins.parse_stages(parse(source))


def error(source: str) -> tuple[int, str]:
    e = None
    try:
        stages_of(source)
    except DockerfileError as caught:
        e = caught
    assert e is not None, source
    return e.line, e.problem


class InstructionTests(SynchronousTestCase):
    """Instructions checked and typed, stages grouped."""

    def test_stages(self) -> None:
        """ARGs before the first FROM are global; each FROM starts a stage; AS names it (lower case)."""
        parsed = stages_of("ARG V=1\nARG W\nFROM a AS Build\nRUN x\nFROM --platform=linux/amd64 scratch\nCOPY --from=build /a /b\n")
        self.assertEqual([a.pairs for a in parsed.meta_args], [(("V", "1"),), (("W", None),)])
        first, second = parsed.stages
        self.assertEqual((first.base, first.name, first.index, len(first.commands)), ("a", "build", 0, 1))
        self.assertEqual((second.base, second.name, second.platform), ("scratch", "", "linux/amd64"))
        copy = second.commands[0]
        assert isinstance(copy, ins.Copy)
        self.assertEqual((copy.source_stage, copy.sources, copy.dest, copy.line), ("build", ("/a",), "/b", 6))
        self.assertEqual(parsed.index_of("BUILD"), 0)

    def test_commands(self) -> None:
        """Each instruction's arguments, typed."""
        stage = stages_of(
            'FROM x\n'
            'RUN echo $HOME\n'
            'RUN ["echo", "hi"]\n'
            'RUN --network=none true\n'
            'CMD echo a\n'
            'ENTRYPOINT ["sh"]\n'
            'ENV A=1 B="two words"\n'
            'EXPOSE 80 53/udp\n'
            'HEALTHCHECK --interval=1m30s --timeout=500ms --start-period=2s --retries=4 CMD ["check"]\n'
            'HEALTHCHECK NONE\n'
            'ARG N=v M\n'
            'ADD --chown=1:2 --chmod=644 --unpack=false a.tar /x/\n'
            'COPY <<EOF /note\nhi $A\nEOF\n'
            'ONBUILD RUN <<EOF\necho x\nEOF\n'
            'SHELL ["/bin/bash", "-c"]\n'
            'STOPSIGNAL 9\n'
        ).stages[0]
        run, exec_run, no_net, cmd, entry, env, expose, health, none, arg, add, copy, onbuild, shell, signal = \
            stage.commands
        assert isinstance(run, ins.Run) and isinstance(exec_run, ins.Run) and isinstance(no_net, ins.Run)
        self.assertEqual((run.args, run.shell_form, run.network), (("echo $HOME",), True, "default"))
        self.assertEqual((exec_run.args, exec_run.shell_form), (("echo", "hi"), False))
        self.assertEqual(no_net.network, "none")
        assert isinstance(cmd, ins.Cmd) and isinstance(entry, ins.Entrypoint)
        self.assertEqual((cmd.args, entry.args, entry.shell_form), (("echo a",), ("sh",), False))
        assert isinstance(env, ins.Env)
        self.assertEqual(env.pairs, (ins.KeyValue("A", "1"), ins.KeyValue("B", '"two words"')))
        assert isinstance(expose, ins.Expose)
        self.assertEqual(expose.ports, ("53/udp", "80"))
        assert isinstance(health, ins.Healthcheck) and isinstance(none, ins.Healthcheck)
        self.assertEqual((health.test, health.interval_ns, health.timeout_ns, health.start_period_ns, health.retries),
                         (("CMD", "check"), 90_000_000_000, 500_000_000, 2_000_000_000, 4))
        self.assertEqual(none.test, ("NONE",))
        assert isinstance(arg, ins.Arg)
        self.assertEqual(arg.pairs, (("N", "v"), ("M", None)))
        assert isinstance(add, ins.Copy) and isinstance(copy, ins.Copy)
        self.assertEqual((add.add, add.chown, add.chmod, add.unpack, add.sources, add.dest),
                         (True, "1:2", "644", False, ("a.tar",), "/x/"))
        self.assertEqual((copy.sources, copy.inline, copy.dest), ((), (ins.Inline("EOF", "hi $A\n", True),), "/note"))
        assert isinstance(onbuild, ins.Onbuild)
        self.assertEqual(onbuild.expression, "RUN <<EOF\necho x\nEOF")
        assert isinstance(shell, ins.Shell) and isinstance(signal, ins.StopSignal)
        self.assertEqual((shell.shell, signal.signal), (("/bin/bash", "-c"), "9"))
        self.assertEqual(str(run), "RUN echo $HOME")

    def test_healthcheck_shell(self) -> None:
        """A shell-form health check is CMD-SHELL."""
        health = stages_of("FROM x\nHEALTHCHECK CMD hello world\n").stages[0].commands[0]
        assert isinstance(health, ins.Healthcheck)
        self.assertEqual(health.test, ("CMD-SHELL", "hello world"))

    def test_errors(self) -> None:
        """Every malformed instruction is refused with its line and BuildKit's words."""
        cases = [
            ("FROM x\nMAINTAINER", "MAINTAINER requires exactly one argument"),
            ("FROM x\nWORKDIR", "WORKDIR requires exactly one argument"),
            ("FROM x\nUSER", "USER requires exactly one argument"),
            ("FROM x\nSTOPSIGNAL", "STOPSIGNAL requires exactly one argument"),
            ("FROM x\nENV", "ENV requires at least one argument"),
            ("FROM x\nLABEL", "LABEL requires at least one argument"),
            ("FROM x\nONBUILD", "ONBUILD requires at least one argument"),
            ("FROM x\nHEALTHCHECK", "HEALTHCHECK requires at least one argument"),
            ("FROM x\nEXPOSE", "EXPOSE requires at least one argument"),
            ("FROM x\nVOLUME", "VOLUME requires at least one argument"),
            ("FROM x\nARG", "ARG requires at least one argument"),
            ("FROM x\nSHELL []", "SHELL requires at least one argument"),
            ("FROM x\nADD arg1", "ADD requires at least two arguments, but only one was provided. "
                                 "Destination could not be determined"),
            ("FROM x\nCOPY arg1", "COPY requires at least two arguments, but only one was provided. "
                                  "Destination could not be determined"),
            ("FROM x\nONBUILD FROM scratch", "FROM isn't allowed as an ONBUILD trigger"),
            ("FROM x\nONBUILD MAINTAINER me", "MAINTAINER isn't allowed as an ONBUILD trigger"),
            ("FROM x\nONBUILD ONBUILD RUN x", "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
            ("FROM x\nMAINTAINER --boo joe", "unknown flag: --boo"),
            ("FROM x\nCOPY --chwon=1 a b", "unknown flag: --chwon (did you mean --chown?)"),
            ("FROM x\nCOPY --from a b", "missing a value on flag: --from"),
            ("FROM x\nCOPY --link=maybe a b", "expecting boolean value for flag --link, not: maybe"),
            ("FROM x\nCOPY --from=a --from=b c d", "duplicate flag specified: --from"),
            ("FROM x\nFOO bar", "unknown instruction: FOO"),
            ("FROM x\nfoo bar", "unknown instruction: foo"),
            ("FROM x\nRUNN true", "unknown instruction: RUNN (did you mean RUN?)"),
            ("FROM x AS 1st", 'invalid name for build stage: "1st", name can\'t start with a number or contain symbols'),
            ("FROM x AS", "FROM requires either one or three arguments"),
            ("FROM", "FROM requires either one or three arguments"),
            ("FROM x y z w", "FROM requires either one or three arguments"),
            ("FROM a AS b\nFROM c AS B", 'duplicate stage name "b"'),
            ("FROM x\nHEALTHCHECK --interval=50ns CMD x", 'Interval "interval" cannot be less than 1ms'),
            ("FROM x\nHEALTHCHECK --interval=5x CMD x", 'time: unknown unit "x" in duration "5x"'),
            ("FROM x\nHEALTHCHECK --retries=-1 CMD x", "--retries cannot be negative (-1)"),
            ("FROM x\nHEALTHCHECK --retries=x CMD y", 'strconv.ParseInt: parsing "x": invalid syntax'),
            ("FROM x\nHEALTHCHECK CONNECT TCP 7000", 'Unknown type "CONNECT" in HEALTHCHECK (try CMD)'),
            ("FROM x\nHEALTHCHECK CMD", "Missing command after HEALTHCHECK CMD"),
            ("FROM x\nHEALTHCHECK NONE x", "HEALTHCHECK NONE takes no arguments"),
            ("FROM x\nSHELL sh -c", "SHELL requires the arguments to be in JSON form"),
            ("FROM x\nVOLUME [\"\"]", "VOLUME specified can not be an empty string"),
            ("FROM x\nARG =v", "ARG names can not be blank"),
            ("FROM x\nRUN --mount=type=cache,target=/x true", "RUN --mount is not supported by Ross's builder"),
            ("FROM x\nRUN --network=bridge0 true", 'unsupported network mode "bridge0": use default, none or host'),
            ("FROM x\nCOPY a <<EOF\nEOF", "COPY cannot accept a heredoc as a destination"),
            ("FROM x\nCOPY --parents a b", "COPY --parents is not supported by Ross's builder"),
            # Taken and not applied, they would copy what was to be left out
            # and check nothing.
            ("FROM x\nCOPY --exclude=*.txt . /x", "COPY --exclude is not supported by Ross's builder"),
            ("FROM x\nADD --exclude=dir a /x", "ADD --exclude is not supported by Ross's builder"),
            ("FROM x\nADD --checksum=sha256:00 a /x",
             "ADD --checksum is not supported by Ross's builder: it is for HTTP(S) sources, "
             "and Ross's builder adds local files only"),
            ("RUN x", "no build stage in current context"),
            ("ARG a\nENV b=c", "no build stage in current context"),
        ]
        for source, problem in cases:
            line = source.count("\n") + 1 if "<<" not in source else 2
            self.assertEqual(error(source), (line, problem), source)

    def test_no_from(self) -> None:
        """Only ARGs is no Dockerfile either."""
        e = self.assertRaises(DockerfileError, stages_of, "ARG a=1\n")
        self.assertIn("no build stage in current context", str(e))

    def test_durations(self) -> None:
        """Go durations, as HEALTHCHECK takes them."""
        for text, ns in (("0", 0), ("1ns", 1), ("1.5s", 1_500_000_000), ("2h45m", 9_900_000_000_000),
                         ("300ms", 300_000_000), ("1us", 1000), ("-1s", -1_000_000_000)):
            self.assertEqual(ins.parse_duration(text), ns, text)
        for text in ("", "1", "s", "1x", "1.2.3s"):
            self.assertRaises(_Problem, ins.parse_duration, text)
