# -*- test-case-name: ross.test.test_container_lifecycle,ross.test.test_daemon -*-
"""
What the engine's other pieces ask of the container records: which
containers use a volume or an image, a container's names and labels.

The volume and image stores, the network manager and the event bus are
built before the container manager, which needs them; they are given a
L{ContainerQueries} over the records dict the manager is then given, so
nothing is wired by setting an attribute once the manager exists.
"""

from __future__ import annotations

from typing import Mapping

from ross.engine.containers.store import ContainerRecord
from ross.engine.images.catalog import ImageUser


class ContainerQueries:
    """
    Answers from C{records} (container ID -> record: the container
    manager's, read only), as they are when asked.
    """

    def __init__(self, records: Mapping[str, ContainerRecord]) -> None:
        self._records = records

    def volume_users(self, name: str) -> list[str]:
        """
        The IDs of the containers that mount volume C{name}.
        """
        return [r.id for r in self._records.values()
                if any(m.type == "volume" and m.name == name for m in r.mounts)]

    def image_users(self) -> dict[str, list[ImageUser]]:
        """
        Image ID -> containers using it, for the image store.
        """
        users: dict[str, list[ImageUser]] = {}
        for r in self._records.values():
            users.setdefault(r.image_id, []).append(ImageUser(r.id, r.state.running))
        return users

    def names_of(self, cid: str) -> tuple[str, ...]:
        """
        The name of container C{cid}, none when it is unknown.
        """
        record = self._records.get(cid)
        return (record.name,) if record is not None else ()

    def dns_of(self, cid: str) -> tuple[str, ...]:
        """
        The name servers container C{cid} was given (--dns), none when it
        is unknown.
        """
        record = self._records.get(cid)
        return tuple(record.host.dns) if record is not None else ()

    def labels_of(self, cid: str) -> Mapping[str, str]:
        """
        The labels of container C{cid}, none when it is unknown.
        """
        record = self._records.get(cid)
        return record.config.labels if record is not None else {}
