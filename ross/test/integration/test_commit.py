"""
``ross commit`` for real: images made of what busybox containers changed,
run again, inspected, saved for skopeo, and bad requests that change
nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import grpc
from twisted.internet.defer import CancelledError, Deferred, inlineCallbacks
from twisted.internet.threads import deferToThread
from twisted.trial.unittest import SynchronousTestCase

from ross.engine.events import Event, EventFilter
from ross.engine.layers import write_diff
from ross.engine.snapshots.records import Kind
from ross.errors import DataLoss
from ross.testing.containers import ContainerTestCase, sleep
from ross.testing.hostile import tree_state
from ross.v1 import container_pb2


class CommitTests(ContainerTestCase):
    def events(self) -> list[Event]:
        """Every container and image event published from now on, in order."""
        seen: list[Event] = []
        wanted = EventFilter(types=frozenset({"container", "image"}))
        self.addCleanup(self.daemon.engine.events.subscribe(seen.append, wanted))
        return seen

    @inlineCallbacks
    def state(self) -> Any:
        """What a failed commit must leave as it was: images, blobs, snapshots, ingests."""
        images = yield self.ross("images", "-a", "--no-trunc", "-q")
        blobs = yield self.daemon.engine.content.list()
        snapshots = yield self.daemon.engine.snapshotter.list()
        ingest = sorted(os.listdir(self.daemon.engine.content.blobs.ingest_dir))
        return (images.stdout, sorted(b.digest for b in blobs), sorted(s.name for s in snapshots), ingest)

    @inlineCallbacks
    def test_commit_stopped_container(self) -> Any:
        """
        The new image holds what the container added and not what it
        deleted; its config is the container's (Cmd, Env) with --change
        applied, its history one step longer, and it is listed by its tag.
        """
        result = yield self.ross(
            "run", "--name", "changer", "-e", "GREETING=hello", "-w", "/srv", "-p", "80", "busybox", "sh", "-c",
            "mkdir -p /srv/new && echo made > /srv/new/f && rm /bin/vi && echo u >> /etc/passwd")
        self.assertEqual(result.returncode, 0, result.stderr)
        events = self.events()
        result = yield self.ross("commit", "-a", "A. Author <a@example.com>", "-m", "first commit",
                                 "-c", "ENV A=1", "-c", 'CMD ["echo", "hi"]', "changer", "committed:v1")
        self.assertEqual(result.returncode, 0, result.stderr)
        image_id = result.stdout.decode().strip()
        self.assertRegex(image_id, r"^sha256:[0-9a-f]{64}$")
        cid = self.record("changer").id
        self.assertEqual([(e.type, e.action, e.actor_id) for e in events],
                         [("image", "commit", image_id), ("container", "commit", cid)])
        self.assertEqual(events[0].attributes["name"], "docker.io/library/committed:v1")

        result = yield self.ross("run", "--rm", "committed:v1", "sh", "-c",
                                 "cat /srv/new/f; tail -n1 /etc/passwd; ls /bin/vi; echo $GREETING $A; pwd")
        self.assertEqual(result.stdout, b"made\nu\nhello 1\n/srv\n", result.stderr)
        self.assertIn(b"/bin/vi", result.stderr)
        result = yield self.ross("run", "--rm", "committed:v1")
        self.assertEqual((result.returncode, result.stdout), (0, b"hi\n"), result.stderr)
        # A published port was an exposed one (docker's), which the image keeps.
        result = yield self.ross("image", "inspect", "-f", "{{json .Config.ExposedPorts}}", "committed:v1")
        self.assertEqual(result.stdout, b'{"80/tcp":{}}\n', result.stderr)

        # The layer holds the changes, not the files the runtime mounts.
        image = yield self.daemon.engine.images.resolve("committed:v1")
        with tarfile.open(self.daemon.engine.content.blobs.path(image.layers[-1].digest)) as tar:
            names = set(tar.getnames())
        self.assertTrue({"srv/new/f", "bin/.wh.vi", "etc/passwd"} <= names, names)
        self.assertEqual(names & {"etc/hosts", "etc/hostname", "etc/resolv.conf"}, set())

        base = yield self.daemon.engine.images.resolve("busybox")
        self.assertEqual(image.id, image_id)
        raw = image.config.raw
        self.assertEqual(raw["config"]["Cmd"], ["echo", "hi"])
        self.assertEqual(raw["config"]["Env"], base.config.raw["config"]["Env"] + ["GREETING=hello", "A=1"])
        self.assertEqual(raw["config"]["WorkingDir"], "/srv")
        self.assertEqual((raw["container"], raw["author"], raw["comment"]),
                         (cid, "A. Author <a@example.com>", "first commit"))
        self.assertEqual((raw["os"], raw["architecture"]), (base.config.raw["os"], base.config.raw["architecture"]))
        self.assertEqual(image.config.diff_ids[:-1], base.config.diff_ids)
        self.assertEqual(image.layers[:-1], base.layers)
        self.assertEqual(len(image.config.history), len(base.config.history) + 1)
        step = image.config.history[-1]
        self.assertEqual((step.created_by, step.comment, step.author, step.created),
                         ("sh -c mkdir -p /srv/new && echo made > /srv/new/f && rm /bin/vi && echo u >> /etc/passwd",
                          "first commit", "A. Author <a@example.com>", image.config.created))
        self.assertEqual(json.loads(image.manifest_json)["mediaType"], "application/vnd.oci.image.manifest.v1+json")

        result = yield self.ross("history", "--no-trunc", "committed:v1")
        self.assertEqual(result.returncode, 0, result.stderr)
        rows = result.stdout.decode().splitlines()[1:]
        base_rows = (yield self.ross("history", "busybox")).stdout.decode().splitlines()[1:]
        self.assertEqual(len(rows), len(base_rows) + 1)
        self.assertTrue(rows[0].startswith(image_id), rows[0])
        self.assertIn("first commit", rows[0])
        result = yield self.ross("images", "committed")
        self.assertEqual(result.stdout.decode().splitlines()[1].split()[:3], ["committed", "v1", image_id[7:19]])

        # Without a reference the image is dangling; the container is unchanged.
        result = yield self.ross("commit", "changer")
        self.assertEqual(result.returncode, 0, result.stderr)
        dangling = result.stdout.decode().strip()
        self.assertNotEqual(dangling, image_id)
        result = yield self.ross("images", "-q", "--no-trunc", "--filter", "dangling=true")
        self.assertEqual(result.stdout.decode().split(), [dangling])
        self.assertEqual(self.record("changer").state.status, "exited")

    @inlineCallbacks
    def snapshot_tree(self, key: str) -> Any:
        """What snapshot C{key}'s own directory holds (L{tree_state})."""
        snapshotter = self.daemon.engine.snapshotter
        record = yield snapshotter.run(lambda: snapshotter._active(key, "read", (Kind.COMMITTED, Kind.ACTIVE)))
        return tree_state(Path(snapshotter.fs_path(record.id)))

    @inlineCallbacks
    def test_layer_extracted_as_it_is_written(self) -> Any:
        """
        A commit's new layer is extracted from its tar as the tar is
        written, not read back from its blob: the snapshot is the one the
        blob gives, entry for entry (modes, owners, times, links, hard
        links, whiteouts). Committing the same changes again leaves no
        second extraction behind.
        """
        result = yield self.ross(
            "run", "--name", "varied", "busybox", "sh", "-c",
            "mkdir -p /srv/d/e && echo one > /srv/d/e/f && ln /srv/d/e/f /srv/d/hard && ln -s e/f /srv/d/soft"
            " && chmod 4711 /srv/d/e/f && chown 12:34 /srv/d && head -c 3000000 /dev/urandom > /srv/big"
            " && rm /bin/vi && touch -d 2001-02-03 /srv/d/e")
        self.assertEqual(result.returncode, 0, result.stderr)
        unpacker = self.daemon.engine.images.unpacker
        from_blob: list[str] = []
        real_apply = unpacker._apply

        def apply(layer: Any, diff_id: str, chain: str, parent: str) -> Any:
            from_blob.append(chain)
            return real_apply(layer, diff_id, chain, parent)

        self.patch(unpacker, "_apply", apply)
        result = yield self.ross("commit", "varied", "varied:1")
        self.assertEqual(result.returncode, 0, result.stderr)
        image = yield self.daemon.engine.images.resolve("varied:1")
        self.assertEqual(from_blob, [])
        tapped = yield self.snapshot_tree(image.chain_id)

        snapshotter = self.daemon.engine.snapshotter
        base = yield self.daemon.engine.images.resolve("busybox")
        yield snapshotter.prepare("from-blob", base.chain_id)
        self.addCleanup(snapshotter.remove, "from-blob")
        extracted = yield snapshotter.apply_layer("from-blob", self.daemon.engine.content.blobs.path(
            image.layers[-1].digest))
        self.assertEqual(extracted.diff_id, image.config.diff_ids[-1])
        blob_tree = yield self.snapshot_tree("from-blob")

        def carried(tree: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
            # A whiteout's time is its extraction's: the layer has none.
            return {name: e[:5] + (None,) + e[6:] if e[0] == stat.S_IFCHR else e for name, e in tree.items()}

        self.assertEqual(carried(tapped), carried(blob_tree))
        self.assertIn("srv/d/hard", tapped)
        self.assertEqual(tapped["srv/d/e/f"][1] & 0o7777, 0o4711)
        self.assertEqual(tapped["srv/d"][2:4], (12, 34))
        self.assertEqual(tapped["bin/vi"][0], stat.S_IFCHR)

        before = yield self.state()
        result = yield self.ross("commit", "varied", "varied:2")
        self.assertEqual(result.returncode, 0, result.stderr)
        again = yield self.daemon.engine.images.resolve("varied:2")
        self.assertEqual(again.layers, image.layers)
        self.assertEqual(from_blob, [])
        after = yield self.state()
        self.assertEqual(after[2], before[2])

    @inlineCallbacks
    def test_failed_extraction_falls_back_to_the_blob(self) -> Any:
        """
        When extracting the layer as it is written fails, the commit still
        succeeds: the layer is extracted from its blob, and the failed
        extraction leaves nothing behind.
        """
        result = yield self.ross("run", "--name", "wrote", "busybox", "sh", "-c", "echo x > /x")
        self.assertEqual(result.returncode, 0, result.stderr)
        snapshotter = self.daemon.engine.snapshotter
        real_apply_layer = snapshotter.apply_layer

        def failing(key: str, blob: Any, digest: bool = True) -> Any:
            if isinstance(blob, (str, Path)):
                return real_apply_layer(key, blob, digest)

            class Broken:
                def read(self, n: int) -> bytes:
                    raise DataLoss("disk gone")

            return real_apply_layer(key, Broken(), digest)

        self.patch(snapshotter, "apply_layer", failing)
        before = yield self.state()
        result = yield self.ross("commit", "wrote", "fallback:1")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("run", "--rm", "fallback:1", "cat", "/x")
        self.assertEqual(result.stdout, b"x\n", result.stderr)
        after = yield self.state()
        image = yield self.daemon.engine.images.resolve("fallback:1")
        self.assertEqual(sorted(set(after[2]) - set(before[2])), [image.chain_id])
        self.flushLoggedErrors(DataLoss)

    @inlineCallbacks
    def test_commit_running_container_pauses_it(self) -> Any:
        """
        A running container is paused while its changes are read and
        resumed after (same process); --pause=false leaves it running.
        """
        result = yield self.ross("run", "-d", "--name", "live", "busybox", "sh", "-c",
                                 "echo state > /state; exec sleep 1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.wait_for(lambda: self.record("live").state.status == "running")
        while (yield self.ross("exec", "live", "cat", "/state")).stdout != b"state\n":
            yield sleep(0.05)
        pid = self.record("live").state.pid
        events = self.events()
        result = yield self.ross("commit", "live", "live-image")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual([(e.type, e.action) for e in events],
                         [("container", "pause"), ("container", "unpause"), ("image", "commit"),
                          ("container", "commit")])
        record = self.record("live")
        self.assertEqual((record.state.status, record.state.pid), ("running", pid))
        self.assertTrue(os.path.exists(f"/proc/{pid}"))

        del events[:]
        result = yield self.ross("commit", "--pause=false", "live", "live-image:unpaused")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual([(e.type, e.action) for e in events], [("image", "commit"), ("container", "commit")])
        for tag in ("live-image", "live-image:unpaused"):
            result = yield self.ross("run", "--rm", tag, "cat", "/state")
            self.assertEqual(result.stdout, b"state\n", result.stderr)

    @inlineCallbacks
    def test_failed_diff_resumes_and_leaves_nothing(self) -> Any:
        """
        When reading the changes fails, the paused container is resumed and
        nothing of the commit stays behind.
        """
        result = yield self.ross("run", "-d", "--name", "failing", "busybox", "sleep", "1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.wait_for(lambda: self.record("failing").state.status == "running")
        before = yield self.state()
        snapshotter = self.daemon.engine.snapshotter
        real_diff = snapshotter.diff

        def half_a_diff(key: str, sink: Any, compression: str = "gzip", **options: Any) -> Any:
            class Failing:
                def write(self, data: bytes) -> None:
                    sink.write(data[:len(data) // 2])
                    raise DataLoss("disk gone")

            return real_diff(key, Failing(), compression, **options)

        self.patch(snapshotter, "diff", half_a_diff)
        events = self.events()
        result = yield self.ross("commit", "failing", "never:made")
        self.assertEqual(result.returncode, 125)
        self.assertEqual(result.stderr, b"Error: disk gone\n")
        self.assertEqual([(e.type, e.action) for e in events], [("container", "pause"), ("container", "unpause")])
        self.assertEqual(self.record("failing").state.status, "running")
        after = yield self.state()
        self.assertEqual(after, before)

    @inlineCallbacks
    def test_deep_container_trees(self) -> Any:
        """
        A container's tree deeper than Python's recursion limit and one
        with a path longer than PATH_MAX (moved there, as no single call
        reaches it). Before, diff, export and commit failed as INTERNAL
        (commit naming the daemon's snapshot path), and rm failed with a
        RecursionError, leaving the container "Removal In Progress" and its
        layer on disk. Now diff and export read both; commit refuses the
        path its unpacking cannot hold, clearly and changing nothing; rm
        removes everything.
        """
        initial = yield self.daemon.engine.snapshotter.list()
        chain = "/d0123456789012345" * 150
        script = (f"mkdir -p /deep{'/a' * 1500} /long{chain} /tmp/b{chain} && echo far > /tmp/b{chain}/f "
                  f"&& mv /tmp/b /long{chain}/b")
        result = yield self.ross("run", "--name", "deep", "busybox", "sh", "-c", script)
        self.assertEqual(result.returncode, 0, result.stderr)
        far = f"long{chain}/b{chain}/f"
        self.assertGreater(len(far), 4096)
        result = yield self.ross("diff", "deep")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"A /{far}\n".encode(), result.stdout)
        self.assertIn(f"A /deep{'/a' * 1500}\n".encode(), result.stdout)
        result = yield self.ross("export", "deep")
        self.assertEqual(result.returncode, 0, result.stderr)
        with tarfile.open(fileobj=io.BytesIO(result.stdout)) as tar:
            member = tar.extractfile(far)
            assert member is not None
            self.assertEqual(member.read(), b"far\n")
            self.assertIn("deep" + "/a" * 1500, tar.getnames())
        before = yield self.state()
        result = yield self.ross("commit", "deep", "never:made")
        self.assertNotEqual(result.returncode, 0)
        self.assertIn(b"is too deep to unpack here: its path on the host is longer than the kernel's limit",
                      result.stderr)
        self.assertNotIn(self.daemon.base.as_posix().encode(), result.stderr)
        after = yield self.state()
        self.assertEqual(after, before)
        result = yield self.ross("rm", "deep")
        self.assertEqual(result.returncode, 0, result.stderr)
        snapshots = yield self.daemon.engine.snapshotter.list()
        self.assertEqual(sorted(s.name for s in snapshots), sorted(s.name for s in initial))
        self.assertEqual([n for n in os.listdir(self.daemon.engine.snapshotter.snapshots_dir)
                          if n.startswith("rm-")], [])

    @inlineCallbacks
    def test_failure_after_the_blobs_rolls_back(self) -> Any:
        """
        A commit failing once its layer is stored, unpacked and its config
        and manifest written removes all of them again.
        """
        result = yield self.ross("run", "--name", "wrote", "busybox", "sh", "-c", "echo x > /x")
        self.assertEqual(result.returncode, 0, result.stderr)
        before = yield self.state()
        committer = self.daemon.engine.images.committer
        real_blobs = committer._commit_blobs

        def blobs_then_fail(*args: Any) -> Any:
            real_blobs(*args)
            raise DataLoss("disk gone")

        self.patch(committer, "_commit_blobs", blobs_then_fail)
        result = yield self.ross("commit", "wrote", "never:made")
        self.assertEqual((result.returncode, result.stderr), (125, b"Error: disk gone\n"))
        after = yield self.state()
        self.assertEqual(after, before)

    @inlineCallbacks
    def test_cancelled_commit_leaves_nothing(self) -> Any:
        """
        Cancelling a commit (its client went away) while its layer is being
        written stops the writer at its next write; the Deferred fails once
        everything is undone.
        """
        before = yield self.state()
        store = self.daemon.engine.images
        base = yield store.resolve("busybox")
        upper = Path(self.mktemp())
        (upper / "data").mkdir(parents=True)
        (upper / "data" / "f").write_bytes(os.urandom(3 << 20))
        gate: Deferred[None] = Deferred()
        called: Deferred[None] = Deferred()
        writes: list[int] = []

        def write_layer(sink: Any, tap: Any) -> Any:
            called.callback(None)

            def counted(data: bytes) -> None:
                writes.append(len(data))
                sink.write(data)

            class Sink:
                write = staticmethod(counted)

            return gate.addCallback(lambda _: deferToThread(write_diff, upper, Sink(), "gzip", (), tap))

        d = store.commit(base, write_layer, {"Cmd": ["sh"]}, container_id="c" * 64, reference="cancelled:1")
        yield called
        d.cancel()
        gate.callback(None)
        yield self.assertFailure(d, CancelledError)
        self.assertEqual(len(writes), 1)
        after = yield self.state()
        self.assertEqual(after, before)

    @inlineCallbacks
    def test_bad_requests_change_nothing(self) -> Any:
        """
        An unknown container is NOT_FOUND, a bad reference or change
        INVALID_ARGUMENT; none pauses the container or stores anything.
        """
        result = yield self.ross("run", "-d", "--name", "target", "busybox", "sleep", "1000")
        self.assertEqual(result.returncode, 0, result.stderr)
        yield self.wait_for(lambda: self.record("target").state.status == "running")
        before = yield self.state()
        events = self.events()
        cases = [
            (container_pb2.CommitRequest(container_id="nosuch", pause=True), grpc.StatusCode.NOT_FOUND,
             "No such container: nosuch"),
            (container_pb2.CommitRequest(container_id="target", reference="UPPER:tag", pause=True),
             grpc.StatusCode.INVALID_ARGUMENT,
             "invalid reference format: repository name (library/UPPER) must be lowercase"),
            (container_pb2.CommitRequest(container_id="target", reference="ok@sha256:" + "0" * 64, pause=True),
             grpc.StatusCode.INVALID_ARGUMENT, "refusing to create a tag with a digest reference"),
            (container_pb2.CommitRequest(container_id="target", changes=["FOO bar"], pause=True),
             grpc.StatusCode.INVALID_ARGUMENT, "FOO is not a valid change command"),
            (container_pb2.CommitRequest(container_id="target", changes=['ENV A="unclosed'], pause=True),
             grpc.StatusCode.INVALID_ARGUMENT, 'ENV A="unclosed: No closing quotation'),
        ]
        for request, code, details in cases:
            e = yield self.assertFailure(deferToThread(self.api.containers.Commit, request), grpc.RpcError)
            self.assertEqual((e.code(), e.details()), (code, details))
        for args, message in [
            (["nosuch"], b"Error: No such container: nosuch\n"),
            (["target", "UPPER:tag"],
             b"Error: invalid reference format: repository name (library/UPPER) must be lowercase\n"),
            (["-c", "FOO bar", "target"], b"Error: FOO is not a valid change command\n"),
            (["--pause=maybe", "target"],
             b'Error: invalid argument "maybe" for "-p, --pause" flag: strconv.ParseBool: parsing "maybe": '
             b"invalid syntax\n"),
        ]:
            result = yield self.ross("commit", *args)
            self.assertEqual((result.returncode, result.stderr), (125, message))
        self.assertEqual(events, [])
        self.assertEqual(self.record("target").state.status, "running")
        after = yield self.state()
        self.assertEqual(after, before)

    @inlineCallbacks
    def test_saved_image_reads_in_skopeo(self) -> Any:
        """
        A committed image saved as a docker archive is one skopeo reads:
        the base's layers plus the new one, and the container's Cmd.
        """
        result = yield self.ross("run", "--name", "src", "busybox", "sh", "-c", "echo x > /x")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield self.ross("commit", "-c", "CMD cat /x", "src", "saved:1")
        self.assertEqual(result.returncode, 0, result.stderr)
        image_id = result.stdout.decode().strip()
        archive = Path(self.mktemp()).absolute()
        result = yield self.ross("save", "-o", str(archive), "saved:1")
        self.assertEqual(result.returncode, 0, result.stderr)
        result = yield deferToThread(subprocess.run, ["skopeo", "inspect", f"docker-archive:{archive}"],
                                     capture_output=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        info = json.loads(result.stdout)
        base = yield self.daemon.engine.images.resolve("busybox")
        self.assertEqual(len(info["Layers"]), len(base.layers) + 1)
        self.assertEqual(info["Digest"][:7], "sha256:")
        result = yield deferToThread(subprocess.run, ["skopeo", "inspect", "--raw", "--config", f"docker-archive:{archive}"],
                                     capture_output=True)
        self.assertEqual(result.returncode, 0, result.stderr)
        config = json.loads(result.stdout)
        self.assertEqual(config["config"]["Cmd"], ["/bin/sh", "-c", "cat /x"])
        self.assertEqual("sha256:" + hashlib.sha256(result.stdout).hexdigest(), image_id)


class ExcludeTests(SynchronousTestCase):
    def test_excluded_paths(self) -> None:
        """
        write_diff leaves out excluded files and directories with what is
        under them; a hard link to an excluded file becomes the file.
        """
        upper = Path(self.mktemp())
        (upper / "etc" / "skip").mkdir(parents=True)
        (upper / "etc" / "skip" / "inner").write_bytes(b"no")
        (upper / "etc" / "hosts").write_bytes(b"linked")
        os.link(upper / "etc" / "hosts", upper / "etc" / "z-link")
        (upper / "etc" / "hostsfile").write_bytes(b"kept")
        out = io.BytesIO()
        write_diff(upper, out, "none", exclude=("etc/hosts", "etc/skip"))
        with tarfile.open(fileobj=io.BytesIO(out.getvalue())) as tar:
            self.assertEqual(tar.getnames(), ["etc", "etc/hostsfile", "etc/z-link"])
            link = tar.getmember("etc/z-link")
            self.assertTrue(link.isreg())
            member = tar.extractfile(link)
            assert member is not None
            self.assertEqual(member.read(), b"linked")
