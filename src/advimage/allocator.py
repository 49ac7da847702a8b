"""Keep freed CPU memory for reuse: glibc malloc settings for eager PyTorch on CPU.

PyTorch has no caching allocator on CPU: every activation of an eager forward/backward pass is
a fresh ``malloc``. With glibc's defaults, large blocks are ``mmap``-ed and freed heap memory is
trimmed back to the kernel, so each pass touches brand-new pages and pays a page fault per 4 KiB:
on this project's 2-core machine that is most of an MNIST LeNet5 forward at batch 270 (27 ms, vs
12.5 ms with memory kept; forward+backward 42 -> 34 ms). ``bench/cpu_allocator.py`` measures it.

Raising glibc's mmap threshold to its maximum (32 MiB on 64-bit) and the trim threshold to 1 GiB
keeps freed blocks in the heap for the next pass. Values are the same; only the process's
resident memory stays near its peak instead of shrinking between passes. The settings are
process-wide, so the library never changes them on its own: the CLI, which owns its process,
calls :func:`retain_freed_memory` at start-up (``ADVIMAGE_RETAIN_MEMORY=0`` turns it off), and
scripts may call it themselves.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys

__all__ = ["ENV_VAR", "retain_freed_memory"]

_log = logging.getLogger(__name__)

ENV_VAR = "ADVIMAGE_RETAIN_MEMORY"
_M_TRIM_THRESHOLD = -1  # glibc mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD = 32 << 20  # bytes: glibc's largest accepted value on 64-bit (HEAP_MAX / 2)
_TRIM_THRESHOLD = 1 << 30  # bytes: free heap kept before any is returned to the kernel


def retain_freed_memory() -> bool:
    """Apply the glibc settings of the module docstring; return whether they were applied.

    Returns ``False`` (and changes nothing) off Linux/glibc, when ``ADVIMAGE_RETAIN_MEMORY`` is
    ``0``/``false``/``no``, or if ``mallopt`` refuses a value. Safe to call more than once.
    """
    if os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or no libc found: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD)
    )
    _log.debug("glibc mallopt: retain freed memory %s", "on" if ok else "refused")
    return ok
