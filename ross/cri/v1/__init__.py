"""
Generated protobuf and gRPC modules of the CRI (package runtime.v1).

Everything here except this file is written by ``python -m ross.protogen``
from ``proto/ross/cri/v1/api.proto`` (Kubernetes' api.proto, unchanged) and
is never edited by hand.
"""
