"""
What Ross's clients share, the CLI (L{ross.cli}) and the TUI (L{ross.tui}):
connection settings, the channel with its TLS and token, error rendering,
the handle every command gets, interactive frames. It imports no engine
and no services: clients reach the daemon through the API only.
"""
