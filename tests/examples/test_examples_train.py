"""`topgrad-train` end to end on a tiny dataset written by the test."""

from __future__ import annotations

import io
import itertools
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import N_TEST, N_TRAIN, write_dataset
from topgrad_examples import checkpoint, data, idx, train
from topgrad_examples.saving import Saved

FAST = ["--epochs", "1", "--batch-size", "16", "--no-progress"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = train.main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


def test_train_prints_accuracy_last(tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), *FAST)
    assert code == 0
    assert re.fullmatch(r"test accuracy: [01]\.\d{4}", lines[-1]), lines
    assert any(line.startswith("epoch 1/1: train loss") for line in lines)


def test_limit_and_seed_make_runs_repeatable(tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["attention", "--data-dir", str(tiny_data), "--limit", "16", *FAST]
    first = run(capsys, *args, "--seed", "3")[1]
    second = run(capsys, *args, "--seed", "3")[1]
    assert "16 training, 16 test images" in first[0]
    assert first[-1] == second[-1]
    strip = lambda lines: [re.sub(r", [\d.]+ s .*", "", line) for line in lines]  # noqa: E731
    assert strip(first) == strip(second)


def test_resume_continues_exactly(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    interpreted: bool,
) -> None:
    model = "mlp" if interpreted else "deepconv"  # deepconv: BatchNorm statistics must resume too
    common = [model, "--data-dir", str(tiny_data), "--limit", "8", "--batch-size", "4",
              "--no-progress"]
    straight, half = tmp_path / "straight.npz", tmp_path / "half.npz"
    assert run(capsys, *common, "--epochs", "2", "--save", str(straight))[0] == 0

    save = checkpoint.save

    def save_then_interrupt(*args, **kwargs):  # Ctrl-C right after the first epoch's checkpoint
        save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint, "save", save_then_interrupt)
    assert train.main([*common, "--epochs", "2", "--save", str(half)]) == 130
    monkeypatch.setattr(checkpoint, "save", save)
    err = capsys.readouterr().err
    assert f"interrupted; {half} holds epoch 1: go on with --resume {half} --save {half}" in err, err
    assert "Traceback" not in err
    assert int(checkpoint.read(half)["meta/epoch"]) == 1

    code, lines, _ = run(capsys, *common, "--resume", str(half), "--save", str(half))
    assert code == 0 and lines[0] == f"resumed from {half} after epoch 1" and "epoch 2/2" in lines[-2]
    a, b = checkpoint.read(straight), checkpoint.read(half)
    assert int(a["meta/epoch"]) == int(b["meta/epoch"]) == 2 and b["history"].shape == (2, 3)
    for key in a:
        if key.startswith(("model/", "optim/")):
            np.testing.assert_allclose(a[key], b[key], rtol=1e-6, atol=1e-7, err_msg=key)


def test_ctrl_c_before_the_file_is_replaced_does_not_claim_an_older_runs_file(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The file at --save holds epoch 1 (the --resume checkpoint: another run's file is refused
    before training); this run is stopped while saving its epoch 2, before the rename: the message
    said the file holds this run's epoch and to resume from it."""
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--lr", "0.5", "--save", str(ck), *FAST)[0] == 0
    old = ck.read_bytes()

    def interrupted_rename(*args: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(checkpoint.os, "replace", interrupted_rename)
    code = train.main(["mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--save", str(ck),
                       "--epochs", "2", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 130 and err.strip().endswith(
        f"interrupted; epoch 2's save was cut short; {ck} still holds epoch 1: go on with --resume {ck} "
        f"--epochs 2 --save {ck}"), err
    assert ck.read_bytes() == old


def test_an_unfinished_save_claims_only_a_file_it_wrote(tiny_data: Path, tmp_path: Path, capsys) -> None:
    """`Saved.last`: a file at --save with the epoch being saved counts only once the save replaced
    it; the one the save found there (an older run's, at the same epoch) does not."""
    ck, new = tmp_path / "ck.npz", tmp_path / "new.npz"
    for path in (ck, new):
        assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(path), *FAST)[0] == 0
    saved = Saved(path=str(ck))
    saved.begin(1)
    assert saved.last() is None
    os.replace(new, ck)  # as the save's rename does
    assert saved.last() == 1


def test_each_saved_epoch_says_where_and_a_resume_without_save_says_it_keeps_nothing(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    ck = tmp_path / "ck.npz"
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)
    assert code == 0 and lines[-2].startswith("epoch 1/1:") and lines[-2].endswith(f", saved to {ck}"), lines
    first = ck.read_bytes()
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--epochs", "2",
                         "--no-progress")
    assert code == 0 and lines[0] == (f"resumed from {ck} after epoch 1 (the epochs trained now are not "
                                      f"saved: add --save {ck} to keep them)"), lines
    assert lines[-2].startswith("epoch 2/2:") and "saved" not in lines[-2], lines
    assert ck.read_bytes() == first  # as the line said: the file still holds epoch 1
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--epochs", "1")
    assert code == 0 and lines[0] == f"resumed from {ck} after epoch 1", lines  # nothing to train or lose


def test_resume_takes_settings_from_the_checkpoint(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    ck = tmp_path / "ck.npz"
    run(capsys, "mlp", "--data-dir", str(tiny_data), "--lr", "0.005", "--seed", "7", "--save", str(ck), *FAST)
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--epochs", "1")
    assert code == 0 and "lr 0.005, batch 16" in lines[1] and lines[-1].startswith("test accuracy: ")


@pytest.mark.parametrize(("flag", "saved", "given"), [("--dataset", "mnist", "fashion-mnist"),
                                                    ("--seed", "7", "3")])
def test_resume_refuses_a_dataset_or_seed_the_checkpoint_contradicts(
    flag: str, saved: str, given: str, tiny_data: Path, tmp_path: Path, capsys,
) -> None:
    """Epoch 2 on other data (or another batch order) than epoch 1 would mix two runs in one checkpoint."""
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), flag, saved, "--save", str(ck), *FAST)[0] == 0
    before = ck.read_bytes()
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), flag, given,
                           "--epochs", "2", "--save", str(ck), "--no-progress")
    assert code == 1 and not lines and "Traceback" not in err, (lines, err)
    assert f"{flag} {saved}" in err and f"{flag} {given}" in err, err  # what it has, what was asked
    assert f"drop {flag}" in err and "without --resume" in err, err  # how to go on
    assert ck.read_bytes() == before  # the checkpoint is untouched
    # the same value as the checkpoint's, or no flag at all, goes on
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), flag, saved,
                         "--epochs", "2", "--no-progress")
    assert code == 0 and "epoch 2/2" in lines[-2], lines


