# -*- test-case-name: ross.test.test_build_files -*-
"""
The files of a build (L{ross.engine.build.files},
L{ross.engine.build.context}): the received context as an indexed tar,
merged layer views, symlinks followed within a root, COPY sources and
their checksums, and COPY, ADD and WORKDIR written into an overlay upper
directory over its layers as docker's classic builder writes them.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import tarfile
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from ross.buildcontext import ManifestEntry, file_pieces, manifest
from ross.engine.build import files
from ross.engine.build.builder import _CopyJob, _apply_copy, _make_workdir, _sources
from ross.engine.build.context import ContextArchive
from ross.engine.build.instructions import Copy
from ross.engine.layers.apply import OPAQUE_XATTR
from ross.errors import InvalidArgument


def make_tar(entries: list[tuple[str, bytes | None, dict[str, object]]], compress: bool = False) -> bytes:
    """A tar of (name, data or None for a directory, TarInfo attributes)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, extra in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1700000000
            if data is None and "type" not in extra:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
            else:
                info.mode = 0o644
                info.size = len(data or b"")
            for key, value in extra.items():
                setattr(info, key, value)
            tar.addfile(info, io.BytesIO(data) if data else None)
    raw = buffer.getvalue()
    return gzip.compress(raw) if compress else raw


class ContextArchiveTests(SynchronousTestCase):
    def receive(self, data: bytes) -> ContextArchive:
        directory = self.mktemp()
        os.makedirs(directory)
        context = ContextArchive(os.path.join(directory, "context.tar"))
        self.addCleanup(context.close)
        context.receive(io.BytesIO(data))
        return context

    def test_index(self) -> None:
        """
        Entries are found by their cleaned names, implied directories
        exist, a later entry replaces an earlier one, data is read back
        from the one file, gzip contexts work.
        """
        data = make_tar([
            ("./a/b/c.txt", b"first", {}),
            ("../../escape.txt", b"jailed", {}),
            ("/abs.txt", b"abs", {}),
            ("a/b/c.txt", b"second", {"mode": 0o600}),
            ("link", None, {"type": tarfile.SYMTYPE, "linkname": "a/b/c.txt"}),
            ("hard", None, {"type": tarfile.LNKTYPE, "linkname": "a/b/c.txt"}),
        ], compress=True)
        context = self.receive(data)
        self.assertEqual(context.names(()), ["a", "abs.txt", "escape.txt", "hard", "link"])
        info = context.lookup(("a", "b", "c.txt"))
        assert info is not None
        self.assertEqual((info.kind, info.mode, context.read(info)), (files.FILE, 0o600, b"second"))
        implied = context.lookup(("a",))
        assert implied is not None
        self.assertEqual(implied.kind, files.DIRECTORY)
        self.assertEqual(context.read_file("escape.txt"), b"jailed")
        self.assertEqual(context.read_file("hard"), b"second")
        link = context.lookup(("link",))
        assert link is not None
        self.assertEqual((link.kind, link.linkname), (files.SYMLINK, "a/b/c.txt"))
        self.assertEqual(context.count, 6)

    def test_replace_directory(self) -> None:
        """A file replacing a directory takes its contents away."""
        context = self.receive(make_tar([("d/x", b"x", {}), ("d", b"file now", {})]))
        self.assertEqual(context.names(()), ["d"])
        self.assertIsNone(context.lookup(("d", "x")))

    def test_deeper_than_the_recursion_limit(self) -> None:
        """
        A context 1500 directories deep is walked, hashed, matched and
        replaced whole (each recursed once per level: a build of such a
        context failed as INTERNAL, its Docker API stream cut short).
        """
        deep = "/".join(["a"] * 1500)
        context = self.receive(make_tar([(deep + "/f", b"far", {}), ("b", b"b", {})]))
        walked = [parts for parts, _ in files.walk(context, ())]
        self.assertEqual(len(walked), 1502)
        self.assertEqual((walked[0], walked[-2], walked[-1]), (("a",), tuple(deep.split("/")) + ("f",), ("b",)))
        cache: dict[tuple[str, ...], str] = {}
        top = files.content_hash(context, ("a",), cache)
        self.assertTrue(top.startswith("dir:"))
        self.assertEqual(len(cache), 1501)
        other = self.receive(make_tar([(deep + "/f", b"near", {})]))
        self.assertNotEqual(files.content_hash(other, ("a",), {}), top)
        pattern = "/".join(["a"] * 1499) + "/*/f"
        self.assertEqual(files.expand_source(context, pattern), [tuple(deep.split("/")) + ("f",)])
        context = self.receive(make_tar([(deep + "/f", b"far", {}), ("a", b"a file now", {})]))
        self.assertEqual(context.names(()), ["a"])
        self.assertIsNone(context.lookup(("a", "a")))

    def test_empty(self) -> None:
        """No bytes at all is an empty context (a Dockerfile sent on its own)."""
        context = self.receive(b"")
        self.assertEqual(context.names(()), [])

    def test_broken(self) -> None:
        """What is not a tar, or a truncated one, is refused."""
        directory = self.mktemp()
        os.makedirs(directory)
        for n, data in enumerate((b"not a tar at all" * 100, make_tar([("f", b"x" * 5000, {})])[:2048])):
            context = ContextArchive(os.path.join(directory, f"c{n}.tar"))
            self.assertRaises(InvalidArgument, context.receive, io.BytesIO(data))
            context.close()

    def test_ignore(self) -> None:
        """The context's .dockerignore applies, never to the Dockerfile or itself."""
        context = self.receive(make_tar([
            (".dockerignore", b"*\n!keep\n", {}), ("Dockerfile", b"FROM x", {}), ("keep", b"k", {}),
            ("drop", b"d", {}), ("dir/x", b"x", {}),
        ]))
        context.apply_ignore("Dockerfile")
        self.assertEqual(context.names(()), [".dockerignore", "Dockerfile", "keep"])


