"""unetr-bench runs end to end on tiny configurations and reports what it promises."""

import json

import pytest

from unetr_lib import bench


def test_small_benchmark_writes_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert bench.main(["--small", "--repeats", "1", "--warmup", "0", "--json", str(out), "--device", "cpu"]) == 0
    report = json.loads(out.read_text())
    assert {"torch", "monai", "device", "results"} <= set(report)
    assert [r["model"] for r in report["results"]] == ["swin_unetr", "unetr"]
    for result in report["results"]:
        assert result["max_abs_diff"] <= 1e-4
        assert result["ours"]["seconds"] > 0 and result["monai"]["seconds"] > 0
        assert result["time_ratio"] == pytest.approx(result["ours"]["seconds"] / result["monai"]["seconds"])
        assert result["ours"]["peak_mem_gib"] > 0 and result["monai"]["peak_mem_gib"] > 0
    assert "ratio" in capsys.readouterr().out


def test_existing_json_is_not_overwritten(tmp_path):
    out = tmp_path / "keep.json"
    out.write_text("mine")
    with pytest.raises(SystemExit):
        bench.main(["--small", "--json", str(out)])
    assert out.read_text() == "mine"


def test_bad_arguments_are_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--unetr-size", "100"])
    assert "multiple of 32" in capsys.readouterr().err
