"""A run as a member of a stack: its inputs, where it starts (its checkpoint, where its records can go on from
it) and its progress. XRM/runs/train.py trains members; XRM/runs/stack_models.py groups them into stacks."""
import sys
from dataclasses import dataclass, field

from XRM.algorithms import RunData, get_algorithm_class
from XRM.common.errors import UserError
from XRM.common.sampling import StepSampler, StepUniforms
from XRM.engine.text_stack import DROPOUT_GENERATOR
from XRM.results import records, selection
from XRM.runs import checkpoints
from XRM.runs.inputs import RunSetup, StackData
from XRM.runs.spec import RunSpec
from XRM.runs.tensorboard_logs import RecordWriter


@dataclass
class Member:
    """One run of a stack: its inputs, its place in the stack, and its progress."""

    setup: RunSetup
    run_data: RunData
    checkpoint: dict | None
    sampler: StepSampler | None = None
    uniforms: StepUniforms | None = None
    best: dict = field(default_factory=dict)
    best_changed: bool = False
    #: criterion -> its best value so far at a selectable step (selection.reaches_best): where the test split is evaluated
    selection_bests: dict = field(default_factory=dict)
    diverged_at: int | None = None  # the step whose loss was not finite: the run stops there
    tensorboard: RecordWriter | None = None  # with --tensorboard, while the run trains

    @property
    def spec(self) -> RunSpec:
        """The run's options."""
        return self.setup.spec

    @property
    def start(self) -> int:
        """The first step to train."""
        return 0 if self.checkpoint is None else self.checkpoint["step"] + 1

    @property
    def first_recorded_step(self) -> int:
        """The first evaluation written to the run's records (Algorithm.first_recorded_step)."""
        return get_algorithm_class(self.spec.algorithm).first_recorded_step(self.setup.hparams)

    @property
    def first_evaluation(self) -> int:
        """The step of the first evaluation written to the run's records."""
        hparams = self.setup.hparams
        return next_evaluation(self.first_recorded_step, hparams["eval_every"], hparams["num_steps"])


def next_evaluation(step: int, eval_every: int, num_steps: int) -> int:
    """The first evaluation step at or after ``step``: every eval_every-th step, and the last."""
    if step % eval_every == 0:
        return step
    return min((step // eval_every + 1) * eval_every, num_steps - 1)


def _check_text_stacking(spec: RunSpec, checkpoint: dict, family: str) -> None:
    """A UserError when the run resumes in a TextStack from a checkpoint written alone, or the other way round:
    its dropout draws would not continue those of its records."""
    written = "with" if DROPOUT_GENERATOR in (checkpoint.get("optimizer") or {}) else "without"
    if written != ("with" if spec.trains_in_text_stack(family) else "without"):
        raise UserError(f"{spec.run_name}: its checkpoint was written {written} --stack_text_runs, which draws "
                        f"dropout otherwise: resume it {written} --stack_text_runs, or delete its files to train it again")


def member_of(setup: RunSetup, data: StackData) -> Member:
    """The run as a stack member, with its checkpoint when it resumes from one its records can go on from."""
    spec = setup.spec
    member = Member(setup, setup.run_data(data.splits["tr"].y, data.num_classes), None)
    if spec.resume and spec.files.checkpoint.exists():
        checkpoint = checkpoints.load_checkpoint(spec, setup.identity)
        _check_text_stacking(spec, checkpoint, data.family)
        problem = records_problem(spec.files, checkpoint["step"], member.first_evaluation)
        if problem is None:
            member.checkpoint = checkpoint
        else:
            _start_afresh(spec, problem)
    return member


def records_problem(files: records.RunFiles, step: int, first_evaluation: int) -> str | None:
    """Why the records of a run cannot go on from its checkpoint at ``step`` (the run records its
    evaluations from ``first_evaluation`` on), or None: its results file is missing, unreadable,
    without its header line, or without a record up to ``step`` that it should hold."""
    if not files.results.exists():
        return f"its results file {files.results} is missing"
    try:
        header, run_records = records.read_results(files.results)
    except (OSError, ValueError) as error:
        return f"its results file is unreadable ({error})"
    if not header:
        return f"its results file {files.results} has no header line"
    if step >= first_evaluation and not any(record[records.STEP] <= step for record in run_records):
        return f"its results file {files.results} holds no record up to step {step}"
    return None


def _start_afresh(spec: RunSpec, problem: str) -> None:
    """Delete the run's checkpoints and phase-1 file (its lock is held): it trains again from step 0."""
    print(f"warning: {spec.run_name}: {problem}, so its checkpoint cannot be trusted; restarting it from step 0",
          file=sys.stderr)
    for path in (spec.files.checkpoint, spec.files.best_checkpoint, spec.files.inferred):
        path.unlink(missing_ok=True)


def selection_bests(files: records.RunFiles) -> dict[str, float]:
    """Each selection criterion's best value so far in a run's records (a checkpoint saved before
    checkpoints kept it: its records, truncated to its step, hold the same values)."""
    bests: dict[str, float] = {}
    for record in records.read_results(files.results)[1]:
        selection.reaches_best(bests, record)
    return bests