def test_resume_finds_the_checkpoints_data_folder(tiny_data: Path, tmp_path: Path, capsys,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --data-dir, a resumed run trains on the folder the checkpoint's epochs came from."""
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0
    monkeypatch.chdir(tmp_path)  # nothing to find by searching here
    monkeypatch.setenv("TOPGRAD_DATA", str(tmp_path / "nowhere"))
    code, lines, _ = run(capsys, "mlp", "--resume", str(ck), "--epochs", "2", "--no-download",
                         "--no-progress")
    assert code == 0 and str(tiny_data) in lines[1] and "epoch 2/2" in lines[-2], lines


def test_resume_of_a_checkpoint_without_a_data_folder(tiny_data: Path, tmp_path: Path, capsys,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Checkpoints written before the data source was recorded resume by searching, as before; a
    relative --data-dir is recorded as an absolute folder, found again from elsewhere."""
    ck, old = tmp_path / "ck.npz", tmp_path / "old.npz"
    monkeypatch.chdir(tiny_data.parent)
    assert run(capsys, "mlp", "--data-dir", tiny_data.name, "--save", str(ck), *FAST)[0] == 0
    arrays = checkpoint.read(ck)
    assert arrays["config/data_source"].item() == str(tiny_data.resolve())
    np.savez(old, **{k: v for k, v in arrays.items() if k != "config/data_source"})
    monkeypatch.chdir(tmp_path)
    code, lines, _ = run(capsys, "mlp", "--resume", str(ck), "--epochs", "2", "--no-download",
                         "--no-progress")
    assert code == 0 and "epoch 2/2" in lines[-2], lines
    code, lines, err = run(capsys, "mlp", "--resume", str(old), "--data-dir", str(tiny_data), "--epochs", "2",
                           "--no-progress")
    assert code == 0 and "Traceback" not in err, err


def test_resume_keeps_the_checkpoints_limit(tiny_data: Path, tmp_path: Path, capsys) -> None:
    ck = tmp_path / "ck.npz"
    run(capsys, "mlp", "--data-dir", str(tiny_data), "--limit", "8", "--save", str(ck), *FAST)
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--epochs", "2",
                         "--no-progress")
    assert code == 0 and "(8 training, 8 test images from" in lines[1], lines


def test_an_unwritable_save_path_fails_before_training(tmp_path: Path, tiny_data: Path, capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = str(blocker / "runs" / "ck.npz")  # a folder that cannot exist: a file is in its way
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", target, *FAST)
    assert code == 1 and not any("epoch" in x for x in lines)
    assert f"cannot write a checkpoint there ({blocker} is a file, not a folder)" in err, err


def test_a_run_that_fails_leaves_no_save_folder(tmp_path: Path, tiny_data: Path, capsys) -> None:
    """--save's folders are made when the first checkpoint is written; a run that fails before
    (here: no data) leaves none of them behind, and one that trains makes them."""
    target = tmp_path / "runs" / "today" / "ck.npz"
    code, _, err = run(capsys, "mlp", "--data-dir", str(tmp_path / "nowhere"), "--save", str(target), *FAST)
    assert code == 1 and "nowhere" in err and not (tmp_path / "runs").exists(), err
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(target), *FAST)[0] == 0
    assert target.is_file()


def test_save_to_a_folder_fails_before_training(tmp_path: Path, tiny_data: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:  # a bad value, as `--save folder/` is
        run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(tmp_path), *FAST)
    out, err = capsys.readouterr()
    assert info.value.code == 2 and f"--save {tmp_path}: is a folder" in err and not out, err


def test_a_checkpoint_is_an_ordinary_file(tmp_path: Path, tiny_data: Path, capsys) -> None:
    ck = tmp_path / "ck.npz"
    old = os.umask(0o022)
    try:
        assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0
    finally:
        os.umask(old)
    assert ck.stat().st_mode & 0o777 == 0o644


def test_resume_on_other_data_is_refused(tiny_data: Path, tmp_path: Path, capsys) -> None:
    """The epochs in a checkpoint saw one dataset; going on with another would mix them."""
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0
    other = write_dataset(tmp_path / "other", n_train=64, n_test=32)
    code, _, err = run(capsys, "mlp", "--data-dir", str(other), "--resume", str(ck), "--epochs", "2")
    assert code == 1 and "trained on 96 training and 48 test images" in err and "found 64 and 32" in err, err


def test_resume_of_a_subset_run_uses_the_subset_whatever_is_installed(
    tiny_data: Path, tmp_path: Path, capsys, isolated_search: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run on the bundled subset goes on with the subset, even where $TOPGRAD_DATA now finds
    the full set (no flag could select the subset there)."""
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--no-download", "--limit", "16", "--save", str(ck), *FAST)[0] == 0
    monkeypatch.setenv("TOPGRAD_DATA", str(tiny_data))
    code, lines, err = run(capsys, "mlp", "--resume", str(ck), "--epochs", "2", "--no-progress")
    assert code == 0 and "images from bundled MNIST subset" in lines[1], (lines, err)
    assert "epoch 2/2" in lines[-2], lines


def test_resume_refuses_the_subset_for_a_folder_that_is_gone(
    tiny_data: Path, tmp_path: Path, capsys, isolated_search: Path,
) -> None:
    """With --limit the image counts can match; the images do not: a checkpoint trained on a
    folder does not go on with the bundled subset when the folder has gone."""
    folder, ck = write_dataset(tmp_path / "gone"), tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(folder), "--limit", "16", "--save", str(ck), *FAST)[0] == 0
    shutil.rmtree(folder)
    code, lines, err = run(capsys, "mlp", "--resume", str(ck), "--epochs", "2", "--no-download")
    assert code == 1 and f"its epochs trained on {folder}, which is gone, and the bundled subset" in err, err
    assert f"put the images back in {folder}, or pass that data's folder with --data-dir" in err, err
    assert not any(line.startswith("epoch") for line in lines)
    # it said "using the bundled subset" first, then refused it
    assert "using the bundled subset" not in err and err.count("topgrad-train: error:") == 1, err


@pytest.mark.parametrize("wrong", ["missing", "empty"])
def test_resume_with_a_wrong_data_dir_blames_it_not_the_checkpoints_folder(
    wrong: str, tiny_data: Path, tmp_path: Path, capsys,
) -> None:
    """A --data-dir without the images was reported as the checkpoint's own folder being "gone",
    though it was there: the error is about --data-dir, and dropping it goes on from that folder."""
    ck, bad = tmp_path / "ck.npz", tmp_path / wrong
    if wrong == "empty":
        bad.mkdir()
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--limit", "16", "--save", str(ck), *FAST)[0] == 0
    code, lines, err = run(capsys, "mlp", "--resume", str(ck), "--epochs", "2", "--data-dir", str(bad),
                           "--no-download")
    assert code == 1 and err.startswith(f"topgrad-train: error: {bad}: "), err
    assert err.rstrip().endswith(f"; {ck} trained on {tiny_data.resolve()}, which is still there: drop "
                                 "--data-dir to go on with it"), err
    assert "gone" not in err and not any(line.startswith("epoch") for line in lines), err
    assert run(capsys, "mlp", "--resume", str(ck), "--epochs", "2", "--no-download", "--no-progress")[0] == 0


def test_resume_with_a_wrong_data_dir_says_the_checkpoints_folder_is_gone_when_it_is(
    tmp_path: Path, capsys, isolated_search: Path,
) -> None:
    folder, ck, bad = write_dataset(tmp_path / "gone"), tmp_path / "ck.npz", tmp_path / "nowhere"
    assert run(capsys, "mlp", "--data-dir", str(folder), "--limit", "16", "--save", str(ck), *FAST)[0] == 0
    shutil.rmtree(folder)
    code, _, err = run(capsys, "mlp", "--resume", str(ck), "--epochs", "2", "--data-dir", str(bad),
                       "--no-download")
    assert code == 1 and err.startswith(f"topgrad-train: error: {bad}: no such folder"), err
    assert err.rstrip().endswith(f"; {ck} trained on {folder.resolve()}, which is gone"), err


def test_resume_from_an_emptied_folder_does_not_call_it_gone(
    tmp_path: Path, capsys, isolated_search: Path,
) -> None:
    """The checkpoint's folder is there without the images: it looks elsewhere, as for a folder
    that is gone, and says which of the two it is."""
    folder, ck = write_dataset(tmp_path / "emptied"), tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(folder), "--limit", "16", "--save", str(ck), *FAST)[0] == 0
    for file in folder.iterdir():
        file.unlink()
    code, _, err = run(capsys, "mlp", "--resume", str(ck), "--epochs", "2", "--no-download")
    where = folder.resolve()
    assert code == 1 and f"note: the checkpoint's data folder {where} no longer holds the mnist files; " \
        "looking for mnist elsewhere" in err, err
    assert f"{ck}: its epochs trained on {where}, which no longer holds the mnist files, and the bundled " \
        f"subset holds other images: put the images back in {where}" in err, err
    assert "gone" not in err, err


