"""
docker's classic builder API (POST /build) on the engine's builder, with
docker-py and docker's CLI (DOCKER_BUILDKIT=0).
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import tarfile
from typing import Any

from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread

from ross.testing.dockerapi import DockerAPITestCase

DOCKERFILE = """\
FROM busybox AS build
ARG NAME=world
RUN mkdir /out && echo "hello $NAME" > /out/hello && echo from-run
FROM busybox
COPY --from=build /out /srv/
COPY greeting.txt /srv/
LABEL built=yes
CMD ["cat", "/srv/hello", "/srv/greeting.txt"]
"""


class BuildTests(DockerAPITestCase):
    def context(self) -> str:
        path = os.path.abspath(self.mktemp())
        os.makedirs(path)
        with open(os.path.join(path, "Dockerfile"), "w") as f:
            f.write(DOCKERFILE)
        with open(os.path.join(path, "greeting.txt"), "w") as f:
            f.write("greetings\n")
        return path

    @inlineCallbacks
    def test_docker_py(self) -> Any:
        """
        docker-py's build streams docker's JSON (the RUN step's output
        included) and finds the image by its lines; a failing RUN ends the
        stream with the error and the command's code.
        """
        path = self.context()

        def build(**options: Any) -> list[Any]:
            return list(self.docker.build(path=path, decode=True, **options))

        lines = yield self.call(build, tag="hello:1", buildargs={"NAME": "ross"})
        text = "".join(line.get("stream", "") for line in lines)
        self.assertIn("Step 1/8 : FROM busybox AS build", text)
        self.assertIn("from-run", text)
        self.assertIn("Successfully tagged hello:1", text)
        image_id = [line["aux"]["ID"] for line in lines if "aux" in line][0]
        inspect = yield self.call(self.docker.inspect_image, "hello:1")
        self.assertEqual(inspect["Id"], image_id)
        self.assertEqual(inspect["Config"]["Labels"], {"built": "yes"})
        container = yield self.call(self.docker.create_container, "hello:1")
        yield self.call(self.docker.start, container["Id"])
        yield self.call(self.docker.wait, container["Id"], timeout=30)
        output = yield self.call(self.docker.logs, container["Id"])
        self.assertEqual(output, b"hello ross\ngreetings\n")
        yield self.call(self.docker.remove_container, container["Id"])
        again = yield self.call(build, tag="hello:1", buildargs={"NAME": "ross"})
        self.assertIn("Using cache", "".join(line.get("stream", "") for line in again))
        with open(os.path.join(path, "Dockerfile"), "w") as f:
            f.write("FROM busybox\nRUN exit 3\n")
        failed = yield self.call(build)
        self.assertEqual(failed[-1]["errorDetail"]["code"], 3)
        self.assertIn("returned a non-zero code: 3", failed[-1]["error"])
        pruned = yield self.call(self.docker.prune_builds)
        self.assertGreater(len(pruned["CachesDeleted"]), 0)

    @inlineCallbacks
    def test_unexpected_error_ends_the_stream_with_it(self) -> Any:
        """
        A bug during a build (here, an engine call that raises what no
        domain error is) ends the stream with an error line, logged with
        its traceback. Before, the stream stopped with no word, and
        docker-py reported a success.
        """
        builds = self.daemon.engine.builds

        def broken(*args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug")

        self.patch(builds, "build", broken)
        lines = yield self.call(lambda: list(self.docker.build(path=self.context(), decode=True)))
        self.assertEqual(lines[-1]["error"], "internal error: a bug")
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    @inlineCallbacks
    def test_client_goes_away(self) -> Any:
        """
        A client that goes away mid-build (docker build ... | head) cancels
        it: the RUN container goes, and nothing is logged as a bug.
        """
        context = io.BytesIO()
        with tarfile.open(fileobj=context, mode="w") as tar:
            dockerfile = b"FROM busybox\nRUN echo started; sleep 60\n"
            info = tarfile.TarInfo("Dockerfile")
            info.size = len(dockerfile)
            tar.addfile(info, io.BytesIO(dockerfile))

        def start() -> socket.socket:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(30)
            sock.connect(self.socket_path)
            body = context.getvalue()
            sock.sendall(b"POST /build HTTP/1.1\r\nHost: docker\r\nContent-Type: application/x-tar\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            seen = b""
            # The RUN step's output (its step line has "started;").
            while b'started\\n"' not in seen:
                chunk = sock.recv(4096)
                if not chunk:
                    raise AssertionError(f"the build stream ended: {seen!r}")
                seen += chunk
            return sock

        sock = yield deferToThread(start)
        self.assertTrue(self.daemon.engine.containers.records)
        sock.close()
        yield self.wait_for(lambda: not self.daemon.engine.containers.records, timeout=30)
        errors = self.flushLoggedErrors()
        self.assertEqual(errors, [], [e.getTraceback() for e in errors])

    @inlineCallbacks
    def test_cli(self) -> Any:
        """
        docker build (the classic builder) builds, tags, and exits with
        the failing step's code.
        """
        path = self.context()
        env = dict(os.environ, DOCKER_HOST=self.docker_host, DOCKER_BUILDKIT="0",
                   DOCKER_CONFIG=os.path.abspath(self.mktemp()))
        result = yield deferToThread(subprocess.run, ["/usr/bin/docker", "build", "-t", "hello", path],
                                     capture_output=True, env=env, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"Successfully tagged hello:latest", result.stdout)
        run = yield deferToThread(subprocess.run, ["/usr/bin/docker", "run", "--rm", "hello"],
                                  capture_output=True, env=env, timeout=60)
        self.assertEqual(run.stdout, b"hello world\ngreetings\n", run.stderr)
        failing = yield deferToThread(subprocess.run, ["/usr/bin/docker", "build", "-"],
                                      input=b"FROM busybox\nRUN exit 4\n", capture_output=True, env=env,
                                      timeout=120)
        self.assertEqual(failing.returncode, 4, failing.stderr)
