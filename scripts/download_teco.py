"""Download and unpack the TECO video datasets (DMLab, Minecraft) on a machine with internet:

    python -m scripts.download_teco --dataset dmlab --out data/dmlab

The datasets are split tarballs on the Internet Archive (items ``dmlab_dataset_{aa,ab,ac}`` and
``minecraft_marsh_dataset_{aa..ak}``). Each part is streamed to ``<out>/parts/<name>.part`` in 1 MB chunks and
renamed when complete; a re-run resumes an interrupted part with an HTTP range request and skips complete ones.
The parts are then read one after another as a single stream into ``tarfile`` (nothing is held in memory), and
``<out>/.extracted`` marks success. ``--url-template`` overrides where a part is fetched from (the default follows
the item names; check them against the TECO README if a download fails). Without network the script says which
files to fetch and where to put them; it then only unpacks.
"""

from __future__ import annotations

import argparse
import http.client
import io
import os
import sys
import tarfile
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

PARTS = {
    "dmlab": [f"dmlab_dataset_a{c}" for c in "abc"],
    "minecraft": [f"minecraft_marsh_dataset_a{c}" for c in "abcdefghijk"],
}
URL_TEMPLATE = "https://archive.org/download/{item}/{item}"
CHUNK = 1 << 20


def download(url: str, dest: Path, opener: Callable = urllib.request.urlopen) -> Path:
    """Fetch ``url`` into ``dest``, resuming ``dest.part`` if an earlier run stopped; returns ``dest``."""
    if dest.is_file():
        return dest
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with opener(request, timeout=60) as response:
        if have and getattr(response, "status", 200) != 206:  # the server ignored the range: start again
            have = 0
        length = response.headers.get("Content-Length")
        expected = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as f:
            while chunk := response.read(CHUNK):
                f.write(chunk)
    size = part.stat().st_size
    if expected is not None and size < expected:
        raise OSError(f"the download of {url} stopped at {size} of {expected} bytes; run again to resume")
    os.replace(part, dest)
    return dest


class _Concatenated(io.RawIOBase):
    """The parts read back to back as one stream."""

    def __init__(self, paths: Iterable[Path]) -> None:
        self.files = [open(p, "rb") for p in paths]  # noqa: SIM115 - closed in close()
        self.index = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while self.index < len(self.files):
            n = self.files[self.index].readinto(buffer)
            if n:
                return n
            self.index += 1
        return 0

    def close(self) -> None:
        for f in self.files:
            f.close()
        super().close()


def extract(parts: list[Path], out: Path) -> None:
    with _Concatenated(parts) as raw, tarfile.open(fileobj=io.BufferedReader(raw), mode="r|*") as tar:
        tar.extractall(out, filter="data")
    (out / ".extracted").write_text("\n".join(p.name for p in parts))


def main(argv: list[str] | None = None, opener: Callable = urllib.request.urlopen) -> int:
    parser = argparse.ArgumentParser(description="Download and unpack a TECO video dataset")
    parser.add_argument("--dataset", choices=sorted(PARTS), default="dmlab")
    parser.add_argument("--out", default=None, help="default: data/<dataset>")
    parser.add_argument("--url-template", default=URL_TEMPLATE, help="with {item}, e.g. a mirror")
    args = parser.parse_args(argv)
    out = Path(args.out or f"data/{args.dataset}")
    if (out / ".extracted").is_file():
        print(f"{out} is ready (train/ and test/ episodes)")
        return 0
    folder = out / "parts"
    folder.mkdir(parents=True, exist_ok=True)
    parts = []
    for item in PARTS[args.dataset]:
        url = args.url_template.format(item=item)
        try:
            parts.append(download(url, folder / item, opener))
            print(f"{item}: complete")
        except (urllib.error.URLError, http.client.HTTPException, OSError, TimeoutError) as err:
            missing = [i for i in PARTS[args.dataset] if not (folder / i).is_file()]
            print(
                f"could not download {url} ({err}). On a machine with internet, fetch the parts {missing} "
                f"(Internet Archive items of the same names) into {folder.resolve()} and run this command again: "
                f"it resumes partial downloads and unpacks the complete parts into {out.resolve()}/train and /test. "
                f"Or unpack the dataset yourself there and pass dataset.path={out}.",
                file=sys.stderr,
            )
            return 1
    extract(parts, out)
    print(f"unpacked {len(parts)} parts into {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
