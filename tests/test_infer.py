"""unetr-segment: output in the case's convention, on the input's grid; clear errors."""

import nibabel as nib
import numpy as np
import pytest
import torch

from fake_data import AFFINE, SHAPE, brats2021_case, brats2023_case, msd_task01
from unetr_lib.checkpoint import read_checkpoint, save_checkpoint
from unetr_lib.config import build_config
from unetr_lib.infer import main, output_file, segment
from unetr_lib.nets import build_model


def make_checkpoint(path, loss="region_dice", model="unet3d"):
    config = build_config(dict(model=model, profile="cpu", roi=(16, 16, 16), loss=loss,
                               model_kwargs={"channels": (4, 8)} if model == "unet3d" else {}))
    torch.manual_seed(0)
    net = build_model(config.model, 4, 4 if loss == "dice_ce" else 3, config.roi, **config.model_kwargs)
    with torch.no_grad():
        net.out.bias.copy_(torch.tensor([2.0, 3.0, -1.0, 0.0][: net.out.bias.numel()]))  # some tumour everywhere
    return save_checkpoint(path, net, config)


@pytest.mark.parametrize("loss", ["region_dice", "dice_ce"])
def test_brats_case_folder(tmp_path, loss):
    folder = brats2021_case(tmp_path / "data", with_label=False)
    ckpt = make_checkpoint(tmp_path / "m.pt", loss)
    out = segment([folder], ckpt, tmp_path / "pred.nii.gz", probabilities=tmp_path / "p.nii.gz", tta=True)
    written = nib.load(out)
    assert written.shape == SHAPE
    np.testing.assert_allclose(written.affine, AFFINE)
    assert set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1, 2, 4}
    assert np.asarray(written.dataobj).any()
    probs = nib.load(tmp_path / "p.nii.gz")
    assert probs.shape == (*SHAPE, 4 if loss == "dice_ce" else 3)


def test_brats2023_and_msd_conventions(tmp_path):
    ckpt = make_checkpoint(tmp_path / "m.pt")
    folder = brats2023_case(tmp_path / "b23")
    out = segment([folder], ckpt, tmp_path / "b23.nii.gz")
    assert set(np.unique(np.asarray(nib.load(out).dataobj)).tolist()) <= {0, 1, 2, 3}
    task = msd_task01(tmp_path / "msd")
    out = segment([task / "imagesTs" / "BRATS_485.nii.gz"], ckpt, tmp_path / "msd.nii.gz")
    written = nib.load(out)
    assert written.shape == SHAPE and set(np.unique(np.asarray(written.dataobj)).tolist()) <= {0, 1, 2, 3}


def test_loose_files_with_a_scheme(tmp_path):
    folder = brats2021_case(tmp_path / "data", with_label=False)
    files = [folder / f"BraTS2021_00000_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2")]
    ckpt = make_checkpoint(tmp_path / "m.pt")
    assert main([*map(str, files), "--checkpoint", str(ckpt), "--out", str(tmp_path / "o.nii.gz"),
                 "--scheme", "brats2023"]) == 0
    assert np.asarray(nib.load(tmp_path / "o.nii.gz").dataobj).max() <= 3


def test_errors(tmp_path, capsys):
    folder = brats2021_case(tmp_path / "data")
    ckpt = make_checkpoint(tmp_path / "m.pt")
    existing = tmp_path / "exists.nii.gz"
    existing.write_bytes(b"mine")
    cases = [
        ([str(tmp_path / "nowhere")], ckpt, "input not found"),
        ([str(folder)], tmp_path / "missing.pt", "does not exist"),
        ([str(folder), str(folder)], ckpt, "one case folder, four files"),
    ]
    for inputs, checkpoint, message in cases:
        assert main([*inputs, "--checkpoint", str(checkpoint), "--out", str(tmp_path / "o.nii.gz")]) == 1
        assert message in capsys.readouterr().err
    assert main([str(folder), "--checkpoint", str(ckpt), "--out", str(existing)]) == 1
    assert "exists; pass --overwrite" in capsys.readouterr().err and existing.read_bytes() == b"mine"


