"""The Faster R-CNN network: backbones, RPN, proposal layer, RoI head, the assembled detector."""