class ManifestContextTests(SynchronousTestCase):
    """A context that starts as the client's manifest; files come when asked for."""

    def setUp(self) -> None:
        root = Path(self.mktemp())
        (root / "src").mkdir(parents=True)
        (root / "src/a").write_bytes(b"aaa")
        (root / "src/same").write_bytes(b"aaa")
        (root / "b").write_bytes(b"b" * 5000)
        os.link(root / "b", root / "b2")
        os.symlink("src/a", root / "link")
        self.entries, self.paths, _ = manifest(str(root), [])
        directory = self.mktemp()
        os.makedirs(directory)
        self.context = ContextArchive(os.path.join(directory, "context.tar"))
        self.addCleanup(self.context.close)
        self.context.index_manifest(self.entries)

    def test_index(self) -> None:
        """Metadata and checksums are known before any content: cache keys need nothing more."""
        self.assertEqual(self.context.names(()), ["b", "b2", "link", "src"])
        info = self.context.lookup(("src", "a"))
        assert info is not None
        self.assertEqual((info.kind, info.size, info.digest),
                         (files.FILE, 3, "sha256:" + hashlib.sha256(b"aaa").hexdigest()))
        link = self.context.lookup(("link",))
        assert link is not None
        self.assertEqual(link.linkname, "src/a")
        self.assertEqual(files.content_hash(self.context, ("src",), {}), files.content_hash(self.context, ("src",), {}))

    def test_fetch(self) -> None:
        """
        What a step needs and is not here is asked for once per content;
        what arrives is checked and then read like any context.
        """
        self.assertEqual(self.context.missing([("src",), ("b2",)]), ["b", "src/a"])
        self.assertRaises(InvalidArgument, list, self.context.chunks(self.context.lookup(("b",))))  # type: ignore[arg-type]
        self.context.receive_files(io.BytesIO(b"".join(file_pieces(self.paths, ["b", "src/a"]))), ["b", "src/a"])
        self.assertEqual(self.context.missing([()]), [])
        self.assertEqual(self.context.read_file("src/same"), b"aaa")
        self.assertEqual(self.context.read_file("b2"), b"b" * 5000)
        self.assertEqual(self.context.read_file("b"), b"b" * 5000)

    def test_changed_file(self) -> None:
        """A file that changed since the manifest was made is refused."""
        Path(self.paths["src/a"]).write_bytes(b"changed")
        e = self.assertRaises(InvalidArgument, self.context.receive_files,
                              io.BytesIO(b"".join(file_pieces(self.paths, ["src/a"]))), ["src/a"])
        self.assertEqual(str(e), "build context: src/a changed while the build was reading it")

    def test_unasked(self) -> None:
        """A file not asked for, or one missing from what was sent, is refused."""
        data = b"".join(file_pieces(self.paths, ["b"]))
        self.assertRaises(InvalidArgument, self.context.receive_files, io.BytesIO(data), ["src/a"])
        self.assertRaises(InvalidArgument, self.context.receive_files, io.BytesIO(bytes(1024)), ["src/a"])

    def test_bad_manifest(self) -> None:
        """A file without a checksum makes no manifest."""
        directory = self.mktemp()
        os.makedirs(directory)
        context = ContextArchive(os.path.join(directory, "context.tar"))
        self.addCleanup(context.close)
        bad = ManifestEntry(name="f", mode=stat.S_IFREG | 0o644, size=1, mtime_ns=0)
        self.assertRaises(InvalidArgument, context.index_manifest, [bad])


