"""
Generated protobuf and gRPC modules of the Kubernetes CRI (``runtime.v1``).

Everything here except this file is written by ``python -m ross.protogen``
from ``proto/ross/cri/v1/api.proto`` (kubernetes/cri-api's, unchanged) and
is never edited by hand.
"""
