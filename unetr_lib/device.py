"""Where a run computes: the device by name, and the autocast dtype of mixed precision.

``unetr-train`` and ``unetr-segment`` take ``--device auto`` (a GPU when PyTorch sees one),
``cpu``, ``cuda``, ``cuda:N`` or ``mps``; chapter 8 explains the choice of ``amp``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")
"""The device names the command-line tools accept."""


def check_device_name(name: str) -> None:
    """Raise ``ValueError`` unless ``name`` is auto, cpu, cuda, cuda:N or mps (it need not exist here)."""
    if not isinstance(name, str) or not DEVICE_PATTERN.fullmatch(name):
        raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {name!r}")


def resolve_device(name: str) -> torch.device:
    """The ``torch.device`` for ``name``; ``auto`` is the first GPU when there is one, else the CPU.

    Raises:
        ValueError: ``name`` is not a device name, or names a device this machine does not have.
    """
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name} asked for, but PyTorch sees no CUDA device")
        index = int(name.partition(":")[2] or 0)
        if index >= torch.cuda.device_count():
            raise ValueError(f"device {name} asked for, but PyTorch sees {torch.cuda.device_count()} CUDA "
                             f"device(s): cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ValueError("device mps asked for, but PyTorch sees no Apple GPU (MPS)")
    return torch.device(name)


def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (x86 AVX512-BF16 or AMX), read from Linux's
    ``/proc/cpuinfo``. Without it, bf16 autocast on the CPU is emulated and slower than fp32, so
    ``amp="auto"`` stays in fp32 there (and on other systems, where the file does not exist)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(avx512_bf16|amx_bf16)\b", flags))


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``amp`` (``auto``, ``bf16``, ``fp16`` or ``off``) on ``device``.

    ``auto``: on a GPU, bf16 where it is supported, else fp16 (with a GradScaler); on a CPU,
    bf16 where the CPU has bf16 instructions (:func:`cpu_supports_bf16`), where it halves the
    step time of the book-scale models with the same loss curve (chapter 8 measures both),
    else none (fp32). ``off`` is always fp32.
    """
    if setting == "off":
        return None
    if setting == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_supports_bf16() else None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[setting]