class Layers:
    """Overlay layer directories made by hand, top first."""

    def __init__(self, testcase: SynchronousTestCase, count: int) -> None:
        base = Path(testcase.mktemp())
        self.dirs = [base / f"l{i}" for i in range(count)]
        for d in self.dirs:
            d.mkdir(parents=True)

    def file(self, layer: int, path: str, data: bytes = b"", mode: int = 0o644) -> None:
        full = self.dirs[layer] / path
        full.parent.mkdir(parents=True, exist_ok=True)
        full.write_bytes(data)
        os.chmod(full, mode)

    def whiteout(self, layer: int, path: str) -> None:
        full = self.dirs[layer] / path
        full.parent.mkdir(parents=True, exist_ok=True)
        os.mknod(full, stat.S_IFCHR | 0o000, 0)

    def view(self) -> files.LayersView:
        return files.LayersView([str(d) for d in self.dirs])


class LayersViewTests(SynchronousTestCase):
    def test_merged(self) -> None:
        """Upper layers win, whiteouts hide, opaque directories hide what is below them."""
        layers = Layers(self, 3)
        layers.file(2, "etc/a", b"low a")
        layers.file(2, "etc/b", b"low b")
        layers.file(2, "opaque/old", b"old")
        layers.file(1, "etc/a", b"mid a")
        layers.whiteout(1, "etc/b")
        layers.file(0, "opaque/new", b"new")
        os.setxattr(layers.dirs[0] / "opaque", OPAQUE_XATTR, b"y")
        layers.file(0, "etc/c", b"top c")
        view = layers.view()
        self.assertEqual(view.names(()), ["etc", "opaque"])
        self.assertEqual(view.names(("etc",)), ["a", "c"])
        self.assertEqual(view.names(("opaque",)), ["new"])
        self.assertIsNone(view.lookup(("etc", "b")))
        self.assertIsNone(view.lookup(("opaque", "old")))
        self.assertEqual(files.read_file(view, "/etc/a"), b"mid a")
        self.assertEqual(files.read_file(view, "etc/c"), b"top c")

    def test_resolve(self) -> None:
        """Symlinks are followed within the root: absolute targets and .. never leave it."""
        layers = Layers(self, 1)
        layers.file(0, "real/f", b"f")
        os.symlink("/real", layers.dirs[0] / "abs")
        os.symlink("../../../real", layers.dirs[0] / "climb")
        os.symlink("loop", layers.dirs[0] / "loop")
        view = layers.view()
        self.assertEqual(files.resolve(view, "/abs/f"), ("real", "f"))
        self.assertEqual(files.resolve(view, "climb/f"), ("real", "f"))
        self.assertEqual(files.resolve(view, "abs", follow=False), ("abs",))
        self.assertEqual(files.resolve(view, "missing/../real"), ("real",))
        self.assertRaises(InvalidArgument, files.resolve, view, "loop")

    def test_expand_source(self) -> None:
        """COPY patterns match within a component, as Go's filepath.Match."""
        layers = Layers(self, 1)
        for path in ("a.txt", "b.txt", "c.md", "dir/x.txt", "dir/y.md"):
            layers.file(0, path)
        view = layers.view()
        self.assertEqual(files.expand_source(view, "*.txt"), [("a.txt",), ("b.txt",)])
        self.assertEqual(files.expand_source(view, "*/*.md"), [("dir", "y.md")])
        self.assertEqual(files.expand_source(view, "[ab].txt"), [("a.txt",), ("b.txt",)])
        self.assertEqual(files.expand_source(view, "nothing*"), [])
        self.assertEqual(files.expand_source(view, "./dir/"), [("dir",)])

    def test_content_hash(self) -> None:
        """Checksums follow content and mode, not modification times."""
        layers = Layers(self, 1)
        layers.file(0, "d/f", b"data")
        view = layers.view()
        first = files.content_hash(view, ("d",), {})
        os.utime(layers.dirs[0] / "d" / "f", (1, 1))
        self.assertEqual(files.content_hash(view, ("d",), {}), first)
        os.chmod(layers.dirs[0] / "d" / "f", 0o600)
        self.assertNotEqual(files.content_hash(view, ("d",), {}), first)
        os.chmod(layers.dirs[0] / "d" / "f", 0o644)
        (layers.dirs[0] / "d" / "f").write_bytes(b"datb")
        self.assertNotEqual(files.content_hash(view, ("d",), {}), first)
        self.assertTrue(first.startswith("dir:"))


