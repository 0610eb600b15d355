"""The GPU check: every paper-scale preset trained briefly in both mixed precisions, timed and sampled once.

    python -m scripts.gpu_check [--out DIR] [--minutes 8]                  # on a machine with one CUDA GPU
    python -m scripts.gpu_check --device cpu --tiny [--presets ...]        # the same code path, small, on a CPU

For each preset of :data:`PAPER_PRESETS` and each precision of :data:`PRECISIONS` it

- builds the model from the preset's own config (``experiment=<preset>``) and trains it with Lightning for a few
  steps at the preset's batch size per device (``dataset.batch_size``) on one fixed synthetic batch of the data's
  shape, so that no dataset needs to be present; every loss must be finite, and the loss of a fixed evaluation
  draw (same batch, same noise, fp32) must be lower after the steps than before;
- reports the median step time, tokens per second, the model FLOPs of one step (forward + backward, counted by
  ``torch.utils.flop_counter``) and their rate as a fraction of a measured large bf16 matmul on the same device
  (model FLOPs utilisation), and the peak memory (``torch.cuda.max_memory_allocated``);

and, once per preset, times one sampling plan of the preset's evaluation in fp32 with the preset's sampler (a
pyramid plan for the mazes, one stabilised chunk after the context for video, one forecast window for time
series, one episode's tokens for the robot) and checks it for NaN/inf.

Two settings differ from a real run, and the report says so: the learning-rate warm-up is cut to
``--warmup`` steps (the presets warm up over 100–5000 steps, so a few steps at the start of the real warm-up
would not move the loss), and the data are synthetic (smooth sinusoids per element; frames in [0, 1]). The
model's data facts (frame shape, condition and observation sizes) come from the data when it is present at the
preset's ``dataset.path`` and otherwise from the paper (:data:`VIDEO_FRAME_SIZE`). ``--tiny`` shrinks every
preset (widths, sequence length, frame size, batch, sampling steps) so that the whole check runs on a CPU in a
minute; ``tests/test_gpu_check.py`` runs it that way.

Writes ``gpu_check.json`` (every figure, per preset and precision) and ``gpu_check.md`` (the tables) into ``--out``
and exits with status 1 when any check failed. The step-by-step for a GPU machine without a package index is in
``docs/PERFORMANCE.md`` ("The GPU check").
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import math
import platform
import statistics
import sys
import time
import traceback
import warnings
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "configurations")

# Every paper-scale preset (configurations/experiment/ without the CPU, debug and quickstart presets).
PAPER_PRESETS = (
    "video_dmlab",
    "video_minecraft",
    "maze2d_umaze",
    "maze2d_medium",
    "maze2d_large",
    "ts_exchange",
    "ts_electricity",
    "ts_solar",
    "ts_traffic",
    "ts_taxi",
    "ts_wikipedia",
    "robot_swap",
    "robot_official",
)
PRECISIONS = ("16-mixed", "bf16-mixed")
VIDEO_FRAME_SIZE = {"video_dmlab": 64, "video_minecraft": 128}  # the paper's frames (App. D) when no data is here
OFFICIAL_ROBOT_CAMERAS = 2  # the authors' recordings: a wrist and a front camera (App. F.3)

# --tiny: every width-like key a backbone may have, and what it becomes (keys a backbone lacks are not added)
TINY_BACKBONE = {
    "z_dim": 16,
    "hidden_dim": 32,
    "num_res_layers": 1,
    "z_channels": 4,
    "network_size": 8,
    "width": 32,
    "depth": 1,
    "heads": 2,
    "attn_heads": 2,
    "attn_head_dim": 8,
}
TINY_FRAME_SIZE = 16


class CheckError(RuntimeError):
    """A preset cannot be checked as configured; the message says which preset and key."""


# -- configuration ----------------------------------------------------------------------------------------------
def compose(preset: str, overrides: list[str]) -> Any:
    """The preset's config; a data path the user must give (``???``) points nowhere, so the facts come from the
    paper instead."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose(
            config_name="config",
            overrides=[f"experiment={preset}", "output_dir=/tmp/df-gpu-check", "logger=none", *overrides],
        )
    if "path" in cfg.dataset.keys() and OmegaConf.is_missing(cfg.dataset, "path"):  # `in` skips ??? values
        cfg.dataset.path = "/nonexistent/gpu-check-without-data"
    return cfg


