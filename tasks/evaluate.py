from prefect import task
from prefect.cache_policies import NO_CACHE

from intentflow import evaluate
from intentflow.evaluate import Evaluation
from intentflow.inference import Classifier


@task(name="evaluate_model", cache_policy=NO_CACHE)
def evaluate_model(classifier: Classifier, texts: list[str], labels: list[str]) -> Evaluation:
    return evaluate.evaluate_model(classifier, texts, labels)
