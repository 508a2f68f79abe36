# -*- test-case-name: ross.test.integration.test_cri_containers -*-
"""
The CRI's metrics (ListMetricDescriptors, ListPodSandboxMetrics): the
cAdvisor metrics kubelet publishes on /metrics/cadvisor when the runtime
gives them, read from each container's cgroups, processes and writable
layer, and from the pod's network namespace.

Every metric of a container carries the labels C{id}, C{name} and
C{image} (and the few extra ones its descriptor names, in that order);
the pod's network metrics carry the pod's ID and name and the interface.
Counters in seconds are whole seconds (the API's values are integers).
What the host cannot tell (hugetlb usage, pressure stall times, the
soft ulimits) has no descriptor; block I/O counters have one but no
value on a host without per-device accounting, as cAdvisor's.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Iterable, Mapping

import attrs

from ross.cri.v1 import api_pb2
from ross.engine.runtime import cgroups

if TYPE_CHECKING:
    from ross.engine.runtime.wire import CgroupGroup

COUNTER, GAUGE = api_pb2.COUNTER, api_pb2.GAUGE

#: The labels of every container metric, in order.
CONTAINER_KEYS = ("id", "name", "image")
#: The labels of a pod's network metrics, in order.
POD_KEYS = ("id", "name", "interface")


@attrs.frozen
class Descriptor:
    name: str
    help: str
    kind: api_pb2.MetricType = GAUGE
    #: Labels after the container's own (CONTAINER_KEYS).
    extra: tuple[str, ...] = ()


#: The container metrics Ross gives, with what each reads.
CONTAINER_METRICS = (
    Descriptor("container_cpu_usage_seconds_total", "Cumulative CPU time consumed, in seconds.", COUNTER),
    Descriptor("container_cpu_user_seconds_total", "Cumulative user CPU time consumed, in seconds.", COUNTER),
    Descriptor("container_cpu_system_seconds_total", "Cumulative system CPU time consumed, in seconds.", COUNTER),
    Descriptor("container_cpu_cfs_periods_total", "Number of elapsed enforcement periods.", COUNTER),
    Descriptor("container_cpu_cfs_throttled_periods_total", "Number of throttled periods.", COUNTER),
    Descriptor("container_cpu_cfs_throttled_seconds_total", "Total time the container was throttled, in seconds.",
               COUNTER),
    Descriptor("container_memory_usage_bytes", "Current memory usage, all memory regardless of when it was accessed."),
    Descriptor("container_memory_working_set_bytes", "Current working set: usage without inactive file cache."),
    Descriptor("container_memory_max_usage_bytes", "Maximum memory usage recorded."),
    Descriptor("container_memory_cache", "Page cache memory."),
    Descriptor("container_memory_rss", "Anonymous and swap cache memory."),
    Descriptor("container_memory_mapped_file", "Size of memory mapped files."),
    Descriptor("container_memory_swap", "Swap usage."),
    Descriptor("container_memory_kernel_usage", "Kernel memory usage."),
    Descriptor("container_memory_failcnt", "Number of times memory usage hit the limit.", COUNTER),
    Descriptor("container_memory_failures_total", "Cumulative count of memory allocation failures.", COUNTER,
               ("failure_type", "scope")),
    Descriptor("container_oom_events_total", "Count of out of memory events observed for the container.", COUNTER),
    Descriptor("container_spec_cpu_period", "CPU period of the container."),
    Descriptor("container_spec_cpu_shares", "CPU share of the container."),
    Descriptor("container_spec_memory_limit_bytes", "Memory limit of the container (0: none)."),
    Descriptor("container_spec_memory_swap_limit_bytes", "Memory and swap limit of the container (0: none)."),
    Descriptor("container_processes", "Number of processes running inside the container."),
    Descriptor("container_threads", "Number of threads running inside the container."),
    Descriptor("container_threads_max", "Maximum number of threads allowed inside the container (0: none)."),
    Descriptor("container_file_descriptors", "Number of open file descriptors of the container's processes."),
    Descriptor("container_sockets", "Number of open sockets of the container's processes."),
    Descriptor("container_fs_usage_bytes", "Bytes the container's writable layer uses."),
    Descriptor("container_fs_limit_bytes", "Bytes the filesystem of the writable layer can hold."),
    Descriptor("container_fs_inodes_total", "Inodes of the filesystem of the writable layer."),
    Descriptor("container_fs_inodes_free", "Free inodes of the filesystem of the writable layer."),
    Descriptor("container_fs_reads_bytes_total", "Cumulative bytes read.", COUNTER, ("device",)),
    Descriptor("container_fs_writes_bytes_total", "Cumulative bytes written.", COUNTER, ("device",)),
    Descriptor("container_fs_reads_total", "Cumulative reads completed.", COUNTER, ("device",)),
    Descriptor("container_fs_writes_total", "Cumulative writes completed.", COUNTER, ("device",)),
    Descriptor("container_blkio_device_usage_total", "Block I/O by device and operation, in bytes.", COUNTER,
               ("device", "major", "minor", "operation")),
    Descriptor("container_start_time_seconds", "Start time of the container since the Unix epoch, in seconds."),
    Descriptor("container_last_seen", "Last time the container was seen by the runtime, in seconds."),
)

#: The pod's network metrics (its namespace's interfaces but loopback).
NETWORK_METRICS = tuple(
    Descriptor(f"container_network_{way}_{what}_total", f"Cumulative count of {text} {past}.", COUNTER)
    for way, past in (("receive", "received"), ("transmit", "transmitted"))
    for what, text in (("bytes", "bytes"), ("packets", "packets"), ("errors", "errors encountered while"),
                       ("packets_dropped", "packets dropped while"))
)


_KINDS = {d.name: d.kind for d in CONTAINER_METRICS}


def descriptors() -> list[api_pb2.MetricDescriptor]:
    return [api_pb2.MetricDescriptor(name=d.name, help=d.help, label_keys=[*CONTAINER_KEYS, *d.extra])
            for d in CONTAINER_METRICS] + [
        api_pb2.MetricDescriptor(name=d.name, help=d.help, label_keys=list(POD_KEYS)) for d in NETWORK_METRICS]


@attrs.frozen
class Reading:
    """
    What one container's metrics are made of, read in a thread.
    """

    counters: Mapping[str, int]
    #: (device "major:minor", operation, bytes, count) of block I/O.
    block_io: tuple[tuple[str, str, int, int], ...]
    processes: int
    threads: int
    file_descriptors: int
    sockets: int


def read_container(groups: list[CgroupGroup], pids: Iterable[int]) -> Reading:
    """
    Blocking: the cgroup counters of a container and its processes'
    threads, descriptors and sockets.
    """
    counters = cgroups.counters(groups)
    processes = threads = descriptors_open = sockets = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("Threads:"):
                        threads += int(line.split()[1])
                        break
            names = os.listdir(f"/proc/{pid}/fd")
        except (OSError, ValueError):
            continue
        processes += 1
        descriptors_open += len(names)
        for name in names:
            try:
                if os.readlink(f"/proc/{pid}/fd/{name}").startswith("socket:"):
                    sockets += 1
            except OSError:
                pass
    return Reading(counters, cgroups.block_io(groups), processes, threads, descriptors_open, sockets)


def container_metrics(reading: Reading, labels: tuple[str, str, str], started_ns: int,
                      fs: tuple[int, int, int, int] | None) -> list[api_pb2.Metric]:
    """
    The metrics of one container from its C{reading}; C{labels} are its
    ID, name and image, C{fs} the (used bytes, size, inodes, free inodes)
    of its writable layer and the filesystem that holds it.
    """
    c = reading.counters
    seconds = 1_000_000_000
    values: dict[str, int] = {
        "container_cpu_usage_seconds_total": c.get("cpu_usage_ns", 0) // seconds,
        "container_cpu_user_seconds_total": c.get("cpu_user_ns", 0) // seconds,
        "container_cpu_system_seconds_total": c.get("cpu_system_ns", 0) // seconds,
        "container_cpu_cfs_periods_total": c.get("nr_periods", 0),
        "container_cpu_cfs_throttled_periods_total": c.get("nr_throttled", 0),
        "container_cpu_cfs_throttled_seconds_total": c.get("throttled_ns", 0) // seconds,
        "container_memory_usage_bytes": c.get("memory_usage", 0),
        "container_memory_working_set_bytes": max(0, c.get("memory_usage", 0) - c.get("inactive_file", 0)),
        "container_memory_max_usage_bytes": c.get("memory_max_usage", 0),
        "container_memory_cache": c.get("cache", 0),
        "container_memory_rss": c.get("rss", 0),
        "container_memory_mapped_file": c.get("mapped_file", 0),
        "container_memory_swap": c.get("swap", 0),
        "container_memory_kernel_usage": c.get("kernel", 0),
        "container_memory_failcnt": c.get("failcnt", 0),
        "container_oom_events_total": c.get("oom_kill", 0),
        "container_spec_cpu_period": c.get("cfs_period_us", 0),
        "container_spec_cpu_shares": c.get("cpu_shares", 0),
        "container_spec_memory_limit_bytes": c.get("memory_limit", 0),
        "container_spec_memory_swap_limit_bytes": c.get("memsw_limit", 0),
        "container_processes": reading.processes,
        "container_threads": reading.threads,
        "container_threads_max": c.get("pids_max", 0),
        "container_file_descriptors": reading.file_descriptors,
        "container_sockets": reading.sockets,
        "container_start_time_seconds": started_ns // seconds,
        "container_last_seen": time.time_ns() // seconds,
    }
    if fs is not None:
        used, size, inodes, free_inodes = fs
        values.update({"container_fs_usage_bytes": used, "container_fs_limit_bytes": size,
                       "container_fs_inodes_total": inodes, "container_fs_inodes_free": free_inodes})
    found = [api_pb2.Metric(name=name, metric_type=_KINDS[name], label_values=labels,
                            value=api_pb2.UInt64Value(value=value)) for name, value in values.items()]
    for failure_type, key in (("pgfault", "pgfault"), ("pgmajfault", "pgmajfault")):
        for scope in ("container", "hierarchy"):
            found.append(api_pb2.Metric(name="container_memory_failures_total", metric_type=COUNTER,
                                        label_values=[*labels, failure_type, scope],
                                        value=api_pb2.UInt64Value(value=c.get(key, 0))))
    for device, operation, size, count in reading.block_io:
        major, _, minor = device.partition(":")
        found.append(api_pb2.Metric(name="container_blkio_device_usage_total", metric_type=COUNTER,
                                    label_values=[*labels, device, major, minor, operation],
                                    value=api_pb2.UInt64Value(value=size)))
        name = {"Read": "reads", "Write": "writes"}.get(operation)
        if name is not None:
            for metric, value in ((f"container_fs_{name}_bytes_total", size), (f"container_fs_{name}_total", count)):
                found.append(api_pb2.Metric(name=metric, metric_type=COUNTER, label_values=[*labels, device],
                                            value=api_pb2.UInt64Value(value=value)))
    return found


def read_network(pid: int) -> dict[str, tuple[int, ...]]:
    """
    Blocking: the counters of each interface but loopback in the network
    namespace of C{pid}, as /proc/net/dev gives them (receive bytes,
    packets, errors, drops, then the same four for transmit).
    """
    interfaces = {}
    try:
        with open(f"/proc/{pid}/net/dev") as f:
            lines = f.read().splitlines()[2:]
    except OSError:
        return {}
    for line in lines:
        name, _, rest = line.partition(":")
        fields = rest.split()
        name = name.strip()
        if name == "lo" or len(fields) < 16:
            continue
        numbers = [int(v) for v in fields]
        interfaces[name] = (*numbers[0:4], *numbers[8:12])
    return interfaces


def network_metrics(interfaces: Mapping[str, tuple[int, ...]], pod_id: str, pod_name: str) -> list[api_pb2.Metric]:
    found = []
    for interface, numbers in sorted(interfaces.items()):
        for descriptor, value in zip(NETWORK_METRICS, numbers):
            found.append(api_pb2.Metric(name=descriptor.name, metric_type=COUNTER,
                                        label_values=[pod_id, pod_name, interface],
                                        value=api_pb2.UInt64Value(value=value)))
    return found
