# -*- test-case-name: ross.test.integration.test_snapshot_cli -*-
"""
``ross snapshot ls|stat|prepare|view|commit|rm|mounts|usage|cleanup``, in
the style of containerd's ``ctr snapshot``.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from ross.client.base import Cli, CliError, error_of
from ross.client.base import grpc
from ross.humanize import human_size, rfc3339
from ross.v1 import snapshot_pb2 as pb

_KIND_NAMES = {
    pb.SNAPSHOT_KIND_VIEW: "View",
    pb.SNAPSHOT_KIND_ACTIVE: "Active",
    pb.SNAPSHOT_KIND_COMMITTED: "Committed",
}


def _stub(cli: Cli) -> Any:
    return cli.stub("SnapshotterService")


def _labels(values: Sequence[str]) -> dict[str, str]:
    labels = {}
    for value in values:
        key, _, label = value.partition("=")
        if not key:
            raise CliError(f"invalid label {value!r}: want KEY=VALUE")
        labels[key] = label
    return labels


def _info_json(info: pb.SnapshotInfo) -> dict[str, Any]:
    document: dict[str, Any] = {
        "Kind": _KIND_NAMES.get(info.kind, "Unknown"),
        "Name": info.name,
    }
    if info.parent:
        document["Parent"] = info.parent
    if info.labels:
        document["Labels"] = dict(sorted(info.labels.items()))
    document["Created"] = rfc3339(info.created.seconds, info.created.nanos)
    document["Updated"] = rfc3339(info.updated.seconds, info.updated.nanos)
    return document


def mount_command(mounts: Iterable[Any], target: str) -> list[str]:
    """
    The mount(8) command lines that perform C{mounts} on C{target}, as
    ``ctr snapshot mounts`` prints them.
    """
    return [f"mount -t {m.type} {m.source} {target} -o {','.join(m.options)}" for m in mounts]


def cmd_snapshot_ls(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS]", "List snapshots")
    parser.add_argument("-f", "--filter", action="append", default=[],
                        help='containerd filter, e.g. "kind==committed", "parent==NAME", "labels.KEY==VALUE", "name~=REGEX"')
    parser.add_argument("-q", "--quiet", action="store_true", help="Only print keys")
    parser.add_argument("--format", default="", help="'json' for one JSON document")
    args = parser.parse_args(argv)
    if args.format not in ("", "json"):
        raise CliError(f"unknown format {args.format!r}: only 'json' is supported")
    response = _stub(cli).List(pb.ListSnapshotsRequest(filters=args.filter), timeout=60)
    if args.format == "json":
        cli.print_json([_info_json(i) for i in response.info])
    elif args.quiet:
        for info in response.info:
            cli.print(info.name)
    else:
        cli.print_table(
            ["KEY", "PARENT", "KIND"],
            [(i.name, i.parent, _KIND_NAMES.get(i.kind, "Unknown")) for i in response.info],
        )
    return 0


def cmd_snapshot_stat(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("KEY", "Show the metadata of a snapshot as JSON")
    parser.add_argument("key")
    args = parser.parse_args(argv)
    response = _stub(cli).Stat(pb.StatSnapshotRequest(key=args.key), timeout=60)
    cli.print_json(_info_json(response.info))
    return 0


def _create(cli: Cli, argv: list[str], verb: str) -> int:
    what = "an active snapshot" if verb == "prepare" else "a read-only view"
    parser = cli.parser("[OPTIONS] KEY [PARENT]", f"Create {what} on a committed parent")
    parser.add_argument("key")
    parser.add_argument("parent", nargs="?", default="")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE label to set")
    parser.add_argument("--target", default="", help="Print the mount command for this target")
    parser.add_argument("--mounts", action="store_true", help="Print the mount command (target /tmp/mnt by default)")
    args = parser.parse_args(argv)
    labels = _labels(args.label)
    if verb == "prepare":
        response = _stub(cli).Prepare(pb.PrepareSnapshotRequest(key=args.key, parent=args.parent, labels=labels), timeout=60)
    else:
        response = _stub(cli).View(pb.ViewSnapshotRequest(key=args.key, parent=args.parent, labels=labels), timeout=60)
    if args.mounts or args.target:
        for line in mount_command(response.mounts, args.target or "/tmp/mnt"):
            cli.print(line)
    return 0


def cmd_snapshot_prepare(cli: Cli, argv: list[str]) -> int:
    return _create(cli, argv, "prepare")


def cmd_snapshot_view(cli: Cli, argv: list[str]) -> int:
    return _create(cli, argv, "view")


def cmd_snapshot_commit(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS] NAME KEY", "Commit active snapshot KEY as NAME")
    parser.add_argument("name")
    parser.add_argument("key")
    parser.add_argument("--label", action="append", default=[], help="KEY=VALUE label of the committed snapshot")
    args = parser.parse_args(argv)
    request = pb.CommitSnapshotRequest(name=args.name, key=args.key, labels=_labels(args.label))
    _stub(cli).Commit(request, timeout=60)
    return 0


def cmd_snapshot_rm(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("KEY [KEY...]", "Remove snapshots")
    parser.add_argument("keys", nargs="+", metavar="KEY")
    args = parser.parse_args(argv)
    status = 0
    for key in args.keys:
        try:
            _stub(cli).Remove(pb.RemoveSnapshotRequest(key=key), timeout=300)
        except grpc.RpcError as e:
            cli.err.write(f"Error: {error_of(cli, e).message}\n")
            status = 1
    return status


def cmd_snapshot_mounts(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("TARGET KEY", "Print the mount command that mounts snapshot KEY on TARGET")
    parser.add_argument("target")
    parser.add_argument("key")
    args = parser.parse_args(argv)
    response = _stub(cli).Mounts(pb.MountsRequest(key=args.key), timeout=60)
    for line in mount_command(response.mounts, args.target):
        cli.print(line)
    return 0


def cmd_snapshot_usage(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("[OPTIONS] [KEY...]", "Show the disk usage of snapshots (all when no KEY)")
    parser.add_argument("keys", nargs="*", metavar="KEY")
    parser.add_argument("-b", "--bytes", action="store_true", help="Show sizes in bytes")
    args = parser.parse_args(argv)
    stub = _stub(cli)
    keys = args.keys or [i.name for i in stub.List(pb.ListSnapshotsRequest(), timeout=60).info]
    rows = []
    for key in keys:
        usage = stub.Usage(pb.UsageRequest(key=key), timeout=300)
        rows.append((key, str(usage.size) if args.bytes else human_size(usage.size), str(usage.inodes)))
    cli.print_table(["KEY", "SIZE", "INODES"], rows)
    return 0


def cmd_snapshot_cleanup(cli: Cli, argv: list[str]) -> int:
    parser = cli.parser("", "Remove snapshot directories that no snapshot owns")
    parser.parse_args(argv)
    response = _stub(cli).Cleanup(pb.CleanupRequest(), timeout=600)
    cli.print(f"Removed {response.removed} orphaned directories")
    return 0
