"""The paper's "proposal time" of a trained model on real images: the proposal layer alone
(decode, clip, small-box removal, top-N, NMS 0.7, top-M; the RPN conv excluded), median ms
over a folder's images, resized to a given shorter side.

`fasterrcnn bench model` times the same stage on random weights and noise images, where the
untrained RPN's boxes overlap far more than a trained one's, so NMS scans more of the top-N;
this script measures what a user of a trained model sees.

    python benchmarks/proposal_time.py CHECKPOINT IMAGE_DIR [--min-size 600] [--max-size 1000] [--images 50]
        [--post-nms-top-n 300] [--vectorised-nms]

(`--post-nms-top-n 2000`: the proposals kept in training with the paper's settings, and by
`fasterrcnn eval` for its proposal recall curve.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from fasterrcnn.data.transforms import pil_to_tensor  # noqa: E402
from fasterrcnn.modeling.checkpoint import load_checkpoint  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("image_dir")
    ap.add_argument("--min-size", type=int, default=600)
    ap.add_argument("--max-size", type=int, default=1000)
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--post-nms-top-n", type=int, default=None,
                    help="proposals kept after the NMS (default: the checkpoint's, 300 for the paper's settings)")
    ap.add_argument("--vectorised-nms", action="store_true",
                    help="switch off the numba-compiled greedy loop (time the PyTorch block loop instead)")
    args = ap.parse_args()
    if args.vectorised_nms:
        import importlib

        # (importlib: the attribute fasterrcnn.ops.nms is the function, not the module)
        importlib.import_module("fasterrcnn.ops.nms.loop")._compiled_greedy_loop = lambda: None
    extra = {} if args.post_nms_top_n is None else {"post_nms_top_n_test": args.post_nms_top_n}
    model, _ = load_checkpoint(args.checkpoint, min_size=args.min_size, max_size=args.max_size, **extra)
    model.prepare_for_inference()
    layer = model.rpn.proposal_layer
    times: list[float] = []
    counts: list[int] = []
    inner = layer.forward

    def timed(*a, **k):
        t = time.perf_counter()
        out = inner(*a, **k)
        times.append((time.perf_counter() - t) * 1000)
        counts.append(int(out[0][0].shape[0]))
        return out

    layer.forward = timed
    files = sorted(p for p in Path(args.image_dir).iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    files = files[: args.images]
    with torch.inference_mode():
        for f in files:
            model([pil_to_tensor(Image.open(f).convert("RGB"))])
    times, counts = times[2:], counts[2:]  # the first runs warm up
    print(f"proposal layer: median {statistics.median(times):.2f} ms, min {min(times):.2f} ms over {len(times)} "
          f"images at shorter side {args.min_size} (pre-NMS top {layer.pre_nms_top_n['testing']}, post-NMS top "
          f"{layer.post_nms_top_n['testing']}, "
          f"kept {statistics.median(counts):.0f} per image, {torch.get_num_threads()} threads)")


if __name__ == "__main__":
    main()
