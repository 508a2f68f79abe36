# -*- test-case-name: ross.test.integration.test_registry -*-
"""
Registry commands: ``ross pull``, ``push``, ``login``, ``logout``.

Credentials live where docker keeps them, in docker's format:
C{~/.ross/config.json} (or C{$ROSS_CONFIG/config.json}), mode 0600,
C{{"auths": {"localhost:5000": {"auth": base64("user:password")}}}}. The
CLI sends them with each pull or push (docker's X-Registry-Auth); the
daemon keeps none.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterable

from ross.client.base import Cli, CliError, error_of
from ross.client.base import grpc
from ross.errors import InvalidArgument
from ross.humanize import human_size

#: docker's key for Docker Hub in config.json.
HUB_KEY = "https://index.docker.io/v1/"

#: Statuses whose many updates show only as a bar on a terminal.
_TRANSFER = ("Downloading", "Extracting", "Pushing")


def decode_auth(value: str) -> tuple[str, str]:
    """
    The username and password of a docker config.json C{auth} value
    (base64 of "user:password"); InvalidArgument when it is not one.
    """
    try:
        raw = base64.b64decode(value.encode(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise InvalidArgument("invalid auth value: not base64 of user:password") from None
    user, sep, password = raw.partition(":")
    if not sep:
        raise InvalidArgument("invalid auth value: not base64 of user:password")
    return user, password


def encode_auth(username: str, password: str) -> str:
    """docker config.json's C{auth}: base64 of "user:password"."""
    return base64.b64encode(f"{username}:{password}".encode()).decode()


def config_path() -> Path:
    directory = os.environ.get("ROSS_CONFIG") or os.path.join(os.path.expanduser("~"), ".ross")
    return Path(directory) / "config.json"


def load_config() -> dict[str, Any]:
    path = config_path()
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise CliError(f"loading config file {path}: {e}")
    if not isinstance(doc, dict):
        raise CliError(f"loading config file {path}: not a JSON object")
    return doc


def save_config(doc: dict[str, Any]) -> None:
    """Write the config atomically, readable by its owner only."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=".config-", dir=str(path.parent))
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), 0o600)
            json.dump(doc, f, indent="\t")
            f.write("\n")
        os.rename(temp, path)
    except BaseException:
        os.unlink(temp)
        raise


def config_key(domain: str) -> str:
    return HUB_KEY if domain == "docker.io" else domain


def server_domain(server: str) -> str:
    from ross.reference import registry_domain

    return registry_domain(server)


def registry_auth(domain: str) -> Any:
    """The RegistryAuth message for C{domain} from the stored credentials."""
    from ross.v1 import common_pb2

    auths = load_config().get("auths") or {}
    entry = auths.get(config_key(domain))
    if entry is None and domain == "docker.io":
        entry = auths.get("docker.io")
    if not isinstance(entry, dict):
        return common_pb2.RegistryAuth(server_address=domain)
    username, password = "", ""
    if entry.get("auth"):
        try:
            username, password = decode_auth(str(entry["auth"]))
        except InvalidArgument as e:
            raise CliError(f"the credentials stored for {domain} in {config_path()} are invalid: {e}")
    return common_pb2.RegistryAuth(username=username, password=password,
                                   identity_token=str(entry.get("identitytoken") or ""), server_address=domain)


class _Display:
    """
    docker's progress display: one line per layer rewritten in place on a
    terminal; on a pipe, one line per status change.
    """

    def __init__(self, out: Any) -> None:
        self.out = out
        self.tty = out.isatty()
        self.rows: dict[str, int] = {}
        self.count = 0

    def show(self, message: Any) -> None:
        if not message.status:
            return
        if not message.id:
            self._line(message.status)
            return
        transfer = message.status in _TRANSFER
        if not self.tty:
            if not transfer:
                self._line(f"{message.id}: {message.status}")
            return
        text = f"{message.id}: {message.status}"
        detail = message.progress_detail
        if transfer and detail.total:
            text += " " + bar(detail.current, detail.total)
        elif transfer and message.progress:
            text += " " + message.progress
        row = self.rows.get(message.id)
        if row is None:
            self.rows[message.id] = self.count
            self._line(text)
            return
        up = self.count - row
        self.out.write(f"\x1b[{up}A\r\x1b[2K{text}\x1b[{up}B\r")
        self.out.flush()

    def _line(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()
        self.count += 1


def bar(current: int, total: int, width: int = 50) -> str:
    """docker's "[=====>     ]  12.3MB/40.1MB"."""
    filled = min(width, int(width * current / total)) if total else 0
    arrow = "=" * max(0, filled - 1) + (">" if filled < width else "=")
    return f"[{arrow:<{width}}]  {human_size(current)}/{human_size(total)}"


