"""Maze2d on the mujoco package: physics and reward against hand-checked cases, the waypoint controller, and the
D4RL-style generation stream."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datasets.maze2d.controller import WaypointController
from datasets.maze2d.env import Maze2dEnv, VectorMaze2d
from datasets.maze2d.generate import cached_stream, generate_stream
from datasets.maze2d.layouts import LAYOUTS, Layout


def _push(env: Maze2dEnv, start, action, steps: int = 300) -> np.ndarray:
    env.reset(seed=0)
    env.set_state(np.asarray(start, float), np.zeros(2))
    for _ in range(steps):
        obs, *_ = env.step(np.asarray(action, float))
    return obs


def test_layouts_and_goal_cells() -> None:
    assert [tuple(Layout(m).goal) for m in ("umaze", "medium", "large")] == [(1, 1), (6, 6), (7, 9)]
    for name, rows in LAYOUTS.items():
        assert len({len(r) for r in rows}) == 1, name
        grid = Layout(name)
        assert grid.is_wall(0, 0) and grid.is_wall(-1, 0) and not grid.is_wall(*grid.goal)


def test_point_mass_and_walls_match_d4rl() -> None:
    env = Maze2dEnv("umaze")
    assert env.model.body_mass[1] == pytest.approx(4.18879, rel=1e-4)  # sphere r = 0.1, density 1000
    assert env.model.opt.timestep == 0.01
    # cell (1, 1) spans x in [0.3, 1.3]; row 0 and cell (2, 1) are walls; the ball has radius 0.1
    assert _push(env, [1.0, 1.0], [-1.0, 0.0])[0] == pytest.approx(0.403, abs=2e-3)
    assert _push(env, [1.0, 1.0], [1.0, 0.0])[0] == pytest.approx(1.197, abs=2e-3)
    # along the free corridor (1, 1) → (1, 3), then the wall of column 4
    assert _push(env, [1.0, 1.0], [0.0, 1.0])[1] == pytest.approx(3.197, abs=2e-3)


def test_actions_are_clipped_and_velocity_is_bounded() -> None:
    a, b = Maze2dEnv("umaze"), Maze2dEnv("umaze")
    for env in (a, b):
        env.reset(seed=3)
    for _ in range(20):
        oa, *_ = a.step(np.array([5.0, -7.0]))
        ob, *_ = b.step(np.array([1.0, -1.0]))
    np.testing.assert_array_equal(oa, ob)
    a.set_state(np.array([3.0, 1.5]), np.array([40.0, 0.0]))
    obs, *_ = a.step(np.zeros(2))
    assert abs(obs[2]) <= 5.0  # clipped to ±5 before the step, then damped
    with pytest.raises(ValueError, match="finite"):
        a.step(np.array([np.nan, 0.0]))


def test_sparse_reward_radius_and_episode_length() -> None:
    env = Maze2dEnv("umaze")
    env.reset(seed=0)
    goal = env.layout.goal.astype(float)
    assert env.target.tolist() == goal.tolist()  # the G cell exactly
    assert env.reward(np.array([*(goal + [0.49, 0.0]), 0, 0])) == 1.0
    assert env.reward(np.array([*(goal + [0.36, 0.36]), 0, 0])) == 0.0  # 0.509 away
    truncated = [env.step(np.zeros(2))[3] for _ in range(300)]
    assert truncated.index(True) == 299 and env.max_episode_steps == 300


def test_reset_jitter_and_vector_env_seeds() -> None:
    venv = VectorMaze2d("medium", 4)
    first, again = venv.reset(seed=0), venv.reset(seed=0)
    np.testing.assert_array_equal(first, again)
    assert len({tuple(o) for o in first.round(6)}) == 4
    free = {tuple(c) for c in Layout("medium").free}
    for o in first:
        cell = tuple(np.round(o[:2]).astype(int))
        assert cell in free and np.all(np.abs(o[:2] - cell) <= 0.1)
    obs, rew, trunc = venv.step(np.zeros((4, 2)))
    assert obs.shape == (4, 4) and rew.shape == trunc.shape == (4,)


@pytest.mark.parametrize("maze", ["umaze", "medium"])
def test_waypoint_controller_reaches_the_goal_from_every_cell(maze: str) -> None:
    env = Maze2dEnv(maze)
    goal = env.layout.goal.astype(float)
    for i, cell in enumerate(env.layout.free):
        controller = WaypointController(env.layout, seed=i)
        obs = env.reset(seed=i, qpos=cell.astype(float))
        env.set_target(goal)
        for _ in range(env.max_episode_steps):
            action, solved = controller(obs[:2], obs[2:], env.target)
            if solved:
                break
            obs, *_ = env.step(action)
        assert solved, f"{maze}: no arrival from cell {tuple(cell)}"
        assert np.linalg.norm(obs[:2] - goal) < 0.1


def test_expert_return_is_in_the_d4rl_range() -> None:
    """A fresh controller per episode on umaze, 300 steps from random starts: the spec's expert returns."""
    env = Maze2dEnv("umaze")
    returns = []
    for ep in range(10):
        controller = WaypointController(env.layout, seed=ep)
        obs, total = env.reset(seed=ep), 0.0
        for _ in range(300):
            action, _ = controller(obs[:2], obs[2:], env.target)
            obs, reward, _, _ = env.step(action)
            total += reward
        returns.append(total)
    assert 160 <= np.mean(returns) <= 260  # D4RL ref_max 161.86; a fresh controller per episode gets ~223
    assert env.layout.normalized_score(np.mean(returns)) > 100


