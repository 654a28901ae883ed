"""A stratified random split that draws as scikit-learn's ``train_test_split(..., stratify=...)``
does (its StratifiedShuffleSplit), so a metadata file built with it puts each row where a builder
that used scikit-learn puts it (SubpopBench's CheXpert), without scikit-learn installed."""
import math

import numpy as np


def _approximate_mode(class_counts: np.ndarray, draws: int, rng: np.random.RandomState) -> np.ndarray:
    """How many of ``draws`` each class gets: its share rounded down, the rest handed out to the
    largest remainders (ties drawn at random)."""
    continuous = class_counts / class_counts.sum() * draws
    floored = np.floor(continuous)
    need_to_add = int(draws - floored.sum())
    if need_to_add > 0:
        remainder = continuous - floored
        for value in np.sort(np.unique(remainder))[::-1]:
            (tied,) = np.where(remainder == value)
            chosen = rng.choice(tied, size=min(len(tied), need_to_add), replace=False)
            floored[chosen] += 1
            need_to_add -= len(chosen)
            if need_to_add == 0:
                break
    return floored.astype(int)


def stratified_train_test(items: np.ndarray, strata: np.ndarray, test_fraction: float,
                          seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``items`` split into (train, test) with ``ceil(test_fraction * n)`` test items, each stratum
    (a value of ``strata``, one per item) in proportion; both parts in the drawn order."""
    items, strata = np.asarray(items), np.asarray(strata)
    n = len(items)
    n_test = math.ceil(test_fraction * n)
    n_train = n - n_test
    classes, stratum_of = np.unique(strata, return_inverse=True)
    class_counts = np.bincount(stratum_of)
    if class_counts.min() < 2 or min(n_train, n_test) < len(classes):
        raise ValueError(f"{n} items in {len(classes)} strata (the smallest of {class_counts.min()}) cannot give "
                         f"{n_train} train and {n_test} test items with every stratum on both sides")
    members = np.split(np.argsort(stratum_of, kind="mergesort"), np.cumsum(class_counts)[:-1])
    rng = np.random.RandomState(seed)
    train_counts = _approximate_mode(class_counts, n_train, rng)
    test_counts = _approximate_mode(class_counts - train_counts, n_test, rng)
    train, test = [], []
    for stratum in range(len(classes)):
        shuffled = members[stratum].take(rng.permutation(class_counts[stratum]), mode="clip")
        train.extend(shuffled[:train_counts[stratum]])
        test.extend(shuffled[train_counts[stratum]:train_counts[stratum] + test_counts[stratum]])
    return items[rng.permutation(train)], items[rng.permutation(test)]
