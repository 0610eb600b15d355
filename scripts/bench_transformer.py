"""The transformer backbone beside the recurrent one: ``python -m scripts.benchmark --parts transformer``.

On the maze CPU configuration (60 tokens of 60 numbers, batch 256; docs/PERFORMANCE.md):

* training: tokens/s of both backbones at about equal parameters, and the model FLOP rate (FLOPs of one forward +
  backward counted by ``torch.utils.flop_counter``) as a fraction of the machine's fp32 GEMM rate at batch 256;
* the cache: token evaluations and wall time of a pyramid and an autoregressive plan (S = 50, batch 32) with the
  key/value cache and with the window recomputed every row (``backbones.recompute.Recomputing``), and the largest
  difference between the two plans;
* MCG's branches: one branch step with its context (each token's z_{t−1}, or the keys and values it attends to)
  rebuilt at every call against made once per row, interleaved;
* long rollouts: at 100, 1,000 and 10,000 tokens of one streamed autoregressive rollout (batch 4, S = 2, window
  64), the cost of a generated token three ways (its time in the stream, the median over the up to 50 tokens before
  the mark that were made with a full window; its FLOPs; and its time from the states of all marks interleaved,
  which a shared machine's changing load cannot tilt towards one mark) and resident memory.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from scripts import benchmark as bench

WINDOW = 64  # the cached tokens of the rolling window
TRANSFORMER = [
    "algorithm/backbone=transformer",
    "algorithm.backbone.width=128",
    "algorithm.backbone.depth=3",
    "algorithm.backbone.heads=4",
    f"algorithm.backbone.window={WINDOW}",
]


def maze_cases() -> tuple[bench.Case, bench.Case]:
    maze = dict(z_dim=128, num_res_layers=4, num_gru_layers=1, hidden_dim=256)
    rnn = bench._vector("maze_cpu_recurrent", 6, 10, 60, 4, maze, batch=256)
    xf = bench._vector("maze_cpu_transformer", 6, 10, 60, 4, maze, batch=256)
    xf.overrides = [*xf.overrides, *TRANSFORMER]
    return rnn, xf


def _training(case: bench.Case, gemm_gflops: float) -> dict[str, float]:
    module, step = bench._training_step(case)
    seconds, _ = bench._median_time(step, 5)
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    tokens = case.batch * case.frames // module.frame_stack
    return {
        "params_M": sum(p.numel() for p in module.cell.parameters()) / 1e6,
        "train_s_per_step": seconds,
        "train_tokens_per_s": tokens / seconds,
        "model_gflop_per_step": flops / 1e9,
        "model_gflops": flops / seconds / 1e9,
        "fraction_of_gemm_b256": flops / seconds / 1e9 / gemm_gflops,
    }


def _count_tokens(net: torch.nn.Module) -> tuple[list[int], Any]:
    counts: list[int] = []
    handle = net.in_proj.register_forward_hook(lambda m, args, out: counts.append(args[0].shape[1]))
    return counts, handle


@torch.no_grad()
def _cache(case: bench.Case, tokens: int = 60, steps: int = 50) -> dict[str, Any]:
    from algorithms.diffusion_forcing.backbones.recompute import Recomputing
    from algorithms.diffusion_forcing.denoiser import DenoisingCell
    from algorithms.diffusion_forcing.sampler import Sampler

    module, _ = bench.build(case)
    module.eval()
    cell = module.sampling_cell
    reference = DenoisingCell(Recomputing(cell.backbone), cell.schedule, cell.objective, cell.clip_noise)
    obs = torch.zeros(32, case.model_kwargs["obs_dim"])
    out: dict[str, Any] = {}
    for matrix in ("pyramid", "autoregressive"):
        sampler = Sampler(sampling_steps=steps, scheduling_matrix=matrix, stabilization_level=10)
        row: dict[str, Any] = {}
        plans = []
        for name, c in (("cached", cell), ("recomputed", reference)):
            counts, handle = _count_tokens(cell.backbone)
            t0 = time.perf_counter()
            plans.append(
                sampler.denoise_chunk(c, c.init_state(32, obs), tokens, generator=torch.Generator().manual_seed(7))[0]
            )
            row[f"{name}_s"] = time.perf_counter() - t0
            row[f"{name}_token_evaluations"] = sum(counts)
            handle.remove()
        row["evaluations_cached_over_recomputed"] = (
            row["cached_token_evaluations"] / row["recomputed_token_evaluations"]
        )
        # the official style: every row that changes a level re-runs the whole window (docs/PERFORMANCE.md)
        levels = sampler.level_matrix(tokens, cell.schedule.num_levels)
        rows = int((levels[1:] != levels[:-1]).any(dim=1).sum())
        row["window_every_row_evaluations"] = rows * tokens
        row["evaluations_cached_over_window_every_row"] = row["cached_token_evaluations"] / (rows * tokens)
        row["speedup"] = row["recomputed_s"] / row["cached_s"]
        row["max_abs_diff"] = float((plans[0] - plans[1]).abs().max())
        out[matrix] = row
    return out


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def _fresh(state: Any) -> Any:
    """A state as it is right after its commit: a KV cache's lazily rotated keys dropped (every new cache makes
    them once, at its first use)."""
    if dataclasses.is_dataclass(state) and hasattr(state, "rotated"):
        return dataclasses.replace(state, rotated=None)
    return state


@torch.no_grad()
def _long_rollout(
    case: bench.Case, marks: tuple[int, ...] = (100, 1_000, 10_000), counted: int = 5, rounds: int = 60
) -> dict[str, Any]:
    """Cost per generated token and resident memory at each mark of one rollout of ``marks[-1] + counted`` tokens
    (batch 4, S = 2, one token per chunk: the loop of ``Sampler.iter_rollout``), three ways.

    - ``s_per_token``: the median time of the tokens before the mark that were made with a full window.
    - ``mflop_per_token``: the mean FLOPs of the ``counted`` tokens right after the mark, each made under
      ``torch.utils.flop_counter`` (which slows them, so they are not among the timed ones). FLOPs do not depend on
      the machine's load.
    - ``s_per_token_interleaved``: the state at every mark is kept, and after the rollout one more token is made
      from each of them in turn, ``rounds`` times; the median per mark. Interleaving puts the marks side by side
      under the same load, which the streamed timings, minutes apart on a shared machine, are not."""
    module, _ = bench.build(case, ["algorithm.sampler.chunk_size=1", "algorithm.sampler.sampling_steps=2"])
    module.eval()
    cell, sampler = module.sampling_cell, module.sampler
    state = cell.init_state(4, torch.zeros(4, case.model_kwargs["obs_dim"]))
    generator = torch.Generator().manual_seed(0)
    stamps: list[float] = []
    rss: dict[int, float] = {}
    flops: dict[int, list[int]] = {n: [] for n in marks}
    kept: dict[int, Any] = {}
    out: dict[str, Any] = {}
    total = 0.0
    for token in range(1, marks[-1] + counted + 1):
        mark = next((n for n in marks if n < token <= n + counted), None)
        if mark is None:
            chunk, state = sampler.denoise_chunk(cell, state, 1, generator=generator)
        else:
            with FlopCounterMode(display=False) as counter:
                chunk, state = sampler.denoise_chunk(cell, state, 1, generator=generator)
            flops[mark].append(counter.get_total_flops())
        total += float(chunk.mean())
        stamps.append(time.perf_counter())
        if token in marks:
            rss[token] = _rss_mb()
            kept[token] = state
    interleaved: dict[int, list[float]] = {n: [] for n in marks}
    for _ in range(rounds):
        for n in marks:
            fresh = _fresh(kept[n])
            t0 = time.perf_counter()
            sampler.denoise_chunk(cell, fresh, 1, generator=generator)
            interleaved[n].append(time.perf_counter() - t0)
    for n in marks:  # token j took stamps[j - 1] - stamps[j - 2]; from token WINDOW + 2 on, the window was full
        first = max(n - 50, WINDOW + 2)
        if n - first < 10:
            raise ValueError(f"mark {n} leaves fewer than 10 tokens after the {WINDOW}-token window filled")
        steps = sorted(stamps[j - 1] - stamps[j - 2] for j in range(first, n + 1))
        out[str(n)] = {
            "s_per_token": steps[len(steps) // 2],
            "tokens_timed": len(steps),
            "rss_mb": rss[n],
            "mflop_per_token": sum(flops[n]) / len(flops[n]) / 1e6,
            "s_per_token_interleaved": sorted(interleaved[n])[rounds // 2],
        }
    first, last = out[str(marks[0])], out[str(marks[-1])]
    for key in ("s_per_token", "rss_mb", "mflop_per_token", "s_per_token_interleaved"):
        out[f"{key}_ratio_last_first"] = last[key] / first[key]
    return out


def _branch_context_ab(case: bench.Case, rounds: int = 15, live: int = 7) -> dict[str, float]:
    """One MCG branch (forward + backward) of ``live`` still-noisy tokens after a 10-token run at batch 32, with the
    branch context rebuilt at every call (``cell.branch``, as before the context existed) and made once per row
    (``cell.branch_from`` of one ``branch_context``), interleaved; median milliseconds of each."""
    from algorithms.diffusion_forcing.sampler import RowPredictor, Sampler

    module, _ = bench.build(case)
    module.eval()
    cell, n, b = module.sampling_cell, 10, 32
    z, cond = bench._plan_inputs(module, case, n, b)
    sampler = Sampler(sampling_steps=50, eta=0.0, scheduling_matrix="pyramid", stabilization_level=10)
    x = torch.randn(b, n, *cell.token_shape, generator=torch.Generator().manual_seed(0))
    levels = torch.tensor([0] * (n - live) + [100 * (i + 1) for i in range(live)])
    row = RowPredictor(sampler, cell, z, x, levels, 0, n, cond)
    times: dict[str, list[float]] = {"rebuilt": [], "made_once": []}
    with torch.enable_grad():
        x_in = x.clone().requires_grad_(True)
        _, x0_run, _ = row.predict(x_in)
        x_live, lv = x0_run[:, row.live], row.levels[row.live].expand(b, -1)
        c = None if row.cond is None else row.cond[:, row.live]
        context = cell.branch_context(row.prefix, row.trace, row.live)
        calls = {
            "rebuilt": lambda: cell.branch(row.prefix, row.trace, x_live, lv, row.live, c)[0],
            "made_once": lambda: cell.branch_from(context, x_live, lv, c)[0],
        }
        for call in calls.values():  # warm-up
            torch.autograd.grad(call().sum(), x_in, retain_graph=True)
        for _ in range(rounds):
            for name, call in calls.items():
                t0 = time.perf_counter()
                torch.autograd.grad(call().sum(), x_in, retain_graph=True)
                times[name].append(time.perf_counter() - t0)
    out = {f"{name}_ms": 1e3 * sorted(t)[len(t) // 2] for name, t in times.items()}
    out["made_once_over_rebuilt"] = out["made_once_ms"] / out["rebuilt_ms"]
    return out


def bench_transformer() -> dict[str, Any]:
    gemm = bench.gemm_throughput(rows=(256,))["batch_256"]
    rnn, xf = maze_cases()
    out: dict[str, Any] = {"gemm_gflops_b256": gemm}
    print("[benchmark] transformer: training", flush=True)
    out["training"] = {case.name: _training(case, gemm) for case in (rnn, xf)}
    out["training"]["tokens_per_s_ratio"] = (
        out["training"][xf.name]["train_tokens_per_s"] / out["training"][rnn.name]["train_tokens_per_s"]
    )
    print("[benchmark] transformer: MCG branch context", flush=True)
    out["branch_context"] = {case.name: _branch_context_ab(case) for case in (rnn, xf)}
    print("[benchmark] transformer: cache", flush=True)
    out["cache"] = _cache(xf)
    print("[benchmark] transformer: long rollout", flush=True)
    out["long_rollout"] = _long_rollout(xf)
    return out


def markdown(result: dict[str, Any]) -> list[str]:
    t = result["training"]
    lines = [
        "",
        f"Transformer vs recurrent, maze CPU configuration (fp32 GEMM at batch 256: "
        f"{result['gemm_gflops_b256']:.1f} GFLOP/s)",
        "",
        "| backbone | params (M) | train s/step | tokens/s | model GFLOP/s | of GEMM rate |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in t.items():
        if isinstance(r, dict):
            lines.append(
                f"| {name} | {r['params_M']:.2f} | {r['train_s_per_step']:.3f} | {r['train_tokens_per_s']:.0f} | "
                f"{r['model_gflops']:.1f} | {100 * r['fraction_of_gemm_b256']:.0f} % |"
            )
    if "branch_context" in result:
        head = "| MCG branch, 7 live tokens, batch 32 | context rebuilt every call (ms) | made once per row (ms) "
        head += "| ratio |"
        lines += ["", head, "|---|---|---|---|"]
        for name, r in result["branch_context"].items():
            lines.append(
                f"| {name} | {r['rebuilt_ms']:.2f} | {r['made_once_ms']:.2f} | {r['made_once_over_rebuilt']:.3f} |"
            )
    lines += [
        "",
        "| plan (60 tokens, S = 50, batch 32) | cached s | recomputed s | speed-up | evaluations cached / "
        "recomputed | cached / whole window every row | max abs diff |",
        "|---|---|---|---|---|---|---|",
    ]
    for matrix, r in result["cache"].items():
        lines.append(
            f"| {matrix} | {r['cached_s']:.2f} | {r['recomputed_s']:.2f} | {r['speedup']:.1f}× | "
            f"{r['cached_token_evaluations']} / {r['recomputed_token_evaluations']} "
            f"({100 * r['evaluations_cached_over_recomputed']:.0f} %) | {r['cached_token_evaluations']} / "
            f"{r['window_every_row_evaluations']} ({100 * r['evaluations_cached_over_window_every_row']:.0f} %) | "
            f"{r['max_abs_diff']:.1e} |"
        )
    lr = result["long_rollout"]
    head = "| rollout length (tokens) | s per token, streamed | s per token, interleaved | MFLOP per token "
    head += "| resident MB |"
    lines += ["", head, "|---|---|---|---|---|"]
    lines += [
        f"| {n} | {r['s_per_token'] * 1e3:.2f} ms | {r['s_per_token_interleaved'] * 1e3:.2f} ms | "
        f"{r['mflop_per_token']:.2f} | {r['rss_mb']:.0f} |"
        for n, r in lr.items()
        if isinstance(r, dict)
    ]
    return lines
