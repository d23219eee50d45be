"""Soak test of the training loop's fault handling.

A short `fasterrcnn train` run is killed with SIGKILL at seeded random points (mid-iteration,
inside a checkpoint write, during start-up and resume, inside the final model's write) and
resumed with --resume each time until it finishes. After every kill: every checkpoint on
disk loads (weights_only), nothing but the run's own outputs (and the temporary files of the
write the kill cut short) is in the folder, the temporary files of earlier kills are gone
once a resumed run has started, and metrics.jsonl has no torn or duplicated records. At the
end the resumed run's weights and metrics are those of an uninterrupted run, bit for bit.

Around it, the pieces on their own: a process killed inside `atomic_write` (the target keeps
its old complete content; the leftover temporary file is removed by
`remove_stale_temp_files`, which touches nothing else), the metrics log's repair of a line
cut short, and its truncation on resume being atomic.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

posix_only = pytest.mark.skipif(os.name != "posix", reason="SIGKILL, SIGSTOP and rlimits are POSIX")

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    """The children import this checkout's fasterrcnn, print at once, and use one thread."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env.update(PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    return env


def _temp_files(folder: Path, target: str = "") -> set[str]:
    """Names in `folder` shaped like atomic_write's temporary files (`.<name>.<random>.tmp`)."""
    pattern = re.compile(rf"\.{re.escape(target) if target else '.+'}\.[a-z0-9_]{{8}}\.tmp")
    try:
        return {n for n in os.listdir(folder) if pattern.fullmatch(n)}
    except FileNotFoundError:
        return set()


# ----------------------------------------------------------------------------- fileio


_KILLED_MID_WRITE = r"""
import sys
from fasterrcnn.fileio import atomic_write

def write(f):
    f.write(b"n" * 65536)
    f.flush()
    print("mid-write", flush=True)
    sys.stdin.read()  # blocks until the parent kills this process
    f.write(b"never")

atomic_write(sys.argv[1], write)
"""


@posix_only
def test_sigkill_inside_atomic_write_keeps_the_old_file_and_the_leftover_is_cleaned(tmp_path):
    """A process SIGKILLed inside atomic_write: the target still holds its old, complete
    content; the temporary file it could not remove is left, and remove_stale_temp_files
    deletes exactly that (no file of the user's, however named, is touched)."""
    target = tmp_path / "last.pt"
    target.write_bytes(b"old complete content")
    user = {name: f"user file {name}".encode() for name in (
        "notes.tmp", ".last.pt.tmp", ".last.pt.abc.tmp", "last.pt.abcd1234.tmp", ".last.pt.ABCD1234.tmp",
        ".last.pt.abcd1234.tmp.bak", ".last.pt.abcd12345.tmp", ".hidden", "report.json")}
    for name, data in user.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / ".cache.abcd1234.tmp").mkdir()  # a folder, however named, is not ours
    (tmp_path / ".link.abcd1234.tmp").symlink_to(tmp_path / "report.json")  # nor a link
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / ".x.abcd1234.tmp").write_bytes(b"subfolders are not looked into")

    proc = subprocess.Popen([sys.executable, "-c", _KILLED_MID_WRITE, str(target)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=_env())
    try:
        assert proc.stdout.readline() == b"mid-write\n"
        leftovers = _temp_files(tmp_path, "last.pt")
        assert len(leftovers) == 1
    finally:
        proc.kill()
        proc.wait(10)
    assert proc.returncode == -signal.SIGKILL
    assert target.read_bytes() == b"old complete content"
    leftover = tmp_path / leftovers.pop()
    assert leftover.stat().st_size == 65536  # the kill gave the `except` no chance to remove it

    from fasterrcnn.fileio import remove_stale_temp_files

    assert remove_stale_temp_files(tmp_path) == [leftover]
    assert not leftover.exists() and target.read_bytes() == b"old complete content"
    for name, data in user.items():
        assert (tmp_path / name).read_bytes() == data, name
    assert (tmp_path / ".cache.abcd1234.tmp").is_dir() and (tmp_path / ".link.abcd1234.tmp").is_symlink()
    assert (tmp_path / "sub" / ".x.abcd1234.tmp").exists()
    assert remove_stale_temp_files(tmp_path) == [] and remove_stale_temp_files(tmp_path / "missing") == []


_SLOW_WRITE = r"""
import sys, time
from fasterrcnn.fileio import atomic_write

def write(f):
    for _ in range(20):
        f.write(b"new." * 4096)
        f.flush()
        time.sleep(0.004)

print("start", flush=True)
atomic_write(sys.argv[1], write)
print("done", flush=True)
time.sleep(5)
"""


@posix_only
def test_sigkill_at_random_times_during_atomic_write(tmp_path):
    """Killed at seeded random times spread over a slow atomic write (~0.1 s) and after it:
    the target is always either the old or the new complete file."""
    rng = random.Random(5)
    old, new = b"old." * 1000, b"new." * 4096 * 20
    outcomes = []
    for k in range(6):
        target = tmp_path / f"f{k}.bin"
        target.write_bytes(old)
        proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITE, str(target)], stdout=subprocess.PIPE, env=_env())
        try:
            assert proc.stdout.readline() == b"start\n"
            time.sleep(rng.uniform(k, k + 1) * 0.025)  # 0-0.15 s, one slot each
        finally:
            proc.kill()
            proc.wait(10)
        data = target.read_bytes()
        assert data in (old, new), (k, len(data))
        outcomes.append("new" if data == new else "old")
    print("kill outcomes:", outcomes)