def test_resume_from_a_folder_whose_files_changed_does_not_call_it_gone(
    tmp_path: Path, capsys, isolated_search: Path,
) -> None:
    """The checkpoint's folder holds four files that no longer load (here: Fashion-MNIST's test
    labels beside MNIST's training files): the error is theirs, not "gone"."""
    folder, ck = write_dataset(tmp_path / "changed"), tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(folder), "--limit", "16", "--save", str(ck), *FAST)[0] == 0
    labels = data.bundled_subset().test_labels[:48].copy()
    labels[:12] = data.DATASETS["fashion-mnist"].first_test_labels
    idx.write(folder / "t10k-labels-idx1-ubyte.gz", labels)
    code, _, err = run(capsys, "mlp", "--resume", str(ck), "--epochs", "2", "--no-download")
    assert code == 1 and err.startswith(f"topgrad-train: error: {ck}: its epochs trained on "
                                        f"{folder.resolve()}, whose images do not load now ("), err
    assert "these test labels are fashion-mnist's" in err and "gone" not in err, err


def test_resume_of_a_subset_checkpoint_with_a_folder_says_to_drop_it(
    tiny_data: Path, tmp_path: Path, capsys,
) -> None:
    """The advice named the checkpoint's folder, which the bundled subset does not have."""
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--no-download", "--limit", "16", "--save", str(ck), *FAST)[0] == 0
    code, _, err = run(capsys, "mlp", "--resume", str(ck), "--epochs", "2", "--data-dir", str(tiny_data))
    assert code == 1 and "trained on bundled MNIST subset" in err, err
    assert "drop --data-dir: a resumed run without one takes the subset" in err, err
    assert run(capsys, "mlp", "--resume", str(ck), "--epochs", "2", *FAST[2:])[0] == 0


def test_resume_with_nothing_left_to_train_says_so(tiny_data: Path, tmp_path: Path, capsys) -> None:
    ck = tmp_path / "ck.npz"
    run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--epochs", "1")
    assert code == 0 and any("nothing to train" in line for line in lines), lines


def test_zero_epochs_without_a_checkpoint_says_what_happens(tiny_data: Path, capsys) -> None:
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--epochs", "0", "--no-progress")
    assert code == 0 and not any("checkpoint" in line for line in lines), lines
    assert any("nothing to train" in line and "--epochs 0" in line for line in lines), lines
    assert lines[-1].startswith("test accuracy: ") and not any(x.startswith("epoch ") for x in lines)


def test_zero_epochs_with_a_plot_writes_no_empty_chart(tiny_data: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--epochs", "0", "--plot", str(png),
                         "--no-progress")
    assert code == 0 and not png.exists()
    assert f"no epoch to plot, so {png} was not written" in lines, lines


def test_zero_epochs_with_profile_says_there_is_none(tiny_data: Path, capsys) -> None:
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--epochs", "0", "--profile",
                         "--no-progress")
    assert code == 0 and any(line.startswith("no epoch ran, so there is no profile") for line in lines), lines


def test_the_other_datasets_files_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """MNIST and Fashion-MNIST files look alike: the labels tell them apart."""
    subset = data.bundled_subset()
    folder = tmp_path / "loose"
    write_dataset(folder)
    labels = subset.train_labels[:96].copy()
    labels[:12] = data.DATASETS["mnist"].first_train_labels
    idx.write(folder / "train-labels-idx1-ubyte.gz", labels)
    code, _, err = run(capsys, "mlp", "--dataset", "fashion-mnist", "--data-dir", str(folder), *FAST)
    assert code == 1 and "these IDX files are mnist, not fashion-mnist" in err, err


@pytest.mark.parametrize(("path", "why"), [("arr.npy", "a single numpy array"), ("bad.npz", "damaged")])
def test_a_file_that_is_no_checkpoint_is_a_clear_error(
    path: str, why: str, tmp_path: Path, tiny_data: Path, capsys,
) -> None:
    target = tmp_path / path
    if path.endswith(".npy"):
        np.save(target, np.zeros(3))
    else:
        np.savez(target, **{"meta/format": np.array(checkpoint.FORMAT)})
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(target), *FAST)
    assert code == 1 and why in err and "Traceback" not in err, err


@pytest.mark.parametrize("flag", ["--seed", "--epochs", "--batch-size", "--limit"])
def test_a_number_a_checkpoint_cannot_hold_is_a_usage_error(flag: str, tiny_data: Path, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["mlp", "--data-dir", str(tiny_data), flag, str(2**63)])
    assert info.value.code == 2 and f"{flag} must be at most 2**63 - 1" in capsys.readouterr().err


@pytest.mark.parametrize("flag", ["--data-dir", "--save", "--resume", "--plot"])
def test_an_empty_path_is_a_usage_error(flag: str, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["mlp", flag, ""])
    assert info.value.code == 2 and f"{flag} needs a path" in capsys.readouterr().err


@pytest.mark.parametrize(("key", "value", "why"), [
    ("config/seed", np.array("abc"), "config/seed"),
    ("config/batch_size", np.array(0), "config/batch_size"),
    ("config/lr", np.array(np.nan), "config/lr"),
    ("history", np.zeros(2), "history of shape (2,)"),
    ("optim/0/step", None, "the state of parameter 0 has ['exp_avg', 'exp_avg_sq']"),
    ("optim/0/step", np.array(-5), "step must be a whole number >= 0, got -5"),
    ("optim/0/exp_avg", np.array(["a"]), "exp_avg must be a float32 or float64 array"),
    ("optim/x/step", np.array(1), "optim/x/step is not optim/INDEX/NAME"),
    ("optim/-1/step", np.array(1), "optim/-1/step is not optim/INDEX/NAME"),
    ("optim/0", np.array(1), "optim/0 is not optim/INDEX/NAME"),
    ("meta/epoch", np.array("x"), "meta/epoch missing or invalid"),
    ("optim/0/exp_avg_sq", np.full((784, 16), np.nan, np.float32), "optim/0/exp_avg_sq holds NaN or Inf"),
])
def test_a_checkpoint_with_a_damaged_value_is_a_clear_error(
    key: str, value: np.ndarray | None, why: str, tiny_data: Path, tmp_path: Path, capsys,
) -> None:
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0
    arrays = checkpoint.read(ck)
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    np.savez(ck, **arrays)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--epochs", "2",
                       "--no-progress")
    assert code == 1 and "damaged checkpoint" in err and why in err and "Traceback" not in err, err


