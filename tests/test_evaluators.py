"""The evaluator base: a callback outside the model that runs where it should, names metrics ``<stage>/<key>``,
writes media into the run folder, restores the module's mode and leaves the module unaware of it."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch

from algorithms.diffusion_forcing.module import DiffusionForcing
from experiments.evaluation.base import DomainEvaluator, EvalContext, flatten
from experiments.evaluation.compositional import CompositionalEvaluator
from experiments.evaluation.forecasting import ForecastEvaluator
from experiments.evaluation.maze import MazePlanningEvaluator
from experiments.evaluation.video import VideoEvaluator
from experiments.run import run
from tests.test_training import TINY, make_cfg


class Recorder(DomainEvaluator):
    """Records every call: the stage, the module's mode, and whether it ran inside fit."""

    def __init__(self, during_training: bool = False, fail: bool = False) -> None:
        super().__init__(seed=3, during_training=during_training)
        self.calls: list[tuple[str, bool, bool]] = []
        self.fail = fail

    def compute(self, module, ctx: EvalContext) -> dict[str, float]:
        self.calls.append((ctx.stage, module.training, ctx.fitting))
        if self.fail:
            raise RuntimeError("boom")
        path = ctx.media(f"recorder_{ctx.stage}.txt")
        path.write_text("x")
        draw = torch.rand(1, generator=self.generator(torch.device("cpu"), 5)).item()
        return flatten({"mode": {"value": 1.5, "draw": draw}})


def test_every_domain_evaluator_shares_the_base() -> None:
    for cls in (CompositionalEvaluator, ForecastEvaluator, MazePlanningEvaluator, VideoEvaluator):
        assert issubclass(cls, DomainEvaluator)
        assert "compute" in cls.__dict__  # the domain part
        assert "evaluate" not in cls.__dict__ and "_run" not in cls.__dict__  # the skeleton is the base's
    # the module knows nothing about evaluation, output folders or media
    params = inspect.signature(DiffusionForcing.__init__).parameters
    assert "evaluator" not in params
    source = inspect.getsource(DiffusionForcing)
    assert "evaluator" not in source and "media" not in source and "output_dir" not in source


def test_callback_runs_after_training_names_metrics_and_writes_media(tmp_path: Path, monkeypatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr("experiments.run.build_evaluator", lambda cfg: recorder)
    cfg = make_cfg(
        tmp_path, [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", "tasks=[training,validation,test]"]
    )
    metrics = run(cfg)
    # not during fit (during_training false, and never in the sanity check), once in validation, once in test
    assert recorder.calls == [("val", False, False), ("test", False, False)]
    assert metrics["val/mode/value"] == 1.5 and metrics["test/mode/value"] == 1.5
    expected = torch.rand(1, generator=torch.Generator().manual_seed(3 + 5)).item()
    assert metrics["val/mode/draw"] == pytest.approx(expected)  # seeded from seed + offset only
    assert (tmp_path / "media" / "recorder_val.txt").exists() and (tmp_path / "media" / "recorder_test.txt").exists()


def test_during_training_runs_inside_fit(tmp_path: Path, monkeypatch) -> None:
    recorder = Recorder(during_training=True)
    monkeypatch.setattr("experiments.run.build_evaluator", lambda cfg: recorder)
    run(make_cfg(tmp_path, [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2", "tasks=[training]"]))
    assert recorder.calls == [("val", False, True), ("val", False, True)]  # steps 2 and 4, not the sanity check


def test_evaluate_restores_the_mode_on_error(tmp_path: Path) -> None:
    module = torch.nn.Linear(2, 2).train()
    with pytest.raises(RuntimeError, match="boom"):
        Recorder(fail=True).evaluate(module, "val")
    assert module.training
    metrics = Recorder().evaluate(module.eval(), EvalContext("test", media_dir=tmp_path / "media"))
    assert not module.training and metrics["mode/value"] == 1.5
    assert (tmp_path / "media" / "recorder_test.txt").exists()


def test_evaluator_group_builds_the_callback(tmp_path: Path) -> None:
    from experiments.build import build_evaluator

    assert build_evaluator(make_cfg(tmp_path, ["evaluator=none"])) is None
    evaluator = build_evaluator(make_cfg(tmp_path, ["experiment=maze2d_umaze_cpu", "evaluator.num_envs=3"]))
    assert isinstance(evaluator, MazePlanningEvaluator) and evaluator.num_envs == 3
