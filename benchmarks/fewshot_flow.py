"""The few-shot benchmark (``benchmarks/fewshot.py``) as a Prefect flow, for a developer who wants it nightly.

    python benchmarks/fewshot_flow.py    # one run of the flow with its defaults, on Prefect's embedded server

Each run is a task that drives the public CLI (import, retrain, evaluate) in a child process; the summary is
published as a table artifact under one key, so the UI shows accuracy night after night. Not a deployment of
prefect.yaml: the product's nightly check is ``flows/nightly.py``.
"""

# No `from __future__ import annotations`: see flows/retrain.py (served flows are pickled by value).
from datetime import UTC, datetime

from fewshot import DEFAULT_DATA, FEATURIZERS, SEEDS, SHOTS, FewshotRun, markdown_table, run_fewshot  # noqa: I001
from fewshot import summary_rows as summarise
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

TABLE_ARTIFACT_KEY = "fewshot-benchmark"
RUNS_ARTIFACT_KEY = "fewshot-benchmark-runs"


@task(name="fewshot_run", cache_policy=NO_CACHE)
def fewshot_run(data: str, featurizer: str, seed: int, shots: int) -> FewshotRun:
    return run_fewshot(data, featurizer, seed, shots)


@flow(name="fewshot-benchmark", persist_result=False)
def fewshot_benchmark(data: str = str(DEFAULT_DATA), featurizers: list[str] = list(FEATURIZERS),  # noqa: B006,B008
                      seeds: list[int] = list(SEEDS), shots: int = SHOTS) -> list[dict[str, object]]:  # noqa: B006,B008
    """Score bag-of-words and embeddings on CLINC150 k-shot; publish the summary table."""
    logger = get_run_logger()
    runs = []
    for featurizer in featurizers:
        for seed in seeds:
            run = fewshot_run(data, featurizer, seed, shots)
            logger.info("%s seed %d: accuracy %.4f, OOS recall %s, %.0f s", featurizer, seed,
                        run.accuracy_without_oos, run.oos_recall, run.seconds)
            runs.append(run)
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    rows = [{"date": day, "shots": shots, **row} for row in summarise(runs)]
    create_table_artifact(key=TABLE_ARTIFACT_KEY, table=rows,
                          description=f"Few-shot CLINC150 (k = {shots}): accuracy per featurizer, {day}")
    create_markdown_artifact(key=RUNS_ARTIFACT_KEY, markdown=markdown_table(runs),
                             description=f"Every few-shot run of {day}")
    return rows


if __name__ == "__main__":
    fewshot_benchmark()
