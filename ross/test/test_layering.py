# -*- test-case-name: ross.test.test_layering -*-
"""
The packages keep the layering the README's architecture section draws:
the engine is the domain and knows no wire, the services adapt the wire
to the engine, and the clients reach the daemon only through the API.

Imports are read from the source (every import statement, those inside
functions too), so a rule holds for code paths the suite never runs; one
test also imports the engine for real and looks at what came with it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from twisted.trial.unittest import SynchronousTestCase

import ross

PACKAGE = Path(ross.__file__).resolve().parent

#: What the engine must not import: the API's wire (grpc, its generated
#: code and the reactor/gRPC bridge), the services that adapt it, and the
#: clients; nor the CRI, whose servicers sit on the engine as the services do.
ENGINE_FORBIDDEN = ("grpc", "ross.v1", "ross.protocols.bridge", "ross.services", "ross.cli", "ross.tui",
                    "ross.client", "ross.cri")
#: The services adapt the API to the engine; no client code runs in the daemon.
SERVICES_FORBIDDEN = ("ross.cli", "ross.tui", "ross.client")
#: The Docker API sits on the engine as the gRPC services do, not on them:
#: no gRPC, generated code, bridge, services or clients.
DOCKERAPI_FORBIDDEN = ("grpc", "ross.v1", "ross.protocols.bridge", "ross.services", "ross.cli", "ross.tui",
                       "ross.client", "ross.cri")
#: The CRI adapts Kubernetes' API to the engine beside the ross.v1 services,
#: not through them: no ross.v1 code, services, Docker API or clients.
CRI_FORBIDDEN = ("ross.v1", "ross.services", "ross.dockerapi", "ross.cli", "ross.tui", "ross.client")
#: The shim and what it imports run in every container's monitor process:
#: the standard library and these modules only (see COMMON: import-cost
#: sensitive), never Twisted, attrs or zope.
SHIM_MODULES = ("ross.engine.runtime.shim", "ross.engine.runtime.container", "ross.engine.runtime.linux",
                "ross.engine.runtime.cgroups", "ross.engine.runtime.logfile", "ross.engine.runtime.userns",
                "ross.engine.etcfiles", "ross.protocols.shimwire")

# ---------------------------------------------------------------- client rules
#: The CLI and the TUI reach the daemon through the API only: neither the
#: engine nor the services; what they share with the engine (image
#: references, platform names) lives in small modules outside it
#: (ross.reference, ross.platforms). CLIENT_RULES maps a package to what it
#: must not import; test_clients checks every entry.
CLIENT_RULES: dict[str, tuple[str, ...]] = {
    "ross.client": ("ross.engine", "ross.services", "ross.cli", "ross.tui"),
    "ross.cli": ("ross.engine", "ross.services", "ross.tui"),
    "ross.tui": ("ross.engine", "ross.services"),
}


def modules_of(package: str) -> Iterator[tuple[str, Path]]:
    """
    (dotted name, path) of every module of C{package} ("ross.engine"),
    itself included when it is a package.
    """
    base = PACKAGE.parent / package.replace(".", "/")
    if base.with_suffix(".py").is_file():
        yield package, base.with_suffix(".py")
        return
    for path in sorted(base.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def imports_of(name: str, path: Path) -> Iterator[tuple[int, str]]:
    """
    (line, imported module) of every import in the module C{name} at
    C{path}; relative imports made absolute, "from X import Y" giving both
    X and X.Y (Y may be a module).
    """
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            yield node.lineno, base
            for alias in node.names:
                yield node.lineno, f"{base}.{alias.name}"


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def violations(package: str, forbidden: tuple[str, ...]) -> list[str]:
    """
    "path:line imports X" for every import in C{package} of a module
    under one of C{forbidden}.
    """
    found = []
    for name, path in modules_of(package):
        for line, imported in imports_of(name, path):
            if any(_within(imported, prefix) for prefix in forbidden):
                found.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {imported}")
    return sorted(set(found))


class ReaderTests(SynchronousTestCase):
    """
    The import reader finds what the rules are checked on.
    """

    def test_every_form(self) -> None:
        """
        Plain, from, relative and function-level imports are all found.
        """
        source = self.mktemp()
        Path(source).mkdir()
        path = Path(source) / "mod.py"
        path.write_text("import grpc\nfrom . import sibling\nfrom ..up import thing\n"
                        "def f():\n    from ross.services import daemon\n")
        found = [m for _, m in imports_of("ross.engine.mod", path)]
        self.assertIn("grpc", found)
        self.assertIn("ross.engine.sibling", found)
        self.assertIn("ross.up.thing", found)
        self.assertIn("ross.services.daemon", found)

    def test_rules_see_the_packages(self) -> None:
        """
        The packages the rules cover hold modules (a moved package must not
        make a rule pass vacuously).
        """
        for package in ("ross.engine", "ross.services", "ross.dockerapi", "ross.cri", *CLIENT_RULES):
            self.assertTrue(list(modules_of(package)), package)


class LayeringTests(SynchronousTestCase):
    def test_engine(self) -> None:
        """
        The engine imports no gRPC, generated API code, services or
        clients: the Docker API and CRI listeners use it as the gRPC
        services do.
        """
        self.assertEqual(violations("ross.engine", ENGINE_FORBIDDEN), [])

    def test_engine_loads_no_grpc(self) -> None:
        """
        Importing the whole engine (its root, which imports every
        subsystem) loads no gRPC, services or client module, through any
        chain of imports.
        """
        probe = ("import sys, ross.engine.engine\n"
                 "print('\\n'.join(sorted(m for m in sys.modules if m == 'grpc' or m.startswith(('grpc.', "
                 "'ross.v1', 'ross.cri', 'ross.services', 'ross.cli', 'ross.tui', 'ross.client', "
                 "'ross.protocols.bridge')))))")
        result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(result.stdout.split(), [])

    def test_services(self) -> None:
        """
        The services import no client code.
        """
        self.assertEqual(violations("ross.services", SERVICES_FORBIDDEN), [])

    def test_dockerapi(self) -> None:
        """
        The Docker API reaches the engine directly: no gRPC (to itself or
        otherwise), services or clients.
        """
        self.assertEqual(violations("ross.dockerapi", DOCKERAPI_FORBIDDEN), [])

    def test_cri(self) -> None:
        """
        The CRI reaches the engine directly, as the Docker API does: none
        of Ross's own API, its servicers, the Docker API or the clients.
        """
        self.assertEqual(violations("ross.cri", CRI_FORBIDDEN), [])

    def test_cri_generated_code_stays_in_the_cri(self) -> None:
        """
        The generated runtime.v1 modules are imported by the CRI's
        servicers only (the wiring takes their handlers from ross.cri.api).
        """
        for package in ("ross.engine", "ross.services", "ross.dockerapi", "ross.protocols"):
            self.assertEqual(violations(package, ("ross.cri.v1",)), [], package)

    def test_shim_stdlib_only(self) -> None:
        """
        Importing the shim, as the daemon spawns it (no site, no user
        paths), loads the standard library and the shim's own modules only.
        """
        probe = ("import sys; sys.path.insert(0, %r); import ross.engine.runtime.shim\n"
                 "print('\\n'.join(sorted(m for m in sys.modules if m.partition('.')[0] not in "
                 "sys.stdlib_module_names)))" % str(PACKAGE.parent))
        result = subprocess.run([sys.executable, "-S", "-E", "-s", "-c", probe], capture_output=True, text=True,
                                timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)
        allowed = {"__main__", "ross", "ross.engine", "ross.engine.runtime", "ross.protocols", *SHIM_MODULES}
        self.assertEqual(sorted(set(result.stdout.split()) - allowed), [])

    def test_clients(self) -> None:
        """
        Every client rule (see CLIENT_RULES) holds.
        """
        for package, forbidden in CLIENT_RULES.items():
            self.assertEqual(violations(package, forbidden), [], package)

    def test_tui_runs_commands_through_the_table(self) -> None:
        """
        What the TUI shares with the CLI comes from ross.client; of the CLI
        it uses the command table alone (to run the ross command line it
        shows), never a command's internals.
        """
        used = {imported for name, path in modules_of("ross.tui") for _, imported in imports_of(name, path)
                if _within(imported, "ross.cli")}
        self.assertEqual(sorted(used), ["ross.cli.main", "ross.cli.main.load", "ross.cli.main.resolve"])
