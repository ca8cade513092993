"""What the GPU chapters (8 to 10) share: the set-up of a run of a chapter, and budgeted training.

A chapter starts with ``session = start_session("08_training", SMOKE)``: it decides where data,
runs and results go (a temporary folder in smoke mode, ``../data``, ``../runs`` and
``results/`` next to the book otherwise), the device and the hardware profile, and how long
this run of the notebook may train. ``session.config_for(model, **settings)`` builds a training
configuration with :func:`unetr_lib.config.build_config`.

Training goes through :func:`train_in_chunks`: calls of :func:`unetr_lib.train.train` that stop
after a number of minutes or at a step, each resuming from ``last.pt``, with a *ledger*
(``ledger.json`` in the run's folder) that records the steps, minutes and validations of every
chunk. A budget can be a number of steps (``max_steps``), of minutes (``max_minutes``), or both.
Because ``train()`` restores everything from ``last.pt`` and draws the batch of step t from
(seed, t) alone, a run cut into chunks equals a straight run. Chapter 8 (08_training) explains
this and :func:`train_on_budget`, which fits a run into a budget of minutes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from torch.utils.data import Dataset as TorchDataset

from .config import TrainConfig, build_config, detect_profile
from .data import find_cases
from .data.layout import Case
from .data.synthetic_cache import ensure_synthetic
from .data.transforms import make_dataset, train_transforms, val_transforms
from .train import resolve_device, split_cases, train

SMOKE_DIR_VARIABLE = "UNETR_BOOK_SMOKE_DIR"
"""Environment variable: the folder a smoke run writes into (default: a new temporary folder)."""
SESSION_MINUTES_VARIABLE = "UNETR_BOOK_SESSION_MINUTES"
"""Environment variable: how long one run of a notebook may train, when it is not set in the notebook."""
RESULTS_DIR_VARIABLE = "UNETR_BOOK_RESULTS_DIR"
"""Environment variable: the folder of the chapters' ``<chapter>.json`` records (default ``results/``;
in smoke mode, none unless this is set)."""
LEDGER = "ledger.json"
STATUSES = ("new", "finished", "stopped", "capped", "paused", "time limit")


@dataclasses.dataclass
class Session:
    """One run of a GPU chapter: where it reads and writes, on what, and for how long.

    Attributes:
        chapter: the chapter's name, e.g. "08_training"; its runs go to ``runs / chapter``.
        smoke: the quick CPU version (tiny models, a few steps, a temporary folder).
        data_dir: where data sets are made or found.
        runs: the folder of all chapters' runs (``runs / "08_training"`` is chapter 8's).
        results: the small JSON record the book keeps, or None (smoke mode writes no record).
        device: where to train.
        profile: the hardware profile of :mod:`unetr_lib.config` ("cpu" in smoke mode).
        session_minutes: how long this run of the notebook may train (None: no limit).
        started: ``time.monotonic()`` when the session started.
    """

    chapter: str
    smoke: bool
    data_dir: Path
    runs: Path
    results: Path | None
    device: torch.device
    profile: str
    session_minutes: float | None = None
    started: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def run_dir(self) -> Path:
        """This chapter's runs: ``runs / chapter``."""
        return self.runs / self.chapter

    @property
    def cache_root(self) -> Path:
        """The disk caches of all chapters' runs, one folder per pipeline (see :meth:`config_for`)."""
        return self.runs / "cache"

    def record_of(self, chapter: str) -> dict | None:
        """The record ``chapter`` wrote beside this session's own (the same results folder, so the
        same run of the book), or None: in smoke mode, which writes no records, or where there is none."""
        if self.results is None:
            return None
        path = self.results.parent / f"{chapter}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def minutes_left(self) -> float:
        """Minutes left in this run of the notebook (``session_minutes``), or infinity."""
        if self.session_minutes is None:
            return math.inf
        return self.session_minutes - (time.monotonic() - self.started) / 60

    def config_for(self, model: str, name: str | None = None, **settings) -> TrainConfig:
        """A training configuration for this session, built with :func:`~unetr_lib.config.build_config`.

        Defaults: this session's profile, the output folder ``run_dir / (name or model)``, and a
        disk cache in ``cache_root``, one folder per crop size, input channels and target, e.g.
        ``cache_root / "128x128x128-flair+t1+t1ce+t2-regions"``: runs that cache the same tensors
        share it (chapter 10 reuses chapter 8's), runs that cache other tensors never do.
        ``settings`` (any field of :class:`~unetr_lib.config.TrainConfig`) override the defaults.

        Args:
            model: "unetr", "swin_unetr", "unet3d" or "setr".
            name: the run's folder name (default: the model's name).
            settings: further settings, e.g. ``data_root``, ``roi``, ``model_kwargs``.
        """
        base = dict(model=model, profile=self.profile, out_dir=str(self.run_dir / (name or model)), cache="disk")
        config = build_config({**base, **settings})
        if "cache_dir" in settings:
            return config
        target = "classes" if config.loss == "dice_ce" else "regions"
        pipeline = "{}x{}x{}-".format(*config.roi) + "+".join(config.modalities) + f"-{target}"
        return dataclasses.replace(config, cache_dir=str(self.cache_root / pipeline))

    def synthetic(self, n_cases: int, shape: Sequence[int], seed: int = 0, workers: int | None = None,
                  voxel_mm: float = 1.0) -> Path:
        """The folder of a synthetic BraTS-style set in ``data_dir``, made once by
        :func:`~unetr_lib.data.synthetic_cache.ensure_synthetic` with ``workers`` processes
        (default: one per CPU core, at most 16), with voxels of ``voxel_mm`` millimetres."""
        workers = workers or max(1, min(16, os.cpu_count() or 1))
        return ensure_synthetic(self.data_dir, n_cases, seed=seed, shape=tuple(shape), workers=workers,
                                voxel_mm=voxel_mm)