def test_a_zip_error_is_cut_short(tmp_path: Path, tiny_data: Path, capsys, monkeypatch) -> None:
    """zipfile quotes the raw bytes of a damaged entry name: ~170 KB of them in one message."""
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0

    def damaged(*args: object, **kwargs: object) -> None:
        raise zipfile.BadZipFile("File name in directory and header differ: " + repr(bytes(range(256)) * 50))

    monkeypatch.setattr(checkpoint.np, "load", damaged)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), *FAST)
    assert code == 1 and "BadZipFile: File name in directory" in err and len(err) < 500, len(err)


def test_a_pickled_npz_is_refused_without_advice_to_unpickle(tmp_path: Path, tiny_data: Path, capsys) -> None:
    pickled = tmp_path / "objects.npz"
    np.savez(pickled, x=np.array([{"a": 1}], dtype=object))
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(pickled), *FAST)
    assert code == 1 and "not one written by topgrad-train" in err and "allow_pickle" not in err


def test_bad_checkpoint_is_a_clear_error(tiny_data: Path, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip file")
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(bad), *FAST)
    assert code == 1 and "bad.npz: not a readable .npz checkpoint" in err
    ck = tmp_path / "mlp.npz"
    run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)
    code, _, err = run(capsys, "conv", "--data-dir", str(tiny_data), "--resume", str(ck), *FAST)
    assert code == 1 and "saved for model 'mlp'" in err and "Traceback" not in err


def test_missing_data_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "mlp", "--data-dir", str(tmp_path / "nowhere"), *FAST)
    assert code == 1 and "nowhere: no such folder" in err
    (tmp_path / "a-file").write_text("")
    code, _, err = run(capsys, "mlp", "--data-dir", str(tmp_path / "a-file"), *FAST)
    assert code == 1 and "a-file: not a folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "mlp", "--data-dir", str(tmp_path / "empty"), *FAST)
    assert code == 1 and "topgrad-train: error:" in err and "train-images-idx3-ubyte" in err


@pytest.mark.parametrize(("n_train", "n_test", "which"), [(0, 8, "training"), (8, 0, "test")])
def test_a_dataset_without_images_is_a_clear_error(
    n_train: int, n_test: int, which: str, tmp_path: Path, capsys, make_dataset,
) -> None:
    folder = make_dataset(tmp_path / "empty", n_train=n_train, n_test=n_test)
    code, _, err = run(capsys, "mlp", "--data-dir", str(folder), *FAST)
    assert code == 1 and f"no images (a dataset needs at least one {which} image)" in err, err


def test_ctrl_c_before_training_is_a_message_not_a_traceback(
    tiny_data: Path, capsys, monkeypatch: pytest.MonkeyPatch,
) -> None:
    def interrupted(*args: object, **kwargs: object) -> None:  # Ctrl-C while reading or downloading data
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "load_dataset", interrupted)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), *FAST)
    assert code == 130 and "interrupted before training began; nothing was saved" in err, err


def test_ctrl_c_does_not_vouch_for_a_file_this_run_did_not_write(
    tiny_data: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run stopped before its first epoch says nothing was written to --save (an older run's
    file there is refused before training); a resumed run says where it can go on from."""
    new, resumed = tmp_path / "new.npz", tmp_path / "resumed.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(resumed), *FAST)[0] == 0

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_epoch", interrupted)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(new), *FAST)
    assert code == 130 and f"no epoch finished, so {new} was not written" in err and not new.exists(), err
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(resumed), "--epochs", "3",
                       "--no-progress")
    # the checkpoint still says 1 epoch: the way on repeats --epochs 3, or it would train nothing
    assert code == 130, err
    assert f"{resumed} still holds epoch 1: go on with --resume {resumed} --epochs 3" in err, err


def test_a_limit_above_the_dataset_says_so_on_stderr_with_the_other_notes(tiny_data: Path, capsys) -> None:
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--limit", "100000", *FAST)
    assert code == 0 and not any(line.startswith("note:") for line in lines), lines
    assert err.startswith(f"note: --limit 100000: {tiny_data} has {N_TRAIN} training and {N_TEST} test "
                          "images; using all of them\n"), err


def test_a_limit_above_the_test_split_only_names_that_split(tiny_data: Path, capsys) -> None:
    """--limit 20000 on MNIST said "has 60,000 training and 10,000 test images; using at most that
    many", as if 20,000 were too many training images; only the test split is capped."""
    limit = (N_TRAIN + N_TEST) // 2
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--limit", str(limit), *FAST)
    assert code == 0 and err.startswith(f"note: --limit {limit}: {tiny_data} has {N_TEST} test images; "
                                        f"testing on all of them ({limit} training images)\n"), err


def test_a_missing_file_is_named(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(tiny_data, partial)
    for f in partial.glob("t10k-labels*"):
        f.unlink()
    code, _, err = run(capsys, "mlp", "--data-dir", str(partial), *FAST)
    assert code == 1 and "t10k-labels-idx1-ubyte.gz missing" in err, err


def test_unknown_backend_is_a_clear_error(tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "mlp", "--backend", "no-such-backend", "--data-dir", str(tiny_data), *FAST)
    assert code == 1 and "no-such-backend" in err


def test_a_missing_default_backend_fails_before_any_data_is_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from topgrad import registry

    monkeypatch.setattr(registry, "_current", None)
    monkeypatch.setattr(registry, "_selected", None)
    monkeypatch.setenv("TOPGRAD_BACKEND", "no-such-backend")
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tmp_path / "absent"), "--no-download", *FAST)
    assert code == 1 and "no-such-backend" in err and "TOPGRAD_BACKEND" in err, err
    assert lines == [], lines  # no data line, no dataset error: the backend is resolved first


_CLASHING_PLUGINS = {  # plugin module -> its source; each is installed as a distribution of its own
    "clash_backend": """
        import topgrad

        class Add(topgrad.Op):
            pass

        class Mine(topgrad.Backend):
            ops = {"Add": Add}

        @topgrad.hookimpl
        def topgrad_backends():
            return [topgrad.BackendSpec("mine", Mine)]
        """,
    "clash_twin": """
        import topgrad

        @topgrad.hookimpl
        def topgrad_backends():
            return [topgrad.BackendSpec("mine", "clash_twin:Mine")]
        """,
    "clash_ops": """
        import topgrad

        class Add(topgrad.Op):
            pass

        @topgrad.hookimpl
        def topgrad_ops(backend):
            return {"Add": Add}
        """,
}


@pytest.mark.parametrize(("plugins", "error"), [
    (["clash_backend", "clash_twin"], "backend 'mine' is offered by two plugins"),
    (["clash_backend", "clash_ops"], "plugin 'clash_ops' gives op 'Add', which backend 'mine' already has"),
])
def test_plugins_that_clash_are_one_line_not_a_traceback(
    tmp_path: Path, plugins: list[str], error: str
) -> None:
    """Two plugins offering one backend, or an op the backend has, raised BackendConflictError or
    OpConflictError through `topgrad-train` as a traceback; now one line, status 1 as for a missing
    backend, before any data is read."""
    for module in plugins:
        info = tmp_path / f"{module}-0.1.dist-info"  # an installed distribution, as pip leaves it
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
        (info / "entry_points.txt").write_text(f"[topgrad]\n{module} = {module}\n")
        (tmp_path / f"{module}.py").write_text(textwrap.dedent(_CLASHING_PLUGINS[module]))
    env = {k: v for k, v in os.environ.items() if k != "TOPGRAD_BACKEND"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(tmp_path), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "topgrad_examples.train", "mlp", "--backend", "mine", "--data-dir",
         str(tmp_path / "absent"), "--no-download", *FAST],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr.startswith("topgrad-train: error: ") and error in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == "", result.stderr