def _stream(cli: Cli, calls: Iterable[Any], display: _Display | None) -> None:
    """
    Show a progress stream. An error message comes just before the
    stream's failure status, which carries the same text: the status is
    what is reported.
    """
    for message in calls:
        if display is not None and not message.error:
            display.show(message)


def _daemon_error(cli: Cli, e: grpc.RpcError) -> CliError:
    """
    docker's "Error response from daemon: ..." (exit 1) for what the
    daemon reported, the connection error (125) when there is no daemon.
    """
    error = error_of(cli, e)
    if error.message.startswith("Cannot connect") and not _daemon_answers(cli):
        return error
    return CliError(f"Error response from daemon: {e.details() or e.code().name}", 1)


def _daemon_answers(cli: Cli) -> bool:
    """
    Whether the daemon is there: a registry that refuses connections reads
    like a daemon that does ("connection refused"), so ask it.
    """
    from ross.v1 import system_pb2

    try:
        cli.stub("SystemService").Ping(system_pb2.PingRequest(), timeout=5)
    except grpc.RpcError:
        return False
    return True


def _report(cli: Cli, error: CliError) -> int:
    if error.message.startswith("Error response"):
        cli.err.write(error.message + "\n")
    else:
        cli.err.write(f"Error: {error.message}\n")
    return error.code


def _platform(text: str) -> Any:
    from ross.v1 import common_pb2

    if not text:
        return None
    parts = text.split("/")
    if len(parts) not in (2, 3) or not all(parts):
        raise CliError(f"invalid platform {text!r}: use OS/ARCH[/VARIANT]")
    return common_pb2.Platform(os=parts[0], architecture=parts[1], variant=parts[2] if len(parts) == 3 else "")


def cmd_pull(cli: Cli, argv: list[str]) -> int:
    from ross.reference import ReferenceError, parse_normalized
    from ross.v1 import image_pb2

    parser = cli.parser("[OPTIONS] NAME[:TAG|@DIGEST]", "Download an image from a registry")
    parser.add_argument("name")
    parser.add_argument("-a", "--all-tags", action="store_true", help="Download all tagged images in the repository")
    parser.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")
    parser.add_argument("--platform", default="", help="Set platform if server is multi-platform capable")
    args = parser.parse_args(argv)
    try:
        ref = parse_normalized(args.name)
    except ReferenceError as e:
        raise CliError(f"invalid reference format: {e}" if "invalid reference" not in str(e) else str(e))
    display = None if args.quiet else _Display(cli.out)
    if not (ref.tag or ref.digest or args.all_tags) and not args.quiet:
        cli.print("Using default tag: latest")
    request = image_pb2.PullImageRequest(image_name=args.name, registry_auth=registry_auth(ref.domain),
                                         all_tags=args.all_tags, platform=_platform(args.platform))
    try:
        _stream(cli, cli.stub("ImageService").PullImage(request), display)
    except grpc.RpcError as e:
        return _report(cli, _daemon_error(cli, e))
    except CliError as e:
        return _report(cli, e)
    shown = ref.name if args.all_tags else str(ref.with_default_tag())
    cli.print(shown)
    return 0


def pull_for_run(cli: Cli, name: str, platform: str = "") -> None:
    """
    Pull image C{name} for ``run`` or ``create``, as docker's does: its
    progress on stderr (stdout is the container's), CliError (125) when
    the pull fails.
    """
    from ross.reference import ReferenceError, parse_normalized
    from ross.v1 import image_pb2

    try:
        ref = parse_normalized(name)
    except ReferenceError as e:
        raise CliError(str(e))
    request = image_pb2.PullImageRequest(image_name=str(ref.with_default_tag()) if not ref.digest else name,
                                         registry_auth=registry_auth(ref.domain), platform=_platform(platform))
    try:
        _stream(cli, cli.stub("ImageService").PullImage(request), _Display(cli.err))
    except grpc.RpcError as e:
        raise CliError(_daemon_error(cli, e).message.removeprefix("Error response from daemon: "))


