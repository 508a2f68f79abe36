# -*- test-case-name: ross.test.test_cli_cp -*-
"""
``ross cp``'s client half: docker's path rules (its pkg/archive copy.go),
the local archive sent into a container and the local extraction of one
received from it.

The daemon extracts an archive into a directory and archives a path with
entries named after its last component; which directory to extract into
and what the entries must be called so that ``cp SRC DEST`` means what it
means in docker is decided here, from what the source and the destination
are:

    destination exists as a directory  -> extract into it, names unchanged
    destination exists as a file       -> a file replaces it (rebased to its
                                          name); a directory: "cannot copy
                                          directory"
    destination missing                -> extract into its parent, the top
                                          entry renamed to its name; a file
                                          onto a path ending in "/": "no
                                          such directory"

A source ending in C{/.} copies the directory's contents.
"""

from __future__ import annotations

import os
import queue
import stat
import sys
import tarfile
import threading
from typing import IO, Any, Callable, Iterable, Iterator, NamedTuple

from ross.client.base import Cli, CliError, error_of
from ross.client.base import grpc
from ross.client.direct import DirectError, redeem_fd, send_all, write_through
from ross.humanize import human_size
from ross.tarwrite import FdSink, Sink, write_tree
from ross.v1 import container_pb2

EXIT_CP = 1
CHUNK = 1 << 20


def cp_error(message: str) -> CliError:
    """docker cp's own errors exit 1 (not 125)."""
    return CliError(message, EXIT_CP)


def split_arg(arg: str) -> tuple[str, str]:
    """
    (container, path) of a cp argument; container empty for a local path
    (absolute, or relative starting with "." even when it holds a ":").
    """
    if arg.startswith("/"):
        return "", arg
    container, colon, path = arg.partition(":")
    if not colon or container.startswith("."):
        return "", arg
    return container, path


def _specifies_current_dir(path: str) -> bool:
    return os.path.basename(path) == "."


def _has_trailing_separator(path: str) -> bool:
    return len(path) > 0 and path.endswith("/")


def preserve_trailing(cleaned: str, original: str) -> str:
    """C{cleaned} with C{original}'s trailing "/." or "/" put back."""
    if _specifies_current_dir(original) and not _specifies_current_dir(cleaned):
        cleaned = cleaned.rstrip("/") + "/."
    if _has_trailing_separator(original) and not _has_trailing_separator(cleaned):
        cleaned += "/"
    return cleaned


def local_path(path: str) -> str:
    """An absolute local path, keeping a trailing "/" or "/."."""
    return preserve_trailing(os.path.abspath(path), path)


def split_entry(path: str) -> tuple[str, str]:
    """
    docker's SplitPathDirEntry: (directory, last entry), "." as the entry
    for a path ending in "/.".
    """
    cleaned = os.path.normpath(path)
    if cleaned.startswith("//"):
        cleaned = cleaned[1:]
    if _specifies_current_dir(path):
        cleaned = cleaned.rstrip("/") + "/."
    return os.path.dirname(cleaned) or ".", os.path.basename(cleaned) or cleaned


class CopyInfo(NamedTuple):
    """
    What one side of a copy is (docker's archive.CopyInfo). A NamedTuple,
    not attrs: importing attrs would cost every ``ross cp`` 10 ms.
    """

    path: str
    exists: bool = False
    is_dir: bool = False
    rebase_name: str = ""


def prepare(source: CopyInfo, dest: CopyInfo) -> tuple[str, str]:
    """
    docker's PrepareArchiveCopy: the directory to extract into and the name
    the archive's top entry must have there ("" to keep it).
    """
    dest_dir, dest_base = split_entry(dest.path)
    if dest.exists and dest.is_dir:
        return dest.path, ""
    if dest.exists and source.is_dir:
        raise cp_error("cannot copy directory")
    if not dest.exists and not source.is_dir and _has_trailing_separator(dest.path):
        raise cp_error("no such directory")
    return dest_dir, dest_base


def rebase(name: str, old: str, new: str) -> str:
    """C{name} with its first component C{old} replaced by C{new}."""
    first, slash, rest = name.partition("/")
    if first != old:
        return name
    return new + slash + rest


