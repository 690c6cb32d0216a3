"""A process's resident memory from ``/proc`` (Linux), with the stdlib's peak as the fallback elsewhere."""

from __future__ import annotations

import re


def memory_mb(pid: int | str = "self") -> tuple[float, float] | None:
    """(resident, peak resident) memory of a process in MB; None without ``/proc``."""
    try:
        with open(f"/proc/{pid}/status") as f:
            status = f.read()
    except OSError:
        return None
    values = [re.search(rf"^{key}:\s+(\d+) kB", status, re.MULTILINE) for key in ("VmRSS", "VmHWM")]
    return tuple(int(v.group(1)) / 1024 if v else 0.0 for v in values)


def _stdlib_peak_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    """This process's resident set (no ``/proc``: its peak, the best the stdlib knows)."""
    memory = memory_mb()
    return memory[0] if memory else _stdlib_peak_mb()


def peak_rss_mb() -> float:
    memory = memory_mb()
    return memory[1] if memory else _stdlib_peak_mb()


def reset_peak_rss() -> bool:
    """Reset the peak (VmHWM) to the current RSS (Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return memory_mb() is not None


__all__ = ["memory_mb", "peak_rss_mb", "reset_peak_rss", "rss_mb"]
