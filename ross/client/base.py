# -*- test-case-name: ross.test.test_cli -*-
"""
What every command shares, in the CLI and in the TUI that runs the same
commands: the handle to the daemon (channel, stubs, TLS and token), error
reporting with docker's exit codes, argument parsing and output formatting.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys
import time
from typing import IO, TYPE_CHECKING, Any, Callable, Iterable, Iterator, NoReturn, Sequence

from ross.client.settings import Globals
from ross.errors import RossError
from ross.humanize import human_duration, human_size

# Service name -> generated module holding its stub.
_SERVICES = {
    "SystemService": "system",
    "ContainerService": "container",
    "ImageService": "image",
    "SnapshotterService": "snapshot",
    "VolumeService": "volume",
    "NetworkService": "network",
}

EXIT_ROSS = 125


class CliError(Exception):
    """
    A failure to report as one ``Error: ...`` line, exiting with C{code}.
    """

    def __init__(self, message: str, code: int = EXIT_ROSS) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


def _terminal_columns() -> int:
    """
    The terminal's width as C{shutil.get_terminal_size} gives it ($COLUMNS,
    then standard output's terminal, else 80), without importing shutil
    (with bz2, lzma and zlib: 1.7 ms of every command's start).
    """
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class _HelpFormatter(argparse.HelpFormatter):
    """
    argparse's formatter, its width found without shutil (argparse makes
    one for every argument added, and its own imports shutil for the width).
    """

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position,
                         width if width is not None else _terminal_columns() - 2)


#: The values docker's boolean flags take (Go's strconv.ParseBool).
TRUE = ("1", "t", "T", "TRUE", "true", "True")
FALSE = ("0", "f", "F", "FALSE", "false", "False")

_IGNORED = re.compile(r"argument (\S+): ignored explicit argument '(.*)'", re.S)


class _DockerBool(argparse.Action):
    """
    A docker boolean flag: bare it is true, and C{--flag=VALUE} (C{-f=VALUE})
    takes any of L{TRUE} and L{FALSE}. Never the next word: C{run --rm
    busybox} keeps its image.
    """

    def __init__(self, option_strings: list[str], dest: str, default: Any = False, required: bool = False,
                 help: str | None = None) -> None:
        super().__init__(option_strings, dest, nargs=0, default=default, required=required, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        _, eq, text = (option_string or "").partition("=")
        setattr(namespace, self.dest, text in TRUE if eq else True)


class ArgumentParser(argparse.ArgumentParser):
    """
    argparse with docker's error style (bad flags exit 125 with one line)
    and docker's boolean flags: each C{action="store_true"} is a
    L{_DockerBool}.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def add_argument(self, *args: Any, **kwargs: Any) -> argparse.Action:
        if kwargs.get("action") != "store_true":
            return super().add_argument(*args, **kwargs)
        kwargs["action"] = _DockerBool
        action = super().add_argument(*args, **kwargs)
        # Each FLAG=VALUE is a name of the flag of its own (argparse takes
        # a word that is a flag's whole name before it looks for "="), kept
        # out of the help.
        for option in action.option_strings:
            for value in TRUE + FALSE:
                self._option_string_actions[f"{option}={value}"] = action
        return action

    def error(self, message: str) -> NoReturn:
        ignored = _IGNORED.fullmatch(message)
        if ignored is not None:
            # FLAG=VALUE of a boolean flag, VALUE not a boolean.
            names, value = ignored.group(1).replace("/", ", "), ignored.group(2)
            raise CliError(f'invalid argument "{value}" for "{names}" flag: '
                           f'strconv.ParseBool: parsing "{value}": invalid syntax')
        raise CliError(f"{message}\nSee '{self.prog} --help'.")


def int64(text: str) -> int:
    """
    An integer flag's value, as docker's (Go's strconv.ParseInt) takes it:
    one that does not fit in 64 bits is refused, not sent to crash the
    request's encoding.
    """
    return _integer(text, 64)


def int32(text: str) -> int:
    """L{int64} for a flag that the API carries in 32 bits."""
    return _integer(text, 32)


def _integer(text: str, bits: int) -> int:
    value = int(text, 10)
    if not -(1 << (bits - 1)) <= value < 1 << (bits - 1):
        raise argparse.ArgumentTypeError(f'invalid argument "{text}": value out of range')
    return value


