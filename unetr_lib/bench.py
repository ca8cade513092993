"""``unetr-bench``: time our UNETR and Swin UNETR against MONAI's, side by side.

Both implementations get identical weights (ours loaded from MONAI's with
:func:`unetr_lib.nets.load_monai_state_dict`) and the identical input; their runs are
interleaved, alternating which goes first, so that both see the same machine state. On the CPU
the task is the forward pass in inference mode; on CUDA it is forward + backward. Reported per
model: median seconds, the ratio ours / MONAI (below 1 is faster), peak memory, and the largest
absolute difference between the two outputs.

Peak memory: on CUDA ``torch.cuda.max_memory_allocated``; on the CPU (Linux) how far the resident
set size peaks above its level before one forward pass, measured in a fresh process for each
implementation so that neither inherits the other's freed memory.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .nets import MONAI_TAPS, UNETR, SwinUNETR, load_monai_state_dict

GiB = 2**30

# name -> (our class, our kwargs, MONAI kwargs); sizes of the full benchmark and of --small
CONFIGS = {
    "unetr": {
        "full": dict(size=128, ours=dict(in_channels=4, out_channels=3, taps=MONAI_TAPS),
                     monai=dict(in_channels=4, out_channels=3)),
        "small": dict(size=32, ours=dict(in_channels=4, out_channels=3, hidden_size=96, mlp_dim=192, num_heads=4,
                                         taps=MONAI_TAPS),
                      monai=dict(in_channels=4, out_channels=3, hidden_size=96, mlp_dim=192, num_heads=4)),
    },
    "swin_unetr": {
        "full": dict(size=96, ours=dict(in_channels=4, out_channels=3, feature_size=48),
                     monai=dict(in_channels=4, out_channels=3, feature_size=48)),
        "small": dict(size=64, ours=dict(in_channels=4, out_channels=3, feature_size=12, num_heads=(1, 2, 2, 4)),
                      monai=dict(in_channels=4, out_channels=3, feature_size=12, num_heads=(1, 2, 2, 4))),
    },
}


def import_monai():
    """MONAI is the reference; it comes with the ``test`` and ``book`` extras."""
    try:
        import monai.networks.nets as monai_nets
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise SystemExit("unetr-bench compares with MONAI: pip install -e '.[test]' (or pip install monai)") from error
    return monai_nets


def build_model(model: str, size_name: str, which: str, size: int | None = None) -> tuple[nn.Module, tuple[int, ...]]:
    """One model with random weights, ``which`` = "ours" or "monai", and its input shape."""
    cfg = CONFIGS[model][size_name]
    side = size or cfg["size"]
    shape = (1, cfg["ours"]["in_channels"], side, side, side)
    if which == "ours":
        net = UNETR(img_size=side, **cfg["ours"]) if model == "unetr" else SwinUNETR(**cfg["ours"])
    else:
        monai_nets = import_monai()
        net = monai_nets.UNETR(img_size=side, **cfg["monai"]) if model == "unetr" else monai_nets.SwinUNETR(**cfg["monai"])
    return net, shape


def build_pair(model: str, size_name: str, size: int | None = None) -> tuple[nn.Module, nn.Module, tuple[int, ...]]:
    """MONAI's model with random weights, ours with the same weights, and the input shape."""
    torch.manual_seed(0)
    reference, shape = build_model(model, size_name, "monai", size)
    ours, _ = build_model(model, size_name, "ours", size)
    load_monai_state_dict(ours, reference.state_dict())
    return ours, reference, shape


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_step(model: nn.Module, x: torch.Tensor, device: torch.device) -> Callable[[], torch.Tensor]:
    """One benchmark step: forward in inference mode on the CPU, forward + backward on CUDA."""
    if device.type == "cpu":
        def step() -> torch.Tensor:
            with torch.inference_mode():
                return model(x)
    else:
        def step() -> torch.Tensor:
            model.zero_grad(set_to_none=True)
            out = model(x)
            out.float().square().mean().backward()
            return out.detach()
    return step


