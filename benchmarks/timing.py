"""Timing and memory: seconds per call (median and spread, wall and CPU), peak memory, and the machine."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times: list[float]) -> dict:
    """Median and spread (min, max, interquartile range) of per-iteration seconds."""
    q1, _, q3 = statistics.quantiles(times, n=4, method="inclusive") if len(times) > 1 else (times[0],) * 3
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "q1_s": q1, "q3_s": q3,
            "n": len(times), "times_s": times}


def time_calls(fn: Callable[[], object], warmup: int, iters: int, device: torch.device) -> dict:
    """Seconds per call of `fn`: `warmup` untimed calls, then `iters` calls each closed by a device sync.

    Besides wall time, the CPU time of this process (all its threads) per call: on a shared machine
    it says how much of the wall time was this process working rather than waiting for a core.
    """
    for _ in range(warmup):
        fn()
    sync(device)
    times, cpu = [], []
    for _ in range(iters):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return {**summarize(times), "cpu_median_s": statistics.median(cpu)}


# ------------------------------------------------------------------------------------------- memory


def _read_vmhwm_mb() -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return None


def reset_peak_memory(device: torch.device) -> bool:
    """Start a new peak-memory window; True when the host peak could be reset too (Linux clear_refs)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak resident set size to the current one
        return True
    except OSError:
        return False


def peak_memory(device: torch.device, host_reset: bool) -> dict:
    out: dict[str, object] = {}
    if device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    hwm = _read_vmhwm_mb()
    if host_reset and hwm is not None:
        out["host_peak_rss_mb"], out["host_peak_rss_source"] = hwm, "VmHWM since this section began"
    else:
        kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
        out["host_peak_rss_mb"] = kib / (2**20 if sys.platform == "darwin" else 1024)
        out["host_peak_rss_source"] = "ru_maxrss over the whole process so far"
    return out


# ----------------------------------------------------------------------------------- machine, errors


def machine_info(device: torch.device) -> dict:
    cpu_model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_model": cpu_model,
            "cpu_cores": os.cpu_count(), "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None}
    if hasattr(os, "sched_getaffinity"):
        info["cpu_cores_usable"] = len(os.sched_getaffinity(0))
    if device.type == "cuda":
        info["gpu_name"] = torch.cuda.get_device_name(device)
        info["gpu_memory_gb"] = torch.cuda.get_device_properties(device).total_memory / 2**30
    return info


def error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"[:300]


def attempt(wall: dict, name: str, fn: Callable[[], dict]) -> dict:
    """Run one section; an exception becomes its result ({"error": ...}). Its wall time goes to wall[name]."""
    print(f"{name} ...", flush=True)
    started = time.perf_counter()
    try:
        result = fn()
    except Exception as err:  # a failing mode or section is a result, not a crash
        traceback.print_exc()
        result = {"error": error_text(err)}
    wall[name] = time.perf_counter() - started
    return result
