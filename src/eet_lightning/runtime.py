"""Process-wide settings that make EET faster on CPU without changing any number it computes."""

from __future__ import annotations

import ctypes
import os
import sys

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1
# set to 1 to keep the C allocator's defaults in eet-fit, eet-transfer and eet-evaluate
OPT_OUT_ENV = "EET_DEFAULT_ALLOCATOR"

_tuned = False


def tune_cpu_allocator() -> bool:
    """Let the C allocator keep and reuse freed memory instead of returning it to the OS.

    By default glibc serves every allocation above 32 MB with a fresh ``mmap`` and unmaps it on free, so
    each large tensor (the 134 MB weights of Dsc/Dg at Table I's size, their gradients, Adam's
    temporaries, 256 px activations) costs one page fault per 4 KB every time it is created: at 256 px
    that was a third of a stage-2 step on a 2-core CPU (10.7 s -> 7.0 s with this setting), and a third of
    a 16-pair inference batch. Here large blocks come from the heap and freed ones are reused (the same
    effect as the jemalloc/tcmalloc preload that PyTorch's CPU tuning guide recommends, without one). The
    process keeps its peak memory reserved, as PyTorch's CUDA caching allocator does on the GPU.

    Applies to the whole process and cannot be undone. eet-fit, eet-transfer and eet-evaluate call it
    (``EET_DEFAULT_ALLOCATOR=1`` turns that off); call it yourself in a notebook. Returns whether the
    setting is active (False where the C library is not glibc).
    """
    global _tuned
    if _tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another C library
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _tuned = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, _INT_MAX))
    return _tuned


def tune_for_cli() -> bool:
    """`tune_cpu_allocator` unless the user opted out through ``EET_DEFAULT_ALLOCATOR=1``."""
    if os.environ.get(OPT_OUT_ENV, "").strip() not in ("", "0"):
        return False
    return tune_cpu_allocator()
