"""
Conversions shared by every servicer.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp


def timestamp(time_ns: int) -> Timestamp:
    """
    A protobuf Timestamp for nanoseconds since the epoch (0 stays unset).
    """
    ts = Timestamp()
    if time_ns:
        ts.FromNanoseconds(time_ns)
    return ts


def time_ns_of(ts: Timestamp) -> int | None:
    """
    Nanoseconds since the epoch of a Timestamp, or None when it is unset.
    """
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToNanoseconds()
