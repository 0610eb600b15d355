"""The benchmark's measuring code on a tiny model: the optimised plan equals the official-style reference, with
fewer cell calls; the memory probe and the report work."""

from __future__ import annotations

import pytest
import torch

from scripts import benchmark


@pytest.fixture(scope="module")
def tiny() -> benchmark.Case:
    return benchmark._vector("tiny", 2, 2, 6, 2, {"z_dim": 16, "hidden_dim": 16}, batch=4, plan_tokens=6, mcg=True)


def test_sampling_matches_the_official_style_reference_with_fewer_calls(tiny: benchmark.Case) -> None:
    out = benchmark.bench_sampling(tiny, repeats=1)
    ref = out["pyramid_naive_reference"]
    assert ref["max_abs_diff_vs_ours"] < 1e-5
    # S = 50: every token is run once per sampling step plus once to commit it; the reference reruns all tokens
    for schedule in benchmark.SCHEDULES:
        assert out[schedule]["cell_calls"] == 6 * 50 + 6
    assert ref["cell_calls"] == 6 * (50 + 6 - 1)  # every token in every row that changes something


def test_training_mcg_and_report(tiny: benchmark.Case) -> None:
    training = benchmark.bench_training(tiny, repeats=1)
    assert training["train_s_per_step"] > 0 and training["params_M"] > 0
    mcg = benchmark.bench_mcg(tiny, repeats=1)
    assert set(mcg) >= {"N1_s", "N8_s", "N8_over_N1"} and mcg["mode"] == "branch" and mcg["N8_s"] > 0
    results = {
        "machine": benchmark.machine(),
        "models": {"tiny": {"training": training, "sampling": benchmark.bench_sampling(tiny, 1), "mcg": mcg}},
        "memory": [{"model": "tiny", "tokens": 4, "mode": "stream", "peak_rss_growth_MB": 0.0, "seconds": 0.1}],
    }
    gemm = results["machine"]["gemm_gflops"]
    assert set(gemm) == {"batch_32", "batch_256"} and min(gemm.values()) > 0
    table = benchmark.markdown(results)
    assert "| tiny |" in table and "N=8 / N=1" in table and "| tiny | stream | 4 |" in table
    ab = benchmark.bench_training_ab(tiny, rounds=1, steps=1)
    assert set(ab) == {"official_style_s_per_step", "plain_s_per_step", "taped_s_per_step"} and min(ab.values()) > 0
    assert "weight tape off" in benchmark.markdown({"machine": {}, "models": {"tiny": {"training_ab": ab}}})
    # --parts: a model measured for training only, and one for MCG only (no row in the main table)
    m_only = {"mcg": mcg}
    partial = {"machine": {}, "models": {"t_only": {"training": training}, "m_only": m_only}}
    table = benchmark.markdown(partial)
    assert "| t_only | " in table and "| — | — | — | — | — |" in table
    assert f"| m_only | branch | {mcg['plan_tokens']} |" in table and "| m_only | —" not in table
    assert "train s/step" not in benchmark.markdown({"machine": {}, "models": {"m_only": m_only}})  # no empty table


