"""
docker's own CLI against the Docker API, with only DOCKER_HOST changed:
Debian's docker.io (API 1.41) and, when installed, a newer one (which
negotiates down to 1.44).
"""

from __future__ import annotations

import os
import shlex
import subprocess
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.testing.dockerapi import DockerAPITestCase

#: docker's CLIs to run: Debian's, and a newer one when there is one.
CLIS = [path for path in ("/usr/bin/docker", "/usr/local/bin/docker") if os.access(path, os.X_OK)]


class CLITests(DockerAPITestCase):
    def cli(self, binary: str, *args: str, input: bytes | None = None,
            timeout: float = 60.0) -> Any:
        env = dict(os.environ, DOCKER_HOST=self.docker_host, DOCKER_CONFIG=os.path.abspath(self.mktemp()))
        return deferToThread(subprocess.run, [binary, *args], input=input, capture_output=True, env=env,
                             timeout=timeout)

    def test_clis_present(self) -> None:
        """
        The suite has docker's CLI to test with (the set-up installs it).
        """
        self.assertIn("/usr/bin/docker", CLIS)

    @inlineCallbacks
    def test_run_detached_ps_logs_exec(self) -> Any:
        """
        run -d prints the ID; ps lists it; logs shows its output; exec runs
        in it, with piped input too; rm -f removes it.
        """
        for cli in CLIS:
            result = yield self.cli(cli, "run", "-d", "--name", "web", "busybox", "sh", "-c",
                                    "echo started; sleep 60")
            self.assertEqual(result.returncode, 0, (cli, result.stderr))
            cid = result.stdout.decode().strip()
            self.assertIn(cid, self.daemon.engine.containers.records)
            ps = yield self.cli(cli, "ps", "--format", "{{.Names}} {{.Image}} {{.Status}}")
            self.assertEqual(ps.returncode, 0, ps.stderr)
            self.assertTrue(ps.stdout.decode().startswith("web busybox Up"), (cli, ps.stdout))
            yield self.wait_for(lambda: b"started" in open(self.daemon.engine.containers.log_path(cid), "rb").read())
            logs = yield self.cli(cli, "logs", "web")
            self.assertEqual((logs.returncode, logs.stdout), (0, b"started\n"), (cli, logs.stderr))
            exec_ = yield self.cli(cli, "exec", "web", "sh", "-c", "echo in; echo err >&2; exit 4")
            self.assertEqual((exec_.returncode, exec_.stdout, exec_.stderr), (4, b"in\n", b"err\n"), cli)
            piped = yield self.cli(cli, "exec", "-i", "web", "cat", input=b"piped data")
            self.assertEqual((piped.returncode, piped.stdout), (0, b"piped data"), (cli, piped.stderr))
            removed = yield self.cli(cli, "rm", "-f", "web")
            self.assertEqual(removed.returncode, 0, removed.stderr)
            self.assertEqual(list(self.daemon.engine.containers.records), [])

    @inlineCallbacks
    def test_run_rm(self) -> Any:
        """
        run --rm streams stdout and stderr apart, exits with the command's
        code, takes piped input with -i, and leaves no container; a command
        that is not there is 127.
        """
        for cli in CLIS:
            result = yield self.cli(cli, "run", "--rm", "busybox", "sh", "-c", "echo out; echo err >&2; exit 3")
            self.assertEqual((result.returncode, result.stdout, result.stderr), (3, b"out\n", b"err\n"), cli)
            piped = yield self.cli(cli, "run", "--rm", "-i", "busybox", "tr", "a-z", "A-Z", input=b"hello")
            self.assertEqual((piped.returncode, piped.stdout), (0, b"HELLO"), (cli, piped.stderr))
            missing = yield self.cli(cli, "run", "--rm", "busybox", "nosuchcommand")
            self.assertEqual(missing.returncode, 127, (cli, missing.stderr))
            self.assertEqual(list(self.daemon.engine.containers.records), [])

    @inlineCallbacks
    def test_run_interactive_terminal(self) -> Any:
        """
        run -it --rm on a terminal: a shell that reads what is typed and
        answers on the terminal, and exits with its code.
        """
        for cli in CLIS:
            command = shlex.join([cli, "run", "-it", "--rm", "busybox", "sh", "-c",
                                  "read line; echo got-$line; exit 5"])
            result = yield self.cli("/usr/bin/script", "-qec", command, "/dev/null", input=b"typed\n")
            self.assertEqual(result.returncode, 5, (cli, result.stdout, result.stderr))
            self.assertIn(b"got-typed\r\n", result.stdout)
            self.assertEqual(list(self.daemon.engine.containers.records), [])

    @inlineCallbacks
    def test_images_networks_volumes(self) -> Any:
        """
        images, network and volume commands list, create and remove.
        """
        for cli in CLIS:
            images = yield self.cli(cli, "images", "--format", "{{.Repository}}:{{.Tag}}")
            self.assertEqual(images.stdout, b"busybox:latest\n", (cli, images.stderr))
            created = yield self.cli(cli, "network", "create", "clinet")
            self.assertEqual(created.returncode, 0, created.stderr)
            networks = yield self.cli(cli, "network", "ls", "--format", "{{.Name}}")
            self.assertEqual(sorted(networks.stdout.decode().split()), ["bridge", "clinet", "host", "none"])
            run = yield self.cli(cli, "run", "--rm", "--network", "clinet", "busybox", "hostname", "-i")
            self.assertEqual(run.returncode, 0, run.stderr)
            removed = yield self.cli(cli, "network", "rm", "clinet")
            self.assertEqual(removed.returncode, 0, removed.stderr)
            created = yield self.cli(cli, "volume", "create", "clivol")
            self.assertEqual(created.stdout, b"clivol\n", created.stderr)
            written = yield self.cli(cli, "run", "--rm", "-v", "clivol:/data", "busybox", "sh", "-c",
                                     "echo kept > /data/f")
            self.assertEqual(written.returncode, 0, written.stderr)
            read = yield self.cli(cli, "run", "--rm", "-v", "clivol:/data", "busybox", "cat", "/data/f")
            self.assertEqual(read.stdout, b"kept\n", read.stderr)
            volumes = yield self.cli(cli, "volume", "ls", "-q")
            self.assertEqual(volumes.stdout, b"clivol\n")
            removed = yield self.cli(cli, "volume", "rm", "clivol")
            self.assertEqual(removed.returncode, 0, removed.stderr)
            df = yield self.cli(cli, "system", "df")
            self.assertEqual(df.returncode, 0, df.stderr)
            self.assertIn(b"Images", df.stdout)

    @inlineCallbacks
    def test_cp(self) -> Any:
        """
        docker cp copies into and out of a container.
        """
        source = os.path.abspath(self.mktemp())
        with open(source, "wb") as f:
            f.write(b"copied\n")
        for cli in CLIS:
            run = yield self.cli(cli, "run", "-d", "--name", "box", "busybox", "sleep", "60")
            self.assertEqual(run.returncode, 0, run.stderr)
            into = yield self.cli(cli, "cp", source, "box:/tmp/in")
            self.assertEqual(into.returncode, 0, into.stderr)
            target = os.path.abspath(self.mktemp())
            out = yield self.cli(cli, "cp", "box:/tmp/in", target)
            self.assertEqual(out.returncode, 0, out.stderr)
            with open(target, "rb") as f:
                self.assertEqual(f.read(), b"copied\n")
            yield self.cli(cli, "rm", "-f", "box")
