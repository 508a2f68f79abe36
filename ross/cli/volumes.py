# -*- test-case-name: ross.test.integration.test_containers -*-
"""
``ross volume create|ls|inspect|rm|prune``.
"""

from __future__ import annotations

from typing import Any

from ross.client.base import (
    Cli,
    CliError,
    confirm,
    each_target,
    format_rows,
    inspect_each,
    label_fields,
    parse_filters,
)
from ross.humanize import human_size, rfc3339
from ross.v1 import common_pb2, volume_pb2


def volume_json(v: Any) -> dict[str, Any]:
    # Maps by key, as docker's JSON has them (a protobuf map has no order).
    return {
        "CreatedAt": rfc3339(v.created.seconds, v.created.nanos),
        "Driver": v.driver,
        "Labels": dict(sorted(v.labels.items())) or None,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": dict(sorted(v.options.items())) or None,
        "Scope": "local",
    }


def cmd_volume_create(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] [VOLUME]", "Create a volume")
    p.add_argument("-d", "--driver", default="local", help="Specify volume driver name")
    p.add_argument("--label", action="append", default=[], help="Set metadata for a volume")
    p.add_argument("--name", default="", help="Specify volume name")
    p.add_argument("-o", "--opt", action="append", default=[],
                   help="Set driver specific options (type, device, o)")
    p.add_argument("volume", nargs="?", default="")
    args = p.parse_args(argv)
    if args.name and args.volume and args.name != args.volume:
        raise CliError("conflicting options: either specify --name or provide positional arg, not both")
    labels = {}
    for entry in args.label:
        k, _, v = entry.partition("=")
        labels[k] = v
    options = {}
    for entry in args.opt:
        k, eq, v = entry.partition("=")
        if not eq:
            raise CliError(f"invalid argument \"{entry}\" for \"-o, --opt\" flag: expected key=value")
        options[k] = v
    request = volume_pb2.CreateVolumeRequest(name=args.volume or args.name, labels=labels, driver=args.driver,
                                             options=options)
    cli.print(cli.stub("VolumeService").CreateVolume(request).volume.name)
    return 0


def cmd_volume_ls(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS]", "List volumes")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display volume names")
    p.add_argument("-f", "--filter", action="append", default=[], help="Provide filter values (e.g. 'dangling=true')")
    p.add_argument("--format", default="",
                   help="'json' for one JSON document, or a Go template ('table ...' for columns)")
    args = p.parse_args(argv)
    request = volume_pb2.ListVolumesRequest(
        filters=[common_pb2.Filter(key=k, value=v) for k, v in parse_filters(args.filter)])
    volumes = cli.stub("VolumeService").ListVolumes(request).volumes
    if args.quiet:
        for v in volumes:
            cli.print(v.name)
    elif args.format and (text := format_rows([{
            "Name": v.name, "Driver": v.driver, "Scope": "local", "Mountpoint": v.mountpoint,
            "Links": str(v.ref_count), **label_fields(dict(v.labels))} for v in volumes], args.format,
            {"Name": "VOLUME NAME"})) is not None:
        cli.out.write(text)
    else:
        cli.print_table(["DRIVER", "VOLUME NAME"], [[v.driver, v.name] for v in volumes])
    return 0


def cmd_volume_inspect(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("VOLUME [VOLUME...]", "Display detailed information on one or more volumes")
    p.add_argument("-f", "--format", default="", help="Format output using a Go-like template")
    p.add_argument("volumes", nargs="+")
    args = p.parse_args(argv)
    stub = cli.stub("VolumeService")
    return inspect_each(cli, args.volumes, lambda name: volume_json(
        stub.InspectVolume(volume_pb2.InspectVolumeRequest(name=name)).volume), args.format)


def cmd_volume_rm(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] VOLUME [VOLUME...]", "Remove one or more volumes")
    p.add_argument("-f", "--force", action="store_true", help="Force the removal of one or more volumes")
    p.add_argument("volumes", nargs="+")
    args = p.parse_args(argv)
    stub = cli.stub("VolumeService")
    return each_target(cli, args.volumes, lambda n: stub.RemoveVolume(
        volume_pb2.RemoveVolumeRequest(name=n, force=args.force)))


def cmd_volume_prune(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS]", "Remove unused local volumes")
    p.add_argument("-a", "--all", action="store_true", help="Remove all unused volumes, not just anonymous ones")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help="Provide filter values (e.g. 'label=<label>')")
    args = p.parse_args(argv)
    if not args.force:
        if not confirm(cli, "WARNING! This will remove anonymous local volumes not used by at least one container."):
            return 0
    request = volume_pb2.PruneVolumesRequest(
        all=args.all, filters=[common_pb2.Filter(key=k, value=v) for k, v in parse_filters(args.filter)])
    response = cli.stub("VolumeService").PruneVolumes(request)
    if response.volumes_deleted:
        cli.print("Deleted Volumes:")
        for name in response.volumes_deleted:
            cli.print(name)
        cli.print("")
    cli.print(f"Total reclaimed space: {human_size(response.space_reclaimed)}")
    return 0