def test_memory_probe_rolls_out_vector_video_and_forecasting_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every model of both sets has a probe; one token per chunk is generated and counted for each kind."""
    assert set(benchmark.memory_models("all")) == {c.name for c in benchmark.cases("all") if c.sampling}
    assert benchmark.memory_modes("timeseries_cpu") == ("collect",)
    assert benchmark.memory_modes("maze_cpu") == ("stream", "collect")
    chunks: list[int] = []
    from algorithms.diffusion_forcing.sampler import Sampler

    denoise_chunk = Sampler.denoise_chunk

    def counted(self, cell, z, h, *args, **kwargs):
        chunks.append(h)
        return denoise_chunk(self, cell, z, h, *args, **kwargs)

    monkeypatch.setattr(Sampler, "denoise_chunk", counted)
    for model, mode in (("maze_cpu", "stream"), ("video_cpu", "collect"), ("timeseries_cpu", "collect")):
        chunks.clear()
        row = benchmark.memory_probe(model, 3, mode)
        assert (row["model"], row["tokens"], row["mode"]) == (model, 3, mode)
        assert row["peak_rss_growth_MB"] >= 0 and row["seconds"] > 0
        assert chunks == [1, 1, 1], model  # one token per chunk, three chunks
    with pytest.raises(ValueError, match="only mode 'collect'"):
        benchmark.memory_probe("timeseries_cpu", 3, "stream")
    with pytest.raises(ValueError, match="unknown model"):
        benchmark.memory_probe("nope", 3, "stream")


def test_official_style_training_reference_computes_the_same_outputs(tiny: benchmark.Case) -> None:
    """The per-token reference loop of ``--parts training_ab`` is the same function as ours, only unbatched."""
    module, _ = benchmark.build(tiny)
    backbone = module.cell.backbone
    g = torch.Generator().manual_seed(0)
    b, n = 3, 5
    z = torch.randn(b, *backbone.z_shape, generator=g)
    x = torch.randn(b, n, *backbone.token_shape, generator=g)
    levels = torch.randint(0, 100, (b, n), generator=g)
    cond = torch.randn(b, n, backbone.cond_dim, generator=g) if backbone.cond_dim else None
    ours = backbone.forward_sequence(z, x, levels, cond)
    reference = benchmark._per_token_sequence(backbone)(z, x, levels, cond)
    for a, r in zip(ours, reference):
        torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-6)


def test_transformer_part_measures_the_cache_and_the_long_rollout(tiny: benchmark.Case) -> None:
    """``--parts transformer`` on a tiny transformer: the cached plans equal the recomputed ones with fewer token
    evaluations, the autoregressive plan pays one evaluation per step plus one commit per token, and the rollout
    reports every mark."""
    from scripts import bench_transformer

    case = benchmark.Case(tiny.name, [*tiny.overrides, *bench_transformer.TRANSFORMER, "algorithm.backbone.width=32",
                                      "algorithm.backbone.depth=1"], tiny.model_kwargs, tiny.frames)  # fmt: skip
    out = bench_transformer._cache(case, tokens=6, steps=5)
    for matrix, row in out.items():
        assert row["max_abs_diff"] < 1e-4, matrix
        assert row["cached_token_evaluations"] < row["recomputed_token_evaluations"]
    # one evaluation per step plus one commit per token (the start token is encoded from the observation)
    assert out["autoregressive"]["cached_token_evaluations"] == 6 * (5 + 1)
    rollout = bench_transformer._long_rollout(case, marks=(80, 130))
    assert rollout["130"]["s_per_token"] > 0 and rollout["rss_mb_ratio_last_first"] > 0
    assert rollout["130"]["s_per_token_interleaved"] > 0
    # only tokens made with a full 64-token window are timed: 66..80 at the first mark, the last 51 at the second
    assert rollout["80"]["tokens_timed"] == 15 and rollout["130"]["tokens_timed"] == 51
    # with the window full the work per token does not depend on how many tokens came before it
    assert rollout["80"]["mflop_per_token"] > 0
    assert rollout["mflop_per_token_ratio_last_first"] == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(ValueError, match="fewer than 10 tokens"):
        bench_transformer._long_rollout(case, marks=(70,))
    ab = bench_transformer._branch_context_ab(case, rounds=2)
    assert ab["rebuilt_ms"] > 0 and ab["made_once_ms"] > 0
    table = "\n".join(
        bench_transformer.markdown(
            {
                "gemm_gflops_b256": 1.0,
                "training": {},
                "branch_context": {"x": ab},
                "cache": out,
                "long_rollout": rollout,
            }
        )
    )
    assert f"| x | {ab['rebuilt_ms']:.2f} | {ab['made_once_ms']:.2f} |" in table
