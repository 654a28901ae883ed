"""Where a run's files live, what they are called, and the records inside them.

Layout (compatible with the reference code): ``<out>/<ALGO>/<Dataset>/group_labels_<src>/``
holds, per run, ``results_hpcomb_<k>_seed<s>.json`` (JSON lines: first the run's
hyper-parameters, then one record per evaluation), ``ckpt_hpcomb_<k>_seed<s>.pt`` (last),
``best_hpcomb_<k>_seed<s>.pt`` (model at the best evaluation), phase 1's
``inferred_hpcomb_<k>_seed<s>.pt`` and ``done_hpcomb_<k>_seed<s>`` (written last).

Records are read defensively (:func:`read_results`): a line that is not an evaluation record
(not a JSON object, a step that is no whole number, a value that is no number) is skipped
with a warning naming the file and line, so no reader of a folder meets a value of the
wrong type.
"""
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from XRM.common.fileio import atomic_write_text

# record keys, defined once
STEP = "step"
FLIP_RATE = "flip_rate"
#: EIIL's: the IRMv1 penalty of its reference model over the inferred environments (training split), at the end
EIIL_PENALTY = "eiil_penalty"
#: what phase-1 runs are selected by (each algorithm's own, Algorithm.phase_1_metric; higher is better)
PHASE_1_METRICS = (FLIP_RATE, EIIL_PENALTY)
DEGENERATE = "degenerate"
VA_AVG_ACC, VA_WGA, TE_AVG_ACC, TE_WGA = "va_avg_acc", "va_wga", "te_avg_acc", "te_wga"
VA_GI_WGA = "va_gi_wga"
#: BAM's ClassDiff rule (Li et al., TMLR 2024), which needs no group label: minus the mean absolute
#: difference between the validation accuracies of every pair of classes (binary: -|acc_0 - acc_1|),
#: negated so that, as for every selection metric, higher is better (0 is best)
VA_NEG_CLASS_DIFF = "va_neg_class_diff"
#: training's own: each run's mean training loss since the previous evaluation, and its learning rate
TRAIN_LOSS, LR = "train_loss", "lr"
#: training's throughput since the previous evaluation (the clock stops while a stack evaluates and saves
#: checkpoints): steps per second, and training examples drawn per second (the run's batch size x steps per
#: second); a stack's runs train together, so each records the stack's steps per second
STEPS_PER_S, EXAMPLES_PER_S = "steps_per_s", "examples_per_s"
#: the keys that measure time: two runs that trained alike (resumed or unbroken, stacked or alone) differ there only
TIMING_KEYS = (STEPS_PER_S, EXAMPLES_PER_S)
#: the header's table of test groups: id -> {y, a, n, and where known label and attribute names}
TEST_GROUPS = "test_groups"
PHASE_2_METRICS = (VA_AVG_ACC, VA_WGA, VA_GI_WGA, TE_AVG_ACC, TE_WGA)


def metric_key(split: str, metric: str) -> str:
    """The record key of ``metric`` ('avg_acc' or 'wga') on ``split`` ('va' or 'te'), e.g. 'va_wga'."""
    key = f"{split}_{metric}"
    if key not in PHASE_2_METRICS:
        raise ValueError(f"no record key {key!r}; keys: {', '.join(PHASE_2_METRICS)}")
    return key
SELECTION_METRICS = (VA_WGA, VA_GI_WGA, VA_AVG_ACC, VA_NEG_CLASS_DIFF, *PHASE_1_METRICS)

#: per-group test accuracy: ``te_acc_group_<g>`` for each test group id g = y * n_attr + a
#: present (keys the reference code's reader does not read, so its folders stay readable)
TEST_GROUP_ACCURACY_PREFIX = "te_acc_group_"
TEST_GROUP_ACCURACY_PATTERN = re.compile(rf"^{TEST_GROUP_ACCURACY_PREFIX}(\d+)$")


def test_group_accuracy_key(group: int) -> str:
    """The record key of the test accuracy of group id ``group``."""
    return f"{TEST_GROUP_ACCURACY_PREFIX}{group}"


def is_test_metric(key: str) -> bool:
    """Whether ``key`` is a test metric (te_avg_acc, te_wga, te_acc_group_<g>): the keys a record
    may hold as null, where training did not evaluate the test split (no selection rule looks there)."""
    return key in (TE_AVG_ACC, TE_WGA) or TEST_GROUP_ACCURACY_PATTERN.match(key) is not None


def recorded(entry: dict) -> dict:
    """A record's values that were recorded: without NaN and null (both mean 'not recorded')."""
    return {key: value for key, value in entry.items() if value is not None and value == value}


