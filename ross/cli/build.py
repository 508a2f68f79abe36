# -*- test-case-name: ross.test.integration.test_build -*-
"""
``ross build`` and ``ross builder prune``.

The context goes to the daemon as docker's CLI sends it (a tar of the
directory less what C{.dockerignore} excludes, owners 0:0), after the
options and the Dockerfile itself, so a malformed Dockerfile is refused
before the context is sent. Output is docker's classic builder's; a
failed RUN step exits with its command's exit code, other build failures
with 1, and Ross's own failures (daemon unreachable, bad flag) with 125.
"""

from __future__ import annotations

import os
import queue
import sys
from typing import IO, Any, Iterator

from ross.buildcontext import (
    CHUNK, Checksums, Matcher, PatternError, manifest, read_ignore_file, relative_dockerfile, file_pieces,
)
from ross.client.base import Cli, CliError, error_of
from ross.client.base import grpc
from ross.humanize import human_size

_TAR_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"))
_END = object()


def _pb() -> Any:
    from ross.v1 import image_pb2

    return image_pb2


def _checksums_path() -> str:
    """Where the CLI keeps the checksums of context files ($ROSS_CONFIG, else ~/.ross, as the credentials)."""
    base = os.environ.get("ROSS_CONFIG") or os.path.join(os.path.expanduser("~"), ".ross")
    return os.path.join(base, "build-checksums.db")


def _joined(pieces: Iterator[bytes]) -> Iterator[bytes]:
    """Pieces joined into messages of about a chunk (a small file's header and data go together)."""
    buffer: list[bytes] = []
    size = 0
    for piece in pieces:
        buffer.append(piece)
        size += len(piece)
        if size >= CHUNK:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


def _is_tar(head: bytes) -> bool:
    """Whether stdin's first bytes are a (plain, gzip or zstd) tar, not a Dockerfile."""
    if any(head.startswith(magic) for magic, _ in _TAR_MAGIC):
        return True
    return len(head) >= 262 and head[257:262] == b"ustar"


def _key_value(values: list[str], what: str, environ: bool) -> dict[str, str]:
    """NAME=VALUE flags; with C{environ}, a bare NAME takes the value from the environment (or is left out)."""
    result: dict[str, str] = {}
    for value in values:
        name, eq, rest = value.partition("=")
        if not name:
            raise CliError(f"invalid {what}: {value!r}")
        if eq:
            result[name] = rest
        elif environ:
            if name in os.environ:
                result[name] = os.environ[name]
        else:
            result[name] = ""
    return result


class _Context:
    """What goes to the daemon: the Dockerfile, and the context."""

    def __init__(self, dockerfile: bytes, dockerfile_path: str) -> None:
        self.dockerfile = dockerfile
        self.dockerfile_path = dockerfile_path
        self.size = 0
        self.error: BaseException | None = None

    def messages(self, pb: Any, sent: Any, needs: queue.Queue[Any]) -> Iterator[Any]:
        """The request messages after the options; C{sent()} once the context is over."""
        sent()
        return iter(())


class _Directory(_Context):
    """
    A directory: its manifest (names, metadata, checksums) goes first; the
    daemon then asks for the files a step copies, and only those are sent.
    """

    def __init__(self, root: str, dockerfile: bytes, dockerfile_path: str, patterns: list[str]) -> None:
        super().__init__(dockerfile, dockerfile_path)
        self.root = root
        self.patterns = patterns

    def messages(self, pb: Any, sent: Any, needs: queue.Queue[Any]) -> Iterator[Any]:
        try:
            entries, paths, self.size = manifest(self.root, self.patterns, Checksums(_checksums_path()))
        except OSError as e:
            self.error = e
            return
        batch = 4096
        for start in range(0, max(len(entries), 1), batch):
            last = start + batch >= len(entries)
            if last:
                # Said before the daemon can start the build (it starts on the last message).
                sent()
            yield pb.BuildImageRequest(manifest=pb.BuildContextManifest(
                entries=[pb.BuildContextEntry(**e._asdict()) for e in entries[start:start + batch]], last=last))
        while True:
            names = needs.get()
            if names is _END:
                return
            try:
                for piece in _joined(file_pieces(paths, names)):
                    yield pb.BuildImageRequest(context=piece)
            except OSError as e:
                self.error = e
                return
            yield pb.BuildImageRequest(files_sent=True)


class _Stream(_Context):
    """A tar given on stdin, sent as it is."""

    def __init__(self, head: bytes, source: IO[bytes], dockerfile_path: str) -> None:
        super().__init__(b"", dockerfile_path)
        self._head = head
        self._source = source

    def messages(self, pb: Any, sent: Any, needs: queue.Queue[Any]) -> Iterator[Any]:
        data = self._head
        while data:
            self.size += len(data)
            yield pb.BuildImageRequest(context=data)
            data = self._source.read(CHUNK)
        sent()


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"unable to prepare context: unable to read {what} {path}: {e.strerror}")