class _LazyGrpc:
    """
    grpcio, imported when one of its attributes is first used: the CLI
    imports it (45-65 ms) only when a call goes through it. C{RpcError} and
    C{StatusCode} are the ones of L{ross.client.h2grpc}, which do not need
    it (C{except grpc.RpcError} catches grpcio's errors too once it is
    imported), so a failing command does not import it either.
    """

    def __getattr__(self, attribute: str) -> Any:
        if attribute == "RpcError":
            from ross.client.h2grpc import error_types

            return error_types()
        if attribute == "StatusCode":
            from ross.client.h2grpc import StatusCode

            return StatusCode
        return getattr(importlib.import_module("grpc"), attribute)


if TYPE_CHECKING:
    import grpc as grpc

    from ross.client.h2grpc import TcpDialer, UnixDialer
else:
    grpc = _LazyGrpc()


def _token_interceptor(token: str) -> Any:
    """
    An interceptor adding ``authorization: Bearer <token>`` to every call.
    """
    import grpc

    header = ("authorization", f"Bearer {token}")

    class TokenInterceptor(
        grpc.UnaryUnaryClientInterceptor,
        grpc.UnaryStreamClientInterceptor,
        grpc.StreamUnaryClientInterceptor,
        grpc.StreamStreamClientInterceptor,
    ):
        def _details(self, details: Any) -> Any:
            metadata = list(details.metadata or ())
            metadata.append(header)
            return details._replace(metadata=metadata)

        def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(self._details(details), request)

        def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
            return continuation(self._details(details), request)

        def intercept_stream_unary(self, continuation: Any, details: Any, requests: Any) -> Any:
            return continuation(self._details(details), requests)

        def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
            return continuation(self._details(details), requests)

    return TokenInterceptor()


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise CliError(f"cannot read {what} {path}: {e.strerror}")