def without_timing(record: dict) -> dict:
    """A record without its TIMING_KEYS: what two runs that trained alike record alike."""
    return {key: value for key, value in record.items() if key not in TIMING_KEYS}


def test_group_accuracies(record: dict) -> dict[int, float]:
    """Group id -> test accuracy, from a record's per-group keys (empty for records without them)."""
    found = {}
    for key, value in record.items():
        match = TEST_GROUP_ACCURACY_PATTERN.match(key)
        if match:
            found[int(match.group(1))] = value
    return dict(sorted(found.items()))

RESULTS_PATTERN = re.compile(r"results_hpcomb_(\d+)_seed(\d+)\.json$")
#: any file of a run (see RunFiles): its kind, combination and seed
RUN_FILE_PATTERN = re.compile(r"^(results|ckpt|best|inferred|done)_hpcomb_(\d+)_seed(\d+)(\.json|\.pt)?$")


#: the kinds of --group_labels: true groups, none (the classes), a phase-1 file or folder (inferred groups)
GROUP_LABEL_KINDS = ("yes", "no", "inferred")


def group_labels_kind(group_labels: str) -> str:
    """'yes', 'no', or 'inferred' for anything else (a phase-1 file or folder)."""
    return group_labels if group_labels in ("yes", "no") else "inferred"


def group_labels_folder(group_labels: str) -> str:
    """Folder name for a group-label source: ``group_labels_<kind>``."""
    return f"group_labels_{group_labels_kind(group_labels)}"


def run_directory(out_dir: str | Path, algorithm: str, dataset: str, group_labels: str) -> Path:
    """``<out>/<ALGO>/<Dataset>/group_labels_<src>``."""
    return Path(out_dir) / algorithm / dataset / group_labels_folder(group_labels)


@dataclass(frozen=True)
class RunFiles:
    """The files of one run (hyper-parameter combination k, seed s) in its directory."""

    directory: Path
    hparams_comb: int
    seed: int

    @property
    def tag(self) -> str:
        """``hpcomb_<k>_seed<s>``."""
        return f"hpcomb_{self.hparams_comb}_seed{self.seed}"

    @property
    def results(self) -> Path:
        """JSON-lines records."""
        return self.directory / f"results_{self.tag}.json"

    @property
    def checkpoint(self) -> Path:
        """Last training state."""
        return self.directory / f"ckpt_{self.tag}.pt"

    @property
    def pending_checkpoint(self) -> Path:
        """A checkpoint written but not yet moved into place (XRM.runs.checkpoints.save_pending_checkpoint): a stack's
        checkpoints are all written before the first is moved, so that its runs resume from one step."""
        return self.directory / f"pending_ckpt_{self.tag}.pt"

    @property
    def best_checkpoint(self) -> Path:
        """Model at the best evaluation by the selection metric."""
        return self.directory / f"best_{self.tag}.pt"

    @property
    def inferred(self) -> Path:
        """Phase-1 artifact: inferred attributes and held-out logits."""
        return self.directory / f"inferred_{self.tag}.pt"

    @property
    def tensorboard(self) -> Path:
        """Folder of the run's TensorBoard event files (``--tensorboard``): one run per folder."""
        return self.directory / "tensorboard" / self.tag

    @property
    def lock(self) -> Path:
        """Held (XRM/runs/lock.py) by the process training the run."""
        return self.directory / f".lock_{self.tag}"

    def stale_temporaries(self) -> list[Path]:
        """Temporary files a killed write of one of the run's files left behind."""
        names = [path.name for path in (self.results, self.checkpoint, self.pending_checkpoint, self.best_checkpoint,
                                        self.inferred, self.done)]
        return [path for name in names for path in self.directory.glob(f".{name}.*.tmp")]

    @property
    def done(self) -> Path:
        """Marker written once everything else is in place."""
        return self.directory / f"done_{self.tag}"

    def removal_command(self) -> str:
        """The shell command that deletes every file of the run (so that it trains again from step 0)."""
        folder = shlex.quote(str(self.directory))
        return f"rm -f {folder}/*_{self.tag}.json {folder}/*_{self.tag}.pt {folder}/done_{self.tag}"


def run_files_in(directory: Path) -> list[RunFiles]:
    """The runs that have any file in ``directory`` (results, checkpoints, phase-1 file, done file), sorted."""
    found = set()
    for path in directory.iterdir() if directory.is_dir() else []:
        match = RUN_FILE_PATTERN.match(path.name)
        if match:
            found.add((int(match.group(2)), int(match.group(3))))
    return [RunFiles(directory, comb, seed) for comb, seed in sorted(found)]


def write_header(path: Path, header: dict) -> None:
    """Start a results file with its header line (the run's hyper-parameters), replacing any old one."""
    atomic_write_text(json.dumps(header, sort_keys=True) + "\n", path)


