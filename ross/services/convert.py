"""
Conversions shared by every servicer.
"""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from ross.errors import InvalidArgument


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
    # Years 1 to 9999, as protobuf's Timestamp allows.
    if not (-62135596800 <= ts.seconds <= 253402300799 and 0 <= ts.nanos < 1_000_000_000):
        raise InvalidArgument(f"invalid time: {ts.seconds}s {ts.nanos}ns is out of range")
    return int(ts.ToNanoseconds())
