"""Inputs shared by tests/test_distributed.py and the processes it starts (tests/distributed_worker.py)."""

from __future__ import annotations

import torch

from fasterrcnn.modeling.faster_rcnn import FasterRCNN, build_model

IMAGES, SIZE, GT_PER_IMAGE, PROPOSALS = 4, (128, 160), 2, 40


def detector() -> FasterRCNN:
    """The small preset (BatchNorm in its trunk and box head) in its "detector" stage on given
    proposals, with every RoI sampled (no random choice, the same count in every image), so the
    loss of a batch is a deterministic function of its images: 2 processes x 2 images and 1 x 4
    must then give the same averaged gradients. Its RPN does not run (frozen, as the trainer does)."""
    torch.manual_seed(0)
    model = build_model("small", 3, min_size=SIZE[0], max_size=SIZE[1], train_min_size=[SIZE[0]], train_max_size=SIZE[1],
                        roi_heads={"batch_size_per_image": 10000, "positive_fraction": 1.0, "bg_iou_thresh_lo": 0.0})
    model.set_stage("detector").train()
    model.rpn.requires_grad_(False)
    return model


def batch() -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]], list[torch.Tensor]]:
    """4 images of one size, 2 objects each, and 40 proposals per image (a fixed seed)."""
    g = torch.Generator().manual_seed(1)
    h, w = SIZE
    images = [torch.rand(3, h, w, generator=g) for _ in range(IMAGES)]

    def boxes(n: int) -> torch.Tensor:
        xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.6, h * 0.6])
        wh = 16 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.35, h * 0.35])
        return torch.cat([xy, xy + wh], 1)

    targets = [{"boxes": boxes(GT_PER_IMAGE), "labels": torch.randint(1, 4, (GT_PER_IMAGE,), generator=g)} for _ in range(IMAGES)]
    proposals = [boxes(PROPOSALS) for _ in range(IMAGES)]
    return images, targets, proposals


def sync_bn_input() -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 6 feature maps (channels_last, as the trainer may use) and the weights of a loss on the output."""
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(6, 5, 7, 9, generator=g) * 3 + 1).contiguous(memory_format=torch.channels_last)
    return x, torch.randn(6, 5, 7, 9, generator=g)
