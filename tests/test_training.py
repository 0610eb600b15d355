"""The LightningModule and the runner: causality, learning, resume, load, seeds, presets and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from algorithms.diffusion_forcing.backbones.rnn_mlp import RecurrentMLP
from algorithms.diffusion_forcing.module import _seeded_generator
from datasets.base import SeededBatchStream
from datasets.timeseries.sources import GLUONTS_SPECS
from experiments.build import build as build_run
from experiments.run import ConfigError, run
from tests.helpers import write_gp_copula_archive
from utils.checkpoint import CheckpointError

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "configurations")
# ts_csv_cpu needs the user's file: tests/test_csv_rules.py runs it end to end on a messy CSV it writes
PRESETS = sorted(p.stem for p in (ROOT / "configurations" / "experiment").glob("*.yaml") if p.stem != "ts_csv_cpu")
# paper-scale networks take ~10 s each on CPU even in smoke mode
PRESET_PARAMS = [
    pytest.param(p, marks=pytest.mark.slow)
    if p.startswith(("ts_", "video_")) and not p.endswith(("_cpu", "_tf", "_fullseq"))
    else p
    for p in PRESETS
]

# a small, fast variant of the quickstart for tests
TINY = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "algorithm.backbone.z_dim=32",
    "algorithm.backbone.hidden_dim=32",
    "algorithm.backbone.emb_dim=16",
    "algorithm.sampler.sampling_steps=5",
    "evaluator.num_samples=16",
    "dataset.num_train=64",
    "dataset.batch_size=16",
]


def make_cfg(tmp_path: Path, overrides: list[str]):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=[f"output_dir={tmp_path}", *overrides])


def build(cfg):
    dm, module = build_run(cfg)
    dm.setup("fit")
    module.normalizer.set_stats(*dm.normalization_stats())
    return dm, module


def test_forward_sequence_equals_step_loop_and_is_causal() -> None:
    torch.manual_seed(0)
    net = RecurrentMLP((3,), z_dim=16, hidden_dim=32, num_res_layers=2, num_gru_layers=2, cond_dim=2)
    x, levels, cond = torch.randn(4, 6, 3), torch.randint(0, 1000, (4, 6)), torch.randn(4, 6, 2)
    z0 = net.init_state(4)
    latents, outputs = net.forward_sequence(z0, x, levels, cond)
    z = z0
    for t in range(6):
        z, y = net(z, x[:, t], levels[:, t], cond[:, t])
        torch.testing.assert_close(y, outputs[:, t])
        torch.testing.assert_close(z, latents[:, t])
    # causality: changing tokens 3.. (inputs, levels, conditions) never changes predictions 0..2
    x2, levels2, cond2 = x.clone(), levels.clone(), cond.clone()
    x2[:, 3:] += 5.0
    levels2[:, 3:] = 999 - levels2[:, 3:]
    cond2[:, 3:] = -cond2[:, 3:]
    _, outputs2 = net.forward_sequence(z0, x2, levels2, cond2)
    assert torch.equal(outputs2[:, :3], outputs[:, :3])
    assert not torch.allclose(outputs2[:, 3:], outputs[:, 3:])


def test_module_loss_is_causal_in_the_data(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, TINY)
    dm, module = build(cfg)
    batch = next(iter(SeededBatchStream(dm.train_set, 4, 0)))
    batch.pop("nonterminal")
    gen = lambda: _seeded_generator(torch.device("cpu"), 0, 0)  # noqa: E731

    def outputs(b):
        x = module.stack(module.normalizer.normalize(b["x"]))
        levels = torch.full(x.shape[:2], 300)
        z0 = module.initial_latent(4, b["first_obs"])
        return module.cell.backbone.forward_sequence(z0, x, levels)[1]

    changed = {k: v.clone() for k, v in batch.items()}
    changed["x"][:, -4:] += 1.0  # the last token (frame_stack 4)
    assert torch.equal(outputs(batch)[:, :-1], outputs(changed)[:, :-1])
    assert module.compute_loss(batch, gen())[0] != module.compute_loss(changed, gen())[0]


@pytest.mark.parametrize("mode", ["diffusion_forcing", "full_sequence", "teacher_forcing"])
def test_short_training_lowers_the_loss(tmp_path: Path, mode: str) -> None:
    cfg = make_cfg(tmp_path, [*TINY, f"algorithm.training_mode={mode}", "algorithm.warmup_steps=1"])
    dm, module = build(cfg)
    eval_batch = SeededBatchStream(dm.train_set, 64, 123).batch(0)

    def eval_loss() -> float:
        with torch.no_grad():
            return module.compute_loss(eval_batch, _seeded_generator(torch.device("cpu"), 9, 9))[0].item()

    before = eval_loss()
    opt = torch.optim.AdamW(module.parameters(), lr=3e-3)
    stream = iter(SeededBatchStream(dm.train_set, 32, 0))
    for step in range(60):
        loss, _ = module.compute_loss(next(stream), _seeded_generator(torch.device("cpu"), 0, step))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.5 * before


def test_full_sequence_mode_shares_levels_and_clean_first(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, [*TINY, "algorithm.training_mode=full_sequence", "algorithm.p_clean_first=1.0"])
    _, module = build(cfg)
    levels = module.sample_levels(8, 5, torch.Generator().manual_seed(0))
    assert torch.all(levels[:, 0] == 0)
    assert torch.all(levels[:, 1:] == levels[:, 1:2])


def _params(module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.state_dict().items()}


def _final_state(run_dir: Path) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def test_resume_after_interruption_matches_uninterrupted(tmp_path: Path) -> None:
    common = [
        *TINY,
        "tasks=[training]",
        "checkpoint.every_n_train_steps=1",
        "trainer.val_check_interval=1000",
        "algorithm.ema_decay=0.9",
    ]
    full_dir, part_dir = tmp_path / "full", tmp_path / "part"
    run(make_cfg(full_dir, [*common, "trainer.max_steps=6"]))
    run(make_cfg(part_dir, [*common, "trainer.max_steps=3"]))  # "interrupted" after 3 steps
    ckpt = torch.load(part_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    run(make_cfg(tmp_path / "new", [*common, "trainer.max_steps=6", f"resume={part_dir}"]))
    full, resumed = _final_state(full_dir), _final_state(part_dir)  # resume writes into the resumed run directory
    assert torch.load(part_dir / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert full.keys() == resumed.keys()
    for key in full:
        torch.testing.assert_close(resumed[key], full[key], msg=key)
    assert any("ema" in k for k in full)


def test_training_run_writes_the_run_directory_and_seeds_repeat(tmp_path: Path) -> None:
    overrides = [*TINY, "trainer.max_steps=4", "trainer.val_check_interval=2"]
    metrics = run(make_cfg(tmp_path / "a", overrides))
    for item in ["config.yaml", "run_info.json", "metrics.json", "checkpoints/last.ckpt", "media/compositional.png"]:
        assert (tmp_path / "a" / item).exists(), item
    stored = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert stored == metrics
    assert {"train/loss", "val/loss", "val/full_memory/opposite_frac", "val/memoryless/turn_frac"} <= set(stored)
    metrics_b = run(make_cfg(tmp_path / "b", overrides))
    assert metrics_b["val/full_memory/support_dist"] == metrics["val/full_memory/support_dist"]
    metrics_c = run(make_cfg(tmp_path / "c", [*overrides, "seed=1"]))
    assert metrics_c["val/full_memory/support_dist"] != metrics["val/full_memory/support_dist"]


def test_load_weights_only_for_evaluation(tmp_path: Path) -> None:
    train = run(make_cfg(tmp_path / "train", [*TINY, "trainer.max_steps=3", "tasks=[training,validation]"]))
    evaluated = run(make_cfg(tmp_path / "eval", [*TINY, "tasks=[validation]", f"load={tmp_path / 'train'}"]))
    assert evaluated["val/full_memory/support_dist"] == pytest.approx(train["val/full_memory/support_dist"])
    assert evaluated["trainer/global_step"] == 0  # weights only: no optimizer or step state


def test_corrupt_and_missing_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read safely"):
        run(make_cfg(tmp_path / "x", [*TINY, "tasks=[validation]", f"load={bad}"]))
    with pytest.raises(CheckpointError, match="no such file"):
        run(make_cfg(tmp_path / "y", [*TINY, f"resume={tmp_path / 'nowhere'}"]))
    with pytest.raises(ConfigError, match="tasks"):
        run(make_cfg(tmp_path / "z", [*TINY, "tasks=[train]"]))


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": np.dtype("float32")}, evil)  # needs arbitrary unpickling
    with pytest.raises(CheckpointError):
        run(make_cfg(tmp_path / "x", [*TINY, "tasks=[validation]", f"load={evil}"]))


def smoke_overrides(tmp_path: Path, preset: str) -> list[str]:
    """``debug=smoke`` (which shrinks every domain through ``debug/dataset/`` and ``debug/evaluator/``) with the data
    cache in ``tmp_path``. Data the machine does not hold are written here in their real layout, so the loader code
    path is the real one: a tiny GluonTS archive for benchmarks that are not shipped, TECO-format episodes."""
    overrides = [f"experiment={preset}", "debug=smoke", f"paths.data_cache={tmp_path / 'cache'}"]
    cfg = make_cfg(tmp_path, overrides)
    if cfg.dataset.get("source") == "gluonts":
        name = cfg.dataset.name
        if not (ROOT.parent / "shared" / "data" / f"{name}.tar.gz").exists():
            shared = tmp_path / "shared"
            pred = GLUONTS_SPECS[name].prediction_length
            values = np.random.default_rng(0).uniform(0, 5, size=(3, 400))
            write_gp_copula_archive(shared, name, values, 2, pred, "2020-01-01 00:00:00")
            overrides += [f"paths.shared_data={shared}", "dataset.max_target_dim=3"]
    target = str(cfg.dataset.get("_target_", ""))
    if target.endswith("MiniworldMazeDataModule"):  # generated once per session, shared by the presets
        overrides.append(f"dataset.data_dir={tmp_path.parent / 'maze'}")
    elif target.endswith("RobotSwapDataModule"):  # demonstrations too (rendered ones cost seconds)
        overrides.append(f"dataset.data_dir={tmp_path.parent / 'robot'}")
    elif target.endswith("OfficialRobotDataModule"):  # tiny recordings in the authors' layout
        from tests.test_robot_official import write_official_episodes

        write_official_episodes(tmp_path / "official", 3, 16, np.random.default_rng(0))
        overrides.append(f"dataset.path={tmp_path / 'official'}")
    elif target.endswith(".VideoDataModule"):  # TECO-format episodes at the preset's resolution
        frames, size = int(cfg.dataset.n_frames), 128 if "minecraft" in preset else 64
        rng = np.random.default_rng(0)
        for split in ("train", "test"):
            folder = Path(str(cfg.dataset.path)) / split
            folder.mkdir(parents=True)
            video = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
            np.savez(folder / "0.npz", video=video, actions=np.zeros(frames, dtype=np.int64))
    return overrides


@pytest.mark.filterwarnings("ignore::FutureWarning")
@pytest.mark.parametrize("preset", PRESET_PARAMS)
def test_every_preset_composes_and_runs_in_smoke_mode(tmp_path: Path, preset: str) -> None:
    cfg = make_cfg(tmp_path, smoke_overrides(tmp_path, preset))
    assert cfg.trainer.max_steps == 2
    metrics = run(cfg)
    assert metrics["trainer/global_step"] == 2
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()


def test_npz_dataset_and_missing_path(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "seq.npz"
    np.savez(path, x=rng.normal(size=(20, 8, 3)).astype(np.float32), cond=rng.normal(size=(20, 8, 2)))
    cfg = make_cfg(tmp_path / "run", ["dataset=npz_sequences", f"dataset.path={path}", "experiment=debug"])
    metrics = run(cfg)
    assert metrics["trainer/global_step"] == cfg.trainer.max_steps
    with pytest.raises(FileNotFoundError, match="dataset.path"):
        run(
            make_cfg(
                tmp_path / "run2",
                ["dataset=npz_sequences", f"dataset.path={tmp_path / 'missing.npz'}", "experiment=debug"],
            )
        )


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "main.py", *args, f"hydra.run.dir={tmp_path}", "logger=none"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("algorithm.beta_schedule=quadratic",), "beta_schedule"),
        (("dataset.n_frames=30",), "frame_stack"),
        (("algorithm.sampler.scheduling_matrix=custom", "algorithm.sampler.matrix=[[3,3],[0,1]]"), "matrix"),
        (("experiment=debug", "dataset=npz_sequences", "dataset.path=/nonexistent/file.npz"), "dataset.path"),
    ],
)
def test_cli_bad_input_is_one_clear_message(tmp_path: Path, args: tuple[str, ...], needle: str) -> None:
    proc = _cli(*args, "trainer.max_steps=1", tmp_path=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert needle in output
    assert "Traceback" not in output


def test_image_tokens_train_and_generate(tmp_path: Path) -> None:
    """U-Net + ConvGRU on frame-stacked image tokens, fused SNR, masks: a few steps, then a rollout."""
    rng = np.random.default_rng(0)
    path = tmp_path / "frames.npz"
    nonterminal = np.ones((12, 8), dtype=bool)
    nonterminal[:3, 6:] = False  # padded tail of some clips
    np.savez(path, x=rng.uniform(size=(12, 8, 1, 16, 16)).astype(np.float32), nonterminal=nonterminal)
    overrides = [
        "experiment=debug",
        "algorithm=df_image",
        "dataset=npz_sequences",
        f"dataset.path={path}",
        "dataset.batch_size=4",
        "algorithm.frame_stack=2",
        "algorithm.backbone.network_size=16",
        "algorithm.backbone.dim_mults=[1,2]",
        "algorithm.backbone.z_channels=8",
        "algorithm.backbone.attn_heads=2",
        "algorithm.backbone.attn_head_dim=8",
        "algorithm.sampler.sampling_steps=3",
        "algorithm.warmup_steps=1",
        "trainer.max_steps=3",
        "trainer.val_check_interval=3",
    ]
    cfg = make_cfg(tmp_path / "run", overrides)
    metrics = run(cfg)
    assert np.isfinite(metrics["val/loss"]) and metrics["trainer/global_step"] == 3
    _, module = build(cfg)
    frames = module.generate(
        6, batch_size=2, context=torch.rand(2, 2, 1, 16, 16), generator=torch.Generator().manual_seed(0)
    )
    assert frames.shape == (2, 6, 1, 16, 16) and torch.isfinite(frames).all()


def test_learning_rate_schedule_warmup_then_constant_or_decayed() -> None:
    from algorithms.diffusion_forcing.module import lr_factor

    # the official schedule: linear warm-up over 100 steps, then constant
    assert [lr_factor(s, 100) for s in (0, 49, 99, 100, 5000)] == [0.01, 0.5, 1.0, 1.0, 1.0]
    # cosine decay after the warm-up, from 1 at step 100 to the floor at step 1100, the floor afterwards
    cosine = [lr_factor(s, 100, "cosine", 1100, 0.1) for s in (99, 100, 600, 1100, 4000)]
    assert cosine == pytest.approx([1.0, 1.0, 0.55, 0.1, 0.1])
    assert lr_factor(600, 100, "linear", 1100, 0.0) == pytest.approx(0.5)
    from experiments.build import instantiate

    cfg = make_cfg(Path("/tmp"), [*TINY, "algorithm.lr_decay=cosine", "algorithm.lr_decay_steps=0"])
    with pytest.raises(ValueError, match="algorithm.lr_decay_steps"):
        instantiate(cfg.algorithm, frame_shape=[2], obs_dim=2)
