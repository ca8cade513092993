"""``unetr-segment``: segment one case with a trained checkpoint.

The case is preprocessed exactly as in validation (RAS orientation, crop to the brain, z-score),
segmented with sliding-window inference (optionally averaged over the 8 flips of the volume),
mapped back onto the input's own voxel grid with MONAI's inverse transforms, and written as a
label NIfTI in the case's own convention (BraTS 2021: 1/2/4; BraTS 2023: 1/2/3; MSD: 1 edema,
2 non-enhancing, 3 enhancing) with the input's affine. The checkpoint knows its model.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import torch
from monai import transforms as T
from monai.inferers import sliding_window_inference

from .checkpoint import model_from_checkpoint
from .config import TrainConfig
from .data import CANONICAL, MODALITIES, Case, find_cases, regions_to_label, to_regions, write_label
from .data.io import check_cases, check_writable, error_line, save_nifti
from .data.layout import NIFTI, case_from_files
from .data.transforms import load_transforms
from .device import amp_dtype, resolve_device
from .metrics import check_reference, confusion, reference_report, region_table


def case_from_inputs(inputs: list[str | Path], scheme: str | None = None) -> Case:
    """One case folder (any layout), four NIfTI files in any order or one 4D file.

    Four files are told apart by their names (``_flair, _t1, _t1ce, _t2`` of BraTS 2021 or
    ``-t2f, -t1n, -t1c, -t2w`` of BraTS 2023, see :func:`unetr_lib.data.layout.case_from_files`).
    ``scheme`` says how to number the output labels of loose files (default: the convention of
    the release their names come from; msd for one 4D file); a case folder brings its own."""
    paths = [Path(p) for p in inputs]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ValueError(f"input not found: {', '.join(missing)}")
    if len(paths) == 1 and paths[0].is_dir():
        cases = find_cases(paths[0])
        if len(cases) != 1:
            raise ValueError(f"{paths[0]} holds {len(cases)} cases; give the folder of one case")
        return cases[0]
    return case_from_files(paths, scheme)  # four files told apart by their names, or one 4D file


def predict_probabilities(model: torch.nn.Module, image: torch.Tensor, config: TrainConfig, tta: bool,
                          device: torch.device) -> torch.Tensor:
    """Probabilities (C, H, W, D) for one preprocessed image (4, H, W, D): sigmoid per region
    for region models, softmax over classes for class models; with ``tta``, the mean over the
    8 combinations of flips along the three axes."""
    x = image[None].to(device)  # (1, 4, H, W, D)
    flips = [dims for k in range(4) for dims in itertools.combinations((2, 3, 4), k)] if tta else [()]
    total = 0.0
    with torch.no_grad():
        for dims in flips:
            flipped = torch.flip(x, dims) if dims else x
            logits = sliding_window_inference(flipped, config.roi, config.sw_batch_size, model, overlap=config.overlap)
            logits = torch.flip(logits, dims) if dims else logits  # (1, C, H, W, D)
            total = total + (logits.softmax(1) if config.loss == "dice_ce" else torch.sigmoid(logits))
    return (total / len(flips))[0].cpu()  # (C, H, W, D)


def model_channels(image: torch.Tensor, config: TrainConfig) -> torch.Tensor:
    """The model's input channels of a preprocessed image.

    Args:
        image: (4, H, W, D) with all four modalities in the order of ``MODALITIES`` (what
            ``load_transforms()`` gives), or (C, H, W, D) with exactly the model's channels.
        config: the run's configuration; ``config.modalities`` names the model's channels.
    """
    x = image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)  # a plain tensor
    if x.ndim != 4:
        raise ValueError(f"image must be (C, H, W, D), got shape {tuple(x.shape)}")
    if x.shape[0] == len(MODALITIES):
        return x[[MODALITIES.index(m) for m in config.modalities]]  # (C_model, H, W, D)
    if x.shape[0] != len(config.modalities):
        raise ValueError(f"image has {x.shape[0]} channels; give all {len(MODALITIES)} ({', '.join(MODALITIES)}) "
                         f"or the model's {len(config.modalities)} ({', '.join(config.modalities)})")
    return x


def predict(model: torch.nn.Module, image: torch.Tensor, config: TrainConfig, amp: bool = True,
            tta: bool = False) -> torch.Tensor:
    """Probabilities (C, H, W, D) of one preprocessed image, as validation computes them.

    Picks the model's channels (``config.modalities``), runs in the run's mixed precision
    (``config.amp``, as :func:`unetr_lib.device.amp_dtype` resolves it: bf16 or fp16 on a GPU,
    bf16 on a CPU with bf16 instructions, else fp32) and slides the model's window over
    the volume (``config.roi``, ``config.overlap``, ``config.sw_batch_size``) with
    :func:`predict_probabilities`. Chapter 9 (09_evaluation) explains each step.

    Args:
        model: the network, on the device to compute on (e.g. from ``model_from_checkpoint``).
        image: (4, H, W, D) in the order of ``MODALITIES``, or only the model's channels; see
            :func:`model_channels`.
        config: the run's configuration.
        amp: False computes in fp32 whatever ``config.amp`` says (as ``unetr-segment`` does).
        tta: average over the 8 flips of the volume (8 times slower).

    Returns:
        float32 probabilities on the CPU: sigmoid per region (TC, WT, ET), or softmax over the
        classes for a ``dice_ce`` model.
    """
    x = model_channels(image, config)  # (C_model, H, W, D)
    device = next(model.parameters()).device
    dtype = amp_dtype(config.amp, device) if amp else None
    with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
        return predict_probabilities(model, x, config, tta, device).float()  # (C, H, W, D)


def predicted_regions(probs: torch.Tensor, config: TrainConfig, as_label_map: bool = True) -> torch.Tensor:
    """Bool regions (3, H, W, D), TC, WT, ET, from :func:`predict`'s probabilities.

    Args:
        probs: (C, H, W, D) probabilities.
        config: the run's configuration (its loss says regions or classes).
        as_label_map: score what a submission holds: the nested regions of the label map
            (``regions_to_label``, then back), so ET ⊂ TC ⊂ WT. False: each region's probability
            above 0.5, as validation during training scores it. A class model always goes
            through its label map (the argmax).
    """
    if config.loss == "dice_ce":
        return to_regions(probs.argmax(0), CANONICAL)  # canonical classes 0..3 -> (3, H, W, D)
    if as_label_map:
        return to_regions(regions_to_label(probs, CANONICAL), CANONICAL)  # (3, H, W, D), nested
    return probs > 0.5  # (3, H, W, D)


def evaluate(checkpoint: str | Path | tuple[torch.nn.Module, TrainConfig], cases: list[Case], *, tta: bool = False,
             amp: bool = True, as_label_map: bool = True, device: str = "auto", **table_options) -> pd.DataFrame:
    """Score a checkpoint on labelled cases: one row per case and region.

    Each case goes through the deterministic steps of validation (``load_transforms()``), then
    :func:`predict` and :func:`predicted_regions`, and is scored against its true regions with
    :func:`unetr_lib.metrics.region_table` on the brain-cropped grid, with the case's voxel size.
    Chapter 9 (09_evaluation) builds this table step by step and checks it against MONAI and
    against scoring the written NIfTI file.

    Args:
        checkpoint: ``best.pt`` or ``last.pt`` of a run, or an already loaded ``(model, config)``.
        cases: labelled cases (from ``find_cases``).
        tta, amp: as in :func:`predict`.
        as_label_map: as in :func:`predicted_regions`.
        device: where to compute when a path is given ("auto", "cpu", "cuda").
        table_options: passed on to ``region_table`` (e.g. ``lesion_wise``).

    Returns:
        The ``region_table`` columns (``case_id``, ``region``, ``dice``, ``hd95``, ...), then
        ``true_ml`` and ``pred_ml`` (region volumes in millilitres) and ``tp``, ``fp``, ``fn``
        (voxel counts).
    """
    if isinstance(checkpoint, tuple):
        model, config = checkpoint
    else:
        model, config = model_from_checkpoint(checkpoint)
        model = model.to(resolve_device(device))
    unlabelled = [c.case_id for c in cases if c.label is None]
    if not cases or unlabelled:
        raise ValueError(f"evaluate needs labelled cases; got {len(cases)} cases, without a label: {unlabelled}")
    load = T.Compose(load_transforms())  # all four modalities; predict picks the model's
    rows = []
    for case in cases:
        item = load(case.as_dict())
        spacing = tuple(float(s) for s in item["image"].pixdim)  # mm per voxel
        truth = to_regions(item["label"][0].as_tensor(), case.scheme)  # (3, H, W, D) bool TC, WT, ET
        pred = predicted_regions(predict(model, item["image"], config, amp=amp, tta=tta), config, as_label_map)
        voxel_ml = float(np.prod(spacing)) / 1000
        for row, p, t in zip(region_table(pred, truth, case.case_id, spacing, **table_options), pred, truth):
            tp, fp, fn, _ = confusion(p, t)
            rows.append({**row, "true_ml": int(t.sum()) * voxel_ml, "pred_ml": int(p.sum()) * voxel_ml,
                         "tp": tp, "fp": fp, "fn": fn})
    return pd.DataFrame(rows)


def segment(inputs: list[str | Path], checkpoint: str | Path, out: str | Path, probabilities: str | Path | None = None,
            tta: bool = False, overwrite: bool = False, scheme: str | None = None, device: str = "auto") -> Path:
    """Segment a case and write its label map (and optionally the probability maps); returns the
    path of the label map.

    Everything is checked before the model runs: every input file (with ``load_case``'s checks),
    the output paths (see :func:`output_file`; an existing file is replaced only with
    ``overwrite``, an input never), the device and the checkpoint."""
    case = case_from_inputs(inputs, scheme)
    check_cases([case], images_only=True)
    out = output_file(out, case.case_id, "pred", "--out")
    if probabilities is not None:
        probabilities = output_file(probabilities, case.case_id, "probabilities", "--probabilities")
        if probabilities.resolve() == out.resolve():
            raise ValueError(f"--out and --probabilities both name {out}")
    inputs_resolved = {p.resolve() for p in case.images}
    for path, what in ((out, "--out"), (probabilities, "--probabilities")):
        if path is None:
            continue
        if path.resolve() in inputs_resolved:
            raise ValueError(f"{what} {path} is one of the input images")
        if path.is_dir():
            raise ValueError(f"{what} {path} is a folder")
        if path.exists() and not overwrite:
            raise ValueError(f"{path} exists; pass --overwrite to replace it")
        check_writable(path, what)
    torch_device = resolve_device(device)
    model, config = model_from_checkpoint(checkpoint)
    model = model.to(torch_device)
    preprocess = T.Compose(load_transforms(config.modalities))
    data = preprocess({"image": case.as_dict()["image"]})
    probs = predict_probabilities(model, data["image"], config, tta, torch_device)  # (C, h, w, d)
    data["pred"] = data["image"].clone().set_array(probs)  # carries the image's history of transforms
    restored = T.Invertd(keys="pred", transform=preprocess, orig_keys="image", nearest_interp=False)(data)
    probs = torch.as_tensor(restored["pred"]).float()  # (C, H, W, D) on the input's grid
    if config.loss == "dice_ce":
        label = probs.argmax(0).numpy().astype(np.uint8)  # canonical classes
    else:
        label = regions_to_label(probs.numpy(), CANONICAL)
    write_label(label, case, out, from_scheme=CANONICAL, overwrite=overwrite)
    if probabilities is not None:
        affine = nib.load(case.images[0]).affine
        save_nifti(nib.Nifti1Image(np.moveaxis(probs.numpy(), 0, -1).astype(np.float32), affine), probabilities)
    return out


def output_file(out: str | Path, case_id: str, kind: str = "pred", what: str = "--out") -> Path:
    """The file an output argument names: a ``.nii.gz`` (or ``.nii``) file as given, or, for a
    folder (an existing one, or a name ending in ``/``), ``<folder>/<case_id>_<kind>.nii.gz``.

    Raises:
        ValueError: any other name (nibabel would write another file than the one named).
    """
    path = Path(out)
    if path.is_dir() or str(out).endswith(("/", os.sep)):
        return path / f"{case_id}_{kind}.nii.gz"
    if not NIFTI.search(path.name):
        raise ValueError(f"{what} {out}: name a .nii.gz or .nii file, or a folder (existing, or ending in /) to "
                         f"write {case_id}_{kind}.nii.gz into")
    return path


def build_parser() -> argparse.ArgumentParser:
    """The ``unetr-segment`` command line."""
    parser = argparse.ArgumentParser(
        prog="unetr-segment",
        description="Segment a brain tumour case with a checkpoint from unetr-train. The output label map uses "
                    "the case's own convention and the input's affine. Every input file, output path and the "
                    "checkpoint are checked before the model runs; an existing file is replaced only with "
                    "--overwrite. Exit status: 0 written, 1 error (one line on stderr, nothing written).",
    )
    parser.add_argument("inputs", nargs="+",
                        help="a case folder; or its four NIfTI files in any order, told apart by their names "
                             "(BraTS 2021: _flair _t1 _t1ce _t2; BraTS 2023: -t2f -t1n -t1c -t2w); or one 4D file "
                             "(MSD: FLAIR, T1w, T1gd, T2w)")
    parser.add_argument("--checkpoint", required=True, help="best.pt or last.pt from unetr-train")
    parser.add_argument("--out", required=True,
                        help="the label map to write: a .nii.gz (or .nii) file, or a folder (existing, or ending "
                             "in /) to write <case>_pred.nii.gz into")
    parser.add_argument("--probabilities", default=None,
                        help="also write the probability maps (4D NIfTI): a file, or a folder for "
                             "<case>_probabilities.nii.gz")
    parser.add_argument("--tta", action="store_true", help="average over the 8 flips (slower, often better)")
    parser.add_argument("--scheme", choices=["brats2021", "brats2023", "msd"], default=None,
                        help="label numbers for loose input files (default: those of the release their names "
                             "follow; msd for one 4D file); a case folder brings its own")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    parser.add_argument("--reference", default=None,
                        help="a label NIfTI of this case in its own convention (e.g. its *_seg.nii.gz): score the "
                             "prediction against it and print legacy and BraTS 2023 lesion-wise metrics per region")
    parser.add_argument("--metrics", default=None, help="with --reference: also write that table as CSV here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        case = case_from_inputs(args.inputs, args.scheme)
        out = output_file(args.out, case.case_id, "pred", "--out")
        if args.metrics is not None and args.reference is None:
            raise ValueError("--metrics needs --reference (the label file to score against)")
        if args.reference is not None:  # checked before the model runs
            check_reference(args.reference, args.metrics, args.overwrite)
        probabilities = (None if args.probabilities is None else
                         output_file(args.probabilities, case.case_id, "probabilities", "--probabilities"))
        path = segment(args.inputs, args.checkpoint, out, probabilities, args.tta, args.overwrite, args.scheme,
                       args.device)
        report = None if args.reference is None else reference_report(
            path, args.reference, case.scheme, case.case_id, args.metrics, args.overwrite)
    except KeyboardInterrupt:
        print("unetr-segment: interrupted; nothing was written", file=sys.stderr)
        return 130
    except (ValueError, OSError, RuntimeError) as error:  # MONAI wraps a ValueError in a RuntimeError
        message = error_line(error)
        if message is None:
            raise
        print(f"unetr-segment: error: {message}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    if probabilities is not None:
        print(f"wrote {probabilities}")
    if report is not None:
        print(report)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
