"""The scales of Part III and the runner that executes chapters 8 to 11 with their outputs.

Chapters 8 (training), 9 (evaluation), 10 (ablations) and 11 (open questions) train models, so
the book build does not execute them: their pages show the outputs of one committed run. This module holds the
three sizes such a run can have, and the command that makes one::

    python -m unetr_lib.book run --scale cpu    # the CPU reference run (hours on 2 cores; see README)
    python -m unetr_lib.book run --scale gpu    # the papers' model sizes on one H100/H200
    python -m unetr_lib.book run --scale smoke  # the code path in a few minutes (what CI runs)

Each chapter's ``parameters`` cell holds ``SCALE = "cpu"``; the runner writes the scale into
that line, executes the notebook from the ``book/`` folder (so ``../data`` and ``../runs`` are
the repository's), and writes it back with its outputs; the notebook itself writes its record,
``book/results/<chapter>.json``. In smoke mode everything goes to a temporary folder and
``book/`` is left alone.

A run cut off at any point continues where it stopped when the same command is run again:
training goes through :func:`unetr_lib.experiments.train_in_chunks`, whose ledger remembers
every finished step, and a chapter that has finished at this scale (with the same code) is not
executed again (``runs/book-<scale>.json`` remembers which).

Budgets are in steps, not minutes: how busy the machine is changes how long a run takes, never
its result. Every run records both its steps and its minutes.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import platform
import re
import sys
import tempfile
import time
from pathlib import Path

from .config import BOOK_SHAPE, SMALL_MODELS
from .experiments import RESULTS_DIR_VARIABLE, SESSION_MINUTES_VARIABLE, SMOKE_DIR_VARIABLE

CHAPTERS = ("08_training", "09_evaluation", "10_ablations", "11_open_questions")
"""The chapters the runner executes, in order (9 and 10 read chapter 8's data and runs; 11 its data and record)."""
SCALE_LINE = re.compile(r'^SCALE\s*=\s*"(\w+)"', re.M)


@dataclasses.dataclass(frozen=True)
class BookScale:
    """The sizes of one run of Part III.

    Attributes:
        name: "smoke", "cpu" or "gpu".
        device: the device the scale is made for ("cpu" or "cuda").
        profile: the hardware profile of :mod:`unetr_lib.config` its runs start from.
        shape: voxels of each synthetic case (H, W, D).
        voxel_mm: the voxel size of the synthetic cases, in millimetres.
        n_cases: synthetic cases for training and validation (made with seed 0).
        n_held_out: synthetic held-out cases (made with seed 1: never trained or validated on).
        val_fraction: the share of ``n_cases`` that validates (and picks the best checkpoint).
        settings: settings every run of the scale shares (on top of the profile).
        models: per model, settings that differ from ``settings`` (crop, model sizes).
        steps: the step budget of every training run (chapters 8 and 10 alike, so that an
            ablation is compared at an equal number of updates).
        val_every: validate every this many epochs.
        max_minutes: a safety cap per training run (None: none); a run it stops is marked.
        bench_shape: the whole volume of chapter 10's inference timing.
        bench_repeats: timed repetitions of each cost measurement.
    """

    name: str
    device: str
    profile: str
    shape: tuple[int, int, int]
    voxel_mm: float
    n_cases: int
    n_held_out: int
    val_fraction: float
    settings: dict
    models: dict
    steps: int
    val_every: int
    max_minutes: float | None
    bench_shape: tuple[int, int, int]
    bench_repeats: int

    def settings_for(self, model: str) -> dict:
        """The training settings of ``model`` at this scale (``Session.config_for`` takes them)."""
        if model not in self.models:
            raise ValueError(f"the {self.name} scale has no settings for model {model!r}; "
                             f"it has {', '.join(self.models)}")
        settings = {**self.settings, **self.models[model]}
        steps_per_epoch = settings["steps_per_epoch"]
        settings["epochs"] = -(-self.steps // steps_per_epoch)  # enough epochs for the step budget
        settings["val_every"] = self.val_every
        return settings


SCALES = {
    # the code path only: tiny models, a few steps, 64³ volumes (CI runs this)
    "smoke": BookScale(
        name="smoke", device="cpu", profile="cpu", shape=(64, 64, 64), voxel_mm=1.0, n_cases=3, n_held_out=2,
        val_fraction=0.34, settings=dict(batch_size=1, warmup_steps=2, steps_per_epoch=1, num_workers=0,
                                         overlap=0.25),
        models={"unetr": dict(roi=(32, 32, 32), model_kwargs=dict(feature_size=8, hidden_size=96, mlp_dim=192,
                                                                  num_layers=4, num_heads=4)),
                "swin_unetr": dict(roi=(64, 64, 64), model_kwargs=dict(feature_size=6, num_heads=(1, 1, 1, 1))),
                "unet3d": dict(roi=(32, 32, 32), model_kwargs=dict(channels=(8, 16, 32, 64))),
                "setr": dict(roi=(32, 32, 32), model_kwargs=dict(hidden_size=96, mlp_dim=192, num_layers=4,
                                                                 num_heads=4, decoder_channels=8))},
        steps=3, val_every=3, max_minutes=None, bench_shape=(64, 64, 64), bench_repeats=1),
    # the CPU reference run: the cpu profile's book scale (2 mm cases, 64³ crops, small models,
    # bf16 where the CPU has it), 1,000 steps per run: about 8-15 minutes per model on 2 quiet cores
    "cpu": BookScale(
        name="cpu", device="cpu", profile="cpu", shape=BOOK_SHAPE, voxel_mm=2.0, n_cases=32, n_held_out=8,
        val_fraction=0.125, settings=dict(steps_per_epoch=50), models={m: {} for m in SMALL_MODELS},
        steps=1000, val_every=4, max_minutes=None, bench_shape=BOOK_SHAPE, bench_repeats=3),
    # the papers' model sizes and 128³ crops on one H100/H200 (the h100 profile: batch 2, bf16),
    # sized so that chapters 8-10 and unetr-bench fit into one 9-minute call (benchmarks/README.md)
    "gpu": BookScale(
        name="gpu", device="cuda", profile="h100", shape=(240, 240, 155), voxel_mm=1.0, n_cases=32, n_held_out=6,
        val_fraction=0.125, settings=dict(steps_per_epoch=50, warmup_steps=50, num_workers=8),
        models={"unetr": {}, "swin_unetr": {}, "unet3d": dict(model_kwargs=dict(channels=(32, 64, 128, 256, 320))),
                "setr": {}},
        steps=250, val_every=2, max_minutes=1.0, bench_shape=(240, 240, 155), bench_repeats=3),
}


def book_scale(name: str) -> BookScale:
    """The scale called ``name``; a GPU scale on a machine without CUDA is refused."""
    if name not in SCALES:
        raise ValueError(f"unknown scale {name!r}; choose one of {', '.join(SCALES)}")
    scale = SCALES[name]
    if scale.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ValueError(f"the {name} scale needs a CUDA GPU and this machine has none; "
                             "use --scale cpu (or smoke)")
    return scale


def json_number(x) -> float | None:
    """``x`` as a float for a results file, with NaN (and None) as None, which JSON can hold."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def cpu_name() -> str:
    """The processor's model name (Linux: /proc/cpuinfo), else what ``platform`` knows."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment() -> dict:
    """What a results file records about the machine: device, CPU cores, load, versions.

    ``cpu_capability`` is the widest vector instruction set PyTorch's CPU kernels use here
    ("AVX2", "AVX512", ...): two machines that report the same processor name can differ in it,
    and then they add and round in other orders, so one seed need not give one result on both.
    ``numpy`` is recorded because the synthetic cases are made with it."""
    import monai
    import numpy
    import torch

    from . import __version__

    cuda = torch.cuda.is_available()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"device": torch.cuda.get_device_name(0) if cuda else cpu_name(),
            "cpu_cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1_5_15": None if load is None else [round(x, 2) for x in load],
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch": torch.__version__, "monai": monai.__version__, "numpy": numpy.__version__,
            "unetr_lib": __version__,
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d")}


GLUE_PREFIX = "application/papermill.record/"
"""Where myst-nb looks for a glued value in a cell's outputs (``myst_nb.glue(..., display=False)``)."""


def glue(name: str, value) -> None:
    """Make ``value`` citable in the chapter's text as ``{glue:text}`name```, so that a number in a
    sentence is the number the run computed: the output myst-nb's ``glue(name, value,
    display=False)`` writes, made with IPython alone, so that a machine without myst-nb (a bare GPU
    machine) writes the same notebook."""
    from IPython.core.formatters import format_display_data
    from IPython.display import display

    bundle, metadata = format_display_data(value)
    metadata["scrapbook"] = dict(name=name, mime_prefix=GLUE_PREFIX)
    display({GLUE_PREFIX + k: v for k, v in bundle.items()}, raw=True, metadata=metadata)


# ----------------------------------------------------------------------------- the runner

def set_scale(source: str, scale: str, chapter: str = "the notebook") -> str:
    """The ``parameters`` cell's source with its ``SCALE = "..."`` line set to ``scale``."""
    if len(SCALE_LINE.findall(source)) != 1:
        raise ValueError(f'{chapter}: its parameters cell needs exactly one line SCALE = "..."')
    return SCALE_LINE.sub(f'SCALE = "{scale}"', source)


def prepared(path: Path, scale: str):
    """The notebook at ``path``, outputs cleared, its parameters cell set to ``scale``."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    cells = [c for c in nb.cells if c.cell_type == "code" and "parameters" in c.metadata.get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path.name} needs exactly one code cell tagged 'parameters', found {len(cells)}")
    cells[0].source = set_scale(cells[0].source, scale, path.name)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    return nb


def code_hash(nb) -> str:
    """A hash of the notebook's code cells: a finished chapter runs again only when its code changed."""
    code = "\n\0".join(c.source for c in nb.cells if c.cell_type == "code")
    return hashlib.sha256(code.encode()).hexdigest()[:16]


def run(scale: str, book: Path = Path("book"), chapters: tuple[str, ...] = CHAPTERS, out: Path | None = None,
        session_minutes: float | None = None, timeout: int = 4 * 3600, force: bool = False, log=print) -> Path:
    """Execute ``chapters`` at ``scale`` in order and write each back with its outputs.

    Args:
        scale: "smoke", "cpu" or "gpu" (see :data:`SCALES`).
        book: the folder of the notebooks.
        chapters: which chapters, in order.
        out: where executed notebooks go. Default: back into ``book`` (cpu, gpu), a new
            temporary folder (smoke). Results files go to ``out/results`` unless ``out`` is ``book``.
        session_minutes: how long the training cells may train in this call; a chapter that runs
            out of time stops with an error and the next call continues it.
        timeout: the most seconds one cell may run.
        force: execute even the chapters already finished at this scale.

    Returns:
        The folder the executed notebooks were written to.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    book_scale(scale)  # refuse an unknown scale, or a GPU scale without a GPU, before anything runs
    book = Path(book).resolve()
    missing = [c for c in chapters if not (book / f"{c}.ipynb").exists()]
    if missing:
        raise ValueError(f"{book} has no notebook for {', '.join(missing)}; chapters are {', '.join(CHAPTERS)}")
    smoke = scale == "smoke"
    if out is None:
        out = Path(tempfile.mkdtemp(prefix="unetr-book-smoke-")) if smoke else book
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {}
    if smoke:  # the chapters share one temporary folder of data and runs
        env[SMOKE_DIR_VARIABLE] = str(out / "work")
    if out != book:
        env[RESULTS_DIR_VARIABLE] = str(out / "results")
    if session_minutes is not None:
        env[SESSION_MINUTES_VARIABLE] = str(session_minutes)
    state_path = (out / "work" / "runs" if smoke else book.parent / "runs") / f"book-{scale}.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for chapter in chapters:
            nb = prepared(book / f"{chapter}.ipynb", scale)
            digest = code_hash(nb)
            if not force and state.get(chapter, {}).get("code") == digest and (out / f"{chapter}.ipynb").exists():
                log(f"{chapter}: finished at scale {scale} already (same code); skipped")
                continue
            started = time.monotonic()
            log(f"{chapter}: executing at scale {scale} ...")
            client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                    resources={"metadata": {"path": str(book)}})
            try:
                client.execute()
            except CellExecutionError as error:
                failed = out / f"{chapter}.failed.ipynb"
                nbformat.write(nb, failed)
                first = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip().splitlines()  # without colours
                raise RuntimeError(f"{chapter} stopped with an error (its outputs so far: {failed}); run the same "
                                   f"command again to continue. {first[-1] if first else ''}") from None
            nbformat.write(nb, out / f"{chapter}.ipynb")
            minutes = (time.monotonic() - started) / 60
            state[chapter] = {"code": digest, "minutes": round(minutes, 2), "finished": time.strftime("%Y-%m-%d %H:%M"),
                              "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()]}
            state_path.parent.mkdir(parents=True, exist_ok=True)
            state_path.write_text(json.dumps(state, indent=2) + "\n")
            log(f"{chapter}: done in {minutes:.1f} min -> {out / (chapter + '.ipynb')}")
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m unetr_lib.book",
                                     description="Execute the book's training chapters (8-10) with their outputs.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("run", help="execute chapters 8, 9 and 10 at a scale, resumably")
    p.add_argument("--scale", required=True, choices=sorted(SCALES), help="smoke (CI), cpu (reference run) or gpu")
    p.add_argument("--book", type=Path, default=Path("book"), help="the folder of the notebooks (default: book)")
    p.add_argument("--chapters", nargs="+", default=list(CHAPTERS), choices=CHAPTERS, help="which chapters, in order")
    p.add_argument("--out", type=Path, default=None,
                   help="where the executed notebooks and results go (default: book/, or a temporary folder for smoke)")
    p.add_argument("--session-minutes", type=float, default=None,
                   help="stop training after this many minutes; run the command again to continue")
    p.add_argument("--force", action="store_true", help="execute chapters that finished at this scale already")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        out = run(args.scale, args.book, tuple(args.chapters), args.out, args.session_minutes, force=args.force)
    except (ValueError, RuntimeError) as error:
        print(f"python -m unetr_lib.book: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("python -m unetr_lib.book: interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    print(f"executed notebooks in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