@posix_only
def test_atomic_write_gives_a_new_file_the_usual_permissions(tmp_path):
    """Like open(path, "w"): 0o666 less the umask (tempfile.mkstemp's 0o600 made checkpoints,
    reports and summaries unreadable to the group sharing a run folder)."""
    from fasterrcnn.fileio import atomic_write_text

    mask = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "summary.json", "{}")
        (tmp_path / "plain.json").write_text("{}")
    finally:
        os.umask(mask)
    assert (tmp_path / "summary.json").stat().st_mode & 0o777 == (tmp_path / "plain.json").stat().st_mode & 0o777 == 0o640


# ----------------------------------------------------------------------------- metrics log


def _records(n: int) -> list[dict]:
    return [{"kind": "train", "iter": i, "global_iter": i, "loss": 1.0 / i, "pad": "x" * 40} for i in range(1, n + 1)]


def test_metrics_log_with_a_line_cut_short(tmp_path):
    """A crash inside a record's write leaves a last line without its newline: opening the
    log drops it (the next record starts a line of its own), truncate_after on resume and
    read_metrics do not trip over it. A complete last record without its newline is kept."""
    from fasterrcnn.engine.logger import MetricsLogger, read_metrics

    path = tmp_path / "metrics.jsonl"
    recs = _records(3)
    whole = "".join(json.dumps(r) + "\n" for r in recs)
    torn = json.dumps(_records(4)[-1])[:25]
    path.write_text(whole + torn)
    assert read_metrics(path) == recs
    logger = MetricsLogger(path)
    assert path.read_text() == whole
    logger.log(_records(4)[-1])
    assert read_metrics(path) == _records(4)

    path.write_text(whole + torn)  # killed mid-line after the logger was opened, then resumed
    logger.truncate_after(2)
    assert path.read_text() == "".join(json.dumps(r) + "\n" for r in recs[:2])

    path.write_text(whole + json.dumps(_records(4)[-1]))  # cut just before the newline: a whole record
    MetricsLogger(path)
    assert read_metrics(path) == _records(4) and path.read_text().endswith("\n")


_TRUNCATE_IN_A_FULL_DISK = r"""
import resource, signal, sys
from fasterrcnn.engine.logger import MetricsLogger

logger = MetricsLogger(sys.argv[1])
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)  # Python ignores it (a write past the limit would only raise)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
# files may not grow past 8 KiB: a write beyond kills this process (SIGXFSZ) mid-write
resource.setrlimit(resource.RLIMIT_FSIZE, (8192, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
logger.truncate_after(int(sys.argv[2]))
"""