def domain_of(cfg: Any) -> str:
    """``video``, ``maze``, ``timeseries`` or ``robot``, from the preset's datamodule class."""
    target = str(cfg.dataset._target_)
    for key, domain in (("video", "video"), ("maze2d", "maze"), ("timeseries", "timeseries"), ("robot", "robot")):
        if f"datasets.{key}." in target:
            return domain
    raise CheckError(f"dataset._target_={target} is not a domain the GPU check knows; add it to scripts/gpu_check.py")


def tiny_overrides(cfg: Any, domain: str) -> list[str]:
    """Overrides that shrink a preset to a CPU-sized model and batch while keeping its structure."""
    backbone = cfg.algorithm.backbone
    out = [f"algorithm.backbone.{k}={v}" for k, v in TINY_BACKBONE.items() if k in backbone]
    if "num_gru_layers" in backbone and backbone.num_gru_layers > 1:
        out.append("algorithm.backbone.num_gru_layers=1")
    fs = int(cfg.algorithm.frame_stack)
    out += [f"dataset.batch_size={2 if domain in ('video', 'robot') else 4}", "algorithm.sampler.sampling_steps=4"]
    if domain == "video":
        out.append(f"dataset.n_frames={2 * fs}")
        if "context_frames" in cfg.evaluator:
            out.append(f"evaluator.context_frames={fs}")
    elif domain == "maze":
        out.append(f"dataset.episode_len={4 * fs}")
    elif domain == "timeseries":
        out.append("dataset.max_target_dim=3")
    elif domain == "robot" and "chunk" in cfg.dataset:  # the simulated swap table
        chunk = int(cfg.dataset.chunk)
        out += [f"dataset.episode_steps={3 * chunk}", f"dataset.image_size={TINY_FRAME_SIZE}"]
    elif domain == "robot":  # the official recordings' layout
        out += ["dataset.action_stack=3", "dataset.n_frames=4", f"dataset.resolution={TINY_FRAME_SIZE}"]
    return out


def data_facts(cfg: Any, preset: str, domain: str, tiny: bool) -> tuple[Any, dict[str, Any], str]:
    """``(datamodule, model facts, where the facts came from)``; the datamodule is built without preparing data."""
    from experiments.build import build_datamodule

    datamodule = build_datamodule(cfg, prepare=False)
    if domain == "video" and tiny:
        return datamodule, {"frame_shape": [3, TINY_FRAME_SIZE, TINY_FRAME_SIZE], "cond_dim": 0, "obs_dim": 0}, "tiny"
    try:
        return datamodule, datamodule.model_kwargs(), "config or data header"
    except (FileNotFoundError, OSError, IndexError) as err:
        if domain == "robot" and hasattr(datamodule, "action_stack"):  # the official layout without recordings
            size = int(datamodule.resolution)
            channels = 3 * OFFICIAL_ROBOT_CAMERAS + int(datamodule.action_stack)
            facts = {"frame_shape": [channels, size, size], "cond_dim": 0, "obs_dim": 0}
            return datamodule, facts, f"the paper's {OFFICIAL_ROBOT_CAMERAS} cameras (no recordings at dataset.path)"
        if domain != "video":
            raise CheckError(f"{preset}: the model's data facts need the data ({err})") from err
        size = VIDEO_FRAME_SIZE[preset]
        facts = {"frame_shape": [3, size, size], "cond_dim": 0, "obs_dim": 0}
        return datamodule, facts, f"paper frame size {size}×{size} (no data at dataset.path)"


