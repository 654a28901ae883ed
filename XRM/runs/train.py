"""The training loop over a stack of runs: H runs trained together, one batched step at a time.

``train_stack(specs)`` trains the unfinished runs among ``specs`` (runs that share a
``RunSpec.stack_key``). Small models (heads on features, the Synthetic data, the
ColorMNIST MLP) are trained as stacks of as many runs as fit the device's memory (at most
``stack_size``), and so are BERT runs with ``--stack_text_runs`` (a TextStack,
XRM/engine/text_stack.py); other backbones one run at a time. A single run is a stack of one. Each run
keeps its own hyper-parameters, batch stream (a pure function of (seed, step)), algorithm
state and files. Idempotent and resumable: a finished run is skipped, and with ``resume``
an interrupted run continues from its checkpoint and writes the same records. A checkpoint
whose records are gone (results file missing, empty, damaged or without the records before
the checkpoint's step) cannot be trusted: the run restarts from step 0, with a warning. A
run's done file is written only over a results file that holds its header and records.
"""
import math
import sys
import time
from collections.abc import Sequence

import torch

from XRM.algorithms import get_algorithm_class
from XRM.common.devices import resolve_device
from XRM.common.errors import Interrupted, RunsFailed, UserError
from XRM.common.fileio import append_jsonl, atomic_write_text
from XRM.common.sampling import StepUniforms, build_sampler
from XRM.engine.batches import training_batches
from XRM.engine.captured_step import CapturedStep
from XRM.engine.evaluation import StackEvaluator
from XRM.engine.model_stacks import ModuleStack, ParameterStack
from XRM.engine.stack_steps import AlgorithmSlice, StackSteps, algorithm_slice
from XRM.engine.text_stack import TextStack
from XRM.networks.token_batches import TokenBatch, TokenRows
from XRM.results import records, selection
from XRM.runs import checkpoints
from XRM.runs.identity import IDENTITY
from XRM.runs.inputs import StackData, load_inputs
from XRM.runs.lock import try_lock, unlock
from XRM.runs.members import Member, member_of, next_evaluation, records_problem, selection_bests
from XRM.runs.progress import Progress, Throughput
from XRM.runs.provenance import PROVENANCE, provenance
from XRM.runs.phase_1_files import save_phase_1_artifact
from XRM.runs.spec import RunSpec
from XRM.runs.stack_models import slice_key, stack_groups, stack_model
from XRM.runs.stop_signals import StopRequests
from XRM.runs.tensorboard_logs import RecordWriter, require_tensorboard

DTYPES = {"float32": torch.float32, "float64": torch.float64}


def train_stack(specs: Sequence[RunSpec], stack_size: int | None = None) -> None:
    """Train the unfinished runs among ``specs`` that no other process is training (see the module docstring)."""
    locks = {}
    try:
        for spec in specs:
            if spec.is_done():
                continue
            handle = try_lock(spec.files.lock)
            if handle is None:
                print(f"{spec.run_name}: running in another process; skipped", file=sys.stderr)
            else:
                locks[spec] = handle
        if locks:
            _train_locked([spec for spec in specs if spec in locks and not spec.is_done()], stack_size)
    finally:
        for handle in locks.values():
            unlock(handle)


def _train_locked(todo: list[RunSpec], stack_size: int | None) -> None:
    if any(spec.tensorboard for spec in todo):
        require_tensorboard()  # before anything is written
    for spec in todo:
        for path in spec.files.stale_temporaries():  # a killed write's leftovers; the lock makes them ours
            path.unlink(missing_ok=True)
    checkpoints.settle_pending_checkpoints([spec.files for spec in todo])  # a stack's checkpoints killed half-saved
    device = resolve_device(todo[0].device)
    dtype = DTYPES[todo[0].dtype]
    data, setups = load_inputs(todo, device, dtype)
    members = [member_of(setup, data) for setup in setups]
    for group in stack_groups(members, data, stack_size, device, dtype):
        StackTrainer(group, data, device, dtype).train()


