"""One training process of `--processes N`: `python -m fasterrcnn.engine.worker JOB.json`.

`engine.distributed.launch_local` starts N of these through PyTorch's launcher, which sets
each one's RANK / WORLD_SIZE / LOCAL_RANK as torchrun does; the job file holds the training
configuration (already checked by the launching process: data, outputs, resume) and the
intra-op thread count. Rank 0 writes `train_result.json` (the run's statistics) for the
launching process, which reads the trained model back from `model_final.pt`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch


def main(job_file: str) -> None:
    from fasterrcnn.engine.config import TrainConfig
    from fasterrcnn.engine.trainer import Trainer
    from fasterrcnn.fileio import atomic_write_text

    job = json.loads(Path(job_file).read_text())
    torch.set_num_threads(int(job["threads"]))
    cfg = TrainConfig()
    cfg.update(job["config"], where=job_file)
    trainer = Trainer(cfg, checked=True)
    result = trainer.run()
    if trainer.ctx.is_main:
        stats = {"iterations": result.iterations, "seconds": result.seconds, "images": result.images,
                 "final_losses": result.final_losses, "stages": result.stages}
        atomic_write_text(Path(cfg.out) / "train_result.json", json.dumps(stats))


def _run(job_file: str) -> None:
    """`main`, with its outcome handed to the launcher: a fasterrcnn error (the user's: bad
    data, a divergence) goes into the launcher's error file without a traceback on the
    terminal, for the launching process to raise as one line; anything else is a bug and keeps
    its traceback (and the error file, through `record`)."""
    from torch.distributed.elastic.multiprocessing.errors import record

    from fasterrcnn.engine.distributed import exit_process, shutdown
    from fasterrcnn.errors import FasterRCNNError

    try:
        record(main)(job_file)  # writes the error file of any exception, then re-raises it
    except FasterRCNNError:
        exit_process(1)
    shutdown()
    exit_process(0)


if __name__ == "__main__":
    _run(sys.argv[1])