def test_bad_numbers_are_usage_errors(tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["mlp", "--data-dir", str(tiny_data), "--batch-size", "0"])
    assert info.value.code == 2 and "--batch-size must be at least 1" in capsys.readouterr().err


def test_a_negative_seed_is_a_usage_error(tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["mlp", "--data-dir", str(tiny_data), "--seed", "-1"])
    assert info.value.code == 2 and "--seed must be at least 0" in capsys.readouterr().err


@pytest.mark.parametrize("lr", ["-1", "0", "nan", "inf", "1e39"])
def test_bad_learning_rate_is_a_usage_error(
    lr: str, tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["mlp", "--data-dir", str(tiny_data), "--lr", lr])
    assert info.value.code == 2 and "--lr must be a positive number" in capsys.readouterr().err


def test_plot(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "curves.png"
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--plot", str(png), *FAST)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert code == 1 and "pip install 'topgrad-examples[plot]'" in err and not png.exists()
    else:
        assert code == 0 and png.read_bytes().startswith(b"\x89PNG")


def test_plot_says_where_it_wrote_the_curves(tiny_data: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    plot = str(tmp_path / "noext")
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--plot", plot, *FAST)
    assert code == 0 and lines[-2] == f"loss and accuracy curves: {tmp_path / 'noext.png'}", lines
    assert (tmp_path / "noext.png").is_file() and lines[-1].startswith("test accuracy: ")


def test_a_plot_folder_that_cannot_be_written_fails_before_training(
    tiny_data: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("matplotlib")
    from topgrad_examples import files

    def refuse(*args: object, **kwargs: object) -> None:  # a read-only folder (root ignores chmod)
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(files, "_new_file", refuse)
    plot = str(tmp_path / "c.png")
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--plot", plot, *FAST)
    assert code == 1 and "cannot write there (Permission denied)" in err and not lines, (lines, err)


@pytest.mark.parametrize(("name", "why"), [("nodir/curves.png", "does not exist"),
                                         ("curves.txt", "cannot write .txt files")])
def test_a_bad_plot_path_fails_before_training(
    name: str, why: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--plot", name, *FAST)
    assert code == 1 and why in err and not any(line.startswith("epoch") for line in lines), err


def test_a_plot_at_the_checkpoints_path_is_refused(tiny_data: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    ck = tmp_path / "run.png"  # any name is a checkpoint's name
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), "--plot", str(ck),
                           *FAST)
    assert code == 1 and "is the --save checkpoint's path" in err and not lines, err


def test_a_closed_output_pipe_stops_quietly_and_keeps_the_epoch(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`topgrad-train ... | head -2`: the reader exits, the next print fails with BrokenPipeError.
    The epoch that just finished is saved before its line is printed, and the run stops with a
    line on stderr and a shell's SIGPIPE status, not a traceback."""

    class ReaderExited(io.StringIO):
        def write(self, text: str) -> int:
            if text.startswith("epoch 2/"):
                raise BrokenPipeError(32, "Broken pipe")
            return super().write(text)

    monkeypatch.setattr(sys, "stdout", ReaderExited())
    ckpt = tmp_path / "run.npz"
    code = train.main(["mlp", "--data-dir", str(tiny_data), "--epochs", "3", "--save", str(ckpt), *FAST[2:]])
    err = capsys.readouterr().err
    assert code == 141, err
    assert int(checkpoint.read(ckpt)["meta/epoch"]) == 2
    assert err.strip() == (f"topgrad-train: the output closed (the program reading it exited), so training "
                           f"stopped; {ckpt} holds epoch 2: go on with --resume {ckpt} --save {ckpt}")


def test_python_dash_m(tiny_data: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "topgrad_examples.train", "mlp", "--data-dir", str(tiny_data), *FAST],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"test accuracy: [01]\.\d{4}", result.stdout.strip().splitlines()[-1])


def test_profile_prints_the_op_table_after_the_first_epoch(
    tiny_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--profile", *FAST)
    assert code == 0
    start = lines.index("profile of epoch 1 (training steps only):")
    table = "\n".join(lines[start:])
    assert re.search(r"^Linear\s+\d+\s", table, re.MULTILINE), table
    assert "backward ms" in table and "saved" in table
    assert re.fullmatch(r"test accuracy: [01]\.\d{4}", lines[-1]), "the accuracy line stays last"


def test_warmup_is_at_most_a_fifth_of_the_run() -> None:
    """attention's 200 warm-up steps: a 126-step run (--limit 2000, two epochs) warms up for 25."""
    assert train.warmup_steps(200, 126) == 25 and train.warmup_steps(200, 5625) == 200


def test_learning_rate_schedule() -> None:
    assert train.learning_rate(0, 100, 1.0, warmup=10) == pytest.approx(0.1)
    assert train.learning_rate(9, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert train.learning_rate(10, 100, 1.0, warmup=10) == pytest.approx(1.0)
    assert train.learning_rate(55, 100, 1.0, warmup=10) == pytest.approx(0.5)
    assert train.learning_rate(100, 100, 1.0) == pytest.approx(0.0)
    lrs = [train.learning_rate(s, 50, 2e-3) for s in range(50)]
    assert all(a >= b for a, b in itertools.pairwise(lrs))


def test_batches_cover_the_data_once_per_epoch() -> None:
    seen = np.concatenate(list(train.batches(10, 3, seed=0, epoch=1)))
    assert sorted(seen.tolist()) == list(range(10))
    assert [len(b) for b in train.batches(10, 3, 0, 1)] == [3, 3, 3, 1]
    assert not np.array_equal(seen, np.concatenate(list(train.batches(10, 3, seed=0, epoch=2))))


def test_the_first_line_says_where_the_backend_runs(
    tiny_data: Path, capsys: pytest.CaptureFixture[str], backend_name: str, interpreted: bool,
) -> None:
    """A run in Triton's CPU interpreter (~3 images a second for conv) said only "backend triton";
    the backend's `where` now says so. numpy says nothing more."""
    code, lines, _ = run(capsys, "mlp", "--backend", backend_name, "--data-dir", str(tiny_data),
                         "--limit", "16", *FAST)
    assert code == 0
    if interpreted:
        assert "backend triton (Triton interpreter on CPU: slow), " in lines[0], lines[0]
    elif backend_name == "numpy":
        assert "backend numpy, " in lines[0], lines[0]


def test_an_unreadable_data_file_is_a_clear_error(
    tiny_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A data file without read permission (or with an I/O error) was a PermissionError traceback;
    it is one line naming the file (root ignores chmod: the read is made to fail)."""

    class Unreadable(type(Path())):  # type: ignore[misc]
        def read_bytes(self) -> bytes:
            if self.name.startswith("train-labels"):
                raise PermissionError(13, "Permission denied", str(self))
            return super().read_bytes()

    monkeypatch.setattr(idx, "Path", Unreadable)
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), *FAST)
    assert code == 1 and "Traceback" not in err and not lines, (lines, err)
    assert err.strip() == (f"topgrad-train: error: {tiny_data / 'train-labels-idx1-ubyte.gz'}: cannot read "
                           "it (Permission denied); give the user running topgrad-train read access to it, "
                           "or point at another folder"), err


def test_a_checkpoint_that_cannot_be_written_mid_run_stops_with_one_line(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The disk fills up during a long run: epoch 2's checkpoint cannot be written. That was an
    OSError traceback; now one line says what finished, that the file still holds epoch 1, and
    how to go on, and no temporary file is left behind."""
    savez, calls = np.savez, []

    def full_disk_on_the_second_save(*args: object, **kwargs: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        savez(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(np, "savez", full_disk_on_the_second_save)
    ck = tmp_path / "run.npz"
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST[2:],
                           "--epochs", "3")
    assert code == 1 and "Traceback" not in err, err
    assert lines[-1].startswith("epoch 1/3:"), lines  # epoch 2 was not announced as saved
    assert re.fullmatch(re.escape("topgrad-train: error: epoch 2 finished (test acc ") + r"[01]\.\d{4}"
                        + re.escape(f") but its checkpoint could not be written to {ck} (No space left on "
                                    f"device), so training stopped; {ck} holds epoch 1: go on with --resume "
                                    f"{ck} --save {ck}"), err.strip()), err
    assert int(checkpoint.read(ck)["meta/epoch"]) == 1 and sorted(tmp_path.iterdir()) == [ck, tiny_data]


def test_a_first_checkpoint_that_cannot_be_written_says_nothing_was_saved(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    ck = tmp_path / "run.npz"
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)
    assert code == 1 and "Traceback" not in err and not ck.exists(), err
    assert err.strip().endswith("(No space left on device), so training stopped; no epoch of this run was "
                                "saved"), err


def test_ctrl_c_while_the_plot_is_written_does_not_say_training_never_began(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C after the last epoch (matplotlib drawing the chart) said "interrupted before training
    began; nothing was saved" of a run whose every epoch was trained and saved."""
    pytest.importorskip("matplotlib")

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "plot_history", interrupted)
    ck, chart = tmp_path / "run.npz", tmp_path / "curves.png"
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck),
                           "--plot", str(chart), *FAST)
    assert code == 130 and "before training began" not in err and "Traceback" not in err, err
    assert lines[-1].startswith("epoch 1/1:"), lines
    assert "topgrad-train: interrupted after training ended (test accuracy: " in err, err
    assert err.strip().endswith(f"so {chart} may not be written; {ck} holds epoch 1"), err
    assert int(checkpoint.read(ck)["meta/epoch"]) == 1


def test_a_plot_name_ending_in_a_dot_is_reported_and_guarded_as_written(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """matplotlib writes `--plot run.` to run.png; the run said it wrote `run..png`, and a
    `--save run.png` checkpoint was replaced by the chart without a word."""
    pytest.importorskip("matplotlib")
    ck = tmp_path / "run.png"
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck),
                           "--plot", str(tmp_path / "run."), *FAST)
    assert code == 1 and "is the --save checkpoint's path" in err and not lines, (lines, err)
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--plot", str(tmp_path / "curves."),
                         *FAST)
    assert code == 0 and lines[-2] == f"loss and accuracy curves: {tmp_path / 'curves.png'}", lines
    assert (tmp_path / "curves.png").read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["curves.png", "tiny"]


@pytest.mark.parametrize(("name", "why"), [("afile/curves.png", "(afile is a file, not a folder)")])
def test_a_plot_path_blocked_by_a_file_fails_before_training(
    name: str, why: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A file where the chart's folder should be was called a folder that "does not exist"; a
    folder at the name the chart gets (`--plot taken` writes taken.png) failed only after training."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("")
    (tmp_path / "taken.png").mkdir()
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--plot", name, *FAST)
    assert code == 1 and why in err and not lines, (lines, err)


def test_output_that_cannot_be_written_stops_with_one_line_not_a_traceback(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`topgrad-train ... > log` on a disk that fills up (or `> /dev/full`): a line that cannot be
    written was an OSError traceback. During training the run stops as for a closed pipe, saying
    what was saved, with status 1; before training, one line too."""

    class FullDisk(io.StringIO):
        def __init__(self, fail_at: str) -> None:
            super().__init__()
            self.fail_at = fail_at

        def write(self, text: str) -> int:
            if text.startswith(self.fail_at):
                raise OSError(28, "No space left on device")
            return super().write(text)

    ckpt = tmp_path / "run.npz"
    monkeypatch.setattr(sys, "stdout", FullDisk("epoch 2/"))
    code = train.main(["mlp", "--data-dir", str(tiny_data), "--epochs", "3", "--save", str(ckpt), *FAST[2:]])
    err = capsys.readouterr().err
    assert code == 1 and int(checkpoint.read(ckpt)["meta/epoch"]) == 2, err
    full = "the output could not be written (No space left on device)"
    assert err.strip() == (f"topgrad-train: {full}, so training stopped; {ckpt} holds epoch 2: go on with "
                           f"--resume {ckpt} --save {ckpt}"), err
    monkeypatch.setattr(sys, "stdout", FullDisk("mlp on mnist"))
    code = train.main(["mlp", "--data-dir", str(tiny_data), *FAST])
    err = capsys.readouterr().err
    assert code == 1 and err.strip() == f"topgrad-train: {full}", err


# ---- --save never replaces another run's file ------------------------------------------------
def test_save_refuses_another_runs_checkpoint(tiny_data: Path, tmp_path: Path, capsys) -> None:
    """`--save` over the checkpoint of another run (here another model's) replaced it after the new
    run's first epoch, without a word: one forgotten --resume lost a long run."""
    ck = tmp_path / "ck.npz"
    assert run(capsys, "conv", "--data-dir", str(tiny_data), "--limit", "8", "--save", str(ck), *FAST)[0] == 0
    before = ck.read_bytes()
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)
    assert code == 1 and not lines and ck.read_bytes() == before, (lines, err)
    assert err.strip() == (
        f"topgrad-train: error: --save {ck}: the file holds epoch 1 of a conv run on mnist; to continue "
        f"that run add --resume {ck} (keeping --save {ck}); to start a new run give --save another path, "
        f"or delete {ck}"), err


def test_resume_of_another_models_checkpoint_says_so_first_with_the_command(
    tiny_data: Path, tmp_path: Path, capsys,
) -> None:
    """`conv --resume` of an mlp checkpoint found the model only after reading the data, so a
    differing --limit was reported first (fix it, then learn the model was wrong), and the message
    gave no command that works."""
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--limit", "8", "--save", str(ck), *FAST)[0] == 0
    code, lines, err = run(capsys, "conv", "--data-dir", str(tiny_data), "--limit", "4", "--resume", str(ck),
                           *FAST)
    assert code == 1 and not lines, (lines, err)
    assert err.strip() == (f"topgrad-train: error: {ck}: saved for model 'mlp', cannot resume 'conv'; to go "
                           f"on with it: topgrad-train mlp --resume {ck}"), err


def test_save_refuses_an_existing_file_that_is_no_checkpoint(tiny_data: Path, tmp_path: Path, capsys) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(notes), *FAST)
    assert code == 1 and not lines and notes.read_text() == "mine", (lines, err)
    assert err.strip() == (f"topgrad-train: error: --save {notes}: the file exists and is not a "
                           "topgrad-train checkpoint; give --save another path, or delete the file"), err


def test_save_to_the_resumed_checkpoint_is_allowed_however_it_is_spelled(
    tiny_data: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same file (compared with os.path.samefile) goes on; another run's file does not."""
    ck, other = tmp_path / "ck.npz", tmp_path / "other.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(other), *FAST)[0] == 0
    monkeypatch.chdir(tmp_path)
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", "ck.npz", "--save",
                           f"../{tmp_path.name}/ck.npz", "--epochs", "2", "--no-progress")
    assert code == 0 and int(checkpoint.read(ck)["meta/epoch"]) == 2, (lines, err)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", "ck.npz", "--save",
                       str(other), "--epochs", "3", "--no-progress")
    assert code == 1 and f"--save {other}: the file holds epoch 1 of a mlp run" in err, err
    assert int(checkpoint.read(other)["meta/epoch"]) == 1


# ---- a resume without --save: what an interrupt lost ---------------------------------------------
@pytest.mark.parametrize(("epochs", "calls", "lost"), [
    (3, 2, "epoch 2 finished but was not saved"), (4, 3, "epochs 2-3 finished but were not saved")])
def test_ctrl_c_after_a_resume_without_save_names_the_unsaved_epochs(
    epochs: int, calls: int, lost: str, tiny_data: Path, tmp_path: Path, capsys,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """It said "no epoch of this run finished" of a run whose epochs finished unsaved, and its way on
    again lacked --save, so the next Ctrl-C lost them too."""
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0
    real, count = train.train_epoch, []

    def interrupted_later(*args: object, **kwargs: object) -> float:
        count.append(1)
        if len(count) == calls:
            raise KeyboardInterrupt
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train, "train_epoch", interrupted_later)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck),
                       "--epochs", str(epochs), "--batch-size", "16", "--no-progress")
    assert code == 130 and err.strip().splitlines()[-1] == (
        f"topgrad-train: interrupted; {lost} (no --save); {ck} still holds epoch 1: go on with --resume "
        f"{ck} --epochs {epochs} --batch-size 16 --save {ck}"), err


# ---- ~ in every path option --------------------------------------------------------------------
@pytest.fixture
def home_and_work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """An empty home folder ($HOME) and an empty working folder (the current one)."""
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    return home, work


def test_a_tilde_in_save_and_resume_is_the_home_folder(
    tiny_data: Path, capsys, home_and_work: tuple[Path, Path],
) -> None:
    """`--save=~/ck.npz` (the shell leaves a `~` after `=` alone) wrote ./~/ck.npz and said "saved to
    ~/ck.npz"; --data-dir expanded it."""
    home, work = home_and_work
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save=~/ck.npz", *FAST)
    assert code == 0 and lines[-2].endswith(f", saved to {home / 'ck.npz'}"), lines
    assert (home / "ck.npz").is_file() and list(work.iterdir()) == []
    code, lines, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume=~/ck.npz", "--save=~/ck.npz",
                         "--epochs", "2", "--no-progress")
    assert code == 0 and lines[0] == f"resumed from {home / 'ck.npz'} after epoch 1", lines