# -- synthetic data ---------------------------------------------------------------------------------------------
def smooth(shape: tuple[int, ...], gen: torch.Generator, unit: bool = False) -> torch.Tensor:
    """``(B, T, ...)`` sinusoids along T with a random frequency and phase per element: learnable structure."""
    b, t, *rest = shape
    freq = 0.05 + 0.3 * torch.rand(b, 1, *rest, generator=gen)
    phase = 2 * math.pi * torch.rand(b, 1, *rest, generator=gen)
    steps = torch.arange(t, dtype=torch.float32).reshape(1, t, *[1] * len(rest))
    x = torch.sin(freq * steps + phase)
    return 0.5 * (x + 1) if unit else x


def synthetic_batch(datamodule: Any, facts: dict[str, Any], domain: str, batch_size: int, seed: int = 0):
    """One training batch of the preset's layout: ``x (B, T, *frame_shape)`` and the keys its domain adds."""
    gen = torch.Generator().manual_seed(seed)
    frame = tuple(facts["frame_shape"])
    if domain == "timeseries":
        t, d = datamodule.window_length, frame[0]
        feats = facts["cond_dim"] - d * len(datamodule.lags)
        return {
            "x": smooth((batch_size, t, d), gen),
            "past": smooth((batch_size, datamodule.max_lag, d), gen),
            "time_feat": torch.rand(batch_size, t, feats, generator=gen) - 0.5,
        }
    if domain == "maze":
        t = datamodule.episode_len
        nonterminal = torch.ones(batch_size, t, dtype=torch.bool)
        nonterminal[:, -1] = False
        return {"x": smooth((batch_size, t, *frame), gen), "first_obs": smooth((batch_size, 1, 4), gen)[:, 0],
                "nonterminal": nonterminal}  # fmt: skip
    if domain == "robot" and hasattr(datamodule, "action_stack"):  # official layout: full items, none padded
        return {"x": smooth((batch_size, int(datamodule.n_frames), *frame), gen, unit=True),
                "nonterminal": torch.ones(batch_size, int(datamodule.n_frames), dtype=torch.bool)}  # fmt: skip
    if domain == "robot":
        t = datamodule.tokens_per_episode + (1 if len(frame) == 3 else 0)  # image tokens: o_0 is a context token
    else:
        t = int(datamodule.n_frames)
    batch = {"x": smooth((batch_size, t, *frame), gen, unit=len(frame) == 3)}
    if facts.get("obs_dim"):
        batch["first_obs"] = smooth((batch_size, 1, facts["obs_dim"]), gen)[:, 0]
    if facts.get("cond_dim"):
        batch["cond"] = smooth((batch_size, t, facts["cond_dim"]), gen)
    return batch


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


class RepeatBatch(torch.utils.data.IterableDataset):
    """The same batch forever (already on the device; Lightning leaves it there)."""

    def __init__(self, batch: dict[str, torch.Tensor]) -> None:
        self.batch = batch

    def __iter__(self):
        while True:
            yield self.batch


