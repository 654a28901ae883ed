"""Track a sweep: the run -> job index kept on disk, and the state of every run.

The index lets ``--status`` (a later process) find the jobs a launch submitted. A run's
state comes from disk first (its done file, and its lock: held while a process trains it) and
from submitit's view of its job second (a run no job knows of is "stopped" once it has files);
submitit is imported only when a job is looked at, so a sweep without one never loads it.
Why a pending SLURM job waits comes from squeue.

A job's result file (submitit's pickle) is read as data, never as code: only what pickle
builds without importing anything (None, numbers, strings, tuples, ...) is accepted, and
anything else leaves the run "failed" with the line "unreadable job result ...". The
index is plain JSON; an entry that is not one is a UserError naming the file.
"""
import io
import json
import os
import pickle
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from XRM.common.errors import UserError
from XRM.common.fileio import atomic_write_json

if TYPE_CHECKING:
    import submitit

INDEX_NAME = "runs_index.json"
SQUEUE_TIMEOUT_S = 60

# The states a run can be in; these strings are what --status prints.
DONE = "done"
RUNNING = "running"
PENDING = "pending"
FAILED = "failed"
STOPPED = "stopped"
NOT_LAUNCHED = "not launched"

# The line of a run that started in a process no job index knows (main.py here, nohup, ...) and ended
# unfinished: killed, interrupted, or failed.
STOPPED_LINE = "started, not finished, and no process trains it; run its command again to resume it"

# Why a run whose code returned normally still counts as failed.
NO_DONE_FILE = "the run ended without writing its done file"


#: the executors an index entry may name (the keys of ``job_classes()``)
EXECUTORS = ("slurm", "local")


def job_classes() -> dict[str, type["submitit.Job"]]:
    """The submitit job classes the index can hold, by the executor name stored in an entry."""
    import submitit

    return {"slurm": submitit.SlurmJob, "local": submitit.LocalJob}


# SLURM job states (sacct) of a job that has not ended; any other state without a done
# file means the run failed. A preempted job is requeued, so it waits again.
_LIVE_SLURM_STATES = {
    "PENDING": PENDING,
    "REQUEUED": PENDING,
    "REQUEUE_HOLD": PENDING,
    "REQUEUE_FED": PENDING,
    "PREEMPTED": PENDING,
    "SUSPENDED": PENDING,
    "CONFIGURING": PENDING,
    "RESIZING": RUNNING,
    "RUNNING": RUNNING,
    "COMPLETING": RUNNING,
    "STAGE_OUT": RUNNING,
    "SIGNALING": RUNNING,
    # sacct has no line for a job it has not recorded yet (or when it cannot be reached).
    "UNKNOWN": PENDING,
}


class RunState(NamedTuple):
    """One line of ``--status``: a run, its state and, when it failed, its last error line;
    when its SLURM job is pending, SLURM's reason (Resources, Priority, JobHeldUser, ...); when
    it runs or stopped, how far it got."""

    run_name: str
    state: str
    last_error_line: str
    pending_reason: str = ""
    progress: str = ""  # a running or stopped run's last evaluation: "last evaluation at step 1200 of 3001"


class JobEntry(NamedTuple):
    """Where a run's job lives: the executor name (a ``job_classes()`` key), its id, its folder."""

    executor: str
    job_id: str
    folder: str


def index_path(slurm_dir: str | os.PathLike) -> Path:
    """The index file of the jobs submitted with logs under ``slurm_dir``."""
    return Path(slurm_dir) / INDEX_NAME


def read_index(slurm_dir: str | os.PathLike) -> dict[str, JobEntry]:
    """Run name -> its latest job, as recorded under ``slurm_dir`` (empty when none was); a
    UserError when the index is not the JSON this module writes."""
    path = index_path(slurm_dir)
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise UserError(f"{path} is not valid JSON ({error}); delete it to forget old jobs") from None
    if not isinstance(raw, dict) or not all(_is_entry(entry) for entry in raw.values()):
        raise UserError(f"{path} is not a run -> job index (each entry: executor, job_id, folder); delete it "
                        "to forget old jobs")
    return {name: JobEntry(**entry) for name, entry in raw.items()}


def _is_entry(entry: Any) -> bool:
    """Whether an index entry is a JobEntry's fields, each a string, with a known executor."""
    return (isinstance(entry, dict) and set(entry) == set(JobEntry._fields)
            and all(isinstance(value, str) for value in entry.values()) and entry["executor"] in EXECUTORS)