def test_a_tilde_in_plot_is_the_home_folder(
    tiny_data: Path, capsys, home_and_work: tuple[Path, Path],
) -> None:
    pytest.importorskip("matplotlib")
    home, work = home_and_work
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--plot=~/curves.png", *FAST)
    assert code == 0 and lines[-2] == f"loss and accuracy curves: {home / 'curves.png'}", (lines, err)
    assert (home / "curves.png").is_file() and list(work.iterdir()) == []


# ---- the chart is replaced atomically ------------------------------------------------------------
def test_a_chart_that_cannot_be_written_keeps_the_earlier_one(tmp_path: Path, monkeypatch) -> None:
    """On a full disk matplotlib left a 0-byte file in place of the earlier chart; the chart is
    now written to a temporary file and renamed, with an ordinary file's mode."""
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure
    from topgrad_examples import plot

    chart, history = tmp_path / "curves.png", np.array([[1.0, 0.5, 2.0], [0.5, 0.7, 2.0]])
    old = os.umask(0o022)
    try:
        plot.plot_history(history, chart)
    finally:
        os.umask(old)
    good = chart.read_bytes()
    assert good.startswith(b"\x89PNG") and chart.stat().st_mode & 0o777 == 0o644

    def full_disk(self: object, fname: object, **kwargs: object) -> None:  # opens (truncates), then fails
        if isinstance(fname, (str, os.PathLike)):
            Path(fname).write_bytes(b"")
        else:
            fname.write(b"\x89PNG")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Figure, "savefig", full_disk)
    with pytest.raises(plot.PlotError, match=r"No space left on device"):
        plot.plot_history(history, chart)
    assert chart.read_bytes() == good and sorted(tmp_path.iterdir()) == [chart]


