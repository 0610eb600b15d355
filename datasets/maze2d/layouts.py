"""D4RL maze2d layouts (docs/data.md §1.2): ``#`` wall, ``O`` free, ``G`` goal; row r, column c."""

from __future__ import annotations

import numpy as np

LAYOUTS = {
    "umaze": ("#####", "#GOO#", "###O#", "#OOO#", "#####"),
    "medium": ("########", "#OO##OO#", "#OO#OOO#", "##OOO###", "#OO#OOO#", "#O#OO#O#", "#OOO#OG#", "########"),
    "large": (
        "############",
        "#OOOO#OOOOO#",
        "#O##O#O#O#O#",
        "#OOOOOO#OOO#",
        "#O####O###O#",
        "#OO#O#OOOOO#",
        "##O#O#O#O###",
        "#OO#OOO#OGO#",
        "############",
    ),
}
EPISODE_STEPS = {"umaze": 300, "medium": 600, "large": 800}  # max_episode_steps
DATASET_STEPS = {"umaze": 1_000_000, "medium": 2_000_000, "large": 4_000_000}
REF_SCORES = {"umaze": (23.85, 161.86), "medium": (13.13, 277.39), "large": (6.7, 273.99)}  # (ref_min, ref_max)


class Layout:
    """A maze grid with its wall, free and goal cells (cell (r, c) has its reset point at qpos (r, c))."""

    def __init__(self, name: str) -> None:
        if name not in LAYOUTS:
            raise ValueError(f"unknown maze {name!r}; choose one of {sorted(LAYOUTS)}")
        self.name = name
        self.rows = LAYOUTS[name]
        self.grid = np.array([list(row) for row in self.rows])
        self.walls = np.argwhere(self.grid == "#")
        self.free = np.argwhere(self.grid != "#")  # free and goal cells: reset and target locations
        (self.goal,) = np.argwhere(self.grid == "G")

    @property
    def shape(self) -> tuple[int, int]:
        return self.grid.shape

    def is_wall(self, r: int, c: int) -> bool:
        h, w = self.grid.shape
        return not (0 <= r < h and 0 <= c < w) or self.grid[r, c] == "#"

    def normalized_score(self, ret: float) -> float:
        """D4RL normalised score ``100·(R − ref_min)/(ref_max − ref_min)``."""
        lo, hi = REF_SCORES[self.name]
        return 100.0 * (ret - lo) / (hi - lo)
