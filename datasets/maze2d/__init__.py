"""D4RL maze2d, rebuilt on the ``mujoco`` package (no mujoco-py): layouts, environment, waypoint controller and
offline dataset generation (docs/data.md §1)."""
