# -*- test-case-name: ross.test.integration.test_firewall -*-
"""
Ross's openings in the chains of other firewall managers.

Every netfilter base chain decides on its own: a packet Ross's table
accepts is still dropped by dockerd's iptables FORWARD policy (DROP), by a
firewalld or hand-written nftables chain that drops, and, with br_netfilter
loaded, even between two containers of one bridge. So where such a chain
exists Ross puts accept rules into it, every one naming one of Ross's own
bridges:

  forward: to a bridge of Ross's, answers (established, related) and
    connections to published ports (DNATed); from it, traffic to the same
    bridge or out of the host: to any link but another bridge (unless that
    bridge carries a default route), so the host's rules still decide
    whether Ross's containers reach other managers' bridges (docker's,
    libvirt's);
  input: from a bridge of Ross's, queries to its network's DNS server (on
    the gateway), answers of published ports reached from the host, and
    on a network with IPv6 the neighbour discovery its containers need to
    reach their gateway (conntrack does not track it: a chain that drops
    what is not established would drop it).

Nothing else is accepted and no policy is changed.

Where the rules go:
  - iptables and ip6tables (legacy and nft): chains ROSS-FWD-<table> and
    ROSS-IN-<table> of the filter table, jumped to first from FORWARD and
    INPUT by a rule whose comment holds a digest of them; ip6tables get the
    rules of the networks with IPv6;
  - nftables chains of other programs (firewalld, nftables.conf; families
    ip, ip6 and inet): the rules themselves, first in the chain, commented
    "ross:<table>:<digest>".
Only chains that can drop get them (a drop policy, or a drop or reject rule
in the chain or one it jumps to): on a bare host Ross touches nothing but
its own table. L{sync} is idempotent and cheap when nothing changed: the
daemon calls it after every change of its networks and every few seconds,
putting back what another manager's rebuild removed (dockerd restarting,
firewalld reloading, iptables-restore).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from typing import Any, Iterable, Sequence

import attrs

from ross.engine.network import netlink, nft

# The xtables front ends Ross looks for, by backend: their nftables family
# (iptables-nft) and their /proc list of tables (legacy).
IPTABLES_BACKENDS = {"iptables-nft": "ip", "ip6tables-nft": "ip6",
                     "iptables-legacy": "ip_tables_names", "ip6tables-legacy": "ip6_tables_names"}
# The chains iptables-nft makes in its nftables tables: a table holding one
# is iptables-nft's, edited only through iptables-nft.
_IPTABLES_CHAINS = ("INPUT", "FORWARD", "OUTPUT", "PREROUTING", "POSTROUTING")
_HOOKS = {"forward": "FORWARD", "input": "INPUT"}
_CHAIN_PREFIX = {"forward": "ROSS-FWD", "input": "ROSS-IN"}
# iptables chain names are at most 28 characters.
_MAX_CHAIN = 28
# Interface names iptables-restore takes without quoting.
_PLAIN_NAME = re.compile(r"[A-Za-z0-9_.@+-]{1,15}")
# Neighbour discovery, as nftables and ip6tables name it.
_NEIGHBOUR_DISCOVERY = {"nd-neighbor-solicit": "neighbour-solicitation",
                        "nd-neighbor-advert": "neighbour-advertisement"}
_TIMEOUT = 30


@attrs.frozen
class Opening:
    """
    One of Ross's networks as the host's chains must let it through.

    @ivar dns: the address its embedded DNS server answers on (empty: none).
    @ivar internal: only traffic within the bridge (and DNS) goes through.
    @ivar ipv6: the network has IPv6.
    """

    bridge: str
    dns: str = ""
    internal: bool = False
    ipv6: bool = False


@attrs.frozen
class ForeignChain:
    """
    A filter chain of another manager that can drop Ross's traffic.
    """

    backend: str
    table: str
    chain: str
    policy: str

    def __str__(self) -> str:
        return f"{self.backend} {self.table} {self.chain} (policy {self.policy})"


@attrs.frozen
class Survey:
    """
    What L{sync} found and did.

    @ivar backends: the firewall backends found besides Ross's own table
        ("iptables-nft", "iptables-legacy", "nftables <family> <table>").
    @ivar chains: the chains that can drop Ross's traffic (holding Ross's
        rules while it has networks).
    @ivar changed: those whose Ross rules this call (re)wrote or removed.
    @ivar problems: what could not be done, for the log and C{ross info}.
    """

    backends: tuple[str, ...] = ()
    chains: tuple[ForeignChain, ...] = ()
    changed: tuple[ForeignChain, ...] = ()
    problems: tuple[str, ...] = ()


@attrs.frozen
class _Rule:
    """
    An accept rule, rendered for iptables and for nftables.

    @ivar family: "ip" for IPv4's chains only, "ip6" for IPv6's, "" for
        both.
    @ivar not_to: the links the rule does not apply to as output.
    @ivar icmpv6: an ICMPv6 type (nftables' name).
    """

    family: str = ""
    iif: str = ""
    oif: str = ""
    not_to: tuple[str, ...] = ()
    daddr: str = ""
    proto: str = ""
    dport: int = 0
    ct_state: tuple[str, ...] = ()
    dnat: bool = False
    icmpv6: str = ""


def rules(openings: Sequence[Opening], bridges: Iterable[str], uplinks: Iterable[str]) -> dict[str, list[_Rule]]:
    """
    The accept rules for C{openings} by hook ("forward", "input"), given the
    host's bridges and the links of its default routes.
    """
    others = set(bridges) - set(uplinks)
    outside = [o for o in openings if not o.internal]

    def both(o: Opening) -> str:
        return "" if o.ipv6 else "ip"

    forward = [_Rule(both(o), oif=o.bridge, ct_state=("established", "related")) for o in outside]
    forward += [_Rule(both(o), oif=o.bridge, dnat=True) for o in outside]
    forward += [_Rule(both(o), iif=o.bridge, not_to=tuple(sorted(others - {o.bridge}))) for o in outside]
    forward += [_Rule(both(o), iif=o.bridge, oif=o.bridge) for o in openings if o.internal]
    incoming = [_Rule("ip", iif=o.bridge, daddr=o.dns, proto=proto, dport=53)
                for o in openings if o.dns for proto in ("udp", "tcp")]
    incoming += [_Rule(both(o), iif=o.bridge, dnat=True) for o in openings]
    incoming += [_Rule("ip6", iif=o.bridge, icmpv6=kind) for o in openings if o.ipv6 for kind in _NEIGHBOUR_DISCOVERY]
    return {"forward": forward, "input": incoming}


def of_family(wanted: dict[str, list[_Rule]], family: str) -> dict[str, list[_Rule]]:
    """
    The rules of C{wanted} that belong in chains of nftables C{family}
    ("ip", "ip6", or "inet" for all).
    """
    return {hook: [r for r in found if family == "inet" or r.family in ("", family)] for hook, found in wanted.items()}


def _digest(rules: list[_Rule]) -> str:
    return hashlib.sha256(json.dumps([attrs.asdict(r) for r in rules]).encode()).hexdigest()[:12]


def iptables_chain(table: str, hook: str) -> str:
    """
    The iptables chain holding the rules of Ross's table C{table} for
    C{hook}.
    """
    name = f"{_CHAIN_PREFIX[hook]}-{table}"
    if len(name) > _MAX_CHAIN:
        name = f"{_CHAIN_PREFIX[hook]}-{hashlib.sha256(table.encode()).hexdigest()[:12]}"
    return name


def iptables_lines(chain: str, rule: _Rule) -> list[str]:
    """
    iptables-restore lines appending C{rule} to C{chain}: the excluded
    outputs return to the caller's chain first.
    """
    match = []
    if rule.iif:
        match += ["-i", rule.iif]
    if rule.oif:
        match += ["-o", rule.oif]
    if rule.daddr:
        match += ["-d", f"{rule.daddr}/32"]
    if rule.proto:
        match += ["-p", rule.proto, "-m", rule.proto, "--dport", str(rule.dport)]
    if rule.icmpv6:
        match += ["-p", "ipv6-icmp", "-m", "icmp6", "--icmpv6-type", _NEIGHBOUR_DISCOVERY[rule.icmpv6]]
    states = [s.upper() for s in rule.ct_state] + (["DNAT"] if rule.dnat else [])
    if states:
        match += ["-m", "conntrack", "--ctstate", ",".join(states)]
    head = " ".join(["-A", chain, *match])
    skip = [f"{head} -o {name} -j RETURN" for name in rule.not_to if _PLAIN_NAME.fullmatch(name)]
    return skip + [f"{head} -j ACCEPT"]


def nft_expr(rule: _Rule) -> list[dict[str, Any]]:
    """
    C{rule} as libnftables JSON statements.
    """
    expr: list[dict[str, Any]] = []

    def match(left: dict[str, Any], right: Any, op: str = "==") -> None:
        expr.append({"match": {"op": op, "left": left, "right": right}})

    if rule.iif:
        match({"meta": {"key": "iifname"}}, rule.iif)
    if rule.oif:
        match({"meta": {"key": "oifname"}}, rule.oif)
    if rule.not_to:
        match({"meta": {"key": "oifname"}}, {"set": list(rule.not_to)}, "!=")
    if rule.daddr:
        match({"payload": {"protocol": "ip", "field": "daddr"}}, rule.daddr)
    if rule.proto:
        match({"payload": {"protocol": rule.proto, "field": "dport"}}, rule.dport)
    if rule.icmpv6:
        match({"payload": {"protocol": "icmpv6", "field": "type"}}, rule.icmpv6)
    if rule.ct_state:
        match({"ct": {"key": "state"}}, list(rule.ct_state), "in")
    if rule.dnat:
        match({"ct": {"key": "status"}}, "dnat", "in")
    expr.append({"accept": None})
    return expr


def sync(table: str, openings: Sequence[Opening]) -> Survey:
    """
    Make every chain of another firewall manager that can drop hold exactly
    the accept rules for C{openings} of the daemon whose nftables table is
    C{table}, and nothing of Ross's when C{openings} is empty (blocking).
    """
    bridges, uplinks = netlink.bridges_and_uplinks()
    wanted = rules(openings, bridges, uplinks)
    ruleset = nft.run_json([{"list": {"ruleset": None}}]).get("nftables", [])
    survey = Survey()
    for backend, where in IPTABLES_BACKENDS.items():
        family = "ip6" if backend.startswith("ip6") else "ip"
        if backend.endswith("-nft"):
            found = any("chain" in item and item["chain"]["family"] == where and item["chain"]["table"] == "filter"
                        and item["chain"]["name"] in _IPTABLES_CHAINS for item in ruleset)
        else:
            found = legacy_filter_loaded(where)
        if found:
            survey = _merge(survey, _sync_iptables(backend, table, of_family(wanted, family)))
    return _merge(survey, _sync_nftables(ruleset, table, wanted))


def _merge(a: Survey, b: Survey) -> Survey:
    return Survey(a.backends + b.backends, a.chains + b.chains, a.changed + b.changed, a.problems + b.problems)


def legacy_filter_loaded(names: str = "ip_tables_names") -> bool:
    """
    Whether iptables-legacy's filter table exists (ip6tables-legacy's with
    C{names} "ip6_tables_names"), read, not listed with iptables-legacy:
    listing would make it.
    """
    try:
        with open(f"/proc/net/{names}") as f:
            return "filter" in f.read().split()
    except OSError:
        return False


def _run(argv: list[str], script: str | None = None) -> str:
    result = subprocess.run(argv, input=script, capture_output=True, text=True, timeout=_TIMEOUT)
    if result.returncode != 0:
        raise OSError(f"{' '.join(argv)}: {result.stderr.strip() or f'exit status {result.returncode}'}")
    return result.stdout


def _sync_iptables(backend: str, table: str, wanted: dict[str, list[_Rule]]) -> Survey:
    if shutil.which(f"{backend}-save") is None or shutil.which(f"{backend}-restore") is None:
        return Survey(backends=(backend,), problems=(f"{backend} is in use but {backend}-save/-restore are missing",))
    try:
        saved = _run([f"{backend}-save", "-t", "filter"])
    except (OSError, subprocess.TimeoutExpired) as e:
        return Survey(backends=(backend,), problems=(str(e),))
    policies: dict[str, str] = {}
    lines: list[str] = []
    for line in saved.splitlines():
        if line.startswith(":"):
            name, policy = line[1:].split()[:2]
            policies[name] = policy
        elif line.startswith("-A "):
            lines.append(line)
    script: list[str] = []
    chains, changed = [], []
    for hook, base in _HOOKS.items():
        mine = iptables_chain(table, hook)
        if base not in policies:
            continue
        ours = [line for line in lines if line.startswith(f"-A {mine} ")]
        jumps = [line for line in lines if line.startswith(f"-A {base} ") and line.endswith(f" -j {mine}")]
        foreign = ForeignChain(backend, "filter", base, policies[base].lower())
        can_drop = _iptables_can_drop(base, policies, [line for line in lines if line not in ours])
        if can_drop:
            chains.append(foreign)
        needed = can_drop and bool(wanted[hook])
        desired = [line for rule in wanted[hook] for line in iptables_lines(mine, rule)] if needed else []
        jump = f'{base} -m comment --comment "ross:{_digest(wanted[hook])}" -j {mine}'
        if needed and jumps == [f"-A {jump}"] and len(ours) == len(desired):
            continue
        if not needed and not jumps and mine not in policies:
            continue
        changed.append(foreign)
        script += ["-D" + line[2:] for line in jumps]
        if needed:
            script += [f":{mine} - [0:0]", *desired, f"-I {jump.replace(base, f'{base} 1', 1)}"]
        else:
            script += [f"-F {mine}", f"-X {mine}"] if mine in policies else []
    problems: tuple[str, ...] = ()
    if script:
        try:
            _run([f"{backend}-restore", "--noflush", "-w", str(_TIMEOUT)],
                 "*filter\n" + "\n".join(script) + "\nCOMMIT\n")
        except (OSError, subprocess.TimeoutExpired) as e:
            problems = (str(e),)
            changed = []
    return Survey((backend,), tuple(chains), tuple(changed), problems)


def _iptables_can_drop(base: str, policies: dict[str, str], lines: list[str]) -> bool:
    """
    Whether chain C{base} drops anything: its policy, or a DROP or REJECT
    in it or in a chain it jumps to.
    """
    if policies.get(base) == "DROP":
        return True
    seen, todo = set(), [base]
    while todo:
        chain = todo.pop()
        if chain in seen:
            continue
        seen.add(chain)
        for line in lines:
            if not line.startswith(f"-A {chain} "):
                continue
            words = line.split()
            for flag in ("-j", "-g"):
                if flag in words[:-1]:
                    target = words[words.index(flag) + 1]
                    if target in ("DROP", "REJECT"):
                        return True
                    if target in policies:
                        todo.append(target)
    return False


def _sync_nftables(ruleset: list[dict[str, Any]], table: str, wanted: dict[str, list[_Rule]]) -> Survey:
    """
    Ross's rules in the filter base chains of nftables tables neither Ross's
    nor iptables-nft's.
    """
    chains: dict[tuple[str, str, str], dict[str, Any]] = {}
    rules_of: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    iptables_tables = set()
    ross_tables = {(nft.FAMILY, table), ("ip", table)}
    for item in ruleset:
        if "chain" in item:
            c = item["chain"]
            key = (c["family"], c["table"], c["name"])
            chains[key] = c
            rules_of.setdefault(key, [])
            if c["name"] in _IPTABLES_CHAINS and c["family"] in ("ip", "ip6"):
                iptables_tables.add((c["family"], c["table"]))
        elif "rule" in item:
            r = item["rule"]
            rules_of.setdefault((r["family"], r["table"], r["chain"]), []).append(r)
            if r.get("comment") == nft.OWN:
                ross_tables.add((r["family"], r["table"]))
    backends = sorted({f"nftables {f} {t}" for f, t, _ in chains if (f, t) not in iptables_tables | ross_tables})
    commands: list[dict[str, Any]] = []
    found, changed = [], []
    tag = f"ross:{table}:"
    for key, c in sorted(chains.items()):
        family, table_name, name = key
        hook = c.get("hook")
        if (c.get("type") != "filter" or hook not in _HOOKS or family not in ("ip", "ip6", "inet")
                or (family, table_name) in iptables_tables | ross_tables):
            continue
        ours = [r for r in rules_of[key] if str(r.get("comment", "")).startswith(tag)]
        others = [r for r in rules_of[key] if r not in ours]
        foreign = ForeignChain("nftables", f"{family} {table_name}", name, c.get("policy", "accept"))
        can_drop = c.get("policy") == "drop" or _nft_can_drop(family, table_name, others, rules_of)
        if can_drop:
            found.append(foreign)
        mine = of_family(wanted, family)[hook]
        needed = can_drop and bool(mine)
        comment = tag + _digest(mine)
        if needed and len(ours) == len(mine) and all(r.get("comment") == comment for r in ours):
            continue
        if not needed and not ours:
            continue
        changed.append(foreign)
        commands += [{"delete": {"rule": {"family": family, "table": table_name, "chain": name,
                                          "handle": r["handle"]}}} for r in ours]
        if needed:
            # Each insert goes first: in reverse, they end in order.
            commands += [{"insert": {"rule": {"family": family, "table": table_name, "chain": name,
                                              "expr": nft_expr(rule), "comment": comment}}}
                         for rule in reversed(mine)]
    problems: tuple[str, ...] = ()
    if commands:
        try:
            nft.run_json(commands)
        except Exception as e:
            problems = (str(e),)
            changed = []
    return Survey(tuple(backends), tuple(found), tuple(changed), problems)


def _nft_can_drop(family: str, table: str, rules: list[dict[str, Any]],
                  rules_of: dict[tuple[str, str, str], list[dict[str, Any]]]) -> bool:
    """
    Whether C{rules} (of a chain of C{family} C{table}) drop or reject
    anything, themselves or in a chain they jump to.
    """
    seen: set[str] = set()
    todo = list(rules)
    while todo:
        rule = todo.pop()
        for statement in rule.get("expr", []):
            if "drop" in statement or "reject" in statement:
                return True
            for verdict in ("jump", "goto"):
                if verdict in statement:
                    target = statement[verdict].get("target", "")
                    if target not in seen:
                        seen.add(target)
                        todo += rules_of.get((family, table, target), [])
    return False
