# -*- test-case-name: ross.test.test_build_context -*-
"""
The build context as the CLI sends it (L{ross.buildcontext}):
C{.dockerignore} files and patterns with docker's rules, and the tar.
"""

from __future__ import annotations

import hashlib
import io
import os
import stat
import tarfile

from twisted.trial.unittest import SynchronousTestCase

from ross import buildcontext
from ross.buildcontext import (
    Checksums, Matcher, PatternError, file_pieces, go_clean, manifest, read_ignore_file, relative_dockerfile, trim_build_files,
    walk_context,
)
from ross.engine.fsutil import remove_tree
from ross.testing.hostile import deep_directories


class IgnoreFileTests(SynchronousTestCase):
    def test_read(self) -> None:
        """
        Comments and blank lines go, patterns are trimmed and cleaned, a
        leading slash means the context's root, ! survives the cleaning.
        """
        data = "\ufeff# comment\n\n  *.log  \n/abs/path\n./here/../there/\n! keep.log\n!/root/x\n#*.md\n"
        self.assertEqual(read_ignore_file(data.encode()),
                         ["*.log", "abs/path", "there", "!keep.log", "!root/x"])

    def test_clean(self) -> None:
        """Go's filepath.Clean."""
        for path, cleaned in (("", "."), ("a//b/", "a/b"), ("./a/./b", "a/b"), ("a/../..", ".."),
                              ("/../a", "/a"), ("/", "/"), ("a/b/../../..", "..")):
            self.assertEqual(go_clean(path), cleaned, path)


class MatcherTests(SynchronousTestCase):
    def check(self, patterns: list[str], excluded: list[str], kept: list[str]) -> None:
        matcher = Matcher(patterns)
        for path in excluded:
            self.assertTrue(matcher.excluded(path), f"{patterns} should exclude {path}")
        for path in kept:
            self.assertFalse(matcher.excluded(path), f"{patterns} should keep {path}")

    def test_wildcards(self) -> None:
        """* and ? stay within a path component; ** spans any number of them."""
        self.check(["*.go"], ["a.go"], ["dir/a.go", "a.gox"])
        self.check(["**/*.go"], ["a.go", "dir/a.go", "a/b/c.go"], ["a.gox"])
        self.check(["a?c"], ["abc"], ["ac", "a/c", "abbc"])
        self.check(["dir/**"], ["dir/a", "dir/a/b"], ["dira"])
        self.check(["**"], ["anything", "a/b"], [])
        self.check(["**/tmp"], ["tmp", "a/tmp", "a/b/tmp/c"], ["tmpx"])
        self.check(["a/**/b"], ["a/b", "a/x/b", "a/x/y/b"], ["a/xb"])
        self.check(["[a-c]x"], ["ax", "cx"], ["dx"])
        self.check(["a.b"], ["a.b"], ["axb"])
        self.check(["\\*x"], ["*x"], ["ax"])

    def test_directories(self) -> None:
        """A pattern matching a directory excludes everything below it."""
        self.check(["dir"], ["dir", "dir/x", "dir/x/y"], ["dirx", "x/dir"])
        self.check(["*/tmp"], ["a/tmp/x"], ["tmp/x", "a/b/tmp/x"])

    def test_exceptions(self) -> None:
        """! brings back what an earlier pattern excluded; the last match wins."""
        self.check(["*.md", "!README.md"], ["a.md"], ["README.md"])
        self.check(["!README.md", "*.md"], ["README.md", "a.md"], [])
        self.check(["docs", "!docs/keep"], ["docs/x"], ["docs/keep", "docs/keep/deep"])
        self.check(["*", "!src/**", "src/*.tmp"], ["x", "src/a.tmp"], ["src/a.py", "src/d/a.tmp"])

    def test_parent_results(self) -> None:
        """What patterns said of a directory carries to its entries (as docker walks)."""
        matcher = Matcher(["docs", "!docs/keep"])
        excluded, said = matcher.matches("docs")
        self.assertTrue(excluded)
        self.assertTrue(matcher.matches("docs/x", said)[0])
        self.assertFalse(matcher.matches("docs/keep", said)[0])
        self.assertTrue(matcher.may_include_below("docs"))
        self.assertFalse(matcher.may_include_below("other"))

    def test_bad_patterns(self) -> None:
        """A lone ! and unbalanced brackets are refused."""
        self.assertRaises(PatternError, Matcher, ["!"])
        self.assertRaises(PatternError, Matcher, ["[abc"])
        self.assertRaises(PatternError, Matcher, ["a\\"])

    def test_trim_build_files(self) -> None:
        """The Dockerfile and .dockerignore are always sent, whatever the patterns say."""
        patterns = trim_build_files(["*", "!src"], "Dockerfile")
        matcher = Matcher(patterns)
        self.assertFalse(matcher.excluded("Dockerfile"))
        self.assertFalse(matcher.excluded(".dockerignore"))
        self.assertTrue(matcher.excluded("other"))
        self.assertEqual(trim_build_files(["*.log"], "Dockerfile"), ["*.log"])


class ContextTarTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.root = self.mktemp()
        for path, data in (("Dockerfile", b"FROM x\n"), ("src/a.py", b"a"), ("src/b.tmp", b"b"),
                           ("docs/keep/k", b"k"), ("docs/drop", b"d"), ("big", b"x" * 3_000_000)):
            full = os.path.join(self.root, path)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(data)
        os.chmod(os.path.join(self.root, "src/a.py"), 0o755)
        os.symlink("src/a.py", os.path.join(self.root, "link"))
        os.link(os.path.join(self.root, "big"), os.path.join(self.root, "big2"))
        os.chown(os.path.join(self.root, "src/a.py"), 1000, 1000)

    def test_walk(self) -> None:
        """Excluded entries are left out; excluded directories entered only for exceptions."""
        names = [name for _, name, _ in walk_context(self.root, Matcher(["*.tmp", "**/*.tmp", "docs", "!docs/keep"]))]
        self.assertEqual(names, ["Dockerfile", "big", "big2", "docs/keep", "docs/keep/k", "link", "src", "src/a.py"])

    def test_manifest(self) -> None:
        """
        The manifest lists every entry not excluded with its mode, size
        and checksum (a second name of a file as a hard link); its size is
        what docker's CLI would send.
        """
        entries, paths, size = manifest(self.root, ["docs"])
        by_name = {e.name: e for e in entries}
        self.assertEqual(sorted(by_name), ["Dockerfile", "big", "big2", "link", "src", "src/a.py", "src/b.tmp"])
        self.assertEqual(by_name["src/a.py"].mode & 0o7777, 0o755)
        self.assertTrue(stat.S_ISDIR(by_name["src"].mode))
        self.assertEqual(by_name["link"].linkname, "src/a.py")
        big = by_name["big"]
        self.assertEqual((big.size, big.digest), (3_000_000, "sha256:" + hashlib.sha256(b"x" * 3_000_000).hexdigest()))
        self.assertEqual((by_name["big2"].hardlink, by_name["big2"].linkname), (True, "big"))
        self.assertEqual(sorted(paths), ["Dockerfile", "big", "src/a.py", "src/b.tmp"])
        tar_size = len(b"".join(file_pieces(paths, sorted(paths)))) + 3 * 512
        self.assertEqual(size, tar_size)

    def test_checksums_kept(self) -> None:
        """
        Checksums are kept by the files' identity: an unchanged file is not
        read again; a rewritten one is, even with its size and modification
        time put back (its change time moved).
        """
        db = os.path.join(self.mktemp(), "checksums.db")
        first, _, _ = manifest(self.root, [], Checksums(db, racy_ns=0))
        reads: list[str] = []
        real = buildcontext.file_digest

        def counted(path: str) -> str:
            reads.append(path)
            return real(path)

        self.patch(buildcontext, "file_digest", counted)
        again, _, _ = manifest(self.root, [], Checksums(db, racy_ns=0))
        self.assertEqual((again, reads), (first, []))
        path = os.path.join(self.root, "src/a.py")
        st = os.stat(path)
        with open(path, "wb") as f:
            f.write(b"b")
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        changed, _, _ = manifest(self.root, [], Checksums(db, racy_ns=0))
        self.assertEqual(reads, [os.path.abspath(path)])
        self.assertNotEqual({e.name: e.digest for e in changed}["src/a.py"], {e.name: e.digest for e in first}["src/a.py"])
        # A file changed just now is not trusted to the database.
        recent = Checksums(os.path.join(self.mktemp(), "c.db"))
        manifest(self.root, [], recent)
        self.assertEqual(len(reads), 1 + 6)

    def test_files_tar(self) -> None:
        """
        The files asked for go as a tar owned by 0:0 without names, modes
        kept; a name the context lacks is refused.
        """
        _, paths, _ = manifest(self.root, [])
        data = b"".join(file_pieces(paths, ["src/a.py", "big"]))
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = {m.name: m for m in tar.getmembers()}
            self.assertEqual(sorted(members), ["big", "src/a.py"])
            self.assertEqual({(m.uid, m.gid, m.uname, m.gname) for m in members.values()}, {(0, 0, "", "")})
            self.assertEqual(members["src/a.py"].mode, 0o755)
            extracted = tar.extractfile("big")
            assert extracted is not None
            self.assertEqual(extracted.read(), b"x" * 3_000_000)
        self.assertRaises(FileNotFoundError, list, file_pieces(paths, ["nope"]))

    def test_relative_dockerfile(self) -> None:
        """A Dockerfile inside the context is named by its path there; outside, it has none."""
        self.assertEqual(relative_dockerfile(self.root, os.path.join(self.root, "src/../Dockerfile")), "Dockerfile")
        self.assertIsNone(relative_dockerfile(self.root, self.mktemp()))


class WalkContextTests(SynchronousTestCase):
    def test_deeper_than_the_recursion_limit(self) -> None:
        """
        A context directory 1500 levels deep is walked whole, in order,
        with and without an ignore file that brings a file back below an
        excluded directory (before, the walk recursed once per level).
        """
        root = os.path.abspath(self.mktemp())
        os.mkdir(root)
        self.addCleanup(remove_tree, root)
        fd = deep_directories(root, 1500)
        os.close(os.open("keep", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd))
        os.close(fd)
        names = [name for _, name, _ in walk_context(root, Matcher([]))]
        self.assertEqual(len(names), 1501)
        self.assertEqual(names[-1], "/".join(["a"] * 1500) + "/keep")
        deep = "/".join(["a"] * 1500) + "/keep"
        kept = [name for _, name, _ in walk_context(root, Matcher(["a", "!" + deep]))]
        self.assertEqual(kept, [deep])
