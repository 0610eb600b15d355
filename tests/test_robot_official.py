"""The official robot layout as training data: action planes, token cutting, the datamodule (tiny files)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from datasets.robot.official_datamodule import OfficialRobotDataModule, episode_tokens
from datasets.robot.official_tokens import (
    ABSOLUTE_STATS,
    RELATIVE_STATS,
    actions_to_quantities,
    matrix_to_quat,
    pack_action_planes,
    quat_to_matrix,
    unpack_action_planes,
)


def random_quats(n: int, rng: np.random.Generator) -> np.ndarray:
    q = rng.normal(size=(n, 4))
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def rotate_by_quaternion(q: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``q v q*`` with the Hamilton product written out (q = (x, y, z, w)): the definition of the rotation."""

    def mul(a, b):
        ax, ay, az, aw = a
        bx, by, bz, bw = b
        return np.array([aw * bx + ax * bw + ay * bz - az * by, aw * by - ax * bz + ay * bw + az * bx,
                         aw * bz + ax * by - ay * bx + az * bw, aw * bw - ax * bx - ay * by - az * bz])  # fmt: skip

    conj = np.array([-q[0], -q[1], -q[2], q[3]])
    return mul(mul(q, np.append(v, 0.0)), conj)[:3]


def test_quaternion_matrices_rotate_as_the_quaternion_does_and_invert() -> None:
    rng = np.random.default_rng(0)
    quats = random_quats(20, rng)
    mats = quat_to_matrix(quats)
    for q, m in zip(quats, mats):
        v = rng.normal(size=3)
        np.testing.assert_allclose(m @ v, rotate_by_quaternion(q, v), atol=1e-12)
    back = matrix_to_quat(mats)
    np.testing.assert_allclose(np.abs((back * quats).sum(1)), 1.0, atol=1e-10)  # the same rotation (q or −q)


def test_action_planes_follow_the_official_grid_and_round_trip() -> None:
    rng = np.random.default_rng(1)
    pos = ABSOLUTE_STATS["pos"][0] + 0.1 * rng.normal(size=(5, 3))
    quats = random_quats(5, rng)
    grasp = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    planes = pack_action_planes(pos, quat_to_matrix(quats), grasp, 32, ABSOLUTE_STATS)
    assert planes.shape == (5, 32, 32) and planes.dtype == np.float32
    # each of the 16 cells fills an 8×8 block; read the 4×4 grid back and compare with the layout cell by cell
    grid = planes[:, ::8, ::8]
    np.testing.assert_array_equal(planes[:, :8, :8], np.broadcast_to(grid[:, :1, :1], (5, 8, 8)))
    p = (pos - ABSOLUTE_STATS["pos"][0]) / ABSOLUTE_STATS["pos"][1]
    r = (quat_to_matrix(quats) - quat_to_matrix(ABSOLUTE_STATS["quat"])) / 0.5
    np.testing.assert_allclose(grid[:, 1:, 0], p, rtol=1e-5, atol=1e-5)  # position down column 0
    np.testing.assert_allclose(grid[:, 1, 1:3], p[:, :2], rtol=1e-5, atol=1e-5)  # and again in the middle
    np.testing.assert_allclose(grid[:, 2, 1], p[:, 2], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grid[:, 0, :], np.c_[r[:, 0, :], r[:, 1, 0]], atol=1e-5)  # R00 R01 R02 R10
    np.testing.assert_allclose(grid[:, 1:3, 3], r[:, 1, 1:], atol=1e-5)
    np.testing.assert_allclose(grid[:, 3, 1:], r[:, 2, :], atol=1e-5)
    np.testing.assert_allclose(grid[:, 2, 2], (grasp - 0.5) / 0.5, atol=1e-6)
    got_pos, got_quat, got_grasp = unpack_action_planes(planes, ABSOLUTE_STATS)
    np.testing.assert_allclose(got_pos, pos, atol=1e-5)
    np.testing.assert_allclose(np.abs((got_quat * quats).sum(1)), 1.0, atol=1e-5)
    np.testing.assert_array_equal(got_grasp, grasp > 0.5)
    # a noisy rotation block is projected back onto a rotation
    noisy = planes + 0.05 * rng.normal(size=planes.shape).astype(np.float32)
    _, q, _ = unpack_action_planes(noisy, ABSOLUTE_STATS)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-9)
    with pytest.raises(ValueError, match="dataset.resolution"):
        pack_action_planes(pos, quat_to_matrix(quats), grasp, 30, ABSOLUTE_STATS)


def test_relative_actions_are_the_target_in_the_measured_frame() -> None:
    rng = np.random.default_rng(2)
    target_q, measured_q = random_quats(4, rng), random_quats(4, rng)
    target_p, measured_p = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    actions = np.c_[target_p, target_q, np.ones(4)]
    pose = np.c_[measured_p, measured_q]
    pos, rot, grasp = actions_to_quantities(actions, pose, relative=True)
    np.testing.assert_allclose(pos, target_p - measured_p, atol=1e-12)
    np.testing.assert_allclose(quat_to_matrix(measured_q) @ rot, quat_to_matrix(target_q), atol=1e-12)
    same, _, _ = actions_to_quantities(np.c_[measured_p, measured_q, np.ones(4)], pose, relative=True)
    np.testing.assert_allclose(same, 0.0, atol=1e-12)
    planes = pack_action_planes(pos, rot, grasp, 16, RELATIVE_STATS)
    back_p, _, _ = unpack_action_planes(planes, RELATIVE_STATS)
    np.testing.assert_allclose(back_p, pos, atol=1e-5)


