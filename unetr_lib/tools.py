"""The book's small tools: shape checks, timers, FLOP and memory counters.

Every chapter that checks a shape, times a function or counts FLOPs uses these, so each is
written once (d2l's practice). Each function says which chapter explains what it measures.

    check_shape(x, (B, N, K), "tokens")      # fails loudly, prints quietly, returns x
    best_time(lambda: model(x), repeat=3)    # seconds, the fastest of 3 timed calls
    count_flops(model, x)                    # FLOPs, 2 per multiply-accumulate
    peak_memory_mib(lambda: model(x))        # how far memory rises while it runs
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .bench import cpu_peak_rise_gib, interleaved_times, sync
from .nets import count_parameters

__all__ = [
    "ShapeError", "best_time", "check_shape", "count_flops", "count_parameters", "flops_by_module",
    "median_time", "peak_memory_mib", "time_calls",
]


class ShapeError(AssertionError, ValueError):
    """A tensor does not have the shape a chapter expects. It is an ``AssertionError`` (a failed
    check, as d2l's ``assert``) and a ``ValueError`` (a bad input, as the library's checks)."""


def _shape_of(x) -> tuple[int, ...]:
    if hasattr(x, "shape"):
        return tuple(int(s) for s in x.shape)
    if isinstance(x, (tuple, list, torch.Size)) and all(isinstance(s, numbers.Integral) for s in x):
        return tuple(int(s) for s in x)
    raise ValueError(f"check_shape takes a tensor, an array or a shape (a tuple of ints), got {type(x).__name__}")


def check_shape(tensor, expected: Sequence[int | None], name: str | None = None):
    """Check that ``tensor`` has the ``expected`` shape; print it when ``name`` is given.

    The d2l habit: a shape check right after each block, so that a wrong axis fails at once
    instead of ten cells later. Chapter 1 (01_fcn_to_unet) introduces it; every chapter uses it.

    Args:
        tensor: a tensor, a numpy array, or a shape itself (a tuple of ints or ``torch.Size``,
            e.g. one recorded by a forward hook).
        expected: the expected shape; ``None`` or ``-1`` at a position accepts any size there.
        name: what the tensor is; when given, a line ``name  shape`` is printed.

    Returns:
        ``tensor`` itself, so that a check can wrap an expression.

    Raises:
        ShapeError: the shape differs (the message names both shapes and the first axis that differs).
    """
    got = _shape_of(tensor)
    want = tuple(expected)
    if not all(w is None or isinstance(w, numbers.Integral) for w in want):
        raise ValueError(f"expected must hold ints (or None / -1 for any size), got {want}")
    want = tuple(None if w is None else int(w) for w in want)
    if len(got) != len(want):
        problem = f"{len(got)} axes instead of {len(want)}"
    else:
        wrong = [i for i, (g, w) in enumerate(zip(got, want)) if w not in (None, -1) and g != w]
        problem = f"axis {wrong[0]} differs" if wrong else ""
    if problem:
        label = f"{name}: " if name else ""
        raise ShapeError(f"{label}expected shape {want}, got {got} ({problem})")
    if name is not None:
        print(f"{name:<44} {got}")
    return tensor


def time_calls(fns: Mapping[str, Callable[[], object]], repeat: int = 3, warmup: int = 1,
               device: str | torch.device = "cpu") -> dict[str, list[float]]:
    """Time several functions side by side: ``warmup`` untimed calls of each, then ``repeat``
    rounds in which each is called once, alternating which goes first.

    Interleaving makes a busy moment of a shared machine hit all of them alike; ``unetr-bench``
    times our models against MONAI's the same way (this is its timer,
    :func:`unetr_lib.bench.interleaved_times`). Chapter 6 (06_unetr) explains why a shared CPU
    needs it.

    Args:
        fns: name -> a function of no arguments.
        repeat: timed rounds (at least 1).
        warmup: untimed calls of each function first (0 or more).
        device: on CUDA every call is synchronised, so the time is the GPU's.

    Returns:
        name -> the seconds of each timed call, in order.
    """
    if not fns:
        raise ValueError("time_calls needs at least one function")
    if repeat < 1 or warmup < 0:
        raise ValueError(f"repeat must be >= 1 and warmup >= 0, got repeat={repeat}, warmup={warmup}")
    return interleaved_times(dict(fns), repeat, warmup, torch.device(device))


def best_time(fn: Callable[[], object], repeat: int = 3, warmup: int = 1,
              device: str | torch.device = "cpu") -> float:
    """The fastest of ``repeat`` timed calls of ``fn`` after ``warmup`` untimed ones, in seconds.

    The minimum is the run least disturbed by the rest of the machine; chapter 3
    (03_self_attention) uses it for the cost of attention. See :func:`time_calls`."""
    return min(time_calls({"fn": fn}, repeat, warmup, device)["fn"])


def median_time(fn: Callable[[], object], repeat: int = 3, warmup: int = 1,
                device: str | torch.device = "cpu") -> float:
    """The median of ``repeat`` timed calls of ``fn`` after ``warmup`` untimed ones, in seconds
    (what ``unetr-bench`` reports; chapter 10, 10_ablations, uses it). See :func:`time_calls`."""
    return statistics.median(time_calls({"fn": fn}, repeat, warmup, device)["fn"])


def peak_memory_mib(fn: Callable[[], object], device: str | torch.device = "cpu") -> float:
    """How far memory peaks above its level just before ``fn()`` runs, in MiB: what ``fn`` needed.

    On CUDA from ``torch.cuda.max_memory_allocated`` (tensors only; the caching allocator
    reserves a little more). On the CPU from the resident set size of this process, as
    ``unetr-bench`` measures it (Linux only; ``nan`` elsewhere). Memory freed earlier and reused
    does not count as a rise, so small CPU peaks read as about 0. Chapter 3 (03_self_attention)
    measures the attention matrix with it.
    """
    device = torch.device(device)
    if device.type == "cuda":
        sync(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        sync(device)
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    rise = cpu_peak_rise_gib(fn)
    return math.nan if rise is None else rise * 1024


def count_flops(fn: Callable, *args, **kwargs) -> int:
    """The floating-point operations of ``fn(*args, **kwargs)`` (a model and its input, or any
    function), counted by ``torch.utils.flop_counter.FlopCounterMode`` under ``no_grad``.

    The counter reads the shapes of the matrix products and convolutions that run and counts 2
    FLOPs per multiply-accumulate; it skips elementwise work (norms, activations, softmax). On
    the ``meta`` device it counts without computing anything, so even a model too large to run
    can be counted exactly.

    One trap: on the CPU the counter has no formula for the fused attention kernel
    (``F.scaled_dot_product_attention``), so the attention products qkᵀ and Av of a model on the
    "sdpa" path go uncounted. Count a model built with ``attention="explicit"`` (or on the meta
    device). Chapter 6 (06_unetr) shows the difference and explains the convention; chapter 7
    (07_swin_unetr) and chapter 10 (10_ablations) count with it.
    """
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        fn(*args, **kwargs)
    return counter.get_total_flops()


def flops_by_module(model: nn.Module, *args, **kwargs) -> dict[str, int]:
    """FLOPs of ``model(*args, **kwargs)`` per module, as :func:`count_flops` counts them.

    Returns:
        module path -> FLOPs, with FlopCounterMode's names: ``"Global"`` for the whole call,
        then ``"UNETR"``, ``"UNETR.vit"``, ``"UNETR.vit.blocks.0.attn"``, ... (the class name
        of the model, then the attribute path). A module's count includes its submodules'.
        Chapter 6 (06_unetr) groups them into encoder and decoder.
    """
    with FlopCounterMode(display=False, depth=None) as counter, torch.no_grad():
        model(*args, **kwargs)
    return {name: int(sum(ops.values())) for name, ops in counter.get_flop_counts().items()}
