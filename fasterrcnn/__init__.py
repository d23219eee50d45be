"""fasterrcnn: Faster R-CNN (Ren, He, Girshick, Sun, NIPS 2015) in pure PyTorch.

A Region Proposal Network and a Fast R-CNN detector sharing one convolutional backbone,
with the paper's numbers as defaults. See docs/ARCHITECTURE.md for the module map.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
