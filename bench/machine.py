"""The device every benchmark runs on, and how its figures name it."""

from __future__ import annotations

import torch


def pick_device() -> tuple[torch.device, str]:
    """The GPU when there is one, else the CPU; with its name for the printed figures."""
    if torch.cuda.is_available():
        return torch.device("cuda"), torch.cuda.get_device_name()
    return torch.device("cpu"), f"CPU, {torch.get_num_threads()} threads"
