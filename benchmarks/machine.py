"""What every benchmark records about the machine it ran on (its JSON's `machine`/`meta` block)."""

from __future__ import annotations

import platform
from datetime import datetime, timezone
from pathlib import Path

import torch


def cpu_name() -> str:
    """The CPU's model name from /proc/cpuinfo, else what `platform` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str) -> dict:
    """Device, versions (torch, CUDA, triton, Python) and the time, for `device` ("cpu" or "cuda")."""
    device = torch.device(device)
    info = {
        "device": device.type,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        import triton

        info["triton"] = triton.__version__
    except ImportError:
        info["triton"] = None
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update(
            device_name=props.name,
            capability=f"{props.major}.{props.minor}",
            sm_count=props.multi_processor_count,
            total_memory_gib=round(props.total_memory / 2**30, 1),
        )
    else:
        info.update(device_name=cpu_name(), threads=torch.get_num_threads())
    return info
