"""Nothing a user owns is destroyed, no model is poisoned, every bad input is named.

Each test drives the real command line (in process) on a tiny synthetic VOC set and checks
the files on disk afterwards: what was refused left every byte as it was.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from fasterrcnn.cli import main
from fasterrcnn.data.synth import generate
from fasterrcnn.errors import CheckpointError, DataError, FasterRCNNError


def tiny(workers: int = 0) -> list[str]:
    return ["--preset", "small", "--min-size", "64", "--max-size", "96", "--batch-size", "2", "--workers", str(workers),
            "--no-progress", "--set", "anchors.scales=[1,2,4]"]


TINY = tiny()


@pytest.fixture(scope="module")
def voc(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rel") / "data"
    generate(root, num_train=6, num_test=3, min_size=64, max_size=96, min_object=16, max_object=48,
             max_objects=2, seed=3, progress=False)
    return root


@pytest.fixture(scope="module")
def trained(voc, tmp_path_factory) -> Path:
    """A finished one-epoch run (with its evaluation)."""
    out = tmp_path_factory.mktemp("run") / "train"
    assert main(["train", "--data", str(voc), "--out", str(out), "--epochs", "1", *TINY]) == 0
    return out


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` with the hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fasterrcnn: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


# --------------------------------------------------------------------- files it did not create


def test_train_refuses_a_folder_holding_a_finished_run(voc, trained, capsys):
    before = snapshot(trained)
    assert main(["train", "--data", str(voc), "--out", str(trained), "--epochs", "1", *TINY]) == 2
    line = one_error_line(capsys)
    assert "model_final.pt" in line and "--resume" in line and "--overwrite" in line
    assert snapshot(trained) == before


def test_train_overwrite_replaces_the_previous_run_and_its_stale_files(voc, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(voc), "--out", str(out), "--epochs", "1", *TINY]) == 0
    assert (out / "eval" / "report.json").exists()
    capsys.readouterr()
    # replaced on request; the old evaluation report does not survive beside the new model
    assert main(["train", "--data", str(voc), "--out", str(out), "--epochs", "1", "--no-eval", "--overwrite", *TINY]) == 0
    assert "removing the previous run" in capsys.readouterr().out
    assert (out / "model_final.pt").exists() and not (out / "eval").exists()


def test_train_never_writes_over_its_inputs(voc, trained, tmp_path, capsys):
    # --pretrained read from the folder the run would clear: refused even with --overwrite
    weights = trained / "model_final.pt"
    before = snapshot(trained)
    assert main(["train", "--data", str(voc), "--out", str(trained), "--pretrained", str(weights), "--overwrite",
                 "--epochs", "1", *TINY]) == 2
    assert "over the input" in one_error_line(capsys)
    assert snapshot(trained) == before


def test_resume_and_overwrite_together_are_refused(voc, trained, capsys):
    assert main(["train", "--data", str(voc), "--out", str(trained), "--resume", "--overwrite", *TINY]) == 2
    assert "resume" in one_error_line(capsys)


def test_a_refused_resume_leaves_the_run_untouched(voc, trained, capsys):
    before = snapshot(trained)
    args = [a if a != "2" else "3" for a in TINY]  # another batch size than the checkpoint's
    assert main(["train", "--data", str(voc), "--out", str(trained), "--resume", "--epochs", "2", *args]) == 2
    assert "batch_size" in one_error_line(capsys)
    assert snapshot(trained) == before  # train_config.json included


def test_detect_never_writes_over_the_input_images(voc, trained, tmp_path, capsys):
    photos = tmp_path / "photos"
    shutil.copytree(voc / "JPEGImages", photos)
    before = snapshot(photos)
    for extra in ([], ["--overwrite"]):
        assert main(["detect", str(photos), "--checkpoint", str(trained / "model_final.pt"), "--out", str(photos),
                     "--workers", "0", "--no-progress", *extra]) == 2
        assert "over the input" in one_error_line(capsys)
    assert snapshot(photos) == before


def test_detect_and_eval_refuse_an_earlier_runs_outputs(voc, trained, tmp_path, capsys):
    ckpt = str(trained / "model_final.pt")
    image = str(next((voc / "JPEGImages").glob("*.jpg")))
    det = ["detect", image, "--checkpoint", ckpt, "--out", str(tmp_path / "det"), "--workers", "0", "--no-progress"]
    ev = ["eval", "--checkpoint", ckpt, "--data", str(voc), "--out", str(tmp_path / "ev"), "--workers", "0",
          "--no-progress", "--no-recall"]
    for cmd in (det, ev):
        assert main(cmd) == 0
        capsys.readouterr()
        folder = Path(cmd[cmd.index("--out") + 1])
        before = snapshot(folder)
        assert main(cmd) == 2
        assert "--overwrite" in one_error_line(capsys)
        assert snapshot(folder) == before
        assert main([*cmd, "--overwrite"]) == 0


def test_data_synth_refuses_a_folder_holding_a_data_set(voc, tmp_path, capsys):
    mine = tmp_path / "mine"
    shutil.copytree(voc, mine)
    before = snapshot(mine)
    assert main(["data", "synth", "--out", str(mine), "--train", "2", "--test", "1", "--quiet"]) == 2
    assert "--overwrite" in one_error_line(capsys)
    assert snapshot(mine) == before


# --------------------------------------------------------------------------- poisoned models


@pytest.mark.parametrize("poison", ["weight", "running_var"])
def test_divergence_keeps_the_last_good_checkpoint_and_says_what_to_try(poison, voc, tmp_path, capsys, monkeypatch):
    """A fault injected in the second epoch: a weight becomes NaN (the next loss is NaN), or a
    BatchNorm buffer becomes inf (training-mode losses stay finite: only the check before the
    checkpoint sees it). Either way epoch 1's last.pt stays as it was, and the run stops."""
    from fasterrcnn.engine.trainer import Trainer

    step = Trainer._step

    def faulty(self, state, *args):
        losses = step(self, state, *args)
        if state.global_start + state.it == 4:  # global iteration 5: the second epoch (3 iterations each)
            name = next(k for k in state.model.state_dict() if k.endswith(poison))
            state.model.state_dict()[name].fill_(float("nan") if poison == "weight" else float("inf"))
        return losses

    monkeypatch.setattr(Trainer, "_step", faulty)
    out = tmp_path / "run"
    assert main(["train", "--data", str(voc), "--out", str(out), "--epochs", "1", "--no-eval", *TINY]) == 0
    good, final = (out / "last.pt").read_bytes(), (out / "model_final.pt").read_bytes()
    capsys.readouterr()
    assert main(["train", "--data", str(voc), "--out", str(out), "--epochs", "3", "--no-eval", "--resume", *TINY]) == 2
    line = one_error_line(capsys)
    assert "training diverged at iteration" in line and "epoch 2" in line
    assert "last.pt (stage 1, epoch 1, iteration 3)" in line or "resumed from" in line
    assert "--lr" in line and "--clip-grad-norm" in line
    if poison == "weight":  # the next forward pass fails: NaN proposals, or a NaN loss
        assert "forward pass produced non-finite values" in line or "the loss became nan" in line, line
    else:
        assert "non-finite values" in line and poison in line, line
    assert (out / "last.pt").read_bytes() == good  # the last good one, untouched
    assert (out / "model_final.pt").read_bytes() == final  # not replaced by a poisoned model
    from fasterrcnn.modeling.checkpoint import load_checkpoint

    model, ckpt = load_checkpoint(out / "last.pt")
    assert ckpt["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in model.state_dict().values() if v.is_floating_point())


def test_divergence_in_the_first_epoch_writes_no_checkpoint(voc, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(voc), "--out", str(out), "--epochs", "2", "--lr", "1e6", "--warmup-iters", "0",
                 *TINY]) == 2
    assert "no checkpoint was written" in one_error_line(capsys)
    assert not list(out.glob("*.pt"))