def start_session(chapter: str, smoke: bool, session_minutes: float | None = None,
                  root: str | Path = "..") -> Session:
    """Set up one run of a GPU chapter (chapter 8, 08_training, walks through it).

    Args:
        chapter: the chapter's name, e.g. "08_training".
        smoke: True for the quick CPU version: everything goes to a temporary folder (or to
            ``$UNETR_BOOK_SMOKE_DIR``), the profile is "cpu", and no results file is written.
        session_minutes: how long this run of the notebook may train; None reads
            ``$UNETR_BOOK_SESSION_MINUTES`` and otherwise means no limit.
        root: the repository, seen from the notebook's folder; the full run uses
            ``root/data`` and ``root/runs``, and keeps its record in ``results/<chapter>.json``.
    """
    if not chapter:
        raise ValueError("chapter must name the chapter, e.g. '08_training'")
    if session_minutes is None and os.environ.get(SESSION_MINUTES_VARIABLE):
        session_minutes = float(os.environ[SESSION_MINUTES_VARIABLE])
    if session_minutes is not None and session_minutes <= 0:
        raise ValueError(f"session_minutes must be positive (or None for no limit), got {session_minutes}")
    if smoke:  # nothing is written next to the book
        work = Path(os.environ.get(SMOKE_DIR_VARIABLE) or tempfile.mkdtemp(prefix="unetr-book-"))
        data_dir, runs, results = work / "data", work / "runs", None
    else:
        root = Path(root)
        data_dir, runs, results = root / "data", root / "runs", Path("results") / f"{chapter}.json"
    if os.environ.get(RESULTS_DIR_VARIABLE):  # set by the runner (python -m unetr_lib.book) to write elsewhere
        results = Path(os.environ[RESULTS_DIR_VARIABLE]) / f"{chapter}.json"
    session = Session(chapter, bool(smoke), data_dir, runs, results, resolve_device("auto"),
                      "cpu" if smoke else detect_profile(), session_minutes)
    session.run_dir.mkdir(parents=True, exist_ok=True)
    return session


def link_cases(cases: Sequence[Case], folder: str | Path) -> Path:
    """A folder of symbolic links to ``cases``, in their own layout, so that ``find_cases`` reads
    it: a split (training, held-out) of a data set without copying or touching its files. An
    existing ``folder`` is replaced."""
    folder = Path(folder)
    if not cases:
        raise ValueError(f"no cases to link into {folder}")
    if folder.exists():
        shutil.rmtree(folder)
    for case in cases:
        if case.label is None:
            raise ValueError(f"case {case.case_id} has no label; a split for training and evaluation needs labels")
        if case.layout == "msd":  # imagesTr/, labelsTr/ and the dataset.json that names the labels
            task = case.images[0].parent.parent
            (folder / "imagesTr").mkdir(parents=True, exist_ok=True)
            (folder / "labelsTr").mkdir(parents=True, exist_ok=True)
            shutil.copy(task / "dataset.json", folder / "dataset.json")
            (folder / "imagesTr" / case.images[0].name).symlink_to(case.images[0].resolve())
            (folder / "labelsTr" / case.label.name).symlink_to(case.label.resolve())
        else:  # one folder per case
            (folder / case.case_id).mkdir(parents=True)
            for path in (*case.images, case.label):
                (folder / case.case_id / path.name).symlink_to(path.resolve())
    return folder