def interleaved_times(steps: dict[str, Callable[[], object]], repeats: int, warmup: int,
                      device: torch.device) -> dict[str, list[float]]:
    """Run each step ``warmup`` times, then ``repeats`` rounds, alternating who goes first.

    Returns the seconds of every timed call, per step name. On CUDA every call is bracketed by
    ``torch.cuda.synchronize`` so that the time is the GPU's, not the launch's. The book's timers
    (:mod:`unetr_lib.tools`) are built on this one."""
    names = list(steps)
    for _ in range(warmup):
        for name in names:
            steps[name]()
    sync(device)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            sync(device)
            start = time.perf_counter()
            steps[name]()
            sync(device)
            times[name].append(time.perf_counter() - start)
    return times


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _release_free_memory() -> None:
    """Return the memory glibc's allocator holds free to the system (no-op elsewhere), so that a
    later allocation of that size shows as a rise of the resident set size."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def cpu_peak_rise_gib(fn: Callable[[], object]) -> float | None:
    """How far this process's resident set size peaks above its level just before ``fn()``, in
    GiB: the memory ``fn`` needed. Linux only: ``/proc/self/clear_refs`` resets the peak
    (``VmHWM``) to the current size; None where that file cannot be written.

    Memory that the allocator freed earlier and reuses does not show as a rise, so small peaks
    read as about 0 (chapter 3 discusses this). To keep that small, the C allocator first hands
    the free memory it holds back to the system (glibc's ``malloc_trim``, where there is one)."""
    _release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current resident size
    except OSError:
        return None
    before = _proc_status_kib("VmRSS")
    fn()
    return (_proc_status_kib("VmHWM") - before) * 1024 / GiB


def _cpu_peak_child(model: str, size_name: str, size: int, which: str, threads: int) -> float | None:
    """In a fresh process: build one model and return the peak memory of one forward pass
    (:func:`cpu_peak_rise_gib`), in GiB."""
    torch.set_num_threads(threads)
    net, shape = build_model(model, size_name, which, size)
    net.eval()
    x = torch.randn(shape)

    def forward() -> None:
        with torch.inference_mode():
            net(x)

    return cpu_peak_rise_gib(forward)


def cpu_peak_memory(model: str, size_name: str, size: int, which: str) -> float | None:
    """The forward pass's peak memory on the CPU, measured in a fresh process (Linux only)."""
    if not Path("/proc/self/clear_refs").exists():
        return None
    context = multiprocessing.get_context("spawn")
    with context.Pool(1) as pool:
        return pool.apply(_cpu_peak_child, (model, size_name, size, which, torch.get_num_threads()))


def cuda_peak_memory(step: Callable[[], torch.Tensor], device: torch.device) -> float:
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    step()
    sync(device)
    return torch.cuda.max_memory_allocated(device) / GiB


def bench_model(model: str, size_name: str, size: int | None, device: torch.device, repeats: int,
                warmup: int) -> dict:
    """Benchmark one model: times, ratio, peak memory and output difference."""
    ours, reference, shape = build_pair(model, size_name, size)
    ours, reference = ours.to(device).eval(), reference.to(device).eval()
    x = torch.randn(shape, device=device)
    with torch.inference_mode():
        max_abs_diff = (ours(x) - reference(x)).abs().max().item()
    steps = {"ours": make_step(ours, x, device), "monai": make_step(reference, x, device)}
    times = interleaved_times(steps, repeats, warmup, device)
    result = {
        "model": model,
        "task": "forward" if device.type == "cpu" else "forward_backward",
        "config": {"input_shape": list(shape), "size": size_name, "device": str(device)},
        "max_abs_diff": max_abs_diff,
    }
    for name in ("ours", "monai"):
        if device.type == "cpu":
            peak = cpu_peak_memory(model, size_name, shape[-1], name)
        else:
            peak = cuda_peak_memory(steps[name], device)
        result[name] = {"seconds": statistics.median(times[name]), "all_seconds": times[name], "peak_mem_gib": peak}
    result["time_ratio"] = result["ours"]["seconds"] / result["monai"]["seconds"]
    peaks = result["ours"]["peak_mem_gib"], result["monai"]["peak_mem_gib"]
    result["mem_ratio"] = peaks[0] / peaks[1] if None not in peaks and peaks[1] > 0 else None
    return result


def environment(device: torch.device) -> dict:
    import_monai()
    import monai

    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }


def gib(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_table(results: list[dict]) -> str:
    lines = [f"{'model':<11} {'input':<18} {'ours s':>8} {'MONAI s':>8} {'ratio':>6} "
             f"{'ours GiB':>9} {'MONAI GiB':>9} {'max|diff|':>10}"]
    for r in results:
        shape = "x".join(str(s) for s in r["config"]["input_shape"][1:])
        lines.append(f"{r['model']:<11} {shape:<18} {r['ours']['seconds']:>8.3f} {r['monai']['seconds']:>8.3f} "
                     f"{r['time_ratio']:>6.3f} {gib(r['ours']['peak_mem_gib']):>9} {gib(r['monai']['peak_mem_gib']):>9} "
                     f"{r['max_abs_diff']:>10.2e}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="unetr-bench",
        description="Time unetr_lib's UNETR and Swin UNETR against MONAI's (same weights, same input, "
                    "interleaved runs). CPU: forward pass; CUDA: forward + backward.",
    )
    parser.add_argument("--models", nargs="+", choices=sorted(CONFIGS), default=sorted(CONFIGS),
                        help="which models to benchmark (default: both)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu",
                        help="cpu or cuda (default: cuda when available)")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds per model (default 5)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--small", action="store_true",
                        help="tiny configurations (seconds, for a smoke test) instead of the paper's")
    parser.add_argument("--unetr-size", type=int, default=None, help="UNETR input side (default 128)")
    parser.add_argument("--swin-size", type=int, default=None, help="Swin UNETR input side (default 96)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: PyTorch's choice)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this JSON file")
    parser.add_argument("--overwrite", action="store_true", help="allow --json to replace an existing file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")
    if args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        parser.error(f"--device must be cpu or cuda, got {args.device!r}")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda asked for, but PyTorch sees no CUDA device")
    if args.json is not None and args.json.exists() and not args.overwrite:
        parser.error(f"{args.json} exists; pass --overwrite to replace it")
    for flag, value in (("--unetr-size", args.unetr_size), ("--swin-size", args.swin_size)):
        if value is not None and (value <= 0 or value % 32):
            parser.error(f"{flag} must be a positive multiple of 32, got {value}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    size_name = "small" if args.small else "full"
    sizes = {"unetr": args.unetr_size, "swin_unetr": args.swin_size}
    report = {**environment(device), "results": []}
    for model in args.models:
        print(f"benchmarking {model} ...", file=sys.stderr, flush=True)
        report["results"].append(bench_model(model, size_name, sizes[model], device, args.repeats, args.warmup))
    print(f"{report['device']}, torch {report['torch']}, MONAI {report['monai']}, {report['threads']} threads")
    print(format_table(report["results"]))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
