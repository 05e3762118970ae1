"""The machine a run or a table was computed on: what decides whether a rerun is bit-identical.

Training amplifies the last bits of floating-point reductions, and those depend on the CPU's kernels
(torch dispatches on the instruction set: AVX2, AVX512, ...), the thread count and the library
versions. A rerun on the same machine reproduces a run bit for bit; on another CPU the runs differ
in their last digits and, through training, in steps and test errors, while the statistics
replicate (README, "What is bit-identical").
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import numpy as np
import torch

import flatness


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def describe_machine() -> dict[str, Any]:
    """CPU model and the instruction set torch's kernels use, cores, threads, accelerator and the
    versions of what computes the numbers."""
    return {
        "cpu": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "flatness": flatness.__version__,
    }