# ---------------------------------------------------------------- local source


def _base(path: str) -> str:
    """Go's filepath.Base: the last element, trailing slashes ignored."""
    return os.path.basename(path.rstrip("/")) or "/"


def source_info(path: str, follow_link: bool) -> CopyInfo:
    """
    docker's CopyInfoSourcePath: the local source with the symlinks of its
    directory resolved (and the one at its end with C{follow_link}); a
    resolved name that differs from the one given is kept as the name to
    copy under.
    """
    try:
        if follow_link:
            resolved = preserve_trailing(os.path.realpath(path, strict=True), path)
        else:
            directory, base = os.path.split(path)
            resolved = os.path.join(os.path.realpath(directory or ".", strict=True), base)
        st = os.lstat(resolved)
    except OSError as e:
        raise cp_error(f"lstat {e.filename or path}: {(e.strerror or str(e)).lower()}") from None
    rebase_name = ""
    if (follow_link or _has_trailing_separator(path)) and _base(path) != _base(resolved):
        rebase_name = _base(path)
    return CopyInfo(path=resolved, exists=True, is_dir=stat.S_ISDIR(st.st_mode), rebase_name=rebase_name)


def write_source(source: CopyInfo, name: str, sink: Sink) -> None:
    """The tar of C{source} with its top entry named C{name}, to C{sink}."""
    directory, base = split_entry(source.path)
    write_tree(os.path.join(directory, base) if base != "." else directory, name, sink)


def archive_chunks(source: CopyInfo, name: str, counter: list[int]) -> Iterator[bytes]:
    """
    The tar of C{source} with its top entry named C{name}, in chunks, made
    by a thread (the caller sends while the next chunk is read). Adds the
    bytes to C{counter[0]}.
    """
    chunks: queue.Queue[bytes | BaseException | None] = queue.Queue(8)
    stop = threading.Event()

    class Chunker:
        def __init__(self) -> None:
            self.buffer = bytearray()

        def write(self, data: bytes) -> None:
            if stop.is_set():
                raise OSError("the copy was abandoned")
            self.buffer += data
            if len(self.buffer) >= CHUNK:
                self.flush()

        def send_file(self, path: str, size: int) -> None:
            with open(path, "rb", buffering=0) as f:
                while size > 0:
                    data = f.read(min(size, CHUNK))
                    if not data:
                        break
                    if not self.buffer and len(data) == CHUNK:
                        # Whole chunks go as they are read, uncopied.
                        if stop.is_set():
                            raise OSError("the copy was abandoned")
                        chunks.put(data)
                    else:
                        self.write(data)
                    size -= len(data)
            if size > 0:
                self.write(bytes(size))

        def flush(self) -> None:
            if self.buffer:
                chunks.put(bytes(self.buffer))
                self.buffer.clear()

    def write() -> None:
        try:
            sink = Chunker()
            write_source(source, name, sink)
            sink.flush()
            chunks.put(None)
        except BaseException as e:
            chunks.put(e)

    thread = threading.Thread(target=write, name="ross-cp-tar", daemon=True)
    thread.start()
    try:
        while True:
            item = chunks.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                if isinstance(item, OSError):
                    raise cp_error(f"{item.strerror or item}: {item.filename}" if item.filename else str(item))
                raise item
            counter[0] += len(item)
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                chunks.get(timeout=0.1)
            except queue.Empty:
                pass


# ---------------------------------------------------------------- local destination


def destination_info(path: str) -> CopyInfo:
    """
    docker's CopyInfoDestinationPath: the local destination, a symlink at
    its end followed; when missing, its parent must be a directory.
    """
    original = path
    for _ in range(11):
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            parent = split_entry(path)[0]
            try:
                parent_st = os.stat(parent)
            except OSError as e:
                raise cp_error(f"stat {parent}: {(e.strerror or str(e)).lower()}") from None
            if not stat.S_ISDIR(parent_st.st_mode):
                raise cp_error("not a directory")
            return CopyInfo(path=path)
        except NotADirectoryError:
            raise cp_error("not a directory") from None
        if not stat.S_ISLNK(st.st_mode):
            return CopyInfo(path=path, exists=True, is_dir=stat.S_ISDIR(st.st_mode))
        target = os.readlink(path)
        path = target if target.startswith("/") else os.path.join(split_entry(path)[0], target)
    raise cp_error(f"too many symlinks in {original}")