def cmd_push(cli: Cli, argv: list[str]) -> int:
    from ross.reference import ReferenceError, parse_normalized
    from ross.v1 import image_pb2

    parser = cli.parser("[OPTIONS] NAME[:TAG]", "Upload an image to a registry")
    parser.add_argument("name")
    parser.add_argument("-a", "--all-tags", action="store_true", help="Push all tags of an image to the repository")
    parser.add_argument("-q", "--quiet", action="store_true", help="Suppress verbose output")
    args = parser.parse_args(argv)
    try:
        ref = parse_normalized(args.name)
    except ReferenceError as e:
        raise CliError(str(e))
    if args.all_tags and ref.tag:
        raise CliError("tag can't be used with --all-tags/-a")
    if not ref.tag and not args.all_tags and not args.quiet:
        cli.print("Using default tag: latest")
    name = args.name if (ref.tag or args.all_tags) else str(ref.with_default_tag())
    display = None if args.quiet else _Display(cli.out)
    request = image_pb2.PushImageRequest(image_name=name, registry_auth=registry_auth(ref.domain))
    try:
        _stream(cli, cli.stub("ImageService").PushImage(request), display)
    except grpc.RpcError as e:
        return _report(cli, _daemon_error(cli, e))
    except CliError as e:
        return _report(cli, e)
    if args.quiet:
        cli.print(name)
    return 0


def cmd_login(cli: Cli, argv: list[str]) -> int:
    from ross.v1 import common_pb2, image_pb2

    parser = cli.parser("[OPTIONS] [SERVER]", "Log in to a registry")
    parser.add_argument("server", nargs="?", default="")
    parser.add_argument("-u", "--username", default="", help="Username")
    parser.add_argument("-p", "--password", default=None, help="Password")
    parser.add_argument("--password-stdin", action="store_true", help="Take the password from stdin")
    args = parser.parse_args(argv)
    domain = server_domain(args.server)
    password = args.password
    if password is not None:
        cli.err.write("WARNING! Using --password via the CLI is insecure. Use --password-stdin.\n")
        if args.password_stdin:
            raise CliError("--password and --password-stdin are mutually exclusive")
    if args.password_stdin:
        if not args.username:
            raise CliError("Must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    username = args.username
    if not username or password is None:
        if not sys.stdin.isatty():
            raise CliError("Cannot perform an interactive login from a non TTY device")
        if not username:
            cli.out.write("Username: ")
            cli.out.flush()
            username = sys.stdin.readline().strip()
        if password is None:
            password = getpass.getpass("Password: ")
    if not username:
        raise CliError("Username is required")
    if not password:
        raise CliError("Password is required")
    auth = common_pb2.RegistryAuth(username=username, password=password, server_address=domain)
    try:
        response = cli.stub("ImageService").Login(image_pb2.LoginRequest(auth=auth))
    except grpc.RpcError as e:
        return _report(cli, _daemon_error(cli, e))
    doc = load_config()
    doc.setdefault("auths", {})[config_key(domain)] = {"auth": encode_auth(username, password)}
    save_config(doc)
    cli.print(response.status or "Login Succeeded")
    return 0


def cmd_logout(cli: Cli, argv: list[str]) -> int:
    from ross.v1 import image_pb2

    parser = cli.parser("[SERVER]", "Log out from a registry")
    parser.add_argument("server", nargs="?", default="")
    args = parser.parse_args(argv)
    domain = server_domain(args.server)
    key = config_key(domain)
    doc = load_config()
    auths = doc.get("auths") or {}
    if key not in auths:
        cli.print(f"Not logged in to {key}")
        return 0
    cli.print(f"Removing login credentials for {key}")
    del auths[key]
    save_config(doc)
    try:
        cli.stub("ImageService").Logout(image_pb2.LogoutRequest(server_address=domain))
    except grpc.RpcError:
        # Only the daemon's cached tokens are left, and they expire by
        # themselves: logging out works without a daemon, as docker's does.
        pass
    return 0
