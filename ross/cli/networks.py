# -*- test-case-name: ross.test.integration.test_network -*-
"""
Networking in the CLI: container NetworkSettings as docker shows them, and
the ``ross network`` commands.
"""

from __future__ import annotations

from typing import Any, Callable

import ipaddress

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
from ross.client.base import grpc
from ross.humanize import rfc3339
from ross.v1 import common_pb2, network_pb2


def host_port_text(m: Any) -> str:
    """
    Where a PortMapping is published: "0.0.0.0:8080", "[::]:8080".
    """
    host = m.host_ip or "0.0.0.0"
    return f"[{host}]:{m.host_port}" if ":" in host else f"{host}:{m.host_port}"


def network_settings_json(ns: Any) -> dict[str, Any]:
    """
    A container's NetworkSettings message as ``docker inspect`` shows it:
    Ports by container port, every network by name, and the default
    bridge's address at the top level.
    """
    ports: dict[str, Any] = {}
    for p in ns.ports:
        if not p.host_port:
            ports.setdefault(p.container_port, None)
            continue
        entry = ports.get(p.container_port) or []
        entry.append({"HostIp": p.host_ip or "0.0.0.0", "HostPort": str(p.host_port)})
        ports[p.container_port] = entry
    networks = {}
    for name, e in sorted(ns.networks.items()):
        networks[name] = {
            "IPAMConfig": None,
            "Links": None,
            "Aliases": list(e.aliases) or None,
            "MacAddress": e.mac_address,
            "NetworkID": e.network_id,
            "Gateway": e.gateway,
            "IPAddress": e.ip_address,
            "IPPrefixLen": e.prefix_len,
            "IPv6Gateway": e.ipv6_gateway,
            "GlobalIPv6Address": e.global_ipv6_address,
            "GlobalIPv6PrefixLen": e.global_ipv6_prefix_len,
        }
    bridge = ns.networks["bridge"] if "bridge" in ns.networks else None
    return {
        "SandboxKey": ns.sandbox_key,
        "Ports": ports,
        "Gateway": bridge.gateway if bridge is not None else "",
        "IPAddress": bridge.ip_address if bridge is not None else "",
        "IPPrefixLen": bridge.prefix_len if bridge is not None else 0,
        "MacAddress": bridge.mac_address if bridge is not None else "",
        "IPv6Gateway": bridge.ipv6_gateway if bridge is not None else "",
        "GlobalIPv6Address": bridge.global_ipv6_address if bridge is not None else "",
        "GlobalIPv6PrefixLen": bridge.global_ipv6_prefix_len if bridge is not None else 0,
        "Networks": networks,
    }


def ports_text(ns: Any) -> str:
    """
    docker's PORTS column: "0.0.0.0:8080->80/tcp, [::]:8080->80/tcp, 443/tcp".
    """
    return ", ".join(f"{host_port_text(p)}->{p.container_port}" if p.host_port else p.container_port
                     for p in ns.ports)


def network_json(n: Any) -> dict[str, Any]:
    """
    A network as ``docker network inspect`` shows it.
    """
    return {
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339(n.created.seconds, n.created.nanos),
        "Scope": n.scope,
        "Driver": n.driver,
        "EnableIPv6": n.enable_ipv6,
        "IPAM": {"Driver": "default", "Options": None,
                 "Config": [{"Subnet": subnet, "Gateway": gateway}
                            for subnet, gateway in ((n.subnet, n.gateway), (n.ipv6_subnet, n.ipv6_gateway)) if subnet]},
        "Internal": n.internal,
        "Attachable": False,
        "Ingress": False,
        "Containers": {
            c.container_id: {"Name": c.name, "MacAddress": c.mac_address, "IPv4Address": c.ip_address,
                             "IPv6Address": c.ipv6_address, **({"Aliases": list(c.aliases)} if c.aliases else {})}
            for c in n.containers},
        "Options": {"com.docker.network.bridge.name": n.bridge} if n.bridge else {},
        "Labels": dict(n.labels),
    }


def _filters(values: list[str]) -> list[Any]:
    return [common_pb2.Filter(key=k, value=v) for k, v in parse_filters(values)]


def cmd_network_create(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] NETWORK", "Create a network")
    p.add_argument("-d", "--driver", default="bridge", help="Driver to manage the Network")
    p.add_argument("--subnet", action="append", default=[],
                   help="Subnet in CIDR format that represents a network segment (one IPv4, one IPv6)")
    p.add_argument("--gateway", action="append", default=[], help="IPv4 or IPv6 Gateway for the master subnet")
    p.add_argument("--ipv6", action="store_true", help="Enable IPv6 networking")
    p.add_argument("--label", action="append", default=[], help="Set metadata on a network")
    p.add_argument("--internal", action="store_true", help="Restrict external access to the network")
    p.add_argument("network")
    args = p.parse_args(argv)
    labels = dict(entry.partition("=")[::2] for entry in args.label)
    subnets = _by_version(args.subnet, "--subnet", lambda v: ipaddress.ip_network(v, strict=False).version)
    gateways = _by_version(args.gateway, "--gateway", lambda v: ipaddress.ip_address(v).version)
    request = network_pb2.CreateNetworkRequest(
        name=args.network, driver=args.driver, subnet=subnets[4], gateway=gateways[4], labels=labels,
        internal=args.internal, enable_ipv6=args.ipv6, ipv6_subnet=subnets[6], ipv6_gateway=gateways[6])
    cli.print(cli.stub("NetworkService").CreateNetwork(request).network.id)
    return 0


