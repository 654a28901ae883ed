"""Every model-selection rule: which evaluation step of a run, which hyper-parameter combination,
which phase-1 run, and which checkpoint is a run's best.

Runs are read as objects with ``hparams_comb``, ``seed``, ``records``, ``phase`` and ``files``
(XRM.results.collect.RunResult).
"""
from XRM.common.errors import UserError
from XRM.results import records


def is_phase_1(run_records: list[dict]) -> bool:
    """Whether records come from phase 1 (they carry a phase-1 metric: XRM's flip rate, EIIL's
    penalty), read from the records themselves."""
    return phase_1_metric(run_records) is not None


def phase_1_metric(run_records: list[dict]) -> str | None:
    """The phase-1 metric (records.PHASE_1_METRICS) that records carry, None if none."""
    for metric in records.PHASE_1_METRICS:
        if any(metric in record for record in run_records):
            return metric
    return None


def runs_phase_1_metric(runs: list) -> str:
    """The phase-1 metric that phase-1 runs record (flip_rate where none says)."""
    for run in runs:
        metric = phase_1_metric(run.records)
        if metric is not None:
            return metric
    return records.FLIP_RATE


def may_select_step(step: int | None) -> bool:
    """Whether a phase-2 evaluation may be selected: any of a whole-number step but step 0's (the
    untrained model); never one without a step."""
    return isinstance(step, int) and not isinstance(step, bool) and step > 0


#: the criteria a phase-2 run's evaluation step may be selected by (each where the run records it):
#: every selection metric but phase 1's
STEP_CRITERIA = tuple(metric for metric in records.SELECTION_METRICS if metric not in records.PHASE_1_METRICS)


def reaches_best(bests: dict[str, float], record: dict) -> bool:
    """Whether some criterion of STEP_CRITERIA that ``record`` carries reaches or ties its best so far
    in ``bests`` (criterion -> highest value at a selectable step; updated in place) at a selectable
    step: the evaluations where :func:`selected_record` may end up, so the only ones whose test
    metrics a selection reads. Call it on a run's records in order of step."""
    if not may_select_step(record.get(records.STEP)):
        return False
    reached = False
    for metric in STEP_CRITERIA:
        value = record.get(metric)
        if value is not None and value >= bests.get(metric, float("-inf")):
            bests[metric] = value
            reached = True
    return reached


def selected_record(run_records: list[dict], metric: str) -> dict | None:
    """The record a run is judged by.

    Phase 1: the last record (the flip rate, or EIIL's penalty, at the end of training). Phase 2: the last
    evaluation after step 0 at which ``metric`` reached its maximum (early stopping; the
    untrained model at step 0 is never chosen, as in the reference's reader). None when no
    such record carries ``metric``.
    """
    if is_phase_1(run_records):
        return run_records[-1] if run_records else None
    candidates = [record for record in run_records
                  if record.get(metric) is not None and may_select_step(record.get(records.STEP))]
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


def best_checkpoint_metric(inferred_group_labels: bool) -> str:
    """The metric a run's best checkpoint is chosen by: va_gi_wga when the run's group labels are
    phase 1's inferred ones (its folder is ``group_labels_inferred``), else va_wga (its folder's
    criterion, where a phase-1 file gives the run va_gi_wga too)."""
    return records.VA_GI_WGA if inferred_group_labels else records.VA_WGA


def default_metric(runs: list) -> str:
    """The phase-1 metric the runs record (flip_rate, eiil_penalty) for phase-1 runs, va_wga otherwise."""
    return runs_phase_1_metric(runs) if runs and runs[0].phase == 1 else records.VA_WGA


def criterion_for(runs: list, requested: str | None) -> str:
    """The criterion for one folder: ``requested`` where its runs record it, else their default.

    A results root holds phase-1 (XRM) folders beside phase-2 ones, and only some phase-2
    runs record ``va_gi_wga``: a criterion asked for on the command line must not stop
    the tables it does not apply to.
    """
    if requested is None or not runs or not fits_phase(requested, runs[0].phase):
        return default_metric(runs)
    if not any(selected_record(run.records, requested) is not None for run in runs):
        return default_metric(runs)
    return requested


def selection_seed(runs: list, seed: int = 0) -> int:
    """The seed whose runs choose the hyper-parameters: ``seed`` when present, else the smallest."""
    seeds = sorted({run.seed for run in runs})
    return seed if seed in seeds else seeds[0]


def selectable(run) -> bool:
    """Whether a run may be selected: finished, with each step recorded once (``run.problem`` says why not)."""
    return getattr(run, "problem", None) is None


def best_hparams_comb(runs: list, metric: str, seed: int = 0) -> int:
    """The hyper-parameter combination with the best selected ``metric`` among the selectable runs of ``seed``."""
    check_metric(runs, metric)
    chosen_seed = selection_seed(runs, seed)
    scores = {}
    for run in runs:
        if run.seed == chosen_seed and selectable(run):
            record = selected_record(run.records, metric)
            if record is not None:
                scores[run.hparams_comb] = record
    if not scores:
        raise UserError(f"no finished run in {runs[0].files.directory} records {metric}; finish the sweep "
                        "(--resume) or choose another selection metric")
    return best_candidate(scores, metric)


def fits_phase(metric: str, phase: int) -> bool:
    """Phase 1 is judged by its phase-1 metrics alone; phase 2 by every other selection metric."""
    return (metric in records.PHASE_1_METRICS) == (phase == 1)


def check_metric(runs: list, metric: str) -> None:
    """A UserError when ``metric`` does not fit the runs' phase."""
    if not runs:
        return
    phase = runs[0].phase
    if not fits_phase(metric, phase):
        valid = ", ".join(records.PHASE_1_METRICS if phase == 1 else STEP_CRITERIA)
        raise UserError(f"{metric} does not apply to phase-{phase} runs in {runs[0].files.directory}; use {valid}")


def best_phase_1_comb(runs: list, seed: int) -> int:
    """The phase-1 combination whose groups phase 2 uses: the highest final value among ``seed``'s runs of
    the phase-1 metric they record (XRM's flip rate, EIIL's penalty)."""
    runs = [run for run in runs if run.seed == seed]
    return best_hparams_comb(runs, runs_phase_1_metric(runs), seed)
