"""Training end to end on generated data: overfitting, a short run, exact resume, 4-step schedule."""

from __future__ import annotations

import json

import pytest
import torch

from fasterrcnn.data.synth import generate
from fasterrcnn.engine.config import TrainConfig
from fasterrcnn.engine.trainer import Trainer

pytestmark = pytest.mark.slow

def quiet(_msg: str) -> None:
    pass


@pytest.fixture(scope="module")
def tiny_set(tmp_path_factory):
    """12 training and 4 test images of 192-256 px, 1-4 objects of 32-150 px each."""
    root = tmp_path_factory.mktemp("tiny")
    generate(root, num_train=12, num_test=4, min_size=192, max_size=256, min_object=32, max_object=150,
             max_objects=4, seed=3, progress=False)
    return root


def test_overfits_a_few_images_to_near_perfect_map(overfit_run):
    """The whole method (anchors, RPN targets and loss, proposals, RoI sampling, the head, NMS)
    must be able to memorise three images: near-zero loss and mAP@0.5 >= 0.95 on them."""
    summary = overfit_run["summary"]
    losses = summary["train"]["final_losses"]
    assert sum(losses.values()) < 0.3, losses
    assert summary["eval"]["map07"] >= 0.95 and summary["eval"]["map10"] >= 0.95, summary["eval"]