def test_a_model_with_non_finite_values_is_never_saved_nor_loaded(tmp_path):
    from fasterrcnn import build_model
    from fasterrcnn.modeling.checkpoint import FORMAT, load_checkpoint, save_checkpoint

    model = build_model("small", 3, min_size=64, max_size=96)
    name = next(k for k, v in model.state_dict().items() if k.endswith("running_var"))
    model.state_dict()[name].fill_(float("inf"))
    with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
        save_checkpoint(tmp_path / "m.pt", model)
    assert not (tmp_path / "m.pt").exists() and not list(tmp_path.iterdir())
    # one written by another program (or an older release) is refused when loaded
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"format": FORMAT, "version": 1, "config": model.config.to_dict(), "model": state}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="non-finite"):
        load_checkpoint(tmp_path / "bad.pt")


def _tiny_model_and_batch():
    from fasterrcnn import build_model

    torch.manual_seed(0)
    model = build_model("small", 3, min_size=64, max_size=96).train()
    images = [torch.rand(3, 64, 80)]
    targets = [{"boxes": torch.tensor([[4.0, 6.0, 40.0, 50.0]]), "labels": torch.tensor([1])}]
    return model, images, targets


@pytest.mark.parametrize("case", ["nan", "inf", "0-255", "negative"])
def test_bad_pixels_are_refused_before_any_state_changes(case):
    model, images, targets = _tiny_model_and_batch()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    img = images[0].clone()
    if case == "nan":
        img[1, 5, 5] = float("nan")
    elif case == "inf":
        img[0, 0, 0] = float("inf")
    elif case == "0-255":
        img = img * 255
    else:
        img = img - 0.5
    with pytest.raises(ValueError, match=r"images\[0\]"):
        model([img], targets)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm statistics included


def test_target_boxes_entirely_outside_the_image_are_refused():
    model, images, _ = _tiny_model_and_batch()
    for box in ([100.0, 10, 120, 30], [-30.0, -20, -1, -2], [10.0, 64, 20, 70]):
        with pytest.raises(ValueError, match=r"targets\[0\]\['boxes'\]\[0\].*outside"):
            model(images, [{"boxes": torch.tensor([box]), "labels": torch.tensor([1])}])
    # a box sticking out is still a box of that image
    losses = model(images, [{"boxes": torch.tensor([[60.0, 40, 90, 70]]), "labels": torch.tensor([2])}])
    assert all(torch.isfinite(v) for v in losses.values())


