"""The GPU chapters' set-up and budgeted training: sessions, splits, the disk cache, the ledger."""

import json
import math
from pathlib import Path

import pytest
import torch

from fake_data import brats2021_case, msd_task01
from unetr_lib import experiments
from unetr_lib.checkpoint import model_from_checkpoint
from unetr_lib.data import find_cases
from unetr_lib.experiments import (fill_disk_cache, link_cases, read_ledger, start_session, train_in_chunks,
                                   train_on_budget)


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    for i in range(3):
        brats2021_case(root, f"BraTS2021_0000{i}")
    return root


@pytest.fixture
def session(tmp_path, monkeypatch):
    monkeypatch.setenv(experiments.SMOKE_DIR_VARIABLE, str(tmp_path / "smoke"))
    monkeypatch.delenv(experiments.SESSION_MINUTES_VARIABLE, raising=False)
    return start_session("08_training", smoke=True)


def tiny(session, data_root, name="run", **settings):
    """A 3D U-Net of a few hundred parameters on 16³ crops: seconds per call of train()."""
    base = dict(data_root=str(data_root), roi=(16, 16, 16), model_kwargs={"channels": (4, 8)}, batch_size=1,
                epochs=1, steps_per_epoch=4, val_fraction=0.34, cache="none", sw_batch_size=2, device="cpu")
    return session.config_for("unet3d", name, **{**base, **settings})


def test_smoke_session_writes_only_into_its_folder(session, tmp_path):
    assert session.smoke and session.profile == "cpu" and session.results is None
    assert session.data_dir == tmp_path / "smoke" / "data"
    assert session.run_dir == tmp_path / "smoke" / "runs" / "08_training" and session.run_dir.is_dir()
    assert session.cache_root == tmp_path / "smoke" / "runs" / "cache"
    assert session.minutes_left() == math.inf


def test_full_session_paths_and_time_budget(tmp_path, monkeypatch):
    monkeypatch.setenv(experiments.SESSION_MINUTES_VARIABLE, "7")
    s = start_session("10_ablations", smoke=False, root=tmp_path)
    assert (s.data_dir, s.runs, s.results) == (tmp_path / "data", tmp_path / "runs", Path("results/10_ablations.json"))
    assert s.session_minutes == 7.0 and 6.9 < s.minutes_left() <= 7.0
    assert start_session("10_ablations", smoke=False, session_minutes=3, root=tmp_path).session_minutes == 3
    with pytest.raises(ValueError, match="session_minutes must be positive"):
        start_session("10_ablations", smoke=False, session_minutes=0, root=tmp_path)
    with pytest.raises(ValueError, match="chapter must name"):
        start_session("", smoke=True)


def test_record_of_reads_another_chapters_record_beside_its_own(session, tmp_path, monkeypatch):
    assert session.record_of("10_ablations") is None  # smoke mode keeps no records
    monkeypatch.setenv(experiments.RESULTS_DIR_VARIABLE, str(tmp_path / "results"))
    s = start_session("11_open_questions", smoke=False, root=tmp_path)
    assert s.record_of("10_ablations") is None  # not written yet
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "10_ablations.json").write_text('{"scale": "cpu"}')
    assert s.record_of("10_ablations") == {"scale": "cpu"}


def test_config_for_builds_on_build_config(session, data_root):
    config = session.config_for("unetr", data_root=str(data_root), roi=(32, 32, 32))
    assert config.model == "unetr" and config.profile == "cpu" and config.roi == (32, 32, 32)
    assert config.out_dir == str(session.run_dir / "unetr")
    assert (config.cache, config.cache_dir) == ("disk", str(session.cache_root / "32x32x32-flair+t1+t1ce+t2-regions"))
    other_roi = session.config_for("unetr", data_root=str(data_root), roi=(64, 64, 64))
    two_channels = session.config_for("unetr", data_root=str(data_root), roi=(32, 32, 32), modalities=("t1ce", "flair"))
    assert len({config.cache_dir, other_roi.cache_dir, two_channels.cache_dir}) == 3  # other tensors, other cache
    assert session.config_for("unetr", cache_dir="/somewhere").cache_dir == "/somewhere"
    assert config.model_kwargs["hidden_size"] == 96  # the cpu profile's small UNETR
    named = session.config_for("unetr", "unetr_p32", model_kwargs={"patch_size": 32})
    assert named.out_dir.endswith("unetr_p32") and named.model_kwargs["patch_size"] == 32
    with pytest.raises(ValueError, match="unknown settings"):
        session.config_for("unetr", no_such_setting=1)


def test_link_cases_splits_without_copying(tmp_path, data_root):
    msd = msd_task01(tmp_path / "msd")
    cases = find_cases(data_root) + [c for c in find_cases(msd) if c.label is not None]
    brats_split = link_cases(cases[:2], tmp_path / "split" / "brats")
    msd_split = link_cases(cases[3:], tmp_path / "split" / "msd")
    assert [c.case_id for c in find_cases(brats_split)] == [c.case_id for c in cases[:2]]
    assert [c.case_id for c in find_cases(msd_split)] == [cases[3].case_id]
    assert all(p.is_symlink() for p in (brats_split / cases[0].case_id).iterdir())
    again = link_cases(cases[2:3], brats_split)  # an existing split is replaced
    assert [c.case_id for c in find_cases(again)] == [cases[2].case_id]
    with pytest.raises(ValueError, match="no cases"):
        link_cases([], tmp_path / "empty")