class _Touch(TorchDataset):
    """Read every item of a data set once (which fills its cache); return nothing."""

    def __init__(self, data: TorchDataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> int:
        self.data[index]
        return 0


def fill_disk_cache(config: TrainConfig, workers: int | None = None) -> Path:
    """Compute the cached (deterministic) steps of the training and validation pipelines of
    ``config`` for every case, in ``workers`` processes (default ``config.num_workers``), into
    the disk cache that ``train()`` reads. Then every call of ``train()`` reads ready tensors,
    and the first steps time training rather than file loading (chapter 8).

    It builds the data sets exactly as ``train()`` does (same split, pipelines and cache folder)
    and remembers in a marker file that this pipeline is complete, so a second call returns at once.

    Returns:
        The marker file.
    """
    if config.cache != "disk":
        raise ValueError(f'fill_disk_cache fills a disk cache; this configuration has cache="{config.cache}"')
    if config.data_root is None:
        raise ValueError("fill_disk_cache needs config.data_root (the built-in synthetic set is made by train())")
    workers = config.num_workers if workers is None else workers
    target = "classes" if config.loss == "dice_ce" else "regions"
    train_cases, val_cases = split_cases(find_cases(config.data_root), config.val_fraction, config.seed)
    key = json.dumps([str(Path(config.data_root).resolve()), [c.case_id for c in train_cases + val_cases],
                      list(config.roi), list(config.modalities), target])
    marker = Path(config.cache_dir) / f"complete-{hashlib.sha1(key.encode()).hexdigest()[:12]}.json"
    if marker.exists():
        return marker
    for cases, pipeline in ((train_cases, train_transforms(config.roi, target=target, modalities=config.modalities)),
                            (val_cases, val_transforms(target=target, modalities=config.modalities))):
        data = make_dataset(cases, pipeline, "disk", Path(config.cache_dir) / "persistent")
        for _ in DataLoader(_Touch(data), batch_size=None, num_workers=workers):
            pass
    marker.write_text(json.dumps({"data_root": str(config.data_root), "roi": list(config.roi),
                                  "modalities": list(config.modalities), "target": target,
                                  "cases": len(train_cases) + len(val_cases)}, indent=2))
    return marker


def read_ledger(out_dir: str | Path) -> dict:
    """The ledger of the run in ``out_dir`` (see :func:`train_in_chunks`); a new one if there is none.

    Keys: ``status`` (one of ``STATUSES``), ``step`` (steps done), ``total_steps`` (of the
    schedule), ``seconds`` and ``minutes`` (training time, all chunks), ``best_dice``,
    ``peak_memory_gib`` (CUDA only, else None), and ``chunks``: one record per call of
    ``train()`` with ``first_step``, ``last_step``, ``steps``, ``seconds``, ``minutes``,
    ``status``, ``best_dice``, ``peak_memory_gib`` and ``validation`` (the validations of that
    chunk, as logged in ``log.jsonl``).
    """
    path = Path(out_dir) / LEDGER
    if path.exists():
        return json.loads(path.read_text())
    return {"status": "new", "step": 0, "total_steps": None, "seconds": 0.0, "minutes": 0.0, "best_dice": None,
            "peak_memory_gib": None, "chunks": []}


def _validations(log_path: Path, after: int, up_to: int) -> list[dict]:
    """The validation rows of ``log.jsonl`` with after < step <= up_to."""
    if not log_path.exists():
        return []
    rows = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    return [r for r in rows if "val_mean" in r and after < r["step"] <= up_to]


def _schedule_grew(config: TrainConfig, ledger: dict) -> bool:
    """True when ``config`` schedules more steps than the finished run in the ledger had."""
    if config.steps_per_epoch is None or ledger["total_steps"] is None:
        return False
    return config.epochs * config.steps_per_epoch > ledger["total_steps"]


def train_in_chunks(config: TrainConfig, *, max_steps: int | None = None, max_minutes: float | None = None,
                    chunk_minutes: float | None = None, chunk_steps: int | None = None,
                    minutes_left: Callable[[], float] | None = None, reserve_minutes: float = 1.0) -> dict:
    """Train ``config`` in chunks that resume from ``last.pt``, within a budget of steps and/or minutes.

    Each chunk is one call of ``train()`` that stops after ``chunk_minutes`` or ``chunk_steps``
    (whichever comes first) and saves ``last.pt``; the next chunk resumes from it. The ledger in
    ``out_dir/ledger.json`` (see :func:`read_ledger`) records every chunk, so calling this again
    (for example in the next run of a notebook) continues where the last call stopped, and a
    finished run is not trained again. Chapter 8 (08_training) explains why the chunks add up
    to one straight run; chapter 10 (10_ablations) trains its ablations with it.

    Args:
        config: the run. ``config.stop_at_step`` and ``config.time_limit_minutes``, if set, act
            as ``max_steps`` and ``chunk_minutes``.
        max_steps: the step budget: stop at this step (the schedule stays the one of ``config``).
        max_minutes: the time budget: no new chunk once the chunks have trained this long, and no
            chunk runs past it.
        chunk_minutes: the longest one chunk may run.
        chunk_steps: the most steps one chunk may make.
        minutes_left: how many minutes this run of the notebook has left (e.g.
            ``session.minutes_left``); no chunk starts with less than ``reserve_minutes`` left.
        reserve_minutes: the time kept free at the end of the session.

    Returns:
        The ledger. Its ``status``: "finished" (the schedule's last step), "stopped" (the step
        budget), "capped" (the time budget), or "paused" (the session ran out of time; call
        again to continue).
    """
    max_steps = max_steps if max_steps is not None else config.stop_at_step
    chunk_minutes = chunk_minutes if chunk_minutes is not None else config.time_limit_minutes
    for label, value in (("max_steps", max_steps), ("chunk_steps", chunk_steps)):
        if value is not None and (not isinstance(value, int) or value < 1):
            raise ValueError(f"{label} must be a positive number of steps or None, got {value!r}")
    for label, value in (("max_minutes", max_minutes), ("chunk_minutes", chunk_minutes)):
        if value is not None and not value > 0:
            raise ValueError(f"{label} must be a positive number of minutes or None, got {value!r}")
    if reserve_minutes < 0:
        raise ValueError(f"reserve_minutes must be >= 0, got {reserve_minutes}")
    out = Path(config.out_dir)
    ledger = read_ledger(out)
    device = resolve_device(config.device)
    while True:
        if ledger["status"] == "finished" and not _schedule_grew(config, ledger):
            break
        if max_steps is not None and ledger["step"] >= max_steps:
            ledger["status"] = "stopped"
            break
        if max_minutes is not None and ledger["seconds"] / 60 >= max_minutes:
            ledger["status"] = "capped"
            break
        left = minutes_left() if minutes_left is not None else math.inf
        if left < reserve_minutes:
            ledger["status"] = "paused"
            break
        limits = [chunk_minutes, None if max_minutes is None else max_minutes - ledger["seconds"] / 60,
                  None if math.isinf(left) else left - reserve_minutes / 2]
        limit = min((m for m in limits if m is not None), default=None)
        stops = [s for s in (max_steps, None if chunk_steps is None else ledger["step"] + chunk_steps) if s]
        chunk_config = dataclasses.replace(config, stop_at_step=min(stops) if stops else None,
                                           time_limit_minutes=None if limit is None else max(limit, 0.01))
        resume = bool(ledger["chunks"]) and (out / "last.pt").exists()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        summary = train(chunk_config, resume=resume, overwrite=not resume, progress=False)
        peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        if summary["step"] <= ledger["step"]:  # nothing left to train, or something is wrong
            if summary["status"] != "finished":
                raise RuntimeError(f"{out}: a chunk made no progress (step {summary['step']}); the ledger is as it was")
            ledger.update(status="finished", total_steps=summary["total_steps"])
            break
        chunk = {"chunk": len(ledger["chunks"]) + 1, "first_step": ledger["step"] + 1, "last_step": summary["step"],
                 "steps": summary["step"] - ledger["step"], "seconds": summary["seconds"],
                 "minutes": summary["seconds"] / 60, "status": summary["status"], "best_dice": summary["best_dice"],
                 "peak_memory_gib": peak,
                 "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
                 "validation": _validations(out / "log.jsonl", ledger["step"], summary["step"])}
        ledger["chunks"].append(chunk)
        ledger.update(status=summary["status"], step=summary["step"], total_steps=summary["total_steps"],
                      seconds=ledger["seconds"] + summary["seconds"], best_dice=summary["best_dice"])
        ledger["minutes"] = ledger["seconds"] / 60
        if peak is not None:
            ledger["peak_memory_gib"] = max(peak, ledger["peak_memory_gib"] or 0.0)
        (out / LEDGER).write_text(json.dumps(ledger, indent=2) + "\n")
    (out / LEDGER).parent.mkdir(parents=True, exist_ok=True)
    (out / LEDGER).write_text(json.dumps(ledger, indent=2) + "\n")
    return ledger


def train_on_budget(config: TrainConfig, minutes: float, *, probe: tuple[int, int] = (5, 30), reserve: float = 0.25,
                    n_val: int = 6, min_epochs: int = 2, chunk_minutes: float | None = None,
                    minutes_left: Callable[[], float] | None = None) -> dict:
    """Train ``config`` for about ``minutes`` of wall-clock time (chapter 8, 08_training, explains it).

    1. A probe inside the learning-rate warm-up: ``probe[0]`` steps to warm up the GPU and the
       loader, then ``probe[1]`` timed steps. During the warm-up the learning rate does not
       depend on the run's length, so these are the first steps of the final run.
    2. A plan: as many epochs as fit into the budget, keeping the share ``reserve`` for
       validation, and about ``n_val`` validations; written to ``plan.json``.
    3. The run, with :func:`train_in_chunks` (chunks of at most ``chunk_minutes``); a run that
       takes more than twice its budget (plus two minutes) is stopped ("capped").

    Calling it again reads ``plan.json`` and the ledger and continues; a finished run is not
    trained again.

    Returns:
        The plan (``seconds_per_step``, ``probe_steps``, ``steps_per_epoch``, ``epochs``,
        ``total_steps``, ``val_every``), with what happened: ``status``, ``step``, ``calls``
        (chunks so far), ``train_seconds``, ``best_dice``, ``peak_memory_gib``, ``paused``,
        and the ``ledger``. Before a probe could run: ``{"paused": True, "status": "not started"}``.
    """
    if not minutes > 0:
        raise ValueError(f"minutes must be positive, got {minutes}")
    if config.steps_per_epoch is None:
        raise ValueError("train_on_budget plans in epochs: set steps_per_epoch in the configuration")
    warm, timed = probe
    if warm < 1 or timed < 1 or warm + timed > max(1, config.warmup_steps):
        raise ValueError(f"the probe {probe} must be two positive step counts that fit into the warm-up "
                         f"({config.warmup_steps} steps), so that its steps belong to the final run")
    out = Path(config.out_dir)
    plan_path = out / "plan.json"
    left = minutes_left if minutes_left is not None else (lambda: math.inf)
    if plan_path.exists():
        plan = json.loads(plan_path.read_text())
    elif left() < 2.0:  # no time for a probe in this run of the notebook
        return {"paused": True, "status": "not started"}
    else:  # every probe step inside the warm-up, no validation, the end of the schedule far away
        probe_config = dataclasses.replace(config, epochs=10**6, val_every=10**6, stop_at_step=None,
                                           time_limit_minutes=None)
        train_in_chunks(probe_config, max_steps=warm)
        ledger = train_in_chunks(probe_config, max_steps=warm + timed)
        seconds_per_step = ledger["chunks"][-1]["seconds"] / ledger["chunks"][-1]["steps"]
        remaining = minutes * 60 * (1 - reserve) - ledger["seconds"]
        epochs = max(min_epochs, round((warm + timed + max(0.0, remaining) / seconds_per_step) / config.steps_per_epoch))
        plan = dict(budget_minutes=minutes, seconds_per_step=seconds_per_step, probe_steps=warm + timed,
                    steps_per_epoch=config.steps_per_epoch, epochs=epochs, total_steps=epochs * config.steps_per_epoch,
                    val_every=max(1, epochs // n_val))
        plan_path.write_text(json.dumps(plan, indent=2) + "\n")
    run = dataclasses.replace(config, epochs=plan["epochs"], val_every=plan["val_every"], stop_at_step=None,
                              time_limit_minutes=None)
    ledger = train_in_chunks(run, chunk_minutes=chunk_minutes, max_minutes=2 * minutes + 2, minutes_left=minutes_left)
    return {**plan, "status": ledger["status"], "step": ledger["step"], "calls": len(ledger["chunks"]),
            "train_seconds": ledger["seconds"], "best_dice": ledger["best_dice"],
            "peak_memory_gib": ledger["peak_memory_gib"], "paused": ledger["status"] == "paused", "ledger": ledger}
