"""The book's tools: shape checks, timers (counted, not timed), FLOP and memory counters."""

import math
import os

import numpy as np
import pytest
import torch
from torch import nn

from unetr_lib import bench, tools
from unetr_lib.nets import UNETR, MultiHeadSelfAttention, SwinUNETR
from unetr_lib.tools import (ShapeError, best_time, check_shape, count_flops, count_parameters, flops_by_module,
                             median_time, paper_gflops, peak_memory_mib, thop_count, time_calls)


def test_check_shape_passes_returns_and_prints(capsys):
    x = torch.zeros(2, 3, 4)
    assert check_shape(x, (2, 3, 4)) is x
    assert capsys.readouterr().out == ""  # quiet without a name
    assert check_shape(x, (2, None, -1), "tokens (B, N, K)") is x  # wildcards
    out = capsys.readouterr().out
    assert out.startswith("tokens (B, N, K)") and out.rstrip().endswith("(2, 3, 4)")
    array = np.zeros((5, 6), np.uint8)
    assert check_shape(array, (5, 6)) is array
    assert check_shape(torch.Size([1, 8]), (1, 8)) == torch.Size([1, 8])  # a recorded shape
    assert check_shape((3, 4), [np.int64(3), 4]) == (3, 4)


def test_check_shape_failure_names_both_shapes():
    with pytest.raises(ShapeError, match=r"z0: expected shape \(1, 512, 768\), got \(1, 216, 768\) \(axis 1 differs\)"):
        check_shape(torch.zeros(1, 216, 768), (1, 512, 768), "z0")
    with pytest.raises(ShapeError, match=r"3 axes instead of 2"):
        check_shape(torch.zeros(1, 2, 3), (1, 2))
    # a failed check is both an AssertionError (a check, as d2l's assert) and a ValueError (a bad input)
    for kind in (AssertionError, ValueError):
        with pytest.raises(kind):
            check_shape(torch.zeros(2), (3,))


def test_check_shape_refuses_what_is_not_a_shape():
    with pytest.raises(ValueError, match="expected must hold ints"):
        check_shape(torch.zeros(2), ("2",))
    with pytest.raises(ValueError, match="takes a tensor"):
        check_shape("abc", (3,))


