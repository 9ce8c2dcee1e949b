"""`topgrad-train`'s contract with its caller: exit statuses, a diverged run, progress in logs."""

from __future__ import annotations

import gzip
import io
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from topgrad_examples import checkpoint, train

FAST = ["--epochs", "1", "--batch-size", "16", "--no-progress"]
DIVERGING = pytest.mark.filterwarnings("error::RuntimeWarning")  # the one-line message says it all
POSIX_SIGNALS = pytest.mark.skipif(
    sys.platform == "win32", reason="on Windows, os.kill(pid, SIGTERM) and send_signal are TerminateProcess: "
                                    "sent to this process it would end pytest; no handler ever runs")
STOP_SIGNALS = [n for n in ("SIGTERM", "SIGHUP") if hasattr(signal, n)]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str], str]:
    code = train.main(list(argv))
    out, err = capsys.readouterr()
    return code, out.strip().splitlines(), err


# ---- exit statuses ---------------------------------------------------------------------------
def test_help_documents_the_exit_statuses(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["--help"])
    out = capsys.readouterr().out
    assert info.value.code == 0
    statuses = out[out.index("exit status"):]
    for status, meaning in [("0", "success"), ("1", "failure"), ("2", "usage"), ("130", "Ctrl-C"),
                            ("143", "SIGTERM"), ("129", "SIGHUP"), ("141", "pipe")]:
        assert re.search(rf"^\s+{status}\s+.*{meaning}", statuses, re.MULTILINE | re.IGNORECASE), statuses