# -- measurements -----------------------------------------------------------------------------------------------
def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, tiny: bool) -> dict[str, float]:
    """Measured TFLOP/s of a large bf16 matmul (the denominator of MFU), and of fp32 on a CPU for reference."""
    n = 512 if tiny or device.type == "cpu" else 8192
    out = {"size": n}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        a = torch.randn(n, n, device=device, dtype=dtype)
        b = torch.randn(n, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        sync(device)
        reps, t0 = 0, time.perf_counter()
        while reps < 5 or time.perf_counter() - t0 < 0.5:
            a @ b
            reps += 1
            if reps % 5 == 0:
                sync(device)
        sync(device)
        out[f"{name}_tflops"] = 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12
    return out


def step_flops(module: Any, batch: dict[str, torch.Tensor], device: torch.device, precision: str) -> float:
    """Model FLOPs of one training step (forward + backward of the loss), counted by ``torch.utils.flop_counter``
    under the same autocast as training (the count does not depend on the dtype)."""
    from torch.utils.flop_counter import FlopCounterMode

    dtype = torch.float16 if precision.startswith("16") and device.type == "cuda" else torch.bfloat16
    counter = FlopCounterMode(display=False)
    gen = torch.Generator(device=device).manual_seed(0)
    with counter, torch.autocast(device.type, dtype=dtype):
        loss, _ = module.compute_loss(batch, gen)
        loss.backward()
    module.zero_grad(set_to_none=True)
    return float(counter.get_total_flops())


@torch.no_grad()
def fixed_loss(module: Any, batch: dict[str, torch.Tensor], device: torch.device) -> float:
    """The loss of one fixed draw of levels and noise, in fp32: compared before and after the training steps."""
    was_training = module.training
    module.eval()
    loss, _ = module.compute_loss(batch, torch.Generator(device=device).manual_seed(1234))
    module.train(was_training)
    return float(loss)


def make_probe(device: torch.device, budget_s: float, min_steps: int):
    import lightning as L

    class StepProbe(L.Callback):
        """Step times (device-synchronised) and losses; stops once past the time budget and ``min_steps``."""

        def __init__(self) -> None:
            self.times: list[float] = []
            self.losses: list[float] = []
            self.start = 0.0
            self.t0 = 0.0

        def on_train_start(self, trainer, pl_module) -> None:
            self.start = time.perf_counter()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            sync(device)
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            sync(device)
            self.times.append(time.perf_counter() - self.t0)
            loss = outputs["loss"] if isinstance(outputs, dict) else outputs
            self.losses.append(float(loss))
            if len(self.times) >= min_steps and time.perf_counter() - self.start > budget_s:
                trainer.should_stop = True

    return StepProbe()


def train_check(
    cfg: Any, facts: dict[str, Any], batch_cpu: dict[str, torch.Tensor], precision: str, device: torch.device,
    steps: int, budget_s: float, warmup: int, tokens_per_step: int, peak: dict[str, float], min_steps: int,
) -> dict[str, Any]:  # fmt: skip
    import lightning as L
    from omegaconf import OmegaConf

    from experiments.build import build_module

    algorithm = OmegaConf.to_container(cfg.algorithm, resolve=True)
    preset_warmup = algorithm.get("warmup_steps", 0)
    algorithm["warmup_steps"] = min(int(preset_warmup or 0), warmup)
    torch.manual_seed(0)
    module = build_module(algorithm, facts)
    channels = facts["frame_shape"][0]
    module.normalizer.set_stats([0.0] * channels, [1.0] * channels)
    module.to(device)
    batch = to_device(batch_cpu, device)
    out: dict[str, Any] = {
        "precision": precision,
        "warmup_steps": f"{algorithm['warmup_steps']} (preset {preset_warmup})",
    }
    out["params_M"] = sum(p.numel() for p in module.cell.parameters()) / 1e6
    out["loss_before"] = fixed_loss(module, batch, device)
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    probe = make_probe(device, budget_s, min_steps)
    trainer = L.Trainer(
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=precision,
        max_steps=steps,
        gradient_clip_val=cfg.trainer.get("gradient_clip_val"),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        inference_mode=False,
        callbacks=[probe],
    )
    out["precision_used"] = str(trainer.precision)
    loader = torch.utils.data.DataLoader(RepeatBatch(batch), batch_size=None)
    t_fit = time.perf_counter()
    try:
        trainer.fit(module, train_dataloaders=loader)
    except FloatingPointError as err:  # the module's own check of every training loss
        out.update(ok=False, failure=f"non-finite loss: {err}")
    out["fit_s"] = time.perf_counter() - t_fit
    if device.type == "cuda":
        out["peak_memory_GiB"] = torch.cuda.max_memory_allocated(device) / 2**30
    out["steps"] = len(probe.times)
    out["losses"] = probe.losses
    timed = probe.times[2:] if len(probe.times) > 4 else probe.times  # the first steps carry one-time costs
    if timed:
        out["step_s"] = statistics.median(timed)
        out["tokens_per_s"] = tokens_per_step / out["step_s"]
    out["loss_after"] = fixed_loss(module, batch, device)
    finite = all(math.isfinite(v) for v in probe.losses) and math.isfinite(out["loss_after"])
    out["all_losses_finite"] = finite
    out["loss_fell"] = finite and out["loss_after"] < out["loss_before"]
    flops = step_flops(module, batch, device, precision)
    out["model_tflop_per_step"] = flops / 1e12
    if timed:
        out["model_tflops"] = flops / out["step_s"] / 1e12
        out["mfu_vs_bf16_matmul"] = out["model_tflops"] / peak["bf16_tflops"]
    if "ok" not in out:
        out["ok"] = bool(finite and out["loss_fell"])
        if not out["ok"]:
            out["failure"] = "non-finite loss" if not finite else "the fixed-draw loss did not fall"
    out["module"] = module
    return out


def sampling_check(
    module: Any, cfg: Any, domain: str, datamodule: Any, batch_cpu: dict[str, torch.Tensor], device: torch.device,
    tiny: bool,
) -> dict[str, Any]:  # fmt: skip
    """One plan of the preset's evaluation with the preset's sampler, in fp32: seconds and whether it is finite."""
    module = module.float().eval()
    batch = to_device(batch_cpu, device)
    ev = cfg.evaluator
    fs = module.frame_stack
    sampler = module.sampler
    gen = torch.Generator(device=device).manual_seed(0)
    out: dict[str, Any] = {"scheduling_matrix": sampler.matrix_type, "sampling_steps": sampler.sampling_steps}
    sync(device)
    t0 = time.perf_counter()
    if domain == "timeseries":
        c, p = datamodule.context_length, datamodule.prediction_length
        num_samples = 4 if tiny else int(ev.get("num_samples", 100))
        history = torch.cat([batch["past"][:1], batch["x"][:1, :c]], dim=1)  # (1, max_lag + c, D)
        samples = module.forecast(history, batch["time_feat"][:1, : c + p], p, num_samples=num_samples,
                                  context_length=c, generator=gen)  # fmt: skip
        out["plan"] = f"one forecast window: {num_samples} paths × {p} steps after {c} context steps"
    else:
        if domain == "video":
            b = min(int(ev.get("num_videos", 8)), batch["x"].shape[0]) if tiny else int(ev.get("num_videos", 8))
            ctx_frames = int(ev.get("context_frames", fs))
            n_frames = fs * max(sampler.chunk_size, 1)  # chunk_size −1 (whole horizon): one token
            what = f"one stabilised chunk of {n_frames} frames after {ctx_frames} context frames"
        elif domain == "robot" and len(module.frame_shape) == 3:
            b, ctx_frames = 2 if tiny else 8, 1
            n_frames = batch["x"].shape[1] - 1
            what = f"one episode: {n_frames} image tokens after the first observation"
        else:
            b = 2 if tiny else int(ev.get("num_envs", 32))
            ctx_frames = 0
            n_frames = batch["x"].shape[1] // fs * fs
            what = f"one plan of {n_frames // fs} tokens ({n_frames} frames)"
        reps = math.ceil(b / batch["x"].shape[0])
        x = batch["x"].repeat(reps, *[1] * (batch["x"].ndim - 1))[:b]
        first_obs = batch["first_obs"].repeat(reps, 1)[:b] if "first_obs" in batch else None
        cond = batch["cond"].repeat(reps, 1, 1)[:b, : ctx_frames + n_frames] if "cond" in batch else None
        context = x[:, :ctx_frames] if ctx_frames else None
        samples = module.generate(n_frames, batch_size=b, context=context, first_obs=first_obs, cond=cond,
                                  generator=gen)  # fmt: skip
        out["plan"] = f"{what}, batch {b}"
    sync(device)
    out["seconds"] = time.perf_counter() - t0
    out["finite"] = bool(torch.isfinite(samples).all())
    out["ok"] = out["finite"]
    if not out["ok"]:
        out["failure"] = "NaN/inf in the samples"
    return out


def check_preset(
    preset: str, args: argparse.Namespace, device: torch.device, peak: dict[str, float], budget: Any
) -> dict[str, Any]:
    """Both precisions of one preset, then its sampling plan. ``budget()`` gives each training run its seconds."""
    base = compose(preset, [])
    domain = domain_of(base)
    cfg = compose(preset, tiny_overrides(base, domain) if args.tiny else [])
    datamodule, facts, source = data_facts(cfg, preset, domain, args.tiny)
    batch_size = int(cfg.dataset.batch_size)
    batch = synthetic_batch(datamodule, facts, domain, batch_size)
    fs = int(cfg.algorithm.frame_stack)
    tokens = batch_size * (batch["x"].shape[1] // fs)
    result: dict[str, Any] = {
        "preset": preset, "domain": domain, "facts": facts, "facts_from": source, "batch_per_device": batch_size,
        "sequence": list(batch["x"].shape[1:]), "tokens_per_step": tokens, "runs": [],
    }  # fmt: skip
    module = None
    for precision in args.precisions:
        print(f"[gpu_check] {preset} {precision}", flush=True)
        try:
            run = train_check(cfg, facts, batch, precision, device, args.steps, budget(), args.warmup, tokens,
                              peak, args.min_steps)  # fmt: skip
            module = run.pop("module")
        except torch.cuda.OutOfMemoryError as err:
            run = {"precision": precision, "ok": False, "failure": f"out of memory: {str(err).splitlines()[0]}"}
        except Exception as err:  # noqa: BLE001  (one preset's failure must not hide the others' figures)
            run = {"precision": precision, "ok": False, "failure": f"{type(err).__name__}: {err}",
                   "traceback": traceback.format_exc(limit=6)}  # fmt: skip
        result["runs"].append(run)
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if module is not None:
        try:
            result["sampling"] = sampling_check(module, cfg, domain, datamodule, batch, device, args.tiny)
        except torch.cuda.OutOfMemoryError as err:
            result["sampling"] = {"ok": False, "failure": f"out of memory: {str(err).splitlines()[0]}"}
        except Exception as err:  # noqa: BLE001
            result["sampling"] = {"ok": False, "failure": f"{type(err).__name__}: {err}",
                                  "traceback": traceback.format_exc(limit=6)}  # fmt: skip
    else:
        result["sampling"] = {"ok": False, "failure": "no trained model (every precision failed)"}
    result["ok"] = all(r["ok"] for r in result["runs"]) and result["sampling"]["ok"]
    return result


# -- report -----------------------------------------------------------------------------------------------------
def machine(device: torch.device) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, gpu_memory_GiB=props.total_memory / 2**30, cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version())  # fmt: skip
    else:
        info.update(cpu=platform.processor() or platform.machine(), threads=torch.get_num_threads())
    return info


def fmt(value: Any, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def markdown(report: dict[str, Any]) -> str:
    m, peak = report["machine"], report["matmul_peak"]
    name = m.get("gpu") or m.get("cpu")
    lines = [
        f"GPU check of {report['date']}: {name}, torch {m['torch']}{', tiny' if report['tiny'] else ''}; "
        f"measured matmul peak {peak['bf16_tflops']:.1f} TFLOP/s bf16, {peak['fp32_tflops']:.1f} fp32 "
        f"({peak['size']}²); wall {report['wall_s']:.0f} s; {'all checks passed' if report['ok'] else 'FAILED'}.",
        "",
        "| preset | precision | batch/device | params (M) | steps | step s | tokens/s | GFLOP/step | MFU (bf16 peak) "
        "| peak GiB | loss before → after | finite | ok |",
        "|" + "---|" * 13,
    ]
    for p in report["presets"]:
        for r in p["runs"]:
            if "step_s" not in r and not r.get("ok"):
                lines.append(f"| {p['preset']} | {r['precision']} | {p['batch_per_device']} | " + "— | " * 8
                             + f"— | **{r.get('failure', 'failed')}** |")  # fmt: skip
                continue
            mfu = r.get("mfu_vs_bf16_matmul")
            ran = r["precision_used"]
            precision = ran if ran == r["precision"] else f"{r['precision']} (ran {ran})"
            lines.append(
                f"| {p['preset']} | {precision} | {p['batch_per_device']} | {r['params_M']:.2f} | "
                f"{r['steps']} | {fmt(r.get('step_s'), '.3f')} | {fmt(r.get('tokens_per_s'), '.0f')} | "
                f"{1e3 * r['model_tflop_per_step']:.4g} | {'—' if mfu is None else f'{100 * mfu:.1f} %'} | "
                f"{fmt(r.get('peak_memory_GiB'), '.1f')} | {r['loss_before']:.4f} → {r['loss_after']:.4f} | "
                f"{'yes' if r['all_losses_finite'] else '**no**'} | "
                f"{'yes' if r['ok'] else '**' + r['failure'] + '**'} |"
            )
    lines += ["", "| preset | sampling plan (fp32) | matrix, steps | s | finite |", "|---|---|---|---|---|"]
    for p in report["presets"]:
        s = p["sampling"]
        if "seconds" not in s:
            lines.append(f"| {p['preset']} | — | — | — | **{s['failure']}** |")
            continue
        lines.append(
            f"| {p['preset']} | {s['plan']} | {s['scheduling_matrix']}, {s['sampling_steps']} | {s['seconds']:.2f} | "
            f"{'yes' if s['finite'] else '**no**'} |"
        )
    lines += ["", "Model data facts: " + "; ".join(f"{p['preset']} {p['facts_from']}" for p in report["presets"])]
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", default=None, help="folder for gpu_check.json / .md (default outputs/gpu_check/<time>)"
    )
    parser.add_argument("--minutes", type=float, default=8.0, help="time budget of the whole check (default 8)")
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    parser.add_argument("--tiny", action="store_true", help="shrink every preset (CPU smoke run of the same code)")
    parser.add_argument("--presets", nargs="+", default=list(PAPER_PRESETS), help="default: every paper preset")
    parser.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=PRECISIONS)
    parser.add_argument("--steps", type=int, default=30, help="most training steps per preset and precision")
    parser.add_argument("--min-steps", type=int, default=6, help="fewest steps, even past the time budget")
    parser.add_argument(
        "--warmup", type=int, default=5, help="learning-rate warm-up steps used instead of the preset's"
    )
    args = parser.parse_args(argv)
    unknown = [p for p in args.presets if p not in PAPER_PRESETS]
    if unknown:
        parser.error(f"--presets: unknown {unknown}; choose from {list(PAPER_PRESETS)}")
    if args.min_steps < 1 or args.steps < args.min_steps:
        parser.error(f"--steps ({args.steps}) must be >= --min-steps ({args.min_steps}) >= 1")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("[gpu_check] no CUDA device: run it on a GPU machine, or pass --device cpu --tiny here", file=sys.stderr)
        return 2
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    for name in (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "lightning.pytorch.utilities.rank_zero",
        "lightning.fabric.utilities.rank_zero",
        "lightning.pytorch.accelerators.cuda",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="lightning")
    stamp = dt.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
    out = Path(args.out) if args.out else ROOT / "outputs" / "gpu_check" / stamp
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    peak = matmul_peak(device, args.tiny)
    deadline = t_start + args.minutes * 60
    runs_left = [len(args.presets) * len(args.precisions)]

    def budget() -> float:
        """Seconds of training steps for the next run: 60 % of the time left, shared by the runs left (building,
        FLOP counting and sampling take the rest); a run past it still makes ``--min-steps`` steps."""
        seconds = 0.6 * max(deadline - time.perf_counter(), 0.0) / max(runs_left[0], 1)
        runs_left[0] -= 1
        return seconds

    report: dict[str, Any] = {"date": stamp, "tiny": args.tiny, "machine": machine(device), "matmul_peak": peak,
                              "argv": sys.argv[1:] if argv is None else argv, "presets": []}  # fmt: skip
    for preset in args.presets:
        report["presets"].append(check_preset(preset, args, device, peak, budget))
        report["wall_s"] = time.perf_counter() - t_start
        report["ok"] = all(p["ok"] for p in report["presets"])
        (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str))  # kept after every preset
    (out / "gpu_check.md").write_text(table := markdown(report))
    print(table)
    print(f"[gpu_check] wrote {out / 'gpu_check.json'} and {out / 'gpu_check.md'}")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
