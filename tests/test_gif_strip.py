"""scripts.gif_strip: the frames it picks, where it puts them, and its errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from scripts.gif_strip import main, parse_frames, strip

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255)]


def _gif(path: Path) -> Path:
    frames = [Image.new("RGB", (6, 4), c) for c in COLOURS]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=50, loop=0)
    return path


def test_parse_frames_reads_indices_ranges_and_negative_indices() -> None:
    assert parse_frames("0:5:2", 5) == [0, 2, 4]
    assert parse_frames("4,1, -1", 5) == [4, 1, 4]
    assert parse_frames("3:", 5) == [3, 4]
    with pytest.raises(ValueError, match="outside the gif's 5 frames"):
        parse_frames("5", 5)
    with pytest.raises(ValueError, match="selects no frame"):
        parse_frames("4:2", 5)


def test_strip_places_the_chosen_frames_left_to_right(tmp_path: Path) -> None:
    image = strip(_gif(tmp_path / "a.gif"), "4,0:3:2", gap=1)
    assert image.size == (3 * 6 + 2, 4)
    # frame 4 (cyan), then frames 0 (red) and 2 (blue), one white column apart
    assert image.getpixel((2, 1)) == COLOURS[4]
    assert image.getpixel((6, 1)) == (255, 255, 255)
    assert image.getpixel((9, 1)) == COLOURS[0]
    assert image.getpixel((16, 1)) == COLOURS[2]


def test_main_crops_and_writes_the_png(tmp_path: Path) -> None:
    out = main(
        [str(_gif(tmp_path / "a.gif")), "--frames", "1,3", "--crop", "0,0,3,2", "--out", str(tmp_path / "s.png")]
    )
    with Image.open(out) as image:
        assert image.size == (3 + 2 + 3, 2)
        assert image.convert("RGB").getpixel((0, 0)) == COLOURS[1]
        assert image.convert("RGB").getpixel((7, 1)) == COLOURS[3]


def test_a_missing_gif_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="evaluate a run first"):
        strip(tmp_path / "none.gif", "0")
