"""Generate offline video data in the TECO layout (``<out>/train/*.npz``, ``<out>/test/*.npz``):

    python -m scripts.generate_video_data --source moving_mnist --num-train 2000 --num-test 100 --frames 40
    python -m scripts.generate_video_data --source miniworld --num-train 200 --num-test 16 --frames 300

``moving_mnist``: Moving MNIST from the real digits in ``paths.shared_data`` (``t10k-images-idx3-ubyte.gz``).
``miniworld``: DMLab-like first-person maze videos (MiniWorld, headless; ``pip install -e '.[videogen]'``).
Episodes are written one by one, atomically; a re-run skips the complete ones, so an interrupted generation
resumes. The experiment presets generate the same data on first use (``dataset=moving_mnist`` /
``dataset=miniworld_maze``) into ``paths.data_cache``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from datasets.video.teco import MiniworldMazeDataModule, MovingMnistDataModule
from utils.paths import resolve_path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="offline video episodes in the TECO layout")
    parser.add_argument("--source", choices=["moving_mnist", "miniworld"], default="moving_mnist")
    parser.add_argument("--shared-data", default="../shared/data", help="moving_mnist: folder with the MNIST digits")
    parser.add_argument("--out", default=None, help="default: data/<source>")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = resolve_path(args.out or f"data/{args.source}")
    t0 = time.perf_counter()
    if args.source == "moving_mnist":
        from datasets.video.moving_mnist import generate_episodes

        mnist = resolve_path(args.shared_data) / "t10k-images-idx3-ubyte.gz"
        offset = MovingMnistDataModule.test_seed_offset  # the same episodes as dataset=moving_mnist
        for split, num, seed in (("train", args.num_train, args.seed), ("test", args.num_test, args.seed + offset)):
            generate_episodes(mnist, out / split, num, args.frames, seed, args.size)
    else:
        from datasets.video.miniworld_maze import generate_maze_episodes

        offset = MiniworldMazeDataModule.test_seed_offset
        for split, num, seed in (("train", args.num_train, args.seed), ("test", args.num_test, args.seed + offset)):
            generate_maze_episodes(out / split, num, args.frames, seed, args.size, log_every=50)
    print(f"{out}: {args.num_train} train + {args.num_test} test {args.source} episodes of {args.frames} frames, "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
