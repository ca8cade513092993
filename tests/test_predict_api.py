"""The inference API of the chapters: predict (channels, precision, window, flips) and evaluate."""

import numpy as np
import pandas as pd
import pytest
import torch
from monai import transforms as T

from fake_data import brats2021_case
from unetr_lib.checkpoint import model_from_checkpoint, save_checkpoint
from unetr_lib.config import build_config
from unetr_lib.data import CANONICAL, MODALITIES, find_cases, regions_to_label, to_regions
from unetr_lib.data.transforms import load_transforms
from unetr_lib.infer import evaluate, model_channels, predict, predict_probabilities, predicted_regions
from unetr_lib.metrics import region_table
from unetr_lib.nets import build_model


def checkpoint(path, modalities=MODALITIES, loss="region_dice", amp="off"):
    """A tiny 3D U-Net with biases that put some of every region everywhere."""
    config = build_config(dict(model="unet3d", profile="cpu", roi=(16, 16, 16), loss=loss, modalities=modalities,
                               model_kwargs={"channels": (4, 8)}, amp=amp))
    torch.manual_seed(0)
    net = build_model("unet3d", len(modalities), 4 if loss == "dice_ce" else 3, config.roi, **config.model_kwargs)
    with torch.no_grad():
        net.out.bias.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5][: net.out.bias.numel()]))
    return save_checkpoint(path, net, config)


@pytest.fixture
def cases(tmp_path):
    for i in range(2):
        brats2021_case(tmp_path / "data", f"BraTS2021_0000{i}")
    return find_cases(tmp_path / "data")


def loaded(case):
    return T.Compose(load_transforms())(case.as_dict())  # all four modalities


def test_predict_is_predict_probabilities_with_the_models_channels(tmp_path, cases):
    image = loaded(cases[0])["image"]  # (4, H, W, D) MetaTensor
    model, config = model_from_checkpoint(checkpoint(tmp_path / "all.pt"))
    probs = predict(model, image, config)
    assert probs.shape == (3, *image.shape[1:]) and probs.dtype == torch.float32
    assert float(probs.min()) >= 0 and float(probs.max()) <= 1
    torch.testing.assert_close(probs, predict_probabilities(model, image.as_tensor(), config, False, torch.device("cpu")))
    flipped = predict(model, image, config, tta=True)
    torch.testing.assert_close(flipped, predict_probabilities(model, image.as_tensor(), config, True, torch.device("cpu")))
    assert not torch.equal(flipped, probs)
    torch.testing.assert_close(predict(model, image, config, amp=False), probs)  # amp="off": fp32 either way

    bf16, config_bf16 = model_from_checkpoint(checkpoint(tmp_path / "bf16.pt", amp="bf16"))
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the run's precision, as validation uses it
        expected = predict_probabilities(bf16, image.as_tensor(), config_bf16, False, torch.device("cpu")).float()
    torch.testing.assert_close(predict(bf16, image, config_bf16), expected)
    torch.testing.assert_close(predict(bf16, image, config_bf16, amp=False), probs)  # amp=False: fp32

    two, config2 = model_from_checkpoint(checkpoint(tmp_path / "two.pt", modalities=("t1ce", "flair")))
    picked = image.as_tensor()[[2, 0]]  # t1ce, flair
    expected = predict_probabilities(two, picked, config2, False, torch.device("cpu"))
    torch.testing.assert_close(predict(two, image, config2), expected)  # picked from all four
    torch.testing.assert_close(predict(two, picked, config2), expected)  # or given as the model's channels
    with pytest.raises(ValueError, match="give all 4"):
        predict(two, image.as_tensor()[:3], config2)
    with pytest.raises(ValueError, match=r"\(C, H, W, D\)"):
        model_channels(image.as_tensor()[None], config2)


def test_predicted_regions_nested_raw_and_classes():
    probs = torch.tensor([0.2, 0.9, 0.8])[:, None, None, None].expand(3, 2, 2, 2)  # ET above 0.5, TC below
    nested = predicted_regions(probs, build_config(dict(profile="cpu")))
    raw = predicted_regions(probs, build_config(dict(profile="cpu")), as_label_map=False)
    assert raw[:, 0, 0, 0].tolist() == [False, True, True]
    assert nested[:, 0, 0, 0].tolist() == [True, True, True]  # ET ⊂ TC ⊂ WT, as a label map holds them
    torch.testing.assert_close(nested, to_regions(regions_to_label(probs, CANONICAL), CANONICAL))
    classes = torch.zeros(4, 2, 2, 2)
    classes[2] = 1.0  # canonical 2 = edema
    regions = predicted_regions(classes, build_config(dict(profile="cpu", loss="dice_ce")))
    assert regions[:, 0, 0, 0].tolist() == [False, True, False]


def test_evaluate_scores_every_case_and_region(tmp_path, cases):
    path = checkpoint(tmp_path / "all.pt")
    table = evaluate(path, cases, lesion_wise=False)
    assert isinstance(table, pd.DataFrame) and len(table) == 2 * 3
    assert table.groupby("case_id").size().to_dict() == {c.case_id: 3 for c in cases}
    assert list(table.region[:3]) == ["TC", "WT", "ET"]
    assert {"dice", "hd95", "sensitivity", "specificity", "true_ml", "pred_ml", "tp", "fp", "fn"} <= set(table)

    model, config = model_from_checkpoint(path)  # by hand, for the first case
    item = loaded(cases[0])
    spacing = tuple(float(s) for s in item["image"].pixdim)
    truth = to_regions(item["label"][0].as_tensor(), cases[0].scheme)
    pred = predicted_regions(predict(model, item["image"], config), config)
    expected = pd.DataFrame(region_table(pred, truth, cases[0].case_id, spacing, lesion_wise=False))
    pd.testing.assert_frame_equal(table.iloc[:3][expected.columns].reset_index(drop=True), expected)
    assert table.tp[0] + table.fn[0] == int(truth[0].sum())
    np.testing.assert_allclose(table.true_ml[0], int(truth[0].sum()) * float(np.prod(spacing)) / 1000)

    pd.testing.assert_frame_equal(evaluate((model, config), cases, lesion_wise=False), table)  # a loaded model
    raw = evaluate(path, cases[:1], as_label_map=False, lesion_wise=False)
    assert len(raw) == 3


def test_evaluate_needs_labelled_cases(tmp_path, cases):
    path = checkpoint(tmp_path / "all.pt")
    unlabelled = find_cases(brats2021_case(tmp_path / "nolabel", with_label=False).parent)
    with pytest.raises(ValueError, match="labelled cases"):
        evaluate(path, unlabelled)
    with pytest.raises(ValueError, match="labelled cases"):
        evaluate(path, [])