def test_tokens_are_cut_as_the_official_loader_cuts_them() -> None:
    steps, stack, n_frames, size = 20, 3, 5, 4
    frames = np.arange(steps, dtype=np.float32)[:, None, None, None] * np.ones((1, 2, size, size), np.float32)
    planes = 100 + np.arange(steps, dtype=np.float32)[:, None, None] * np.ones((1, size, size), np.float32)
    pad = np.full((stack, size, size), -7.0, dtype=np.float32)
    for drop in range(stack):
        tokens, nonterminal = episode_tokens(frames, planes, drop, stack, n_frames, pad)
        count = min((steps - drop - 1) // stack, n_frames)  # the last step is dropped too
        assert tokens.shape == (n_frames, 2 + stack, size, size) and nonterminal.tolist() == [True] * count + [
            False
        ] * (n_frames - count)
        for k in range(count):
            assert tokens[k, 0, 0, 0] == drop + k * stack  # the frame at step k·S after the drop
            chunk = tokens[k, 2:, 0, 0]
            expected = [-7.0] * stack if k == 0 else [100 + drop + (k - 1) * stack + j for j in range(stack)]
            assert chunk.tolist() == expected  # the S actions that led to that frame
        assert not tokens[count:].any()
    with pytest.raises(ValueError, match="dataset.action_stack"):
        episode_tokens(frames[:3], planes[:3], 0, 5, n_frames, np.zeros((5, size, size), np.float32))


def write_official_episodes(root: Path, count: int, steps: int, rng: np.random.Generator) -> None:
    """``count`` episode folders of two flat-colour camera videos and a trajectory pickle (the official layout)."""
    import imageio.v3 as iio

    for e in range(count):
        folder = root / f"episode_{e:03d}"
        folder.mkdir(parents=True)
        for c, colour in enumerate([(200, 30, 30), (30, 30, 200)]):
            frames = np.tile(np.array(colour, dtype=np.uint8), (steps, 48, 64, 1))
            iio.imwrite(folder / f"cam_{c}.mp4", frames, fps=10, plugin="FFMPEG")
        quat = random_quats(steps, rng)
        traj = {
            "ee_pos": list(rng.normal(0.5, 0.1, size=(steps, 3))),
            "ee_quat": list(quat),
            "ee_pos_target": list(rng.normal(0.5, 0.1, size=(steps, 3))),
            "ee_quat_target": list(quat),
            "grasp": [bool(t % 4 < 2) for t in range(steps)],
        }
        (folder / "traj.pkl").write_bytes(pickle.dumps(traj))


def test_datamodule_reads_caches_and_serves_official_tokens(tmp_path: Path) -> None:
    root = tmp_path / "robot"
    write_official_episodes(root, 3, 20, np.random.default_rng(3))
    dm = OfficialRobotDataModule(str(root), cache_dir=str(tmp_path / "cache"), resolution=16, action_stack=3,
                                 n_frames=5, batch_size=4)  # fmt: skip
    assert dm.model_kwargs() == {"frame_shape": [9, 16, 16], "cond_dim": 0, "obs_dim": 0}
    assert not (tmp_path / "cache").exists()  # nothing decoded before prepare_data
    dm.prepare_data()
    cached = sorted(p.name for p in dm.cache.glob("*.npz"))
    assert cached == ["episode_000.npz", "episode_001.npz", "episode_002.npz"]
    for video in root.glob("*/*.mp4"):
        video.unlink()  # from now on only the cache can serve the episodes
    dm.setup("fit")
    assert len(dm.train_set) == 2 * 3 and len(dm.val_set) == 1  # episode 0 validates (5 % of 3, at least one)
    batch = dm.train_set.get_batch(torch.tensor([0, 5]))
    assert batch["x"].shape == (2, 5, 9, 16, 16) and batch["nonterminal"].dtype == torch.bool
    assert batch["nonterminal"][0].tolist() == [True] * 5  # (20 − 0 − 1) // 3 = 6 tokens, capped at 5
    assert batch["nonterminal"][1].sum() == (20 - 2 - 1) // 3  # item 5: episode 1 + 1, drop 2
    red = batch["x"][0, :, 0].mean().item()
    assert abs(red - 200 / 255) < 0.05  # camera 1's red channel, in [0, 1] before normalisation
    assert torch.all(batch["x"][:, 0, 6:] == 0)  # token 0's action slot: the mean, zeros once standardised
    mean, std = dm.normalization_stats()
    assert mean == [0.5] * 6 + [0.0] * 3 and std == [0.5] * 6 + [1.0] * 3
    with pytest.raises(FileNotFoundError, match="dataset.path"):
        OfficialRobotDataModule(str(tmp_path / "absent")).model_kwargs()
    with pytest.raises(ValueError, match="dataset.action_pad"):
        OfficialRobotDataModule(str(root), action_pad="median")