#: bytes read from a results file's end to find its last record
TAIL_BYTES = 16384


def progress(path: Path) -> tuple[int, int] | None:
    """(the step of the last evaluation record, the run's num_steps) of the results file ``path``, read from its
    first line and its end; None without a file, a record or a readable num_steps."""
    try:
        with open(path, "rb") as handle:
            header = json.loads(handle.readline())
            handle.seek(max(0, path.stat().st_size - TAIL_BYTES))
            tail = handle.read().decode("utf-8", errors="replace").splitlines()
    except (OSError, ValueError):
        return None
    hparams = header.get("hparams") if isinstance(header, dict) else None
    num_steps = hparams.get("num_steps") if isinstance(hparams, dict) else None
    if not isinstance(num_steps, int):
        return None
    for line in reversed(tail):
        try:
            entry = json.loads(line)
        except ValueError:  # a line cut short, or the start of the tail
            continue
        if isinstance(entry, dict) and isinstance(entry.get(STEP), int):
            return entry[STEP], num_steps
        if isinstance(entry, dict) and STEP not in entry:  # the header: no record yet
            return None
    return None


def read_results(path: Path) -> tuple[dict, list[dict]]:
    """The header and evaluation records of a results file.

    The JSON objects before the first record (a line with a step) make the header. A line
    that cannot be a record (see :func:`record_problem`), and a last line cut short by a
    crash, are skipped with a warning naming the file and line; a line elsewhere that is not
    JSON at all raises ValueError naming them (the file is damaged). A NaN value, and a null
    test metric, count as not recorded (:func:`recorded`): the record lacks the key.
    """
    header, entries = _read_entries(path)
    return header, [recorded(entry) for entry in entries]


def _read_entries(path: Path) -> tuple[dict, list[dict]]:
    """The header and the evaluation records of a results file as written (nulls kept; see read_results)."""
    lines = path.read_text().splitlines()
    last = max((number for number, line in enumerate(lines, start=1) if line.strip()), default=0)
    header: dict = {}
    run_records: list[dict] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            if number == last:
                _warn(f"skipping the unfinished last line of {path}")
                break
            raise ValueError(f"{path}: line {number} is not JSON") from None
        if isinstance(entry, dict) and STEP not in entry and not run_records:
            header.update(entry)
            continue
        problem = record_problem(entry)
        if problem is None:
            run_records.append(entry)
        else:
            _warn(f"skipping line {number} of {path}: {problem}")
    return header, run_records


def record_problem(entry: Any) -> str | None:
    """Why a JSON value read from a results file (after its header) is not an evaluation record, or
    None: a record is an object whose step is a whole number >= 0 and whose other values are
    numbers (``degenerate``: true or false; a test metric: a number or null)."""
    if not isinstance(entry, dict):
        return f"{_shown(entry)} is not a record (a JSON object)"
    if STEP not in entry:
        return "the record has no step"
    step = entry[STEP]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        return f"its step {_shown(step)} is not a whole number"
    for key, value in entry.items():
        problem = None if key == STEP else _value_problem(key, value)
        if problem is not None:
            return problem
    return None


def _value_problem(key: str, value: Any) -> str | None:
    """Why ``value`` cannot be a record's ``key``: a number (finite, not a boolean), or for
    ``degenerate`` true or false, for a test metric also null (not evaluated there); None when it can."""
    if value is None and is_test_metric(key):
        return None
    if key == DEGENERATE:
        return None if isinstance(value, bool) else f"its {key} {_shown(value)} is not true or false"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"its {key} {_shown(value)} is not a number"
    if math.isinf(value):
        return f"its {key} {_shown(value)} is not a finite number"
    return None


def _shown(value: Any, width: int = 40) -> str:
    """``value`` as JSON, cut to ``width`` characters (a warning stays one short line)."""
    text = json.dumps(value)
    return text if len(text) <= width else text[: width - 3] + "..."


_warned: set[str] = set()


def _warn(message: str) -> None:
    """Print ``warning: <message>`` once per process (a folder is read by several tables)."""
    if message not in _warned:
        _warned.add(message)
        print(f"warning: {message}", file=sys.stderr)


def truncate_records(path: Path, last_step: int) -> None:
    """Keep the header and the records up to ``last_step`` (for resuming from a checkpoint), as written
    (null test metrics stay null, so that a resumed run's file equals an unbroken run's)."""
    header, records = _read_entries(path)
    kept = [{key: value for key, value in record.items() if value is None or value == value}  # NaN: not recorded
            for record in records if record[STEP] <= last_step]
    lines = [json.dumps(header, sort_keys=True)] + [json.dumps(record, sort_keys=True) for record in kept]
    atomic_write_text("\n".join(lines) + "\n", path)
