# -*- test-case-name: ross.test.test_cli -*-
"""
``ross version``, ``ross info``, ``ross events`` and ``ross system ...``.
"""

from __future__ import annotations

import platform
from typing import Any

import grpc

import ross
from ross.engine.hostinfo import go_arch
from ross.cli.base import (
    Cli,
    CliError,
    error_of,
    parse_filters,
    timestamp_of,
)
from ross.humanize import human_size, parse_time, rfc3339


def _rows(rows: list[tuple[str, str]], indent: str) -> list[str]:
    return [f"{indent}{k + ':':<18}{v}" for k, v in rows]


def cmd_version(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS]", "Show the Ross version information")
    parser.add_argument("-f", "--format", default="", help="'json' for one JSON document")
    args = parser.parse_args(argv)
    from ross.v1 import system_pb2

    client = {
        "Version": ross.__version__,
        "ApiVersion": ross.API_VERSION,
        "PythonVersion": platform.python_version(),
        "GrpcVersion": grpc.__version__,
        "Os": "linux",
        "Arch": go_arch(),
    }
    server: dict[str, str] | None = None
    failure: CliError | None = None
    try:
        v = cli.stub("SystemService").Version(system_pb2.VersionRequest(), timeout=10)
        server = {
            "Version": v.version,
            "ApiVersion": v.api_version,
            "PythonVersion": v.python_version,
            "GrpcVersion": v.grpc_version,
            "TwistedVersion": v.twisted_version,
            "ProtobufVersion": v.protobuf_version,
            "KernelVersion": v.kernel_version,
            "OsArch": v.os_arch,
        }
    except grpc.RpcError as e:
        failure = error_of(cli, e)
    if args.format == "json":
        cli.print_json({"Client": client, "Server": server})
    elif args.format:
        raise CliError(f"unknown format {args.format!r}: only 'json' is supported")
    else:
        lines = ["Client:"] + _rows(
            [
                ("Version", client["Version"]),
                ("API version", client["ApiVersion"]),
                ("Python version", client["PythonVersion"]),
                ("grpcio version", client["GrpcVersion"]),
                ("OS/Arch", f"linux/{client['Arch']}"),
            ],
            " ",
        )
        if server is not None:
            lines += ["", "Server: Ross Engine"] + _rows(
                [
                    ("Version", server["Version"]),
                    ("API version", server["ApiVersion"]),
                    ("Python version", server["PythonVersion"]),
                    ("grpcio version", server["GrpcVersion"]),
                    ("Twisted version", server["TwistedVersion"]),
                    ("protobuf version", server["ProtobufVersion"]),
                    ("Kernel version", server["KernelVersion"]),
                    ("OS/Arch", server["OsArch"]),
                ],
                " ",
            )
        cli.print("\n".join(lines))
    if failure is not None:
        raise failure
    return 0


def cmd_info(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS]", "Display system-wide information")
    parser.add_argument("-f", "--format", default="", help="'json' for one JSON document")
    args = parser.parse_args(argv)
    from google.protobuf.json_format import MessageToDict

    from ross.v1 import system_pb2

    info = cli.stub("SystemService").Info(system_pb2.InfoRequest(), timeout=30)
    if args.format == "json":
        cli.print_json(MessageToDict(info, always_print_fields_with_no_presence=True))
        return 0
    if args.format:
        raise CliError(f"unknown format {args.format!r}: only 'json' is supported")
    controllers = ", ".join(f"{k} ({v})" for k, v in sorted(info.cgroup_controllers.items()))
    rows = [
        ("Containers", str(info.containers)),
        (" Running", str(info.containers_running)),
        (" Paused", str(info.containers_paused)),
        (" Stopped", str(info.containers_stopped)),
        ("Images", str(info.images)),
        ("Server Version", info.server_version),
        ("Storage Driver", info.storage_driver),
        ("Cgroup Driver", info.cgroup_driver),
        ("Cgroup Version", info.cgroup_version),
        ("Cgroup Controllers", controllers),
        ("Kernel Version", info.kernel_version),
        ("Operating System", info.operating_system),
        ("Architecture", info.architecture),
        ("CPUs", str(info.ncpu)),
        ("Total Memory", human_size(info.mem_total)),
        ("Name", info.name),
        ("Root Dir", info.root),
        ("Exec Root Dir", info.exec_root),
        ("Listening", ", ".join(info.listen)),
    ]
    if info.insecure_registries:
        rows.append(("Insecure Registries", ", ".join(info.insecure_registries)))
    cli.print("\n".join(f"{k}: {v}" for k, v in rows))
    return 0


def format_event(event: Any) -> str:
    """
    One line as ``docker events`` prints it.
    """
    attrs = ", ".join(f"{k}={v}" for k, v in sorted(event.attributes.items()))
    stamp = rfc3339(event.time.seconds, event.time.nanos)
    line = f"{stamp} {event.type} {event.action} {event.actor_id}"
    return f"{line} ({attrs})" if attrs else line


def cmd_events(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS]", "Get real time events from the server")
    parser.add_argument("-f", "--filter", action="append", default=[], help="Filter output (type=, event=, KEY=VALUE)")
    parser.add_argument("--since", help="Show events created since timestamp")
    parser.add_argument("--until", help="Stream events until this timestamp")
    parser.add_argument("--format", default="", help="'json' for one JSON object per line")
    args = parser.parse_args(argv)
    if args.format not in ("", "json"):
        raise CliError(f"unknown format {args.format!r}: only 'json' is supported")
    import json

    from google.protobuf.json_format import MessageToDict

    from ross.v1 import system_pb2

    request = system_pb2.EventsRequest()
    for key, value in parse_filters(args.filter):
        if key == "type":
            request.types.append(value)
        elif key == "event":
            request.actions.append(value)
        elif key in ("container", "image", "volume", "network", "label", "name", "id"):
            request.attributes[key] = value
        else:
            raise CliError(f"invalid filter '{key}'")
    if args.since:
        request.since.CopyFrom(timestamp_of(parse_time(args.since)))
    if args.until:
        request.until.CopyFrom(timestamp_of(parse_time(args.until)))
    stream = cli.stub("SystemService").Events(request)
    try:
        for event in stream:
            if args.format == "json":
                cli.print(json.dumps(MessageToDict(event)))
            else:
                cli.print(format_event(event))
            cli.out.flush()
    except KeyboardInterrupt:
        stream.cancel()
    return 0
