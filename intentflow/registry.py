"""The model registry on disk (filled in by the orchestration work); here: resolving a checkpoint path."""

from __future__ import annotations

from pathlib import Path

from intentflow.errors import IntentflowError, display_path


def resolve_checkpoint(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise IntentflowError(f"{display_path(path)} is a folder (fix: pass a checkpoint file)")
    return path
