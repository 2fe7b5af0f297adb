"""Process-wide settings: what every eet-lightning program sets first (`configure_process`) and the C
allocator tuning of the CPU commands (`tune_cpu_allocator`). Importing the library sets none of them."""

from __future__ import annotations

import ctypes
import os
import sys
import warnings

import torch

# albumentations checks PyPI for a newer version on import unless this is set; nothing may reach the network.
ALBUMENTATIONS_ENV = "NO_ALBUMENTATIONS_UPDATE"
# E, C, Du and Dd are in eval mode on purpose in stage 2; Lightning warns about any module in eval mode at
# fit start.
_EVAL_MODE_WARNING = r"Found \d+ module\(s\) in eval mode"

# glibc's mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_INT_MAX = 2**31 - 1
# set to 1 to keep the C allocator's defaults in eet-fit, eet-transfer and eet-evaluate
OPT_OUT_ENV = "EET_DEFAULT_ALLOCATOR"

_tuned = False
_warned_denormals = False


def configure_process() -> bool:
    """The process-wide settings every eet-lightning program runs with. Idempotent; returns whether all of
    torch's CPU threads flush denormal floats to zero.

    - Denormal floats are flushed to zero (``torch.set_flush_denormal(True)``). Tiny gradients become
      denormals, which x86 CPUs process up to 40x slower (a stage-1 step measured 7.4 s instead of
      0.18 s). The setting belongs to a thread, and torch's worker threads keep the one they were created
      with; so it must come before torch starts them, i.e. before the first parallel computation.
    - ``NO_ALBUMENTATIONS_UPDATE=1``: albumentations never checks PyPI (the DataModules set it too, right
      before they import albumentations).
    - Lightning's warning about modules in eval mode at fit start is ignored: stage 2 keeps its frozen
      stage-1 parts in eval mode on purpose.

    Who calls it: each console script, first thing in ``main()`` (before torch starts a thread), and
    ``tests/conftest.py``; importing the library never does (nothing process-wide happens on import).
    Library users who train in Python get it from the Stage modules, which call it when they are built
    (in a notebook that is before they compute anything, as the import was before) and again when
    fitting starts (a DDP process started by ``spawn`` rebuilds the module without building it). Where
    torch's threads had already started by then, this warns once, so that the slowdown never comes back
    silently: call ``configure_process()`` at the top of the notebook or script. `EETModel` does not call
    it (the inference side sets nothing process-wide; a transfer with the synthetic run's checkpoint gave
    the same bits with and without it).
    """
    global _warned_denormals
    supported = torch.set_flush_denormal(True)  # every call: it covers the calling thread
    os.environ.setdefault(ALBUMENTATIONS_ENV, "1")
    # only when missing: each change to the filters lets warnings already shown once show again
    if not any(
        f[0] == "ignore" and f[1] is not None and f[1].pattern == _EVAL_MODE_WARNING for f in warnings.filters
    ):
        warnings.filterwarnings("ignore", message=_EVAL_MODE_WARNING)
    if not supported:  # a CPU without flush-to-zero: nothing to flush, nothing slow
        return True
    flushed = _denormals_flushed()
    if not flushed and not _warned_denormals:
        _warned_denormals = True
        warnings.warn(
            "some of torch's CPU threads do not flush denormal floats to zero: they started before "
            "eet_lightning.runtime.configure_process() ran, and training can be many times slower. "
            "Call configure_process() at the start of the program, before torch computes anything.",
            RuntimeWarning,
            stacklevel=2,
        )
    return flushed


def _denormals_flushed() -> bool:
    """Whether each of torch's intra-op threads flushes denormals: a product over a tensor of denormals
    that every thread takes a share of, which comes out zero only where the thread flushes."""
    # built from integer bits: a float conversion on a flushing thread would make it zero already
    tiny = torch.ones(max(torch.get_num_threads(), 1) * 2**16, dtype=torch.int32).view(torch.float32)
    return not bool((tiny * 2.0).count_nonzero())


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
