"""Speed and memory benchmark: ``python -m scripts.benchmark [--set cpu|paper|all] [--out docs/benchmark]``.

For every model of the chosen set (built from the project's own configs) it measures

* training: seconds per optimiser step (forward, backward, AdamW) and training tokens/s;
* sampling: one plan of ``plan_tokens`` tokens (S = 50; batch 32, video models: their training batch) with the
  full-sequence, pyramid and autoregressive matrices: wall time, cell calls and tokens/s; for the pyramid plan
  also an *official-style* reference on the same network (every token recomputed in every row, no prefix cache)
  with the largest difference between the two plans (equal samples = equal quality);
* Monte Carlo Guidance: a guided pyramid plan with N = 1, 2, 4, 8 Monte Carlo samples (vector models);
* memory: growth of the resident memory (sampled after every chunk) during autoregressive rollouts of 16, 64 and
  256 tokens (batch 4, S = 5), each in a fresh process, streamed chunk by chunk versus collected, for every
  model of the set that samples (forecasts: collected only, as they return their samples).

Results go to ``<out>/<set>.json`` and ``<out>/<set>.md``. Timings are medians over ``--repeats`` runs after one
warm-up; the machine is recorded in the JSON. Use the same thread count for runs you compare.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = str(ROOT / "configurations")
SCHEDULES = ("full_sequence", "pyramid", "autoregressive")
MCG_SAMPLES = (1, 2, 4, 8)
PARTS = ("training", "sampling", "mcg", "memory", "training_ab", "transformer")

# Reference figures of the authors' official implementation on this machine class (2 cores, fp32), from the
# issue that asked for this benchmark; not measured by this script.
OFFICIAL = {
    "maze_paper": {"train_s_per_step": 0.68, "pyramid_plan_s": 29.0, "pyramid_cell_calls": 6600},
    "timeseries_official_size": {"train_s_per_step": 1.42, "pyramid_plan_s": 50.0},
}


@dataclass
class Case:
    """One model: the config overrides it is built from, the data facts and the benchmark sizes."""

    name: str
    overrides: list[str]
    model_kwargs: dict[str, Any]  # the data facts (frame_shape, cond_dim, obs_dim), plus lags/context for forecasts
    frames: int  # frames per training window (tokens × frame_stack)
    batch: int = 32
    plan_tokens: int = 60
    mcg: bool = False
    mcg_tokens: int = 10
    plan_batch: int = 32
    sampling: bool = True  # paper-size video models: training only (one plan takes many minutes on a CPU)
    extra: dict[str, Any] = field(default_factory=dict)


def _vector(
    name: str, frame: int, frame_stack: int, tokens: int, obs: int, backbone: dict[str, Any], **kw: Any
) -> Case:
    over = [f"algorithm.frame_stack={frame_stack}", "algorithm.backbone.initial_state=encoder"]
    over += [f"algorithm.backbone.{k}={v}" for k, v in backbone.items()]
    kwargs = {"frame_shape": [frame], "cond_dim": 0, "obs_dim": obs}
    return Case(name, ["experiment=compositional", *over], kwargs, frames=tokens * frame_stack, **kw)


def _timeseries(name: str, preset: str, overrides: list[str] | None = None) -> Case:
    kwargs = {"frame_shape": [8], "cond_dim": 20, "obs_dim": 0, "lags": [1, 2], "context_length": 30}
    lag_overrides = ["algorithm.lags=[1,2]", "algorithm.context_length=30"]  # the algorithm's own keys
    return Case(name, [f"experiment={preset}", *lag_overrides, *(overrides or [])], kwargs, frames=60)


def _video(name: str, preset: str, size: int, frames: int, batch: int, plan_tokens: int, **kw: Any) -> Case:
    kwargs = {"frame_shape": [3, size, size], "cond_dim": 0, "obs_dim": 0}
    return Case(
        name,
        [f"experiment={preset}"],
        kwargs,
        frames=frames,
        batch=batch,
        plan_tokens=plan_tokens,
        plan_batch=batch,
        **kw,
    )


def cases(which: str) -> list[Case]:
    maze = dict(z_dim=128, num_res_layers=4, num_gru_layers=1)
    cpu = [
        _vector("compositional_cpu", 2, 4, 8, 2, {}, batch=256, plan_tokens=8),  # the quickstart model as trained
        _vector("maze_cpu", 6, 10, 60, 4, {**maze, "hidden_dim": 256}, mcg=True),
        _timeseries("timeseries_cpu", "ts_exchange_cpu"),
        # the CPU video model (32×32, frame_stack 2): batch 4, plans of 4 tokens
        _video("video_cpu", "video_mnist_cpu", 32, 16, batch=4, plan_tokens=4),
    ]
    paper = [
        # maze size of the official reference: 60-d tokens (fs 10 × [o, a]), 60 tokens, ≈ 3.2 M parameters
        _vector("maze_paper", 6, 10, 60, 4, {**maze, "hidden_dim": 592}, mcg=True),
        _timeseries("timeseries_paper", "ts_exchange"),  # our paper preset: ResMLP width 2048, 16.0 M parameters
        # the official reference's size (6.5 M): z 1024 and 4 GRU layers as in the preset, ResMLP width 640
        _timeseries("timeseries_official_size", "ts_exchange", ["algorithm.backbone.hidden_dim=640"]),
        # DMLab-size video model (20 M parameters, 64×64, frame_stack 4, 36 frames): training at batch 2 only
        _video("video_dmlab_paper", "video_dmlab", 64, 36, batch=2, plan_tokens=9, sampling=False),
    ]
    return {"cpu": cpu, "paper": paper, "all": cpu + paper}[which]


# -- building ----------------------------------------------------------------------------------------------------
def build(case: Case, extra_overrides: list[str] | None = None):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from experiments.build import build_module

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                *case.overrides,
                "output_dir=/tmp/df-benchmark",
                "evaluator=none",
                *(extra_overrides or []),
            ],
        )
    data = {k: case.model_kwargs[k] for k in ("frame_shape", "cond_dim", "obs_dim")}  # synthetic data facts
    module = build_module(OmegaConf.to_container(cfg.algorithm, resolve=True), data)
    channels = case.model_kwargs["frame_shape"][0]
    module.normalizer.set_stats([0.0] * channels, [1.0] * channels)
    return module, cfg


def training_batch(case: Case, generator: torch.Generator) -> dict[str, torch.Tensor]:
    b, n, shape = case.batch, case.frames, case.model_kwargs["frame_shape"]
    c = shape[0]
    batch = {"x": torch.randn(b, n, *shape, generator=generator)}
    if case.model_kwargs.get("obs_dim"):
        batch["first_obs"] = torch.randn(b, case.model_kwargs["obs_dim"], generator=generator)
    if "lags" in case.model_kwargs:
        batch["past"] = torch.randn(b, max(case.model_kwargs["lags"]), c, generator=generator)
        batch["time_feat"] = torch.rand(b, n, 4, generator=generator) - 0.5
    return batch


def _median_time(fn, repeats: int) -> tuple[float, Any]:
    if repeats > 1:
        fn()  # warm-up (skipped for single long runs, where one-time costs are negligible)
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


# -- measurements --------------------------------------------------------------------------------------------
def _training_step(case: Case):
    """The model and one optimiser step on a fixed batch: forward, backward, gradient clipping, AdamW."""
    module, _ = build(case)
    module.train()
    optimizer = torch.optim.AdamW(module.cell.parameters(), lr=1e-4)
    batch = training_batch(case, torch.Generator().manual_seed(0))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss, _ = module.compute_loss(batch, torch.Generator().manual_seed(1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.cell.parameters(), 1.0)
        optimizer.step()

    return module, step


def bench_training(case: Case, repeats: int) -> dict[str, float]:
    module, step = _training_step(case)
    seconds, _ = _median_time(step, max(repeats, 5))  # steps are short: always a median of at least 5
    tokens = case.batch * case.frames // module.frame_stack
    params = sum(p.numel() for p in module.cell.parameters())
    return {"params_M": params / 1e6, "train_s_per_step": seconds, "train_tokens_per_s": tokens / seconds}


def _per_token_sequence(backbone: torch.nn.Module):
    """``forward_sequence`` the way the official code trains: the whole cell (input projection, recurrent part and
    head) called token by token under plain autograd, nothing batched over time and no weight tape."""

    def forward_sequence(z, x_noisy, noise_level, cond=None):
        latents, outputs = [], []
        for t in range(x_noisy.shape[1]):
            z, y = backbone(z, x_noisy[:, t], noise_level[:, t], None if cond is None else cond[:, t])
            latents.append(z)
            outputs.append(y)
        return torch.stack(latents, dim=1), torch.stack(outputs, dim=1)

    return forward_sequence


def bench_training_ab(case: Case, rounds: int = 4, steps: int = 3) -> dict[str, float]:
    """Training-step variants of the recurrent MLP, interleaved in one process on the same model and batch.

    ``official_style``: the cell called token by token (:func:`_per_token_sequence`); ``plain``: ours with the
    non-recurrent parts batched over time but without the weight tape; ``taped``: ours as trained
    (``weight_tape.py``). Rounds cycle through the variants (a warm-up step, then ``steps`` timed ones each), so
    that drifts of the machine's speed hit all alike; returns the median seconds of each ({} for a backbone
    without the tape).
    """
    from algorithms.diffusion_forcing.backbones import rnn_mlp

    module, step = _training_step(case)
    backbone = module.cell.backbone
    if not isinstance(backbone, rnn_mlp.RecurrentMLP):
        return {}
    use_tape = rnn_mlp.use_tape
    times: dict[str, list[float]] = {"official_style": [], "plain": [], "taped": []}
    try:
        for _ in range(rounds):
            for mode in times:
                rnn_mlp.use_tape = use_tape if mode == "taped" else (lambda *_: False)
                if mode == "official_style":
                    backbone.forward_sequence = _per_token_sequence(backbone)  # instance attribute shadows the method
                step()
                for _ in range(steps):
                    t0 = time.perf_counter()
                    step()
                    times[mode].append(time.perf_counter() - t0)
                backbone.__dict__.pop("forward_sequence", None)
    finally:
        rnn_mlp.use_tape = use_tape
        backbone.__dict__.pop("forward_sequence", None)
    return {f"{mode}_s_per_step": statistics.median(t) for mode, t in times.items()}


class CallCounter:
    """Counts token evaluations of the denoising cell: one per ``forward`` (one token of one row for the whole
    batch), ``n`` per ``forward_sequence``, ``commit`` or ``branch`` over ``n`` tokens."""

    def __init__(self, cell: torch.nn.Module) -> None:
        self.calls = 0
        self.cell = cell
        forward, sequence = cell.forward, cell.forward_sequence

        def counted_forward(*args: Any, **kwargs: Any) -> Any:
            self.calls += 1
            return forward(*args, **kwargs)

        def counted_sequence(z: torch.Tensor, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.calls += x.shape[1]
            return sequence(z, x, *args, **kwargs)

        commit, branch = cell.commit, cell.branch

        def counted_commit(state: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.calls += x.shape[1]
            return commit(state, x, *args, **kwargs)

        def counted_branch(state: Any, trace: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            self.calls += x.shape[1]
            return branch(state, trace, x, *args, **kwargs)

        cell.forward, cell.forward_sequence = counted_forward, counted_sequence
        cell.commit, cell.branch = counted_commit, counted_branch

    def remove(self) -> None:
        del self.cell.forward, self.cell.forward_sequence, self.cell.commit, self.cell.branch


def _plan_inputs(module, case: Case, tokens: int, batch: int):
    z = module.sampling_cell.init_state(
        batch, torch.zeros(batch, case.model_kwargs["obs_dim"]) if case.model_kwargs.get("obs_dim") else None
    )
    cond = None
    if module.cell.backbone.cond_dim:
        cond = torch.randn(batch, tokens, module.cell.backbone.cond_dim, generator=torch.Generator().manual_seed(3))
    return z, cond


def naive_plan(sampler, cell, z, horizon: int, cond, generator) -> torch.Tensor:
    """Official-style reference: every row recomputes every token from the context latent (no prefix cache, no
    skipping of tokens whose level does not change). Same maths as ``Sampler.denoise_chunk`` without guidance."""
    from algorithms.diffusion_forcing.noise_schedule import CLEAN_LEVEL
    from algorithms.diffusion_forcing.sampler import ddim_step

    schedule = cell.schedule
    levels = sampler.level_matrix(horizon, schedule.num_levels)
    x = sampler.noise((z.shape[0], horizon, *cell.token_shape), z, generator)
    for m in range(1, levels.shape[0]):
        frm, to = levels[m - 1], levels[m]
        changed = (to != frm).nonzero().flatten()
        if len(changed) == 0:
            continue
        zt, x0s, epss = z, [], []
        for t in range(horizon):
            c = None if cond is None else cond[:, t]
            if frm[t] == CLEAN_LEVEL:
                x_in, lvl = sampler.present_clean(cell, x[:, t], None)
                zt, _, _ = cell(zt, x_in, lvl, c)
                x0s.append(x[:, t])
                epss.append(torch.zeros_like(x[:, t]))
            else:
                lvl = torch.full((x.shape[0],), int(frm[t]), dtype=torch.long)
                zt, x0, eps = cell(zt, x[:, t], lvl, c)
                x0s.append(x0)
                epss.append(eps)
        x0_all, eps_all = torch.stack(x0s, 1), torch.stack(epss, 1)
        a_from = schedule.alpha_bar(frm[changed]).unsqueeze(0)
        a_to = schedule.alpha_bar(to[changed]).unsqueeze(0)
        x_new, _ = ddim_step(x0_all[:, changed], eps_all[:, changed], a_from, a_to, 0.0, None)
        x = x.clone()
        x[:, changed] = x_new
    return x


@torch.no_grad()
def bench_sampling(case: Case, repeats: int) -> dict[str, Any]:
    from algorithms.diffusion_forcing.sampler import Sampler

    module, _ = build(case)
    module.eval()
    cell, h, b = module.sampling_cell, case.plan_tokens, case.plan_batch
    z, cond = _plan_inputs(module, case, h, b)
    out: dict[str, Any] = {}
    for schedule in SCHEDULES:
        sampler = Sampler(sampling_steps=50, eta=0.0, scheduling_matrix=schedule, stabilization_level=10)
        counter = CallCounter(cell)
        seconds, x = _median_time(
            lambda s=sampler: s.denoise_chunk(cell, z, h, cond, generator=torch.Generator().manual_seed(7))[0], repeats
        )
        counter.remove()
        out[schedule] = {
            "plan_s": seconds,
            "cell_calls": counter.calls // (repeats + (repeats > 1)),
            "tokens_per_s": b * h / seconds,
        }
        if schedule == "pyramid":
            counter = CallCounter(cell)
            ref_seconds, ref = _median_time(
                lambda s=sampler: naive_plan(s, cell, z, h, cond, torch.Generator().manual_seed(7)), 1
            )
            counter.remove()
            out["pyramid_naive_reference"] = {
                "plan_s": ref_seconds,
                "cell_calls": counter.calls,
                "max_abs_diff_vs_ours": float((ref - x).abs().max()),
            }
    return out


def bench_mcg(case: Case, repeats: int, mode: str = "branch") -> dict[str, Any]:
    """Guided pyramid plans with N = 1, 2, 4, 8 Monte Carlo samples drawn in ``mode`` (``Guidance.mc_mode``)."""
    from algorithms.diffusion_forcing.guidance import GoalDistanceEnergy, Guidance
    from algorithms.diffusion_forcing.sampler import Sampler

    module, _ = build(case)
    module.eval()
    cell, h, b = module.sampling_cell, case.mcg_tokens, 32
    z, cond = _plan_inputs(module, case, h, b)
    sampler = Sampler(sampling_steps=50, eta=0.0, scheduling_matrix="pyramid", stabilization_level=10)
    out: dict[str, Any] = {"plan_tokens": h, "mode": mode}
    for n in MCG_SAMPLES:
        guidance = Guidance(GoalDistanceEnergy(torch.ones(2), dims=[0, 1]), scale=1.0, mc_samples=n, mc_mode=mode)
        seconds, _ = _median_time(
            lambda g=guidance: sampler.denoise_chunk(cell, z, h, cond, g, torch.Generator().manual_seed(7)),
            max(1, repeats - 1),
        )
        out[f"N{n}_s"] = seconds
    out["N8_over_N1"] = out["N8_s"] / out["N1_s"]
    return out


# -- memory (each probe in a fresh process) ------------------------------------------------------------------------
MEMORY_LENGTHS = (16, 64, 256)


PROBE_BATCH = 4


def memory_models(which: str) -> list[str]:
    """Models whose rollout memory is measured: every model of the set that samples."""
    return [case.name for case in cases(which) if case.sampling]


def memory_modes(model: str) -> tuple[str, ...]:
    """A forecast returns all its samples (collect only); other rollouts are also measured streamed."""
    return ("collect",) if "lags" in _case(model).model_kwargs else ("stream", "collect")


def _case(model: str) -> Case:
    for case in cases("all"):
        if case.name == model:
            return case
    raise ValueError(f"unknown model {model!r} for the memory probe; known: {memory_models('all')}")


def memory_probe(model: str, tokens: int, mode: str) -> dict[str, Any]:
    """Peak growth of the resident memory during one rollout of ``tokens`` tokens (batch 4, S = 5, one token per
    chunk), sampled after every generated chunk. ``stream`` consumes each chunk; ``collect`` keeps all of them
    (what ``Sampler.rollout`` and a forecast return). Forecasting models roll out with lags from their own samples
    after a context of ``context_length`` steps."""
    case = _case(model)
    modes = memory_modes(model)
    if mode not in modes:
        raise ValueError(f"mode {mode!r} does not apply to {model}: only mode {' or '.join(map(repr, modes))}")
    module, _ = build(case, ["algorithm.sampler.chunk_size=1", "algorithm.sampler.sampling_steps=5"])
    module.eval()
    sampler, b, gen = module.sampler, PROBE_BATCH, torch.Generator().manual_seed(0)
    kept, total = [], 0.0
    start = peak = _rss_mb()
    denoise_chunk = sampler.denoise_chunk

    def sampled(*args: Any, **kwargs: Any):  # every generated chunk passes here, whichever loop drives it
        nonlocal peak
        out = denoise_chunk(*args, **kwargs)
        peak = max(peak, _rss_mb())
        return out

    sampler.denoise_chunk = sampled  # instance attribute: this probe's sampler only
    t0 = time.perf_counter()
    with torch.no_grad():
        if "lags" in case.model_kwargs:
            kw = case.model_kwargs
            history = torch.randn(1, kw["context_length"] + max(kw["lags"]), kw["frame_shape"][0], generator=gen)
            time_feat = torch.rand(1, kw["context_length"] + tokens, 4, generator=gen) - 0.5
            kept = [  # the forecast keeps its steps
                module.forecast(
                    history, time_feat, tokens, num_samples=b, context_length=kw["context_length"], generator=gen
                )
            ]
        else:
            cell = module.sampling_cell
            obs = torch.zeros(b, case.model_kwargs["obs_dim"]) if case.model_kwargs.get("obs_dim") else None
            for chunk in sampler.iter_rollout(cell, cell.init_state(b, obs), tokens, generator=gen):
                if mode == "collect":  # keep every generated token (what Sampler.rollout returns)
                    kept.append(chunk)
                else:  # consume chunk by chunk (e.g. write to disk, update running metrics)
                    total += float(chunk.mean())
    seconds = time.perf_counter() - t0
    return {"model": model, "tokens": tokens, "mode": mode, "peak_rss_growth_MB": peak - start, "seconds": seconds}


def _rss_mb() -> float:
    """Current resident set size in MB (sampled after every generated chunk)."""
    pages = int(Path("/proc/self/statm").read_text().split()[1])
    return pages * resource.getpagesize() / 2**20


def bench_memory(models: list[str]) -> list[dict[str, Any]]:
    rows = []
    for model in models:
        for mode in memory_modes(model):
            for tokens in MEMORY_LENGTHS:
                cmd = [sys.executable, "-m", "scripts.benchmark", "--memory-probe", model, str(tokens), mode]
                proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1200)
                if proc.returncode != 0:
                    raise RuntimeError(f"memory probe {model} {tokens} {mode} failed: {proc.stderr[-2000:]}")
                rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return rows


# -- report --------------------------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "dtype": "float32",
        "gemm_gflops": gemm_throughput(),
    }


def gemm_throughput(width: int = 512, rows: tuple[int, ...] = (32, 256)) -> dict[str, float]:
    """fp32 GFLOP/s of ``(rows × width) @ (width × width)``: how much a larger batch (e.g. MCG's N copies) gains.

    On a GPU a batch of 256 costs about as much as 32; on a CPU both are compute-bound, and only this ratio of
    throughputs is gained by batching N futures instead of looping over them.
    """
    weight = torch.randn(width, width)
    out: dict[str, float] = {}
    for m in rows:
        x = torch.randn(m, width)
        for _ in range(3):
            x @ weight
        n = max(20, 40_000 // m)
        t0 = time.perf_counter()
        for _ in range(n):
            x @ weight
        out[f"batch_{m}"] = 2.0 * m * width * width * n / (time.perf_counter() - t0) / 1e9
    return out


def markdown(results: dict[str, Any]) -> str:
    lines = [f"Machine: {results['machine']}", ""]
    plan_heads = " | ".join(f"{s} plan s (calls)" for s in SCHEDULES)
    main = {k: r for k, r in results["models"].items() if "training" in r or "sampling" in r}  # others: own tables
    if main:
        lines.append(
            f"| model | params (M) | train s/step | train tokens/s | {plan_heads} | official-style pyramid s (calls) | "
            "max abs diff |"
        )
        lines.append("|" + "---|" * 9)
    for name, r in main.items():
        t, s = r.get("training"), r.get("sampling")
        train = (
            "— | — | —"
            if t is None
            else (f"{t['params_M']:.2f} | {t['train_s_per_step']:.3f} | {t['train_tokens_per_s']:.0f}")
        )
        if s is None:
            plans, ref_cells = " | ".join("—" for _ in SCHEDULES), "— | —"
        else:
            plans = " | ".join(f"{s[k]['plan_s']:.2f} ({s[k]['cell_calls']})" for k in SCHEDULES)
            ref = s["pyramid_naive_reference"]
            ref_cells = f"{ref['plan_s']:.2f} ({ref['cell_calls']}) | {ref['max_abs_diff_vs_ours']:.1e}"
        lines.append(f"| {name} | {train} | {plans} | {ref_cells} |")
    mcg = [(k, r[part]) for k, r in results["models"].items() for part in ("mcg", "mcg_branch") if part in r]
    # (mcg_branch: result files written while two MCG forms existed)
    if mcg:
        heads = " | ".join(f"N={n} s" for n in MCG_SAMPLES)
        lines += ["", f"| model (guided pyramid plan) | MCG mode | tokens | {heads} | N=8 / N=1 |", "|" + "---|" * 8]
        for name, m in mcg:
            times = " | ".join(f"{m[f'N{n}_s']:.2f}" for n in MCG_SAMPLES)
            mode = m.get("mode", "futures")
            lines.append(f"| {name} | {mode} | {m['plan_tokens']} | {times} | {m['N8_over_N1']:.2f} |")
    ab = {k: r["training_ab"] for k, r in results["models"].items() if "training_ab" in r}
    if ab:
        lines += [
            "",
            "| model | training s/step: official-style (per token) | ours, weight tape off | ours (tape on) | "
            "official-style / ours |",
            "|---|---|---|---|---|",
        ]
        for name, t in ab.items():
            ratio = t["official_style_s_per_step"] / t["taped_s_per_step"]
            lines.append(
                f"| {name} | {t['official_style_s_per_step']:.3f} | {t['plain_s_per_step']:.3f} | "
                f"{t['taped_s_per_step']:.3f} | {ratio:.2f} |"
            )
    if results.get("memory"):
        lines += [
            "",
            "| rollout of one token per chunk (batch 4, S = 5) | mode | tokens | peak RSS growth (MB) | s |",
            "|---|---|---|---|---|",
        ]
        for row in results["memory"]:
            lines.append(
                f"| {row['model']} | {row['mode']} | {row['tokens']} | {row['peak_rss_growth_MB']:.1f} | "
                f"{row['seconds']:.1f} |"
            )
    if "transformer" in results:
        from scripts.bench_transformer import markdown as transformer_markdown

        lines += transformer_markdown(results["transformer"])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", choices=("cpu", "paper", "all"), default="cpu")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmark"))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="*", default=None, help="model names to run (default: all of the set)")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory part")
    parser.add_argument(
        "--parts",
        nargs="+",
        choices=PARTS,
        default=["training", "sampling", "mcg", "memory"],
        help="what to measure (default: training sampling mcg memory); mcg: guided plans against the number of "
        "Monte Carlo samples; training_ab: training steps of the official-style per-token "
        "loop and of ours with the weight tape off and on, interleaved in one process; transformer: the "
        "transformer backbone beside the recurrent one (training rate, the cache, long rollouts)",
    )
    parser.add_argument("--memory-probe", nargs=3, metavar=("MODEL", "TOKENS", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_probe:
        model, tokens, mode = args.memory_probe
        print(json.dumps(memory_probe(model, int(tokens), mode)))
        return {}

    results: dict[str, Any] = {"set": args.set, "machine": machine(), "models": {}, "official_reference": OFFICIAL}
    t_start = time.perf_counter()
    for case in cases(args.set):
        if args.only and case.name not in args.only:
            continue
        print(f"[benchmark] {case.name}", flush=True)
        entry = {"training": bench_training(case, args.repeats)} if "training" in args.parts else {}
        if case.sampling and "sampling" in args.parts:
            entry["sampling"] = bench_sampling(case, args.repeats)
        if case.mcg and "mcg" in args.parts:
            entry["mcg"] = bench_mcg(case, args.repeats)
        if "training_ab" in args.parts and (ab := bench_training_ab(case)):
            entry["training_ab"] = ab
        results["models"][case.name] = entry
    if "transformer" in args.parts:
        from scripts.bench_transformer import bench_transformer

        results["transformer"] = bench_transformer()
    memory = [m for m in memory_models(args.set) if not args.only or m in args.only]
    if "memory" in args.parts and not args.no_memory and memory:
        print(f"[benchmark] memory: {' '.join(memory)}", flush=True)
        results["memory"] = bench_memory(memory)
    results["wall_s"] = time.perf_counter() - t_start
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.set}.json").write_text(json.dumps(results, indent=2))
    table = markdown(results)
    (out / f"{args.set}.md").write_text(table)
    print(table)
    return results


if __name__ == "__main__":
    main()
