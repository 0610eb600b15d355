"""Video data and metrics: the real MNIST digits, the Moving MNIST generator, the TECO episode loader, and each
metric on known inputs."""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datasets.video.moving_mnist import generate_episodes, moving_mnist, read_idx3
from datasets.video.teco import VideoDataModule
from experiments.evaluation.video_metrics import intensity_w1, psnr, psnr_pooled, ssim, stability_by_bin

ROOT = Path(__file__).resolve().parents[1]
MNIST = ROOT.parent / "shared" / "data" / "t10k-images-idx3-ubyte.gz"


def test_shipped_mnist_digits_read_with_the_documented_statistics() -> None:
    digits = read_idx3(MNIST)
    assert digits.shape == (10000, 28, 28) and digits.dtype == np.uint8
    assert digits.mean() / 255 == pytest.approx(0.1325, abs=5e-4)
    assert digits.std() / 255 == pytest.approx(0.3105, abs=5e-4)


def test_bad_idx_files_are_clear_errors(tmp_path: Path) -> None:
    raw = gzip.decompress(MNIST.read_bytes())[: 16 + 3 * 784]
    header = np.array([2051, 3, 28, 28], dtype=">i4").tobytes()
    good = tmp_path / "three.idx"
    good.write_bytes(header + raw[16:])
    assert read_idx3(good).shape == (3, 28, 28)
    (tmp_path / "short.idx").write_bytes(header + raw[16:100])
    with pytest.raises(ValueError, match="truncated"):
        read_idx3(tmp_path / "short.idx")
    (tmp_path / "labels.idx").write_bytes(np.array([2049, 3], dtype=">i4").tobytes() + bytes(12))
    with pytest.raises(ValueError, match="not an IDX3"):
        read_idx3(tmp_path / "labels.idx")
    with pytest.raises(FileNotFoundError, match="shared_data"):
        read_idx3(tmp_path / "missing.gz")


def test_moving_mnist_digits_move_and_bounce_inside_the_canvas() -> None:
    digits = read_idx3(MNIST)[:50]
    rng = np.random.default_rng(0)
    clip = moving_mnist(digits, 40, rng, num_digits=1)
    assert clip.shape == (40, 64, 64) and clip.dtype == np.uint8
    mass = clip.reshape(40, -1).astype(float)
    assert (mass.sum(1) > 0).all()  # the digit never leaves the canvas
    rows, cols = np.meshgrid(np.arange(64), np.arange(64), indexing="ij")
    centre = np.stack([(clip * rows).sum((1, 2)), (clip * cols).sum((1, 2))], 1) / clip.sum((1, 2))[:, None]
    steps = np.linalg.norm(np.diff(centre, axis=0), axis=1)
    assert steps.max() < 4.0 + 1.5 and np.median(steps) > 1.0  # 2–4 px/frame (bounces shorten a step)
    two = moving_mnist(digits, 10, np.random.default_rng(1))
    assert two.max() <= 255 and (two > 0).sum() > (clip[:10] > 0).sum() * 0.8


def test_episode_generation_resumes_and_the_teco_loader_reads_it(tmp_path: Path) -> None:
    paths = generate_episodes(MNIST, tmp_path / "train", num=4, frames=12, seed=0)
    generate_episodes(MNIST, tmp_path / "test", num=2, frames=12, seed=1)
    first = paths[1].read_bytes()
    paths[1].unlink()  # an interrupted run: the missing episode is regenerated identically, the rest kept
    stamp = paths[0].stat().st_mtime_ns
    generate_episodes(MNIST, tmp_path / "train", num=4, frames=12, seed=0)
    assert paths[1].read_bytes() == first and paths[0].stat().st_mtime_ns == stamp
    with np.load(paths[0]) as data:
        assert data["video"].shape == (12, 64, 64, 3) and data["video"].dtype == np.uint8
        assert data["actions"].shape == (12,)

    dm = VideoDataModule(str(tmp_path), n_frames=8, stride=2)
    dm.setup("fit")
    assert dm.frame_shape == (3, 64, 64)
    assert len(dm.train_set) == 4 * 3 and len(dm.val_set) == 2  # windows at 0, 2, 4; validation not overlapping
    x = dm.train_set[1]["x"]
    assert x.shape == (8, 3, 64, 64) and 0.0 <= x.min() and x.max() <= 1.0
    with np.load(paths[0]) as data:
        np.testing.assert_allclose(x[0, 0].numpy() * 255, data["video"][2, :, :, 0])


