# -*- test-case-name: ross.test.test_containers_config,ross.test.test_runtime_spec -*-
"""
A container's /etc/hosts and /etc/resolv.conf: the one place their text is
composed, and the host's resolv.conf read and parsed.

The standard library only: the shim (L{ross.engine.runtime.container})
derives a container's resolv.conf from the host's with it.
"""

from __future__ import annotations

from typing import Iterable, Sequence

#: What --add-host NAME:host-gateway names: the host's address on the
#: default bridge, as docker.
HOST_GATEWAY = "host-gateway"

#: docker's public name servers, for a container whose host has none it
#: can reach.
_FALLBACK_SERVERS = ("nameserver 8.8.8.8", "nameserver 8.8.4.4")


def host_names(hostname: str, domainname: str = "") -> str:
    """
    The names /etc/hosts gives a container's own addresses: its fully
    qualified name first when it has a domain (--domainname), as docker's.
    """
    return f"{hostname}.{domainname}\t{hostname}" if domainname else hostname


def hosts_file(hostname: str, addresses: Iterable[str] = ("127.0.1.1",), extra_hosts: Iterable[str] = (),
               host_gateway: str = "") -> str:
    """
    docker's /etc/hosts for a container: the usual entries, the --add-host
    lines ("NAME:ADDRESS", "host-gateway" standing for C{host_gateway}),
    then its C{addresses} with its hostname (or L{host_names}).
    """
    lines = [
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "ff00::0\tip6-mcastprefix",
        "ff02::1\tip6-allnodes",
        "ff02::2\tip6-allrouters",
    ]
    lines += _extra_host_lines(extra_hosts, host_gateway)
    lines += [f"{address}\t{hostname}" for address in addresses]
    return "\n".join(lines) + "\n"


def hosts_of_host(host_content: str, extra_hosts: Iterable[str] = (), host_gateway: str = "") -> str:
    """
    docker's /etc/hosts for a container on the host's network: the host's
    own (C{host_content}, as read), then the --add-host lines.
    """
    lines = host_content.splitlines() + _extra_host_lines(extra_hosts, host_gateway)
    return "\n".join(lines) + "\n"


def _extra_host_lines(extra_hosts: Iterable[str], host_gateway: str) -> list[str]:
    """
    The /etc/hosts lines of the --add-host entries ("NAME:ADDRESS",
    "host-gateway" standing for C{host_gateway}).
    """
    return [f"{host_gateway if ip == HOST_GATEWAY else ip}\t{name}"
            for name, _, ip in (e.partition(":") for e in extra_hosts)]


def _read_host(path: str) -> str:
    """
    The host's file at C{path}, "" when it cannot be read. It blocks: the
    daemon calls it in a pool thread.
    """
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def read_host_hosts() -> str:
    """The host's /etc/hosts (L{_read_host})."""
    return _read_host("/etc/hosts")


def read_host_resolv() -> str:
    """The host's /etc/resolv.conf (L{_read_host})."""
    return _read_host("/etc/resolv.conf")


def _keyword(line: str) -> str:
    """
    The keyword a resolv.conf line starts with ("" for a blank line).
    """
    fields = line.split()
    return fields[0] if fields else ""


def resolv_conf_for(host_content: str, network: str) -> str:
    """
    The container's resolv.conf from the host's: as it is with the host's
    network, else without loopback name servers (unreachable from another
    namespace), and docker's public fallbacks when none is left.
    """
    if network == "host":
        return host_content
    lines = []
    servers = 0
    for line in host_content.splitlines():
        fields = line.split()
        if fields[:1] == ["nameserver"] and len(fields) > 1:
            if fields[1].startswith("127.") or fields[1] == "::1":
                continue
            servers += 1
        lines.append(line)
    if not servers:
        lines += _FALLBACK_SERVERS
    return "\n".join(lines) + "\n"


def resolv_via(server: str, host_content: str) -> str:
    """
    resolv.conf naming C{server} (a network's DNS), with the search domains
    and options of C{host_content} (the host's).
    """
    lines = [f"nameserver {server}"]
    lines += [line.strip() for line in host_content.splitlines() if _keyword(line) in ("search", "options")]
    return "\n".join(lines) + "\n"


def resolv_conf(dns: Sequence[str], search: Sequence[str] = (), options: Sequence[str] = (),
                base: str | None = None, network: str = "bridge", host: str = "") -> str | None:
    """
    /etc/resolv.conf from C{base} (a network's, or when None the host's as
    a container on C{network} gets it, from C{host}: the host's
    resolv.conf as read already) with the --dns servers, --dns-search
    domains ("." for none) and --dns-option options in place of its own;
    None, with none of them and no base, lets the runtime derive it from
    the host's.
    """
    if base is None:
        if not (dns or search or options):
            return None
        base = resolv_conf_for(host, network)
    kept: dict[str, list[str]] = {"nameserver": [], "search": [], "options": []}
    for line in base.splitlines():
        key = "search" if _keyword(line) == "domain" else _keyword(line)
        if key in kept:
            kept[key].append(line.strip())
    lines = [f"nameserver {server}" for server in dns] or kept["nameserver"]
    if search:
        lines += [f"search {' '.join(search)}"] if list(search) != ["."] else []
    else:
        lines += kept["search"]
    lines += [f"options {' '.join(options)}"] if options else kept["options"]
    return "\n".join(lines) + "\n"
