"""Model selection from records: which evaluation step of a run, and which hyper-parameter combination."""
from XRM import records


def is_phase_1(run_records: list[dict]) -> bool:
    """Whether records come from phase 1 (they carry a flip rate), read from the records themselves."""
    return any(records.FLIP_RATE in record for record in run_records)


def selected_record(run_records: list[dict], metric: str) -> dict | None:
    """The record a run is judged by.

    Phase 1: the last record (the flip rate at the end of training). Phase 2: the last
    evaluation at which ``metric`` reached its maximum (early stopping). None when no
    record carries ``metric``.
    """
    if is_phase_1(run_records):
        return run_records[-1] if run_records else None
    candidates = [record for record in run_records if record.get(metric) is not None]
    if not candidates:
        return None
    best = max(record[metric] for record in candidates)
    return [record for record in candidates if record[metric] == best][-1]


def best_candidate(scores: dict[int, dict], metric: str) -> int:
    """The key (hyper-parameter combination) whose selected record has the highest ``metric``.

    Ties are broken by validation average accuracy, then by the smallest key.
    """
    if not scores:
        raise ValueError("no candidates to select from")

    def rank(key: int) -> tuple:
        record = scores[key]
        return (record.get(metric, float("-inf")), record.get(records.VA_AVG_ACC, float("-inf")), -key)

    return max(scores, key=rank)


def best_checkpoint_metric(has_inferred_validation_groups: bool) -> str:
    """The metric a run's best checkpoint is chosen by: va_gi_wga when the run has inferred
    validation groups (from a phase-1 file), else va_wga."""
    return records.VA_GI_WGA if has_inferred_validation_groups else records.VA_WGA
