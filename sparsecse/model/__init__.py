"""The contrastive sentence encoder (plain PyTorch): the backbone with its pooler, SimCSE's loss,
alignment and uniformity, the optimizer's schedule, and safe loading of configs and weights."""
