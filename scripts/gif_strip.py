"""Chosen frames of a gif side by side, as one PNG strip for the docs.

    python -m scripts.gif_strip <run>/media/robot_val_dream.gif --frames 0:21:4 \
        --out docs/figures/robot_swap_dream.png

``--frames`` takes indices and Python-style ranges, comma-separated (``0,5,10`` or ``0:21:4`` or ``0:8,20``);
negative indices count from the end. ``--crop`` keeps a box ``left,top,right,bottom`` of every frame (in pixels of the
gif), e.g. to drop a caption bar. A missing file, an index past the end or an empty selection is an error that names
the argument.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image


def parse_frames(spec: str, n_frames: int) -> list[int]:
    """The frame indices that ``spec`` selects from a gif of ``n_frames`` frames, in the order given."""
    picked: list[int] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if ":" in part:
            bounds = [int(x) if x else None for x in part.split(":")]
            if len(bounds) > 3:
                raise ValueError(f"--frames: {part!r} is not a range start:stop[:step]")
            picked.extend(range(n_frames)[slice(*bounds)])
        else:
            index = int(part)
            if not -n_frames <= index < n_frames:
                raise ValueError(f"--frames: frame {index} is outside the gif's {n_frames} frames (0..{n_frames - 1})")
            picked.append(index % n_frames)
    if not picked:
        raise ValueError(f"--frames {spec!r} selects no frame of the gif's {n_frames}")
    return picked


def strip(gif: Path, frames: str, crop: tuple[int, int, int, int] | None = None, gap: int = 2) -> Image.Image:
    """The selected frames of ``gif``, left to right, ``gap`` white pixels apart."""
    if not gif.is_file():
        raise FileNotFoundError(f"{gif} does not exist; evaluate a run first (it writes media/*.gif)")
    with Image.open(gif) as im:
        chosen = []
        for index in parse_frames(frames, im.n_frames):
            im.seek(index)
            frame = im.convert("RGB")
            chosen.append(frame.crop(crop) if crop else frame.copy())
    width, height = chosen[0].size
    out = Image.new("RGB", (len(chosen) * width + (len(chosen) - 1) * gap, height), "white")
    for k, frame in enumerate(chosen):
        out.paste(frame, (k * (width + gap), 0))
    return out


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gif", type=Path)
    parser.add_argument("--frames", required=True, help="indices and ranges, e.g. 0:21:4 or 0,10,20")
    parser.add_argument("--crop", default=None, help="left,top,right,bottom in pixels of the gif")
    parser.add_argument("--gap", type=int, default=2, help="white pixels between frames")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    crop = None
    if args.crop:
        box = tuple(int(x) for x in args.crop.split(","))
        if len(box) != 4:
            parser.error("--crop takes four integers: left,top,right,bottom")
        crop = box
    image = strip(args.gif, args.frames, crop, args.gap)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    image.save(args.out)
    print(f"wrote {args.out} ({image.size[0]}×{image.size[1]})")
    return args.out


if __name__ == "__main__":
    main()