@posix_only
def test_metrics_truncation_killed_mid_write_keeps_the_log(tmp_path):
    """truncate_after (on every resume) rewrites the whole log: a process killed while doing
    it must leave the old log, not a truncated one (it wrote the file in place)."""
    from fasterrcnn.engine.logger import read_metrics

    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records(400)))
    before = path.read_bytes()
    proc = subprocess.run([sys.executable, "-c", _TRUNCATE_IN_A_FULL_DISK, str(path), "300"], env=_env(),
                          capture_output=True, timeout=60)
    assert proc.returncode == -signal.SIGXFSZ, proc.stderr.decode()[-2000:]
    assert path.read_bytes() == before
    assert len(read_metrics(path)) == 400
    from fasterrcnn.fileio import remove_stale_temp_files

    leftovers = _temp_files(tmp_path, "metrics.jsonl")  # the new log, cut short where the process died
    assert len(leftovers) == 1 and (tmp_path / next(iter(leftovers))).stat().st_size == 8192
    assert [p.name for p in remove_stale_temp_files(tmp_path)] == list(leftovers)
    assert sorted(os.listdir(tmp_path)) == ["metrics.jsonl"]


@pytest.mark.slow
def test_resume_before_the_first_checkpoint_starts_a_fresh_log(tmp_path):
    """A run killed in its first epoch leaves metrics.jsonl records but no last.pt; --resume
    then starts from scratch, and the log must start again too (not hold iterations twice)."""
    from fasterrcnn.data.synth import generate
    from fasterrcnn.engine.config import TrainConfig
    from fasterrcnn.engine.logger import read_metrics
    from fasterrcnn.engine.trainer import Trainer

    data = tmp_path / "data"
    generate(data, num_train=2, num_test=0, min_size=64, max_size=96, min_object=16, max_object=60, max_objects=2,
             seed=3, progress=False)
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text("".join(json.dumps({**r, "stage": 1, "epoch": 1}) + "\n" for r in _records(2)))
    cfg = TrainConfig(data=str(data), out=str(out), resume=True, preset="small", epochs=1, max_iters=2, min_size=64,
                      max_size=96, batch_size=1, num_workers=0, progress=False, log_every=1, val_split=None)
    Trainer(cfg, log=lambda _msg: None).run()
    iters = [r["global_iter"] for r in read_metrics(out / "metrics.jsonl") if r["kind"] == "train"]
    assert iters == list(range(1, len(iters) + 1))  # today: [1, 2, 1]


# ----------------------------------------------------------------------------- the soak

EPOCHS = 6
KNOWN_OUTPUTS = {"train_config.json", "metrics.jsonl", "last.pt", "model_final.pt", "loss_curve.png", "summary.json"}
TIMING_KEYS = {"sec_per_iter", "images_per_s", "seconds"}


def _train_cmd(data: Path, out: Path, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "fasterrcnn", "train", "--data", str(data), "--out", str(out), "--preset", "small",
           "--epochs", str(EPOCHS), "--batch-size", "1", "--min-size", "64", "--max-size", "96", "--lr", "0.01",
           "--warmup-iters", "2", "--log-every", "1", "--workers", "0", "--threads", "1", "--seed", "7",
           "--no-progress", "--no-eval", "--set", "anchors.scales=[1,2,4]"]
    return cmd + (["--resume"] if resume else [])


_GLOBAL_ITER = re.compile(r'"global_iter": (\d+)')


def _max_logged(out: Path) -> int:
    try:
        return max((int(m) for m in _GLOBAL_ITER.findall((out / "metrics.jsonl").read_text())), default=0)
    except FileNotFoundError:
        return 0


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


class Deadline:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds

    def check(self, what: str) -> None:
        if time.monotonic() > self.end:
            raise AssertionError(f"the soak ran out of time while {what}")