def test_fill_disk_cache_once(session, data_root):
    config = tiny(session, data_root, cache="disk")
    marker = fill_disk_cache(config, workers=0)
    assert marker.exists() and json.loads(marker.read_text())["cases"] == 3
    assert any((Path(config.cache_dir) / "persistent").iterdir())
    assert fill_disk_cache(config, workers=0) == marker
    other = fill_disk_cache(tiny(session, data_root, cache="disk", modalities=("t1ce", "flair")), workers=0)
    assert other != marker  # another pipeline, another marker (the cache's keys cover the pipeline)
    with pytest.raises(ValueError, match="disk cache"):
        fill_disk_cache(tiny(session, data_root))


def weights(out_dir):
    model, _ = model_from_checkpoint(Path(out_dir) / "last.pt")
    return model.state_dict()


def test_ledger_resumes_step_by_step_and_equals_a_straight_run(session, data_root):
    config = tiny(session, data_root, name="chunked")
    first = train_in_chunks(config, max_steps=1)
    assert (first["status"], first["step"], len(first["chunks"])) == ("stopped", 1, 1)
    second = train_in_chunks(config, max_steps=2)  # resumes from last.pt
    assert (second["status"], second["step"], len(second["chunks"])) == ("stopped", 2, 2)
    chunk = second["chunks"][1]
    assert (chunk["first_step"], chunk["last_step"], chunk["steps"]) == (2, 2, 1)
    assert chunk["seconds"] > 0 and chunk["minutes"] == pytest.approx(chunk["seconds"] / 60)
    assert second["seconds"] == pytest.approx(sum(c["seconds"] for c in second["chunks"]))
    assert read_ledger(config.out_dir) == second  # the ledger on disk

    straight_config = tiny(session, data_root, name="straight")
    assert len(train_in_chunks(straight_config, max_steps=2)["chunks"]) == 1
    for (key, a), b in zip(weights(config.out_dir).items(), weights(straight_config.out_dir).values()):
        assert torch.equal(a, b), key  # chunks add up to the straight run, bit for bit

    done = train_in_chunks(config)  # no step budget: to the end of the schedule (4 steps, one epoch)
    assert (done["status"], done["step"], done["total_steps"]) == ("finished", 4, 4)
    assert [v["step"] for v in done["chunks"][-1]["validation"]] == [4]  # the epoch's validation, in its chunk
    assert done["best_dice"] == done["chunks"][-1]["best_dice"] >= 0
    assert len(train_in_chunks(config)["chunks"]) == 3  # a finished run is not trained again


def test_chunk_steps_and_budgets(session, data_root):
    by_step = train_in_chunks(tiny(session, data_root, name="by_step"), chunk_steps=2)
    assert [c["steps"] for c in by_step["chunks"]] == [2, 2] and by_step["status"] == "finished"
    capped_config = tiny(session, data_root, name="capped")
    first = train_in_chunks(capped_config, max_steps=1)
    capped = train_in_chunks(capped_config, max_minutes=first["minutes"] / 2)  # the budget is spent already
    assert (capped["status"], len(capped["chunks"]), capped["step"]) == ("capped", 1, 1)
    paused = train_in_chunks(tiny(session, data_root, name="paused"), minutes_left=lambda: 0.5)
    assert paused["status"] == "paused" and paused["chunks"] == []
    assert not (Path(tiny(session, data_root, name="paused").out_dir) / "last.pt").exists()


def test_train_in_chunks_refuses_bad_budgets(session, data_root):
    config = tiny(session, data_root)
    for kwargs, message in ((dict(max_steps=0), "max_steps"), (dict(chunk_steps=1.5), "chunk_steps"),
                            (dict(max_minutes=0), "max_minutes"), (dict(reserve_minutes=-1), "reserve_minutes")):
        with pytest.raises(ValueError, match=message):
            train_in_chunks(config, **kwargs)


def test_train_on_budget_probes_plans_and_does_not_retrain(session, data_root):
    config = tiny(session, data_root, name="budget", warmup_steps=2, steps_per_epoch=2)
    result = train_on_budget(config, minutes=0.001, probe=(1, 1), min_epochs=2)
    plan = json.loads((Path(config.out_dir) / "plan.json").read_text())
    assert plan["probe_steps"] == 2 and plan["epochs"] == 2 and plan["seconds_per_step"] > 0
    assert (result["status"], result["step"], result["total_steps"]) == ("finished", 4, 4)
    assert result["calls"] == 3 and not result["paused"]  # two probe chunks, then the rest of the run
    assert [c["steps"] for c in result["ledger"]["chunks"]] == [1, 1, 2]
    again = train_on_budget(config, minutes=0.001, probe=(1, 1), min_epochs=2)
    assert again["calls"] == 3
    with pytest.raises(ValueError, match="fit into the warm-up"):
        train_on_budget(tiny(session, data_root, name="bad", warmup_steps=2), minutes=1, probe=(2, 1))
    not_started = train_on_budget(tiny(session, data_root, name="late", warmup_steps=2), minutes=1, probe=(1, 1),
                                  minutes_left=lambda: 1.0)
    assert not_started == {"paused": True, "status": "not started"}
