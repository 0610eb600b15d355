"""The TECO download step: resumable part downloads over HTTP ranges, streamed unpacking, a clear offline message."""

from __future__ import annotations

import io
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from scripts import download_teco


class RangeHandler(BaseHTTPRequestHandler):
    files: dict[str, bytes] = {}
    cut: dict[str, int] = {}  # path -> bytes to send before dropping the connection (once)

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        data = self.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = int(self.headers["Range"].split("=")[1].split("-")[0]) if self.headers.get("Range") else 0
        body = data[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        limit = self.cut.pop(self.path, None)
        self.wfile.write(body if limit is None else body[:limit])
        if limit is not None:
            self.close_connection = True

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), RangeHandler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()


def _tarball() -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for split in ("train", "test"):
            episode = io.BytesIO()
            video = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)  # incompressible
            np.savez(episode, video=video, actions=np.zeros(4, np.int64))
            info = tarfile.TarInfo(f"{split}/0.npz")
            info.size = len(episode.getvalue())
            tar.addfile(info, io.BytesIO(episode.getvalue()))
    return buffer.getvalue()


def test_interrupted_download_resumes_and_unpacks(tmp_path: Path, server, monkeypatch) -> None:
    data = _tarball()
    third = len(data) // 3
    items = download_teco.PARTS["dmlab"]
    RangeHandler.files = {
        f"/{item}": data[i * third : (i + 1) * third if i < 2 else None] for i, item in enumerate(items)
    }
    RangeHandler.cut = {f"/{items[1]}": 700}  # the second part breaks off after 700 bytes
    monkeypatch.setattr(download_teco, "CHUNK", 256)
    args = ["--dataset", "dmlab", "--out", str(tmp_path / "dmlab"),
            "--url-template", f"http://127.0.0.1:{server.server_address[1]}/{{item}}"]  # fmt: skip
    assert download_teco.main(args) == 1  # interrupted: a clear message, the partial file kept
    parts = tmp_path / "dmlab" / "parts"
    assert (parts / items[0]).is_file() and (parts / f"{items[1]}.part").stat().st_size == 700
    assert download_teco.main(args) == 0  # resumes with a range request, completes, unpacks
    assert (parts / items[1]).read_bytes() == data[third : 2 * third]
    assert (tmp_path / "dmlab" / "train" / "0.npz").is_file() and (tmp_path / "dmlab" / "test" / "0.npz").is_file()
    assert download_teco.main(args) == 0  # already done


def test_offline_download_explains_where_to_put_the_files(tmp_path: Path, capsys) -> None:
    code = download_teco.main(["--out", str(tmp_path / "dmlab"), "--url-template", "http://127.0.0.1:9/{item}"])
    assert code == 1
    err = capsys.readouterr().err
    assert "dmlab_dataset_aa" in err and str((tmp_path / "dmlab" / "parts").resolve()) in err