def validate_output(path: str) -> None:
    """docker's ValidateOutputPath."""
    directory = os.path.dirname(os.path.normpath(path))
    if directory and directory != "." and not os.path.exists(directory):
        raise cp_error(f'invalid output path: directory "{directory}" does not exist')
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return
    if not (stat.S_ISDIR(st.st_mode) or stat.S_ISREG(st.st_mode)):
        kind = "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else (
            "a named pipe" if stat.S_ISFIFO(st.st_mode) else "a socket" if stat.S_ISSOCK(st.st_mode) else
            "an unsupported file")
        raise cp_error(f'invalid output path: "{path}" must be a directory or a regular file: got {kind}')


class _Reader:
    """A file over an iterator of chunks, for tarfile's stream mode."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = iter(chunks)
        self._current = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        parts = []
        while n != 0:
            if not self._current:
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._current = memoryview(chunk)
            take = len(self._current) if n < 0 else min(n, len(self._current))
            parts.append(self._current[:take])
            self._current = self._current[take:]
            if n > 0:
                n -= take
        return b"".join(parts)


class _TarFile(tarfile.TarFile):
    """Extraction keeps the invoking user as owner (docker's NoLchown)."""

    def chown(self, tarinfo: tarfile.TarInfo, targetpath: Any, numeric_owner: bool) -> None:
        return


def extract_local(chunks: Iterable[bytes], dest_dir: str, old: str, new: str) -> None:
    """
    Extract the archive in C{chunks} into local directory C{dest_dir}, the
    top entry C{old} renamed C{new} (when given). Entries may not land
    outside C{dest_dir}, also through symlinks; an existing directory is
    never replaced by a non-directory or the reverse (docker's
    NoOverwriteDirNonDir).
    """
    root = os.path.realpath(dest_dir)

    def admit(member: tarfile.TarInfo) -> None:
        name = rebase(member.name, old, new) if new else member.name
        name = name.lstrip("/")
        target = os.path.realpath(os.path.join(root, name))
        if target != root and not target.startswith(root.rstrip("/") + "/"):
            raise cp_error(f"archive entry {member.name!r} would be extracted outside {dest_dir}")
        if member.islnk():
            link = (rebase(member.linkname, old, new) if new else member.linkname).lstrip("/")
            if not os.path.realpath(os.path.join(root, link)).startswith(root.rstrip("/") + "/"):
                raise cp_error(f"archive entry {member.name!r}: hard link outside {dest_dir}")
            member.linkname = link
        member.name = name
        full = os.path.join(root, name)
        if member.issym():
            # docker's rule: a link whose target, taken from where the link
            # is (an absolute one too), leads out of the destination is no
            # part of a copy (a container could plant one for the next tool
            # that writes there).
            pointed = os.path.normpath(os.path.join(os.path.dirname(full), member.linkname.lstrip("/")))
            if pointed != root and not pointed.startswith(root.rstrip("/") + "/"):
                raise cp_error(f'invalid symlink "{full}" -> "{member.linkname}"')
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            return
        if name in ("", "."):
            return
        if stat.S_ISDIR(st.st_mode) and not member.isdir():
            raise cp_error(f'cannot overwrite directory "{full}" with non-directory "{dest_dir}"')
        if not stat.S_ISDIR(st.st_mode) and member.isdir():
            raise cp_error(f'cannot overwrite non-directory "{full}" with directory "{dest_dir}"')
        if not member.isdir():
            # Replaced, never written through (it may be a symlink).
            os.unlink(full)

    directories = []
    with _TarFile.open(fileobj=_Reader(chunks), mode="r|", bufsize=CHUNK) as tar:  # type: ignore[call-overload]
        tar.copybufsize = CHUNK
        for member in tar:
            admit(member)
            if member.isdir():
                directories.append(member)
            # Directory modes and times are set last, after their contents.
            tar.extract(member, root, set_attrs=not member.isdir())
        for member in reversed(directories):
            path = os.path.join(root, member.name)
            tar.utime(member, path)
            tar.chmod(member, path)


def stdin_chunks(stream: IO[bytes], counter: list[int]) -> Iterator[bytes]:
    """C{stream} in chunks, counted into C{counter[0]}."""
    while True:
        data = stream.read(CHUNK)
        if not data:
            return
        counter[0] += len(data)
        yield data


def copied(size: int, where: str, emit: Callable[[str], object]) -> None:
    """docker's last line (on a terminal, unless -q)."""
    emit(f"Successfully copied {human_size(size, 3)} to {where}\n")


# ---------------------------------------------------------------- the command


def cmd_cp(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] CONTAINER:SRC_PATH DEST_PATH|-\n       ross cp [OPTIONS] SRC_PATH|- CONTAINER:DEST_PATH",
                   "Copy files/folders between a container and the local filesystem\n\n"
                   "Use '-' as the source to read a tar archive from stdin\n"
                   "and extract it to a directory destination in a container.\n"
                   "Use '-' as the destination to stream a tar archive of a\n"
                   "container source to stdout.")
    p.add_argument("-a", "--archive", action="store_true", help="Archive mode (copy all uid/gid information)")
    p.add_argument("-L", "--follow-link", action="store_true", help="Always follow symbol link in SRC_PATH")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="Suppress progress output during copy. Progress output is automatically suppressed "
                        "if no terminal is attached")
    p.add_argument("source")
    p.add_argument("destination")
    args = p.parse_args(argv)
    if not args.source:
        raise cp_error("source can not be empty")
    if not args.destination:
        raise cp_error("destination can not be empty")
    source_container, source = split_arg(args.source)
    dest_container, dest = split_arg(args.destination)
    if source_container and dest_container:
        raise cp_error("copying between containers is not supported")
    if not source_container and not dest_container:
        raise cp_error("must specify at least one container source")
    show = not args.quiet and cli.err.isatty()
    try:
        if source_container:
            _cp_from(cli, source_container, source, dest, args.follow_link, show)
        else:
            _cp_to(cli, source, dest_container, dest, args.archive, args.follow_link, show)
    except grpc.RpcError as e:
        error = error_of(cli, e)
        # What the daemon answered fails the copy as docker's does (1);
        # not reaching it is Ross failing (125).
        raise CliError(error.message, error.code if e.code() == grpc.StatusCode.UNAVAILABLE else EXIT_CP)
    return 0