def _kill(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(30)


def _kill_when(proc: subprocess.Popen, out: Path, trigger: tuple, rng: random.Random, deadline: Deadline) -> str:
    """Wait for `trigger` in this run, then SIGKILL it; returns how the run ended: "killed",
    "killed mid-save" (frozen inside the atomic write of the trigger's file, then killed) or
    "finished" (it ended before the trigger)."""
    kind, arg = trigger
    if kind == "start":  # start-up, resume: `arg` s after the start, at the latest at its first new record
        first = _max_logged(out) + 1
        t_end = time.monotonic() + arg
        while time.monotonic() < t_end and _max_logged(out) < first and proc.poll() is None:
            time.sleep(0.003)
    elif kind == "iter":  # a seeded moment after the record of global iteration `arg`
        while _max_logged(out) < arg and proc.poll() is None:
            deadline.check(f"waiting for iteration {arg}")
            time.sleep(0.003)
        time.sleep(rng.uniform(0.0, 0.08))  # about one iteration: its step, its log line, an epoch's save
    elif kind == "save":  # inside a write of `arg`: frozen (SIGSTOP) while its temporary file exists
        stale = _temp_files(out, arg)
        delay = rng.uniform(0.0, 0.004)  # the writes take ~20-40 ms here
        while proc.poll() is None:
            deadline.check(f"waiting for a write of {arg}")
            if _temp_files(out, arg) - stale:
                time.sleep(delay)
                os.kill(proc.pid, signal.SIGSTOP)
                _, status = os.waitpid(proc.pid, os.WUNTRACED)
                if not os.WIFSTOPPED(status):  # it ended meanwhile (and is reaped now)
                    proc.returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
                    break
                if _temp_files(out, arg) - stale:
                    _kill(proc)
                    return "killed mid-save"
                os.kill(proc.pid, signal.SIGCONT)  # that write had just been renamed: wait for the next one
                stale = _temp_files(out, arg)
            time.sleep(0.001)
    if proc.poll() is not None:
        return "finished"
    _kill(proc)
    return "killed"


def _check_checkpoints(out: Path) -> dict | None:
    """Every checkpoint in `out` reads (weights_only=True); returns last.pt's."""
    from fasterrcnn.modeling.checkpoint import read_checkpoint

    last = None
    for p in sorted(out.glob("*.pt")):
        ckpt = read_checkpoint(p)  # CheckpointError for a torn or truncated file
        if p.name == "last.pt":
            last = ckpt
    return last


def _check_metrics(out: Path, allow_torn_tail: bool = False) -> list[dict]:
    """metrics.jsonl: whole JSON lines; every train iteration and every epoch once, in order."""
    path = out / "metrics.jsonl"
    if not path.exists():
        return []
    *lines, tail = path.read_text().split("\n")
    assert allow_torn_tail or tail == "", f"a torn last line in {path}: {tail[:80]!r}"
    recs = [json.loads(line) for line in lines]  # a torn line in the middle fails here
    iters = [r["global_iter"] for r in recs if r["kind"] == "train"]
    assert iters == list(range(1, len(iters) + 1)), f"duplicated or missing iterations: {iters}"
    epochs = [r["epoch"] for r in recs if r["kind"] == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1)), f"duplicated or missing epochs: {epochs}"
    return recs


def _comparable(recs: list[dict]) -> list[dict]:
    """The records less what may differ between an interrupted and an uninterrupted run: the
    timings, and the train records' smoothed losses (their 20-iteration window restarts empty
    on resume: trainer.py does not save it in last.pt)."""
    same = {"kind", "stage", "epoch", "iter", "global_iter", "lr"}
    return [{k: v for k, v in r.items() if (k in same if r["kind"] == "train" else k not in TIMING_KEYS)} for r in recs]