def test_foreign_and_mismatched_checkpoints(tmp_path):
    folder = brats2021_case(tmp_path / "data")
    monai_weights = tmp_path / "monai.pt"
    torch.save({"encoder1.layer.conv1.conv.weight": torch.zeros(1)}, monai_weights)
    with pytest.raises(ValueError, match="not a unetr_lib checkpoint"):
        segment([folder], monai_weights, tmp_path / "o.nii.gz")
    ckpt = make_checkpoint(tmp_path / "m.pt")
    payload = torch.load(ckpt, weights_only=False)
    payload["config"]["model"] = "swin_unetr"  # weights of a U-Net labelled as Swin UNETR
    payload["config"]["model_kwargs"] = {"feature_size": 12, "num_heads": [1, 2, 2, 4]}
    payload["config"]["roi"] = [32, 32, 32]
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="do not fit a swin_unetr"):
        segment([folder], tmp_path / "other.pt", tmp_path / "o.nii.gz")
    payload["format_version"] = 99
    torch.save(payload, tmp_path / "future.pt")
    with pytest.raises(ValueError, match="format 99"):
        segment([folder], tmp_path / "future.pt", tmp_path / "o.nii.gz")


def test_loose_brats2023_files_in_any_order_match_their_case_folder(tmp_path):
    folder = brats2023_case(tmp_path / "b23")
    ckpt = make_checkpoint(tmp_path / "m.pt")
    from_folder = segment([folder], ckpt, tmp_path / "folder.nii.gz")
    shuffled = [folder / f"{folder.name}-{m}.nii.gz" for m in ("t1c", "t1n", "t2f", "t2w")]  # a glob's order
    from_files = segment(shuffled, ckpt, tmp_path / "files.nii.gz")
    a, b = (np.asarray(nib.load(p).dataobj) for p in (from_folder, from_files))
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(b).tolist()) <= {0, 1, 2, 3} and b.any()  # written back as BraTS 2023


def test_output_file_is_the_file_named_or_a_file_in_the_folder_named(tmp_path):
    (tmp_path / "existing").mkdir()
    assert output_file(tmp_path / "p.nii.gz", "case") == tmp_path / "p.nii.gz"
    assert output_file(tmp_path / "existing", "case") == tmp_path / "existing" / "case_pred.nii.gz"
    assert output_file(f"{tmp_path}/new/", "case", "probabilities") == tmp_path / "new" / "case_probabilities.nii.gz"
    with pytest.raises(ValueError, match="name a .nii.gz or .nii file, or a folder"):
        output_file(tmp_path / "out" / "p", "case")


def test_outputs_are_checked_before_the_model_runs(tmp_path, monkeypatch):
    folder = brats2021_case(tmp_path / "data", with_label=False)
    ckpt = make_checkpoint(tmp_path / "m.pt")
    existing = tmp_path / "probs.nii.gz"
    existing.write_bytes(b"mine")
    monkeypatch.setattr("unetr_lib.infer.model_from_checkpoint", lambda path: pytest.fail("the model was loaded"))
    with pytest.raises(ValueError, match="probs.nii.gz exists; pass --overwrite"):
        segment([folder], ckpt, tmp_path / "new.nii.gz", probabilities=existing)
    with pytest.raises(ValueError, match="is one of the input images"):
        segment([folder], ckpt, folder / "BraTS2021_00000_t1.nii.gz", overwrite=True)
    with pytest.raises(ValueError, match="is a folder; give a checkpoint file in it, e.g. .*best.pt"):
        read_checkpoint(tmp_path)
    assert existing.read_bytes() == b"mine" and not (tmp_path / "new.nii.gz").exists()
