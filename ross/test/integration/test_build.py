"""
``ross build`` for real: Dockerfiles built by a daemon into images that
run, with real containers for RUN steps, the cache, multi-stage builds,
build args, here-documents, .dockerignore, failures and cancellations
that leave only the cache of the steps that finished, and a build over
TCP with TLS.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import threading
from pathlib import Path
from typing import Any

import grpc
from twisted.internet.defer import inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import TestCase

from ross.engine.build.cache import BuildCache
from ross.engine.build.enginebackend import BUILD_LABEL
from ross.engine.reactors import engine_reactor
from ross.services.grpc_server import TLSFiles
from ross.testing import certs
from ross.testing.busybox import build_rootfs, write_tar
from ross.testing.containers import ContainerTestCase
from ross.testing.daemon import InProcessDaemon, run_cli, short_tempdir
from ross.testing.images import load_busybox
from ross.v1 import image_pb2


def write_context(directory: Path, files: dict[str, str | bytes]) -> Path:
    for name, data in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return directory


class BuildTestCase(ContainerTestCase):
    def ross(self, *args: str, input: bytes | None = None) -> Any:
        # The CLI keeps its files (context checksums) out of the real ~/.ross.
        config = getattr(self, "_config", None)
        if config is None:
            config = self._config = self.mktemp()
        return deferToThread(run_cli, self.daemon.address, *args, input=input, env={"ROSS_CONFIG": config})

    def context(self, files: dict[str, str | bytes]) -> str:
        directory = Path(self.mktemp())
        directory.mkdir()
        return str(write_context(directory, files))

    @inlineCallbacks
    def build(self, context: str, *args: str, ok: bool = True) -> Any:
        result = yield self.ross("build", *args, context)
        if ok:
            self.assertEqual(result.returncode, 0, result.stdout.decode() + result.stderr.decode())
        return result

    @inlineCallbacks
    def config(self, name: str) -> Any:
        image = yield self.daemon.engine.images.resolve(name)
        return image.config.raw

    @inlineCallbacks
    def run_image(self, *args: str) -> Any:
        result = yield self.ross("run", "--rm", *args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.decode()

    @inlineCallbacks
    def check_build_left_nothing(self) -> Any:
        """No container, workspace, view, temporary file or lease of a build is left."""
        engine = self.daemon.engine
        yield self.wait_for(lambda: not engine.containers.records)
        snapshots = yield engine.snapshotter.list([f'labels."{BUILD_LABEL}"'])
        self.assertEqual(snapshots, [])
        tmp = self.daemon.root / "build" / "tmp"
        self.assertEqual(os.listdir(tmp) if tmp.exists() else [], [])
        self.assertEqual(engine.content.blobs.lease_count(), 0)
        self.assertEqual(os.listdir(engine.content.blobs.ingest_dir), [])


class BuildTests(BuildTestCase):
    @inlineCallbacks
    def test_instructions(self) -> Any:
        """
        Every instruction ends up in the image's config as docker's
        classic builder puts it, docker's step lines are printed, the RUN
        output streams back, and the image runs.
        """
        context = self.context({
            "Dockerfile": (
                "FROM busybox\n"
                "LABEL org.example.name=demo \\\n      org.example.other=\"two words\"\n"
                "MAINTAINER Someone <someone@example.com>\n"
                "ENV APP=/srv/app GREETING=hello\n"
                "WORKDIR $APP\n"
                "COPY --chown=33:33 hello.txt ./\n"
                "ADD files.tar /opt/\n"
                "RUN echo \"$GREETING from $(pwd)\" && cat hello.txt && echo built > built.txt\n"
                "RUN [\"sh\", \"-c\", \"echo exec form $GREETING\"]\n"
                "SHELL [\"/bin/sh\", \"-e\", \"-c\"]\n"
                "EXPOSE 8080 53/udp\n"
                "VOLUME /data\n"
                "USER www-data\n"
                "STOPSIGNAL SIGINT\n"
                "HEALTHCHECK --interval=30s --retries=2 CMD test -f /srv/app/built.txt\n"
                "ONBUILD RUN echo child\n"
                "ENTRYPOINT [\"sh\", \"-c\"]\n"
                "CMD [\"id -un; pwd; cat built.txt; cat /opt/inside.txt; ls -ln hello.txt\"]\n"),
            "hello.txt": "hello file\n",
            "files.tar": self.tar({"inside.txt": b"from the tar\n"}),
        })
        result = yield self.build(context, "-t", "demo:1", "--label", "extra=yes")
        out = result.stdout.decode()
        image = yield self.daemon.engine.images.resolve("demo:1")
        self.assertIn("Step 1/19 : FROM busybox\n", out)
        self.assertIn("Step 8/19 : RUN echo \"$GREETING from $(pwd)\" && cat hello.txt && echo built > built.txt\n"
                      " ---> Running in ", out)
        self.assertIn("hello from /srv/app\nhello file\n ---> Removed intermediate container ", out)
        self.assertIn("exec form hello\n", out)
        self.assertIn("Step 19/19 : LABEL extra=yes\n", out)
        self.assertTrue(out.endswith(f"Successfully built {image.short_id}\nSuccessfully tagged demo:1\n"), out)
        config = yield self.config("demo:1")
        c = config["config"]
        self.assertEqual(c["Env"], ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                    "APP=/srv/app", "GREETING=hello"])
        self.assertEqual(c["Labels"], {"org.example.name": "demo", "org.example.other": "two words", "extra": "yes"})
        self.assertEqual((c["WorkingDir"], c["User"], c["StopSignal"]), ("/srv/app", "www-data", "SIGINT"))
        self.assertEqual(c["ExposedPorts"], {"8080/tcp": {}, "53/udp": {}})
        self.assertEqual(c["Volumes"], {"/data": {}})
        self.assertEqual(c["Shell"], ["/bin/sh", "-e", "-c"])
        self.assertEqual(c["Healthcheck"], {"Test": ["CMD-SHELL", "test -f /srv/app/built.txt"],
                                            "Interval": 30_000_000_000, "Retries": 2})
        self.assertEqual(c["OnBuild"], ["RUN echo child"])
        self.assertEqual((c["Entrypoint"], c["Cmd"]),
                         (["sh", "-c"], ["id -un; pwd; cat built.txt; cat /opt/inside.txt; ls -ln hello.txt"]))
        self.assertEqual(config["author"], "Someone <someone@example.com>")
        busybox = yield self.daemon.engine.images.resolve("busybox")
        # COPY, ADD and two RUNs made layers; the rest only changed the config.
        self.assertEqual(len(image.layers), len(busybox.layers) + 4)
        history = config["history"][len(busybox.config.history):]
        self.assertEqual(len(history), 18)
        self.assertEqual(history[2]["created_by"], "/bin/sh -c #(nop)  ENV APP=/srv/app GREETING=hello")
        self.assertTrue(history[2]["empty_layer"])
        self.assertRegex(history[4]["created_by"], r"^/bin/sh -c #\(nop\) COPY --chown=33:33 file:[0-9a-f]{64} "
                                                   r"in \./ $")
        self.assertNotIn("empty_layer", history[4])
        output = yield self.run_image("demo:1")
        self.assertEqual(output.splitlines()[:4], ["www-data", "/srv/app", "built", "from the tar"])
        self.assertRegex(output.splitlines()[4], r"^-rw-r--r-- +1 33 +33 +11 ")
        yield self.check_build_left_nothing()

    def tar(self, files: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tar:
            for name, data in files.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buffer.getvalue()

    @inlineCallbacks
    def test_cache(self) -> Any:
        """
        A second build uses the cache for every step and makes the same
        image; a changed file misses from its COPY on; a touched one does
        not; a changed build arg misses from the RUN that uses it;
        --no-cache misses everywhere. The cache is on disk.
        """
        context = self.context({
            "Dockerfile": "FROM busybox\nARG FLAVOUR=plain\nCOPY a.txt /a.txt\nRUN echo $FLAVOUR > /flavour\n"
                          "COPY b.txt /b.txt\nCMD [\"cat\", \"/a.txt\", \"/flavour\", \"/b.txt\"]\n",
            "a.txt": "a1\n", "b.txt": "b1\n",
        })
        first = yield self.build(context, "-t", "cached")
        self.assertNotIn(b"Using cache", first.stdout)
        image = (yield self.daemon.engine.images.resolve("cached")).id
        again = yield self.build(context, "-t", "cached")
        self.assertEqual(again.stdout.count(b" ---> Using cache\n"), 5)
        self.assertNotIn(b"Running in", again.stdout)
        self.assertEqual((yield self.daemon.engine.images.resolve("cached")).id, image)

        os.utime(os.path.join(context, "a.txt"), (1, 1))
        touched = yield self.build(context, "-t", "cached")
        self.assertEqual(touched.stdout.count(b" ---> Using cache\n"), 5)

        Path(context, "a.txt").write_text("a2\n")
        changed = yield self.build(context, "-t", "cached")
        self.assertEqual(changed.stdout.count(b" ---> Using cache\n"), 1)
        self.assertIn(b"Step 3/6 : COPY a.txt /a.txt\n ---> ", changed.stdout)
        self.assertEqual((yield self.run_image("cached")), "a2\nplain\nb1\n")

        flavoured = yield self.build(context, "-t", "cached", "--build-arg", "FLAVOUR=spicy")
        out = flavoured.stdout.decode()
        self.assertEqual(out.count(" ---> Using cache\n"), 2, out)
        self.assertIn("Step 4/6 : RUN echo $FLAVOUR > /flavour\n ---> Running in", out)
        self.assertEqual((yield self.run_image("cached")), "a2\nspicy\nb1\n")
        config = yield self.config("cached")
        self.assertIn("|1 FLAVOUR=spicy /bin/sh -c echo $FLAVOUR > /flavour",
                      [h.get("created_by") for h in config["history"]])

        none = yield self.build(context, "-t", "cached", "--no-cache")
        self.assertNotIn(b"Using cache", none.stdout)

        stored = BuildCache(engine_reactor(self.daemon.reactor), self.daemon.root / "build" / "cache.db")
        yield stored.start()
        self.addCleanup(stored.stop)
        self.assertEqual({e.key: e.image for e in stored.entries()},
                         {e.key: e.image for e in self.daemon.engine.builds.cache.entries()})

    @inlineCallbacks
    def test_multistage_target(self) -> Any:
        """
        Only the stages the target needs are built (a failing stage
        nothing needs never runs); COPY --from takes files from a stage by
        name or index and from an image; FROM takes an earlier stage.
        """
        context = self.context({"Dockerfile": (
            "FROM busybox AS base\n"
            "RUN echo base > /base\n"
            "FROM busybox AS broken\n"
            "RUN exit 1\n"
            "FROM base AS builder\n"
            "RUN mkdir /out && cat /base > /out/from-base && echo artifact > /out/artifact\n"
            "FROM busybox AS final\n"
            "COPY --from=builder /out /app/\n"
            "COPY --from=0 /base /app/base\n"
            "COPY --from=busybox /etc/group /app/group\n"
            "CMD [\"sh\", \"-c\", \"cat /app/from-base /app/artifact /app/base; head -n1 /app/group\"]\n"
            "FROM final AS after\n"
            "RUN exit 2\n")})
        result = yield self.build(context, "-t", "staged", "--target", "final")
        out = result.stdout.decode()
        self.assertNotIn("exit 1", out)
        self.assertNotIn("exit 2", out)
        self.assertIn("Step 1/9 : FROM busybox AS base\n", out)
        self.assertIn("Step 3/9 : FROM base AS builder\n", out)
        self.assertEqual((yield self.run_image("staged")), "base\nartifact\nbase\nroot:x:0:\n")
        result = yield self.build(context, "--target", "nope", ok=False)
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stderr, b"Error: target stage 'nope' could not be found\n")
        result = yield self.build(context, "-t", "after", ok=False)
        self.assertEqual(result.returncode, 2)
        self.assertIn(b"Error: The command '/bin/sh -c exit 2' returned a non-zero code: 2", result.stderr)

    @inlineCallbacks
    def test_arg_scoping(self) -> Any:
        """
        ARGs before FROM serve FROM and a stage only when it declares them
        again; a declared ARG takes --build-arg, else its default; ENV wins
        over ARG; proxy args reach RUN without going into the history; an
        unused --build-arg is reported.
        """
        context = self.context({"Dockerfile": (
            "ARG BASE=busybox\n"
            "ARG VERSION=1.0\n"
            "FROM ${BASE}\n"
            "RUN echo \"undeclared=[$VERSION]\" > /out\n"
            "ARG VERSION\n"
            "ARG OTHER=default\n"
            "RUN echo \"version=$VERSION other=$OTHER\" >> /out\n"
            "ENV OTHER=from-env\n"
            "RUN echo \"other=$OTHER proxy=$HTTP_PROXY\" >> /out\n"
            "LABEL v=$VERSION w=${NOPE:-fallback} x=${VERSION:+set}\n"
            "CMD [\"cat\", \"/out\"]\n")})
        result = yield self.build(context, "-t", "args", "--build-arg", "OTHER=given", "--build-arg",
                                  "HTTP_PROXY=http://proxy:3128", "--build-arg", "UNUSED=1")
        self.assertIn(b"[Warning] One or more build-args [UNUSED] were not consumed\n", result.stdout)
        self.assertEqual((yield self.run_image("args")),
                         "undeclared=[]\nversion=1.0 other=given\nother=from-env proxy=http://proxy:3128\n")
        config = yield self.config("args")
        self.assertEqual(config["config"]["Labels"], {"v": "1.0", "w": "fallback", "x": "set"})
        self.assertNotIn("proxy:3128", json.dumps(config["history"]))
        result = yield self.build(context, "-t", "args2", "--build-arg", "VERSION=2.0", "--build-arg", "BASE=args")
        self.assertIn(b"Step 3/11 : FROM ${BASE}\n ---> " + (yield self.daemon.engine.images.resolve("args")).short_id.encode(),
                      result.stdout)
        self.assertEqual((yield self.config("args2"))["config"]["Labels"]["v"], "2.0")

    @inlineCallbacks
    def test_heredocs(self) -> Any:
        """
        RUN here-documents run as scripts (a #! one by its interpreter),
        COPY ones become files, expanded unless the delimiter is quoted,
        <<- drops leading tabs.
        """
        context = self.context({"Dockerfile": (
            "FROM busybox\n"
            "ARG WHO=world\n"
            "RUN <<EOF\n"
            "echo \"hello $WHO\" > /greeting\n"
            "echo second line >> /greeting\n"
            "EOF\n"
            "RUN <<EOT\n"
            "#!/bin/sh -e\n"
            "echo \"script $0\" > /script\n"
            "EOT\n"
            "RUN cat <<A > /two && cat <<B >> /two\n"
            "first\n"
            "A\n"
            "second\n"
            "B\n"
            "COPY <<EOF /copied\n"
            "copied for $WHO\n"
            "EOF\n"
            "COPY <<'EOF' /literal\n"
            "kept $WHO\n"
            "EOF\n"
            "COPY <<-EOF /chomped\n"
            "\t\tindented\n"
            "\tEOF\n"
            "CMD [\"cat\", \"/greeting\", \"/script\", \"/two\", \"/copied\", \"/literal\", \"/chomped\"]\n")})
        yield self.build(context, "-t", "heredocs")
        self.assertEqual((yield self.run_image("heredocs")),
                         "hello world\nsecond line\nscript /dev/pipes/EOT\nfirst\nsecond\n"
                         "copied for world\nkept $WHO\nindented\n")

    @inlineCallbacks
    def test_dockerignore(self) -> Any:
        """
        What .dockerignore excludes is not sent (nor copied), its
        exceptions are, and the Dockerfile is read even when excluded;
        excluded, it and the ignore file are no part of the context (a
        Dockerfile's ARG defaults and comments stay out of the image).
        """
        context = self.context({
            "Dockerfile": "FROM busybox\nCOPY . /ctx/\nCMD [\"find\", \"/ctx\"]\n",
            ".dockerignore": "*\n!src\nsrc/*.tmp\n!keep.txt\n",
            "src/a.py": "a", "src/b.tmp": "b", "keep.txt": "k", "secret.key": "s", "node_modules/x/y": "y",
        })
        result = yield self.build(context, "-t", "ignored")
        self.assertIn(b"Sending build context to Ross daemon  ", result.stdout)
        found = sorted((yield self.run_image("ignored")).split())
        self.assertEqual(found, ["/ctx", "/ctx/keep.txt", "/ctx/src", "/ctx/src/a.py"])
        context = self.context({"Dockerfile": "FROM busybox\nCOPY Dockerfile /x\n", ".dockerignore": "Dockerfile\n"})
        result = yield self.ross("build", context)
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn(b"Dockerfile", result.stderr)

    @inlineCallbacks
    def test_stdin(self) -> Any:
        """
        A Dockerfile on stdin builds without a context; a tar on stdin is
        the context, its Dockerfile and .dockerignore inside.
        """
        result = yield self.ross("build", "-t", "piped", "-", input=b"FROM busybox\nRUN echo piped > /p\n")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual((yield self.run_image("piped", "cat", "/p")), "piped\n")
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for name, data in (("build/Dockerfile", b"FROM busybox\nCOPY . /in/\n"), ("f", b"f"),
                               (".dockerignore", b"ignored\n.dockerignore\nbuild/Dockerfile\n"), ("ignored", b"x")):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        result = yield self.ross("build", "-f", "build/Dockerfile", "-t", "tarred", "-", input=buffer.getvalue())
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(sorted((yield self.run_image("tarred", "ls", "-a", "/in")).split()),
                         [".", "..", "build", "f"])

    @inlineCallbacks
    def test_scratch_busybox(self) -> Any:
        """
        The README's first image: FROM scratch with the host's busybox
        tarball ADDed, which runs.
        """
        directory = Path(self.context({"Dockerfile": "FROM scratch\nADD busybox.tar /\nCMD [\"sh\"]\n"}))
        with open(directory / "busybox.tar", "wb") as f:
            write_tar(build_rootfs(Path(self.mktemp()) / "rootfs"), f)
        yield self.build(str(directory), "-t", "mybusybox")
        self.assertEqual((yield self.run_image("mybusybox", "sh", "-c", "echo $PATH; busybox true && echo ok")),
                         "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\nok\n")
        image = yield self.daemon.engine.images.resolve("mybusybox")
        self.assertEqual(len(image.layers), 1)

    @inlineCallbacks
    def test_listing_and_prune(self) -> Any:
        """
        The steps' images are listed only with -a; pruning dangling images
        spares them; ``ross builder prune`` removes them (not the tagged
        image) and forgets the cache.
        """
        context = self.context({"Dockerfile": "FROM busybox\nENV A=1\nRUN echo x > /x\nENV B=2\n"})
        yield self.build(context, "-t", "pruned")
        listed = (yield self.ross("images", "-q")).stdout.split()
        everything = (yield self.ross("images", "-a", "-q")).stdout.split()
        self.assertEqual(len(listed), 2)
        self.assertEqual(len(everything), 4)
        result = yield self.ross("image", "prune", "-f")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(len((yield self.ross("images", "-a", "-q")).stdout.split()), 4)
        result = yield self.ross("builder", "prune", "-f")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"Deleted build cache objects:", result.stdout)
        self.assertEqual(sorted((yield self.ross("images", "-a", "-q")).stdout.split()), sorted(listed))
        self.assertEqual(self.daemon.engine.builds.cache.entries(), [])
        self.assertEqual((yield self.run_image("pruned", "cat", "/x")), "x\n")
        again = yield self.build(context, "-t", "pruned")
        self.assertNotIn(b"Using cache", again.stdout)
        result = yield self.ross("system", "prune", "-f")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(b"Deleted build cache objects:", result.stdout)
        self.assertEqual(self.daemon.engine.builds.cache.entries(), [])

    @inlineCallbacks
    def test_rmi_takes_the_steps(self) -> Any:
        """
        The steps' images are no dangling images (docker's: other images
        are built on them), and removing the built image removes them too,
        but one another image is built on (docker's rmi of the parents).
        """
        before = sorted((yield self.ross("images", "-a", "-q")).stdout.split())
        yield self.build(self.context({"Dockerfile": "FROM busybox\nENV A=1\nRUN echo x > /x\nENV B=2\n"}),
                         "-t", "top")
        yield self.build(self.context({"Dockerfile": "FROM busybox\nENV A=1\nRUN echo y > /y\n"}), "-t", "side")
        everything = (yield self.ross("images", "-a", "-q")).stdout.split()
        self.assertEqual(len(everything), len(before) + 4)
        result = yield self.ross("images", "-a", "-q", "-f", "dangling=true")
        self.assertEqual(result.stdout, b"")
        result = yield self.ross("rmi", "top")
        self.assertEqual(result.returncode, 0, result.stderr)
        # top and its RUN step go; the ENV A=1 step stays: side is built on it.
        left = (yield self.ross("images", "-a", "-q")).stdout.split()
        self.assertEqual(len(left), len(before) + 2)
        self.assertTrue(all(f"Deleted: sha256:{i.decode()}".encode() in result.stdout
                            for i in set(everything) - set(left)), result.stdout)
        result = yield self.ross("rmi", "side")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(sorted((yield self.ross("images", "-a", "-q")).stdout.split()), before)


class BuildFailureTests(BuildTestCase):
    @inlineCallbacks
    def test_failing_run(self) -> Any:
        """
        A failing RUN stops the build with its exit code and output;
        nothing of it is left but the cache of the steps before it.
        """
        images_before = (yield self.ross("images", "-a", "-q")).stdout
        context = self.context({"Dockerfile": "FROM busybox\nRUN echo step one > /one\n"
                                              "RUN echo about to fail && echo oops >&2 && exit 7\nRUN echo never\n"})
        result = yield self.build(context, "-t", "failed", ok=False)
        self.assertEqual(result.returncode, 7)
        self.assertIn(b"about to fail\noops\n", result.stdout)
        self.assertNotIn(b"never", result.stdout)
        self.assertEqual(result.stderr, b"Error: The command '/bin/sh -c echo about to fail && echo oops >&2 && "
                                        b"exit 7' returned a non-zero code: 7\n")
        yield self.check_build_left_nothing()
        images = (yield self.ross("images", "-a", "-q")).stdout.split()
        self.assertEqual(len(images), len(images_before.split()) + 1)
        Path(context, "Dockerfile").write_text("FROM busybox\nRUN echo step one > /one\nRUN true\n")
        fixed = yield self.build(context, "-t", "fixed")
        self.assertIn(b"Step 2/3 : RUN echo step one > /one\n ---> Using cache\n", fixed.stdout)

    @inlineCallbacks
    def test_malformed(self) -> Any:
        """
        A malformed Dockerfile is refused with its line number before
        anything runs or is sent; bad references and missing files are
        refused with docker's words.
        """
        images_before = (yield self.ross("images", "-a", "-q")).stdout
        cases = [
            ("FROM busybox\nRUN true\n\nFOO bar\n", "dockerfile parse error on line 4: unknown instruction: FOO"),
            ("FROM busybox\nRUN <<EOF\necho\n", "dockerfile parse error on line 2: unterminated heredoc"),
            ("FROM busybox\nCOPY --chown a b\n", "dockerfile parse error on line 2: missing a value on flag: --chown"),
            ("FROM busybox\nENV A=1\nCOPY ${Y:?} /\n",
             'dockerfile parse error on line 3: failed to process "${Y:?}": Y: is not allowed to be unset'),
            ("FROM busybox AS a\nFROM busybox AS a\n", 'dockerfile parse error on line 2: duplicate stage name "a"'),
            ("FROM busybox\nCOPY --from=1 /x /y\n",
             "dockerfile parse error on line 2: invalid from flag value 1: index out of bounds"),
            ("FROM busybox\nCOPY missing /x\n", "COPY failed: file not found in build context or excluded by "
                                               ".dockerignore: stat missing: file does not exist"),
            ("FROM busybox\nEXPOSE 80/tcpx\n", "dockerfile parse error on line 2: invalid proto: tcpx"),
            ("FROM busybox\nSTOPSIGNAL SIGNOPE\n", "dockerfile parse error on line 2: Invalid signal: SIGNOPE"),
            ("FROM busybox\nADD https://example.com/f /f\n", "ADD failed: cannot fetch https://example.com/f"),
            ("FROM busybox\nCOPY a b c\n", "When using COPY with more than one source file, "
                                          "the destination must be a directory and end with a /"),
            ("", "the Dockerfile (Dockerfile) cannot be empty"),
            ("FROM busybox\nCOPY --exclude=a . /x\n",
             "dockerfile parse error on line 2: COPY --exclude is not supported by Ross's builder"),
        ]
        for dockerfile, message in cases:
            context = self.context({"Dockerfile": dockerfile, "a": "a", "b": "b"})
            result = yield self.build(context, "-t", "bad:tag", ok=False)
            self.assertEqual(result.returncode, 1, dockerfile)
            self.assertIn(message.encode(), result.stderr, dockerfile)
            self.assertNotIn(b"Running in", result.stdout)
        result = yield self.build(self.context({"Dockerfile": "FROM busybox\n"}), "-t", "Bad:Tag", ok=False)
        self.assertIn(b"invalid tag 'Bad:Tag'", result.stderr)
        yield self.check_build_left_nothing()
        self.assertEqual((yield self.ross("images", "-a", "-q")).stdout.split()[-1:], images_before.split()[-1:])

    @inlineCallbacks
    def test_client_goes_away(self) -> Any:
        """
        A client that goes away mid-build cancels it: the RUN container is
        killed and removed, nothing of the step is left, and the daemon
        builds again.
        """
        clients = self.daemon.clients()
        started = threading.Event()
        messages: list[Any] = []

        def requests() -> Any:
            yield image_pb2.BuildImageRequest(options=image_pb2.BuildOptions(
                dockerfile_content=b"FROM busybox\nRUN echo ok > /ok\nRUN echo started && sleep 60\n"))

        def build() -> None:
            call = clients.images.BuildImage(requests())
            try:
                for message in call:
                    messages.append(message)
                    if b"started" in message.output:
                        started.set()
                        call.cancel()
            except grpc.RpcError as e:
                messages.append(e)

        thread = threading.Thread(target=build, daemon=True)
        thread.start()
        yield self.wait_for(started.is_set, timeout=30)
        yield self.wait_for(lambda: not thread.is_alive(), timeout=15)
        self.assertEqual(messages[-1].code(), grpc.StatusCode.CANCELLED)
        yield self.check_build_left_nothing()
        context = self.context({"Dockerfile": "FROM busybox\nRUN echo ok > /ok\nCMD [\"cat\", \"/ok\"]\n"})
        result = yield self.build(context, "-t", "after-cancel")
        self.assertIn(b" ---> Using cache", result.stdout)
        self.assertEqual((yield self.run_image("after-cancel")), "ok\n")


class RemoteBuildTests(TestCase):
    """A build over TCP with mutual TLS: the context crosses the network."""

    timeout = 120

    @inlineCallbacks
    def test_tls(self) -> Any:
        """The CLI builds on a daemon reached over mutual TLS, sending the context."""
        ca = certs.authority()
        server = ca.issue("ross-daemon", server=True)
        daemon = InProcessDaemon(self, tls=TLSFiles(cert=server.cert, key=server.key, ca=ca.pem),
                                 also_listen=["tcp://127.0.0.1:0"])
        yield daemon.start()
        yield load_busybox(daemon)
        api = daemon.daemon.api
        address = api.address_of(api.listeners[1])
        d = short_tempdir()
        self.addCleanup(shutil.rmtree, d)
        (d / "ca.pem").write_bytes(ca.pem)
        cert, key = ca.issue("cli").write(d, "cli")
        context = write_context(d / "ctx", {"Dockerfile": "FROM busybox\nCOPY big /big\nRUN wc -c < /big\n",
                                            "big": os.urandom(3 << 20)})
        env = {"ROSS_TLS_CA": str(d / "ca.pem"), "ROSS_TLS_CERT": cert, "ROSS_TLS_KEY": key,
               "ROSS_CONFIG": str(d / "config")}
        result = yield daemon.call(run_cli, address, "build", "-t", "remote", str(context), env=env)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertRegex(result.stdout, rb"^Sending build context to Ross daemon  3\.1[45]\dMB\n")
        self.assertIn(b"\n3145728\n", result.stdout)
        result = yield daemon.call(run_cli, daemon.address, "images", "remote", "-q")
        self.assertTrue(result.stdout.strip())