# the statistics of the original D4RL files (docs/experiments.md §2): obs mean (x, y), obs std (x, y, vx, vy),
# action std
D4RL_STATS = {
    "umaze": ((1.9328, 2.3745), (0.8997, 0.7093, 2.2129, 2.4682), (0.7043, 0.7506)),
    "medium": ((3.5093, 3.4766), (1.3371, 1.5210, 2.3408, 2.3694), (0.7398, 0.7459)),
    "large": ((3.7296, 5.3047), (1.8070, 2.5688, 2.4368, 2.6494), (0.7249, 0.7395)),
}


@pytest.mark.parametrize("maze", ["umaze", "medium", "large"])
def test_generated_stream_matches_the_d4rl_statistics(maze: str) -> None:
    """30 k generated steps against the released datasets' statistics: a shifted layout, a wrong velocity scale or
    controller gain would move them by far more than the random walk's own spread over that length."""
    pos_mean, obs_std, act_std = D4RL_STATS[maze]
    stream = generate_stream(maze, 30_000, seed=0)
    obs, actions = stream["observations"], stream["actions"]
    np.testing.assert_allclose(obs[:, :2].mean(axis=0), pos_mean, atol=0.25)
    np.testing.assert_allclose(obs.std(axis=0), obs_std, rtol=0.12)
    np.testing.assert_allclose(actions.std(axis=0), act_std, rtol=0.05)
    assert np.abs(obs[:, 2:].mean(axis=0)).max() < 0.05 and np.abs(actions.mean(axis=0)).max() < 0.03


def test_generation_stream_follows_the_d4rl_loop(tmp_path) -> None:
    stream = generate_stream("umaze", 4000, seed=0)
    assert stream["observations"].shape == (4000, 4) and stream["actions"].shape == (4000, 2)
    assert np.abs(stream["actions"]).max() <= 1.0
    goals = stream["infos/goal"]
    switches = np.nonzero(np.abs(np.diff(goals, axis=0)).sum(axis=1) > 0)[0]
    assert 20 <= len(switches) <= 120  # a new target every ~70 steps
    # the quirk: on a switch step the observation is not advanced, so it is recorded twice
    i = switches[0]
    np.testing.assert_array_equal(stream["observations"][i], stream["observations"][i + 1])
    # consecutive observations otherwise follow the dynamics (small steps)
    assert np.abs(np.diff(stream["observations"][:, :2], axis=0)).max() < 0.1
    goal = Layout("umaze").goal
    near = np.linalg.norm(stream["observations"][:, :2] - goal, axis=1) <= 0.5
    np.testing.assert_array_equal(stream["rewards"], near.astype(np.float32))
    assert not stream["timeouts"].any()

    path = cached_stream(tmp_path / "umaze.npz", "umaze", 500, seed=1)
    stamp = path.stat().st_mtime_ns
    assert cached_stream(path, "umaze", 500, seed=1).stat().st_mtime_ns == stamp  # reused
    path.write_bytes(path.read_bytes()[:200])  # an interrupted write elsewhere: regenerated
    with np.load(cached_stream(path, "umaze", 500, seed=1)) as data:
        assert data["observations"].shape == (500, 4)


def test_generation_script_writes_and_reuses_the_cache(tmp_path, capsys) -> None:
    from scripts.generate_maze2d import main

    path = main(["--maze", "umaze", "--steps", "300", "--out", str(tmp_path)])
    assert path.name == "maze2d-umaze-s0.npz" and "300 steps" in capsys.readouterr().out
    stamp = path.stat().st_mtime_ns
    assert main(["--maze", "umaze", "--steps", "300", "--out", str(tmp_path)]).stat().st_mtime_ns == stamp


def test_windows_follow_the_official_token_layout(tmp_path) -> None:
    from datasets.maze2d.datamodule import Maze2dDataModule

    dm = Maze2dDataModule("umaze", data_dir=str(tmp_path), steps=3000, episode_len=40, val_fraction=0.1)
    dm.setup("fit")
    with np.load(dm.stream_path()) as data:
        obs, act = data["observations"], data["actions"]
    batch = dm.train_set.get_batch(torch.tensor([0, 7]))
    s = int(dm.train_set.starts[7])
    x = batch["x"][1].numpy()
    assert batch["x"].shape == (2, 40, 6) and dm.frame_shape == (6,) and dm.obs_dim == 4
    np.testing.assert_allclose(batch["first_obs"][1].numpy(), obs[s])
    np.testing.assert_allclose(x[:-1, :4], obs[s + 1 : s + 40])  # o_{t+1}
    np.testing.assert_allclose(x[:, 4:], act[s : s + 40])  # a_t
    assert (x[-1, :4] == 0).all() and batch["nonterminal"][1].tolist() == [True] * 39 + [False]
    # the validation windows lie in the last 10 % of the stream; statistics come from the training part
    assert int(dm.val_set.starts.min()) >= 2700 and int(dm.train_set.starts.max()) + 40 <= 2700
    mean, std = dm.normalization_stats()
    np.testing.assert_allclose(mean[:4], obs[1:2700].mean(0), rtol=1e-4, atol=1e-4)


