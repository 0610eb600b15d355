"""LightningDataModules for each domain."""

import os

# MuJoCo reads MUJOCO_GL when it is first imported, by whichever domain comes first (the maze2d environment, the
# robot table): headless EGL rendering unless the user chose a backend (e.g. MUJOCO_GL=osmesa).
os.environ.setdefault("MUJOCO_GL", "egl")