def test_teco_format_files_and_bad_episodes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 1)):
        (tmp_path / split).mkdir()
        for i in range(n):  # the DMLab layout: video (T, 64, 64, 3) uint8, actions in {0, 1, 2}
            video = rng.integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
            np.savez(tmp_path / split / f"{i}.npz", video=video, actions=rng.integers(0, 3, 30))
    dm = VideoDataModule(str(tmp_path), n_frames=16)
    dm.setup("fit")
    assert len(dm.train_set) == 3 * 15 and dm.normalization_stats() == ([0.5] * 3, [0.5] * 3)
    (tmp_path / "train" / "0.npz").write_bytes(b"PK\x03\x04 truncated")
    # the constructor opens no file: the shapes (read from the first episode's header) and setup report bad files
    with pytest.raises(ValueError, match="not readable"):
        VideoDataModule(str(tmp_path), n_frames=16).model_kwargs()
    with pytest.raises(ValueError, match="not readable"):
        VideoDataModule(str(tmp_path), n_frames=16).setup("fit")
    with pytest.raises(FileNotFoundError, match="no episodes.*scripts.download_teco"):
        VideoDataModule(str(tmp_path / "nowhere"), n_frames=16).model_kwargs()


def reference_ssim(pred: torch.Tensor, target: torch.Tensor, border: str, data_range: float = 1.0) -> torch.Tensor:
    """SSIM per frame written out from Wang et al. (2004): Gaussian window 11, σ 1.5, K1 0.01, K2 0.03, local
    statistics by a depthwise convolution; ``valid`` averages the pixels whose window lies inside the frame,
    ``reflect`` pads the frame by reflection first and averages every pixel. Returns ``(T,)``."""
    b, t, c, h, w = pred.shape
    x = pred.double().reshape(b * t, c, h, w)
    y = target.double().reshape(b * t, c, h, w)
    if border == "reflect":
        x, y = F.pad(x, (5, 5, 5, 5), mode="reflect"), F.pad(y, (5, 5, 5, 5), mode="reflect")
    offsets = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-(offsets**2) / (2 * 1.5**2))
    g = g / g.sum()
    kernel = (g[:, None] * g[None, :]).expand(c, 1, 11, 11)
    blur = lambda v: F.conv2d(v, kernel, groups=c)  # noqa: E731
    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2
    cov = blur(x * y) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    value = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return value.flatten(1).mean(-1).reshape(b, t).mean(0)


def reference_psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    mse = ((pred.double() - target.double()) ** 2).flatten(2).mean(-1)  # (B, T)
    return (10.0 * torch.log10(data_range**2 / mse)).mean(0)


def test_torchmetrics_psnr_and_ssim_equal_the_definitions_on_fixed_frames() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 4, 3, 24, 32, generator=gen) * 0.6 + 0.2
    pred = (target + 0.1 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
    # torchmetrics takes log(10) in float32: agreement to about 1e-7 relative
    torch.testing.assert_close(psnr(pred, target), reference_psnr(pred, target), rtol=1e-6, atol=0)
    for border in ("reflect", "valid"):
        torch.testing.assert_close(
            ssim(pred, target, border=border), reference_ssim(pred, target, border), rtol=1e-10, atol=1e-10
        )
    assert (ssim(pred, target) - ssim(pred, target, border="valid")).abs().max() > 1e-4  # the borders differ
    pooled = 10 * torch.log10(1 / ((pred.double() - target.double()) ** 2).mean())
    torch.testing.assert_close(psnr_pooled(pred, target), pooled, rtol=1e-6, atol=0)
    with pytest.raises(ValueError, match="border"):
        ssim(pred, target, border="zeros")


def test_psnr_and_ssim_on_known_inputs() -> None:
    gen = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 3, 32, 32, generator=gen) * 0.6 + 0.2
    assert torch.isinf(psnr(target, target)).all()
    assert ssim(target, target) == pytest.approx(torch.ones(3, dtype=torch.float64))
    noisy = target + 0.1 * torch.randn(target.shape, generator=gen)
    assert psnr(noisy, target).mean().item() == pytest.approx(20.0, abs=0.15)  # 10·log10(1 / 0.1²)
    noisier = target + 0.2 * torch.randn(target.shape, generator=gen)
    assert (ssim(noisier, target) < ssim(noisy, target)).all() and (ssim(noisy, target) < 1).all()
    # constant frames a, b: SSIM = (2ab + C1)/(a² + b² + C1) exactly (zero variances)
    a, b = torch.full((1, 1, 1, 16, 16), 0.5), torch.full((1, 1, 1, 16, 16), 0.6)
    c1 = 0.01**2
    assert ssim(a, b).item() == pytest.approx((2 * 0.3 + c1) / (0.25 + 0.36 + c1), rel=1e-6)  # float32 inputs
    # the range convention: the same frames in [0, 255] with data_range=255 give the same values
    assert psnr(noisy * 255, target * 255, 255.0) == pytest.approx(psnr(noisy, target))
    with pytest.raises(ValueError, match="same shape"):
        psnr(target, target[:, :2])


