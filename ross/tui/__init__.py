"""
``ross-tui``: the full-screen console (SPEC 5), on the same gRPC API and
connection settings as the CLI.
"""
