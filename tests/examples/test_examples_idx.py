"""IDX reading: gzipped and raw files, both spellings, and every kind of broken file."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import shlex
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from topgrad_examples import data, idx


def test_raw_and_gzipped_files_read_the_same(tmp_path: Path, make_dataset: Callable[..., Path]) -> None:
    raw = data.load_dir(make_dataset(tmp_path / "raw", gz=False))
    gz = data.load_dir(make_dataset(tmp_path / "gz", gz=True))
    for a, b in [(raw.train_images, gz.train_images), (raw.test_labels, gz.test_labels)]:
        np.testing.assert_array_equal(a, b)
    assert raw.train_images.shape == (96, 28, 28) and raw.train_images.dtype == np.uint8
    assert raw.test_labels.shape == (48,)


def test_dot_spelling_and_name_subfolder(tmp_path: Path, make_dataset: Callable[..., Path]) -> None:
    folder = make_dataset(tmp_path / "root" / "mnist")
    for p in folder.iterdir():  # train-images-idx3-ubyte.gz -> train-images.idx3-ubyte.gz
        p.rename(p.with_name(p.name.replace("-idx", ".idx")))
    ds = data.load_dir(tmp_path / "root", "mnist")
    assert len(ds.train_labels) == 96


def test_write_then_read_round_trip(tmp_path: Path) -> None:
    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    np.testing.assert_array_equal(idx.read_images(idx.write(tmp_path / "a-idx3-ubyte", images)), images)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    np.testing.assert_array_equal(idx.read_labels(idx.write(tmp_path / "l.gz", labels)), labels)


def _images_file(tmp_path: Path, content: bytes, name: str = "train-images-idx3-ubyte") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_truncated_data_names_file_and_sizes(tmp_path: Path) -> None:
    good = idx.encode(np.zeros((3, 28, 28), np.uint8))
    path = _images_file(tmp_path, good[:-100])
    with pytest.raises(idx.IDXError, match=r"train-images-idx3-ubyte: truncated.*3x28x28 = 2352 bytes.*2252"):
        idx.read_images(path)


def test_a_truncated_label_file_counts_bytes_once(tmp_path: Path) -> None:
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(idx.encode(np.zeros(60, np.uint8))[:-10])
    with pytest.raises(idx.IDXError, match=r"the header announces 60 bytes of data, the file holds 50$"):
        idx.read_labels(path)


def test_truncated_header(tmp_path: Path) -> None:
    with pytest.raises(idx.IDXError, match="truncated"):
        idx.read_images(_images_file(tmp_path, b"\x00\x00"))
    with pytest.raises(idx.IDXError, match="truncated header"):
        idx.read_images(_images_file(tmp_path, struct.pack(">II", 2051, 5)))


def test_bad_magic(tmp_path: Path) -> None:
    labels_bytes = idx.encode(np.zeros(5, np.uint8))  # a labels file where images are expected
    with pytest.raises(idx.IDXError, match=r"bad magic number 2049.*expected 2051"):
        idx.read_images(_images_file(tmp_path, labels_bytes))
    with pytest.raises(idx.IDXError, match="bad magic"):
        idx.read_labels(_images_file(tmp_path, b"\x00\x00\x0c\x01" + bytes(20)))  # int32, not unsigned bytes


def test_trailing_bytes_and_wrong_image_size(tmp_path: Path) -> None:
    with pytest.raises(idx.IDXError, match="unexpected bytes"):
        idx.read_images(_images_file(tmp_path, idx.encode(np.zeros((1, 28, 28), np.uint8)) + b"x"))
    with pytest.raises(idx.IDXError, match="16x16 pixels, expected 28x28"):
        idx.read_images(_images_file(tmp_path, idx.encode(np.zeros((1, 16, 16), np.uint8))))


def test_label_out_of_range(tmp_path: Path) -> None:
    path = idx.write(tmp_path / "train-labels-idx1-ubyte", np.array([1, 12], np.uint8))
    with pytest.raises(idx.IDXError, match="label 12"):
        idx.read_labels(path)


def test_corrupt_gzip(tmp_path: Path) -> None:
    packed = gzip.compress(idx.encode(np.zeros((4, 28, 28), np.uint8)))
    path = _images_file(tmp_path, packed[: len(packed) // 2], "train-images-idx3-ubyte.gz")
    with pytest.raises(idx.IDXError, match=r"train-images-idx3-ubyte.gz: corrupt or truncated gzip"):
        idx.read_images(path)


def test_image_label_count_mismatch(tmp_path: Path, make_dataset: Callable[..., Path]) -> None:
    folder = make_dataset(tmp_path / "d")
    idx.write(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(47, np.uint8))
    with pytest.raises(idx.IDXError, match=r"t10k-labels-idx1-ubyte.gz: 47 labels for the 48 images"):
        data.load_dir(folder)


def test_missing_file_is_reported(tmp_path: Path, make_dataset: Callable[..., Path]) -> None:
    folder = make_dataset(tmp_path / "d")
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(data.DatasetNotFoundError, match="no complete mnist dataset"):
        data.load_dir(folder)


def test_normalize_gives_nhwc_float32() -> None:
    x = data.normalize(np.full((2, 28, 28), 255, np.uint8))
    assert x.shape == (2, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_allclose(x, (1.0 - 0.1307) / 0.3081, rtol=1e-6)


def test_of_two_copies_the_uncompressed_file_is_read(
    tmp_path: Path, make_dataset: Callable[..., Path],
) -> None:
    """`X` and `X.gz` both there (`gunzip -k`): the documented order decides, whatever the
    directory listing's order: `-idx` before `.idx`, each uncompressed before gzipped."""
    folder = make_dataset(tmp_path / "d", gz=True)
    raw = folder / "train-labels-idx1-ubyte"
    labels = idx.read_labels(folder / "train-labels-idx1-ubyte.gz").copy()
    labels[-1] = (labels[-1] + 1) % 10
    idx.write(raw, labels)
    (folder / "train-labels.idx1-ubyte.gz").write_bytes((folder / "train-labels-idx1-ubyte.gz").read_bytes())
    assert data.find_files(folder)["train-labels"] == raw  # type: ignore[index]
    np.testing.assert_array_equal(data.load_dir(folder).train_labels, labels)
    assert data.file_names("train-labels") == ["train-labels-idx1-ubyte", "train-labels-idx1-ubyte.gz",
                                               "train-labels.idx1-ubyte", "train-labels.idx1-ubyte.gz"]


