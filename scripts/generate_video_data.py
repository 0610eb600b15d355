"""Generate offline video data in the TECO layout (``<out>/train/*.npz``, ``<out>/test/*.npz``):

    python -m scripts.generate_video_data --num-train 2000 --num-test 100 --frames 40

Moving MNIST from the real digits in ``paths.shared_data`` (``t10k-images-idx3-ubyte.gz``). Episodes are written
one by one, atomically; a re-run skips the complete ones, so an interrupted generation resumes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from datasets.video.moving_mnist import generate_episodes
from utils.paths import resolve_path


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description="Moving MNIST episodes in the TECO layout")
    parser.add_argument("--shared-data", default="../shared/data")
    parser.add_argument("--out", default="data/moving_mnist")
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--num-test", type=int, default=100)
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    mnist = resolve_path(args.shared_data) / "t10k-images-idx3-ubyte.gz"
    out = resolve_path(args.out)
    t0 = time.perf_counter()
    for split, num, seed in (("train", args.num_train, args.seed), ("test", args.num_test, args.seed + 1)):
        generate_episodes(mnist, out / split, num, args.frames, seed, args.size)
    print(f"{out}: {args.num_train} train + {args.num_test} test episodes of {args.frames} frames, "
          f"{time.perf_counter() - t0:.1f} s")  # fmt: skip
    return out


if __name__ == "__main__":
    main()
