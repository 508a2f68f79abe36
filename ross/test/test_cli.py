"""
Tests for the CLI frame: argument handling, output helpers, errors and exit
codes.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase, TestCase

import ross as ross_package
from ross import humanize
from ross.cli import main
from ross.client import base, settings
from ross.errors import InvalidArgument
from ross.testing.daemon import REPO, InProcessDaemon, run_cli


class ResolveTests(SynchronousTestCase):
    def test_commands_and_groups(self) -> None:
        self.assertEqual(main.resolve(["ps", "-a"]), ("ross ps", "ross.cli.containers:cmd_ps", ["-a"]))
        self.assertEqual(main.resolve(["container", "ls"])[1], "ross.cli.containers:cmd_ps")
        self.assertEqual(main.resolve(["image", "rm", "x"])[1:], ("ross.cli.images:cmd_rmi", ["x"]))
        self.assertEqual(main.resolve(["snapshot", "ls"])[1], "ross.cli.snapshots:cmd_snapshot_ls")

    def test_unknown_and_help(self) -> None:
        e = self.assertRaises(settings.UsageError, main.resolve, ["frobnicate"])
        self.assertIn("'frobnicate' is not a ross command", str(e))
        e = self.assertRaises(settings.UsageError, main.resolve, ["image", "frob"])
        self.assertIn("See 'ross image --help'", str(e))
        h = self.assertRaises(main.HelpRequested, main.resolve, ["volume"])
        self.assertIn("Usage:  ross volume COMMAND", str(h))

    def test_globals(self) -> None:
        g, rest = settings.parse_globals(["-H", "tcp://h:1", "--token=t", "ps", "-H", "x"])
        self.assertEqual((g.host, g.token, rest), ("tcp://h:1", "t", ["ps", "-H", "x"]))
        self.assertRaises(settings.UsageError, settings.parse_globals, ["--bogus", "ps"])
        self.assertRaises(settings.UsageError, settings.parse_globals, ["-H"])

    def test_every_entry_names_a_function(self) -> None:
        """
        Every command in the table names module:cmd_function.
        """
        def walk(table: Any) -> Any:
            for first, second in table.values():
                if isinstance(second, dict):
                    yield from walk(second)
                else:
                    yield first

        for target in walk(main.COMMANDS):
            module, _, function = target.partition(":")
            self.assertTrue(module.startswith("ross.cli.") and function.startswith("cmd_"), target)


class FormatTests(SynchronousTestCase):
    def test_human_size(self) -> None:
        """
        docker's decimal units with three to four significant digits.
        """
        self.assertEqual(
            [humanize.human_size(n) for n in (0, 999, 1000, 4_261_000, 1_234_567_890, 7.5e12)],
            ["0B", "999B", "1kB", "4.261MB", "1.235GB", "7.5TB"])

    def test_human_duration(self) -> None:
        cases = [(0.2, "Less than a second"), (1, "1 second"), (45, "45 seconds"), (61, "About a minute"),
                 (600, "10 minutes"), (3600, "About an hour"), (3 * 3600, "3 hours"), (3 * 86400, "3 days"),
                 (20 * 86400, "2 weeks"), (90 * 86400, "3 months"), (800 * 86400, "2 years")]
        self.assertEqual([humanize.human_duration(s) for s, _ in cases], [e for _, e in cases])

    def test_docker_status(self) -> None:
        """
        The STATUS column as docker writes it, for every state, the same
        for the API's text and the TUI's clock-driven one.
        """
        cases = [
            (("running", 0, "", 1000, 0), "Up 5 seconds"),
            (("running", 0, "healthy", 1000, 0), "Up 5 seconds (healthy)"),
            (("running", 0, "starting", 1000, 0), "Up 5 seconds (health: starting)"),
            (("paused", 0, "healthy", 1000, 0), "Up 5 seconds (Paused)"),
            (("exited", 137, "", 900, 995), "Exited (137) 10 seconds ago"),
            (("exited", 0, "", 0, 0), "Created"),
            (("restarting", 1, "", 900, 1000), "Restarting (1) 5 seconds ago"),
            (("restarting", 1, "", 0, 0), "Restarting (1)"),
            (("removing", 0, "", 900, 1000), "Removal In Progress"),
            (("dead", 0, "", 900, 1000), "Dead"),
            (("created", 0, "", 0, 0), "Created"),
        ]
        self.assertEqual([humanize.docker_status(*args, now=1005) for args, _ in cases], [e for _, e in cases])

    def test_table(self) -> None:
        text = base.format_table(["A", "LONGER"], [["xyz", "1"], ["q", "22"]])
        self.assertEqual(text, "A     LONGER\nxyz   1\nq     22\n")

    def test_parse_time(self) -> None:
        now = 1_000_000.0
        self.assertEqual(humanize.parse_time("10m", now), now - 600)
        self.assertEqual(humanize.parse_time("1h30m", now), now - 5400)
        self.assertEqual(humanize.parse_time("1732521600.5", now), 1732521600.5)
        self.assertEqual(humanize.parse_time("2024-11-25T08:00:00Z", now), 1732521600.0)
        self.assertEqual(humanize.parse_time("2024-11-25T08:00:00.123456789+00:00", now), 1732521600.123456)
        e = self.assertRaises(InvalidArgument, humanize.parse_time, "yesterday")
        self.assertIn("invalid time 'yesterday'", e.message)

    def test_rfc3339(self) -> None:
        self.assertEqual(humanize.rfc3339(1732521600, 5), "2024-11-25T08:00:00.000000005Z")

    def test_filters(self) -> None:
        self.assertEqual(base.parse_filters(["a=b", "label=x=y"]), [("a", "b"), ("label", "x=y")])
        self.assertRaises(base.CliError, base.parse_filters, ["nokey"])

    def test_progress_piped(self) -> None:
        """
        Piped, progress prints one plain line at the end.
        """
        out = io.StringIO()
        p = base.Progress("Loading", total=2000, stream=out)
        p.advance(1000)
        p.advance(1000)
        p.finish()
        self.assertEqual(out.getvalue(), "Loading: [" + "=" * 50 + "] 2kB/2kB\n")


def ross(*args: str, **kw: Any) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "ross.cli.main", *args], capture_output=True,
                          cwd=REPO, timeout=60, **kw)


def _imported_by(address: str, argv: list[str], modules: set[str]) -> tuple[int, set[str], str]:
    """
    Run the CLI with C{argv} in a fresh interpreter against C{address}:
    its exit code, which of C{modules} it imported, and its stderr.
    """
    script = (
        "import sys\n"
        "from ross.cli.main import main\n"
        "code = main(sys.argv[2:])\n"
        "print(code, *sorted(set(sys.modules) & set(sys.argv[1].split(','))))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, ",".join(modules), *argv], capture_output=True, timeout=60,
                          cwd=str(REPO), env=dict(os.environ, ROSS_HOST=address, PYTHONPATH=str(REPO)))
    code, *imported = done.stdout.decode().splitlines()[-1].split()
    return int(code), set(imported), done.stderr.decode()


class ExitCodeTests(TestCase):
    timeout = 60

    @inlineCallbacks
    def test_unreachable_daemon(self) -> Any:
        """
        No daemon: docker's message and exit code 125.
        """
        result = yield deferToThread(run_cli, "unix:///tmp/ross-nonexistent/ross.sock", "info")
        self.assertEqual(result.returncode, 125)
        self.assertEqual(
            result.stderr,
            b"Error: Cannot connect to the Ross daemon at unix:///tmp/ross-nonexistent/ross.sock."
            b" Is the daemon running?\n")

    @inlineCallbacks
    def test_errors_without_grpcio(self) -> Any:
        """
        A command that fails (no daemon, a missing object, a failed stream)
        says why without importing grpcio (45-65 ms).
        """
        daemon = InProcessDaemon(self)
        yield daemon.start()
        for address, argv, message in [
            ("unix:///tmp/ross-nonexistent/ross.sock", ["ps"], "Cannot connect to the Ross daemon"),
            (daemon.address, ["inspect", "nosuch"], "No such object: nosuch"),
            (daemon.address, ["logs", "nosuch"], "No such container: nosuch"),
            (daemon.address, ["rm", "nosuch"], "No such container: nosuch"),
        ]:
            code, imported, stderr = yield deferToThread(_imported_by, address, argv, {"grpc"})
            self.assertIn(message, stderr, argv)
            self.assertNotEqual(code, 0, argv)
            self.assertEqual(imported, set(), argv)

    @inlineCallbacks
    def test_lean_imports(self) -> Any:
        """
        A command that succeeds imports neither grpcio, PyPI's hpack,
        logging nor platform (hpack's import, with logging, was 5-6 ms of
        45; platform 1-2 ms).
        """
        daemon = InProcessDaemon(self)
        yield daemon.start()
        for argv in (["version"], ["ps", "-a"]):
            code, imported, stderr = yield deferToThread(
                _imported_by, daemon.address, argv, {"grpc", "hpack", "logging", "platform"})
            self.assertEqual((code, imported), (0, set()), (argv, stderr))

    @inlineCallbacks
    def test_bad_usage(self) -> Any:
        for argv, message in [
            (["frobnicate"], b"'frobnicate' is not a ross command"),
            (["--nope", "ps"], b"unknown flag: --nope"),
            (["info", "--nope"], b"unrecognized arguments: --nope"),
            (["-H", "ftp://x", "info"], b"invalid address 'ftp://x'"),
            # Values that do not fit the request: refused, no traceback.
            (["run", "--cpus", "inf", "busybox"], b'invalid argument "inf" for "--cpus" flag'),
            (["run", "--cpus", "1e400", "busybox"], b'invalid argument "1e400" for "--cpus" flag'),
            (["run", "--pids-limit", "99999999999999999999", "busybox"],
             b'argument --pids-limit: invalid argument "99999999999999999999": value out of range'),
            (["run", "--stop-timeout", "2147483648", "busybox"], b"value out of range"),
            (["update", "--cpu-quota", "9000000000000000000", "x"], b'"--cpu-quota" flag: value out of range'),
            (["stop", "-t", "-2147483649", "x"], b"value out of range"),
        ]:
            result = yield deferToThread(ross, *argv)
            self.assertEqual(result.returncode, 125, argv)
            self.assertIn(message, result.stderr)
            self.assertNotIn(b"Traceback", result.stderr)

    @inlineCallbacks
    def test_help(self) -> Any:
        result = yield deferToThread(ross, "--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn(b"Management Commands:", result.stdout)
        result = yield deferToThread(ross, "info", "--help")
        self.assertEqual(result.returncode, 0)
        self.assertIn(b"usage: ross info", result.stdout)

    @inlineCallbacks
    def test_templates(self) -> Any:
        """
        version, info and system df take docker's Go templates, with
        docker's field names; a bad template is refused with the reason.
        """
        daemon = InProcessDaemon(self)
        yield daemon.start()
        for argv, expected in [
            (["version", "--format", "{{.Client.Version}}={{.Server.Version}}"],
             f"{ross_package.__version__}={ross_package.__version__}\n"),
            (["info", "--format", "{{.Containers}} {{.ContainersRunning}} {{.Images}}"], "0 0 0\n"),
            (["system", "df", "--format", "{{.Type}}:{{.TotalCount}}"],
             "Images:0\nContainers:0\nLocal Volumes:0\nBuild Cache:0\n"),
            (["system", "df", "--format", "table {{.Type}}\\t{{.TotalCount}}"],
             "TYPE            TOTAL\nImages          0\nContainers      0\nLocal Volumes   0\nBuild Cache     0\n"),
        ]:
            result = yield deferToThread(run_cli, daemon.address, *argv)
            self.assertEqual((result.returncode, result.stdout.decode()), (0, expected), (argv, result.stderr))
        result = yield deferToThread(run_cli, daemon.address, "info", "--format", "{{.Nope.Deeper}}")
        self.assertEqual((result.returncode, result.stderr), (125, b"Error: template: can't evaluate field Nope\n"))

    @inlineCallbacks
    def test_events_filters(self) -> Any:
        """
        ``ross events`` replays since a time, filters, and stops at --until.
        """
        daemon = InProcessDaemon(self)
        yield daemon.start()
        daemon.engine.events.publish("container", "start", "c1" * 32, name="web")
        daemon.engine.events.publish("image", "tag", "busybox:latest")
        result = yield deferToThread(run_cli, daemon.address, "events", "--since", "1m", "--until", "0s",
                                     "--filter", "type=container")
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.decode().splitlines()
        self.assertEqual(len(lines), 1, lines)
        self.assertRegex(lines[0], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z container start (c1){32} \(name=web\)$")
        # docker's templates on docker's event documents.
        result = yield deferToThread(run_cli, daemon.address, "events", "--since", "1m", "--until", "0s",
                                     "--filter", "type=container", "--format",
                                     "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{.status}} {{.id}}")
        self.assertEqual(result.stdout, f"container start web start {'c1' * 32}\n".encode(), result.stderr)
        result = yield deferToThread(run_cli, daemon.address, "events", "--since", "1m", "--until", "0s",
                                     "--filter", "type=image", "--format", "json")
        document = json.loads(result.stdout)
        self.assertEqual((document["Type"], document["Action"], document["Actor"]["ID"], document["scope"]),
                         ("image", "tag", "busybox:latest", "local"))
        self.assertEqual(document["time"], document["timeNano"] // 1_000_000_000)
        result = yield deferToThread(run_cli, daemon.address, "events", "--format", "{{.Type")
        self.assertEqual((result.returncode, result.stderr), (125, b"Error: template: unclosed action\n"))


class DeferredPythonMessageTests(SynchronousTestCase):
    """
    L{ross.v1.defer_unused}: protobuf's pure-Python message module and
    descriptor database are not imported with the API's modules (nor is
    anything compiled), and are there for whoever uses them.
    """

    def python(self, script: str) -> list[str]:
        """
        The lines C{script} prints, run by a fresh interpreter.
        """
        done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, cwd=str(REPO))
        self.assertEqual(done.returncode, 0, done.stderr)
        return done.stdout.decode().splitlines()

    def test_stand_in(self) -> None:
        script = (
            "import sys\n"
            "from ross.v1 import container_pb2\n"
            "config = container_pb2.ContainerConfig(image='busybox', env=['A=1'])\n"
            "again = container_pb2.ContainerConfig.FromString(config.SerializeToString())\n"
            "print(again.image, list(again.env), 'google.protobuf.text_format' in sys.modules)\n"
            "from google.protobuf.internal import python_message\n"
            "print(python_message._AttachFieldHelpers.__name__, sys.modules[python_message.__name__].__file__)\n"
        )
        first, second = self.python(script)
        self.assertEqual(first, "busybox ['A=1'] False")
        name, path = second.split()
        self.assertEqual(name, "_AttachFieldHelpers")
        self.assertTrue(path.endswith("python_message.py"), path)

    def test_descriptor_database(self) -> None:
        """
        Nor is anything compiled from a string while the CLI's modules
        load (a module's own source, when it has no bytecode yet, is bytes):
        the process's first compile() sets up the interpreter's AST types.
        """
        script = (
            "import builtins, sys\n"
            "strings = []\n"
            "real = builtins.compile\n"
            "builtins.compile = lambda s, *a, **k: (isinstance(s, str) and strings.append(s)) or real(s, *a, **k)\n"
            "from ross.address import Listener\n"
            "from ross.reference import parse_normalized\n"
            "from ross.v1 import container_pb2, image_pb2, system_pb2\n"
            "print(strings)\n"
            "from google.protobuf import descriptor_database, descriptor_pb2\n"
            "db = descriptor_database.DescriptorDatabase()\n"
            "db.Add(descriptor_pb2.FileDescriptorProto(name='x.proto', package='x'))\n"
            "print(db.FindFileByName('x.proto').package, sys.modules[descriptor_database.__name__].__file__)\n"
        )
        first, second = self.python(script)
        self.assertEqual(first, "[]")
        package, path = second.split()
        self.assertEqual(package, "x")
        self.assertTrue(path.endswith("descriptor_database.py"), path)
