"""
No test can hang: every blocking wait in the tests and their harnesses
(ross/test, ross/testing) has a bound.

A Deferred a test awaits is bounded by trial's timeout, but trial cannot
stop a thread, nor a reactor thread stuck in a blocking call; a wait there
without a timeout can hang the whole run at its end. So, read from the
source: a blocking call without arguments (C{wait()}, C{join()},
C{communicate()}, C{get()}, C{acquire()}, C{accept()}) or a C{subprocess}
call without C{timeout=} is refused unless it is awaited (a Deferred) or
its line says C{# bounded: why} (a socket given a timeout elsewhere, say).
gRPC calls are bounded where the channels are made
(L{ross.testing.daemon.bounded}).
"""

from __future__ import annotations

import ast
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

import ross

BLOCKING = frozenset({"wait", "join", "communicate", "get", "acquire", "accept"})
SUBPROCESS = frozenset({"run", "call", "check_call", "check_output"})
ROOTS = ("test", "testing")


def unbounded_waits(source: str) -> list[tuple[int, str]]:
    """
    The lines of C{source} with a wait that has no bound.
    """
    tree = ast.parse(source)
    awaited = {id(node.value) for node in ast.walk(tree)
               if isinstance(node, (ast.Await, ast.Yield, ast.YieldFrom)) and isinstance(node.value, ast.Call)}
    lines = source.splitlines()
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or id(node) in awaited or not isinstance(node.func, ast.Attribute):
            continue
        line = lines[node.lineno - 1]
        if "# bounded:" in line or any(k.arg == "timeout" for k in node.keywords):
            continue
        name = node.func.attr
        target = node.func.value
        if name in BLOCKING and not node.args:
            found.append((node.lineno, line.strip()))
        elif name in SUBPROCESS and isinstance(target, ast.Name) and target.id == "subprocess":
            found.append((node.lineno, line.strip()))
    return found


class BoundedWaitTests(SynchronousTestCase):
    def test_rules(self) -> None:
        """
        The check finds what it should and lets the bounded pass.
        """
        source = "\n".join([
            "p.wait()",
            "p.wait(30)",
            "t.join(timeout=5)",
            "subprocess.run(['true'])",
            "subprocess.run(['true'], timeout=9)",
            "async def f():\n    await handle.wait()",
            "s.accept()  # bounded: settimeout above",
            "q.get()",
            "', '.join(x)",
        ])
        self.assertEqual([n for n, _ in unbounded_waits(source)], [1, 4, 9])

    def test_tests_and_harnesses(self) -> None:
        """
        Nothing in ross/test or ross/testing waits without a bound.
        """
        package = Path(ross.__file__).parent
        found = []
        for root in ROOTS:
            for path in sorted((package / root).rglob("*.py")):
                for number, line in unbounded_waits(path.read_text()):
                    found.append(f"{path.relative_to(package.parent)}:{number}: {line}")
        self.assertEqual(found, [], "\n".join(found))
