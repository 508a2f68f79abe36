# -*- test-case-name: ross.test.integration.test_images -*-
"""
Local image commands: ``ross images``, ``image inspect``, ``tag``,
``rmi``, ``history``, ``image prune``, ``import``, ``load``, ``save``;
the registry ones (``pull``, ``push``, ``login``, ``logout``) live in
L{ross.cli.registry}. Output and exit codes follow the docker CLI.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from typing import IO, Any, Iterator

from ross.client.base import (
    Cli,
    CliError,
    Progress,
    confirm,
    error_of,
    format_rows,
    parse_filters,
    render_template,
    time_ago,
)
from ross.client.base import grpc
# The registry commands, where the command table looks for image commands.
from ross.cli.registry import (
    cmd_login as cmd_login,
    cmd_logout as cmd_logout,
    cmd_pull as cmd_pull,
    cmd_push as cmd_push,
)
from ross.humanize import go_time, human_size

CHUNK = 1 << 20


def _pb() -> Any:
    from ross.v1 import image_pb2

    return image_pb2


def _familiar(name: str) -> str:
    from ross.reference import ReferenceError, parse_normalized

    try:
        return parse_normalized(name).familiar()
    except ReferenceError:
        return name


def _split_tag(familiar: str) -> tuple[str, str]:
    head, sep, tail = familiar.rpartition(":")
    if sep and "/" not in tail:
        return head, tail
    return familiar, "<none>"


def _short(image_id: str, no_trunc: bool = False) -> str:
    if no_trunc:
        return image_id
    return image_id.split(":", 1)[-1][:12]


def _stamp(ts: Any) -> str:
    """RFC 3339 to the second, as docker's history shows a time."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts.seconds)) if ts.seconds or ts.nanos else ""


# ---------------------------------------------------------------- images