def _by_version(values: list[str], flag: str, version_of: Callable[[str], int]) -> dict[int, str]:
    """
    Repeated --subnet or --gateway values by IP version, one of each at
    most, as docker takes them; one that is neither goes as IPv4, for the
    daemon to refuse with its message.
    """
    found = {4: "", 6: ""}
    for value in values:
        try:
            version = version_of(value)
        except ValueError:
            version = 4
        if found[version]:
            raise CliError(f"{flag} given twice for IPv{version}: only one IPv4 and one IPv6 {flag[2:]} per network")
        found[version] = value
    return found


def cmd_network_ls(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS]", "List networks")
    p.add_argument("-q", "--quiet", action="store_true", help="Only display network IDs")
    p.add_argument("-f", "--filter", action="append", default=[], help="Provide filter values (e.g. 'driver=bridge')")
    p.add_argument("--no-trunc", action="store_true", help="Do not truncate the output")
    p.add_argument("--format", default="",
                   help="'json' for one JSON document, or a Go template ('table ...' for columns)")
    args = p.parse_args(argv)
    networks = cli.stub("NetworkService").ListNetworks(
        network_pb2.ListNetworksRequest(filters=_filters(args.filter))).networks
    if args.quiet:
        for n in networks:
            cli.print(n.id if args.no_trunc else n.id[:12])
    elif args.format and (text := format_rows([{
            "ID": n.id if args.no_trunc else n.id[:12], "Name": n.name, "Driver": n.driver, "Scope": n.scope,
            "IPv6": "true" if n.enable_ipv6 else "false", "Internal": "true" if n.internal else "false",
            **label_fields(dict(n.labels))} for n in networks], args.format, {"ID": "NETWORK ID"})) is not None:
        cli.out.write(text)
    else:
        cli.print_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"],
                        [[n.id if args.no_trunc else n.id[:12], n.name, n.driver, n.scope] for n in networks])
    return 0


def cmd_network_inspect(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] NETWORK [NETWORK...]", "Display detailed information on one or more networks")
    p.add_argument("-f", "--format", default="", help="Format output using a Go-like template")
    p.add_argument("networks", nargs="+")
    args = p.parse_args(argv)
    stub = cli.stub("NetworkService")
    return inspect_each(cli, args.networks, lambda name: network_json(
        stub.InspectNetwork(network_pb2.InspectNetworkRequest(network=name)).network), args.format)


def cmd_network_rm(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("NETWORK [NETWORK...]", "Remove one or more networks")
    p.add_argument("-f", "--force", action="store_true", help="Do not error if the network does not exist")
    p.add_argument("networks", nargs="+")
    args = p.parse_args(argv)
    stub = cli.stub("NetworkService")

    def remove(name: str) -> None:
        try:
            stub.RemoveNetwork(network_pb2.RemoveNetworkRequest(network=name))
        except grpc.RpcError as e:
            if not (args.force and e.code() == grpc.StatusCode.NOT_FOUND):
                raise

    return each_target(cli, args.networks, remove)


def cmd_network_connect(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] NETWORK CONTAINER", "Connect a container to a network")
    p.add_argument("--ip", default="", help="IPv4 address (e.g., 172.30.100.104)")
    p.add_argument("--ip6", default="", help="IPv6 address (e.g., 2001:db8::33)")
    p.add_argument("--alias", action="append", default=[], help="Add network-scoped alias for the container")
    p.add_argument("network")
    p.add_argument("container")
    args = p.parse_args(argv)
    cli.stub("NetworkService").Connect(network_pb2.ConnectRequest(
        network=args.network, container=args.container, ip_address=args.ip, aliases=args.alias,
        ipv6_address=args.ip6))
    return 0


def cmd_network_disconnect(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS] NETWORK CONTAINER", "Disconnect a container from a network")
    p.add_argument("-f", "--force", action="store_true", help="Force the container to disconnect from a network")
    p.add_argument("network")
    p.add_argument("container")
    args = p.parse_args(argv)
    cli.stub("NetworkService").Disconnect(network_pb2.DisconnectRequest(
        network=args.network, container=args.container, force=args.force))
    return 0


def cmd_network_prune(cli: Cli, argv: list[str]) -> int:
    p = cli.parser("[OPTIONS]", "Remove all unused networks")
    p.add_argument("-f", "--force", action="store_true", help="Do not prompt for confirmation")
    p.add_argument("--filter", action="append", default=[], help="Provide filter values (e.g. 'label=<key>=<value>')")
    args = p.parse_args(argv)
    if not args.force:
        if not confirm(cli, "WARNING! This will remove all custom networks not used by at least one container."):
            return 0
    response = cli.stub("NetworkService").PruneNetworks(network_pb2.PruneNetworksRequest(filters=_filters(args.filter)))
    if response.networks_deleted:
        cli.print("Deleted Networks:")
        for name in response.networks_deleted:
            cli.print(name)
    return 0
