"""The CPU binsr runs on: its name and feature flags, read at run time (Linux ``/proc/cpuinfo``)."""

from __future__ import annotations

import functools
import platform

__all__ = ["cpu_name", "cpu_flags", "has_fast_bf16"]


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` (empty elsewhere)."""
    info: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                info[key.strip()] = value.strip()
    except OSError:
        pass
    return info


def cpu_name() -> str:
    """E.g. ``AMD EPYC 9B14``; ``platform.processor()`` where ``/proc/cpuinfo`` is missing."""
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (``avx512_bf16``, ``amx_bf16``, ``avx512_vpopcntdq`` ...)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def has_fast_bf16() -> bool:
    """True on CPUs with bfloat16 dot products in hardware (AVX-512 BF16 or AMX-BF16), where
    oneDNN's bfloat16 convolutions beat float32 ones."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