def _context(path: str, dockerfile: str) -> _Context:
    if path == "-":
        if dockerfile == "-":
            raise CliError("invalid argument: can't use stdin for both build context and dockerfile")
        head = sys.stdin.buffer.read(CHUNK)
        if _is_tar(head):
            return _Stream(head, sys.stdin.buffer, dockerfile or "Dockerfile")
        return _Context(head + sys.stdin.buffer.read(), "Dockerfile")
    if "://" in path or path.startswith("git@"):
        raise CliError(f"unable to prepare context: remote build contexts are not supported ({path}): "
                       "download it and build from the directory")
    if not os.path.isdir(path):
        raise CliError(f"unable to prepare context: path {path!r} not found")
    if dockerfile == "-":
        content = sys.stdin.buffer.read()
        relative = "Dockerfile"
    else:
        file = dockerfile or os.path.join(path, "Dockerfile")
        if not os.path.exists(file):
            shown = os.path.abspath(file)
            raise CliError(f"unable to prepare context: unable to evaluate symlinks in Dockerfile path: "
                           f"lstat {shown}: no such file or directory")
        content = _read(file, "Dockerfile")
        relative = relative_dockerfile(path, file) or "Dockerfile"
    if not content:
        # (Sent empty, it would read as "take the Dockerfile from the
        # context", and be reported missing.)
        raise CliError(f"the Dockerfile ({relative}) cannot be empty", code=1)
    patterns: list[str] = []
    ignore = os.path.join(path, ".dockerignore")
    if os.path.isfile(ignore):
        # Not trimmed (unlike a tar's, which the daemon reads the Dockerfile
        # from): the Dockerfile goes apart, and what the ignore file
        # excludes, itself and the Dockerfile included, is no COPY source.
        patterns = read_ignore_file(_read(ignore, ".dockerignore"))
    try:
        Matcher(patterns)
    except PatternError as e:
        raise CliError(f"unable to prepare context: invalid .dockerignore: {e}")
    return _Directory(path, content, relative, patterns)


def cmd_build(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS] PATH | -", "Build an image from a Dockerfile")
    parser.add_argument("path", metavar="PATH")
    parser.add_argument("-t", "--tag", action="append", default=[], help="Name and optionally a tag (name:tag)")
    parser.add_argument("-f", "--file", default="", help="Name of the Dockerfile (default: PATH/Dockerfile)")
    parser.add_argument("--build-arg", action="append", default=[], help="Set build-time variables")
    parser.add_argument("--label", action="append", default=[], help="Set metadata for an image")
    parser.add_argument("--no-cache", action="store_true", help="Do not use cache when building the image")
    parser.add_argument("--pull", action="store_true", help="Always attempt to pull a newer version of the image")
    parser.add_argument("--target", default="", help="Set the target build stage to build")
    parser.add_argument("--network", default="default", help="Networking mode for the RUN instructions")
    parser.add_argument("-q", "--quiet", action="store_true", help="Suppress the build output and print image ID")
    parser.add_argument("--iidfile", default="", help="Write the image ID to the file")
    parser.add_argument("--progress", default="auto", choices=["auto", "plain", "tty"],
                        help="Type of progress output (auto, plain, tty)")
    parser.add_argument("--platform", default="", help="Set platform if server is multi-platform capable")
    parser.add_argument("--rm", default="true", help="Remove intermediate containers (always)")
    parser.add_argument("--force-rm", action="store_true", help="Always remove intermediate containers")
    args = parser.parse_args(argv)
    pb = _pb()
    build_args = _key_value(args.build_arg, "build-arg", environ=True)
    labels = _key_value(args.label, "label", environ=False)
    context = _context(args.path, args.file)
    options = pb.BuildOptions(
        tags=args.tag, dockerfile=context.dockerfile_path, build_args=build_args, no_cache=args.no_cache,
        target=args.target, labels=labels, dockerfile_content=context.dockerfile, network=args.network,
        pull=args.pull)
    out = cli.out
    tty = args.progress == "tty" or (args.progress == "auto" and cli.err.isatty())

    needs: queue.Queue[Any] = queue.Queue()

    def sent() -> None:
        if not args.quiet:
            line = f"Sending build context to Ross daemon  {human_size(context.size)}"
            (cli.err if tty else out).write(line + "\n")
            (cli.err if tty else out).flush()

    def requests() -> Iterator[Any]:
        yield pb.BuildImageRequest(options=options)
        yield from context.messages(pb, sent, needs)

    image_id = ""
    failure: Any = None
    stream = cli.stub("ImageService").BuildImage(requests())
    try:
        for message in stream:
            if message.need_files:
                needs.put(list(message.need_files))
            if message.stream and not args.quiet:
                out.write(message.stream)
                out.flush()
            elif message.output and not args.quiet:
                out.flush()
                sys.stdout.buffer.write(message.output)
                sys.stdout.buffer.flush()
            if message.error:
                failure = message
            if message.image_id:
                image_id = message.image_id
    except grpc.RpcError as e:
        if context.error is not None:
            raise CliError(f"unable to prepare context: {context.error}")
        if failure is None or failure.error != e.details():
            raise error_of(cli, e)
        raise CliError(failure.error, code=failure.exit_code or 1)
    finally:
        needs.put(_END)
    if context.error is not None:
        raise CliError(f"unable to prepare context: {context.error}")
    if args.iidfile:
        try:
            with open(args.iidfile, "w") as f:
                f.write(image_id)
        except OSError as e:
            raise CliError(f"cannot write --iidfile {args.iidfile}: {e.strerror}")
    if args.quiet:
        out.write(image_id + "\n")
    return 0


def cmd_builder_prune(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS]", "Remove build cache")
    parser.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    parser.add_argument("-a", "--all", action="store_true", help="Remove all build cache (the same here)")
    args = parser.parse_args(argv)
    if not args.force:
        from ross.client.base import confirm

        if not confirm(cli, "WARNING! This will remove all dangling build cache."):
            return 0
    r = cli.stub("ImageService").PruneBuildCache(_pb().PruneBuildCacheRequest())
    if r.images_deleted:
        cli.print("Deleted build cache objects:")
        for image_id in r.images_deleted:
            cli.print(image_id)
        cli.print()
    cli.print(f"Total reclaimed space: {human_size(r.space_reclaimed)}")
    return 0