def test_a_broken_file_names_the_other_copy_that_was_not_read(
    tmp_path: Path, make_dataset: Callable[..., Path],
) -> None:
    """A truncated `X` (an interrupted `gunzip`) beside a good `X.gz` failed without a word about
    the .gz: the error says that the other copy is there and why it was not read."""
    folder = make_dataset(tmp_path / "d", gz=True)
    raw = folder / "train-images-idx3-ubyte"
    raw.write_bytes(gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())[:-100])
    with pytest.raises(idx.IDXError) as info:
        data.load_dir(folder)
    message = str(info.value)
    assert message.startswith(f"{raw}: truncated"), message
    assert message.endswith(f"; {folder / 'train-images-idx3-ubyte.gz'} is there too, but "
                            "train-images-idx3-ubyte is read first (uncompressed before gzipped, -idx before "
                            ".idx): remove or replace the broken one"), message
    assert "\n" not in message


def test_bytes_appended_to_a_gzip_file_are_said_with_where_its_gzip_data_ends(tmp_path: Path) -> None:
    """A gzip file with bytes appended (a second download appended to the first, a stray `>>`) was
    "corrupt or truncated gzip data (Not a gzipped file)": it says that the gzip data is whole and
    where it ends, and how to cut the rest off. Zero bytes at the end are padding: read, as gzip(1) does."""
    labels = np.array([3, 1, 4], np.uint8)
    packed = gzip.compress(idx.encode(labels), mtime=0)
    path = tmp_path / "train-labels-idx1-ubyte.gz"
    for appended in (b"junk", packed[:10]):  # any bytes; the start of a second gzip member
        path.write_bytes(packed + appended)
        with pytest.raises(idx.IDXError) as info:
            idx.read_labels(path)
        assert str(info.value) == (
            f"{path}: valid gzip data (its first {len(packed)} bytes) followed by {len(appended)} stray "
            "bytes: something was appended to the file; get the file again, or cut them off (truncate -s "
            f"{len(packed)} {shlex.quote(str(path))})")
    with path.open("r+b") as f:  # the cut the message proposes
        f.truncate(len(packed))
    np.testing.assert_array_equal(idx.read_labels(path), labels)
    path.write_bytes(packed + bytes(512))
    np.testing.assert_array_equal(idx.read_labels(path), labels)


