"""Downloads against a local HTTP server started by the test: never the internet."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import http.client
import http.server
import io
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from topgrad_examples import data, download, files, idx, progress, train
from topgrad_examples.download import DownloadError, fetch, fetch_from_mirrors

PAYLOAD = b"topgrad" * 5000


class Handler(http.server.BaseHTTPRequestHandler):
    """/good/<f> serves the file, /corrupt/<f> other bytes, /drop/<f> half the bytes then hangs up,
    /nolength/<f> the file without a Content-Length (its end is where the connection closes),
    /cut/<f> half of it so (HTTP/1.0, a transfer cut short that only the content can tell)."""

    files: ClassVar[dict[str, bytes]] = {}

    def do_GET(self) -> None:
        _, mode, name = self.path.split("/", 2)
        body = self.files.get(name)
        if body is None or mode not in ("good", "corrupt", "drop", "nolength", "cut"):
            self.send_error(404)
            return
        if mode == "corrupt":
            body = body[:-1] + bytes([body[-1] ^ 0xFF])
        self.send_response(200)
        if mode not in ("nolength", "cut"):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if mode in ("drop", "cut") else body)
        if mode == "drop":
            self.wfile.flush()
            self.close_connection = True

    def log_message(self, *args: object) -> None:  # keep the test output quiet
        pass


@pytest.fixture
def server() -> Iterator[str]:
    Handler.files = {"file.bin": PAYLOAD}
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def sha256(b: bytes) -> str:
    return "sha256:" + hashlib.sha256(b).hexdigest()


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_good_file_is_written_and_checked(server: str, tmp_path: Path) -> None:
    dest = fetch(f"{server}/good/file.bin", tmp_path / "out" / "file.bin", sha256(PAYLOAD))
    assert dest.read_bytes() == PAYLOAD
    assert leftovers(tmp_path / "out") == ["file.bin"]  # the temporary file was moved, not copied


def test_a_download_removes_the_part_file_a_killed_download_of_it_left(server: str, tmp_path: Path) -> None:
    """A download killed by SIGKILL left `.file.bin.XXXXXXXX.part`: the next download of the file
    removes it once an hour old (a recent one may be another run's download under way)."""
    folder = tmp_path / "out"
    folder.mkdir()
    old = time.time() - 2 * 3600  # two hours ago
    for name in (".file.bin.0123abcd.part", ".file.bin.89abcdef.part"):
        (folder / name).write_bytes(PAYLOAD[:100])
    os.utime(folder / ".file.bin.0123abcd.part", (old, old))
    fetch(f"{server}/good/file.bin", folder / "file.bin", sha256(PAYLOAD))
    assert leftovers(folder) == [".file.bin.89abcdef.part", "file.bin"]


def test_md5_checksums_work_too(server: str, tmp_path: Path) -> None:
    fetch(f"{server}/good/file.bin", tmp_path / "f", "md5:" + hashlib.md5(PAYLOAD).hexdigest())
    assert (tmp_path / "f").read_bytes() == PAYLOAD


def test_checksum_mismatch_leaves_nothing(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="sha256 mismatch"):
        fetch(f"{server}/corrupt/file.bin", tmp_path / "file.bin", sha256(PAYLOAD))
    assert leftovers(tmp_path) == []


def test_dropped_connection_leaves_nothing(server: str, tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"file\.bin"):
        fetch(f"{server}/drop/file.bin", tmp_path / "file.bin", sha256(PAYLOAD), timeout=5)
    assert leftovers(tmp_path) == []


def test_mirrors_are_tried_in_order(server: str, tmp_path: Path) -> None:
    mirrors = [f"{server}/drop", f"{server}/corrupt/", f"{server}/missing", f"{server}/good"]
    dest = fetch_from_mirrors(mirrors, "file.bin", tmp_path / "file.bin", sha256(PAYLOAD), timeout=5)
    assert dest.read_bytes() == PAYLOAD


def test_all_mirrors_failing_lists_each(server: str, tmp_path: Path) -> None:
    mirrors = [f"{server}/drop", f"{server}/corrupt", f"{server}/missing"]
    with pytest.raises(DownloadError) as info:
        fetch_from_mirrors(mirrors, "file.bin", tmp_path / "file.bin", sha256(PAYLOAD), timeout=5)
    message = str(info.value)
    assert "/drop/file.bin" in message and "sha256 mismatch" in message and "404" in message
    assert leftovers(tmp_path) == []


def test_a_failed_download_removes_the_folders_it_made(server: str, tmp_path: Path) -> None:
    """An offline first run left an empty ~/.cache/topgrad/mnist behind; a folder that existed
    already, or one holding another file, stays."""
    dest = tmp_path / "cache" / "topgrad" / "mnist" / "file.bin"
    with pytest.raises(DownloadError):
        fetch_from_mirrors([f"{server}/missing"], "file.bin", dest, sha256(PAYLOAD), timeout=5)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "keep.txt").write_text("mine")
    with pytest.raises(DownloadError):
        fetch_from_mirrors([f"{server}/missing"], "file.bin", dest, sha256(PAYLOAD), timeout=5)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["keep.txt"]


