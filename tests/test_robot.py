"""The swap table: physics and rendering, the expert, the memory bound, tokens, and the policy's evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from einops import rearrange

from datasets.robot.datamodule import RobotSwapDataModule, pack_tokens, unpack_tokens
from datasets.robot.env import HALF, REST_Z, SLOTS, Placement, SwapTableEnv
from datasets.robot.expert import MemorylessOracle, MoveController, ScriptedExpert
from datasets.robot.generate import placement
from datasets.robot.task import GOAL, START, Move, all_memoryless_policies, expert_policy, memoryless_success, rollout
from experiments.evaluation.robot import first_move, wilson_interval
from experiments.run import run
from tests.test_training import make_cfg


def run_policy(env: SwapTableEnv, policy, steps: int = 200) -> tuple:
    for _ in range(steps):
        env.step(policy.act(env))
    return env.arrangement()


def test_grasp_carry_place_and_collisions() -> None:
    env = SwapTableEnv()
    offsets = np.array([[0.01, -0.015], [-0.012, 0.008]])
    env.reset(Placement((0, 1), offsets))
    assert env.arrangement() == (1, 2, None)
    np.testing.assert_allclose(env.object_positions()[:, 2], REST_Z, atol=2e-3)  # resting on the table, not in it
    controller = MoveController(np.random.default_rng(0), jitter=0.0)
    controller.start_move(env, Move(1, 0, 2), offsets)
    carried = []
    while not controller.done:
        env.step(controller.act(env))
        if env.held == 0:
            carried.append(env.object_positions()[0, 2])
    assert max(carried) > REST_Z + 0.05  # lifted while held
    for _ in range(10):
        env.step(controller.act(env))
    assert env.held is None and env.arrangement() == (None, 2, 1)
    np.testing.assert_allclose(env.object_positions()[0, :2], SLOTS[2] + offsets[0], atol=2e-3)  # same offset
    # closing far from any object grasps nothing
    env.step(np.array([0.0, -0.2, 0.1, 1.0]))
    assert env.held is None
    # an object dropped onto the other one does not sink into it
    env.reset(Placement((0, 1), np.zeros((2, 2))))
    controller.start_move(env, Move(1, 0, 1), np.zeros((2, 2)))
    on_top = np.array([SLOTS[1][0], SLOTS[1][1], REST_Z + 2 * HALF + 0.004])  # put it down on object 2
    controller.waypoints = [
        *controller.waypoints[:5],
        (on_top, 1.0, 0),
        (on_top, 0.0, 2),
        (on_top + [0, 0, 0.1], 0.0, 0),
    ]
    for _ in range(120):
        env.step(controller.act(env))
    z1, z2 = env.object_positions()[:, 2]
    assert z1 > z2 + 1.5 * HALF  # on top of object 2 (collisions), not merged with it


def test_rendering_is_deterministic_and_shows_both_cameras() -> None:
    env = SwapTableEnv(image_size=32)
    place = placement(0, np.random.default_rng(3))
    images = []
    for _ in range(2):
        env.reset(place)
        env.step(np.array([-0.1, 0.0, 0.1, 0.0]))
        images.append(env.render())
    assert images[0].shape == (2, 32, 32, 3) and images[0].dtype == np.uint8
    np.testing.assert_array_equal(images[0], images[1])
    assert not np.array_equal(images[0][0], images[0][1]) and images[0].std() > 10  # two different, non-blank views
    env.close()


@pytest.mark.parametrize("configuration", [0, 1])
def test_scripted_expert_always_finishes(configuration: int) -> None:
    env = SwapTableEnv()
    for seed in range(6):
        rng = np.random.default_rng([seed, configuration])
        place = placement(configuration, rng)
        env.reset(place)
        assert env.arrangement() == START[configuration]
        expert = ScriptedExpert(configuration, place.offsets, rng)
        assert run_policy(env, expert, 160) == GOAL[configuration] and expert.finished


def test_no_memoryless_policy_finishes_both_configurations() -> None:
    """The task forces memory: over every memoryless policy (all 729 maps from the six arrangements to a move or
    "stop"), at most one configuration is finished; some finish exactly one; the expert, which remembers its moves,
    finishes both."""
    outcomes = [memoryless_success(p) for p in all_memoryless_policies()]
    assert len(outcomes) == 3**6
    assert max(sum(o) for o in outcomes) == 1
    assert [True, False] in outcomes and [False, True] in outcomes
    for c in (0, 1):
        assert rollout(START[c], expert_policy(c)) == GOAL[c]


def test_memoryless_oracle_succeeds_in_exactly_one_configuration_on_the_table() -> None:
    # the memoryless mapping that follows configuration 0's moves wherever they apply
    table = {START[0]: Move(1, 0, 2), (None, 2, 1): Move(2, 1, 0), (2, None, 1): Move(1, 2, 1)}
    env = SwapTableEnv()
    finished = []
    for c in (0, 1):
        rng = np.random.default_rng(c)
        place = placement(c, rng)
        env.reset(place)
        oracle = MemorylessOracle(table.get, place.offsets, rng)
        finished.append(run_policy(env, oracle, 200) == GOAL[c])
    assert finished == [True, False]


def test_tokens_round_trip_and_windows_stay_inside_episodes(tmp_path: Path) -> None:
    dm = RobotSwapDataModule(str(tmp_path), num_train=4, num_test=2, episode_steps=160, chunk=8)
    assert not tmp_path.joinpath(dm.root.name).exists()  # the constructor generates nothing
    dm.prepare_data()
    dm.setup("fit")
    assert dm.train_set.tensors["x"].shape == (4, 20, 42) and dm.model_kwargs()["frame_shape"] == [42]
    for i, f in enumerate(dm.episode_files("train")):
        with np.load(f) as ep:
            item = dm.train_set[i]
            np.testing.assert_array_equal(item["first_obs"].numpy(), ep["state"][0])  # one item = one whole episode
            assert int(item["configuration"]) == i % 2 == int(ep["configuration"])
            actions, nxt = unpack_tokens(item["x"].numpy(), 8)
            np.testing.assert_array_equal(actions.reshape(-1, 4), ep["actions"])
            np.testing.assert_array_equal(nxt[:-1], ep["state"][8::8])
            np.testing.assert_array_equal(nxt[-1], ep["final_state"])
            np.testing.assert_array_equal(pack_tokens(ep["state"], ep["actions"], ep["final_state"], 8), item["x"])


def test_wilson_interval_and_first_move() -> None:
    low, high = wilson_interval(40, 50)
    assert low == pytest.approx(0.6696, abs=1e-3) and high == pytest.approx(0.8876, abs=1e-3)
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == 1.0
    seq = [(1, 2, None), (None, 2, None), (None, 2, None), (None, 2, 1), (None, None, 1), (2, None, 1)]
    assert first_move(seq) == Move(1, 0, 2)


def test_smoke_train_and_evaluate_write_success_metrics_and_gifs(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, ["experiment=robot_swap_state_cpu", "debug=smoke", f"paths.data_cache={tmp_path / 'c'}"])
    metrics = run(cfg)
    for mode in ("memory", "memoryless"):
        for key in ("success_rate", "success_low", "config0/success_rate", "config1/success_high", "fail_timeout"):
            assert 0.0 <= metrics[f"val/{mode}/{key}"] <= 1.0
        assert (tmp_path / "media" / f"robot_val_{mode}.gif").stat().st_size > 1000
    assert json.loads((tmp_path / "metrics.json").read_text())["trainer/global_step"] == 2


def test_chunk_policy_items_hold_one_chunk_and_the_last_two_observations(tmp_path: Path) -> None:
    episode = RobotSwapDataModule(str(tmp_path), num_train=2, num_test=1)
    chunks = RobotSwapDataModule(str(tmp_path), num_train=2, num_test=1, layout="chunk_policy")
    assert chunks.model_kwargs() == {"frame_shape": [32], "cond_dim": 20, "obs_dim": 0}
    episode.setup("fit")
    chunks.setup("fit")
    assert chunks.train_set.tensors["x"].shape == (2 * 20, 1, 32)
    with np.load(episode.episode_files("train")[1]) as ep:
        for k in (0, 1, 7):
            item = chunks.train_set[20 + k]
            np.testing.assert_array_equal(item["x"][0].numpy(), ep["actions"][8 * k : 8 * k + 8].ravel())
            before, now = ep["state"][max(0, 8 * (k - 1))], ep["state"][8 * k]
            np.testing.assert_array_equal(item["cond"][0].numpy(), np.concatenate([before, now]))


def test_corruptions_change_only_what_the_policy_sees() -> None:
    from experiments.evaluation.robot import RobotSwapEvaluator

    env = SwapTableEnv()
    true = env.reset(placement(0, np.random.default_rng(0)))[None].copy()  # arrangement (1, 2, -): C is empty
    seen = {}
    for kind in ("occlusion", "noise", "distractor"):
        evaluator = RobotSwapEvaluator(num_episodes=2, corruption=kind, noise_std=0.1)
        seen[kind] = evaluator.corrupt(true, [env], np.random.default_rng(0))
    np.testing.assert_array_equal(env.state()[None], true)  # the environment is untouched
    assert not seen["occlusion"].any()
    assert 0.05 < np.abs(seen["noise"] - true).mean() < 0.15
    np.testing.assert_array_equal(seen["distractor"][0, :7], true[0, :7])  # gripper and object 1 as they are
    np.testing.assert_allclose(seen["distractor"][0, 7:], [*SLOTS[2], REST_Z])  # object 2 reported in slot C


def test_image_chunk_policy_items_and_their_random_shift(tmp_path: Path) -> None:
    import torch

    from datasets.robot.datamodule import CroppedObservations, random_shift

    kwargs = dict(data_dir=str(tmp_path), num_train=2, num_test=1, episode_steps=160, chunk=8, observation="image")
    episodes = RobotSwapDataModule(**kwargs)
    episodes.setup("fit")
    dp = RobotSwapDataModule(**kwargs, layout="chunk_policy", crop_pad=2)
    assert dp.model_kwargs() == {"frame_shape": [4, 32, 32], "cond_dim": 0, "obs_dim": 12 * 32 * 32}
    dp.setup("fit")
    tokens = episodes.train_set.tensors["x"]  # (2, 1 + 20, 10, 32, 32): [cameras, planes]
    items = dp.train_set.tensors
    assert items["x"].shape == (40, 1, 4, 32, 32) and items["first_obs"].shape == (40, 12, 32, 32)
    for e in range(2):
        for k in (0, 1, 7, 19):
            i = 20 * e + k
            torch.testing.assert_close(items["x"][i, 0], tokens[e, k + 1, 6:])  # the chunk after o_{kH}
            torch.testing.assert_close(items["first_obs"][i, 6:], tokens[e, k, :6])  # o_{kH}
            torch.testing.assert_close(items["first_obs"][i, :6], tokens[e, max(k - 1, 0), :6])  # o_{(k-1)H}
    assert isinstance(dp.train_set, CroppedObservations) and not isinstance(dp.val_set, CroppedObservations)
    batch, again = dp.train_set.get_batch(torch.tensor([0, 5])), dp.train_set.get_batch(torch.tensor([0, 5]))
    torch.testing.assert_close(batch["first_obs"], again["first_obs"])  # a function of the batch: resumable
    torch.testing.assert_close(batch["x"], items["x"][[0, 5]])  # the actions are never shifted
    # the shift itself: every output is a crop of the edge-padded frame at one offset within ±pad
    frames = torch.rand(6, 3, 8, 8)
    shifted = random_shift(frames, 2, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(frames, (2, 2, 2, 2), mode="replicate")
    for i in range(6):
        crops = [padded[i, :, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(shifted[i], c) for c in crops)
    assert not torch.equal(shifted, frames)  # at least one item moved
    mean, std = dp.normalization_stats()
    assert len(mean) == 4 and all(s > 0 for s in std)


def test_the_image_distractor_is_an_object_2_look_alike_in_the_empty_slot() -> None:
    from experiments.evaluation.robot import RobotSwapEvaluator

    env = SwapTableEnv(image_size=32)
    env.reset(placement(0, np.random.default_rng(0)))  # arrangement (1, 2, -): C is empty
    plain = env.render()
    state = env.state().copy()
    shown = env.render_with_distractor(2)
    np.testing.assert_array_equal(env.render(), plain)  # removed again: the scene renders as before
    np.testing.assert_array_equal(env.state(), state)  # and the physics never saw it
    front_plain, front_shown = plain[0].astype(int), shown[0].astype(int)
    changed = np.abs(front_shown - front_plain).sum(-1) > 30  # (H, W) pixels the look-alike covers
    assert changed.sum() > 4 and changed[:, 22:].sum() > 0.8 * changed.sum()  # on the right: slot C
    yellow = front_shown[changed].mean(0)
    assert yellow[0] > 150 and yellow[1] > 120 and yellow[2] < 100  # obj2's yellow, not the table or a slot
    frames = np.stack([plain])  # what the policy receives: (n, 6, S, S) in [0, 1]
    seen = RobotSwapEvaluator(num_episodes=2, corruption="distractor").corrupt(
        rearrange(frames, "n c h w rgb -> n (c rgb) h w").astype(np.float32) / 255.0, [env], np.random.default_rng(0)
    )
    np.testing.assert_allclose(seen[0], rearrange(shown, "c h w rgb -> (c rgb) h w") / 255.0, atol=1e-6)


def test_flagged_tokens_enter_the_latent_as_noisy_observations() -> None:
    """``commit_noisy`` is the cell applied to ``sqrt(ᾱ_k)·x + sqrt(1 − ᾱ_k)·ξ`` at label k (the forward process)."""
    import torch

    from algorithms.diffusion_forcing.backbones.rnn_mlp import RecurrentMLP
    from algorithms.diffusion_forcing.denoiser import DenoisingCell
    from algorithms.diffusion_forcing.noise_schedule import NoiseSchedule
    from algorithms.diffusion_forcing.sampler import Sampler
    from experiments.evaluation.robot import RobotSwapEvaluator

    torch.manual_seed(0)
    cell = DenoisingCell(RecurrentMLP((6,), z_dim=8, hidden_dim=16), NoiseSchedule("cosine", 1000), "x0", 20.0)
    sampler = Sampler(sampling_steps=5)
    z, x = torch.randn(3, 8), torch.randn(3, 6)
    evaluator = RobotSwapEvaluator(num_episodes=2, flag_level=700)
    got = evaluator.commit_noisy(sampler, cell, z, x, torch.Generator().manual_seed(1))
    xi = torch.randn(3, 6, generator=torch.Generator().manual_seed(1))
    abar = cell.schedule.alphas_cumprod[700]
    expected, _, _ = cell(z, abar.sqrt() * x + (1 - abar).sqrt() * xi, torch.full((3,), 700), None)
    torch.testing.assert_close(got, expected)
    clean = sampler.commit_tokens(cell, z, x[:, None])
    assert not torch.allclose(got, clean)
    with pytest.raises(ValueError, match="evaluator.flag_level"):
        RobotSwapEvaluator(num_episodes=2, flag_level=1000).commit_noisy(sampler, cell, z, x, None)


def test_official_layout_loader_on_tiny_files(tmp_path: Path) -> None:
    import pickle

    import imageio.v3 as iio

    from datasets.robot.official import load_trajectory, official_episodes, read_official_episode

    steps, rng = 6, np.random.default_rng(0)
    episode = tmp_path / "episode_000"
    episode.mkdir()
    colours = {"cam_0": (200, 30, 30), "cam_1": (30, 30, 200)}
    for name, colour in colours.items():  # a flat colour per camera survives video compression
        frames = np.tile(np.array(colour, dtype=np.uint8), (steps, 64, 64, 1))
        iio.imwrite(episode / f"{name}.mp4", frames, fps=10, plugin="FFMPEG")
    traj = {
        "ee_pos": [rng.normal(size=3) for _ in range(steps)],
        "ee_quat": [np.array([0, 0, 0, 1.0]) for _ in range(steps)],
        "ee_pos_target": [rng.normal(size=3) for _ in range(steps)],
        "ee_quat_target": [np.array([0, 0, 0.6, 0.8]) for _ in range(steps)],
        "grasp": [float(t >= 3) for t in range(steps)],
    }
    (episode / "traj.pkl").write_bytes(pickle.dumps(traj))
    assert official_episodes(tmp_path) == [episode]
    out = read_official_episode(episode, resolution=32)
    assert out["images"].shape == (steps, 2, 32, 32, 3) and out["actions"].shape == (steps, 8)
    np.testing.assert_allclose(out["images"][:, 0].mean(axis=(0, 1, 2)), colours["cam_0"], atol=12)
    np.testing.assert_allclose(out["images"][:, 1].mean(axis=(0, 1, 2)), colours["cam_1"], atol=12)
    np.testing.assert_allclose(out["actions"][:, :3], np.stack(traj["ee_pos_target"]), rtol=1e-6)
    np.testing.assert_array_equal(out["actions"][:, 7], [0, 0, 0, 1, 1, 1])
    # a pickle that would run code is refused, and a broken layout is a clear error
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"ee_pos": [print]}))
    with pytest.raises(ValueError, match="refusing"):
        load_trajectory(tmp_path / "evil.pkl")
    (episode / "extra.pkl").write_bytes(pickle.dumps(traj))
    with pytest.raises(ValueError, match="one .pkl"):
        read_official_episode(episode)


def test_image_tokens_pack_cameras_and_action_planes(tmp_path: Path) -> None:
    from datasets.robot.datamodule import action_planes, pack_image_tokens, planes_to_actions

    rng = np.random.default_rng(0)
    actions = rng.normal(size=(5, 8, 4)).astype(np.float32)
    planes = action_planes(actions, 32)
    assert planes.shape == (5, 4, 32, 32)
    np.testing.assert_allclose(planes_to_actions(planes, 8), actions, atol=1e-6)
    assert planes[0, 2, 0, 0] == actions[0, 0, 2] and planes[0, 2, 31, 31] == actions[0, 7, 2]  # one cell per action
    dm = RobotSwapDataModule(str(tmp_path), num_train=2, num_test=1, observation="image")
    assert dm.model_kwargs() == {"frame_shape": [10, 32, 32], "cond_dim": 0, "obs_dim": 0}
    dm.setup("fit")
    x = dm.train_set.tensors["x"]
    assert x.shape == (2, 21, 10, 32, 32)
    with np.load(dm.episode_files("train")[0]) as ep:
        np.testing.assert_array_equal(pack_image_tokens(ep["images"], ep["final_images"], ep["actions"], 8), x[0])
        np.testing.assert_allclose(x[0, 0, :3].permute(1, 2, 0).numpy() * 255, ep["images"][0, 0], atol=1e-3)  # o_0
        np.testing.assert_allclose(x[0, 3, 3:6].permute(1, 2, 0).numpy() * 255, ep["images"][24, 1], atol=1e-3)
        np.testing.assert_allclose(planes_to_actions(x[0, 3, 6:].numpy(), 8), ep["actions"][16:24], atol=1e-6)
    assert not x[0, 0, 6:].any()  # the context token carries no actions
    mean, std = dm.normalization_stats()
    assert mean[:6] == [0.5] * 6 and std[:6] == [0.5] * 6 and len(mean) == 10


def test_image_policy_smoke_run_writes_the_dream_video(tmp_path: Path) -> None:
    overrides = ["experiment=robot_swap_cpu", "debug=smoke", f"paths.data_cache={tmp_path / 'c'}",
                 "evaluator.modes=[memory,memory_flagged]", "evaluator.corruption=occlusion"]  # fmt: skip
    metrics = run(make_cfg(tmp_path, overrides))
    assert 0.0 <= metrics["val/memory_flagged/success_rate"] <= 1.0
    from PIL import Image

    with Image.open(tmp_path / "media" / "robot_val_dream.gif") as gif:
        assert gif.n_frames == 21 and gif.size == (32 * 4, 2 * 32 * 4)  # o_0 and 20 generated tokens, one dream


def test_imputed_tokens_never_let_the_corrupted_observation_in(tmp_path: Path) -> None:
    """``memory_imputed`` commits the model's own predicted observation for a flagged token: the episodes are then the
    same whatever the corruption was, whereas taking the corrupted observation as clean changes them. The same holds
    for ``memory_surprise`` with ``surprise_commit=imputed`` for the tokens its threshold flags."""
    import torch

    from experiments.build import build
    from experiments.evaluation.robot import RobotSwapEvaluator

    cfg = make_cfg(tmp_path, ["experiment=robot_swap_state_cpu", "debug=smoke", f"paths.data_cache={tmp_path / 'c'}"])
    dm, module = build(cfg)
    dm.setup("fit")
    module.normalizer.set_stats(*dm.normalization_stats())
    torch.manual_seed(0)
    for p in module.cell.parameters():  # an untrained but not degenerate policy: actions that depend on the latent
        p.data.add_(0.05 * torch.randn_like(p))
    runs = {}
    for mode in ("memory_imputed", "memory"):
        for corruption in ("occlusion", "noise"):
            evaluator = RobotSwapEvaluator(num_episodes=2, corruption=corruption, corrupt_tokens=[1, 4], seed=3)
            frames = evaluator.rollout(module, mode, record=2)["frames"]  # the gripper's path, seen by the cameras
            runs[mode, corruption] = np.stack([np.stack(f) for f in frames])
    np.testing.assert_array_equal(runs["memory_imputed", "occlusion"], runs["memory_imputed", "noise"])
    assert not np.array_equal(runs["memory", "occlusion"], runs["memory", "noise"])
    # memory_surprise with every token surprising: imputed, no observation after the first ever enters the memory
    # (the episodes are the same under either corruption of every token); flagged at k = 800, they still do
    for commit in ("imputed", "flagged"):
        for corruption in ("occlusion", "noise"):
            evaluator = RobotSwapEvaluator(num_episodes=2, corruption=corruption, corrupt_tokens=[0, 20], seed=3,
                                           surprise_threshold=-1.0, surprise_commit=commit)  # fmt: skip
            frames = evaluator.rollout(module, "memory_surprise", record=2)["frames"]
            runs[commit, corruption] = np.stack([np.stack(f) for f in frames])
    np.testing.assert_array_equal(runs["imputed", "occlusion"], runs["imputed", "noise"])
    assert not np.array_equal(runs["flagged", "occlusion"], runs["flagged", "noise"])
    with pytest.raises(ValueError, match="evaluator.surprise_commit"):
        RobotSwapEvaluator(surprise_commit="prior")


def test_surprise_is_the_observation_part_mismatch() -> None:
    import torch

    from experiments.evaluation.robot import surprise

    predicted = torch.zeros(2, 42)
    observed = torch.zeros(2, 42)
    observed[0, :10] = 2.0  # the observation misses the prediction
    observed[1, 10:] = 5.0  # only the (executed) actions differ: no surprise
    np.testing.assert_allclose(surprise(observed, predicted, 10).numpy(), [4.0, 0.0])
    images = torch.zeros(1, 10, 4, 4)
    images[0, :6] = 1.0
    np.testing.assert_allclose(surprise(images, torch.zeros_like(images), 6).numpy(), [1.0])


def test_surprise_metrics_count_the_tokens_each_threshold_flags(tmp_path: Path) -> None:
    """Every committed token's surprise is kept per episode; ``memory_surprise`` reports the fraction of clean and of
    corrupted tokens above its threshold (all of them below a negative threshold, none below a huge one), and modes
    without the rule report only the medians."""
    import torch

    from experiments.build import build
    from experiments.evaluation.robot import RobotSwapEvaluator

    cfg = make_cfg(tmp_path, ["experiment=robot_swap_state_cpu", "debug=smoke", f"paths.data_cache={tmp_path / 'c'}"])
    dm, module = build(cfg)
    dm.setup("fit")
    module.normalizer.set_stats(*dm.normalization_stats())
    torch.manual_seed(0)
    for p in module.cell.parameters():
        p.data.add_(0.05 * torch.randn_like(p))
    for threshold, rate in ((-1.0, 1.0), (1e9, 0.0)):
        evaluator = RobotSwapEvaluator(num_episodes=2, corruption="occlusion", corrupt_tokens=[1, 4],
                                       surprise_threshold=threshold, seed=3)  # fmt: skip
        result = evaluator.rollout(module, "memory_surprise")
        assert result["surprise"].shape == (2, 20) and (result["surprise"] >= 0).all()
        assert result["corrupted_tokens"].tolist() == [1 <= k < 4 for k in range(20)]
        metrics = evaluator.metrics(result)
        assert metrics["surprise_flagged_clean"] == metrics["surprise_flagged_corrupted"] == rate
        assert metrics["surprise_corrupted_median"] == np.median(result["surprise"][:, 1:4])
        clean, corrupted = np.delete(result["surprise"], [1, 2, 3], axis=1), result["surprise"][:, 1:4]
        assert metrics["surprise_clean_max"] == clean.max() and metrics["surprise_corrupted_min"] == corrupted.min()
        assert clean.min() <= metrics["surprise_clean_p99"] <= clean.max()  # numpy's linear quantile of 36 tokens
        assert np.mean(clean <= metrics["surprise_clean_p99"]) >= 0.99 - 1 / clean.size
        assert corrupted.min() <= metrics["surprise_corrupted_p01"] <= np.median(corrupted)
    plain = RobotSwapEvaluator(num_episodes=2, seed=3)
    metrics = plain.metrics(plain.rollout(module, "memory"))
    assert metrics["surprise_clean_median"] >= 0.0
    assert metrics["surprise_clean_max"] >= metrics["surprise_clean_p99"] >= metrics["surprise_clean_median"]
    assert not any(k.startswith(("surprise_flagged", "surprise_corrupted")) for k in metrics)
