# -*- test-case-name: ross.test.test_cli -*-
"""
``ross version``, ``ross info``, ``ross events`` and ``ross system ...``.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable

import ross
from ross.platforms import go_arch
from ross.client.base import (
    Cli,
    CliError,
    check_template,
    error_of,
    format_rows,
    parse_filters,
    render_template,
    time_argument,
)
from ross.client.base import grpc
from ross.humanize import human_size, rfc3339


def _rows(rows: list[tuple[str, str]], indent: str) -> list[str]:
    return [f"{indent}{k + ':':<18}{v}" for k, v in rows]


def cmd_version(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS]", "Show the Ross version information")
    parser.add_argument("-f", "--format", default="", help="'json' for one JSON document, or a Go template")
    args = parser.parse_args(argv)
    from ross.v1 import system_pb2

    client = {
        "Version": ross.__version__,
        "ApiVersion": ross.API_VERSION,
        "PythonVersion": "%d.%d.%d" % sys.version_info[:3],  # not platform's: 1-2 ms to import
        "Transport": cli.transport,
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
    if args.format:
        cli.print(render_template({"Client": client, "Server": server}, args.format))
    else:
        lines = ["Client:"] + _rows(
            [
                ("Version", client["Version"]),
                ("API version", client["ApiVersion"]),
                ("Python version", client["PythonVersion"]),
                ("Transport", client["Transport"]),
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
    parser.add_argument("-f", "--format", default="", help="'json' for one JSON document, or a Go template")
    args = parser.parse_args(argv)
    from google.protobuf.json_format import MessageToDict

    from ross.v1 import system_pb2

    info = cli.stub("SystemService").Info(system_pb2.InfoRequest(), timeout=30)
    if args.format:
        # docker's field names: ServerVersion, ContainersRunning...
        doc = MessageToDict(info, always_print_fields_with_no_presence=True)
        cli.print(render_template({k[:1].upper() + k[1:]: v for k, v in doc.items()}, args.format))
        return 0
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
    rows.append(("Firewall", ", ".join(info.firewall_backends)))
    rows.append(("Firewall Chains", ", ".join(info.firewall_chains) or "none that drop"))
    rows += [("Firewall Problem", problem) for problem in info.firewall_problems]
    lines = [f"{k}: {v}" for k, v in rows]
    if info.security_options:
        lines += ["Security Options:", *security_option_lines(info.security_options)]
    cli.print("\n".join(lines))
    return 0


def security_option_lines(options: Iterable[str]) -> list[str]:
    """
    docker info's layout of SecurityOptions: each option's name, then its
    other fields ("profile=builtin" -> "Profile: builtin").
    """
    lines = []
    for option in options:
        fields = dict(f.partition("=")[::2] for f in option.split(","))
        lines.append(f" {fields.pop('name', option)}")
        lines += [f"  {key.capitalize()}: {value}" for key, value in fields.items()]
    return lines


def format_event(event: Any) -> str:
    """
    One line as ``docker events`` prints it.
    """
    attrs = ", ".join(f"{k}={v}" for k, v in sorted(event.attributes.items()))
    stamp = rfc3339(event.time.seconds, event.time.nanos)
    line = f"{stamp} {event.type} {event.action} {event.actor_id}"
    return f"{line} ({attrs})" if attrs else line


def event_document(event: Any) -> dict[str, Any]:
    """
    An event as docker's ``events --format`` sees it (and its Docker API
    streams it), with Ross's sequence number, C{seq}, at the end.
    """
    attributes = dict(sorted(event.attributes.items()))
    found: dict[str, Any] = {}
    if event.type == "container":
        found = {"status": event.action, "id": event.actor_id, "from": attributes.get("image", "")}
    time_ns = event.time.seconds * 1_000_000_000 + event.time.nanos
    return {**found, "Type": event.type, "Action": event.action,
            "Actor": {"ID": event.actor_id, "Attributes": attributes}, "scope": "local",
            "time": event.time.seconds, "timeNano": time_ns, "seq": event.seq}


#: Below this, a bare number given to ``--since`` is a sequence number:
#: docker reads numbers as Unix times, and none it would be given is this
#: early (2001).
SEQ_LIMIT = 1_000_000_000


def since_seq(text: str) -> int | None:
    """
    The sequence number ``--since`` names, or None when it names a time.
    """
    text = text.strip()
    if text.isdigit() and int(text) < SEQ_LIMIT:
        return int(text)
    return None


def lagging_line(lagging: Any) -> str:
    """
    What ``ross events`` says of a lagging marker.
    """
    if lagging.reason == "slow":
        line = f"ross events: fell behind the daemon; replaying from the journal, from event {lagging.resume_seq}"
    else:
        line = f"ross events: the journal starts at event {lagging.resume_seq}"
    if lagging.lost:
        line += f"; {lagging.lost} older events are no longer kept"
    return line


def cmd_events(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS]", "Get real time events from the server")
    parser.add_argument("-f", "--filter", action="append", default=[], help="Filter output (type=, event=, KEY=VALUE)")
    parser.add_argument("--since", help="Show events created since timestamp, or since sequence number SEQ "
                                          "(a whole number below 1000000000, which no docker timestamp is)")
    parser.add_argument("--until", help="Stream events until this timestamp")
    parser.add_argument("--format", default="",
                        help="Format the output using a Go template ('json': one JSON object per line)")
    args = parser.parse_args(argv)
    if args.format:
        check_template(args.format)
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
        seq = since_seq(args.since)
        if seq is not None:
            request.since_seq = seq
        else:
            request.since.CopyFrom(time_argument(args.since))
    if args.until:
        request.until.CopyFrom(time_argument(args.until))
    stream = cli.stub("SystemService").Events(request)
    try:
        for event in stream:
            if event.HasField("lagging"):
                # Not an event: said on stderr, so that stdout stays
                # docker's lines.
                cli.err.write(lagging_line(event.lagging) + "\n")
                cli.err.flush()
            elif args.format:
                cli.print(render_template(event_document(event), args.format))
            else:
                cli.print(format_event(event))
            cli.out.flush()
    except KeyboardInterrupt:
        stream.cancel()
    return 0


def cmd_system_df(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS]", "Show Ross disk usage")
    parser.add_argument("--format", default="",
                        help="'json' for one JSON document, or a Go template ('table ...' for columns)")
    args = parser.parse_args(argv)
    from ross.v1 import system_pb2

    usage = cli.stub("SystemService").DiskUsage(system_pb2.DiskUsageRequest(), timeout=300)
    items = [{"Type": i.type, "TotalCount": str(i.total), "Active": str(i.active), "Size": human_size(i.size),
              "Reclaimable": human_size(i.reclaimable) + _share(i)} for i in usage.items]
    if args.format and (text := format_rows(items, args.format, {"TotalCount": "TOTAL"})) is not None:
        cli.out.write(text)
        return 0
    rows = []
    for i in usage.items:
        rows.append([i.type, str(i.total), str(i.active), human_size(i.size), human_size(i.reclaimable) + _share(i)])
    cli.print_table(["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"], rows)
    return 0


def _share(item: Any) -> str:
    """The reclaimable share docker's df shows after the size: " (42%)"."""
    return f" ({100 * item.reclaimable // item.size}%)" if item.size else ""


