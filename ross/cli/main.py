# -*- test-case-name: ross.test.test_cli -*-
"""
``ross``: the docker-style command line.

Start-up stays lean: this module imports only the standard library; the
module of the command being run (and grpc, when it talks to the daemon) is
imported after the command is known.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable, NoReturn

# Before any command's module imports protobuf: see ross.v1.defer_unused.
import ross.v1  # noqa: F401
from ross.client.settings import UsageError, parse_globals

USAGE = """\
Usage:  ross [OPTIONS] COMMAND

A container engine on Twisted and gRPC

Options:
  -H, --host string      Daemon address: unix:///path or tcp://HOST:PORT
                         (default $ROSS_HOST or unix:///run/ross/ross.sock)
      --tls-ca string    CA certificate the daemon's must chain to ($ROSS_TLS_CA)
      --tls-cert string  Client certificate, for mutual TLS ($ROSS_TLS_CERT)
      --tls-key string   Client private key ($ROSS_TLS_KEY)
      --token string     Bearer token for the daemon ($ROSS_TOKEN)
  -v, --version          Print version information and quit
  -h, --help             Print this help
"""

# Every command: name -> (module:function, summary). Groups map to a table
# of their own. A command whose function does not exist yet says so.
Table = dict[str, "tuple[str, str] | tuple[str, Table]"]

_CONTAINERS = "ross.cli.containers"
_IMAGES = "ross.cli.images"

CONTAINER: Table = {
    "attach": (f"{_CONTAINERS}:cmd_attach",
               "Attach local standard input, output, and error streams to a running container"),
    "commit": (f"{_CONTAINERS}:cmd_commit", "Create a new image from a container's changes"),
    "cp": ("ross.cli.cp:cmd_cp", "Copy files/folders between a container and the local filesystem"),
    "create": (f"{_CONTAINERS}:cmd_create", "Create a new container"),
    "diff": (f"{_CONTAINERS}:cmd_diff", "Inspect changes to files or directories on a container's filesystem"),
    "exec": (f"{_CONTAINERS}:cmd_exec", "Execute a command in a running container"),
    "export": (f"{_CONTAINERS}:cmd_export", "Export a container's filesystem as a tar archive"),
    "inspect": (f"{_CONTAINERS}:cmd_container_inspect", "Display detailed information on one or more containers"),
    "kill": (f"{_CONTAINERS}:cmd_kill", "Kill one or more running containers"),
    "logs": (f"{_CONTAINERS}:cmd_logs", "Fetch the logs of a container"),
    "ls": (f"{_CONTAINERS}:cmd_ps", "List containers"),
    "pause": (f"{_CONTAINERS}:cmd_pause", "Pause all processes within one or more containers"),
    "port": (f"{_CONTAINERS}:cmd_port", "List port mappings or a specific mapping for the container"),
    "prune": (f"{_CONTAINERS}:cmd_container_prune", "Remove all stopped containers"),
    "rename": (f"{_CONTAINERS}:cmd_rename", "Rename a container"),
    "update": (f"{_CONTAINERS}:cmd_update", "Update configuration of one or more containers"),
    "restart": (f"{_CONTAINERS}:cmd_restart", "Restart one or more containers"),
    "rm": (f"{_CONTAINERS}:cmd_rm", "Remove one or more containers"),
    "run": (f"{_CONTAINERS}:cmd_run", "Create and run a new container from an image"),
    "start": (f"{_CONTAINERS}:cmd_start", "Start one or more stopped containers"),
    "stats": (f"{_CONTAINERS}:cmd_stats", "Display a live stream of container(s) resource usage statistics"),
    "stop": (f"{_CONTAINERS}:cmd_stop", "Stop one or more running containers"),
    "top": (f"{_CONTAINERS}:cmd_top", "Display the running processes of a container"),
    "unpause": (f"{_CONTAINERS}:cmd_unpause", "Unpause all processes within one or more containers"),
    "wait": (f"{_CONTAINERS}:cmd_wait", "Block until one or more containers stop, then print their exit codes"),
}

IMAGE: Table = {
    "build": ("ross.cli.build:cmd_build", "Build an image from a Dockerfile"),
    "history": (f"{_IMAGES}:cmd_history", "Show the history of an image"),
    "import": (f"{_IMAGES}:cmd_import", "Import the contents from a tarball to create a filesystem image"),
    "inspect": (f"{_IMAGES}:cmd_image_inspect", "Display detailed information on one or more images"),
    "load": (f"{_IMAGES}:cmd_load", "Load an image from a tar archive or STDIN"),
    "ls": (f"{_IMAGES}:cmd_images", "List images"),
    "prune": (f"{_IMAGES}:cmd_image_prune", "Remove unused images"),
    "pull": (f"{_IMAGES}:cmd_pull", "Download an image from a registry"),
    "push": (f"{_IMAGES}:cmd_push", "Upload an image to a registry"),
    "rm": (f"{_IMAGES}:cmd_rmi", "Remove one or more images"),
    "save": (f"{_IMAGES}:cmd_save", "Save one or more images to a tar archive (streamed to STDOUT by default)"),
    "tag": (f"{_IMAGES}:cmd_tag", "Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE"),
}

_SNAPSHOTS = "ross.cli.snapshots"
SNAPSHOT: Table = {
    verb: (f"{_SNAPSHOTS}:cmd_snapshot_{verb}", summary)
    for verb, summary in [
        ("ls", "List snapshots"),
        ("stat", "Show the metadata of a snapshot"),
        ("prepare", "Create an active snapshot on a parent"),
        ("view", "Create a read-only view of a committed snapshot"),
        ("commit", "Commit an active snapshot"),
        ("rm", "Remove snapshots"),
        ("mounts", "Print the mount command for an active snapshot"),
        ("usage", "Show disk usage of snapshots"),
        ("cleanup", "Remove directories no snapshot owns"),
    ]
}

_VOLUMES = "ross.cli.volumes"
VOLUME: Table = {
    verb: (f"{_VOLUMES}:cmd_volume_{verb}", summary)
    for verb, summary in [
        ("create", "Create a volume"),
        ("inspect", "Display detailed information on one or more volumes"),
        ("ls", "List volumes"),
        ("prune", "Remove unused local volumes"),
        ("rm", "Remove one or more volumes"),
    ]
}

_NETWORKS = "ross.cli.networks"
NETWORK: Table = {
    verb: (f"{_NETWORKS}:cmd_network_{verb}", summary)
    for verb, summary in [
        ("connect", "Connect a container to a network"),
        ("create", "Create a network"),
        ("disconnect", "Disconnect a container from a network"),
        ("inspect", "Display detailed information on one or more networks"),
        ("ls", "List networks"),
        ("prune", "Remove all unused networks"),
        ("rm", "Remove one or more networks"),
    ]
}

BUILDER: Table = {
    "build": IMAGE["build"],
    "prune": ("ross.cli.build:cmd_builder_prune", "Remove build cache"),
}

_SYSTEM = "ross.cli.system"
SYSTEM: Table = {
    "df": (f"{_SYSTEM}:cmd_system_df", "Show Ross disk usage"),
    "events": (f"{_SYSTEM}:cmd_events", "Get real time events from the server"),
    "info": (f"{_SYSTEM}:cmd_info", "Display system-wide information"),
    "prune": (f"{_SYSTEM}:cmd_system_prune", "Remove unused data"),
}

COMMANDS: Table = {
    **{name: CONTAINER[name] for name in (
        "attach", "commit", "cp", "create", "diff", "exec", "export", "kill", "logs", "pause",
        "port", "rename", "restart", "rm", "run", "start", "stats", "stop", "top", "unpause", "update", "wait",
    )},
    "ps": CONTAINER["ls"],
    "inspect": (f"{_CONTAINERS}:cmd_inspect", "Return low-level information on Ross objects"),
    **{name: IMAGE[name] for name in ("build", "history", "import", "load", "pull", "push", "save", "tag")},
    "images": IMAGE["ls"],
    "rmi": IMAGE["rm"],
    "login": (f"{_IMAGES}:cmd_login", "Log in to a registry"),
    "logout": (f"{_IMAGES}:cmd_logout", "Log out from a registry"),
    "events": SYSTEM["events"],
    "info": SYSTEM["info"],
    "version": (f"{_SYSTEM}:cmd_version", "Show the Ross version information"),
    "container": ("Manage containers", CONTAINER),
    "image": ("Manage images", IMAGE),
    "builder": ("Manage builds", BUILDER),
    "snapshot": ("Manage snapshots", SNAPSHOT),
    "volume": ("Manage volumes", VOLUME),
    "network": ("Manage networks", NETWORK),
    "system": ("Manage Ross", SYSTEM),
}


def _summary(entry: tuple[str, object]) -> str:
    first, second = entry
    return second if isinstance(second, str) else first


def usage(table: Table, prefix: str = "ross") -> str:
    groups = {k: v for k, v in table.items() if isinstance(v[1], dict)}
    commands = {k: v for k, v in table.items() if not isinstance(v[1], dict)}
    lines = [USAGE if prefix == "ross" else f"Usage:  {prefix} COMMAND\n"]
    if groups:
        lines.append("Management Commands:")
        lines += [f"  {name:<11}{_summary(entry)}" for name, entry in sorted(groups.items())]
        lines.append("")
    lines.append("Commands:")
    lines += [f"  {name:<11}{_summary(entry)}" for name, entry in sorted(commands.items())]
    lines.append("")
    lines.append(f"Run '{prefix} COMMAND --help' for more information on a command.")
    return "\n".join(lines) + "\n"


def resolve(argv: list[str]) -> tuple[str, str, list[str]]:
    """
    Find the command in C{argv}: returns (display name, "module:function",
    remaining arguments). Raises L{UsageError} for an unknown command and
    L{HelpRequested} when only help can be shown.
    """
    table, prefix = COMMANDS, "ross"
    while True:
        if not argv or argv[0] in ("-h", "--help", "help"):
            raise HelpRequested(usage(table, prefix))
        name, argv = argv[0], argv[1:]
        entry = table.get(name)
        if entry is None:
            raise UsageError(f"'{name}' is not a ross command.\nSee '{prefix} --help'")
        first, second = entry
        prefix = f"{prefix} {name}"
        if isinstance(second, dict):
            table = second
            continue
        return prefix, first, argv


class HelpRequested(Exception):
    pass


def load(target: str) -> Callable[..., int] | None:
    module_name, _, function = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name == module_name:
            return None
        raise
    return getattr(module, function, None)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    for arg in argv:
        try:
            arg.encode()
        except UnicodeEncodeError:
            sys.stderr.write(f"Error: invalid argument {arg.encode(errors='backslashreplace').decode()!r}: not UTF-8\n")
            return 125
    try:
        g, rest = parse_globals(argv)
        if rest[:1] in (["-v"], ["--version"]):
            rest = ["version"]
        command, target, args = resolve(rest)
    except HelpRequested as h:
        sys.stdout.write(str(h))
        return 0
    except UsageError as e:
        sys.stderr.write(f"ross: {e}\n")
        return 125
    function = load(target)
    if function is None:
        sys.stderr.write(f"Error: '{command}' is not implemented yet\n")
        return 125
    from ross.client.base import Cli, run_command

    return run_command(function, Cli(g, command, direct=True), args)


def run() -> NoReturn:
    """
    The ``ross`` command: L{main}, then out at once. The interpreter's own
    teardown (every module's objects freed one by one) would add some 10 ms
    to every command, which has nothing left to do by then: its output is
    flushed here, its files are closed, its threads are daemons and it
    registers no exit handlers. (L{main} returns instead, for callers in
    the same process: the tests, the TUI.)
    """
    code = main()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):
            # A reader that went away (``ross ps | head``), or a closed stream.
            pass
    os._exit(code)


if __name__ == "__main__":
    run()