# ---- two runs with the same --save -------------------------------------------------------------
def _beside(ck: Path) -> Path:
    """The one file this run saved beside `ck`: NAME.PID-TOKEN.npz (the process id alone is not
    enough: in containers every run may be process 1, and the folder shared over NFS)."""
    name = rf"{ck.stem}\.{os.getpid()}-[0-9a-f]{{6}}\.npz"
    found = [p for p in ck.parent.iterdir() if re.fullmatch(name, p.name)]
    assert len(found) == 1, sorted(p.name for p in ck.parent.iterdir())
    return found[0]


def _other_runs_file(path: Path) -> bytes:
    """Put another process's file at `path` as a save does (a new file renamed over the old one)."""
    other = path.with_name("other.tmp")
    other.write_bytes(b"another run's checkpoint")
    os.replace(other, path)
    return path.read_bytes()


def test_a_checkpoint_replaced_by_another_run_is_kept_and_this_run_saves_beside_it(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Two runs given the same --save (started before either had saved) replaced each other's
    checkpoint after every epoch, each saying "saved to" it: one run's work was lost silently."""
    ck, theirs = tmp_path / "ck.npz", []
    train_epoch = train.train_epoch

    def other_run_saves_during_epoch_2(*args, **kwargs):
        if args[6] == 1:  # `epoch`, counted from 0: this run's epoch 1 is saved at ck
            theirs.append(_other_runs_file(ck))
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", other_run_saves_during_epoch_2)
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST[2:],
                           "--epochs", "3")
    beside = _beside(ck)
    assert code == 0 and ck.read_bytes() == theirs[0], err
    assert err.strip().endswith(
        f"note: another process wrote {ck}, which held this run's epoch 1, during this run (another run "
        f"with the same --save?); it is left alone, and this run saves its epochs to {beside} instead"), err
    assert lines[-3].endswith(f"saved to {beside}") and lines[-2].endswith(f"saved to {beside}"), lines
    assert int(checkpoint.read(beside)["meta/epoch"]) == 3


def test_a_file_that_appears_at_save_before_the_first_epoch_is_kept(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--save's check before training found no file; another run wrote one during the first epoch."""
    ck, theirs = tmp_path / "ck.npz", []
    train_epoch = train.train_epoch

    def epoch_while_another_run_saves(*args, **kwargs):
        theirs.append(_other_runs_file(ck))
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", epoch_while_another_run_saves)
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)
    beside = _beside(ck)
    assert code == 0 and ck.read_bytes() == theirs[0] and f"this run saves its epochs to {beside}" in err, err
    assert int(checkpoint.read(beside)["meta/epoch"]) == 1 and lines[-2].endswith(f"saved to {beside}")


