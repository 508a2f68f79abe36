# -*- test-case-name: ross.test.integration.test_network -*-
"""
Ross's packet rules: one nftables table of its own (C{inet ross} by
default: IPv4 and IPv6 alike), rendered whole from the daemon's networks
and endpoints by L{render} and replaced in one atomic transaction by
L{replace_table}, through libnftables in this process (no nft(8) child,
no fork). Nothing else's tables are touched.

What the table does:
  - masquerade: traffic from a network's subnets leaving by another
    interface than its bridge goes out with the host's address (NAT66
    for IPv6, as docker's ip6tables rules do);
  - published ports: DNAT of traffic to a host address (or the one given
    with -p IP:...) and port to the container, from other hosts
    (prerouting) and from the host itself (output), 127.0.0.1 and [::1]
    included: the bridges have route_localnet on and ::1 routed locally
    from them (L{ross.engine.network.netlink.ensure_bridge}), and
    connections from loopback or from the network itself (hairpin) are
    masqueraded so the answer comes back through the host. The kernel does
    it all: no proxy process per port, no copy through the daemon, and
    published ports keep working while the daemon restarts. One exception:
    where br_netfilter hands bridged IPv6 to netfilter, the answers to
    [::1] cannot come back (see L{render}'s C{loopback6}), and the daemon
    answers [::1] itself (L{ross.protocols.portproxy});
  - isolation: no forwarding between two of Ross's bridges, except
    connections to published ports;
  - the host's loopback stays the host's: route_localnet (above) would
    also let a container reach services bound to 127.0.0.1 with packets it
    makes itself (CVE-2020-8558), so traffic from a bridge to 127.0.0.0/8
    is dropped unless it belongs to a DNATed connection (the answers of
    published ports), as kube-proxy does. The kernel drops packets that
    arrive on a bridge addressed to ::1 before any rule sees them; the
    same rule for ::1 is there should that ever change.

Rendering the whole table from state, rather than editing rules one by
one, makes crash recovery the same code as any change: whatever a killed
daemon left, the next start replaces it.
"""

from __future__ import annotations

import ctypes
import errno
import ipaddress
import json
import os
import socket
import threading
from typing import Any, Iterable, Sequence

import attrs

from ross.errors import FailedPrecondition, ResourceExhausted


# The comment on the drop rules of Ross's tables: they drop only traffic of
# that daemon's bridges, so another daemon's firewall survey
# (ross.engine.network.firewall) does not count them as a host firewall.
OWN = "ross:own"
# The family of Ross's tables; before IPv6, "ip", whose tables a start
# replaces.
FAMILY = "inet"
_OLD_FAMILY = "ip"


@attrs.frozen
class BridgeRules:
    """
    A network's bridge and subnets as the table needs them (C{subnet6}
    empty: IPv4 only); C{internal}: nothing forwarded beyond the bridge,
    nothing masqueraded.
    """

    bridge: str
    subnet: str
    internal: bool = False
    subnet6: str = ""


@attrs.frozen
class Forward:
    """
    A published port: C{proto} traffic to C{host_ip} port C{host_port}
    goes to C{address}:C{port}. C{host_ip} is an address of the host, or
    "" (or 0.0.0.0, ::) for any of the host's addresses of C{address}'s
    family.
    """

    proto: str
    host_ip: str
    host_port: int
    address: str
    port: int

    @property
    def ipv6(self) -> bool:
        return ipaddress.ip_address(self.address).version == 6


def _forward_rule(f: Forward) -> str:
    if f.ipv6:
        family, target = "ip6", f"[{f.address}]:{f.port}"
        match = f"ip6 daddr {f.host_ip} " if f.host_ip and f.host_ip != "::" else "meta nfproto ipv6 "
    else:
        family, target = "ip", f"{f.address}:{f.port}"
        match = f"ip daddr {f.host_ip} " if f.host_ip and f.host_ip != "0.0.0.0" else "meta nfproto ipv4 "
    return f"{match}{f.proto} dport {f.host_port} dnat {family} to {target}"


def render(table: str, bridges: Sequence[BridgeRules], forwards: Iterable[Forward], loopback6: bool = True) -> str:
    """
    The nft script that replaces table C{table} with these rules.
    C{loopback6}: publish on [::1] too; without it, connections to [::1]
    reach the host's own sockets (the daemon's, which answers them).
    """
    lines = [
        f"table {FAMILY} {table} {{",
        "  chain prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    fib daddr type local jump publish",
        "  }",
        "  chain output {",
        "    type nat hook output priority -100; policy accept;",
        "    fib daddr type local jump publish",
        "  }",
        "  chain publish {",
    ]
    if not loopback6:
        lines.append("    ip6 daddr ::1 return")
    lines += [f"    {_forward_rule(f)}" for f in forwards]
    lines += [
        "  }",
        "  chain postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
    ]
    for b in bridges:
        if b.internal:
            continue
        lines.append(f'    ip saddr {b.subnet} oifname != "{b.bridge}" masquerade')
        lines.append(f'    oifname "{b.bridge}" ct status dnat ip saddr {{ 127.0.0.0/8, {b.subnet} }} masquerade')
        if b.subnet6:
            lines.append(f'    ip6 saddr {b.subnet6} oifname != "{b.bridge}" masquerade')
            lines.append(f'    oifname "{b.bridge}" ct status dnat ip6 saddr {{ ::1, {b.subnet6} }} masquerade')
    lines += [
        "  }",
        "  chain forward {",
        "    type filter hook forward priority filter; policy accept;",
    ]
    for b in bridges:
        if b.internal:
            lines.append(f'    iifname "{b.bridge}" oifname != "{b.bridge}" drop comment "{OWN}"')
            lines.append(f'    oifname "{b.bridge}" iifname != "{b.bridge}" drop comment "{OWN}"')
    if len(bridges) > 1:
        names = ", ".join(f'"{b.bridge}"' for b in bridges)
        lines.append("    ct status dnat accept")
        for b in bridges:
            lines.append(f'    iifname "{b.bridge}" oifname != "{b.bridge}" oifname {{ {names} }} drop comment "{OWN}"')
    lines += [
        "  }",
        "  chain input {",
        "    type filter hook input priority filter; policy accept;",
    ]
    if bridges:
        names = ", ".join(f'"{b.bridge}"' for b in bridges)
        # Accept-then-drop rather than one "not dnat" match: a packet
        # conntrack did not track (invalid, notrack) has no status to
        # compare and would slip past a negated match.
        for loopback in ("ip daddr 127.0.0.0/8", "ip6 daddr ::1"):
            lines.append(f"    iifname {{ {names} }} {loopback} ct status dnat accept")
            lines.append(f'    iifname {{ {names} }} {loopback} drop comment "{OWN}"')
    lines += ["  }", "}"]
    # Declaring a table first makes its delete valid when it is absent: the
    # commands are one transaction. A table of the old family goes too.
    return _delete(table) + "\n".join(lines) + "\n"


