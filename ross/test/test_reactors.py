"""
The daemon's reactor is an engine reactor: L{engine_reactor} only names
what Twisted's reactor already provides.
"""

from __future__ import annotations

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase

from ross.engine.reactors import IEngineReactor, engine_reactor


class EngineReactorTests(SynchronousTestCase):
    def test_running_reactor_provides_every_part(self) -> None:
        """
        The reactor the daemon runs provides every interface
        L{IEngineReactor} is made of.
        """
        for part in IEngineReactor.getBases():
            self.assertTrue(part.providedBy(reactor), part.__name__)

    def test_unchanged(self) -> None:
        """
        L{engine_reactor} returns the reactor it is given.
        """
        self.assertIs(engine_reactor(reactor), reactor)
