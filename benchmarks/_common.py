"""What every benchmark script shares: picking the device and naming it in the output."""

from __future__ import annotations

import torch


def pick_device(arg: str) -> torch.device:
    """``auto`` → CUDA when present, else CPU; anything else as given."""
    if arg == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(arg)


def describe(device: torch.device) -> str:
    """The torch version and the device's name (GPU model, or CPU thread count)."""
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU, {torch.get_num_threads()} threads"
    )
    return f"torch {torch.__version__}, {name}"
