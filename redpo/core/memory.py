"""How much memory a stage used and how much the machine has free: peak RSS over a window, and available memory.

Why a window and not ``resource.getrusage(RUSAGE_SELF).ru_maxrss``: that is the process's lifetime maximum, so in a
notebook kernel that trains adapter A and then B it would credit B with A's peak, and the generation stage's memory
sits mostly in llama-server, a child that ``RUSAGE_SELF`` never sees and ``RUSAGE_CHILDREN`` counts only once it has
been reaped. On Linux the kernel keeps each process's exact high-water mark (``VmHWM`` in ``/proc/<pid>/status``) and
lets its owner reset it (``5`` into ``/proc/<pid>/clear_refs``), so :func:`peak_window` resets it for this process
and its live children on entry and reads it back on exit: exact, with no sampling thread. Where the reset is refused
(another OS, a locked-down ``/proc``), the window reports the lifetime maximum and says so in ``scope``.
"""

from __future__ import annotations

import contextlib
import resource
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

GB = 10**9
"""Memory is reported and capped in GB (10^9 bytes), as the issue and the profiles speak of it."""
WINDOW = "window"
LIFETIME = "process lifetime"


def _proc(pid: int | str) -> Path:
    return Path("/proc") / str(pid)


def high_water_mark(pid: int | str = "self") -> int | None:
    """Peak RSS in bytes since the process started or its mark was last reset (``VmHWM``); None if unreadable."""
    try:
        for line in (_proc(pid) / "status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def reset_high_water_mark(pid: int | str = "self") -> bool:
    """Reset ``VmHWM`` to the current RSS; False where the kernel or the OS does not allow it."""
    try:
        (_proc(pid) / "clear_refs").write_text("5")
    except OSError:
        return False
    return True


def lifetime_peak() -> int:
    """This process's lifetime peak RSS in bytes (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def _cgroup_limit() -> int | None:
    """The cgroup's memory limit (a container's), ``None`` when unset or unreadable."""
    with contextlib.suppress(OSError, ValueError):
        text = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if text != "max":
            return int(text)
    return None


def available_bytes() -> int:
    """Memory a new allocation can get without swapping or the OOM killer: ``MemAvailable``, lowered to what the
    cgroup (a container's memory limit) still allows when one is set."""
    available = int(psutil.virtual_memory().available)
    limit = _cgroup_limit()
    if limit is not None:
        with contextlib.suppress(OSError, ValueError):
            available = min(available, limit - int(Path("/sys/fs/cgroup/memory.current").read_text()))
    return max(available, 0)


def total_bytes() -> int:
    """All the memory this process could ever hold: the machine's RAM, or the cgroup's limit when lower."""
    total = int(psutil.virtual_memory().total)
    limit = _cgroup_limit()
    return min(total, limit) if limit is not None else total


def _children() -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return psutil.Process().children(recursive=True)
    return []


@dataclass
class PeakRSS:
    """What :func:`peak_window` measured: this process's peak RSS and the sum of its children's peaks (an upper
    bound of their simultaneous use), in bytes, and whether the numbers cover the window or the process lifetime."""

    process_bytes: int = 0
    children_bytes: int = 0
    children: int = 0
    scope: str = WINDOW
    _carried: int = field(default=0, repr=False)

    @property
    def total_bytes(self) -> int:
        return self.process_bytes + self.children_bytes

    def to_json(self) -> dict[str, Any]:
        return {
            "peak_rss_gb": round(self.total_bytes / GB, 3),
            "process_gb": round(self.process_bytes / GB, 3),
            "children_gb": round(self.children_bytes / GB, 3),
            "children": self.children,
            "scope": self.scope,
        }


_OPEN: list[PeakRSS] = []
"""The windows open in this process, outermost first: a nested window's reset would hide the outer window's peak
so far, so the outer one keeps it (``_carried``) before the reset."""


@contextlib.contextmanager
def peak_window(into: PeakRSS | None = None) -> Iterator[PeakRSS]:
    """Measure the peak RSS of the block; the yielded :class:`PeakRSS` (``into``, or a new one) is filled in when
    the block ends, also when it raises. Children alive at the end are counted (a server started inside the block
    included). Windows nest: an outer window's peak includes its inner ones'."""
    peak = into if into is not None else PeakRSS()
    if _OPEN:
        _OPEN[-1]._carried = max(_OPEN[-1]._carried, high_water_mark() or 0)
    exact = reset_high_water_mark()
    for child in _children():
        reset_high_water_mark(child.pid)
    _OPEN.append(peak)
    try:
        yield peak
    finally:
        _OPEN.pop()
        own = high_water_mark() if exact else None
        peak.scope = WINDOW if own is not None else LIFETIME
        peak.process_bytes = max(own, peak._carried) if own is not None else lifetime_peak()
        kids = [high_water_mark(c.pid) for c in _children()]
        peak.children_bytes = sum(b for b in kids if b)
        peak.children = sum(1 for b in kids if b)
        if _OPEN:
            _OPEN[-1]._carried = max(_OPEN[-1]._carried, peak.process_bytes)
