# -*- test-case-name: ross.test.test_build_context -*-
"""
A build context as the CLI sends it: the directory's entries less what
C{.dockerignore} excludes, first as a manifest (metadata and checksums),
then the files the daemon asks for, as a tar with numeric owners 0:0 as
docker's CLI writes it. Shared by the CLI and the daemon (which applies
the same rules to a context that arrives as a ready-made tar). Stdlib
only; blocking.

Ignore files follow docker's rules (moby/patternmatcher): one pattern a
line, C{#} comments, C{!} for exceptions, the last matching pattern wins,
C{**} matches any number of directories, C{*} and C{?} never match C{/},
a pattern matching a directory excludes everything below it.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
import stat
import tarfile
import time
from typing import Any, Iterator, NamedTuple, Sequence

from ross.tarwrite import tar_info

#: Characters that mean something to a regular expression but nothing to
#: a path pattern.
_ESCAPE = set(".+()|{}$")
CHUNK = 1 << 20


class PatternError(ValueError):
    """A malformed ignore pattern."""


def go_clean(path: str) -> str:
    """
    Go's C{filepath.Clean}: the shortest equivalent path (C{.} and C{..}
    resolved lexically, no repeated or trailing slashes).
    """
    if not path:
        return "."
    rooted = path.startswith("/")
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts and parts[-1] != "..":
                parts.pop()
            elif not rooted:
                parts.append("..")
            continue
        parts.append(part)
    cleaned = "/".join(parts)
    if rooted:
        return "/" + cleaned
    return cleaned or "."


def read_ignore_file(data: bytes | str) -> list[str]:
    """
    The patterns of a C{.dockerignore} (docker's ignorefile.ReadAll):
    comments and blank lines dropped, each pattern trimmed and cleaned, a
    leading C{/} removed.
    """
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    if text.startswith("\ufeff"):
        text = text[1:]
    patterns = []
    for line in text.split("\n"):
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = go_clean(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        patterns.append("!" + pattern if invert else pattern)
    return patterns


def _check_syntax(pattern: str) -> None:
    """Refuse what Go's filepath.Match calls a bad pattern."""
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            if i + 1 == len(pattern):
                raise PatternError(f"syntax error in pattern {pattern!r}")
            i += 2
            continue
        if ch == "[":
            end = i + 1
            if end < len(pattern) and pattern[end] in "^!":
                end += 1
            if end < len(pattern) and pattern[end] == "]":
                end += 1
            while end < len(pattern) and pattern[end] != "]":
                if pattern[end] == "\\":
                    end += 1
                end += 1
            if end >= len(pattern):
                raise PatternError(f"syntax error in pattern {pattern!r}")
            i = end + 1
            continue
        i += 1


class Pattern:
    """One ignore pattern, matched against slash-separated relative paths."""

    def __init__(self, text: str) -> None:
        self.exclusion = text.startswith("!")
        if self.exclusion:
            text = text[1:]
        self.text = text
        self._kind, self._regex = self._compile(text)

    @staticmethod
    def _compile(pattern: str) -> tuple[str, re.Pattern[str] | None]:
        out = ["^"]
        kind = "exact"
        i = 0
        first = True
        while i < len(pattern):
            ch = pattern[i]
            i += 1
            if ch == "*":
                if i < len(pattern) and pattern[i] == "*":
                    i += 1
                    if i < len(pattern) and pattern[i] == "/":
                        i += 1
                    if i >= len(pattern):
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            out.append(".*")
                            kind = "regexp"
                    else:
                        out.append("(.*/)?")
                        kind = "regexp"
                    if first:
                        kind = "suffix"
                else:
                    out.append("[^/]*")
                    kind = "regexp"
            elif ch == "?":
                out.append("[^/]")
                kind = "regexp"
            elif ch in _ESCAPE:
                out.append("\\" + ch)
            elif ch == "\\":
                if i < len(pattern):
                    out.append(re.escape(pattern[i]))
                    i += 1
                    kind = "regexp"
                else:
                    out.append("\\\\")
            elif ch in "[]":
                out.append(ch)
                kind = "regexp"
            else:
                out.append(re.escape(ch) if ch in "^\\" else ch)
            first = False
        if kind != "regexp":
            return kind, None
        try:
            return kind, re.compile("".join(out) + "$", re.DOTALL)
        except re.error as e:
            raise PatternError(f"bad pattern {pattern!r}: {e}") from None

    def matches(self, path: str) -> bool:
        if self._kind == "exact":
            return path == self.text
        if self._kind == "prefix":
            return path.startswith(self.text[:-2])
        if self._kind == "suffix":
            suffix = self.text[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self._regex is not None
        return self._regex.match(path) is not None


class Matcher:
    """
    Ignore patterns in order; the last one matching a path (or one of its
    parent directories) decides.
    """

    def __init__(self, patterns: Sequence[str]) -> None:
        self.patterns: list[Pattern] = []
        for text in patterns:
            text = text.strip()
            if not text:
                continue
            body = text[1:] if text.startswith("!") else text
            if not body:
                raise PatternError('illegal exclusion pattern: "!"')
            body = go_clean(body)
            _check_syntax(body)
            self.patterns.append(Pattern(("!" if text.startswith("!") else "") + body))
        self.exclusions = any(p.exclusion for p in self.patterns)

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, path: str, parent: list[bool] | None = None) -> tuple[bool, list[bool]]:
        """
        Whether C{path} is excluded, and what each pattern said about it
        (to pass as C{parent} for the entries of a directory, so parents
        are not matched again).
        """
        matched = False
        said = [False] * len(self.patterns)
        for i, pattern in enumerate(self.patterns):
            match = parent[i] if parent else False
            if not match:
                if pattern.exclusion != matched:
                    continue
                match = pattern.matches(path)
                if not match and not parent and "/" in path:
                    parts = path.split("/")[:-1]
                    match = any(pattern.matches("/".join(parts[:n])) for n in range(1, len(parts) + 1))
            said[i] = match
            if match:
                matched = not pattern.exclusion
        return matched, said

    def excluded(self, path: str) -> bool:
        """Whether C{path} (relative, slash-separated) is excluded."""
        return self.matches(path)[0]

    def may_include_below(self, directory: str) -> bool:
        """Whether an exception pattern may bring back something below an excluded C{directory}."""
        prefix = directory + "/"
        return any(p.exclusion and (p.text + "/").startswith(prefix) for p in self.patterns)


def trim_build_files(patterns: Sequence[str], dockerfile: str) -> list[str]:
    """
    The patterns without those that would exclude the Dockerfile or the
    C{.dockerignore} itself: docker always sends both.
    """
    kept = list(patterns)
    for keep in (".dockerignore", dockerfile):
        if keep and Matcher(kept).excluded(keep):
            kept.append("!" + keep)
    return kept


# ---------------------------------------------------------------- the tar


def walk_context(root: str, matcher: Matcher) -> Iterator[tuple[str, str, os.stat_result]]:
    """
    (host path, archive name, lstat) of every entry of directory C{root}
    not excluded by C{matcher}, depth first in name order (as docker's
    CLI walks). Excluded directories are not entered unless an exception
    pattern may bring something back below them.
    """
    yield from _walk(root, "", matcher, None)


def _walk(directory: str, prefix: str, matcher: Matcher,
          parent_said: list[bool] | None) -> Iterator[tuple[str, str, os.stat_result]]:
    # Iterative (a stack of directories being listed): a context can be
    # deeper than Python's recursion limit.
    stack = [(_entries(directory), prefix, parent_said)]
    while stack:
        entries, prefix, parent_said = stack[-1]
        entry = next(entries, None)
        if entry is None:
            stack.pop()
            continue
        name = prefix + entry.name
        st = entry.stat(follow_symlinks=False)
        is_dir = stat.S_ISDIR(st.st_mode)
        said: list[bool] | None = None
        if matcher:
            excluded, said = matcher.matches(name, parent_said)
            if excluded:
                if is_dir and matcher.exclusions and matcher.may_include_below(name):
                    stack.append((_entries(entry.path), name + "/", said))
                continue
        yield entry.path, name, st
        if is_dir:
            stack.append((_entries(entry.path), name + "/", said))


def _entries(directory: str) -> Iterator[os.DirEntry[str]]:
    try:
        with os.scandir(directory) as it:
            return iter(sorted(it, key=lambda e: e.name))
    except OSError as e:
        raise OSError(e.errno, f"cannot read {directory}: {e.strerror}") from None


def entry_pieces(path: str, name: str, st: os.stat_result,
                  links: dict[tuple[int, int], str]) -> Iterator[bytes]:
    """
    The tar of one entry as docker's CLI writes it (owners 0:0, no user
    or group names, whole second times); C{links} remembers hard-linked
    files so a second name becomes a link to the first.
    """
    info = tar_info(name, path, st, links)
    if info is None:
        return
    yield info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
    if info.type != tarfile.REGTYPE or not info.size:
        return
    with open(path, "rb") as f:
        left = info.size
        while left > 0:
            data = f.read(min(CHUNK, left))
            if not data:
                # The file shrank while being read: pad to the size promised.
                data = bytes(left)
            yield data
            left -= len(data)
    padding = -info.size % tarfile.BLOCKSIZE
    if padding:
        yield bytes(padding)


class ManifestEntry(NamedTuple):
    """
    One entry of a context's manifest: what the daemon needs to know of
    a file without its content (a regular file's C{digest} stands for it).
    """

    name: str
    mode: int
    size: int
    mtime_ns: int
    linkname: str = ""
    digest: str = ""
    devmajor: int = 0
    devminor: int = 0
    hardlink: bool = False


def file_digest(path: str) -> str:
    """"sha256:..." of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            data = f.read(CHUNK)
            if not data:
                break
            h.update(data)
    return "sha256:" + h.hexdigest()


class Checksums:
    """
    Checksums of files computed before, kept in a small database
    (C{path}) by the file's identity (device, inode, size, modification
    and change times): a file the kernel says is unchanged is not read
    again. A file changed less than two seconds before is never taken
    from it (a write in the same instant could go unseen, as git's racy
    index entries). Unusable databases are ignored: checksums are then
    computed.
    """

    def __init__(self, path: str, racy_ns: int = 2_000_000_000) -> None:
        self._path = path
        self._racy_ns = racy_ns
        self._db: Any = None
        self._known: dict[str, tuple[int, int, int, int, int, str]] = {}
        self._new: list[tuple[str, int, int, int, int, int, str]] = []

    def load(self, root: str) -> None:
        import sqlite3

        try:
            os.makedirs(os.path.dirname(self._path), mode=0o700, exist_ok=True)
            self._db = sqlite3.connect(self._path, timeout=2)
            self._db.execute("CREATE TABLE IF NOT EXISTS checksums (path TEXT PRIMARY KEY, dev INTEGER, "
                             "ino INTEGER, size INTEGER, mtime_ns INTEGER, ctime_ns INTEGER, digest TEXT)")
            prefix = root.rstrip("/") + "/"
            rows = self._db.execute("SELECT path, dev, ino, size, mtime_ns, ctime_ns, digest FROM checksums "
                                    "WHERE substr(path, 1, ?) = ?", (len(prefix), prefix))
            self._known = {row[0]: tuple(row[1:]) for row in rows}
        except sqlite3.Error:
            self._db = None

    def digest(self, path: str, st: os.stat_result) -> str:
        identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = self._known.get(path)
        if known is not None and known[:5] == identity:
            return known[5]
        digest = file_digest(path)
        if time.time_ns() - st.st_ctime_ns >= self._racy_ns:
            self._new.append((path, *identity, digest))
        return digest

    def save(self) -> None:
        import sqlite3

        if self._db is None:
            return
        try:
            with self._db:
                self._db.executemany("INSERT OR REPLACE INTO checksums VALUES (?, ?, ?, ?, ?, ?, ?)", self._new)
        except sqlite3.Error:
            pass
        finally:
            self._db.close()
            self._db = None


def manifest(root: str, patterns: Sequence[str],
             checksums: Checksums | None = None) -> tuple[list[ManifestEntry], dict[str, str], int]:
    """
    The manifest of directory C{root} less what C{patterns} exclude, the
    host path of each regular file by name, and the bytes of the tar
    docker's CLI would send for it (its "Sending build context" figure).
    """
    if checksums is not None:
        checksums.load(os.path.abspath(root))
    entries: list[ManifestEntry] = []
    paths: dict[str, str] = {}
    links: dict[tuple[int, int], ManifestEntry] = {}
    size = 2 * tarfile.BLOCKSIZE
    for path, name, st in walk_context(root, Matcher(patterns)):
        mode = st.st_mode
        size += tarfile.BLOCKSIZE
        if stat.S_ISREG(mode):
            key = (st.st_dev, st.st_ino)
            first = links.get(key) if st.st_nlink > 1 else None
            if first is not None:
                entries.append(first._replace(name=name, linkname=first.name, hardlink=True))
                continue
            digest = checksums.digest(os.path.abspath(path), st) if checksums is not None else file_digest(path)
            entry = ManifestEntry(name, mode, st.st_size, st.st_mtime_ns, digest=digest)
            if st.st_nlink > 1:
                links[key] = entry
            paths[name] = path
            size += st.st_size + (-st.st_size % tarfile.BLOCKSIZE)
        elif stat.S_ISLNK(mode):
            entry = ManifestEntry(name, mode, 0, st.st_mtime_ns, linkname=os.readlink(path))
        elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            entry = ManifestEntry(name, mode, 0, st.st_mtime_ns, devmajor=os.major(st.st_rdev),
                                  devminor=os.minor(st.st_rdev))
        elif stat.S_ISDIR(mode) or stat.S_ISFIFO(mode):
            entry = ManifestEntry(name, mode, 0, st.st_mtime_ns)
        else:
            continue
        entries.append(entry)
    if checksums is not None:
        checksums.save()
    return entries, paths, size


def file_pieces(paths: dict[str, str], names: Sequence[str]) -> Iterator[bytes]:
    """A tar of the regular files C{names} (at their host C{paths}), piece by piece."""
    links: dict[tuple[int, int], str] = {}
    for name in names:
        path = paths.get(name)
        if path is None:
            raise FileNotFoundError(f"the daemon asked for {name!r}, which the context does not have")
        yield from entry_pieces(path, name, os.lstat(path), links)
    yield bytes(2 * tarfile.BLOCKSIZE)


def relative_dockerfile(context: str, dockerfile: str) -> str | None:
    """
    The path of C{dockerfile} inside directory C{context} (slash
    separated), or None when it lies outside it.
    """
    context_real = os.path.realpath(context)
    real = os.path.realpath(dockerfile)
    if real == context_real or not real.startswith(context_real.rstrip("/") + "/"):
        return None
    return posixpath.normpath(os.path.relpath(real, context_real).replace(os.sep, "/"))
