"""Constants and builders shared by the orchestration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]

# Three outcomes with no words in common, so a tiny network separates them exactly.
OUTCOMES: dict[str, dict[str, Any]] = {
    "check_weather": {
        "name": "check_weather",
        "examples": ["what is the weather today", "will it rain tomorrow", "is it sunny outside",
                     "forecast for the weekend", "how cold is it this morning"],
        "synonyms": {"weather": ["forecast", "conditions"]},
    },
    "play_music": {
        "name": "play_music",
        "examples": ["play some jazz music", "put on my playlist", "start that song again", "play rock tunes loudly",
                     "shuffle my favourite album"],
        "synonyms": {"play": ["put on", "start"]},
    },
    "set_alarm": {
        "name": "set_alarm",
        "examples": ["wake me at seven", "set an alarm for six", "alarm at noon please", "wake me up early",
                     "ring the alarm at eight"],
    },
}

# The tiny training config of every flow run here: about a second per run on one CPU thread. The settings file is
# named, so the runs do not depend on the folder pytest starts in.
TINY: dict[str, Any] = {"config": str(REPO / "config" / "training.toml"), "augment_factor": 20, "epochs": 30,
                        "hidden_size": 32, "hidden_layers": 1, "patience": 5, "threshold": 0.5, "seed": 1,
                        "device": "cpu"}


def write_outcomes(folder: Path, definitions: dict[str, dict[str, Any]] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, definition in (definitions or OUTCOMES).items():
        (folder / f"{name}.json").write_text(json.dumps(definition, indent=2), encoding="utf-8")
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def prefect_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of a child process that talks to Prefect: ours, with its own home and no inherited URL."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PREFECT_")}
    env.update({"PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
                "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env