class FakeClock:
    """perf_counter that advances only when a timed function runs: durations are exact."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def function(self, durations, calls):
        it = iter(durations)

        def fn():
            calls.append(fn)
            self.now += next(it)
        return fn


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(bench.time, "perf_counter", fake)
    return fake


def test_timers_count_calls_and_reduce_exactly(clock):
    calls = []
    fn = clock.function([9.0, 9.0, 3.0, 1.0, 2.0], calls)  # two warm-up calls, then three timed
    assert best_time(fn, repeat=3, warmup=2) == 1.0
    assert len(calls) == 5
    calls.clear()
    fn = clock.function([9.0, 3.0, 1.0, 2.0], calls)
    assert median_time(fn, repeat=3, warmup=1) == 2.0
    assert len(calls) == 4


def test_time_calls_interleaves_and_alternates_who_goes_first(clock):
    order = []
    a, b = clock.function([1.0] * 4, order), clock.function([2.0] * 4, order)
    times = time_calls({"a": a, "b": b}, repeat=3, warmup=1)
    assert times == {"a": [1.0, 1.0, 1.0], "b": [2.0, 2.0, 2.0]}
    assert order == [a, b, a, b, b, a, a, b]  # warm-up, then rounds a-b, b-a, a-b


def test_real_timer_is_positive():
    assert best_time(lambda: sum(range(1000)), repeat=2, warmup=0) > 0
    assert median_time(lambda: sum(range(1000)), repeat=1, warmup=0) > 0


def test_timers_refuse_bad_arguments():
    with pytest.raises(ValueError, match="repeat must be >= 1"):
        best_time(lambda: None, repeat=0)
    with pytest.raises(ValueError, match="warmup"):
        median_time(lambda: None, warmup=-1)
    with pytest.raises(ValueError, match="at least one function"):
        time_calls({})


def test_count_flops_of_linear_and_conv_equal_the_formulas():
    B, n_in, n_out = 4, 10, 7
    assert count_flops(nn.Linear(n_in, n_out), torch.randn(B, n_in)) == 2 * B * n_in * n_out
    C_in, C_out, k, side = 3, 5, 3, 8
    conv = nn.Conv3d(C_in, C_out, k, padding=1)
    assert count_flops(conv, torch.randn(1, C_in, side, side, side)) == 2 * side**3 * C_out * C_in * k**3
    a, b = torch.randn(6, 5), torch.randn(5, 4)
    assert count_flops(lambda: a @ b) == 2 * 6 * 5 * 4  # any function, no arguments
    with torch.device("meta"):  # counted without computing
        assert count_flops(nn.Linear(n_in, n_out), torch.empty(B, n_in)) == 2 * B * n_in * n_out


def test_flops_by_module_adds_up():
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
    counts = flops_by_module(model, torch.randn(3, 8))
    assert counts["Sequential.0"] == 2 * 3 * 8 * 16 and counts["Sequential.2"] == 2 * 3 * 16 * 2
    assert counts["Global"] == counts["Sequential"] == counts["Sequential.0"] + counts["Sequential.2"]
    assert counts["Global"] == count_flops(model, torch.randn(3, 8))


def test_cpu_flop_count_misses_the_fused_attention_kernel():
    """The trap count_flops warns about: on the CPU the SDPA path's q kᵀ and A v go uncounted."""
    N, K = 64, 96
    z = torch.randn(1, N, K)
    explicit = MultiHeadSelfAttention(K, 4, attention="explicit")
    sdpa = MultiHeadSelfAttention(K, 4, attention="sdpa")
    sdpa.load_state_dict(explicit.state_dict())
    assert count_flops(explicit, z) - count_flops(sdpa, z) == 2 * (2 * N * N * K)


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs")
def test_peak_memory_sees_a_large_allocation():
    def allocate():
        x = torch.ones(32 * 2**20 // 4)  # 32 MiB of float32, touched
        return float(x[-1])

    garbage = [torch.ones(40 * 2**20 // 4) for _ in range(4)]  # memory freed before the measurement ...
    del garbage  # ... must not hide the rise (the allocator hands free memory back first)
    assert 24 < peak_memory_mib(allocate) < 64


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="needs Linux's /proc/self/clear_refs")
def test_peak_memory_in_a_fresh_process():
    """The same measurement where nothing else ran before (the test above shares its process with the suite)."""
    import subprocess
    import sys

    code = ("import torch; from unetr_lib.tools import peak_memory_mib; "
            "print(peak_memory_mib(lambda: float(torch.ones(32 * 2**20 // 4)[-1])))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert 24 < float(out.stdout.strip().splitlines()[-1]) < 64


def test_peak_memory_without_proc_is_nan(monkeypatch):
    monkeypatch.setattr(tools, "cpu_peak_rise_gib", lambda fn: None)
    assert math.isnan(peak_memory_mib(lambda: None))


def test_count_parameters_is_the_library_one():
    assert count_parameters(nn.Linear(3, 2)) == 3 * 2 + 2


# ----- thop_count: the convention of the papers' FLOP tables (chapters 6 and 7) -----

def thop_0_1_1():
    """The thop profiler of the test extra (thop 0.1.1); its rules are THOP_RULES["thop-0.1.1"]."""
    thop = pytest.importorskip("thop")
    if not getattr(thop, "__version__", "").startswith("0.1.1"):
        pytest.skip(f"needs thop 0.1.1 (the test extra's), found {getattr(thop, '__version__', '?')}")
    return thop


def thop_macs(model, x):
    import contextlib
    import io

    with contextlib.redirect_stdout(io.StringIO()):  # thop prints a line per module type
        macs, params = thop_0_1_1().profile(model, (x,), verbose=False)
    return int(macs), int(params)


def small_models():
    """Small UNETR and Swin UNETR, ours and MONAI's, with their inputs: every module type of the big ones.

    On the meta device (the rules read only shapes), so that counting costs no arithmetic."""
    from monai.networks.nets import UNETR as MonaiUNETR
    from monai.networks.nets import SwinUNETR as MonaiSwinUNETR

    unetr = dict(img_size=32, feature_size=8, hidden_size=48, mlp_dim=96, num_heads=4)
    x_unetr = torch.empty(1, 2, 32, 32, 32, device="meta")  # (B, C, H, W, D)
    x_swin = torch.empty(1, 2, 64, 64, 64, device="meta")
    models = [("ours UNETR", UNETR(2, 3, **unetr), x_unetr), ("MONAI UNETR", MonaiUNETR(2, 3, **unetr), x_unetr),
              ("ours Swin UNETR", SwinUNETR(2, 3, feature_size=12), x_swin),
              ("MONAI Swin UNETR", MonaiSwinUNETR(in_channels=2, out_channels=3, feature_size=12), x_swin)]
    return [(name, model.to("meta").eval(), x) for name, model, x in models]


def test_thop_count_equals_thop_on_small_models():
    for name, model, x in small_models():
        count = thop_count(model, x, rules="thop-0.1.1")
        assert (count.macs, count.params) == thop_macs(model, x), name
        assert count.macs == sum(count.by_module.values())


def test_thop_counts_a_transposed_convolution_eight_times():
    """The rule behind the papers' numbers: a 2×2×2, stride-2 transposed conv counted on its output voxels."""
    up = nn.ConvTranspose3d(16, 8, kernel_size=2, stride=2)
    x = torch.randn(1, 16, 6, 6, 6)  # (B, C_in, 6³) -> (B, C_out, 12³)
    true_macs = count_flops(up, x) // 2
    assert true_macs == 6**3 * 16 * 8 * 2**3  # input voxels x C_in x C_out x kernel taps
    assert thop_count(up, x, rules="thop-0.1.1").macs == thop_macs(up, x)[0] == 8 * true_macs
    assert thop_count(up, x).macs == 8 * true_macs + 12**3 * 8  # thop 0.0.31 adds 1 per output for the bias


def test_thop_rules_differ_where_documented():
    """thop 0.0.31 (the papers') against 0.1.1: bias, LeakyReLU and the norms."""
    model = nn.Sequential(nn.Conv3d(2, 4, 3, padding=1), nn.InstanceNorm3d(4), nn.LeakyReLU(),
                          nn.Linear(6, 5, bias=False), nn.LayerNorm(5))
    x = torch.randn(1, 2, 6, 6, 6)
    n, conv = 4 * 6**3, 4 * 6**3 * 2 * 27  # conv output elements, its multiply-accumulates
    linear = 4 * 6 * 6 * 5 * 6
    old, new = thop_count(model, x), thop_count(model, x, rules="thop-0.1.1")
    assert old.by_module == {"0": conv + n, "2": n, "3": linear}  # no rule for the norms
    assert new.by_module == {"0": conv, "1": 2 * n, "2": 0, "3": linear, "4": 2 * 2 * (4 * 6 * 6 * 5)}
    assert old.params == count_parameters(model) - 2 * 5  # the LayerNorm's weights are not counted
    with pytest.raises(ValueError, match="rules must be one of"):
        thop_count(model, x, rules="fvcore")


def test_papers_figures_are_half_of_thop_0_0_31():
    """UNETR's 41.19 G / 92.58 M (1 channel, 96³) and Swin UNETR's 394.84 G / 61.98 M (4 -> 3, 128³, f = 48).

    Counted on the meta device: the full-size models cost no memory and no arithmetic here."""
    from monai.networks.nets import UNETR as MonaiUNETR

    with torch.device("meta"):
        x_ct, x_brats = torch.empty(1, 1, 96, 96, 96), torch.empty(1, 4, 128, 128, 128)
        btcv, binary, monai_btcv = UNETR(1, 14, 96), UNETR(1, 2, 96), MonaiUNETR(1, 14, 96)
        swin = SwinUNETR(4, 3, feature_size=48)
    assert round(paper_gflops(binary, x_ct), 2) == 41.19  # 2 output channels; 14 give 41.28
    assert round(paper_gflops(btcv, x_ct), 2) == 41.28
    assert thop_count(btcv, x_ct)[:2] == thop_count(monai_btcv, x_ct)[:2]  # MONAI's model: the same MACs, params
    assert round(thop_count(btcv, x_ct).params / 1e6, 2) == 92.58
    assert count_parameters(btcv) - thop_count(btcv, x_ct).params == 216 * 768 + 25 * 2 * 768  # E_pos, 25 LayerNorms
    assert round(paper_gflops(swin, x_brats), 2) == 394.84
    assert round(thop_count(swin, x_brats).params / 1e6, 2) == 61.98
    assert round(paper_gflops(btcv, x_ct) / (count_flops(btcv, x_ct) / 2e9), 2) == 0.56  # paper / true MACs
    assert round(paper_gflops(swin, x_brats) / (count_flops(swin, x_brats) / 2e9), 2) == 0.51
