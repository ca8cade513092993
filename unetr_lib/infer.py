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
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai import transforms as T
from monai.inferers import sliding_window_inference

from .checkpoint import model_from_checkpoint
from .config import TrainConfig
from .data import CANONICAL, Case, find_cases, get_scheme, regions_to_label, write_label
from .data.transforms import load_transforms
from .train import resolve_device


def case_from_inputs(inputs: list[str | Path], scheme: str | None = None) -> Case:
    """One case folder (any layout), four NIfTI files (flair, t1, t1ce, t2) or one 4D file.

    ``scheme`` says how to number the output labels when the inputs are loose files
    (default: brats2021 for four files, msd for one 4D file)."""
    paths = [Path(p) for p in inputs]
    missing = [str(p) for p in paths if not p.exists()]
    if missing:
        raise ValueError(f"input not found: {', '.join(missing)}")
    if len(paths) == 1 and paths[0].is_dir():
        cases = find_cases(paths[0])
        if len(cases) != 1:
            raise ValueError(f"{paths[0]} holds {len(cases)} cases; give the folder of one case")
        return cases[0]
    name = paths[0].name.split(".nii")[0]
    if len(paths) == 4:
        return Case(name, "brats2021", get_scheme(scheme or "brats2021"), tuple(paths), None)
    if len(paths) == 1:
        return Case(name, "msd", get_scheme(scheme or "msd"), tuple(paths), None)
    raise ValueError(f"give one case folder, four files (flair t1 t1ce t2) or one 4D file; got {len(paths)} paths")


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


def segment(inputs: list[str | Path], checkpoint: str | Path, out: str | Path, probabilities: str | Path | None = None,
            tta: bool = False, overwrite: bool = False, scheme: str | None = None, device: str = "auto") -> Path:
    """Segment a case and write its label map (and optionally the probability maps)."""
    out = Path(out)
    for path in (out, probabilities):
        if path is not None and Path(path).exists() and not overwrite:
            raise ValueError(f"{path} exists; pass --overwrite to replace it")
    case = case_from_inputs(inputs, scheme)
    model, config = model_from_checkpoint(checkpoint)
    torch_device = resolve_device(device)
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
        nib.save(nib.Nifti1Image(np.moveaxis(probs.numpy(), 0, -1).astype(np.float32), affine), probabilities)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="unetr-segment",
        description="Segment a brain tumour case with a checkpoint from unetr-train. The output label map uses "
                    "the case's own convention and the input's affine.",
    )
    parser.add_argument("inputs", nargs="+", help="a case folder, four NIfTI files (flair t1 t1ce t2) or one 4D file")
    parser.add_argument("--checkpoint", required=True, help="best.pt or last.pt from unetr-train")
    parser.add_argument("--out", required=True, help="the label NIfTI to write (.nii.gz)")
    parser.add_argument("--probabilities", default=None, help="also write the probability maps (4D NIfTI)")
    parser.add_argument("--tta", action="store_true", help="average over the 8 flips (slower, often better)")
    parser.add_argument("--scheme", choices=["brats2021", "brats2023", "msd"], default=None,
                        help="label numbers for loose input files (a case folder brings its own)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--overwrite", action="store_true", help="replace existing output files")
    args = parser.parse_args(argv)
    try:
        path = segment(args.inputs, args.checkpoint, args.out, args.probabilities, args.tta, args.overwrite,
                       args.scheme, args.device)
    except ValueError as error:
        print(f"unetr-segment: error: {error}", file=sys.stderr)
        return 1
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
