"""What the CPU supports natively, for choosing defaults (precision) of CPU runs."""

from __future__ import annotations

import torch

__all__ = ["cpu_supports_bf16"]

_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of native bf16 arithmetic (AVX-512 BF16, AMX)


def _cpuinfo_flags() -> set[str]:
    """The flags of the first processor in /proc/cpuinfo (empty where that file does not exist)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_supports_bf16() -> bool:
    """True when this CPU computes bf16 natively (AVX-512 BF16 or AMX), so that bf16 autocast pays on it.

    Asks torch's own CPU feature detection, with /proc/cpuinfo as a fallback for torch builds without it.
    """
    cpu = torch.cpu
    if hasattr(cpu, "_is_avx512_bf16_supported") and hasattr(cpu, "_is_amx_tile_supported"):
        if cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported():
            return True
    return bool(_cpuinfo_flags() & set(_BF16_FLAGS))
