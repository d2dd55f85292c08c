"""Peak resident memory for the benchmarks (stdlib only, so every benchmark venv can import it).

The kernel's high-water mark (VmHWM) is reset through /proc/self/clear_refs before the measured block and read
after it: an exact peak over the block, not the process lifetime."""
from __future__ import annotations


def status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def reset_peak_rss() -> bool:
    """Reset VmHWM (Linux ≥ 4.0); True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