class StackTrainer:
    """Trains one stack of members from their common start step to the end: the batches and steps are
    StackSteps' (XRM/engine/stack_steps.py); files, evaluation, checkpoints, locks and signals are its own."""

    def __init__(self, members: list[Member], data: StackData, device: torch.device, dtype: torch.dtype) -> None:
        self.members, self.data, self.device, self.dtype = members, data, device, dtype
        self.train_split = data.splits["tr"]
        hparams = [member.setup.hparams for member in members]
        self.num_steps, self.eval_every = hparams[0]["num_steps"], hparams[0]["eval_every"]
        self.phase = get_algorithm_class(members[0].spec.algorithm).phase
        self.model = stack_model(members, data, device, dtype)
        # text: every row's real length known on the host, so a step's batch skips padding without a synchronisation
        self.token_rows = TokenRows(self.train_split.x) if data.inputs == "tokens" and not data.small_model else None
        if isinstance(self.model, TextStack) and not self.token_rows.right_padded:
            raise UserError("--stack_text_runs packs token rows whose real tokens come first (right padding); these "
                            "rows are padded otherwise: train their runs without --stack_text_runs")
        slices = self._slices()
        for member in members:
            cls = get_algorithm_class(member.spec.algorithm)
            classes = member.run_data.y if data.balanced_batches and cls.follows_balanced_batches else None
            member.sampler = build_sampler(cls.sampling, member.run_data.groups, member.setup.hparams["batch_size"],
                                           member.spec.seed, classes, cls(data.num_classes).training_pool(member.run_data))
            if cls.draws_uniforms:
                member.uniforms = StepUniforms(member.spec.seed, member.sampler.batch_size)
        self.steps = StackSteps(self.model, slices, self.train_split.x, self.train_split.y,
                                [m.run_data.groups for m in members], [m.sampler for m in members],
                                [m.uniforms for m in members], dtype, device)
        self.evaluator = None
        if self.phase == 2:
            on_device: dict[int, torch.Tensor] = {}  # runs sharing a source share one tensor on the device

            def moved(tensor: torch.Tensor | None) -> torch.Tensor | None:
                if tensor is None:
                    return None
                if id(tensor) not in on_device:
                    on_device[id(tensor)] = tensor.to(device)
                return on_device[id(tensor)]

            self.evaluator = StackEvaluator(data.splits["va"], data.splits["te"],
                                            [moved(m.setup.validation_groups) for m in members],
                                            [moved(m.setup.inferred_validation_attributes) for m in members])
        self.start = members[0].start
        self.test_groups = data.test_groups()
        self._restore_or_start()

    def _slices(self) -> list[AlgorithmSlice]:
        slices, begin = [], 0
        while begin < len(self.members):
            key = slice_key(self.members[begin])
            end = begin
            while end < len(self.members) and slice_key(self.members[end]) == key:
                end += 1
            runs = self.members[begin:end]
            slices.append(algorithm_slice(get_algorithm_class(key[0])(self.data.num_classes), begin,
                                          [m.run_data for m in runs], [m.setup.hparams for m in runs],
                                          self.dtype, self.device))
            begin = end
        return slices

    # ------------------------------------------------------------------ files

    def _restore_or_start(self) -> None:
        for index, member in enumerate(self.members):
            files, checkpoint = member.spec.files, member.checkpoint
            # the criterion of the run's folder (va_wga where it was given true or no group labels, even where a
            # phase-1 file gives it va_gi_wga too), as select_base_model picks a base model's combination
            member.best = {"metric": selection.best_checkpoint_metric(
                records.group_labels_kind(member.spec.group_labels) == "inferred"), "value": -1.0, "step": -1}
            if checkpoint is None:
                files.directory.mkdir(parents=True, exist_ok=True)
                header = {"hparams": member.setup.hparams, **member.spec.header(), IDENTITY: member.setup.identity,
                          PROVENANCE: provenance(self.device), records.TEST_GROUPS: self.test_groups,
                          "inputs_used": self.data.inputs,
                          "backbone_used": None if self.data.backbone is None else self.data.backbone.name}
                records.write_header(files.results, header)
                continue
            self.model.load_member(index, checkpoint["model"], checkpoint["optimizer"], checkpoints.load_best_model(files))
            part, row = self.steps.slice_of(index)
            for key, value in checkpoint["algorithm_state"].items():
                part.state[key][row] = value.to(self.device)
            if "training_loss" in checkpoint:  # the losses summed since the last evaluation, for its record
                self.steps.loss_sum[index], self.steps.loss_steps[index] = checkpoint["training_loss"]
            if "rng" in checkpoint and isinstance(self.model, ModuleStack):
                checkpoints.restore_rng_states(checkpoint["rng"])
            member.best = checkpoint["best"]
            records.truncate_records(files.results, checkpoint["step"])
            member.selection_bests = checkpoint.get("selection_bests") or selection_bests(files)
            print(f"resuming {member.spec.run_name} from step {member.start}", file=sys.stderr)

    def _algorithm_state(self, index: int) -> dict[str, torch.Tensor]:
        part, row = self.steps.slice_of(index)
        return {key: value[row].cpu().clone() for key, value in part.state.items()}

    def _save_checkpoints(self, step: int) -> None:
        """Every live run's checkpoint at ``step``, saved as one (checkpoints.save_pending_checkpoint)."""
        live = self.live_members_by_index()
        saved = [member.spec.files for _, member in live]
        for index, member in live:  # a diverged run's last checkpoint stays the last finite state
            if member.best_changed:
                checkpoints.save_best(member.spec.files, self.model.best_model_state(index), member.best,
                                      member.setup.hparams)
                member.best_changed = False
            state = {"step": step, "model": self.model.model_state(index),
                     "optimizer": self.model.optimizer_state(index), "algorithm_state": self._algorithm_state(index),
                     "best": member.best, "selection_bests": dict(member.selection_bests),
                     "hparams": member.setup.hparams, IDENTITY: member.setup.identity,
                     "training_loss": [self.steps.loss_sum[index].item(), self.steps.loss_steps[index].item()]}
            if isinstance(self.model, ModuleStack):
                state["rng"] = checkpoints.rng_states()
            checkpoints.save_pending_checkpoint(member.spec.files, state, saved[-1])
        checkpoints.commit_checkpoints(saved)
        for _, member in live:
            if member.tensorboard is not None:  # its events up to the checkpoint's step are kept on a resume
                member.tensorboard.flush()

    # ------------------------------------------------------------------ training

    def train(self) -> None:
        """Train every member to the last step, evaluating, checkpointing and finishing them."""
        for member in self.members:
            if member.spec.tensorboard:
                member.tensorboard = RecordWriter(member.spec.files.tensorboard, member.start)
        try:
            self._train()
        finally:
            for member in self.members:
                if member.tensorboard is not None:
                    member.tensorboard.close()

    def _train(self) -> None:
        label = self.members[0].spec.run_name if len(self.members) == 1 else f"stack of {len(self.members)} runs"
        self.progress = Progress(label, self.start, self.num_steps)
        loader_batches = None
        if not isinstance(self.train_split.x, torch.Tensor):  # images read from disk: one DataLoader for the run
            loader_batches = iter(training_batches(self.train_split.x, self.members[0].sampler, self.start,
                                                   self.num_steps, self.device, self.members[0].spec.num_workers))
        train_step = self.steps.train_step
        if self.device.type == "cuda" and isinstance(self.model, ParameterStack) and self.members[0].spec.cuda_graphs:
            train_step = CapturedStep(self.steps.train_step)
        last_checkpoint = time.monotonic()
        step = self.start
        self.throughput = Throughput(step)  # from here: a DataLoader's start is not counted
        plan = self.steps.plan(step, next_evaluation(step, self.eval_every, self.num_steps) + 1) if step < self.num_steps else {}
        with StopRequests() as stops:
            while step < self.num_steps:
                stop = step + len(plan["step"])
                for row in range(stop - step):
                    batch = self.steps.batch(plan, row)
                    if loader_batches is not None:
                        self.steps.train_step(batch, next(loader_batches)[1])
                    elif self.token_rows is not None:
                        self.steps.train_step(batch, self._token_batches(batch.index, plan["host_index"][row]))
                    else:
                        train_step(batch)
                    if stops.signum is not None:
                        self._stop(step + row, stop - 1, stops.signum)
                step, last_checkpoint = self._end_chunk(step, stop, plan, last_checkpoint)
        self.progress.close()
        if self.phase == 1:
            self._finish_phase_1()
        failed = {m.spec.run_name: f"diverged at step {m.diverged_at} (non-finite loss); not marked done"
                  for m in self.members if m.diverged_at is not None}
        for member in self.live_members():
            problem = records_problem(member.spec.files, self.num_steps - 1, member.first_evaluation)
            if problem is None:
                atomic_write_text("", member.spec.files.done)
            else:
                failed[member.spec.run_name] = f"{problem}; not marked done"
        if failed:
            raise RunsFailed(failed)

    def _token_batches(self, index: torch.Tensor, host_index: torch.Tensor) -> TokenBatch | list[TokenBatch]:
        """A step's token rows from its batches ``index`` [H, B] (``host_index``: on the host): the run's batch,
        or in a TextStack each run's own (its first batch_size rows; the rest pad the stack's widest batch)."""
        if not isinstance(self.model, TextStack):
            return self.token_rows.batch(index[0], host_index[0])
        sizes = [member.sampler.batch_size for member in self.members]
        return [self.token_rows.batch(index[run, :size], host_index[run, :size]) for run, size in enumerate(sizes)]

    def _end_chunk(self, step: int, stop: int, plan: dict, last_checkpoint: float) -> tuple[int, float]:
        """After steps step .. stop-1: draw the next chunk's batches (while the device trains), evaluate,
        and checkpoint when due. Returns the next step and the time of the last checkpoint."""
        if stop < self.num_steps:
            plan.update(self.steps.plan(stop, next_evaluation(stop, self.eval_every, self.num_steps) + 1))
        self.progress.advance(stop - step)
        self._evaluate(stop - 1)
        if time.monotonic() - last_checkpoint >= self.members[0].spec.checkpoint_seconds or stop == self.num_steps:
            self._save_checkpoints(stop - 1)
            last_checkpoint = time.monotonic()
        self.throughput.restart()
        return stop, last_checkpoint

    def _stop(self, step: int, evaluation_step: int, signum: int) -> None:
        """Save every run's checkpoint at ``step`` (just trained; evaluated first when it is the
        chunk's ``evaluation_step``, whose record a resumed run would never write) and raise Interrupted."""
        if step == evaluation_step:
            self._evaluate(step)
        self._save_checkpoints(step)
        print(f"stopped at step {step} by signal {signum}; checkpoints saved", file=sys.stderr)
        raise Interrupted(signum)

    def live_members(self) -> list[Member]:
        """The members still training (not diverged)."""
        return [member for _, member in self.live_members_by_index()]

    def live_members_by_index(self) -> list[tuple[int, Member]]:
        """The members still training (not diverged), each with its index in the stack."""
        return [(index, member) for index, member in enumerate(self.members) if member.diverged_at is None]

    def _note_divergence(self) -> None:
        """Stop the members whose loss stopped being finite (read at an evaluation: one synchronisation)."""
        for member, step in zip(self.members, self.steps.diverged_step.tolist()):
            if step >= 0 and member.diverged_at is None:
                member.diverged_at = step
                print(f"{member.spec.run_name}: diverged at step {step} (non-finite loss); stopped, not marked done",
                      file=sys.stderr)

    # ------------------------------------------------------------------ evaluation

    def _training_records(self, step: int) -> list[dict[str, float]]:
        """Each member's training loss (mean since the last evaluation; absent when no step was finite),
        learning rate and throughput up to ``step`` (records.TIMING_KEYS), for its next record."""
        losses = self.steps.take_training_losses().tolist()
        steps_per_s = self.throughput.steps_per_second(step)
        return [{**({records.TRAIN_LOSS: loss} if loss == loss else {}), records.LR: rate,
                 records.STEPS_PER_S: steps_per_s, records.EXAMPLES_PER_S: steps_per_s * member.sampler.batch_size}
                for member, loss, rate in zip(self.members, losses, self.model.learning_rates())]

    def _append_record(self, member: Member, record: dict) -> None:
        """Append ``record`` to the member's results file (and show it in TensorBoard with --tensorboard)."""
        append_jsonl(member.spec.files.results, record)
        if member.tensorboard is not None:
            member.tensorboard.write(record)

    def _evaluate(self, step: int) -> None:
        self._note_divergence()  # reads from the device: the steps up to here are done, the throughput can be read
        training = self._training_records(step)
        if self.phase == 1:
            self._evaluate_phase_1(step, training)
            return
        validation = self._rows(self.evaluator.validation(self.steps.evaluation_logits))
        rows = [None if member.diverged_at is not None or step < member.first_recorded_step
                else {records.STEP: step, **row} for member, row in zip(self.members, validation)]
        tested = [row is not None and (selection.reaches_best(member.selection_bests, row)
                                       or member.spec.test_every_evaluation)
                  for member, row in zip(self.members, rows)]
        # one batched pass for the whole stack, only when some run's selection may look here
        test = self._rows(self.evaluator.test(self.steps.evaluation_logits)) if any(tested) else None
        improved, key_values = [], []
        for member, row, trained, index in zip(self.members, rows, training, range(len(rows))):
            if row is None:
                improved.append(False)
                continue
            tests = test[index] if tested[index] else dict.fromkeys(self.evaluator.test_keys())  # null: not evaluated
            self._append_record(member, {**row, **tests, **trained})
            key_values.append(row.get(member.best["metric"], math.nan))
            better = selection.may_select_step(step) and row[member.best["metric"]] >= member.best["value"]
            if better:
                member.best = {"metric": member.best["metric"], "value": row[member.best["metric"]], "step": step}
                member.best_changed = True
            improved.append(better)
        self.model.keep_best(torch.tensor(improved, device=self.device))
        self.progress.evaluated(step, self.members[0].best["metric"], key_values)

    def _evaluate_phase_1(self, step: int, training: list[dict[str, float]]) -> None:
        """Each live run's record of its algorithm's training metrics (XRM: flip rate; EIIL, whose
        metric comes at the end, none) and training loss; the progress shows the first of those."""
        shown, shown_values = None, []
        for part in self.steps.slices:
            metrics = part.algorithm.training_metrics(part.state, self.train_split.y)
            shown = shown or next(iter(metrics), records.TRAIN_LOSS)
            rows = zip(*(column.tolist() for column in metrics.values())) if metrics else [()] * (part.end - part.begin)
            for index, row in zip(range(part.begin, part.end), rows):
                if self.members[index].diverged_at is None:
                    record = {records.STEP: step, **dict(zip(metrics, row)), **training[index]}
                    self._append_record(self.members[index], record)
                    shown_values.append(record.get(shown, math.nan))
        self.progress.evaluated(step, shown, shown_values)

    @staticmethod
    def _rows(metrics: dict[str, torch.Tensor]) -> list[dict[str, float]]:
        """Each run's metrics (read from the device at once), without NaN values (not recorded)."""
        names = list(metrics)
        values = torch.stack([metrics[name] for name in names], dim=1).tolist()
        return [{name: value for name, value in zip(names, row) if value == value} for row in values]

    def _finish_phase_1(self) -> None:
        """The algorithm's groups inferred from every training and validation example; each run's
        phase-1 file saved, or its degeneracy recorded."""
        train, validation = self.data.splits["tr"], self.data.splits["va"]
        # read this one time: images are streamed, not decoded into memory
        train_logits = self.model.predict(train.x, once=True)
        validation_logits = self.model.predict(validation.x, once=True)
        for part in self.steps.slices:
            rows = slice(part.begin, part.end)
            inferred = part.algorithm.infer_groups(train_logits[rows], part.state, train.y,
                                                   validation_logits[rows], validation.y)
            for member, groups in zip(self.members[rows], inferred):
                if member.diverged_at is not None:
                    continue
                files = member.spec.files
                metric = part.algorithm.phase_1_metric
                if groups.degenerate:
                    # reported as a zero phase-1 metric (flip rate, EIIL's penalty) at the end, so that selection passes it over
                    self._append_record(member, {records.STEP: self.num_steps, metric: 0.0, records.DEGENERATE: True})
                    print(f"warning: {files.directory / files.tag}: degenerate inferred groups (a class not split in "
                          "two); no phase-1 file written", file=sys.stderr)
                    continue
                if groups.metrics:  # what the inference measured (EIIL's penalty), after the last evaluation
                    self._append_record(member, {records.STEP: self.num_steps, **groups.metrics})
                save_phase_1_artifact(files.inferred, groups.train_attributes, groups.validation_attributes,
                                      groups.held_out_logits)