def _zip(content: bytes) -> bytes:
    """`content` as the one file of a zip archive."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("train-labels-idx1-ubyte", content)
    return buffer.getvalue()


@pytest.mark.parametrize(("pack", "what", "unpack"), [
    (lzma.compress, "xz-compressed data", "unxz -c"),
    (bz2.compress, "bzip2-compressed data", "bunzip2 -c"),
    (_zip, "a zip archive", "unzip -p"),
    (lambda content: b"\x28\xb5\x2f\xfd" + content, "zstd-compressed data", "unzstd -c"),  # no zstd module
], ids=["xz", "bzip2", "zip", "zstd"])
def test_a_file_packed_by_another_tool_is_named_as_such(
    pack: Callable[[bytes], bytes], what: str, unpack: str, tmp_path: Path,
) -> None:
    """xz (or bzip2, zip, zstd) data named .gz was a "bad magic number 4247762216" with no hint:
    it says what the data is and the command that unpacks it to the raw IDX file, which is read too."""
    gz = tmp_path / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(pack(idx.encode(np.array([3, 1], np.uint8))))
    with pytest.raises(idx.IDXError) as info:
        idx.read_labels(gz)
    raw = tmp_path / "train-labels-idx1-ubyte"
    assert str(info.value) == (f"{gz}: {what} named .gz, not gzip: unpack it ({unpack} {gz} > {raw}) or get "
                               "the gzipped file again")
    gz.rename(raw)
    with pytest.raises(idx.IDXError) as info:
        idx.read_labels(raw)
    assert str(info.value) == (f"{raw}: {what}, not an IDX file: unpack it ({unpack.split()[0]}) so that "
                               f"{raw.name} holds the IDX data itself, or get the file again")


def test_a_raw_idx_file_named_gz_is_read(tmp_path: Path) -> None:
    """Whether a file is gzipped is told from its content: an uncompressed file named .gz is read."""
    labels = np.array([3, 1, 4], np.uint8)
    path = idx.write(tmp_path / "train-labels-idx1-ubyte.gz", labels, compress=False)
    np.testing.assert_array_equal(idx.read_labels(path), labels)


def test_a_folder_at_a_files_name_is_said_to_be_one(tmp_path: Path) -> None:
    """A folder named like the file (unpacked by an archive tool) was "cannot read it (Is a directory)"."""
    folder = tmp_path / "train-labels-idx1-ubyte.gz"
    folder.mkdir()
    with pytest.raises(idx.IDXError) as info:
        idx.read_labels(folder)
    assert str(info.value) == (f"{folder}: cannot read it (Is a directory); it is a folder: put the IDX "
                               "file itself there, under that name")


@pytest.mark.parametrize(("error", "fix"), [
    (PermissionError(13, "Permission denied"),
     "; give the user running topgrad-train read access to it, or point at another folder"),
    (OSError(5, "Input/output error"), ""),  # the system's word is all there is to say
], ids=["permission", "io-error"])
def test_a_file_that_cannot_be_read_says_what_to_do(
    error: OSError, fix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """"cannot read it (Permission denied)" said no more: it says what to do, as the error for a
    folder that cannot be read does (root ignores chmod: the read is made to fail)."""

    class Unreadable(type(Path())):  # type: ignore[misc]
        def read_bytes(self) -> bytes:
            raise error

    monkeypatch.setattr(idx, "Path", Unreadable)
    with pytest.raises(idx.IDXError) as info:
        idx.read_labels(tmp_path / "x")
    assert str(info.value) == f"{tmp_path / 'x'}: cannot read it ({error.strerror}){fix}"
