"""What the benchmarks share: the machine's description and the playbook recipe's data."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {os.cpu_count()} cores{gpu}; Python {platform.python_version()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch threads")


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def command() -> str:
    return " ".join(["python", *[arg if " " not in arg else repr(arg) for arg in sys.argv]])


def git_revision() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def playbook_data(augment_factor: int = 500, seed: int = 2025):
    """The bundled outcomes prepared with the playbook's settings: (train rows, val rows)."""
    from intentflow.config import PrepareConfig
    from intentflow.dataset import prepare_data
    from intentflow.outcomes import load_outcomes

    data = prepare_data(load_outcomes(ROOT / "config" / "outcomes"),
                        PrepareConfig(augment_factor=augment_factor, seed=seed))
    return data.train, data.val
