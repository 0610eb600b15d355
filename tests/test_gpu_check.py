"""``scripts.gpu_check`` on a CPU (``--device cpu --tiny``): the code a GPU machine runs, so that it cannot rot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from scripts import gpu_check

EXPERIMENTS = Path(gpu_check.CONFIG_DIR) / "experiment"
ONE_PER_DOMAIN = ["video_dmlab", "maze2d_umaze", "ts_exchange", "robot_swap"]


def test_the_check_covers_every_paper_scale_preset() -> None:
    """Every preset that is not a CPU twin, the quickstart or the debug preset is a paper-scale one."""
    paper = {
        p.stem
        for p in EXPERIMENTS.glob("*.yaml")
        if "_cpu" not in p.stem and not p.stem.startswith(("compositional", "debug"))
    }
    assert paper == set(gpu_check.PAPER_PRESETS)


def run_check(tmp_path: Path, presets: list[str], *extra: str) -> tuple[int, dict]:
    out = tmp_path / "check"
    code = gpu_check.main(
        ["--device", "cpu", "--tiny", "--presets", *presets, "--steps", "8", "--min-steps", "8", "--minutes", "0.1",
         "--out", str(out), *extra]
    )  # fmt: skip
    return code, json.loads((out / "gpu_check.json").read_text())


def test_tiny_cpu_check_trains_measures_and_samples_one_preset_per_domain(tmp_path: Path) -> None:
    code, report = run_check(tmp_path, ONE_PER_DOMAIN)
    assert code == 0 and report["ok"]
    assert [p["preset"] for p in report["presets"]] == ONE_PER_DOMAIN
    assert report["matmul_peak"]["bf16_tflops"] > 0
    for p in report["presets"]:
        assert [r["precision"] for r in p["runs"]] == list(gpu_check.PRECISIONS)
        for r in p["runs"]:
            assert r["ok"] and r["steps"] == 8 and r["all_losses_finite"]
            assert len(r["losses"]) == 8 and all(torch.isfinite(torch.tensor(r["losses"])))
            assert r["loss_after"] < r["loss_before"]
            assert r["tokens_per_s"] > 0 and r["model_tflop_per_step"] > 0 and 0 < r["mfu_vs_bf16_matmul"]
        # Lightning has no fp16 autocast on a CPU and runs bf16 instead; the report says which ran
        assert [r["precision_used"] for r in p["runs"]] == ["bf16-mixed", "bf16-mixed"]
        assert p["sampling"]["finite"] and p["sampling"]["seconds"] > 0
    by_name = {p["preset"]: p for p in report["presets"]}
    assert by_name["video_dmlab"]["sequence"] == [8, 3, 16, 16]  # 2 tokens of frame_stack 4, 16×16 frames
    assert by_name["robot_swap"]["facts"]["frame_shape"][0] == 10  # two RGB cameras + 4 action planes
    table = (tmp_path / "check" / "gpu_check.md").read_text()
    for preset in ONE_PER_DOMAIN:
        assert table.count(f"| {preset} |") == 3  # two precisions and the sampling plan
    assert "all checks passed" in table


def test_a_non_finite_loss_fails_the_check_and_is_reported(tmp_path: Path, monkeypatch) -> None:
    real = gpu_check.synthetic_batch

    def poisoned(*args, **kwargs):
        batch = real(*args, **kwargs)
        batch["x"][0, 0] = float("nan")
        return batch

    monkeypatch.setattr(gpu_check, "synthetic_batch", poisoned)
    code, report = run_check(tmp_path, ["maze2d_umaze"], "--precisions", "bf16-mixed")
    assert code == 1 and not report["ok"]
    run = report["presets"][0]["runs"][0]
    assert not run["ok"] and "non-finite loss" in run["failure"]
    assert "FAILED" in (tmp_path / "check" / "gpu_check.md").read_text()


def test_without_cuda_the_default_device_stops_with_a_clear_message(capsys, monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert gpu_check.main(["--presets", "maze2d_umaze"]) == 2
    assert "--device cpu --tiny" in capsys.readouterr().err


def test_unknown_preset_is_refused_with_the_list(capsys) -> None:
    with pytest.raises(SystemExit):
        gpu_check.main(["--device", "cpu", "--presets", "maze2d_huge"])
    assert "maze2d_umaze" in capsys.readouterr().err


@pytest.mark.parametrize("tiny", [True, False])
def test_every_paper_preset_gets_its_model_facts_and_a_batch_without_data(tiny: bool) -> None:
    """What a GPU machine without datasets needs for each preset: the config, the model's data facts (from the
    config, or the paper where they come from data) and a synthetic batch of the preset's layout (one item)."""
    for preset in gpu_check.PAPER_PRESETS:
        base = gpu_check.compose(preset, [])
        domain = gpu_check.domain_of(base)
        cfg = gpu_check.compose(preset, gpu_check.tiny_overrides(base, domain) if tiny else [])
        datamodule, facts, _ = gpu_check.data_facts(cfg, preset, domain, tiny)
        batch = gpu_check.synthetic_batch(datamodule, facts, domain, 1)
        assert tuple(batch["x"].shape[2:]) == tuple(facts["frame_shape"]), preset
        assert batch["x"].shape[1] % int(cfg.algorithm.frame_stack) == 0, preset
        assert torch.isfinite(batch["x"]).all(), preset
