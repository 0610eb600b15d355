"""Compare long video rollouts of several runs: the per-bin stability measure as a table and a plot.

    python -m scripts.plot_stability --run DF=outputs/video_maze_cpu_seed0 --run TF=outputs/video_maze_cpu_tf_seed0 \
        --bin-frames 16 --train-frames 16 --out docs/figures/video_maze_stability.png

Reads ``<run>/metrics.json`` (``val/stability/w1_binNN``: Wasserstein-1 distance between the pixel intensities of
the generated frames in bin NN and those of real frames, written by the video evaluator) and prints a markdown
table (one row per run, one column per bin, and the drift = last / first bin); the plot has one line per run, with
the training window marked.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

BIN_KEY = re.compile(r"^(?:val|test)/stability/w1_bin(\d+)$")


def read_bins(run: Path) -> list[float]:
    """The per-bin W1 values of a run, in bin order."""
    path = run / "metrics.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist; evaluate the run first (tasks=[validation] load=...)")
    metrics = json.loads(path.read_text())
    found = {int(m.group(1)): float(v) for k, v in metrics.items() if (m := BIN_KEY.match(k))}
    if not found:
        raise ValueError(f"{path} has no stability/w1_bin* metrics; is it a video run?")
    return [found[i] for i in sorted(found)]


def table(rows: dict[str, list[float]], bin_frames: int) -> str:
    width = max(len(v) for v in rows.values())
    head = [f"{i * bin_frames}–{(i + 1) * bin_frames}" for i in range(width)]
    lines = ["| run | " + " | ".join(head) + " | drift |", "|---" * (width + 2) + "|"]
    for name, bins in rows.items():
        cells = [f"{b:.4f}" for b in bins] + [""] * (width - len(bins))
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {bins[-1] / max(bins[0], 1e-8):.2f} |")
    return "\n".join(lines)


def plot(rows: dict[str, list[float]], bin_frames: int, train_frames: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, bins in rows.items():
        centres = [(i + 0.5) * bin_frames for i in range(len(bins))]
        ax.plot(centres, bins, marker="o", label=name)
    ax.axvspan(0, train_frames, color="0.9", label="training window")
    ax.set_xlabel("generated frame")
    ax.set_ylabel("W1(pixel intensities) to real frames")
    ax.set_ylim(bottom=0)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description="per-bin stability of video rollouts")
    parser.add_argument("--run", action="append", required=True, help="LABEL=RUN_DIR (repeat)")
    parser.add_argument("--bin-frames", type=int, default=16)
    parser.add_argument("--train-frames", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="PNG path for the plot")
    args = parser.parse_args(argv)
    rows = {}
    for item in args.run:
        label, sep, run = item.partition("=")
        if not sep:
            parser.error(f"--run takes LABEL=RUN_DIR, got {item!r}")
        rows[label] = read_bins(Path(run))
    text = table(rows, args.bin_frames)
    print(text)
    if args.out is not None:
        plot(rows, args.bin_frames, args.train_frames, args.out)
    return text


if __name__ == "__main__":
    main()