def cmd_images(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS] [REPOSITORY[:TAG]]", "List images")
    parser.add_argument("repository", nargs="?")
    parser.add_argument("-a", "--all", action="store_true", help="Show all images")
    parser.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")
    parser.add_argument("--digests", action="store_true", help="Show digests")
    parser.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    parser.add_argument("-f", "--filter", action="append", default=[], help="Filter output (key=value)")
    parser.add_argument("--format", default="", help="'json' or a Go-like template")
    args = parser.parse_args(argv)
    pb = _pb()
    filters = parse_filters(args.filter)
    if args.repository:
        filters.append(("reference", args.repository))
    response = cli.stub("ImageService").ListImages(pb.ListImagesRequest(all=args.all, filters=_filters(filters)))
    rows = []
    for image in response.images:
        tags = [_familiar(t) for t in image.repo_tags] or ["<none>:<none>"]
        digest = image.target.digest
        for tag in tags:
            repo, t = _split_tag(tag) if tag != "<none>:<none>" else ("<none>", "<none>")
            rows.append((image, repo, t, digest))
    if args.quiet:
        seen = []
        for image, *_ in rows:
            short = _short(image.id, args.no_trunc)
            if short not in seen:
                seen.append(short)
        for short in seen:
            cli.print(short)
        return 0
    if args.format and (text := format_rows(
            [_image_json(image, repo, tag, digest, args.no_trunc) for image, repo, tag, digest in rows], args.format,
            {"ID": "IMAGE ID", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT"})) is not None:
        cli.out.write(text)
        return 0
    headers = ["REPOSITORY", "TAG"] + (["DIGEST"] if args.digests else []) + ["IMAGE ID", "CREATED", "SIZE"]
    table = []
    for image, repo, tag, digest in rows:
        cells = [repo, tag]
        if args.digests:
            cells.append(digest if repo != "<none>" or digest else "<none>")
        cells += [_short(image.id, args.no_trunc), time_ago(image.created) or "N/A", human_size(image.size)]
        table.append(cells)
    cli.print_table(headers, table)
    return 0


def _filters(pairs: list[tuple[str, str]]) -> list[Any]:
    from ross.v1 import common_pb2

    return [common_pb2.Filter(key=k, value=v) for k, v in pairs]


def _image_json(image: Any, repo: str, tag: str, digest: str, no_trunc: bool) -> dict[str, Any]:
    return {
        "Containers": str(image.containers),
        # docker's: Go's String() for images, RFC 3339 for history.
        "CreatedAt": go_time(image.created.seconds),
        "CreatedSince": time_ago(image.created),
        "Digest": digest or "<none>",
        "ID": _short(image.id, no_trunc),
        "Repository": repo,
        "Size": human_size(image.size),
        "Tag": tag,
        "Labels": dict(image.labels),
    }


cmd_image_ls = cmd_images


# ---------------------------------------------------------------- inspect


def image_json(cli: Cli, name: str) -> dict[str, Any]:
    """
    docker's image inspect document for the image C{name} (what ``ross
    image inspect`` prints, and ``ross inspect`` for what is not a
    container). grpc.RpcError when the daemon has no such image or refuses
    the name.
    """
    return _inspect_json(cli.stub("ImageService").InspectImage(_pb().InspectImageRequest(name=name)))


def _inspect_json(r: Any) -> dict[str, Any]:
    import json

    from ross.imageconfig import inspect_config

    config = json.loads(r.config_json or b"{}")
    return {
        "Id": r.image.id,
        "RepoTags": [_familiar(t) for t in r.image.repo_tags],
        "RepoDigests": [_familiar(d) for d in r.image.repo_digests],
        "Parent": "",
        "Comment": r.comment,
        "Created": config.get("created", ""),
        "DockerVersion": config.get("docker_version", ""),
        "Author": r.author,
        "Config": inspect_config(config.get("config")),
        "Architecture": r.platform.architecture,
        **({"Variant": r.platform.variant} if r.platform.variant else {}),
        "Os": r.platform.os,
        "Size": r.image.size,
        "RootFS": {"Type": "layers", "Layers": list(r.diff_ids)},
        "Descriptor": {"mediaType": r.image.target.media_type, "digest": r.image.target.digest,
                       "size": r.image.target.size},
        "Metadata": {"ChainID": r.chain_id},
    }


def cmd_image_inspect(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS] IMAGE [IMAGE...]", "Display detailed information on one or more images")
    parser.add_argument("images", nargs="+")
    parser.add_argument("-f", "--format", default="", help="Format output using a Go-like template")
    args = parser.parse_args(argv)
    results = []
    status = 0
    for name in args.images:
        try:
            results.append(image_json(cli, name))
        except grpc.RpcError as e:
            error = error_of(cli, e)
            if error.message.startswith("Cannot connect"):
                raise error
            cli.err.write(f"Error: {error.message}\n")
            status = 1
    if args.format and args.format != "json":
        for value in results:
            cli.print(render_template(value, args.format))
    else:
        cli.print_json(results)
    return status


# ---------------------------------------------------------------- tag, rmi


def cmd_tag(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("SOURCE_IMAGE[:TAG] TARGET_IMAGE[:TAG]",
                        "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE")
    parser.add_argument("source")
    parser.add_argument("target")
    args = parser.parse_args(argv)
    cli.stub("ImageService").TagImage(_pb().TagImageRequest(source=args.source, target=args.target))
    return 0


def cmd_rmi(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS] IMAGE [IMAGE...]", "Remove one or more images")
    parser.add_argument("images", nargs="+")
    parser.add_argument("-f", "--force", action="store_true", help="Force removal of the image")
    parser.add_argument("--no-prune", action="store_true", help="Do not delete untagged parents")
    args = parser.parse_args(argv)
    pb = _pb()
    status = 0
    for name in args.images:
        try:
            r = cli.stub("ImageService").RemoveImage(
                pb.RemoveImageRequest(name=name, force=args.force, no_prune=args.no_prune))
        except grpc.RpcError as e:
            error = error_of(cli, e)
            if error.message.startswith("Cannot connect"):
                raise error
            cli.err.write(f"Error response from daemon: {error.message}\n")
            status = 1
            continue
        for line in list(r.untagged) + list(r.deleted):
            cli.print(line)
    return status


cmd_image_rm = cmd_rmi


# ---------------------------------------------------------------- history


def cmd_history(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS] IMAGE", "Show the history of an image")
    parser.add_argument("image")
    parser.add_argument("-H", "--human", default="true", nargs="?", const="true",
                        help="Print sizes and dates in human readable format (default true)")
    parser.add_argument("--no-trunc", action="store_true", help="Don't truncate output")
    parser.add_argument("-q", "--quiet", action="store_true", help="Only show image IDs")
    parser.add_argument("--format", default="", help="'json' or a Go-like template")
    args = parser.parse_args(argv)
    human = args.human.lower() not in ("false", "0")
    r = cli.stub("ImageService").ImageHistory(_pb().ImageHistoryRequest(name=args.image))
    if args.quiet:
        for e in r.entries:
            cli.print(_short(e.id, args.no_trunc) if e.id != "<missing>" else e.id)
        return 0
    values = []
    for e in r.entries:
        created_by = e.created_by.replace("\t", " ")
        if not args.no_trunc and len(created_by) > 45:
            created_by = created_by[:44] + "…"
        values.append({
            "ID": _short(e.id, args.no_trunc) if e.id != "<missing>" else e.id,
            "CreatedAt": _stamp(e.created),
            "CreatedSince": time_ago(e.created) if human else _stamp(e.created),
            "CreatedBy": created_by,
            "Size": human_size(e.size) if human else str(e.size),
            "Comment": e.comment,
        })
    if args.format and (text := format_rows(values, args.format, {
            "ID": "IMAGE", "CreatedSince": "CREATED", "CreatedAt": "CREATED AT", "CreatedBy": "CREATED BY"})) is not None:
        cli.out.write(text)
    else:
        cli.print_table(["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
                        [[v["ID"], v["CreatedSince"] or "N/A", v["CreatedBy"], v["Size"], v["Comment"]]
                         for v in values])
    return 0


# ---------------------------------------------------------------- prune


def cmd_image_prune(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS]", "Remove unused images")
    parser.add_argument("-a", "--all", action="store_true", help="Remove all unused images, not just dangling ones")
    parser.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    parser.add_argument("--filter", action="append", default=[], help="Provide filter values (e.g. 'label=a')")
    args = parser.parse_args(argv)
    if not args.force:
        warning = ("WARNING! This will remove all images without at least one container associated to them."
                   if args.all else "WARNING! This will remove all dangling images.")
        if not confirm(cli, warning):
            return 0
    r = cli.stub("ImageService").PruneImages(
        _pb().PruneImagesRequest(all=args.all, filters=_filters(parse_filters(args.filter))))
    if r.images_deleted:
        cli.print("Deleted Images:")
        for line in r.images_deleted:
            cli.print(line)
        cli.print()
    cli.print(f"Total reclaimed space: {human_size(r.space_reclaimed)}")
    return 0


# ---------------------------------------------------------------- import, load


def _chunks(source: IO[bytes], progress: Progress | None) -> Iterator[bytes]:
    while True:
        data = source.read(CHUNK)
        if not data:
            return
        if progress is not None:
            progress.advance(len(data))
        yield data


def _send_direct(responses: Any, source: IO[bytes], progress: Progress | None) -> Any:
    """
    C{source} into the pipe a direct call (LoadImagesDirect,
    ImportImageDirect) hands over (SPEC 3's direct channel: the bytes
    never cross gRPC); the call's answer, its last message's C{done}.
    """
    from ross.client.direct import DirectError, send_all, write_through

    advance = progress.advance if progress is not None else None
    try:
        _, last = write_through(responses, lambda fd: send_all(source.fileno(), fd, CHUNK, advance))
    except DirectError as e:
        raise CliError(str(e))
    return last.done


def _open_input(path: str | None, what: str) -> tuple[IO[bytes], int]:
    if path in (None, "-"):
        if sys.stdin.isatty():
            raise CliError(f"requested {what} from stdin, but stdin is empty")
        return sys.stdin.buffer, 0
    try:
        f = open(path, "rb")
    except OSError as e:
        raise CliError(f"open {path}: {e.strerror.lower() if e.strerror else e}")
    return f, os.fstat(f.fileno()).st_size


def _open_url(url: str) -> tuple[IO[bytes], int]:
    """
    The tarball at C{url} (import's http:// or https:// source, which
    docker's daemon fetches) and its length when told; read by the client.
    """
    import urllib.error
    import urllib.request

    try:
        response = urllib.request.urlopen(url, timeout=60)
    except urllib.error.HTTPError as e:
        raise CliError(f"import {url}: the server answered {e.code} {e.reason}")
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = e.reason if isinstance(e, urllib.error.URLError) else e
        raise CliError(f"import {url}: {reason}")
    length = response.headers.get("Content-Length", "")
    return response, int(length) if length.isdigit() else 0


def cmd_import(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS] file|URL|- [REPOSITORY[:TAG]]",
                        "Import the contents from a tarball to create a filesystem image")
    parser.add_argument("file")
    parser.add_argument("reference", nargs="?", default="")
    parser.add_argument("-c", "--change", action="append", default=[], help="Apply Dockerfile instruction")
    parser.add_argument("-m", "--message", default="", help="Set commit message for imported image")
    parser.add_argument("--platform", default="", help="Set platform if server is multi-platform capable")
    args = parser.parse_args(argv)
    pb = _pb()
    url = args.file.startswith(("http://", "https://"))
    source, total = _open_url(args.file) if url else _open_input(args.file, "import")
    progress = Progress("Importing", total, cli.err) if cli.err.isatty() else None

    def requests() -> Iterator[Any]:
        yield pb.ImportImageRequest(options=pb.ImportOptions(
            reference=args.reference, changes=args.change, message=args.message))
        for data in _chunks(source, progress):
            yield pb.ImportImageRequest(data=data)

    try:
        # A download has no file to hand the daemon: it goes through gRPC.
        if cli.direct_channels() and not url:
            r = _send_direct(cli.stub("ImageService").ImportImageDirect(pb.ImportOptions(
                reference=args.reference, changes=args.change, message=args.message)), source, progress)
        else:
            r = cli.stub("ImageService").ImportImage(requests())
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    if progress is not None:
        progress.finish()
    cli.print(r.id)
    return 0


def cmd_load(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS]", "Load an image from a tar archive or STDIN")
    parser.add_argument("-i", "--input", default=None, help="Read from tar archive file, instead of STDIN")
    parser.add_argument("-q", "--quiet", action="store_true", help="Suppress the load output")
    args = parser.parse_args(argv)
    pb = _pb()
    source, total = _open_input(args.input, "load")
    progress = Progress("Loading", total, cli.err) if not args.quiet else None
    if progress is not None and not progress.tty:
        progress = None

    def requests() -> Iterator[Any]:
        yield pb.LoadImagesRequest(options=pb.LoadOptions(quiet=args.quiet))
        for data in _chunks(source, progress):
            yield pb.LoadImagesRequest(data=data)

    try:
        if cli.direct_channels():
            r = _send_direct(cli.stub("ImageService").LoadImagesDirect(pb.LoadOptions(quiet=args.quiet)),
                             source, progress)
        else:
            r = cli.stub("ImageService").LoadImages(requests())
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    if progress is not None:
        progress.finish()
    for line in r.loaded:
        cli.print(line)
    return 0


# ---------------------------------------------------------------- save


def cmd_save(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS] IMAGE [IMAGE...]",
                        "Save one or more images to a tar archive (streamed to STDOUT by default)")
    parser.add_argument("images", nargs="+")
    parser.add_argument("-o", "--output", default=None, help="Write to a file, instead of STDOUT")
    parser.add_argument("--format", default="docker", choices=["docker", "oci", "docker-archive", "oci-archive"],
                        help="docker (default) or oci")
    args = parser.parse_args(argv)
    fmt = "oci-archive" if args.format.startswith("oci") else "docker-archive"
    if args.output is None and sys.stdout.isatty():
        raise CliError("cowardly refusing to save to a terminal. Use the -o flag or redirect")
    stream = cli.stub("ImageService").SaveImages(_pb().SaveImagesRequest(names=args.images, format=fmt))
    if args.output is None:
        _drain(stream, sys.stdout.buffer, None)
        sys.stdout.buffer.flush()
        return 0
    directory = os.path.dirname(os.path.abspath(args.output))
    fd, temp = tempfile.mkstemp(prefix=".ross-save-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as out:
            _drain(stream, out, cli.err)
        os.chmod(temp, 0o644)
        os.rename(temp, args.output)
    except BaseException:
        os.unlink(temp)
        raise
    return 0


def _drain(stream: Any, out: IO[bytes], err: IO[str] | None) -> None:
    progress: Progress | None = None
    for message in stream:
        if message.WhichOneof("response") == "total_size":
            if err is not None and err.isatty():
                progress = Progress("Saving", message.total_size, err)
            continue
        out.write(message.data)
        if progress is not None:
            progress.advance(len(message.data))
    if progress is not None:
        progress.finish()