def _cp_from(cli: Cli, container: str, source: str, dest: str, follow_link: bool, show: bool) -> None:
    if dest != "-":
        dest = local_path(dest)
        validate_output(dest)
    stream = cli.stub("ContainerService").CopyFrom(container_pb2.CopyFromRequest(
        container_id=container, path=source, follow_link=follow_link, direct=cli.direct_channels()))
    first = next(stream, None)
    if first is None or first.WhichOneof("response") != "stat":
        raise cp_error(f"the daemon sent no description of {container}:{source}")
    counter = [0]

    def data() -> Iterable[bytes]:
        for message in stream:
            if message.WhichOneof("response") == "ticket":
                yield from _direct_chunks(message.ticket, counter)
                continue
            counter[0] += len(message.data)
            yield message.data

    if dest == "-":
        for chunk in data():
            sys.stdout.buffer.write(chunk)
        sys.stdout.buffer.flush()
        return
    info = CopyInfo(path=source, exists=True, is_dir=stat.S_ISDIR(first.stat.mode))
    dest_dir, new_name = prepare(info, destination_info(dest))
    top = split_entry(source or "/")[1]
    extract_local(data(), dest_dir, "." if top == "/" else top, new_name)
    if show:
        copied(counter[0], dest, cli.err.write)


def _direct_chunks(ticket: Any, counter: list[int]) -> Iterator[bytes]:
    """
    The tar on the pipe a CopyFrom C{ticket} stands for, in chunks, to its
    end of file (the stream's status then says whether it was all of it).
    """
    fd = _redeemed(ticket)
    try:
        while data := os.read(fd, CHUNK):
            counter[0] += len(data)
            yield data
    finally:
        os.close(fd)