def test_stability_measure_flags_a_diverging_rollout() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(4, 8, 3, 16, 16, generator=gen)
    stable = torch.rand(4, 24, 3, 16, 16, generator=gen)
    diverging = stable.clone()
    diverging[:, 16:] = 1.0  # saturates after 16 frames
    s, d = stability_by_bin(stable, real, 8), stability_by_bin(diverging, real, 8)
    assert s["w1"].shape == (3,) and (s["w1"] < 0.02).all()
    assert d["w1"][:2].allclose(s["w1"][:2]) and d["w1"][2] > 0.4 and d["std_gap"][2] > 0.25
    assert intensity_w1(real, real).item() == pytest.approx(0.0, abs=1e-12)
    assert math.isclose(intensity_w1(torch.zeros(10), torch.ones(10)).item(), 1.0)


def test_generation_script_writes_both_splits(tmp_path: Path) -> None:
    from scripts.generate_video_data import main

    out = main(["--shared-data", str(MNIST.parent), "--out", str(tmp_path), "--num-train", "2", "--num-test", "1",
                "--frames", "6"])  # fmt: skip
    assert len(list((out / "train").glob("*.npz"))) == 2 and len(list((out / "test").glob("*.npz"))) == 1


def _lpips_files(tmp_path: Path) -> tuple[Path, Path]:
    from experiments.evaluation.lpips import ALEX_CONVS, TORCHVISION_INDEX

    gen = torch.Generator().manual_seed(0)
    alex, heads = {}, {}
    for i, (idx, (c_in, c_out, k, _, _)) in enumerate(zip(TORCHVISION_INDEX, ALEX_CONVS)):
        alex[f"features.{idx}.weight"] = torch.randn(c_out, c_in, k, k, generator=gen) * 0.05
        alex[f"features.{idx}.bias"] = torch.zeros(c_out)
        heads[f"lin{i}.model.1.weight"] = torch.rand(1, c_out, 1, 1, generator=gen)
    torch.save(alex, tmp_path / "alexnet.pth")
    torch.save(heads, tmp_path / "alex.pth")
    return tmp_path / "alexnet.pth", tmp_path / "alex.pth"


