"""
Ross packaging. ``build_py`` generates the API modules (ross.v1, ross.cri.v1) from ``proto/``
so an installed Ross never carries hand-edited generated code.
"""

from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py


class BuildWithProtos(build_py):
    def run(self) -> None:
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from ross.protogen import generate

        super().run()
        if not self.editable_mode:
            generate(Path(self.build_lib))


setup(
    name="ross",
    version="0.1.0",
    description="A Linux container engine on Twisted and gRPC",
    python_requires=">=3.11",
    packages=find_packages(include=["ross", "ross.*"]) + ["twisted.plugins"],
    package_data={"twisted": ["plugins/ross_plugin.py"], "ross.tui": ["ross.tcss"],
                  "ross.engine.runtime": ["seccomp_default.json"]},
    install_requires=[
        "twisted>=24.3",
        "grpcio>=1.60",
        "protobuf>=5.26",
        "textual>=0.80",
        "pyroute2>=0.7",
        "treq>=23.11",
        "service-identity>=24.1",
        "pyopenssl>=24",
        "attrs>=23.1",
        "zope.interface>=6.0",
        "pyte>=0.8",
        # The terminal panes' fast emulator (ross.tui.vt); pyte is the fallback.
        "pyavt>=0.1.2",
        # ross-tui --serve: the console in a web browser.
        "textual-serve>=1.1",
        "zstandard>=0.22",
        "isal>=1.6",
    ],
    extras_require={
        "dev": [
            "grpcio-tools>=1.60",
            "cryptography>=42",
            "pyopenssl>=24",
            "mypy>=1.10",
            "mypy-zope>=1.0",
            "types-grpcio>=1.0",
            "types-protobuf>=5.26",
            "hypothesis>=6.100",
            # ross-tui --serve is tested in Debian's chromium through its driver.
            "selenium>=4.20",
            # The Docker Engine API is tested with docker's own Python client.
            "docker>=7.0",
        ],
    },
    entry_points={
        "console_scripts": [
            "ross = ross.cli.main:run",
            "ross-tui = ross.tui.app:main",
        ],
    },
    cmdclass={"build_py": BuildWithProtos},
)
