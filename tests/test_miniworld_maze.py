"""The DMLab-like maze video generator (MiniWorld, headless): the explorer policy, valid and reproducible TECO
episodes, resumption, and the data module that generates on first use."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from datasets.video.miniworld_maze import FORWARD, LEFT, RIGHT, Explorer, generate_maze_episodes
from datasets.video.teco import MiniworldMazeDataModule, read_episode


def test_explorer_walks_forward_and_turns_after_a_wall() -> None:
    straight = Explorer(np.random.default_rng(0), turn_prob=0.0)
    assert [straight.act(blocked=False) for _ in range(20)] == [FORWARD] * 20
    bumped = Explorer(np.random.default_rng(1), turn_prob=0.0)
    actions = [bumped.act(blocked=True)] + [bumped.act(blocked=False) for _ in range(12)]
    turns = actions[: actions.index(FORWARD)]
    assert 3 <= len(turns) <= 9 and len(set(turns)) == 1 and turns[0] in (LEFT, RIGHT)
    assert set(actions[len(turns) :]) == {FORWARD}
    wandering = Explorer(np.random.default_rng(2), turn_prob=0.1)
    acts = np.array([wandering.act(blocked=False) for _ in range(2000)])
    assert 0.3 < (acts == FORWARD).mean() < 0.9 and (acts == LEFT).any() and (acts == RIGHT).any()


def test_generator_writes_valid_reproducible_episodes_and_resumes(tmp_path: Path) -> None:
    paths = generate_maze_episodes(tmp_path / "a", num=2, frames=24, seed=3, size=16)
    videos = [read_episode(p) for p in paths]
    for path, video in zip(paths, videos, strict=True):
        assert video.shape == (24, 16, 16, 3) and video.dtype == np.uint8
        with np.load(path) as data:
            assert data["actions"].shape == (24,) and set(data["actions"]) <= {LEFT, RIGHT, FORWARD}
        assert np.abs(np.diff(video.astype(int), axis=0)).sum() > 0  # the camera moves
    assert not np.array_equal(videos[0], videos[1])  # two different mazes / walks
    paths[1].unlink()  # an interrupted run: the second episode is missing
    again = generate_maze_episodes(tmp_path / "a", num=2, frames=24, seed=3, size=16)
    assert np.array_equal(read_episode(again[1]), videos[1])
    assert not list((tmp_path / "a").glob("*.partial.npz"))
    other = generate_maze_episodes(tmp_path / "b", num=1, frames=24, seed=4, size=16)
    assert not np.array_equal(read_episode(other[0]), videos[0])


def test_data_module_generates_on_first_use_and_serves_windows(tmp_path: Path) -> None:
    dm = MiniworldMazeDataModule(data_dir=str(tmp_path), num_train=2, num_test=1, episode_frames=20, size=16,
                                 n_frames=8, resolution=8, batch_size=4)  # fmt: skip
    dm.setup("fit")
    assert dm.frame_shape == (3, 8, 8)
    assert len(dm.train_set) == 2 * (20 - 8 + 1) and len(dm.val_set) == 2
    x = next(iter(dm.train_dataloader()))["x"]
    assert x.shape == (4, 8, 3, 8, 8) and 0.0 <= x.min() and x.max() <= 1.0
    with pytest.raises(ValueError, match="at least 2 frames"):
        generate_maze_episodes(tmp_path / "bad", num=1, frames=1)


def test_generation_script_writes_maze_episodes(tmp_path: Path) -> None:
    from scripts.generate_video_data import main

    out = main(["--source", "miniworld", "--out", str(tmp_path), "--num-train", "1", "--num-test", "1",
                "--frames", "5", "--size", "16"])  # fmt: skip
    for split in ("train", "test"):
        (episode,) = (out / split).glob("*.npz")
        assert read_episode(episode).shape == (5, 16, 16, 3)