def test_lpips_from_local_files_is_a_distance(tmp_path: Path) -> None:
    from experiments.evaluation.lpips import LPIPS

    backbone, linear = _lpips_files(tmp_path)
    lpips = LPIPS.from_files(backbone, linear)
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 64, 64, generator=gen)
    y = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    z = (x + 0.4 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    assert torch.allclose(lpips(x, x), torch.zeros(3), atol=1e-6)
    assert (lpips(x, y) > 0).all() and torch.allclose(lpips(x, y), lpips(y, x), atol=1e-6)
    assert (lpips(x, z) > lpips(x, y)).all()  # more noise, larger distance
    torch.save({"features.0.weight": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match="AlexNet"):
        LPIPS.from_files(tmp_path / "wrong.pth", linear)
    with pytest.raises(FileNotFoundError, match="lpips_linear"):
        LPIPS.from_files(backbone, tmp_path / "missing.pth")


def test_resolution_average_pools_the_frames(tmp_path: Path) -> None:
    generate_episodes(MNIST, tmp_path / "train", num=1, frames=4, seed=0)
    generate_episodes(MNIST, tmp_path / "test", num=1, frames=4, seed=1)
    full = VideoDataModule(str(tmp_path), n_frames=4)
    half = VideoDataModule(str(tmp_path), n_frames=4, resolution=32)
    full.setup("fit")
    half.setup("fit")
    assert half.frame_shape == (3, 32, 32)
    big, small = full.train_set[0]["x"], half.train_set[0]["x"]
    pooled = torch.nn.functional.avg_pool2d(big.flatten(0, 1), 2).reshape(small.shape)
    assert (pooled - small).abs().max() <= 0.5 / 255 + 1e-6  # mean of 2×2 blocks, rounded to uint8
    with pytest.raises(ValueError, match="resolution"):
        VideoDataModule(str(tmp_path), n_frames=4, resolution=48).model_kwargs()


def test_stability_report_reads_runs_and_plots(tmp_path: Path) -> None:
    from scripts.plot_stability import main

    for name, bins in (("df", [0.02, 0.03, 0.025]), ("tf", [0.02, 0.1, 0.3])):
        (tmp_path / name).mkdir()
        metrics = {f"val/stability/w1_bin{i:02d}": v for i, v in enumerate(bins)} | {"val/psnr": 20.0}
        (tmp_path / name / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "plot.png"
    text = main(["--run", f"DF={tmp_path / 'df'}", "--run", f"TF={tmp_path / 'tf'}", "--bin-frames", "16",
                 "--out", str(out)])  # fmt: skip
    rows = text.splitlines()
    assert rows[0].startswith("| run | 0–16 | 16–32 | 32–48 | drift")
    assert rows[2] == "| DF | 0.0200 | 0.0300 | 0.0250 | 1.25 |" and rows[3].endswith("| 15.00 |")
    assert out.stat().st_size > 1000
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="evaluate the run first"):
        main(["--run", f"X={tmp_path / 'empty'}"])


def test_frechet_distance_matches_the_closed_form_for_gaussians() -> None:
    from experiments.evaluation.fvd import frechet_distance

    rng = np.random.default_rng(0)
    a = rng.normal(0.0, 1.0, size=(40000, 2))
    b = rng.normal([1.0, -2.0], [2.0, 0.5], size=(40000, 2))
    expected = (1.0 + 4.0) + ((1 - 2.0) ** 2 + (1 - 0.5) ** 2)  # ‖Δμ‖² + Σ (σ_a − σ_b)² for diagonal covariances
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.03)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_fvd_from_a_local_i3d_file_orders_noise_levels(tmp_path: Path) -> None:
    from experiments.evaluation.fvd import FVD, InceptionI3d

    torch.manual_seed(0)
    net = InceptionI3d(num_classes=16)
    for m in net.modules():  # non-trivial batch-norm statistics, as in trained weights
        if isinstance(m, torch.nn.BatchNorm3d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    state = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}  # an old file
    torch.save(state, tmp_path / "i3d.pt")
    fvd = FVD(tmp_path / "i3d.pt", size=32)
    gen = torch.Generator().manual_seed(1)
    real = torch.rand(6, 8, 3, 16, 16, generator=gen)
    slightly = (real + 0.05 * torch.randn(real.shape, generator=gen)).clamp(0, 1)
    very = (real + 0.5 * torch.randn(real.shape, generator=gen)).clamp(0, 1)
    assert fvd(real, real) == pytest.approx(0.0, abs=1e-6)
    assert 0.0 < fvd(real, slightly) < fvd(real, very)
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an Inception-I3D"):
        FVD(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="fvd_weights"):
        FVD(tmp_path / "missing.pt")


def test_minecraft_style_mp4_episodes_beside_their_actions(tmp_path: Path) -> None:
    """TECO Minecraft episodes keep their frames in ``<stem>.mp4`` beside an ``.npz`` of actions."""
    import imageio.v3 as iio

    for split in ("train", "test"):
        (tmp_path / split).mkdir()
        frames = np.tile(np.array([40, 160, 90], dtype=np.uint8), (12, 32, 32, 1))
        iio.imwrite(tmp_path / split / "0.mp4", frames, fps=10, plugin="FFMPEG")
        np.savez(tmp_path / split / "0.npz", actions=np.zeros(12, dtype=np.int64))
    dm = VideoDataModule(str(tmp_path), n_frames=8)
    assert dm.model_kwargs()["frame_shape"] == [3, 32, 32]  # from the video's properties, nothing decoded
    dm.setup("fit")
    clip = dm.train_set[0]["x"]
    assert clip.shape == (8, 3, 32, 32)
    np.testing.assert_allclose(clip.mean(dim=(0, 2, 3)).numpy() * 255, [40, 160, 90], atol=10)