def cmd_system_prune(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS]", "Remove unused data")
    parser.add_argument("-a", "--all", action="store_true", help="Remove all unused images not just dangling ones")
    parser.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    parser.add_argument("--volumes", action="store_true", help="Prune anonymous volumes")
    args = parser.parse_args(argv)
    from ross.client.base import confirm
    from ross.v1 import system_pb2

    if not args.force:
        what = ["all stopped containers", "all networks not used by at least one container",
                "all dangling images" if not args.all else "all images without at least one container associated to them"]
        if args.volumes:
            what.insert(2, "all anonymous volumes not used by at least one container")
        what.append("all build cache")
        warning = "WARNING! This will remove:\n" + "".join(f"  - {w}\n" for w in what).rstrip("\n")
        if not confirm(cli, warning):
            return 0
    result = cli.stub("SystemService").Prune(system_pb2.SystemPruneRequest(all=args.all, volumes=args.volumes),
                                             timeout=600)
    for title, names in (("Deleted Containers:", result.containers_deleted),
                         ("Deleted Networks:", result.networks_deleted),
                         ("Deleted Volumes:", result.volumes_deleted),
                         ("Deleted Images:", result.images_deleted),
                         ("Deleted build cache objects:", result.build_cache_deleted)):
        if names:
            cli.print(title)
            for name in names:
                cli.print(name)
            cli.print("")
    cli.print(f"Total reclaimed space: {human_size(result.space_reclaimed)}")
    return 0
