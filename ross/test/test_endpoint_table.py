"""
Tests for L{ross.engine.network.store.EndpointTable}: the endpoints with
their index by container.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from ross.engine.network.store import EndpointTable
from ross.test.test_network_names import DB, WEB, endpoint


class EndpointTableTests(SynchronousTestCase):
    def test_index_follows_changes(self) -> None:
        """
        A container's endpoints are those set for it, without those popped
        or deleted; a replaced endpoint is found as it is now.
        """
        table = EndpointTable()
        front, back, db = endpoint("front", WEB, "10.99.0.2"), endpoint("back", WEB, "10.98.0.2"), \
            endpoint("back", DB, "10.98.0.3")
        for e in (front, back, db):
            table[(e.network_id, e.container_id)] = e
        self.assertEqual(sorted(e.network_id for e in table.of(WEB)), ["back", "front"])
        moved = endpoint("front", WEB, "10.99.0.9")
        table[("front", WEB)] = moved
        self.assertIn(moved, table.of(WEB))
        self.assertNotIn(front, table.of(WEB))
        self.assertIs(table.pop(("front", WEB)), moved)
        self.assertEqual(table.pop(("front", WEB), None), None)
        del table[("back", WEB)]
        self.assertEqual((table.of(WEB), table.of(DB)), ([], [db]))
        self.assertEqual(table, {("back", DB): db})
        table.clear()
        self.assertEqual((table, table.of(DB)), ({}, []))

    def test_bulk_changes_refused(self) -> None:
        """
        Changes that would pass by the index are refused.
        """
        table = EndpointTable()
        e = endpoint("front", WEB, "10.99.0.2")
        self.assertRaises(TypeError, table.update, {("front", WEB): e})
        self.assertRaises(TypeError, table.setdefault, ("front", WEB), e)
        self.assertEqual((table, table.of(WEB)), ({}, []))
