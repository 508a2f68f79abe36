# -*- test-case-name: ross.test.integration.test_network -*-
"""
Removing everything a daemon's networks put on the host, once the daemon
and its containers are gone: bridges, veth ends, the nftables table, its
accept rules in other firewall managers' chains. For
test fixtures and uninstalls; a running daemon keeps its bridges and rules
across restarts (its containers run on without it).
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from ross.engine import database
from ross.engine.network import firewall, netlink, nft
from ross.engine.network.manager import NetworkConfig


def purge(root: Path, config: NetworkConfig) -> list[str]:
    """
    Delete the links, the table and the firewall rules of the daemon whose
    persistent root is C{root} (blocking); the names of the links deleted.
    """
    names = [config.bridge]
    db_path = root / "networks.db"
    if db_path.exists():
        db = database.connect(db_path)
        try:
            names += [json.loads(r[0])["host_link"] for r in db.execute("SELECT record FROM endpoints")]
            names += [json.loads(r[0])["bridge"] for r in db.execute("SELECT record FROM networks")]
        except sqlite3.OperationalError:
            pass
        finally:
            db.close()
    deleted = [name for name in dict.fromkeys(names) if netlink.delete_link(name)]
    nft.delete_table(config.table)
    firewall.sync(config.table, [])
    return deleted
