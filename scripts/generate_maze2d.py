"""Generate the D4RL-equivalent maze2d datasets locally (docs/data.md §1.5) and cache them as .npz:

    python -m scripts.generate_maze2d --maze umaze            # 1 M steps, ~35 s
    python -m scripts.generate_maze2d --maze large --noisy    # 4 M steps with N(0, 0.5²) action noise

Output: ``<out>/maze2d-<maze>[-noisy]-s<seed>.npz`` with ``observations`` (N, 4), ``actions`` (N, 2), ``rewards``
(relabelled to the maze's G cell), ``terminals``, ``timeouts`` and ``infos/goal``. An existing complete file is
reused; files are written atomically, so an interrupted run leaves no half file and a re-run starts afresh.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from datasets.maze2d.generate import cached_stream
from datasets.maze2d.layouts import DATASET_STEPS, LAYOUTS
from utils.paths import resolve_path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Generate D4RL-equivalent maze2d data with the waypoint controller")
    parser.add_argument("--maze", choices=sorted(LAYOUTS), default="umaze")
    parser.add_argument("--steps", type=int, default=None, help="default: D4RL's size (1 M / 2 M / 4 M)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noisy", action="store_true", help="add N(0, 0.5²) noise to the controller's actions")
    parser.add_argument("--out", default="data/maze2d")
    args = parser.parse_args(argv)
    steps = args.steps or DATASET_STEPS[args.maze]
    name = f"maze2d-{args.maze}{'-noisy' if args.noisy else ''}-s{args.seed}.npz"
    t0 = time.perf_counter()
    path = cached_stream(resolve_path(args.out) / name, args.maze, steps, args.seed, args.noisy)
    with np.load(path) as data:
        goals = data["infos/goal"]
        switches = int((np.abs(np.diff(goals, axis=0)).sum(axis=1) > 0).sum())
        print(
            f"{path}: {len(data['observations'])} steps, {switches} targets reached or timed out, "
            f"reward rate {float(data['rewards'].mean()):.3f}, {time.perf_counter() - t0:.1f} s"
        )
    return path


if __name__ == "__main__":
    main()