@posix_only
@pytest.mark.slow
def test_training_survives_repeated_sigkill_and_resumes_exactly(tmp_path):
    """Five SIGKILLs at seeded points of a 6-epoch run (5 iterations each), a --resume after
    each; the checks of the module docstring after every kill and at the end."""
    import torch

    from fasterrcnn.data.synth import generate
    from fasterrcnn.modeling.checkpoint import load_checkpoint

    data = tmp_path / "data"  # 6 images of 64-96 px (one without usable objects: 5 per epoch)
    generate(data, num_train=6, num_test=0, min_size=64, max_size=96, min_object=16, max_object=60, max_objects=2,
             seed=3, progress=False)
    deadline = Deadline(240)  # a hang guard; the test takes ~1 minute
    env = _env()
    base_out = tmp_path / "straight"  # the uninterrupted run, alongside (one thread each)
    with open(tmp_path / "straight.log", "wb") as base_log:
        baseline = subprocess.Popen(_train_cmd(data, base_out, resume=False), stdout=base_log, stderr=subprocess.STDOUT, env=env)
    out = tmp_path / "killed"
    rng = random.Random(20240611)
    # (trigger, whether to cut the log's last line short before the run starts, as a kill
    # inside a record's write would)
    plan = [
        (("iter", None), False),  # an iteration of epoch 2 or 3 (last.pt of epoch 1 is there)
        (("save", "last.pt"), False),  # inside a checkpoint write
        (("start", rng.uniform(0.3, 4.0)), True),  # start-up / reading the checkpoint / resuming the log
        (("save", "last.pt"), True),
        (("save", "model_final.pt"), False),  # inside the final model's write
        (None, False),  # the last --resume, to the end
    ]
    outcomes: list[str] = []
    last_epoch = 0
    try:
        for run, (trigger, tear) in enumerate(plan):
            if trigger is not None and trigger[0] == "iter":  # past what is logged (the first epoch's 5)
                trigger = ("iter", max(_max_logged(out), 5) + rng.randint(1, 8))
            if tear:
                with (out / "metrics.jsonl").open("a") as f:
                    f.write('{"kind": "train", "stage": 1, "epo')
            stale, logged = _temp_files(out), _max_logged(out)
            config_mtime = _mtime(out / "train_config.json")
            log_path = tmp_path / f"run{run}.log"
            with open(log_path, "wb") as log:
                proc = subprocess.Popen(_train_cmd(data, out, resume=run > 0), stdout=log, stderr=subprocess.STDOUT, env=env)
            try:
                outcome = _kill_when(proc, out, trigger, rng, deadline) if trigger else "finished"
                if outcome == "finished":
                    proc.wait(max(1.0, deadline.end - time.monotonic()))
            finally:
                if proc.poll() is None:
                    _kill(proc)
            outcomes.append(outcome)
            context = f"run {run} ({trigger}, {outcome}); its output:\n{log_path.read_text()[-3000:]}"
            if outcome == "finished":
                assert proc.returncode == 0, context
            # nothing but the run's outputs, and the temporary files of the write the kill cut short
            temps = _temp_files(out)
            assert set(os.listdir(out)) - temps <= KNOWN_OUTPUTS, context
            if outcome == "killed mid-save":
                assert _temp_files(out, trigger[1]) - stale, context
            # the leftovers of earlier kills are gone once a (resumed) run has started writing
            if _mtime(out / "train_config.json") != config_mtime:
                assert not stale & temps, f"stale temporary files left behind: {sorted(stale & temps)}; {context}"
            if outcome == "finished":
                assert not temps, context
            last = _check_checkpoints(out)
            if last is not None:
                assert last["epoch"] >= last_epoch, context  # never an older checkpoint than before
                last_epoch = last["epoch"]
            # a run that trained went through the resume: no torn line (nor duplicate) is left
            resumed = _max_logged(out) > logged or outcome == "killed mid-save" or trigger is None
            _check_metrics(out, allow_torn_tail=not resumed)
        assert outcomes[1] == outcomes[3] == "killed mid-save" and outcomes[-1] == "finished", outcomes
        assert outcomes[4] in ("killed mid-save", "finished"), outcomes  # a short final write may be missed
        assert baseline.wait(max(1.0, deadline.end - time.monotonic())) == 0, (tmp_path / "straight.log").read_text()[-3000:]
    finally:
        if baseline.poll() is None:
            _kill(baseline)
    print("outcomes of the runs:", outcomes)

    names = set(os.listdir(out))  # no temporary file left; loss_curve.png needs matplotlib
    assert names == set(os.listdir(base_out)) and KNOWN_OUTPUTS - {"loss_curve.png"} <= names <= KNOWN_OUTPUTS
    recs = _check_metrics(out)
    assert _comparable(recs) == _comparable(_check_metrics(base_out))  # nothing lost, nothing twice
    assert recs[-1]["kind"] == "epoch" and recs[-1]["epoch"] == EPOCHS
    straight, _ = load_checkpoint(base_out / "model_final.pt")
    resumed, _ = load_checkpoint(out / "model_final.pt")
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys()
    assert not [k for k in a if not torch.equal(a[k], b[k])]
    la = torch.load(base_out / "last.pt", weights_only=True)
    lb = torch.load(out / "last.pt", weights_only=True)
    assert la["epoch"] == lb["epoch"] == EPOCHS and la["iteration"] == lb["iteration"]
    assert _same(la["model"], lb["model"]) and _same(la["optimizer"], lb["optimizer"]) and _same(la["rng"], lb["rng"])


def _same(a, b) -> bool:
    """Nested dicts / lists of tensors and plain values, equal bit for bit."""
    import torch

    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b
