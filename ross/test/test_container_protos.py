"""
Tests for L{ross.services.containers.ContainerProtos}: the kept message of
each listed container.
"""

from __future__ import annotations

import attrs
from twisted.trial.unittest import SynchronousTestCase

from ross.engine.containers.config import ContainerConfig, HostConfig
from ross.engine.containers.manager import ContainerView
from ross.engine.containers.store import ContainerRecord, State
from ross.services.containers import ContainerProtos
from ross.v1 import container_pb2

MINUTE = 60 * 10**9


def view(record: ContainerRecord, exec_ids: tuple[str, ...] = ()) -> ContainerView:
    return ContainerView(record=record, log_path=f"/logs/{record.id}", exec_ids=exec_ids)


class ContainerProtosTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.record = ContainerRecord(
            id="c" * 64, name="web", created_ns=1, image="busybox", image_id="sha256:x",
            config=ContainerConfig(image="busybox", cmd=("sleep", "9"), labels={"tier": "web"}),
            host=HostConfig(), state=State(status="running", pid=7, started_ns=MINUTE))
        self.protos = ContainerProtos()

    def message(self, v: ContainerView, now_ns: int) -> container_pb2.Container:
        return container_pb2.Container.FromString(self.protos.encoded(v, now_ns))

    def test_same_record_same_message(self) -> None:
        """
        The same record gives the same message, whose STATUS text follows
        the clock and whose exec sessions are the view's, not the kept ones.
        """
        first = self.message(view(self.record), 2 * MINUTE)
        again = self.message(view(self.record, exec_ids=("e1",)), 10 * MINUTE)
        self.assertEqual((first.name, first.command, first.config.labels["tier"]), ("web", "sleep 9", "web"))
        self.assertEqual((first.status_text, list(first.exec_ids)), ("Up About a minute", []))
        self.assertEqual((again.status_text, list(again.exec_ids)), ("Up 9 minutes", ["e1"]))
        again.ClearField("status_text")
        again.ClearField("exec_ids")
        first.ClearField("status_text")
        self.assertEqual(first, again)

    def test_changed_record_new_message(self) -> None:
        """
        A new record (the container changed) is converted again.
        """
        self.message(view(self.record), 2 * MINUTE)
        stopped = attrs.evolve(self.record, state=attrs.evolve(self.record.state, status="exited", exit_code=3,
                                                               pid=0, finished_ns=2 * MINUTE))
        m = self.message(view(stopped), 3 * MINUTE)
        self.assertEqual((m.state.status, m.state.exit_code, m.state.pid), (container_pb2.CONTAINER_STATUS_EXITED, 3, 0))
        self.assertEqual(m.status_text, "Exited (3) About a minute ago")

    def test_removed_forgotten(self) -> None:
        """
        Messages of containers no longer there are dropped.
        """
        self.message(view(self.record), 2 * MINUTE)
        self.protos.forget_others({"other": None})
        self.assertEqual(self.protos._built, {})

    def test_listing_bytes(self) -> None:
        """
        A listing joined from the kept bytes is the ListContainersResponse
        protobuf reads, every container with its STATUS text and exec
        sessions.
        """
        from ross.services.containers import _LISTED, _field

        other = attrs.evolve(self.record, id="d" * 64, name="db")
        views = [view(self.record, exec_ids=("e1", "e2")), view(other)]
        answer = b"".join(_field(_LISTED, self.protos.encoded(v, 2 * MINUTE)) for v in views)
        listed = container_pb2.ListContainersResponse.FromString(answer)
        self.assertEqual([(c.name, c.status_text, list(c.exec_ids)) for c in listed.containers],
                         [("web", "Up About a minute", ["e1", "e2"]), ("db", "Up About a minute", [])])
        self.assertEqual(listed.containers[1].config.cmd.values, ["sleep", "9"])