# ---------------------------------------------------------------------- one line, exit code 2


def test_a_worker_process_error_is_one_line_naming_the_file(voc, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(voc, data)
    from fasterrcnn.data import build_dataset

    bad = Path(build_dataset(data, "train", train=True).files[0])  # an image the training reads
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    def args(out: str) -> list[str]:
        return ["train", "--data", str(data), "--out", str(tmp_path / out), "--epochs", "1", "--no-verify-images",
                *tiny(workers=1)]

    assert main(args("run")) == 2
    line = one_error_line(capsys)
    assert str(bad) in line and "truncated" in line and "Caught" not in line and "worker process" not in line
    # --debug shows the traceback for a bug report, and still ends with the same line
    assert main(["--debug", *args("run2")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().splitlines()[-1] == line


def test_a_bad_test_image_stops_the_run_before_training(voc, tmp_path, capsys):
    data = tmp_path / "data"
    shutil.copytree(voc, data)
    first = (data / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    bad = data / "JPEGImages" / f"{first}.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--out", str(out), "--epochs", "1", *TINY]) == 2
    assert str(bad) in one_error_line(capsys)
    assert "training small" not in capsys.readouterr().out
    assert not out.exists()  # nothing was written


@pytest.mark.parametrize("argv", [["train", "--threads", "0"], ["train", "--threads", "-2"],
                                  ["bench", "ops", "--threads", "-1"]])
def test_invalid_thread_counts_are_one_line(argv, voc, tmp_path, capsys):
    if argv[0] == "train":
        argv = [*argv, "--data", str(voc), "--out", str(tmp_path / "run")]
    assert main(argv) == 2
    assert "threads" in one_error_line(capsys)


def test_error_from_traceback_recovers_the_original_message():
    from fasterrcnn.cli import user_message
    from fasterrcnn.errors import error_from_traceback

    text = ("Caught DataError in DataLoader worker process 0.\nOriginal Traceback (most recent call last):\n"
            '  File "x.py", line 1, in f\nfasterrcnn.errors.DataError: a.jpg: corrupt or truncated image (x)\n')
    err = error_from_traceback(text)
    assert isinstance(err, DataError) and str(err) == "a.jpg: corrupt or truncated image (x)"
    assert isinstance(error_from_traceback("fasterrcnn.errors.Nope: m"), FasterRCNNError)
    assert error_from_traceback("ValueError: not ours") is None
    assert user_message(FileNotFoundError(2, "No such file or directory", "x.json")) == "x.json: No such file or directory"


# ------------------------------------------------------------------- splits of single files


def _coco_file(voc: Path, path: Path) -> Path:
    """The VOC set's training split as one COCO JSON file beside its images."""
    from fasterrcnn.data import build_dataset

    ds = build_dataset(voc, "train", train=False)
    images, anns = [], []
    for i in range(len(ds)):
        t = ds.annotation(i)
        h, w = ds.image_sizes[i]
        images.append({"id": i + 1, "file_name": Path(ds.files[i]).name, "height": h, "width": w})
        for b, lab in zip(t["boxes"].tolist(), t["labels"].tolist()):
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": lab, "iscrowd": 0,
                         "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
    cats = [{"id": k + 1, "name": c} for k, c in enumerate(ds.classes)]
    path.write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return path


def test_a_single_coco_file_has_no_implicit_test_split(voc, tmp_path, capsys):
    coco = _coco_file(voc, tmp_path / "train.json")
    img_dir = str(voc / "JPEGImages")
    out = tmp_path / "run"
    assert main(["train", "--data", str(coco), "--image-dir", img_dir, "--out", str(out), "--epochs", "1", *TINY]) == 0
    printed = capsys.readouterr().out
    assert "no evaluation after training" in printed and "--val-data" in printed
    assert not (out / "eval").exists()
    # asked for explicitly: evaluated on the training images, and reported as such
    out2 = tmp_path / "run2"
    assert main(["train", "--data", str(coco), "--image-dir", img_dir, "--out", str(out2), "--epochs", "1",
                 "--val-split", "train", *TINY]) == 0
    assert "training images" in capsys.readouterr().out
    assert json.loads((out2 / "summary.json").read_text())["eval"]["on_training_data"] is True
    assert json.loads((out2 / "eval" / "report.json").read_text())["on_training_data"] is True
    # eval: a split of a single file is an error, the whole file is the default
    ckpt = str(out / "model_final.pt")
    assert main(["eval", "--checkpoint", ckpt, "--data", str(coco), "--image-dir", img_dir, "--split", "test",
                 "--out", str(tmp_path / "ev")]) == 2
    assert "no splits" in one_error_line(capsys)
    assert main(["eval", "--checkpoint", ckpt, "--data", str(coco), "--image-dir", img_dir, "--workers", "0",
                 "--no-progress", "--no-recall", "--out", str(tmp_path / "ev")]) == 0
    assert "the whole file" in capsys.readouterr().out