def _uses_tls(g: Globals) -> bool:
    """
    Whether a TCP connection to the daemon goes through TLS: when a CA or
    a client certificate is configured (a certificate with its key).
    """
    if not (g.tls_ca or g.tls_cert):
        return False
    if bool(g.tls_cert) != bool(g.tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    return True


def _channel_parts(g: Globals) -> tuple[str, grpc.ChannelCredentials | None, list[tuple[str, Any]]]:
    """
    Target, credentials (None: plain) and options of a channel to the daemon
    at C{g.host}: TLS when a CA or client certificate is configured.
    """
    from ross.address import parse_listen
    from ross.errors import InvalidArgument

    try:
        listener = parse_listen(g.host)
    except InvalidArgument as e:
        raise CliError(str(e))
    options: list[tuple[str, Any]] = [
        ("grpc.max_receive_message_length", 8 * 1024 * 1024),
        ("grpc.max_send_message_length", 8 * 1024 * 1024),
        ("grpc.enable_retries", 0),
        # A daemon that went away is tried again every second at most
        # (grpcio's back-off reaches two minutes): an interactive session
        # attaching again must find it back within its minute.
        ("grpc.initial_reconnect_backoff_ms", 250),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    credentials = None
    if listener.scheme == "tcp" and _uses_tls(g):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_read(g.tls_ca, "--tls-ca") if g.tls_ca else None,
            private_key=_read(g.tls_key, "--tls-key") if g.tls_key else None,
            certificate_chain=_read(g.tls_cert, "--tls-cert") if g.tls_cert else None,
        )
    return listener.grpc_address, credentials, options


def open_channel(g: Globals) -> grpc.Channel:
    """
    A channel to the daemon, carrying the bearer token when there is one.
    """
    target, credentials, options = _channel_parts(g)
    if credentials is not None:
        channel = grpc.secure_channel(target, credentials, options)
    else:
        channel = grpc.insecure_channel(target, options)
    if g.token:
        channel = grpc.intercept_channel(channel, _token_interceptor(g.token))
    return channel


class Cli:
    """
    Handed to every command function: connection, stubs, output.
    """

    def __init__(self, g: Globals, command: str, out: IO[str] | None = None, err: IO[str] | None = None,
                 direct: bool = False) -> None:
        """
        @param direct: calls go through L{ross.client.h2grpc} rather
            than grpcio (the CLI's start path and its sessions' latency;
            C{ROSS_GRPCIO=1} turns it off).
        """
        self.globals = g
        self.command = command
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self._direct = direct and os.environ.get("ROSS_GRPCIO") != "1"
        self._channel: grpc.Channel | None = None
        self._connection: Any = None
        #: How ross.client.h2grpc reaches the daemon, once known.
        self._dialer_made: UnixDialer | TcpDialer | None = None
        self._stubs: dict[str, Any] = {}
        self._grpc_stubs: dict[str, Any] = {}

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            self._channel = open_channel(self.globals)
        return self._channel

    @property
    def transport(self) -> str:
        """
        What carries this client's calls, for C{ross version}.
        """
        dialer = self._dialer()
        if dialer is None:
            return f"grpcio {grpc.__version__}"
        if dialer.name.startswith("unix:"):
            return "HTTP/2 on the unix socket (ross.client.h2grpc)"
        tls = " with TLS" if dialer.scheme == "https" else ""
        return f"HTTP/2 on TCP{tls} (ross.client.h2grpc)"

    def _dialer(self) -> UnixDialer | TcpDialer | None:
        """
        How L{ross.client.h2grpc} reaches the daemon (made once: a TLS
        context reads its files), or None for grpcio.
        """
        if not self._direct:
            return None
        if self._dialer_made is not None:
            return self._dialer_made
        from ross.address import parse_listen
        from ross.errors import InvalidArgument

        try:
            listener = parse_listen(self.globals.host)
        except InvalidArgument as e:
            raise CliError(str(e))
        from ross.client import h2grpc

        if listener.scheme == "unix":
            self._dialer_made = h2grpc.UnixDialer(listener.path)
            return self._dialer_made
        g = self.globals
        context = None
        if _uses_tls(g):
            try:
                context = h2grpc.tls_context(_read(g.tls_ca, "--tls-ca") if g.tls_ca else None, g.tls_cert, g.tls_key)
            except ValueError as e:
                raise CliError(f"cannot use the TLS files: {e}")
        self._dialer_made = h2grpc.TcpDialer(listener.host, listener.port, context)
        return self._dialer_made

    def direct_channels(self) -> bool:
        """
        Whether interactive sessions ask the daemon for a direct channel
        (SPEC 3): on this host's unix socket, unless C{ROSS_DIRECT=0}.
        """
        if os.environ.get("ROSS_DIRECT", "1") == "0":
            return False
        from ross.address import parse_listen
        from ross.errors import InvalidArgument

        try:
            return parse_listen(self.globals.host).scheme == "unix"
        except InvalidArgument:
            return False

    def stub(self, service: str) -> Any:
        """
        The stub of a ross.v1 service, e.g. C{cli.stub("ContainerService")}.
        """
        if service not in self._stubs:
            dialer = self._dialer()
            if dialer is None:
                self._stubs[service] = self._grpc_stub(service)
            else:
                from ross.client import h2grpc

                if self._connection is None:
                    token = [("authorization", f"Bearer {self.globals.token}")] if self.globals.token else []
                    self._connection = h2grpc.Connection(dialer, token, user_agent=f"ross/{self.command}")
                module = importlib.import_module(f"ross.v1.{_SERVICES[service]}_pb2")
                self._stubs[service] = h2grpc.Stub(self._connection, module.DESCRIPTOR.services_by_name[service],
                                                   lambda: self._grpc_stub(service))
        return self._stubs[service]

    def _grpc_stub(self, service: str) -> Any:
        if service not in self._grpc_stubs:
            module = importlib.import_module(f"ross.v1.{_SERVICES[service]}_pb2_grpc")
            self._grpc_stubs[service] = getattr(module, f"{service}Stub")(self.channel)
        return self._grpc_stubs[service]

    def stream(self, service: str, method: str) -> Callable[[Iterator[Any]], Any]:
        """
        For L{ross.cli.interactive.Session}: starts the bidirectional
        C{service.method} on the CLI's channel, given its request iterator.
        """
        return getattr(self.stub(service), method)  # type: ignore[no-any-return]

    def parser(self, usage: str, description: str, help_flags: tuple[str, ...] = ("-h", "--help")) -> ArgumentParser:
        """
        An argument parser named after the command, docker-style. Commands
        that use -h for something else (run's --hostname) pass
        C{help_flags=("--help",)}.
        """
        parser = ArgumentParser(
            prog=self.command,
            usage=f"{self.command} {usage}",
            description=description,
            add_help=False,
            allow_abbrev=False,
        )
        parser.add_argument(*help_flags, action="help", help="Print usage")
        return parser

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
        if self._channel is not None:
            self._channel.close()

    # -- output

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def print_json(self, value: Any) -> None:
        """
        One JSON document, indented like docker's inspect.
        """
        import json

        self.out.write(json.dumps(value, indent=4, sort_keys=False) + "\n")

    def print_table(self, headers: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        self.out.write(format_table(headers, rows))


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """
    Columns padded like docker's tabwriter: each at least three spaces
    wider than its widest cell; the last column not padded.
    """
    rows = [list(map(str, r)) for r in rows]
    table = [list(headers)] + rows
    widths = [max(len(r[i]) for r in table) for i in range(len(headers))]
    lines = []
    for r in table:
        cells = [c.ljust(widths[i] + 3) for i, c in enumerate(r[:-1])] + [r[-1]]
        lines.append("".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def time_ago(timestamp: Any, now: float | None = None) -> str:
    """
    "3 minutes ago" for a protobuf Timestamp (or seconds since the epoch).
    """
    seconds = timestamp if isinstance(timestamp, (int, float)) else timestamp.seconds + timestamp.nanos / 1e9
    if not seconds:
        return ""
    return human_duration((now or time.time()) - seconds) + " ago"


class Progress:
    """
    A progress bar on a terminal, plain lines when piped.
    """

    def __init__(self, label: str, total: int = 0, stream: IO[str] | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        if self.tty:
            now = time.monotonic()
            if now - self._last >= 0.1:
                self._last = now
                self.stream.write("\r" + self.line())
                self.stream.flush()

    def line(self, width: int = 50) -> str:
        if self.total:
            filled = min(width, int(width * self.done / self.total))
            bar = "=" * max(0, filled - 1) + (">" if filled < width else "=")
            return (
                f"{self.label}: [{bar:<{width}}] "
                f"{human_size(self.done)}/{human_size(self.total)}"
            )
        return f"{self.label}: {human_size(self.done)}"

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\r" + self.line() + "\n")
        else:
            self.stream.write(self.line() + "\n")
        self.stream.flush()


def cannot_connect(g: Globals, detail: str) -> str:
    message = f"Cannot connect to the Ross daemon at {g.host}. Is the daemon running?"
    lowered = detail.lower()
    if "ssl" in lowered or "handshake" in lowered or "certificate" in lowered:
        message += f" (TLS handshake failed: {detail})"
    return message


def _is_connect_failure(e: grpc.RpcError) -> bool:
    if e.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    details = (e.details() or "").lower()
    return any(s in details for s in ("failed to connect", "connection refused", "no such file",
                                      "handshake", "ssl", "connect failed", "socket closed",
                                      "unix:", "dns resolution failed"))


def error_of(cli: Cli, e: grpc.RpcError) -> CliError:
    """
    The one-line error for a failed call, docker-style.
    """
    if _is_connect_failure(e):
        return CliError(cannot_connect(cli.globals, e.details() or ""))
    if e.code() == grpc.StatusCode.UNAUTHENTICATED:
        return CliError(f"the Ross daemon refused the credentials: {e.details()}")
    return CliError(e.details() or e.code().name)


def run_command(function: Callable[[Cli, list[str]], int], cli: Cli, argv: list[str]) -> int:
    """
    Run a command function, turning failures into ``Error: ...`` and exit
    codes.
    """
    try:
        return function(cli, argv)
    except CliError as e:
        cli.err.write(f"Error: {e.message}\n" if not e.message.startswith("ross") else e.message + "\n")
        return e.code
    except RossError as e:
        cli.err.write(f"Error: {e.message}\n")
        return EXIT_ROSS
    except grpc.RpcError as e:
        error = error_of(cli, e)
        cli.err.write(f"Error: {error.message}\n")
        return error.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output went to a pipe that closed (`ross logs | head`): not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    finally:
        cli.close()


def time_argument(text: str) -> Any:
    """
    A --since or --until time as a protobuf Timestamp: to the nanosecond
    when it is an RFC 3339 time with its zone (what ``logs -t`` prints, so
    that the line it names is in), else as L{parse_time} reads it.
    """
    import re

    from ross.humanize import parse_rfc3339_ns, parse_time

    if re.search(r"T.*([Zz]|[+-]\d\d:\d\d)$", text.strip()):
        ns = parse_rfc3339_ns(text)
        if ns:
            from google.protobuf.timestamp_pb2 import Timestamp

            ts = Timestamp()
            ts.FromNanoseconds(ns)
            return ts
    return timestamp_of(parse_time(text))


def timestamp_of(seconds: float) -> Any:
    """
    A protobuf Timestamp for seconds since the epoch.
    """
    from google.protobuf.timestamp_pb2 import Timestamp

    ts = Timestamp()
    ts.FromNanoseconds(int(seconds * 1e9))
    return ts


def parse_filters(values: Sequence[str]) -> list[tuple[str, str]]:
    """
    ``--filter key=value`` flags as pairs; INVALID input exits 125.
    """
    pairs = []
    for v in values:
        key, eq, val = v.partition("=")
        if not eq or not key:
            raise CliError(f"bad format of filter (expected name=value): {v}")
        pairs.append((key.strip(), val.strip()))
    return pairs


def each_target(cli: Cli, names: Iterable[str], action: Callable[[str], Any], echo: bool = True,
                missing_ok: bool = False) -> int:
    """
    Run C{action} for every name, printing the name on success and docker's
    error line on failure; exit 1 if any failed. With C{missing_ok} (rm -f),
    a name that names nothing is said but no failure (docker's).
    """
    status = 0
    for name in names:
        try:
            action(name)
            if echo:
                cli.print(name)
        except grpc.RpcError as e:
            cli.err.write(f"Error: {error_of(cli, e).message}\n")
            if missing_ok and e.code() == grpc.StatusCode.NOT_FOUND:
                continue
            status = 1
            if error_of(cli, e).message.startswith("Cannot connect"):
                return 125
    return status


def inspect_each(cli: Cli, names: Iterable[str], fetch: Callable[[str], Any], template: str = "") -> int:
    """
    docker's C{inspect} of several objects: C{fetch(name)} gives each one's
    JSON value; all of them are printed as one JSON list (or each through
    C{template}), failures as error lines, with L{each_target}'s exit code.
    """
    results: list[Any] = []
    status = each_target(cli, names, lambda name: results.append(fetch(name)), echo=False)
    if template:
        for r in results:
            cli.print(render_template(r, template))
    else:
        cli.print_json(results)
    return status


def confirm(cli: Cli, warning: str) -> bool:
    cli.out.write(f"{warning}\nAre you sure you want to continue? [y/N] ")
    cli.out.flush()
    answer = sys.stdin.readline().strip().lower()
    return answer in ("y", "yes")


def _template_text(template: str) -> str:
    """
    docker's reading of a --format string: ``json`` short for ``{{json .}}``
    (a compact document a row), ``\\t`` and ``\\n`` as a tab and a newline.
    """
    if template == "json":
        return "{{json .}}"
    return template.replace("\\t", "\t").replace("\\n", "\n")


def check_template(template: str) -> None:
    """
    Refuse a --format template that does not parse (before anything is
    asked of the daemon: a stream's first line may be long in coming).
    """
    from ross.client.gotemplate import TemplateError, parse

    try:
        parse(_template_text(template))
    except TemplateError as e:
        raise CliError(f"template: {e}")


def render_template(value: Any, template: str) -> str:
    """
    C{value} (what ``--format json`` shows) through a Go template, as
    docker's ``--format`` and ``inspect -f`` (L{ross.client.gotemplate}).
    """
    from ross.client.gotemplate import TemplateError, render

    try:
        return render(_template_text(template), value)
    except TemplateError as e:
        raise CliError(f"template: {e}")
    except RecursionError:
        raise CliError("template: nested too deeply")


def format_rows(rows: Sequence[dict[str, Any]], template: str, headers: dict[str, str]) -> str | None:
    """
    A listing's rows through C{template} as docker's ``--format`` does:
    one line a row, or with C{table ...} aligned columns (cells split at
    tabs) under a header naming each field (C{headers}, else the field's
    name in capitals). None for C{table} alone: the listing's own table.
    """
    from ross.client.gotemplate import TemplateError, parse, render

    text = _template_text(template)
    table = text.startswith("table")
    if table:
        text = text[len("table"):].strip()
        if not text:
            return None
    try:
        parse(text)
        lines = [render(text, row) for row in rows]
        if not table:
            return "".join(line + "\n" for line in lines)
        names = {key: headers.get(key, key.upper()) for row in rows[:1] for key in row}
        titles = {key: (lambda *args, title=title: title) if callable(rows[0][key]) else title
                  for key, title in names.items()} if rows else {}
        header = render(text, titles) if rows else render(text, _Headers(headers))
    except TemplateError as e:
        raise CliError(f"template: {e}")
    except RecursionError:
        raise CliError("template: nested too deeply")
    cells = [header.split("\t")] + [line.split("\t") for line in lines]
    width = max(len(r) for r in cells)
    return format_table(*_padded(cells, width))


def label_fields(labels: dict[str, str]) -> dict[str, Any]:
    """A listing row's C{.Labels} ("k=v,...") and C{.Label "k"}, as docker's templates have them."""
    return {"Labels": ",".join(f"{k}={v}" for k, v in sorted(labels.items())),
            "Label": lambda key: labels.get(key, "")}


class _Headers(dict):  # type: ignore[type-arg]
    """The header row's data for a listing with no rows: every field is its title."""

    def __init__(self, headers: dict[str, str]) -> None:
        super().__init__()
        self._headers = headers

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str)

    def __missing__(self, key: str) -> str:
        return self._headers.get(key, key.upper())


def _padded(cells: list[list[str]], width: int) -> tuple[list[str], list[list[str]]]:
    rows = [r + [""] * (width - len(r)) for r in cells]
    return rows[0], rows[1:]
