"""Video prediction with the U-Net + ConvGRU: a smoke train-plus-rollout run reaches 10x its training length with
flat memory, and writes the metrics and the video strip."""

from __future__ import annotations

import gc
from pathlib import Path

import torch

from experiments.evaluation.fvd import InceptionI3d
from experiments.run import run
from tests.test_training import build, make_cfg
from tests.test_video_data import _lpips_files

SMALL = [
    "experiment=video_mnist_cpu", "logger=none", "trainer.enable_progress_bar=false", "dataset.num_train=6",
    "dataset.num_test=2", "dataset.episode_frames=8", "dataset.n_frames=8", "dataset.batch_size=2",
    "dataset.size=32", "algorithm.backbone.network_size=8", "algorithm.backbone.z_channels=4",
    "algorithm.backbone.dim_mults=[1,2]", "algorithm.sampler.sampling_steps=2", "evaluator.num_videos=2",
    "evaluator.context_frames=2", "evaluator.bin_frames=8",
]  # fmt: skip


def _live_tensor_bytes() -> int:
    gc.collect()
    return sum(o.numel() * o.element_size() for o in gc.get_objects() if torch.is_tensor(o))


def test_rollout_to_ten_times_the_training_length_keeps_memory_flat(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, [*SMALL, f"paths.data_cache={tmp_path / 'cache'}"])
    dm, module = build(cfg)
    module.eval()
    context = torch.stack([dm.val_set[0]["x"][:2]])  # (1, 2, 3, 32, 32)
    sizes, frames = [], 0
    for i, chunk in enumerate(module.iter_generate(80, context, generator=torch.Generator().manual_seed(0))):
        frames += chunk.shape[1]  # 10 x the 8-frame window, one token (2 frames) per chunk
        assert torch.isfinite(chunk).all()
        if i % 6 == 2:
            sizes.append(_live_tensor_bytes())
    assert frames == 80
    chunk_bytes = chunk.numel() * chunk.element_size()
    # nothing accumulates over the rollout: the live tensors stay within a few chunks' size
    assert len(sizes) >= 6 and max(sizes) - min(sizes) <= 4 * chunk_bytes, (sizes, chunk_bytes)


def test_smoke_train_and_rollout_writes_metrics_and_video(tmp_path: Path) -> None:
    backbone, linear = _lpips_files(tmp_path)  # LPIPS and FVD from local files (random weights, right shapes)
    torch.save(InceptionI3d(num_classes=8).state_dict(), tmp_path / "i3d.pt")
    metrics = run(make_cfg(tmp_path, [*SMALL, f"paths.data_cache={tmp_path / 'cache'}", "trainer.max_steps=2",
                                      "evaluator.rollout_frames=80",
                                      f"evaluator.lpips_backbone={backbone}",
                                      f"evaluator.lpips_linear={linear}",
                                      f"evaluator.fvd_weights={tmp_path / 'i3d.pt'}",
                                      "evaluator.fvd_size=32"]))  # fmt: skip
    assert metrics["val/lpips"] > 0
    assert metrics["val/fvd"] > 0 and metrics["val/fvd_clips"] == 2.0 and metrics["val/fvd_frames"] == 6.0
    assert metrics["val/rollout_frames"] == 80.0  # 10x the 8-frame training window
    bins = [k for k in metrics if k.startswith("val/stability/w1_bin")]
    assert len(bins) == 10 and all(0.0 <= metrics[k] <= 1.0 for k in bins)
    assert 0.0 < metrics["val/psnr"] and 0.0 < metrics["val/psnr_pooled"] and -1.0 <= metrics["val/ssim"] <= 1.0
    gif = tmp_path / "media" / "video_val.gif"
    assert gif.is_file() and gif.stat().st_size > 1000
    from PIL import Image

    with Image.open(gif) as image:
        assert image.n_frames == 2 + 80 and image.size == (2 * 32, 2 * 32)  # 2 videos wide, truth over prediction


def test_validation_with_longer_windows_rolls_out_a_trained_checkpoint(tmp_path: Path) -> None:
    data = [f"paths.data_cache={tmp_path / 'cache'}", "dataset.episode_frames=24"]
    run(make_cfg(tmp_path / "train", [*SMALL, *data, "tasks=[training]", "trainer.max_steps=2"]))
    ckpt = tmp_path / "train" / "checkpoints" / "last.ckpt"
    long = ["tasks=[validation]", f"load={ckpt}", "dataset.n_frames=24", "evaluator.rollout_frames=null"]
    metrics = run(make_cfg(tmp_path / "long", [*SMALL, *data, *long]))
    assert metrics["val/rollout_frames"] == 240.0  # 10x the longer window
    assert 0.0 < metrics["val/psnr"]  # scored against the 22 real frames after the context
    from PIL import Image

    with Image.open(tmp_path / "long" / "media" / "video_val.gif") as image:
        assert image.n_frames == 2 + 240  # context + the whole rollout (media_frames 256)