def record_jobs(slurm_dir: str | os.PathLike, entries: dict[str, JobEntry]) -> None:
    """Add (or replace) the jobs of these runs in the index under ``slurm_dir``, atomically."""
    index = read_index(slurm_dir)
    index.update(entries)
    atomic_write_json({name: entry._asdict() for name, entry in index.items()}, index_path(slurm_dir))


def job_of(entry: JobEntry) -> "submitit.Job":
    """The submitit job an index entry names (for SLURM, its state comes from sacct)."""
    return job_classes()[entry.executor](entry.folder, entry.job_id)


def last_line(text: str) -> str:
    """The last non-blank line of ``text``: a traceback's exception, a log's final word."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def running_elsewhere(run: Any) -> bool:
    """Whether another process trains the run now (runs that can tell have ``running_elsewhere()``: a
    RunSpec's lock is held by the process that trains it, launched by any launcher or by hand)."""
    return bool(getattr(run, "running_elsewhere", lambda: False)())


def _progress(run: Any) -> str:
    """How far a run got, from its results file (runs that can tell have ``progress()``), or ""."""
    progress = getattr(run, "progress", lambda: None)()
    return "" if progress is None else f"last evaluation at step {progress[0]} of {progress[1]}"


def run_state(run: Any, job: "submitit.Job | None") -> RunState:
    """The state of one run (a RunSpec): done from its done file, running while another process holds its
    lock, else from its job (None: never launched)."""
    name = run.run_name
    if Path(run.done_path).exists():
        return RunState(name, DONE, "")
    if running_elsewhere(run):
        return RunState(name, RUNNING, "", progress=_progress(run))
    if job is None:
        started = bool(getattr(run, "started", lambda: False)())
        return RunState(name, STOPPED, STOPPED_LINE, progress=_progress(run)) if started else RunState(
            name, NOT_LAUNCHED, "")
    if job.paths.result_pickle.exists():
        return _ended_state(name, job.paths.result_pickle)
    live_state = _live_state(job)
    if live_state is not None:
        return RunState(name, live_state, "", progress=_progress(run) if live_state == RUNNING else "")
    log = job.paths.stderr.read_text(errors="replace") if job.paths.stderr.exists() else ""
    return RunState(name, FAILED, _last_log_error(log) or f"job {job.job_id} ended with no result and no log")


# The largest result file read: submitit's results here are None or a traceback's text.
MAX_RESULT_BYTES = 1 << 20


class UnreadableResult(Exception):
    """A job result file that is not a plain submitit result; the message says why."""


class _PlainDataUnpickler(pickle.Unpickler):
    """An unpickler that imports nothing: pickle's own types (None, booleans, numbers, strings,
    bytes, tuples, lists, dicts, sets) load; a file asking for any class or function (the only
    way a pickle runs code) is refused before anything is called."""

    def find_class(self, module: str, name: str) -> Any:
        raise UnreadableResult(f"it asks to load {module}.{name}")


def read_job_result(path: Path) -> tuple[str, Any]:
    """submitit's result file as ``(outcome, value)``: ``("success", value)`` or ``("error",
    traceback text)``, read without running anything; UnreadableResult otherwise."""
    size = path.stat().st_size
    if size > MAX_RESULT_BYTES:
        raise UnreadableResult(f"{size} bytes, more than a result holds")
    try:
        result = _PlainDataUnpickler(io.BytesIO(path.read_bytes())).load()
    except UnreadableResult:
        raise
    except Exception as error:  # any malformed pickle: data, never a traceback
        raise UnreadableResult(f"not a pickle ({type(error).__name__})") from None
    if not (isinstance(result, tuple) and len(result) == 2 and result[0] in ("success", "error")):
        raise UnreadableResult("not a submitit result")
    if result[0] == "error" and not isinstance(result[1], str):
        raise UnreadableResult("an error without its traceback")
    return result


def _ended_state(name: str, result_path: Path) -> RunState:
    """The state of a run whose job left a result file (and no done file): failed, with why."""
    try:
        outcome, payload = read_job_result(result_path)
    except UnreadableResult as error:
        return RunState(name, FAILED, f"unreadable job result {result_path} ({error}); it was not loaded")
    return RunState(name, FAILED, last_line(payload) if outcome == "error" else NO_DONE_FILE)


def _last_log_error(log: str) -> str:
    """The line of a job's error log that says why it ended.

    srun's own chatter ("srun: forcing job termination") and submitit's log lines come
    after the cause (a Python exception, or slurmstepd's "*** JOB 7 CANCELLED ... ***").
    """
    noise = ("srun: ", "submitit ")
    return last_line("\n".join(line for line in log.splitlines() if not line.startswith(noise)))


def _live_state(job: "submitit.Job") -> str | None:
    """PENDING or RUNNING while the job has not ended, else None."""
    import submitit

    if isinstance(job, submitit.LocalJob):
        state = job.state
        if state == "NO PROCESS AND NO RESULT":
            # Seen from another process there is no handle: ask whether its controller lives.
            return RUNNING if _process_alive(int(job.job_id)) else None
        return RUNNING if state == "RUNNING" else None
    # sacct may add words ("CANCELLED by 0"); the first one is the state.
    words = job.state.split()
    return _LIVE_SLURM_STATES.get(words[0] if words else "")


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, but someone else's
        return True
    return True


def sweep_status(runs: list[Any], slurm_dir: str | os.PathLike) -> list[RunState]:
    """Each run's state, from its done file and the jobs indexed under ``slurm_dir``.

    States: done / running / pending / failed (with the last line of its error) / stopped
    (started outside a job, unfinished, and no process trains it) / not launched. SLURM states
    come from one sacct call for the whole sweep, and the reasons pending jobs wait from one
    squeue call.
    """
    index = read_index(slurm_dir)
    # Build every job before asking any state, so that submitit asks sacct once for all.
    jobs = {run.run_name: job_of(index[run.run_name]) for run in runs if run.run_name in index}
    states = [run_state(run, jobs.get(run.run_name)) for run in runs]
    pending = {state.run_name: index[state.run_name].job_id for state in states
               if state.state == PENDING and index[state.run_name].executor == "slurm"}
    reasons = pending_reasons(list(pending.values()))
    return [state._replace(pending_reason=reasons.get(pending[state.run_name], "")) if state.run_name in pending
            else state for state in states]


# squeue's reason for a job that waits for nothing in particular (or is not pending).
_NO_REASON = "None"


def pending_reasons(job_ids: list[str]) -> dict[str, str]:
    """SLURM's reason why each of these jobs (ids as submitit has them: "7" or "7_3") is
    pending, from one squeue call; jobs squeue has no reason for (or no line: ended) are left
    out, and so is everything when squeue is missing or fails."""
    if not job_ids or shutil.which("squeue") is None:
        return {}
    arrays = sorted({job_id.split("_")[0] for job_id in job_ids})
    command = ["squeue", "--noheader", "--array", f"--jobs={','.join(arrays)}", "--format=%i|%r"]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=SQUEUE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {}
    if result.returncode != 0:  # e.g. every job has ended: "Invalid job id specified"
        return {}
    wanted = set(job_ids)
    reasons = {}
    for line in result.stdout.splitlines():
        job_id, _, reason = line.strip().partition("|")
        if job_id in wanted and reason and reason != _NO_REASON:
            reasons[job_id] = reason
    return reasons


def format_status(states: list[RunState], stack_of: dict[str, int] | None = None) -> str:
    """``--status`` as text: one line per run (with its stack, where ``stack_of`` maps run
    names to stack numbers, and a pending job's reason), then how many runs are in each state."""
    summary = state_counts(states) + f" ({len(states)} runs"
    if stack_of:
        summary += f"; unfinished ones in {len(set(stack_of.values()))} stacks"
    return "\n".join([*state_lines(states, stack_of), summary + ")"])


def state_lines(states: list[RunState], stack_of: dict[str, int] | None = None) -> list[str]:
    """One line per run: its state, its name, its stack (where ``stack_of`` names one), a pending job's
    reason and a failed run's last error line."""
    width = max((len(state.state) for state in states), default=0)
    lines = []
    for state in states:
        line = f"{state.state:<{width}}  {state.run_name}"
        if stack_of and state.run_name in stack_of:
            line += f"  (stack {stack_of[state.run_name]})"
        if state.pending_reason:
            line += f"  ({state.pending_reason})"
        if state.progress:
            line += f"  ({state.progress})"
        lines.append(f"{line}  {state.last_error_line}" if state.last_error_line else line)
    return lines


#: the states in the order --status counts them
STATE_ORDER = (DONE, RUNNING, PENDING, FAILED, STOPPED, NOT_LAUNCHED)


def state_counts(states: list[RunState]) -> str:
    """How many runs are in each state: ``3 done, 0 running, 0 pending, 1 failed, 0 stopped, 1 not launched``."""
    return ", ".join(f"{sum(state.state == name for state in states)} {name}" for name in STATE_ORDER)