def state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("ema_decay", [0.0, 0.9], ids=["plain", "ema"])
def test_resume_reproduces_the_uninterrupted_run(tiny_set, tmp_path, monkeypatch, quick, ema_decay):
    """2 epochs straight == 1 epoch, killed, then --resume: the same weights, bit for bit (CPU);
    with a weight average (EMA) too, which last.pt carries beside the raw weights."""
    import fasterrcnn.engine.trainer as trainer_mod

    common = dict(data=str(tiny_set), val_split=None, epochs=2, ema_decay=ema_decay, ema_warmup=2,
                  **{**quick, "num_workers": 1})
    first = Trainer(TrainConfig(out=str(tmp_path / "a"), **common), log=quiet)
    straight = first.run()

    real_save = trainer_mod.save_checkpoint

    def save_then_die(path, *args, **kwargs):  # killed right after the first epoch's checkpoint
        real_save(path, *args, **kwargs)
        if path.name == "last.pt":
            raise KeyboardInterrupt

    monkeypatch.setattr(trainer_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        Trainer(TrainConfig(out=str(tmp_path / "b"), **common), log=quiet).run()
    monkeypatch.setattr(trainer_mod, "save_checkpoint", real_save)
    assert torch.load(tmp_path / "b" / "last.pt", weights_only=True)["epoch"] == 1
    resumed = Trainer(TrainConfig(out=str(tmp_path / "b"), resume=True, **common), log=quiet).run()
    a, b = state(straight.model), state(resumed.model)
    assert a.keys() == b.keys()
    mismatched = [k for k in a if not torch.equal(a[k], b[k])]
    assert not mismatched, mismatched[:5]
    # the metrics log of the resumed run continues the first one, without duplicates
    recs = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    iters = [r["global_iter"] for r in recs if r["kind"] == "train"]
    assert iters == sorted(set(iters)) and iters[-1] == 2 * first.iters_per_epoch
    last = torch.load(tmp_path / "b" / "last.pt", weights_only=True)
    if ema_decay:  # the final model is the average, not the last weights
        assert torch.equal(last["ema"]["module"]["roi_heads.predictor.cls_score.weight"], b["roi_heads.predictor.cls_score.weight"])
        assert not torch.equal(last["model"]["roi_heads.predictor.cls_score.weight"], b["roi_heads.predictor.cls_score.weight"])
    else:
        assert "ema" not in last and torch.equal(last["model"]["roi_heads.predictor.cls_score.weight"], b["roi_heads.predictor.cls_score.weight"])


def test_precise_bn_recomputes_the_final_statistics(tiny_set, tmp_path, quick):
    """precise_bn_iters: the final model's BatchNorm statistics are re-estimated after the last
    epoch (last.pt keeps the trained ones); the weights are the same."""
    logs: list[str] = []
    cfg = TrainConfig(data=str(tiny_set), val_split=None, out=str(tmp_path / "p"), epochs=1, max_iters=3,
                      precise_bn_iters=4, **quick)
    result = Trainer(cfg, log=logs.append).run()
    last = torch.load(tmp_path / "p" / "last.pt", weights_only=True)["model"]
    final = result.model.state_dict()
    means = [k for k in final if k.endswith("running_mean")]
    assert means and all(not torch.equal(final[k], last[k]) for k in means)
    assert all(torch.equal(final[k], last[k]) for k in final if k.endswith("weight"))
    assert any("re-estimated over 4 batches" in m for m in logs)


def test_resume_refuses_a_different_run(tiny_set, tmp_path, quick):
    from fasterrcnn.errors import CheckpointError

    common = dict(data=str(tiny_set), val_split=None, out=str(tmp_path / "r"), **quick)
    Trainer(TrainConfig(epochs=1, max_iters=2, **common), log=quiet).run()
    with pytest.raises(CheckpointError, match="seed=0, but this run has seed=5"):
        Trainer(TrainConfig(epochs=1, resume=True, **{**common, "seed": 5}), log=quiet).run()


def test_multi_scale_training_and_test_size(tiny_set, tmp_path, quick, monkeypatch):
    """min_size as a list: each training image at one of the scales (drawn per image, resized
    once, by the data pipeline); evaluation and the saved model at test_min_size."""
    from fasterrcnn.engine.report import train_and_evaluate
    from fasterrcnn.modeling.checkpoint import read_checkpoint
    from fasterrcnn.modeling.transform import DetectionTransform

    seen: list[tuple[bool, list[tuple[int, int]], list[tuple[float, float]]]] = []
    real_forward = DetectionTransform.forward

    def spy(self, images):
        batch = real_forward(self, images)
        seen.append((self.training, batch.image_sizes, batch.scales))
        return batch

    monkeypatch.setattr(DetectionTransform, "forward", spy)
    cfg = TrainConfig(data=str(tiny_set), out=str(tmp_path / "ms"), epochs=1, max_iters=6,
                      **{**quick, "min_size": [128, 160], "max_size": 320, "test_min_size": 224, "test_max_size": 400})
    summary = train_and_evaluate(cfg, log=quiet)
    train_sizes = [hw for training, sizes, _ in seen if training for hw in sizes]
    assert len(train_sizes) >= 10 and {min(hw) for hw in train_sizes} == {128, 160}  # 6 batches of <= 2
    assert all(sc == (1.0, 1.0) for training, _, scales in seen if training for sc in scales)  # no second resize
    eval_sizes = [hw for training, sizes, _ in seen if not training for hw in sizes]
    assert eval_sizes and {min(hw) for hw in eval_sizes} == {224}
    t = read_checkpoint(summary["files"]["checkpoint"], "cpu")["config"]["transform"]
    assert (t["min_size"], t["max_size"], t["train_min_size"], t["train_max_size"]) == (224, 400, [128, 160], 320)


def test_alternating_four_step_schedule(tiny_set, tmp_path, quick):
    out = tmp_path / "alt"
    cfg = TrainConfig(data=str(tiny_set), out=str(out), schedule="alternating", epochs=1, max_iters=4, val_split=None, **quick)
    result = Trainer(cfg, log=quiet).run()
    for k in (1, 2, 3, 4):
        assert (out / f"stage{k}.pt").exists()
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    by_stage = {r["stage"]: r for r in recs if r["kind"] == "train"}
    assert set(by_stage) == {1, 2, 3, 4}
    assert {"rpn_cls", "rpn_reg"} <= by_stage[1].keys() and "det_cls" not in by_stage[1]  # step 1: RPN only
    assert {"det_cls", "det_reg"} <= by_stage[2].keys() and "rpn_cls" not in by_stage[2]  # step 2: detector
    assert "det_cls" not in by_stage[3] and "rpn_cls" not in by_stage[4]
    # steps 3 and 4 keep the shared convs fixed: the final backbone is step 2's
    s2 = torch.load(out / "stage2.pt", weights_only=True)["model"]
    s3 = torch.load(out / "stage3.pt", weights_only=True)["model"]
    final = result.model.state_dict()
    for k, v in s2.items():
        if k.startswith("backbone."):
            assert torch.equal(v, final[k]) and torch.equal(v, s3[k]), k
    # step 4 trains only the detector layers: the RPN is step 3's
    for k, v in s3.items():
        if k.startswith("rpn."):
            assert torch.equal(v, final[k]), k
    assert any(not torch.equal(s3[k], final[k]) for k in s3 if k.startswith("roi_heads."))
    result.model.eval()
    with torch.no_grad():
        out_ = result.model([torch.rand(3, 200, 240)])
    assert set(out_[0]) == {"boxes", "labels", "scores"}


def test_short_run_learns_and_every_command_works(tmp_path, capsys):
    """generate -> train a few hundred iterations -> eval -> detect, through the CLI; the
    detector must be clearly better than chance on held-out images."""
    from fasterrcnn.cli import main

    data = tmp_path / "data"  # an easy variant of the synthetic set, learnable in 300 steps from scratch
    assert main(["data", "synth", "--out", str(data), "--train", "48", "--test", "12", "--min-size", "192",
                 "--max-size", "256", "--seed", "4", "--classes", "circle,square,triangle", "--textures", "solid",
                 "--min-object", "40", "--max-object", "160", "--max-objects", "3", "--quiet"]) == 0
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--preset", "small", "--out", str(out), "--epochs", "100",
                 "--max-iters", "300", "--min-size", "192", "--max-size", "320", "--batch-size", "2",
                 "--optimizer", "adamw", "--lr", "0.001", "--weight-decay", "0.01", "--warmup-iters", "20", "--workers", "0", "--no-progress",
                 "--set", "anchors.scales=[2,4,8,16]"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval"]["map07"] > 0.15, summary["eval"]  # chance is ~0; measured 0.31
    for f in ("model_final.pt", "last.pt", "metrics.jsonl", "loss_curve.png", "eval/report.json"):
        assert (out / f).exists(), f
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(out / "model_final.pt"), "--data", str(data), "--out", str(tmp_path / "ev"),
                 "--workers", "0", "--no-progress"]) == 0
    report = json.loads((tmp_path / "ev" / "report.json").read_text())
    assert abs(report["voc"]["map07"] - summary["eval"]["map07"]) < 1e-6  # same checkpoint, same data: same number
    assert report["proposal_recall"]["recall"]
    # test-time flip augmentation and box voting: the same model, still well above chance
    assert main(["eval", "--checkpoint", str(out / "model_final.pt"), "--data", str(data), "--out", str(tmp_path / "ev2"),
                 "--workers", "0", "--no-progress", "--no-recall", "--flip-tta", "--set", "roi_heads.box_vote_thresh=0.5"]) == 0
    tta = json.loads((tmp_path / "ev2" / "report.json").read_text())
    assert tta["flip_tta"] is True and tta["voc"]["map07"] > 0.15, tta["voc"]["map07"]
    assert main(["detect", str(data / "JPEGImages"), "--checkpoint", str(out / "model_final.pt"),
                 "--out", str(tmp_path / "det"), "--workers", "0", "--no-progress"]) == 0
    dets = json.loads((tmp_path / "det" / "detections.json").read_text())
    assert len(list((tmp_path / "det").glob("*.jpg"))) == 60 and dets