def test_help_shows_each_models_defaults_and_where_data_is_looked_for(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`--batch-size`, `--lr` and `--epochs` default "per model": the help says what each is, and
    the order of places searched for data ($TOPGRAD_DATA is otherwise only named by errors)."""
    from topgrad_examples.models import MODELS

    with pytest.raises(SystemExit):
        train.main(["--help"])
    out = capsys.readouterr().out
    for name, cls in MODELS.items():
        d = cls.defaults
        line = f"  {name:<10} {d.optimizer}, --lr {d.lr:g}, --batch-size {d.batch_size}, --epochs {d.epochs}"
        assert line in out, out
    places = " ".join(out[out.index("data (without --data-dir)"):out.index("exit status")].split())
    assert re.search(r"\$TOPGRAD_DATA, then /usr/share/datasets/.*then \$XDG_CACHE_HOME/topgrad/.*then a "
                     r"download into that cache; MNIST falls back to a bundled subset", places), places


def test_version_names_the_packages(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(["--version"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    packages = r"topgrad-examples \S+, topgrad-core \S+(, topgrad-\S+ \S+)*"
    assert re.fullmatch(rf"topgrad-train: {packages}\n", out), out
    # and the installed backends' packages: numpy's, which every test session installs
    assert re.search(r", topgrad-numpy \S+", out), out


@pytest.mark.parametrize("argv", [["--no-such-flag"], ["no-such-model"], ["mlp", "--epochs", "many"],
                                  ["mlp", "--batch-size", "0"], ["mlp", "--save", ""],
                                  ["mlp", "--backend", ""]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        train.main(argv)
    assert info.value.code == 2 and "usage: topgrad-train" in capsys.readouterr().err


def test_runtime_failures_exit_1(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Status 2 is argparse's: a command line it could not take (a folder as --save is one:
    test_a_file_option_naming_a_folder_is_a_usage_error_however_spelled). A command line that is
    fine but a run that fails (data, checkpoint, backend) is status 1, with one line on stderr."""
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a checkpoint")
    failures = {
        "missing data": ["--data-dir", str(tmp_path / "nowhere")],
        "unreadable checkpoint": ["--data-dir", str(tiny_data), "--resume", str(bad)],
        "a file in --save's way": ["--data-dir", str(tiny_data), "--save", str(bad / "ck.npz")],
        "unknown backend": ["--data-dir", str(tiny_data), "--backend", "no-such-backend"],
    }
    for what, argv in failures.items():
        code, lines, err = run(capsys, "mlp", *argv, *FAST)
        assert code == 1, (what, code, err)
        assert err.startswith("topgrad-train: error: ") and err.count("\n") == 1, (what, err)
        assert not any(line.startswith("test accuracy") for line in lines), (what, lines)


def test_a_failed_save_exits_1(tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez", full_disk)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(tmp_path / "ck.npz"), *FAST)
    assert code == 1 and "could not be written" in err, err


def _interruptible() -> None:
    """In the child before exec: SIGINT as a terminal delivers it. A shell's background job (`cmd &`,
    nohup) starts with SIGINT ignored, which children inherit, and Python then installs no
    KeyboardInterrupt handler: the run would go on training."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _signal_after_epoch_one(tiny_data: Path, ck: Path, number: int | tuple[int, ...],
                            **popen: Any) -> tuple[int, str]:
    """Train in another process until it has saved epoch 1, then send it the signal `number` (or
    each of several, back to back): its exit status and stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "topgrad_examples.train", "mlp", "--data-dir", str(tiny_data), "--epochs",
         "100000", "--batch-size", "16", "--save", str(ck), "--no-progress"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen,
    )
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("epoch 1/"):
                for each in number if isinstance(number, tuple) else (number,):
                    proc.send_signal(each)
                break
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, err


@POSIX_SIGNALS
def test_ctrl_c_exits_130_after_saying_what_was_saved(tiny_data: Path, tmp_path: Path) -> None:
    """A real SIGINT, in another process, once an epoch has been saved."""
    ck = tmp_path / "run.npz"
    code, err = _signal_after_epoch_one(tiny_data, ck, signal.SIGINT, preexec_fn=_interruptible)
    assert code == 130, err
    epoch = int(checkpoint.read(ck)["meta/epoch"])
    assert epoch >= 1 and err.strip().endswith(
        f"interrupted; {ck} holds epoch {epoch}: go on with --resume {ck} --save {ck}"), err
    assert "Traceback" not in err, err


@POSIX_SIGNALS
def test_sigterm_exits_143_after_saying_what_was_saved(tiny_data: Path, tmp_path: Path) -> None:
    """`docker stop`, a batch system's preemption: a real SIGTERM ended the run without a word,
    status -15, as if killed; it stops as Ctrl-C does."""
    ck = tmp_path / "run.npz"
    code, err = _signal_after_epoch_one(tiny_data, ck, signal.SIGTERM)
    assert code == 143, err
    epoch = int(checkpoint.read(ck)["meta/epoch"])
    assert err.strip().endswith(
        f"interrupted by SIGTERM; {ck} holds epoch {epoch}: go on with --resume {ck} --save {ck}"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.npz", "tiny"]  # no hidden temporary file


class _UnhandledError(Exception):
    """Raised by the test's own handler: the signal reached a run that does not handle it."""


def _stops_in_the_save(name: str, tiny_data: Path, ck: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Run one epoch with --save ck, under a handler of the test's own for the signal `name` that
    the run's save sends itself: the run stops as for Ctrl-C (status 128 + the signal, one line),
    ck is not written, no temporary file is left, and the handlers it found are back."""
    number = getattr(signal, name)

    def unhandled(signum: int, frame: object) -> None:
        raise _UnhandledError(name)

    previous, ctrl_c = signal.signal(number, unhandled), signal.getsignal(signal.SIGINT)
    try:
        code = train.main(["mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST])
        assert signal.getsignal(number) is unhandled and signal.getsignal(signal.SIGINT) is ctrl_c
    finally:
        signal.signal(number, previous)
    err = capsys.readouterr().err
    assert code == 128 + number and err.strip() == (
        f"topgrad-train: interrupted by {name}; epoch 1's save was cut short, so {ck} was not written"), err
    assert sorted(p.name for p in ck.parent.iterdir()) == ["tiny"]


@POSIX_SIGNALS
@pytest.mark.parametrize("name", STOP_SIGNALS)
def test_a_stop_signal_while_a_checkpoint_is_written_leaves_no_temporary_file(
    name: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM or SIGHUP while the checkpoint's temporary file was written left `.run.npz.XXXX.tmp`
    behind for good; now the run stops as for Ctrl-C (the temporary file removed, one line, status
    128 + the signal), and the handlers it found are back afterwards."""
    number = getattr(signal, name)
    ck = tmp_path / "run.npz"
    savez = np.savez

    def savez_then_signal(file: Any, **arrays: Any) -> None:
        savez(file, **arrays)
        os.kill(os.getpid(), number)

    monkeypatch.setattr(np, "savez", savez_then_signal)
    _stops_in_the_save(name, tiny_data, ck, capsys)


@POSIX_SIGNALS
@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on Windows")
def test_a_sighup_ignored_before_stays_ignored(tiny_data: Path, capsys,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """`nohup topgrad-train ...`: a run started with SIGHUP ignored goes on when its terminal closes."""
    evaluate = train.evaluate

    def hangup_then_evaluate(*args: Any, **kwargs: Any) -> float:
        os.kill(os.getpid(), signal.SIGHUP)
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", hangup_then_evaluate)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert run(capsys, "mlp", "--data-dir", str(tiny_data), *FAST)[0] == 0
    finally:
        signal.signal(signal.SIGHUP, previous)


@POSIX_SIGNALS
@pytest.mark.parametrize("name", STOP_SIGNALS)
def test_a_second_stop_signal_while_the_save_is_undone_leaves_no_temporary_file(
    name: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A closed terminal sends SIGHUP twice (the kernel's, then the shell's): the second landed in
    the removal of the checkpoint's temporary file and left it. The first signal now sets both stop
    signals and SIGINT to be ignored until the run has said what it saved; its handlers come back."""
    number, ck = getattr(signal, name), tmp_path / "run.npz"
    savez, unlink, sent = np.savez, Path.unlink, []

    def savez_then_signal(file: Any, **arrays: Any) -> None:
        savez(file, **arrays)
        sent.append(number)
        os.kill(os.getpid(), number)

    def unlink_after_a_second_signal(self: Path, *args: Any, **kwargs: Any) -> None:
        if sent and self.name.endswith(".tmp"):
            os.kill(os.getpid(), number)
        unlink(self, *args, **kwargs)

    monkeypatch.setattr(np, "savez", savez_then_signal)
    monkeypatch.setattr(Path, "unlink", unlink_after_a_second_signal)
    _stops_in_the_save(name, tiny_data, ck, capsys)


def _three_saved_epochs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tiny_data: Path, ck: Path,
    in_epoch_2: Callable[[], None], composing: Callable[[], None],
) -> tuple[int, str]:
    """Three epochs with --save ck, `in_epoch_2` called as epoch 2 begins and `composing` each time
    the run starts to work out what it saved: the exit status and stderr."""
    train_epoch, what_was_saved = train.train_epoch, train.what_was_saved

    def epoch_2_calls(*args: Any, **kwargs: Any) -> float:
        if args[6] == 1:
            in_epoch_2()
        return train_epoch(*args, **kwargs)

    def composing_calls(*args: Any, **kwargs: Any) -> str:
        composing()
        return what_was_saved(*args, **kwargs)

    monkeypatch.setattr(train, "train_epoch", epoch_2_calls)
    monkeypatch.setattr(train, "what_was_saved", composing_calls)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST[2:],
                       "--epochs", "3")
    return code, err


@POSIX_SIGNALS
def test_a_second_sigterm_while_the_message_is_composed_is_ignored(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """SIGTERM in epoch 2, and another while the run worked out what it had saved: it said
    "interrupted by SIGTERM before training began; nothing was saved", though run.npz held epoch 1."""
    def sigterm() -> None:
        os.kill(os.getpid(), signal.SIGTERM)

    ck = tmp_path / "run.npz"
    code, err = _three_saved_epochs(capsys, monkeypatch, tiny_data, ck, in_epoch_2=sigterm, composing=sigterm)
    assert code == 143 and err.strip() == (
        f"topgrad-train: interrupted by SIGTERM; {ck} holds epoch 1: go on with --resume {ck} "
        f"--save {ck}"), err


def test_an_interrupt_after_training_began_never_says_nothing_was_saved(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C while the run composed its message about a closed output: main's fallback for an
    interrupt said "before training began; nothing was saved" though the run had saved epoch 1."""
    calls = []

    def output_closes() -> None:
        raise BrokenPipeError

    def ctrl_c_once() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    ck = tmp_path / "run.npz"
    code, err = _three_saved_epochs(capsys, monkeypatch, tiny_data, ck, in_epoch_2=output_closes,
                                    composing=ctrl_c_once)
    assert code == 130 and err.strip() == (
        f"topgrad-train: interrupted; {ck} holds epoch 1: go on with --resume {ck} --save {ck}"), err


def _close_fd(fd: int) -> Any:
    """For preexec_fn: the child starts with `fd` closed, as after the shell's `>&-` or `2>&-`."""
    return lambda: os.close(fd)


def test_a_closed_stdout_is_output_that_cannot_be_written(tiny_data: Path) -> None:
    """`topgrad-train ... >&-`: Python sets sys.stdout to None and print() writes nothing, so the run
    exited 0 with its result lost. It is output that cannot be written: status 1, one line on stderr."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "topgrad_examples.train", "mlp", "--data-dir", str(tiny_data), *FAST],
        stderr=subprocess.PIPE, text=True, env=env, timeout=300, preexec_fn=_close_fd(1),
    )
    assert done.returncode == 1, done.stderr
    err = done.stderr
    assert err.count("\n") == 1 and err.startswith("topgrad-train: stdout is closed"), err


def test_a_closed_stderr_keeps_notes_off_stdout(tmp_path: Path) -> None:
    """`2>&-`: print(..., file=sys.stderr) with sys.stderr None writes to stdout, mixing the data notes
    into the results; they are dropped instead."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOPGRAD_DATA": str(tmp_path / "nowhere"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run(
        [sys.executable, "-m", "topgrad_examples.train", "mlp", "--no-download", "--limit", "16", *FAST],
        stdout=subprocess.PIPE, text=True, env=env, timeout=300, preexec_fn=_close_fd(2),
    )
    lines = done.stdout.strip().splitlines()
    assert done.returncode == 0 and lines[-1].startswith("test accuracy: "), lines
    assert not any("TOPGRAD_DATA" in line or "bundled subset" in line for line in lines), lines


# ---- a diverged run ------------------------------------------------------------------------------
@DIVERGING
def test_a_diverged_run_stops_with_one_line_and_status_1(
    tiny_data: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """The loss became NaN and the run went on to print `test accuracy` with status 0."""
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--lr", "1e30", "--epochs", "2",
                           "--batch-size", "16", "--no-progress")
    assert code == 1, (lines, err)
    assert len(err.strip().splitlines()) == 1, err
    assert re.fullmatch(
        r"topgrad-train: error: the run diverged in epoch 1/2, step \d/6: the training loss is "
        r"(nan|inf|-inf) \(the last finite batch loss: \d+\.\d{4}, step \d\); try a lower --lr than "
        r"1e\+30; nothing was saved", err.strip()), err
    assert not any(line.startswith(("epoch 1/2:", "test accuracy")) for line in lines), lines


@DIVERGING
def test_divergence_keeps_the_last_good_checkpoint(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    ck = tmp_path / "run.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0
    good = ck.read_bytes()
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--save",
                           str(ck), "--lr", "1e30", "--epochs", "3", "--no-progress")
    assert code == 1 and "the run diverged in epoch 2/3, step " in err, (lines, err)
    assert err.strip().endswith(  # --epochs 3 repeated: the checkpoint's run has 1 epoch
        f"try a lower --lr than 1e+30; {ck} still holds epoch 1, the last good one: go on from it with "
        f"--resume {ck} --epochs 3 --save {ck} --lr LOWER"), err
    assert ck.read_bytes() == good  # not overwritten with NaN weights
    arrays = checkpoint.read(ck)
    assert all(np.isfinite(v).all() for k, v in arrays.items() if k.startswith("model/"))


def test_non_finite_weights_are_not_saved(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The last step of an epoch can make the weights NaN while every batch loss was finite: that
    epoch is not saved over the good one before it."""
    real, calls = train.train_epoch, []

    def poisoned_in_epoch_2(model, *args: object, **kwargs: object) -> float:
        calls.append(1)
        loss = real(model, *args, **kwargs)  # type: ignore[arg-type]
        if len(calls) == 2:
            weight = model.parameters()[0]
            bad = weight.numpy().copy()
            bad.flat[0] = np.nan
            weight.data = train.topgrad.Tensor(bad).data
        return loss

    monkeypatch.setattr(train, "train_epoch", poisoned_in_epoch_2)
    ck = tmp_path / "run.npz"
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST[2:],
                           "--epochs", "3")
    assert code == 1 and lines[-1].startswith("epoch 1/3:"), (lines, err)
    assert re.fullmatch(
        re.escape("topgrad-train: error: the run diverged in epoch 2/3: hidden.0.w is NaN or infinite after "
                  "its last step (train loss ") + r"\d+\.\d{4}" + re.escape(
                  f"); try a lower --lr than 0.002; {ck} keeps epoch 1, the last good one: go on from it "
                  f"with --resume {ck} --save {ck} --lr LOWER"), err.strip()), err
    assert int(checkpoint.read(ck)["meta/epoch"]) == 1


def test_a_checkpoint_with_non_finite_weights_is_not_resumed(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """Earlier versions saved the NaN weights of a diverged run; going on from them cannot work."""
    ck = tmp_path / "run.npz"
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(ck), *FAST)[0] == 0
    arrays: dict[str, Any] = dict(checkpoint.read(ck))
    arrays["model/hidden.0.b"] = np.full_like(arrays["model/hidden.0.b"], np.nan)
    np.savez(ck, **arrays)
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--resume", str(ck), "--epochs", "2",
                           "--no-progress")
    assert code == 1 and not any(line.startswith("epoch") for line in lines), (lines, err)
    assert err.strip() == (f"topgrad-train: error: {ck}: hidden.0.b is NaN or infinite: the run that "
                           "saved it had diverged; go on from an earlier checkpoint, or start again with a "
                           "lower --lr")


# ---- progress ----------------------------------------------------------------------------------
class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_on_a_terminal_is_a_bar(
    tiny_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    code, _, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--epochs", "1", "--batch-size", "16")
    shown = terminal.getvalue()
    assert code == 0 and "\r" in shown and "epoch 1/1" in shown and "loss=" in shown and "img/s" in shown


class UnsizedTerminal(Terminal):
    """A terminal with a file descriptor, whose size os.get_terminal_size is made to report."""

    def fileno(self) -> int:
        return 2


@pytest.mark.parametrize(("size", "width"), [((0, 0), 79), ((100, 0), 99)])
def test_progress_on_a_terminal_that_reports_no_size_is_a_bar(
    size: tuple[int, int], width: int, tiny_data: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`script -qc CMD log </dev/null` and `docker exec -t` before its first resize give a terminal
    of 0 by 0 (or `stty cols 100` alone: 0 lines): tqdm drew nothing there, and no plain lines came
    either (stderr is a terminal). An 80 by 24 terminal is assumed for a 0."""
    terminal = UnsizedTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setattr(os, "get_terminal_size", lambda fd=None: os.terminal_size(size))
    code, _, _ = run(capsys, "mlp", "--data-dir", str(tiny_data), "--epochs", "1", "--batch-size", "16")
    drawn = [line for line in terminal.getvalue().split("\r") if line.strip()]
    assert code == 0 and any("epoch 1/1" in x and "loss=" in x and "img/s" in x for x in drawn), drawn
    assert all(len(line) <= width for line in drawn), drawn


def test_progress_in_a_log_is_plain_lines(tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """stderr to a file or a pipe (CI, `> log 2>&1`): tqdm's carriage returns filled the log with
    redrawn bars. A plain line at each quarter of an epoch instead (the epoch's own line ends it)."""
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--epochs", "2", "--batch-size", "16")
    assert code == 0 and "\r" not in err and "\x1b" not in err, repr(err)
    lines = err.strip().splitlines()
    assert [re.sub(r", loss .*", "", line) for line in lines] == [
        "epoch 1/2: 33% (32/96 img)", "epoch 1/2: 50% (48/96 img)", "epoch 1/2: 83% (80/96 img)",
        "epoch 2/2: 33% (32/96 img)", "epoch 2/2: 50% (48/96 img)", "epoch 2/2: 83% (80/96 img)"], lines
    assert all(re.search(r", loss \d+\.\d{4}, [\d,]+ img/s$", line) for line in lines), lines


def test_no_progress_shows_nothing_anywhere(
    tiny_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), *FAST)[0] == 0 and terminal.getvalue() == ""
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), *FAST)[2] == ""


def test_no_progress_also_quiets_a_download(
    tiny_data: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """load_dataset shows a download's bytes by default; --no-progress passed nothing to it."""
    asked: list[bool] = []
    real = train.load_dataset

    def recording(*args: Any, **kwargs: Any) -> Any:
        asked.append(kwargs.get("progress", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "load_dataset", recording)
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), *FAST)[0] == 0
    assert run(capsys, "mlp", "--data-dir", str(tiny_data), "--epochs", "1", "--batch-size", "16")[0] == 0
    assert asked == [False, True]


# ---- data files --------------------------------------------------------------------------------
def test_a_truncated_gz_is_one_line_naming_it(tiny_data: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tiny_data / "train-images-idx3-ubyte.gz"
    packed = path.read_bytes()
    assert gzip.decompress(packed)  # a good file, cut short:
    path.write_bytes(packed[: len(packed) * 2 // 3])
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), *FAST)
    assert code == 1 and not lines, (lines, err)
    assert err.count("\n") == 1 and err.startswith(f"topgrad-train: error: {path}: corrupt or truncated "
                                                   "gzip data"), err


# ---- found by an audit of the command (round 54) ----------------------------------------------
@pytest.mark.parametrize("option", ["--save", "--plot"])
def test_a_file_option_ending_in_a_separator_is_refused(
    option: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """`--save keep.npz/` passed the "file already there" check (isfile of 'keep.npz/' is False), then
    Path dropped the slash and the save replaced another run's keep.npz."""
    with pytest.raises(SystemExit) as info:
        train.main(["mlp", option, f"{tmp_path / 'keep.npz'}/"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and f"{option} names a file to write, got" in err, err
    assert "a folder path" in err, err


@pytest.mark.parametrize(("option", "name", "why"), [
    ("--save", "dd", "--save {path}: is a folder; give the checkpoint a file name, e.g. {path}/run.npz"),
    ("--save", "dd/", "--save names a file to write, got '{path}', a folder path (it ends in a separator)"),
    ("--plot", "dd", "--plot {path}: is a folder; give the chart a file name, e.g. {path}/curves.png"),
    ("--plot", "dd/", "--plot names a file to write, got '{path}', a folder path (it ends in a separator)"),
    ("--plot", "taken", "--plot {path}: the chart's file {path}.png is a folder; give another name")])
def test_a_file_option_naming_a_folder_is_a_usage_error_however_spelled(
    option: str, name: str, why: str, tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    """`--save dd/` was a usage error (status 2) but `--save dd`, the same folder, a failed run
    (status 1); so for --plot. Both are a bad value now, refused before anything runs."""
    (tmp_path / "dd").mkdir()
    (tmp_path / "taken.png").mkdir()  # `--plot taken` writes taken.png
    path = f"{tmp_path}/{name}"
    with pytest.raises(SystemExit) as info:
        train.main(["mlp", "--data-dir", str(tiny_data), *FAST, option, path])
    out, err = capsys.readouterr()
    assert info.value.code == 2 and not out, (out, err)
    assert f"topgrad-train: error: {why.format(path=path)}" in err, err


@POSIX_SIGNALS
def test_a_fifo_or_device_as_save_is_refused(tiny_data: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    """`--save /dev/null` as root would have replaced the device with an 8 MB file."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--save", str(fifo), *FAST)
    assert code == 1 and f"{fifo}: is not a regular file (a device, a pipe or a socket)" in err, err
    assert fifo.exists() and not fifo.is_file() and not lines


def test_a_tiny_learning_rate_that_float32_rounds_away_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    """--lr 1e-300 passed (positive), then every float32 update was 0: a run that trained nothing."""
    with pytest.raises(SystemExit) as info:
        train.main(["mlp", "--lr", "1e-300"])
    assert info.value.code == 2 and "float32's smallest normal (1.18e-38" in capsys.readouterr().err


def test_help_and_the_header_name_the_recipes_weight_decay_and_warm_up(
    capsys: pytest.CaptureFixture[str], tiny_data: Path,
) -> None:
    """attention's recipe has AdamW's weight decay 0.01 and 200 warm-up steps, which neither --help nor
    a run's first line said; a short run's warm-up is capped at a fifth of its steps, said as such."""
    with pytest.raises(SystemExit):
        train.main(["--help"])
    out = capsys.readouterr().out
    attention = "  attention  adamw, --lr 0.003, --batch-size 32, --epochs 3, weight decay 0.01, warm-up 200"
    assert attention in out, out
    assert "  mlp        adam, --lr 0.002, --batch-size 128, --epochs 3\n" in out, out  # nothing beyond
    code, lines, _ = run(capsys, "attention", "--data-dir", str(tiny_data), *FAST, "--limit", "80")
    assert code == 0
    assert lines[0].endswith("adamw lr 0.003, batch 16, 1 epoch, weight decay 0.01, warm-up 1 step"), lines[0]


def test_help_says_resumed_runs_default_to_the_checkpoints_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        train.main(["--help"])
    out = " ".join(capsys.readouterr().out.split())
    for option in ("--batch-size BATCH_SIZE default", "--lr LR peak learning rate (default",
                   "--limit LIMIT use only"):
        start = out.index(option)
        assert "the checkpoint's with --resume" in out[start:start + 160], out[start:start + 160]


def test_a_failed_plot_still_prints_the_result_last(
    tiny_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A plot that failed after training ended the run before `test accuracy:`, the line scripts read."""
    pytest.importorskip("matplotlib")  # else --plot is refused before training
    from topgrad_examples.plot import PlotError

    def failing(*args: object, **kwargs: object) -> None:
        raise PlotError("--plot out.png: could not write it (No such file or directory)")

    monkeypatch.setattr(train, "plot_history", failing)
    chart = str(tmp_path / "c.png")
    code, lines, err = run(capsys, "mlp", "--data-dir", str(tiny_data), "--plot", chart, *FAST)
    assert code == 1 and lines[-1].startswith("test accuracy: "), lines
    assert err.strip() == ("topgrad-train: error: --plot out.png: could not write it (No such file or "
                           "directory)")


def test_out_of_memory_is_one_line(tiny_data: Path, capsys: pytest.CaptureFixture[str],
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """numpy's failed allocation (a huge --batch-size) was a traceback."""
    def no_memory(*args: object) -> None:
        raise MemoryError("Unable to allocate 287. MiB")

    monkeypatch.setattr(train, "run", no_memory)
    code, _, err = run(capsys, "mlp", "--data-dir", str(tiny_data), *FAST)
    assert code == 1 and err.strip() == (
        "topgrad-train: error: out of memory; a smaller --batch-size (or --limit) needs less, and "
        "--batch-size 1 the least; nothing was saved"), err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
def test_version_to_a_full_device_is_one_line() -> None:
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "topgrad_examples.train", "--version"], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("topgrad-train: error: cannot print the versions"), done.stderr
    assert "Traceback" not in done.stderr


def test_an_interrupt_while_starting_is_one_line(monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C while numpy and topgrad were imported gave a traceback from inside an import."""
    import types

    from topgrad_examples import launch

    class Importing(types.ModuleType):
        def __getattr__(self, name: str) -> object:
            raise KeyboardInterrupt

    monkeypatch.setitem(sys.modules, "topgrad_examples.train", Importing("topgrad_examples.train"))
    assert launch.main() == 130
    assert capsys.readouterr().err == "topgrad-train: interrupted while starting; nothing was run\n"


@POSIX_SIGNALS
@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="needs SIGHUP")
def test_two_stop_signals_at_once_stop_the_run_once(tiny_data: Path, tmp_path: Path) -> None:
    """SIGTERM then SIGHUP at once (systemd's SendSIGHUP): the handler set the other to SIG_IGN while
    it was pending, and Python printed "Signal 1 ignored due to race condition" with a traceback.
    Both pending before either is handled, Python takes the lower number first: either may be named."""
    ck = tmp_path / "run.npz"
    code, err = _signal_after_epoch_one(tiny_data, ck, (signal.SIGTERM, signal.SIGHUP))
    name = {143: "SIGTERM", 129: "SIGHUP"}.get(code)
    assert name is not None and f"interrupted by {name}; {ck} holds epoch" in err, (code, err)
    assert "Traceback" not in err and "race condition" not in err and err.count("\n") == 1, err
