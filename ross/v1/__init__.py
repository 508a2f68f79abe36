"""
Generated protobuf and gRPC modules of the ross.v1 API.

Everything here except this file is written by ``python -m ross.protogen``
from ``proto/ross/v1/*.proto`` and is never edited by hand.
"""
