# -*- test-case-name: ross.test.integration.test_layers -*-
"""
Layers: applying layer tars to directories and producing them from
snapshots.

    apply_layer(source, root) -> LayerResult      (blocking)
    write_diff(upper, sink, compression) -> DiffResult   (blocking)
"""

from ross.engine.layers.apply import LayerResult, apply_layer, clean
from ross.engine.layers.diff import MEDIA_TYPE_GZIP, MEDIA_TYPE_TAR, DiffResult, write_diff
from ross.engine.layers.stream import detect_compression

__all__ = [
    "DiffResult",
    "LayerResult",
    "MEDIA_TYPE_GZIP",
    "MEDIA_TYPE_TAR",
    "apply_layer",
    "clean",
    "detect_compression",
    "write_diff",
]