def _delete(table: str) -> str:
    return "".join(f"add table {family} {table}\ndelete table {family} {table}\n"
                   for family in (_OLD_FAMILY, FAMILY))


class _Nft:
    """
    libnftables, loaded once; one context per call (a context is not
    thread-safe) and one call at a time (the table is replaced whole).
    """

    #: File descriptors held back for libnftables: it calls exit() when it
    #: cannot open its netlink socket, which would end the daemon when a
    #: flood of clients has taken every descriptor.
    RESERVE = 8

    def __init__(self) -> None:
        self._lib: ctypes.CDLL | None = None
        self._lock = threading.Lock()
        self._reserve: list[int] = []

    def _room(self) -> None:
        """
        Make sure libnftables can open its socket (the lock held): give
        back the reserved descriptors, then try a netlink socket of the
        same kind; without one, a clean error instead of libnftables'
        exit().
        """
        for fd in self._reserve:
            os.close(fd)
        self._reserve = []
        try:
            probe = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_NETFILTER)
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE):
                raise ResourceExhausted("nftables: the daemon has too many open files; try again later") from None
            raise
        probe.close()

    def _hold_reserve(self) -> None:
        try:
            while len(self._reserve) < self.RESERVE:
                self._reserve.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        except OSError:
            pass

    def _load(self) -> ctypes.CDLL:
        if self._lib is None:
            try:
                lib = ctypes.CDLL("libnftables.so.1")
            except OSError as e:
                raise FailedPrecondition(f"nftables is not available (libnftables.so.1): {e}") from None
            lib.nft_ctx_new.restype = ctypes.c_void_p
            lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
            lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_output.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_buffer_error.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_error_buffer.restype = ctypes.c_char_p
            lib.nft_ctx_get_output_buffer.argtypes = [ctypes.c_void_p]
            lib.nft_ctx_get_output_buffer.restype = ctypes.c_char_p
            lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
            lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
            self._lib = lib
        return self._lib

    def run(self, script: str, in_json: bool = False) -> str:
        """
        Run C{script} (nft syntax, or with C{in_json} libnftables' JSON, which
        also makes the output JSON with rule handles) in one transaction.
        """
        lib = self._load()
        with self._lock:
            self._room()
            ctx = lib.nft_ctx_new(0)
            try:
                if in_json:
                    lib.nft_ctx_output_set_flags(ctx, _OUTPUT_HANDLE | _OUTPUT_JSON)
                lib.nft_ctx_buffer_output(ctx)
                lib.nft_ctx_buffer_error(ctx)
                rc = lib.nft_run_cmd_from_buffer(ctx, script.encode())
                if rc != 0:
                    error = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace").strip()
                    raise FailedPrecondition(f"nftables refused Ross's rules: {error}")
                return (lib.nft_ctx_get_output_buffer(ctx) or b"").decode(errors="replace")
            finally:
                lib.nft_ctx_free(ctx)
                self._hold_reserve()


_NETLINK_NETFILTER = 12

# libnftables' output flags (nftables/libnftables.h).
_OUTPUT_HANDLE = 1 << 3
_OUTPUT_JSON = 1 << 4

_nft = _Nft()


def run_json(commands: list[dict[str, Any]]) -> dict[str, Any]:
    """
    Run libnftables JSON C{commands} (e.g. C{[{"list": {"ruleset": None}}]})
    in one transaction; the parsed output ({} when there is none)
    (blocking). Unlike nft syntax, JSON names any table or chain another
    program made, whatever its characters.
    """
    out = _nft.run(json.dumps({"nftables": commands}), in_json=True)
    return dict(json.loads(out)) if out.strip() else {}


def replace_table(table: str, bridges: Sequence[BridgeRules], forwards: Iterable[Forward],
                  loopback6: bool = True) -> None:
    """
    Replace table C{table} with L{render}'s rules, atomically (blocking).
    """
    _nft.run(render(table, bridges, forwards, loopback6))


def delete_table(table: str) -> None:
    """
    Remove table C{table} if it exists (blocking).
    """
    _nft.run(_delete(table))


def tables() -> list[str]:
    """
    The names of the host's nftables tables, "family name" (blocking).
    """
    out = _nft.run("list tables")
    return [line.split(None, 1)[1] for line in out.splitlines() if line.startswith("table ")]
