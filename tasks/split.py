from prefect import task
from prefect.cache_policies import NO_CACHE

from intentflow import split
from intentflow.augment import Augmented
from intentflow.split import Split


@task(name="split_rows", cache_policy=NO_CACHE)
def split_rows(augmented: Augmented, train_fraction: float, min_val_per_label: int, seed: int,
               keep_in_training: frozenset[str] = frozenset(), out_of_scope: tuple[str, ...] = ()) -> Split:
    return split.split_rows(augmented.rows, train_fraction, min_val_per_label, seed, keep_in_training, out_of_scope)
