"""`losses`: the smooth L1 box-regression loss against L2 and L1 (paper, Eq. 1 and Sec. 3.1.2,
"Lreg(ti, ti*) = R(ti - ti*) where R is the robust loss function (smooth L1) defined in [2]";
Fast R-CNN, Eq. 3).

smooth L1(x) = 0.5 x^2 / beta for |x| < beta, |x| - 0.5 beta otherwise (beta = 1 in the
papers; the code uses sigma = 3, i.e. beta = 1/9, for the RPN). "L1 loss that is less
sensitive to outliers than the L2 loss used in R-CNN and SPPnet. When the regression targets
are unbounded, training with L2 loss can require careful tuning of learning rates in order to
prevent exploding gradients." Values and gradients come from the library's `smooth_l1`
(autograd), over the error range.
"""

from __future__ import annotations

from pathlib import Path

import torch

from fasterrcnn.explain._common import Context, Output, Result, footnote, pyplot, save
from fasterrcnn.modeling.losses import smooth_l1

FILES = ("losses.png",)
RANGE = 3.0


def curves(betas: tuple[float, ...] = (1.0, 1.0 / 9.0), n: int = 601) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{name: (value, gradient)} over x in [-RANGE, RANGE] (and "x" itself)."""
    x = torch.linspace(-RANGE, RANGE, n, dtype=torch.float64)
    out = {"x": (x, x)}
    fns = {f"smooth L1, beta = {b:.3g}": (lambda v, b=b: smooth_l1(v, torch.zeros_like(v), b)) for b in betas}
    fns["L2 (0.5 x^2)"] = lambda v: 0.5 * v * v
    fns["L1 (|x|)"] = lambda v: v.abs()
    for name, f in fns.items():
        v = x.clone().requires_grad_(True)
        y = f(v)
        (g,) = torch.autograd.grad(y.sum(), v)
        out[name] = (y.detach(), g)
    return out


def make(ctx: Context, out: Path) -> Result:
    plt = pyplot()
    c = curves()
    x = c.pop("x")[0].numpy()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8), layout="constrained")
    styles = {"L2": ("#d73027", "--"), "L1 ": ("#7f7f7f", ":")}
    for name, (value, grad) in c.items():
        colour, ls = next((v for k, v in styles.items() if name.startswith(k)), (None, "-"))
        lw = 2.4 if name.endswith("= 1") else 1.6
        axes[0].plot(x, value.numpy(), color=colour, ls=ls, lw=lw, label=name)
        axes[1].plot(x, grad.numpy(), color=colour, ls=ls, lw=lw, label=name)
    axes[0].set_ylim(0, 4.6)
    axes[0].set_title("loss value: quadratic near 0, linear for large errors")
    axes[1].set_title("gradient: smooth L1's is bounded by 1 (L2's grows with the error)")
    for ax, ylabel in zip(axes, ("loss R(x)", "dR/dx")):
        ax.set_xlabel("regression error x = t - t* (one coordinate)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Smooth L1 (Eq. 1's Lreg, from Fast R-CNN): robust to outliers; the paper's beta = 1, the code's RPN beta = 1/9")
    footnote(fig, "computed with fasterrcnn.modeling.losses.smooth_l1 and autograd; no model needed")
    save(fig, out / FILES[0])
    at_max = {name: [round(float(v[-1]), 4), round(float(g[-1]), 4)] for name, (v, g) in c.items()}
    return Result([Output(FILES[0], f"smooth L1 against L2 and L1, value and gradient over errors -{RANGE:g}..{RANGE:g}")],
                  {"at_x_max": at_max, "x_max": RANGE})