def _redeemed(ticket: Any) -> int:
    try:
        return redeem_fd(ticket.direct_socket, ticket.ticket)
    except DirectError as e:
        raise cp_error(str(e))


def _cp_stat(stub: Any, container: str, path: str) -> Any:
    """The PathStat of C{path}; None when nothing is there."""
    try:
        for message in stub.CopyFrom(container_pb2.CopyFromRequest(container_id=container, path=path, stat_only=True)):
            return message.stat
    except grpc.RpcError as e:
        if e.code() == grpc.StatusCode.NOT_FOUND and not (e.details() or "").startswith("No such container"):
            return None
        raise
    return None


def _cp_to(cli: Cli, source: str, container: str, dest: str, archive: bool, follow_link: bool, show: bool) -> None:
    stub = cli.stub("ContainerService")
    target = CopyInfo(path=dest)
    found = _cp_stat(stub, container, dest)
    if found is not None and stat.S_ISLNK(found.mode):
        target = CopyInfo(path=found.link_target)
        found = _cp_stat(stub, container, found.link_target)
    if found is not None:
        if not (stat.S_ISDIR(found.mode) or stat.S_ISREG(found.mode)):
            raise cp_error(f'destination "{container}:{dest}" must be a directory or a regular file')
        target = target._replace(exists=True, is_dir=stat.S_ISDIR(found.mode))
    counter = [0]
    chunks: Iterable[bytes]
    if source == "-":
        if not target.is_dir:
            raise cp_error(f'destination "{container}:{dest}" must be a directory')
        dest_dir = target.path
        write: Callable[[int], int] = lambda fd: send_all(sys.stdin.buffer.fileno(), fd, CHUNK)
        chunks = stdin_chunks(sys.stdin.buffer, counter)
    else:
        info = source_info(local_path(source), follow_link)
        dest_dir, new_name = prepare(info, target)
        name = new_name or info.rebase_name or split_entry(info.path)[1]
        write = lambda fd: _write_direct(info, name, fd)
        chunks = archive_chunks(info, name, counter)
    options = container_pb2.CopyToOptions(
        container_id=container, path=dest_dir, copy_uid_gid=archive, no_overwrite_dir_non_dir=True)
    if cli.direct_channels():
        size = _copy_to_direct(stub, options, write)
        if show:
            copied(size, f"{container}:{dest}", cli.err.write)
        return
    failed: list[BaseException] = []
    call: list[Any] = []
    started = threading.Event()

    def requests() -> Iterable[Any]:
        yield container_pb2.CopyToRequest(options=options)
        try:
            for chunk in chunks:
                yield container_pb2.CopyToRequest(data=chunk)
        except BaseException as e:
            # The archive could not be made: the daemon must not take what
            # was sent so far for all of it.
            failed.append(e)
            started.wait()
            call[0].cancel()

    future = stub.CopyTo.future(requests())
    call.append(future)
    started.set()
    try:
        future.result()
    except grpc.FutureCancelledError:
        pass
    except grpc.RpcError:
        if not failed:
            raise
    if failed:
        raise failed[0]
    if show:
        copied(counter[0], f"{container}:{dest}", cli.err.write)


def _write_direct(source: CopyInfo, name: str, fd: int) -> int:
    """The tar of C{source} into C{fd}; its size."""
    sink = FdSink(fd)
    try:
        write_source(source, name, sink)
        sink.flush()
    except BrokenPipeError:
        raise
    except OSError as e:
        raise cp_error(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
    return sink.written


def _copy_to_direct(stub: Any, options: Any, write: Callable[[int], int]) -> int:
    """
    CopyToDirect: the archive C{write} makes, into the pipe of the daemon's
    copy helper. Returns its size.
    """
    try:
        return write_through(stub.CopyToDirect(options), write)[0]
    except DirectError as e:
        raise cp_error(f"{e} for {options.container_id}:{options.path}")