def _serve_dataset(tmp_path: Path, make_dataset, monkeypatch: pytest.MonkeyPatch) -> None:
    """Serve a tiny gzipped dataset and make the 'mnist' checksums those of its files."""
    folder = make_dataset(tmp_path / "served")
    files = {p.name: p.read_bytes() for p in folder.iterdir()}
    Handler.files = files
    info = dataclasses.replace(data.DATASETS["mnist"], checksums={n: sha256(b) for n, b in files.items()})
    monkeypatch.setitem(data.DATASETS, "mnist", info)


def test_load_dataset_downloads_into_the_cache(
    server: str, tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _serve_dataset(tmp_path, make_dataset, monkeypatch)
    messages: list[str] = []
    ds = data.load_dataset("mnist", mirrors=[f"{server}/drop", f"{server}/good"], timeout=5,
                           log=messages.append)
    cache = tmp_path / "cache" / "topgrad" / "mnist"
    assert ds.source == str(cache) and len(ds.train_labels) == 96
    assert sorted(p.name for p in cache.iterdir()) == sorted(Handler.files)
    # the next call finds the cached files and downloads nothing
    assert data.load_dataset("mnist", mirrors=[], log=messages.append).source == str(cache)


def test_failed_download_falls_back_to_the_bundled_subset(
    server: str, tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    _serve_dataset(tmp_path, make_dataset, monkeypatch)
    messages: list[str] = []
    ds = data.load_dataset("mnist", mirrors=[f"{server}/corrupt"], timeout=5, log=messages.append)
    assert ds.source == "bundled MNIST subset"
    assert len(ds.train_labels) == 6000 and len(ds.test_labels) == 1000
    fallback = [m for m in messages if "bundled subset" in m]
    assert len(fallback) == 1 and "--data-dir" in fallback[0] and "\n" not in fallback[0]
    assert not (tmp_path / "cache" / "topgrad" / "mnist" / "train-images-idx3-ubyte.gz").exists()


def test_fashion_mnist_has_no_fallback(isolated_search: Path) -> None:
    with pytest.raises(data.DatasetNotFoundError, match=r"fashion-mnist: not found.*turned off"):
        data.load_dataset("fashion-mnist", download_ok=False)


def test_only_fashion_mnist_is_told_to_install_a_debian_package(isolated_search: Path) -> None:
    """Debian packages Fashion-MNIST (dataset-fashion-mnist) but not MNIST: a resumed MNIST run
    whose data was gone was told to install Debian's dataset-mnist, which does not exist."""
    with pytest.raises(data.DatasetNotFoundError, match="install Debian's dataset-fashion-mnist package"):
        data.load_dataset("fashion-mnist", download_ok=False)
    with pytest.raises(data.DatasetNotFoundError) as info:
        data.load_dataset("mnist", download_ok=False, subset_ok=False)
    assert "Debian" not in str(info.value) and str(info.value).endswith(
        "Pass --data-dir DIR or set $TOPGRAD_DATA to a folder with the four IDX files, or run without "
        "--no-download, online."), str(info.value)


def test_an_unreadable_folder_is_said_not_a_traceback(
    tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Path.is_file raises PermissionError in a folder that cannot be read (Python 3.11): named,
    it is an error in one line; searched, a note, and the search goes on. The folder named is the
    one that cannot be read, not the subfolder probed first (locked/mnist, which does not exist)."""
    locked = tmp_path / "locked"
    make_dataset(locked)
    real_is_file, real_access = Path.is_file, os.access

    def is_file(self: Path) -> bool:
        if self.parent == locked or self.parent == locked / "mnist":
            raise PermissionError(13, "Permission denied")
        return real_is_file(self)

    monkeypatch.setattr(Path, "is_file", is_file)
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    with pytest.raises(data.DatasetNotFoundError,
                       match=rf"^{locked}: cannot read it \(Permission denied\)"):
        data.load_dataset("mnist", locked)
    monkeypatch.setenv("TOPGRAD_DATA", str(locked))
    make_dataset(tmp_path / "debian" / "mnist", n_train=20)
    messages: list[str] = []
    assert len(data.load_dataset("mnist", download_ok=False, log=messages.append).train_labels) == 20
    assert messages == [f"mnist: {locked}: cannot read it (Permission denied); give the user running "
                        "topgrad-train read access, or point at another folder; looking in the other places"]


def test_what_stands_at_a_missing_files_name_is_said(tmp_path: Path, make_dataset) -> None:
    """A folder named like the file, a symlink to nothing, a symlink loop: "missing", though `ls`
    shows the name; and a --data-dir that is a symlink loop was "no such folder"."""
    name = "train-images-idx3-ubyte.gz"
    nowhere = "a symlink to /nonexistent/x, which does not exist"
    for i, (what, make) in enumerate((("a folder", lambda p: p.mkdir()),
                                      (nowhere, lambda p: p.symlink_to("/nonexistent/x")),
                                      ("a symlink loop", lambda p: p.symlink_to(p)))):
        folder = make_dataset(tmp_path / f"case{i}")
        (folder / name).unlink()
        make(folder / name)
        said = rf"{name} missing \({re.escape(str(folder / name))} is {re.escape(what)}, not the file\)"
        with pytest.raises(data.DatasetNotFoundError, match=said):
            data.load_dataset("mnist", folder)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(data.DatasetNotFoundError, match=rf"^{loop}: a symlink loop \(--data-dir names"):
        data.load_dataset("mnist", loop)


def test_search_order(tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch) -> None:
    make_dataset(tmp_path / "cache" / "topgrad" / "mnist", n_train=10)
    assert len(data.load_dataset("mnist", download_ok=False).train_labels) == 10
    make_dataset(tmp_path / "debian" / "mnist", n_train=20)
    assert len(data.load_dataset("mnist", download_ok=False).train_labels) == 20
    make_dataset(tmp_path / "env" / "mnist", n_train=30)
    monkeypatch.setenv("TOPGRAD_DATA", str(tmp_path / "env"))
    assert len(data.load_dataset("mnist", download_ok=False).train_labels) == 30
    make_dataset(tmp_path / "explicit", n_train=40)
    assert len(data.load_dataset("mnist", tmp_path / "explicit").train_labels) == 40
    with pytest.raises(data.DatasetNotFoundError):  # an explicit folder must hold the data
        data.load_dataset("mnist", tmp_path / "nowhere")


def test_a_wrong_topgrad_data_is_said_at_once(tmp_path: Path, make_dataset, isolated_search: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """$TOPGRAD_DATA is set on purpose: where it holds no dataset, one line says why (no such
    folder, or which files are missing) before the other places are searched; the fallback's
    advice is the one that fits the run (with downloads off: run without --no-download)."""
    messages: list[str] = []
    monkeypatch.setenv("TOPGRAD_DATA", str(tmp_path / "nowhere"))
    assert data.load_dataset("mnist", download_ok=False, log=messages.append).source == data.BUNDLED
    looking = "; looking in the other places"
    assert messages[0] == f"mnist: $TOPGRAD_DATA={tmp_path / 'nowhere'}: no such folder{looking}"
    assert "run without --no-download, online, to download them" in messages[-1], messages
    partial = make_dataset(tmp_path / "partial")
    (partial / "t10k-labels-idx1-ubyte.gz").unlink()
    monkeypatch.setenv("TOPGRAD_DATA", str(partial))
    make_dataset(tmp_path / "debian" / "mnist", n_train=20)
    messages.clear()
    assert len(data.load_dataset("mnist", download_ok=False, log=messages.append).train_labels) == 20
    assert messages == [f"mnist: $TOPGRAD_DATA={partial}: no complete mnist dataset there (nor in "
                        f"{partial / 'mnist'}): t10k-labels-idx1-ubyte.gz missing{looking}"]
    with pytest.raises(data.DatasetNotFoundError, match=r"or run without --no-download, online\.$"):
        data.load_dataset("fashion-mnist", download_ok=False, log=messages.append)


def test_cache_dir_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.cache_dir("fashion-mnist") == tmp_path / "topgrad" / "fashion-mnist"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data.cache_dir("mnist") == Path.home() / ".cache" / "topgrad" / "mnist"
    # relative: ignored, as the XDG spec says (it named another folder from each working
    # directory, and a checkpoint recorded a relative source that --resume could not find)
    monkeypatch.setenv("XDG_CACHE_HOME", "rel")
    assert data.cache_dir("mnist") == Path.home() / ".cache" / "topgrad" / "mnist"


def test_bundled_subset_is_real_mnist() -> None:
    ds = data.bundled_subset()
    assert ds.train_images.shape == (6000, 28, 28) and ds.test_images.shape == (1000, 28, 28)
    assert set(ds.train_labels.tolist()) == set(range(10))
    assert idx.IMAGES_MAGIC == 2051


def test_a_downloaded_file_is_an_ordinary_file(server: str, tmp_path: Path) -> None:
    """mkstemp makes its file 0600: the cache's files were readable by their owner only."""
    old = os.umask(0o022)
    try:
        dest = fetch(f"{server}/good/file.bin", tmp_path / "file.bin", sha256(PAYLOAD))
    finally:
        os.umask(old)
    assert dest.stat().st_mode & 0o777 == 0o644


def test_a_failed_download_names_every_mirrors_failure(
    server: str, tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Only the last mirror's error was shown, hiding a checksum mismatch at the first, and the
    advice was to "run once online" on a machine that was online: where every mirror served
    another file, it says that a retry would not help; where one failed otherwise, a retry may."""
    _serve_dataset(tmp_path, make_dataset, monkeypatch)
    messages: list[str] = []
    ds = data.load_dataset("mnist", mirrors=[f"{server}/corrupt", f"{server}/missing"], timeout=5,
                           log=messages.append)
    assert ds.source == data.BUNDLED
    note = messages[-1]
    assert "/corrupt/train-images-idx3-ubyte.gz: sha256 mismatch" in note and "404" in note, note
    assert "the mirror served a different file" in note and "run once online" in note, note
    assert "\n" not in note
    ds = data.load_dataset("mnist", mirrors=[f"{server}/corrupt", f"{server}/corrupt/"], timeout=5,
                           log=messages.append)
    note = messages[-1]
    assert data.NO_RETRY in note and "run once online" not in note, note


def test_a_gzip_cut_short_without_a_length_is_a_cut_not_another_file(
    server: str, tmp_path: Path, make_dataset, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server sending no Content-Length that closed mid-file gave "sha256 mismatch, the mirror
    served a different file", and the advice that running again would not help; a retry may."""
    _serve_dataset(tmp_path, make_dataset, monkeypatch)
    name = "train-images-idx3-ubyte.gz"
    dest, checksum = tmp_path / "got" / name, data.DATASETS["mnist"].checksums[name]
    cut = r"closed after \d+ bytes, before the end of the gzip stream"
    with pytest.raises(DownloadError, match=cut) as info:
        fetch(f"{server}/cut/{name}", dest, checksum, timeout=5)
    assert not isinstance(info.value, download.ChecksumMismatchError)
    assert fetch(f"{server}/nolength/{name}", dest, checksum).exists()


def test_mirrors_that_all_refuse_the_file_are_no_reason_to_go_online(
    server: str, tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every mirror answering 404 got "run once online" on a machine that was online."""
    _serve_dataset(tmp_path, make_dataset, monkeypatch)
    messages: list[str] = []
    data.load_dataset("mnist", mirrors=[f"{server}/missing", f"{server}/gone"], timeout=5,
                      log=messages.append)
    assert data.REFUSED in messages[-1] and "run once online" not in messages[-1], messages[-1]


def test_a_broken_file_in_the_cache_says_deleting_it_downloads_it_again(
    tmp_path: Path, make_dataset, isolated_search: Path,
) -> None:
    cache = make_dataset(tmp_path / "cache" / "topgrad" / "mnist")
    broken = cache / "train-images-idx3-ubyte.gz"
    broken.write_bytes(broken.read_bytes()[:100])
    with pytest.raises(idx.IDXError) as info:
        data.load_dataset("mnist", download_ok=False)
    message = str(info.value)
    assert message.startswith(f"{broken}: ") and message.endswith(
        f"; {cache} is Topgrad's download cache: delete {broken.name} there and the next run downloads "
        "it again"), message
    folder = make_dataset(tmp_path / "mine")  # a folder of the user's own: no such advice
    (folder / broken.name).write_bytes(broken.read_bytes())
    with pytest.raises(idx.IDXError) as info:
        data.load_dataset("mnist", folder)
    assert "download" not in str(info.value), info.value


def test_the_download_says_how_long_it_may_wait(
    server: str, tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a network that drops packets each mirror waited 30 s without a word about it."""
    _serve_dataset(tmp_path, make_dataset, monkeypatch)
    messages: list[str] = []
    data.load_dataset("mnist", mirrors=[f"{server}/good"], timeout=5, log=messages.append)
    cache = tmp_path / "cache" / "topgrad" / "mnist"
    assert messages[0] == (f"mnist: not installed; downloading it into {cache} (each mirror may take up "
                           "to 5 s to answer; --no-download skips the download)"), messages
    assert messages[1].startswith("downloading ") and len(messages) == 5, messages


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize(("mode", "shown"), [
    ("good", "file.bin: 35.0 kB / 35.0 kB (100%)"),
    ("nolength", "file.bin: 35.0 kB"),  # no Content-Length: no total, no percent
    ("drop", "file.bin: 17.5 kB / 35.0 kB (50%), not kept"),
])
def test_a_download_shows_its_progress_on_a_terminal(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str, shown: str,
) -> None:
    """A download of MNIST's 9.9 MB went on for minutes without a sign of progress."""
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    try:
        fetch(f"{server}/{mode}/file.bin", tmp_path / "file.bin", sha256(PAYLOAD), timeout=5, progress=True)
    except DownloadError:
        assert mode == "drop"
    err = terminal.getvalue()
    assert err.startswith("\rfile.bin: 0 B") and err.endswith(f"\r{shown}\n"), repr(err)
    assert err.count("\n") == 1, repr(err)


def test_a_download_whose_file_cannot_be_moved_into_place_is_not_kept(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The progress line ended before the finished file was moved into place, so a move that
    failed (a full disk, a folder without write permission) still read as a success."""
    def refuse(*_: object) -> None:
        raise PermissionError("read-only folder")

    monkeypatch.setattr(files.os, "replace", refuse)
    with pytest.raises(DownloadError, match="read-only folder"):
        fetch(f"{server}/good/file.bin", tmp_path / "file.bin", sha256(PAYLOAD), timeout=5, progress=True)
    assert capsys.readouterr().err == "file.bin: 35.0 kB / 35.0 kB (100%), not kept\n"
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("mode", "shown"), [
    ("good", "file.bin: 35.0 kB / 35.0 kB (100%)"),
    ("nolength", "file.bin: 35.0 kB"),
    ("drop", "file.bin: 17.5 kB / 35.0 kB (50%), not kept"),
])
def test_a_download_shows_one_plain_line_elsewhere(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], mode: str, shown: str,
) -> None:
    """In a log file or a CI console every carriage-return redraw would stay: one line per file."""
    try:
        fetch(f"{server}/{mode}/file.bin", tmp_path / "file.bin", sha256(PAYLOAD), timeout=5, progress=True)
    except DownloadError:
        assert mode == "drop"
    assert capsys.readouterr().err == f"{shown}\n"


def test_the_progress_line_is_redrawn_at_most_ten_times_a_second(monkeypatch: pytest.MonkeyPatch) -> None:
    """A redraw per 64 kB chunk would write thousands of lines a second on a fast link."""
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    with progress.DownloadProgress("f.gz", 2_000_000) as shown:
        for _ in range(200):  # 2 s of 10 kB every 10 ms
            now[0] += 0.01
            shown.update(10_000)
    lines = terminal.getvalue().split("\r")[1:]
    assert 20 <= len(lines) <= 22, lines  # the first, one per 0.1 s, the last
    assert lines[-1] == "f.gz: 2.0 MB / 2.0 MB (100%)".ljust(len(lines[-2])) + "\n", lines
    widths = [len(line.rstrip("\n")) for line in lines]  # 910.0 kB, then 1.0 MB: padded to cover it
    assert widths == sorted(widths) and "f.gz: 1.0 MB / 2.0 MB (50%)  " in lines, lines


def test_byte_sizes_read_as_people_read_them() -> None:
    sizes = [0, 999, 1000, 35_000, 999_949, 999_999, 9_912_422, 1_000_000_000, 10**12]
    assert [progress.byte_size(n) for n in sizes] == [
        "0 B", "999 B", "1.0 kB", "35.0 kB", "999.9 kB", "1.0 MB", "9.9 MB", "1.0 GB", "1.0 TB"]


def test_load_dataset_shows_each_files_progress(
    server: str, tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """topgrad-train's download: a line per file on stderr, next to the notes that go to `log`."""
    _serve_dataset(tmp_path, make_dataset, monkeypatch)
    data.load_dataset("mnist", mirrors=[f"{server}/good"], timeout=5, log=lambda message: None)
    lines = capsys.readouterr().err.splitlines()
    assert [line.split(":")[0] for line in lines] == [data.file_names(p)[1] for p in data.PARTS], lines
    assert all(line.endswith(" (100%)") for line in lines), lines


def interrupt_reading(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """Ctrl-C while the second chunk of the body of `name` is read (the first is on disk by then);
    returns `[name]`, whose item the caller may change to interrupt another file."""
    monkeypatch.setattr(download, "CHUNK", 1000)
    real, target = http.client.HTTPResponse.read, [name]

    def read(self: http.client.HTTPResponse, amt: int | None = None) -> bytes:
        if getattr(self, "url", "").endswith("/" + target[0]):  # urllib sets the response's url
            self.chunks = getattr(self, "chunks", 0) + 1  # type: ignore[attr-defined]
            if self.chunks == 2:  # type: ignore[attr-defined]
                raise KeyboardInterrupt
        return real(self, amt)

    monkeypatch.setattr(http.client.HTTPResponse, "read", read)
    return target


def test_an_interrupted_download_leaves_nothing_new(
    server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C during a first download left an empty ~/.cache/topgrad/mnist behind (an error removed
    it, an interrupt did not); the partial file goes too, and a folder that was there stays."""
    interrupt_reading(monkeypatch, "file.bin")
    dest = tmp_path / "cache" / "topgrad" / "mnist" / "file.bin"
    with pytest.raises(KeyboardInterrupt):
        fetch_from_mirrors([f"{server}/good"], "file.bin", dest, sha256(PAYLOAD), timeout=5)
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "cache").mkdir()
    with pytest.raises(KeyboardInterrupt):
        fetch(f"{server}/good/file.bin", dest, sha256(PAYLOAD), timeout=5)
    assert list(tmp_path.iterdir()) == [tmp_path / "cache"] and leftovers(tmp_path / "cache") == []


def test_a_dropped_connection_removes_the_folders_fetch_made(server: str, tmp_path: Path) -> None:
    """`fetch` alone made the destination's folders and left them when the server hung up."""
    dest = tmp_path / "new" / "deeper" / "file.bin"
    with pytest.raises(DownloadError, match="connection closed after"):
        fetch(f"{server}/drop/file.bin", dest, sha256(PAYLOAD), timeout=5)
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_during_topgrad_trains_download_leaves_the_cache_as_it_was(
    server: str, tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Interrupted in the first file, no folder is left; in a later one, the files already checked
    stay (the next run downloads only the rest), and the partial one goes."""
    _serve_dataset(tmp_path, make_dataset, monkeypatch)
    cache = tmp_path / "cache"
    target = interrupt_reading(monkeypatch, "train-images-idx3-ubyte.gz")
    with pytest.raises(KeyboardInterrupt):
        data.load_dataset("mnist", mirrors=[f"{server}/good"], timeout=5, log=lambda message: None)
    assert not cache.exists()
    target[0] = "t10k-images-idx3-ubyte.gz"
    with pytest.raises(KeyboardInterrupt):
        data.load_dataset("mnist", mirrors=[f"{server}/good"], timeout=5, log=lambda message: None)
    kept = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]  # no hidden .part file
    assert leftovers(cache / "topgrad" / "mnist") == kept


# ---- a download folder that cannot be made or written ---------------------------------------------
def _read_only(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    """Make `folder` refuse new files as a read-only mount does (a chmod stops no root user, and
    the tests may run as one)."""
    new_file = files._new_file

    def refuse(where: Path, prefix: str, suffix: str) -> tuple[int, Path]:
        if Path(where) == folder:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return new_file(where, prefix, suffix)

    monkeypatch.setattr(files, "_new_file", refuse)


def test_a_cache_folder_that_cannot_be_made_falls_back_without_a_traceback(
    server: str, tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """XDG_CACHE_HOME=/dev/null/x (here: below a file): mkdir's NotADirectoryError was a traceback,
    not MNIST's bundled subset or Fashion-MNIST's one-line error; no mirror is contacted."""
    _serve_dataset(tmp_path, make_dataset, monkeypatch)
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "afile" / "x"))
    cache = tmp_path / "afile" / "x" / "topgrad" / "mnist"
    messages: list[str] = []
    assert data.load_dataset("mnist", mirrors=[f"{server}/good"], timeout=5,
                             log=messages.append).source == data.BUNDLED
    assert len(messages) == 1 and not messages[0].startswith("downloading"), messages
    blocker = tmp_path / "afile"  # named: "make .../topgrad/mnist writable" was no help
    assert (f"and its download folder {cache} cannot be made ({blocker} is a file); using the bundled "
            "subset") in messages[0], messages
    assert messages[0].endswith(f"or set $XDG_CACHE_HOME to a folder you can write (or move the file "
                                f"{blocker} out of the way) and run again to download them."), messages
    with pytest.raises(data.DatasetNotFoundError, match=r"download folder .*fashion-mnist cannot be made "
                                                        r"\(.*afile is a file\)\. .*set \$XDG_CACHE_HOME"):
        data.load_dataset("fashion-mnist", mirrors=[f"{server}/good"], timeout=5, log=messages.append)
    why = rf"\({re.escape(str(blocker))} is a file, not a folder\)"
    with pytest.raises(download.FolderNotWritableError, match=rf"cannot keep a download there {why}"):
        fetch_from_mirrors([f"{server}/good"], "file.bin", cache / "file.bin", sha256(PAYLOAD), timeout=5)


def test_a_read_only_cache_is_said_before_any_mirror_is_contacted(
    server: str, tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each mirror was contacted (up to 30 s each), each download failed, and the advice was to
    "run once online": being online was never what was missing."""
    _serve_dataset(tmp_path, make_dataset, monkeypatch)
    cache = tmp_path / "cache" / "topgrad" / "mnist"
    cache.mkdir(parents=True)
    _read_only(monkeypatch, cache)
    messages: list[str] = []
    assert data.load_dataset("mnist", mirrors=[f"{server}/good"], timeout=5,
                             log=messages.append).source == data.BUNDLED
    assert len(messages) == 1 and "run once online" not in messages[0], messages
    assert f"its download folder {cache} cannot be written (Read-only file system)" in messages[0], messages


def test_a_download_checks_its_folder_once(
    server: str, tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The cache was checked (a file made and removed) once by data.download and again before each
    of the four files: once is enough."""
    _serve_dataset(tmp_path, make_dataset, monkeypatch)
    checked: list[Path] = []
    try_writing = files.try_writing

    def counted(folder: Path, name: str) -> None:
        checked.append(folder)
        try_writing(folder, name)

    monkeypatch.setattr(files, "try_writing", counted)
    data.load_dataset("mnist", mirrors=[f"{server}/good"], timeout=5, log=lambda message: None)
    assert checked == [tmp_path / "cache" / "topgrad" / "mnist"], checked


def test_topgrad_train_with_an_unusable_cache_is_one_line(
    tmp_path: Path, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "afile").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "afile"))
    code = train.main(["mlp", "--dataset", "fashion-mnist", "--epochs", "0", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1 and "Traceback" not in err, err
    assert (f"its download folder {tmp_path / 'afile' / 'topgrad' / 'fashion-mnist'} cannot be made "
            f"({tmp_path / 'afile'} is a file)") in err, err


# ---- the other dataset's files in a folder searched -------------------------------------------------
def test_a_searched_folder_holding_the_other_dataset_is_noted_and_passed(
    tmp_path: Path, make_dataset, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """TOPGRAD_DATA=/path/to/mnist stopped `--dataset fashion-mnist` with "these IDX files are mnist"
    though Fashion-MNIST was installed further on; a folder named by --data-dir still must hold it."""
    mnist = make_dataset(tmp_path / "mnist")
    labels = data.bundled_subset().train_labels[:96].copy()
    labels[:12] = data.DATASETS["mnist"].first_train_labels
    idx.write(mnist / "train-labels-idx1-ubyte.gz", labels)
    make_dataset(tmp_path / "debian" / "fashion-mnist", n_train=20)
    monkeypatch.setenv("TOPGRAD_DATA", str(mnist))
    messages: list[str] = []
    assert len(data.load_dataset("fashion-mnist", download_ok=False, log=messages.append).train_labels) == 20
    assert messages == [f"fashion-mnist: {mnist.resolve()} holds mnist, not fashion-mnist; looking in the "
                        "other places"], messages
    with pytest.raises(data.DatasetNotFoundError, match="these IDX files are mnist, not fashion-mnist"):
        data.load_dataset("fashion-mnist", mnist)


def test_a_folder_mixing_the_two_datasets_or_swapping_the_splits_is_refused(
    tmp_path: Path, make_dataset,
) -> None:
    """MNIST's training files beside Fashion-MNIST's test files loaded (only the training labels
    were looked at): the model trained on digits and was scored on clothes, 8% and exit 0.
    Training and test files swapped loaded too."""
    folder = make_dataset(tmp_path / "mixed")  # 96 training and 48 test images
    subset = data.bundled_subset()

    def labelled(train_start: tuple[int, ...], test_start: tuple[int, ...] | None) -> None:
        train, test = subset.train_labels[:96].copy(), subset.test_labels[:48].copy()
        train[:12] = train_start
        if test_start is not None:
            test[:12] = test_start
        idx.write(folder / "train-labels-idx1-ubyte.gz", train)
        idx.write(folder / "t10k-labels-idx1-ubyte.gz", test)

    mnist, fashion = data.DATASETS["mnist"], data.DATASETS["fashion-mnist"]
    labelled(mnist.first_train_labels, fashion.first_test_labels)
    with pytest.raises(data.OtherDatasetError, match=r"t10k-labels-idx1-ubyte\.gz: these test labels are "
                       r"fashion-mnist's, not mnist's .* the folder mixes the two datasets"):
        data.load_dataset("mnist", folder)
    labelled(mnist.first_test_labels, None)
    with pytest.raises(idx.IDXError, match="the training and test files of mnist are swapped"):
        data.load_dataset("mnist", folder)


def test_a_download_cache_holding_the_other_dataset_falls_back_as_with_no_download(
    tmp_path: Path, make_dataset, isolated_search: Path,
) -> None:
    """Fashion-MNIST's files in MNIST's cache: the search notes it and goes on, but the download
    step found all four files there, fetched nothing, and re-read them: an error, where
    --no-download fell back to the bundled subset. Both fall back now, saying what to move."""
    cache = make_dataset(tmp_path / "cache" / "topgrad" / "mnist")
    labels = data.bundled_subset().train_labels[:96].copy()
    labels[:12] = data.DATASETS["fashion-mnist"].first_train_labels
    idx.write(cache / "train-labels-idx1-ubyte.gz", labels)
    for download_ok in (False, True):
        messages: list[str] = []
        ds = data.load_dataset("mnist", mirrors=[], download_ok=download_ok, log=messages.append)
        assert ds.source == data.BUNDLED, messages
        assert messages[0].startswith(f"mnist: {cache.resolve()} holds fashion-mnist, not mnist"), messages
    last, folder = messages[-1], cache.resolve()
    assert f"its download folder {folder} holds fashion-mnist; using the bundled subset" in last, last
    assert f"move the fashion-mnist files out of {folder} and run again" in last, last


@pytest.mark.skipif(not (data.DEBIAN_DIR / "fashion-mnist").is_dir(),
                    reason="Debian's dataset-fashion-mnist is not installed (.ci/run installs it)")
def test_the_real_fashion_mnist_loads_from_debians_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    """The loader on the real files, where Debian's package puts them: 60,000 training and 10,000
    test images of 28x28, ten classes of 6,000 and 1,000, recognised as Fashion-MNIST (not MNIST)."""
    monkeypatch.delenv("TOPGRAD_DATA", raising=False)
    ds = data.load_dataset("fashion-mnist", download_ok=False)
    assert ds.source == str((data.DEBIAN_DIR / "fashion-mnist").resolve())
    assert ds.train_images.shape == (60000, 28, 28) and ds.test_images.shape == (10000, 28, 28)
    assert np.bincount(ds.train_labels).tolist() == [6000] * 10
    assert np.bincount(ds.test_labels).tolist() == [1000] * 10
    with pytest.raises(data.DatasetNotFoundError, match="these IDX files are fashion-mnist, not mnist"):
        data.load_dataset("mnist", data.DEBIAN_DIR / "fashion-mnist")
