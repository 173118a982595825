"""The nightly ``score-production`` flow: production scored on the golden set and its held-out split.

Each night adds a row to the table artifact ``intent-model-nightly``; the table holds the rows of earlier nights
too (read back from the artifact's latest version), so one artifact key shows the trend in the UI.
"""

# No `from __future__ import annotations`: see flows/retrain.py (served flows are pickled by value).
import json
from datetime import UTC, datetime
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import Artifact, create_table_artifact

from tasks.score import score_production

NIGHTLY_ARTIFACT_KEY = "intent-model-nightly"
# Nights kept in the table: about three months.
TREND_ROWS = 90


def run_name() -> str:
    """``score-2026-12-06-020000``: when the run started (UTC)."""
    return f"score-{datetime.now(UTC):%Y-%m-%d-%H%M%S}"


@flow(name="score-production", flow_run_name=run_name, persist_result=False)
def nightly_score(registry: str = "artifacts", evaluation: str = "config/evaluation") -> dict[str, Any]:
    """Score production on the golden set and its held-out split; add the night's row to the trend table."""
    logger = get_run_logger()
    row = score_production(registry, evaluation).to_dict()
    logger.info("production %s: held-out %s on %s sentences, golden set %s in scope / %s overall on %s rows%s",
                row["version"], _shown(row["held_out_accuracy"]), row["held_out_samples"],
                _shown(row["golden_accuracy"]), _shown(row["golden_overall"]), row["golden_samples"],
                f" ({row['note']})" if row["note"] else "")
    create_table_artifact(key=NIGHTLY_ARTIFACT_KEY, table=[row, *_earlier_rows()][:TREND_ROWS],
                          description="Production each night, newest first: its held-out model on the validation "
                                      "sentences it never learnt, the served model on the golden set")
    return row


def _earlier_rows() -> list[dict[str, Any]]:
    latest = Artifact.get(NIGHTLY_ARTIFACT_KEY)
    data = latest.data if latest is not None else None
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError:
            return []
    return [row for row in data if isinstance(row, dict)] if isinstance(data, list) else []


def _shown(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else "n/a"