def test_a_checkpoint_removed_during_the_run_is_written_again(tiny_data: Path, tmp_path: Path, capsys,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A file deleted since this run's last save holds nobody's work: the next save goes there."""
    ck, save = tmp_path / "ck.npz", checkpoint.save

    def save_then_delete(*args, **kwargs):
        written = save(*args, **kwargs)
        ck.unlink()
        return written

    monkeypatch.setattr(checkpoint, "save", save_then_delete)
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST[2:],
                           "--epochs", "2")
    assert code == 0 and "another process" not in err and lines[-2].endswith(f"saved to {ck}"), (lines, err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_another_runs_file_landing_just_after_this_runs_rename_is_kept(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The file a save wrote was identified by a stat after its rename: another run's file renamed
    over it in between was taken for this run's, and the next save replaced it silently. The
    identity is now the temporary file's, taken before the rename."""
    ck, replace, theirs = tmp_path / "ck.npz", os.replace, []

    def another_run_renames_right_after(src: Any, dst: Any) -> None:
        replace(src, dst)
        if Path(dst) == ck and not theirs:
            other = tmp_path / "other.tmp"
            other.write_bytes(b"another run's checkpoint")
            replace(other, ck)
            theirs.append(ck.read_bytes())

    monkeypatch.setattr(os, "replace", another_run_renames_right_after)
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST[2:],
                           "--epochs", "2")
    assert code == 0 and ck.read_bytes() == theirs[0], err
    beside = _beside(ck)
    assert f"this run saves its epochs to {beside} instead" in err, err
    assert lines[-2].endswith(f"saved to {beside}"), lines
    assert int(checkpoint.read(beside)["meta/epoch"]) == 2


def test_a_resume_checkpoint_replaced_by_another_run_is_not_said_to_hold_its_epoch(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """--resume ck --save ck; another run replaced ck, this run moved its saves beside it, and its
    first one there was cut short: the advice was "ck still holds epoch 1: go on with --resume ck",
    though ck was the other run's file by then."""
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0
    train_epoch = train.train_epoch

    def another_run_saves_meanwhile(*args: Any, **kwargs: Any) -> float:
        _other_runs_file(ck)
        return train_epoch(*args, **kwargs)

    def cut_short(*args: Any, **kwargs: Any) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "train_epoch", another_run_saves_meanwhile)
    monkeypatch.setattr(np, "savez", cut_short)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--save", str(ck),
                       *FAST[2:], "--epochs", "3")
    assert code == 130 and "still holds" not in err, err
    assert err.strip().endswith(
        f"topgrad-train: interrupted; epoch 2's save was cut short; {ck} held epoch 1 when this run began, "
        "but another process has replaced it since (another run with the same --save?)"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.npz", "tiny"]


def test_a_resume_checkpoint_replaced_during_a_diverged_run_is_not_offered_either(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0

    def diverges_while_another_run_saves(*args: Any, **kwargs: Any) -> float:
        _other_runs_file(ck)
        raise train.DivergedError("in epoch 2/2, step 1/6: the training loss is nan")

    monkeypatch.setattr(train, "train_epoch", diverges_while_another_run_saves)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), *FAST[2:],
                       "--epochs", "2")
    assert code == 1 and "still holds" not in err and err.strip().endswith(
        f"{ck} held epoch 1, the last good one, when this run began, but another process has replaced it "
        "since (another run with the same --save?)"), err


# ---- a resumed run with another --epochs ---------------------------------------------------------
def test_resuming_with_other_epochs_notes_the_recomputed_schedule(tiny_data: Path, tmp_path: Path,
                                                                  capsys) -> None:
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--save", str(ck),
                       "--epochs", "2", "--no-progress")
    assert code == 0 and err.strip() == (
        "note: --epochs 2, the checkpoint's run planned 1: the cosine learning-rate schedule is "
        "recomputed over the new total of 2 epochs from epoch 2 on, so the result differs from a "
        "straight 2-epoch run"), err
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--save", str(ck),
                       "--epochs", "3", "--batch-size", "16", "--no-progress")
    assert code == 0 and "planned 2" in err  # the checkpoint now plans 2 epochs
    for same in (["--epochs", "3"], []):  # the checkpoint's own total, given or not: no note
        code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), *same,
                           "--no-progress")
        assert code == 0 and "note" not in err, err


def test_resuming_with_fewer_epochs_does_not_call_the_schedule_stretched(
    tiny_data: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A run planned for 10 epochs, stopped after 1 and resumed with --epochs 2: its schedule is
    squeezed, not "stretched" as the note said."""
    ck, train_epoch = tmp_path / "ck.npz", train.train_epoch

    def stop_in_epoch_2(*args, **kwargs):
        if args[6] == 1:
            raise KeyboardInterrupt
        return train_epoch(*args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", stop_in_epoch_2)
    code = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST[2:], "--epochs", "10")[0]
    assert code == 130
    monkeypatch.setattr(train, "train_epoch", train_epoch)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--save", str(ck),
                       "--epochs", "2", "--no-progress")
    assert code == 0 and "stretched" not in err and (
        "the checkpoint's run planned 10: the cosine learning-rate schedule is recomputed over the new "
        "total of 2 epochs from epoch 2 on") in err, err


# ---- a checkpoint of another format version --------------------------------------------------------
def test_a_checkpoint_of_another_format_version_says_which_version_reads_it(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    ck = tmp_path / "ck.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0
    arrays = dict(checkpoint.read(ck))
    arrays["meta/format"] = np.array("topgrad-examples-checkpoint/2")
    np.savez(ck, **arrays)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), *FAST)
    assert code == 1 and err.strip() == (
        f"topgrad-train: error: {ck}: a topgrad-examples checkpoint of format 2; this version reads "
        "format 1: use the topgrad-examples version that wrote it"), err
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)
    assert code == 1 and err.strip() == (
        f"topgrad-train: error: --save {ck}: the file is a topgrad-train checkpoint of format 2; this "
        "version reads format 1: to continue that run use the topgrad-examples version that wrote it; to "
        f"start a new run give --save another path, or delete {ck}"), err


# ---- --plot .png -------------------------------------------------------------------------------------
def test_a_plot_name_that_is_only_a_suffix_is_refused(tiny_data: Path, tmp_path: Path, capsys,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """`--plot .png` wrote `.png.png`, a hidden file: the user meant a format, not a name."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--plot", ".png", *FAST)
    assert code == 1 and not lines and err.strip() == (
        "topgrad-train: error: --plot .png: the name is only a suffix, so the chart would be .png.png; "
        "give the file a name, e.g. curves.png"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny"]


def test_the_epochs_loss_is_the_mean_over_images_with_a_partial_last_batch() -> None:
    """It was the mean of the batch means: a last batch of one image weighed as much as 128 (the
    models audit: 2.81 reported against 3.20 over the same 129 images, the model unchanged)."""
    import topgrad
    from topgrad_examples.loss import cross_entropy
    from topgrad_examples.models import TrainDefaults, build

    rng = np.random.default_rng(0)
    images = rng.standard_normal((129, 28, 28, 1)).astype(np.float32)
    labels = rng.integers(0, 10, 129)
    model = build("mlp", seed=0)
    recipe = TrainDefaults(optimizer="sgd", lr=0.0, batch_size=128, epochs=1, momentum=0.0)
    optimizer = topgrad.optim.SGD(model.parameters(), lr=0.0)
    reported = train.train_epoch(model, optimizer, images, labels, recipe, seed=0, epoch=0, total_epochs=1,
                                 progress=False)
    with topgrad.no_grad():
        whole = cross_entropy(model(topgrad.Tensor(images), training=True), labels).item()
    assert reported == pytest.approx(whole, rel=1e-5)
