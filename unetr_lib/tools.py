"""The book's small tools: shape checks, timers, FLOP and memory counters.

Every chapter that checks a shape, times a function or counts FLOPs uses these, so each is
written once (d2l's practice). Each function says which chapter explains what it measures.

    check_shape(x, (B, N, K), "tokens")      # fails loudly, prints quietly, returns x
    best_time(lambda: model(x), repeat=3)    # seconds, the fastest of 3 timed calls
    count_flops(model, x)                    # FLOPs, 2 per multiply-accumulate
    thop_count(model, x).macs                # MACs as the thop profiler counts them (the papers' tables)
    peak_memory_mib(lambda: model(x))        # how far memory rises while it runs
"""

from __future__ import annotations

import math
import numbers
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .bench import cpu_peak_rise_gib, interleaved_times, sync
from .nets import count_parameters

__all__ = [
    "THOP_RULES", "ShapeError", "ThopCount", "best_time", "check_shape", "count_flops", "count_parameters",
    "flops_by_module", "median_time", "paper_gflops", "peak_memory_mib", "thop_count", "time_calls",
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


# ---------------------------------------------------------------------------------------------
# The papers' convention: multiply-accumulates as the thop profiler counts them
# ---------------------------------------------------------------------------------------------

def _conv_thop_0_0_31(m, x, y) -> int:
    # every output element: C_in / groups x kernel taps, + 1 for the bias; the same for a transposed conv
    return y.numel() * (m.in_channels // m.groups * math.prod(m.kernel_size) + (m.bias is not None))


def _conv_thop_0_1_1(m, x, y) -> int:
    # as 0.0.31 without the bias
    return y.numel() * (x.shape[1] // m.groups) * math.prod(m.kernel_size)


def _linear(m, x, y) -> int:
    return y.numel() * m.in_features


def _per_element(m, x, y) -> int:
    return x.numel()


def _norm_thop_0_0_31(m, x, y) -> int:
    return 2 * x.numel()


def _norm_thop_0_1_1(m, x, y) -> int:
    affine = getattr(m, "affine", False) or getattr(m, "elementwise_affine", False)
    return 2 * x.numel() * (2 if affine else 1)


def _softmax(m, x, y) -> int:
    n = x.shape[m.dim]
    return x.numel() // n * (3 * n - 1)  # n exponentials, n - 1 additions, n divisions per row


def _zero(m, x, y) -> int:
    return 0


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_ZERO = (nn.ReLU, nn.ReLU6, nn.Dropout, nn.ZeroPad2d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)

THOP_RULES: dict[str, dict[type, Callable]] = {
    "thop-0.0.31": {
        **dict.fromkeys(_CONVS, _conv_thop_0_0_31), nn.Linear: _linear,
        **dict.fromkeys(_BATCH_NORMS, _norm_thop_0_0_31), nn.LeakyReLU: _per_element,
        **dict.fromkeys(_ZERO, _zero),
    },
    "thop-0.1.1": {
        **dict.fromkeys(_CONVS, _conv_thop_0_1_1), nn.Linear: _linear,
        **dict.fromkeys(_BATCH_NORMS + (nn.LayerNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d),
                        _norm_thop_0_1_1),
        nn.Softmax: _softmax, nn.LeakyReLU: _zero,
        **dict.fromkeys(_ZERO + (nn.Sequential, nn.PixelShuffle), _zero),
    },
}
"""The thop profiler's counting rules, per module type, for the layers of this library's models and
MONAI's: ``"thop-0.0.31"`` is thop 0.0.31.post2005241907, what ``pip install thop`` gave from May 2020
to June 2022, when UNETR and Swin UNETR were published; ``"thop-0.1.1"`` is thop
0.1.1.post2209072238, what it gives today. See :func:`thop_count`."""


class ThopCount(NamedTuple):
    """What :func:`thop_count` returns."""

    macs: int
    """multiply-accumulates of the forward pass, by thop's rules"""
    params: int
    """parameters of the modules that have a rule and ran (thop's parameter count)"""
    by_module: dict[str, int]
    """module path (``"decoder2.up"``) -> its MACs, for every module that has a rule and ran"""


def thop_count(model: nn.Module, *inputs, rules: str = "thop-0.0.31") -> ThopCount:
    """Count one forward pass of ``model(*inputs)`` the way the thop profiler does.

    The UNETR and Swin UNETR papers give "FLOPs" without saying how they counted. Their figures,
    41.19 G and 394.84 G, are half of what thop 0.0.31 reports (chapter 6, 06_unetr, §6.7, and
    chapter 7, 07_swin_unetr, §7.10, check it), so this function counts by thop's rules, written
    from scratch with forward hooks (tests/test_tools.py checks it against thop itself).

    thop puts a forward hook on every module whose *exact* type has a rule (a subclass is not
    counted) and adds up what the hooks compute from the shapes; a module without a rule counts
    0 and its children are visited instead. The rules, and how they differ from the true count
    of :func:`count_flops` (FlopCounterMode, every matrix product and convolution that runs):

    - ``Conv1d/2d/3d``: output elements x C_in / groups x kernel taps. This is the true count
      (0.0.31 adds 1 per output element for the bias, which the true count leaves out).
    - ``ConvTranspose1d/2d/3d``: the *same formula*, on the output elements. A transposed
      convolution with kernel = stride = 2 in 3D turns each input voxel into a 2³ block, so each
      output element receives one tap per input channel, not 8: the true count is output
      elements x C_in, and thop counts **8 times too much** (stride³ in general).
    - ``Linear``: output elements x in_features, the true count.
    - ``LeakyReLU``: 1 per element in 0.0.31, 0 in 0.1.1; the true count has no elementwise work.
    - norms: 0.0.31 has no rule for ``LayerNorm`` or ``InstanceNorm``, so they count 0 (and
      their parameters are not counted); 0.1.1 counts 2 per element, 4 with learned weights.
      ``BatchNorm`` counts 2 per element in 0.0.31. This library's ``InstanceNorm`` is its own
      module and counts 0 in both.
    - ``Softmax`` modules: 3n - 1 per row of n in 0.1.1 only.
    - everything else counts 0: ``GELU``, and above all **the attention products q kᵀ and A v**,
      which are ``torch.matmul`` (or ``einsum``, or fused) calls inside an attention module, not
      modules, so no hook sees them.

    Parameters are counted as thop counts them: those of the modules with a rule that ran. A
    parameter held directly by a module without a rule is left out: UNETR's ``E_pos``, Swin's
    relative position bias tables, and (0.0.31) every LayerNorm's weights. That is how the
    papers' 92.58 M and 61.98 M come about.

    One difference from thop: a bare layer passed as ``model`` is counted (thop 0.0.31's
    ``profile`` returns 0 for a model without children).

    Args:
        model: the network; it runs once under ``no_grad`` (on the ``meta`` device too, since the
            rules read only shapes).
        inputs: its positional inputs.
        rules: a key of :data:`THOP_RULES`, ``"thop-0.0.31"`` (the papers') or ``"thop-0.1.1"``.

    Returns:
        a :class:`ThopCount` (``macs``, ``params``, ``by_module``).
    """
    if rules not in THOP_RULES:
        raise ValueError(f"rules must be one of {sorted(THOP_RULES)}, got {rules!r}")
    table = THOP_RULES[rules]
    counted: dict[str, nn.Module] = {}

    def visit(module: nn.Module, path: str) -> None:
        # thop's walk: a module with a rule is counted as a whole (its children are not visited),
        # except containers, whose children are; a module without a rule hands over to its children
        if type(module) in table and not isinstance(module, (nn.Sequential, nn.ModuleList)):
            counted[path] = module
            return
        for name, child in module.named_children():
            visit(child, f"{path}.{name}" if path else name)

    visit(model, "")
    macs = dict.fromkeys(counted, 0)
    ran: set[str] = set()

    def hook_for(path: str, rule: Callable):
        def hook(module, args, output):
            macs[path] += int(rule(module, args[0], output))
            ran.add(path)
        return hook

    handles = [module.register_forward_hook(hook_for(path, table[type(module)])) for path, module in counted.items()]
    try:
        with torch.no_grad():
            model(*inputs)
    finally:
        for handle in handles:
            handle.remove()
    by_module = {path: macs[path] for path in counted if path in ran}
    params = sum(p.numel() for path in by_module for p in counted[path].parameters())
    return ThopCount(sum(by_module.values()), params, by_module)


def paper_gflops(model: nn.Module, *inputs) -> float:
    """The "GFLOPs" of the UNETR and Swin UNETR papers: half of thop 0.0.31's MAC count, in G.

    Half, not double: a FLOP count with 2 FLOPs per multiply-accumulate would be *twice* the MACs.
    The papers do not say why they halved; both figures, 41.19 and 394.84, simply equal half of
    ``thop_count(model, x).macs`` to two decimals for the configurations chapters 6 and 7 build.
    The result is therefore neither FLOPs nor MACs: about 0.56 (UNETR) and 0.51 (Swin UNETR) of the
    true MAC count. Use it only to compare with those tables; see :func:`thop_count` for the rules.
    """
    return thop_count(model, *inputs, rules="thop-0.0.31").macs / 2e9