def test_windows_never_cross_an_episode_boundary_unless_configured(tmp_path) -> None:
    from datasets.maze2d.datamodule import Maze2dDataModule, window_starts

    boundaries = np.zeros(20, bool)
    boundaries[[5, 12]] = True  # steps 5 and 12 end their episodes
    starts = window_starts(20, 4, boundaries)
    for s in starts:
        assert not boundaries[s : s + 3].any()  # the last step of a window may be an episode's last
    assert set(starts) == {0, 1, 2, 6, 7, 8, 9, 13, 14, 15, 16} and len(window_starts(20, 4, None)) == 17

    rng = np.random.default_rng(0)
    n = 500
    timeouts = np.zeros(n, bool)
    timeouts[99::100] = True  # episodes of 100 steps, as in D4RL files with real episodes
    path = tmp_path / "episodes.npz"
    np.savez(path, observations=rng.normal(size=(n, 4)), actions=rng.uniform(-1, 1, (n, 2)), timeouts=timeouts)
    dm = Maze2dDataModule("umaze", path=str(path), episode_len=30, val_fraction=0.2)
    dm.setup("fit")
    for windows in (dm.train_set, dm.val_set):
        for s in windows.starts.tolist():
            assert (s // 100) == ((s + 29) // 100), s
    crossing = Maze2dDataModule(
        "umaze", path=str(path), episode_len=30, val_fraction=0.2, cross_episode_boundaries=True
    )
    crossing.setup("fit")
    assert len(crossing.train_set) > len(dm.train_set)

    bad = tmp_path / "bad.npz"
    np.savez(bad, observations=np.full((50, 4), np.nan), actions=np.zeros((50, 2)))
    with pytest.raises(ValueError, match="NaN"):
        Maze2dDataModule("umaze", path=str(bad), episode_len=10).setup("fit")


def test_d4rl_hdf5_files_load(tmp_path) -> None:
    import h5py

    from datasets.maze2d.datamodule import Maze2dDataModule

    rng = np.random.default_rng(0)
    path = tmp_path / "maze2d-umaze-v1.hdf5"
    with h5py.File(path, "w") as f:  # the keys of the D4RL release
        f["observations"] = rng.normal(size=(400, 4)).astype(np.float32)
        f["actions"] = rng.uniform(-1, 1, (400, 2)).astype(np.float32)
        f["rewards"] = np.zeros(400, np.float32)
        f["terminals"] = np.zeros(400, bool)
        f["timeouts"] = np.zeros(400, bool)
    dm = Maze2dDataModule("umaze", path=str(path), episode_len=50, val_fraction=0.25)
    dm.setup("fit")
    assert len(dm.train_set) == 300 - 50 + 1 and dm.train_set.get_batch(torch.tensor([0]))["x"].shape == (1, 50, 6)


def test_minari_pointmaze_datasets_load_in_d4rl_coordinates(tmp_path) -> None:
    import h5py

    from datasets.maze2d.datamodule import load_stream
    from datasets.maze2d.layouts import Layout

    layout = Layout("umaze")
    h, w = layout.shape
    rng = np.random.default_rng(0)
    episodes = []
    root = tmp_path / "D4RL" / "pointmaze" / "umaze-v2"
    (root / "data").mkdir(parents=True)
    with h5py.File(root / "data" / "main_data.hdf5", "w") as f:
        for i, steps in enumerate((30, 25)):
            d_obs = rng.uniform(1, 3, (steps + 1, 4))  # D4RL convention: x along rows, y along columns
            d_act = rng.uniform(-1, 1, (steps, 2))
            episodes.append((d_obs[:-1], d_act))
            pm_obs = np.stack([d_obs[:, 1] + 0.2 + 0.5 - w / 2, h / 2 - 0.5 - (d_obs[:, 0] + 0.2),
                               d_obs[:, 3], -d_obs[:, 2]], axis=1)  # fmt: skip
            group = f.create_group(f"episode_{i}")
            group.create_group("observations")["observation"] = pm_obs
            group["actions"] = np.stack([d_act[:, 1], -d_act[:, 0]], axis=1)
            group["terminations"] = np.zeros(steps, bool)
            group["truncations"] = np.arange(steps) == steps - 1
    data = load_stream(root, layout)  # the dataset folder, as Minari stores it
    assert np.allclose(data["observations"], np.concatenate([o for o, _ in episodes]), atol=1e-5)
    assert np.allclose(data["actions"], np.concatenate([a for _, a in episodes]), atol=1e-6)
    assert np.flatnonzero(data["timeouts"]).tolist() == [29, 54]
    with pytest.raises(ValueError, match="maze layout"):
        load_stream(root / "data" / "main_data.hdf5")
