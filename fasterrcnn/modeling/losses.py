"""Loss terms shared by the RPN and the Fast R-CNN head.

Both use the multi-task loss of Fast R-CNN (paper, Eq. 1): a log loss for classification and
a robust smooth L1 loss for box regression, counted only for positive / foreground samples
(the p* factor of Eq. 1).
"""

from __future__ import annotations

import torch
from torch import Tensor


def smooth_l1(input: Tensor, target: Tensor, beta: float) -> Tensor:
    """Element-wise smooth L1 (Huber) loss, unreduced:

        0.5 * x^2 / beta   if |x| < beta
        |x| - 0.5 * beta   otherwise

    beta = 1 is Fast R-CNN's smooth L1; the paper's code uses sigma = 3 (beta = 1/9) for the
    RPN. beta = 0 is plain L1.
    """
    diff = (input - target).abs()
    if beta <= 0:
        return diff
    return torch.where(diff < beta, 0.5 * diff * diff / beta, diff - 0.5 * beta)