class CopyTests(SynchronousTestCase):
    """COPY, ADD and WORKDIR into an upper directory over an image's layers."""

    def setUp(self) -> None:
        self.image = Layers(self, 1)
        self.image.file(0, "etc/passwd", b"root:x:0:0::/root:/bin/sh\nwww:x:33:34::/var/www:/bin/false\n")
        self.image.file(0, "etc/group", b"root:x:0:\nwww:x:34:\n")
        self.image.file(0, "tmp/.keep")
        os.chmod(self.image.dirs[0] / "tmp", 0o1777)
        os.symlink("/srv", self.image.dirs[0] / "app")
        (self.image.dirs[0] / "srv").mkdir()
        self.upper = Path(self.mktemp())
        self.upper.mkdir()
        self.context_dir = self.mktemp()
        os.makedirs(self.context_dir)

    def context(self, entries: list[tuple[str, bytes | None, dict[str, object]]]) -> ContextArchive:
        context = ContextArchive(os.path.join(self.context_dir, f"c{len(os.listdir(self.context_dir))}.tar"))
        self.addCleanup(context.close)
        context.receive(io.BytesIO(make_tar(entries)))
        return context

    def copy(self, tree: files.Tree, sources: list[str], dest: str, chown: str = "", mode: int | None = None,
             add: bool = False, workdir: str = "/", inline: list[tuple[str, str]] | None = None) -> None:
        command = Copy(add=add, sources=tuple(sources), inline=(), dest=dest, keyword="ADD" if add else "COPY",
                       line=1, end_line=1, code="")
        found = _sources(tree, sources, command, None, {})
        job = _CopyJob(tree=tree, found=found, inline=inline or [], dest=dest, workdir=workdir, chown=chown,
                       mode=mode, preserve=False, unpack=add, now_ns=1_700_000_000_000_000_000)
        _apply_copy(job, str(self.upper), (str(self.image.dirs[0]),))

    def merged(self) -> files.LayersView:
        return files.LayersView([str(self.upper), str(self.image.dirs[0])])

    def test_file_into_directory(self) -> None:
        """
        A file copied to a path ending in / lands inside it; missing
        directories are made 0755 root-owned; the file keeps its mode and
        time and belongs to root.
        """
        context = self.context([("hello.txt", b"hi", {"mode": 0o751, "uid": 1000, "gid": 1000})])
        self.copy(context, ["hello.txt"], "/opt/app/")
        st = os.lstat(self.upper / "opt/app/hello.txt")
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, int(st.st_mtime)),
                         (0o751, 0, 0, 1700000000))
        self.assertEqual(stat.S_IMODE(os.lstat(self.upper / "opt").st_mode), 0o755)

    def test_file_renamed(self) -> None:
        """A file copied to a path that is no directory takes that name."""
        context = self.context([("hello.txt", b"hi", {})])
        self.copy(context, ["hello.txt"], "/etc/greeting")
        self.assertEqual((self.upper / "etc/greeting").read_bytes(), b"hi")

    def test_existing_directory_kept(self) -> None:
        """
        Copying into an existing directory of the image keeps its mode (a
        sticky /tmp stays sticky) and follows a symlink in the image within
        its root (/app -> /srv).
        """
        context = self.context([("f", b"f", {})])
        self.copy(context, ["f"], "/tmp")
        self.assertEqual(stat.S_IMODE(os.lstat(self.upper / "tmp").st_mode), 0o1777)
        self.assertEqual((self.upper / "tmp/f").read_bytes(), b"f")
        self.copy(context, ["f"], "/app/")
        self.assertEqual((self.upper / "srv/f").read_bytes(), b"f")
        self.assertFalse((self.upper / "app").exists())

    def test_directory_contents(self) -> None:
        """A directory's contents are copied, not the directory; relative destinations follow WORKDIR."""
        context = self.context([("src/a", b"a", {}), ("src/sub/b", b"b", {}), ("src/link", None,
                                {"type": tarfile.SYMTYPE, "linkname": "a"})])
        self.copy(context, ["src"], "dest", workdir="/w")
        self.assertEqual(sorted(os.listdir(self.upper / "w/dest")), ["a", "link", "sub"])
        self.assertEqual(os.readlink(self.upper / "w/dest/link"), "a")
        self.assertEqual((self.upper / "w/dest/sub/b").read_bytes(), b"b")

    def test_several_sources(self) -> None:
        """Several sources, patterns included, go into one directory."""
        context = self.context([("a.txt", b"a", {}), ("b.txt", b"b", {}), ("c.md", b"c", {})])
        self.copy(context, ["*.txt", "c.md"], "/all/")
        self.assertEqual(sorted(os.listdir(self.upper / "all")), ["a.txt", "b.txt", "c.md"])

    def test_chown_chmod(self) -> None:
        """
        --chown takes names from the image's passwd and group; new
        directories on the way belong to that owner too; --chmod sets the mode.
        """
        context = self.context([("f", b"f", {})])
        self.copy(context, ["f"], "/data/dir/f", chown="www:www", mode=0o600)
        st = os.lstat(self.upper / "data/dir/f")
        self.assertEqual((st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)), (33, 34, 0o600))
        self.assertEqual(os.lstat(self.upper / "data").st_uid, 33)
        self.copy(context, ["f"], "/n", chown="7")
        self.assertEqual((os.lstat(self.upper / "n").st_uid, os.lstat(self.upper / "n").st_gid), (7, 7))
        e = self.assertRaises(InvalidArgument, self.copy, context, ["f"], "/x", chown="nobody")
        self.assertIn("no such user: nobody", str(e))

    def test_missing_source(self) -> None:
        """A source the context lacks is refused with docker's words."""
        context = self.context([("f", b"f", {})])
        e = self.assertRaises(InvalidArgument, self.copy, context, ["nope"], "/x")
        self.assertEqual(str(e), "COPY failed: file not found in build context or excluded by .dockerignore: "
                                 "stat nope: file does not exist")

    def test_add_archive(self) -> None:
        """ADD extracts a local tar (compressed or not) into the destination, owners as in the archive."""
        archive = make_tar([("top/x", b"x", {"uid": 5, "gid": 6}), ("top/hard", None,
                            {"type": tarfile.LNKTYPE, "linkname": "top/x"})], compress=True)
        context = self.context([("a.tar.gz", archive, {}), ("plain.txt", b"plain", {})])
        self.copy(context, ["a.tar.gz", "plain.txt"], "/unpacked/", add=True)
        self.assertEqual((self.upper / "unpacked/top/x").read_bytes(), b"x")
        self.assertEqual(os.lstat(self.upper / "unpacked/top/x").st_uid, 5)
        self.assertEqual(os.lstat(self.upper / "unpacked/top/hard").st_ino,
                         os.lstat(self.upper / "unpacked/top/x").st_ino)
        self.assertEqual((self.upper / "unpacked/plain.txt").read_bytes(), b"plain")

    def test_heredoc(self) -> None:
        """A COPY here-document becomes a 0644 file named by its delimiter."""
        self.copy(files.LayersView([]), [], "/notes/", inline=[("note.txt", "hello\n")])
        st = os.lstat(self.upper / "notes/note.txt")
        self.assertEqual((stat.S_IMODE(st.st_mode), (self.upper / "notes/note.txt").read_bytes()),
                         (0o644, b"hello\n"))

    def test_wh_names_are_files(self) -> None:
        """A file named like a whiteout is copied as a file, not applied as a deletion."""
        context = self.context([(".wh.etc", b"not a whiteout", {})])
        self.copy(context, [".wh.etc"], "/")
        self.assertEqual((self.upper / ".wh.etc").read_bytes(), b"not a whiteout")
        self.assertIsNotNone(self.merged().lookup(("etc", "passwd")))

    def test_workdir(self) -> None:
        """WORKDIR makes the missing directories (root, 0755) and nothing else."""
        _make_workdir(str(self.upper), (str(self.image.dirs[0]),), "/a/b", 1_700_000_000_000_000_000)
        self.assertTrue((self.upper / "a/b").is_dir())
        upper = Path(self.mktemp())
        upper.mkdir()
        _make_workdir(str(upper), (str(self.image.dirs[0]),), "/tmp", 1)
        self.assertEqual(os.listdir(upper), [])
