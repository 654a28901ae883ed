"""A toy run and run_fn for the launcher tests: it trains nothing but keeps the core's contract
(and, at the end, stand-ins for a cluster's commands where no controller answers).

It steps a deterministic recurrence, checkpoints after every step (atomically), resumes
from its checkpoint when called again, returns at once when done, and writes its records
and then its done file last. It also appends one event line per start and end, so a test
can tell where each attempt started, on which GPU, and under which SLURM restart count.
"""
import dataclasses
import json
import os
import time
from pathlib import Path
from typing import Any

from XRM.common.fileio import append_jsonl, atomic_write_json, atomic_write_text


class ToyPreemption(Exception):
    """Raised once, on the first attempt, at ``preempt_at_step``: an interrupted job."""


@dataclasses.dataclass
class ToyRun:
    """A run as the launchers see one (run_name, done_path, resume), plus what the toy needs."""

    run_name: str
    done_path: str
    out_dir: str
    seed: int
    n_steps: int = 6
    step_seconds: float = 0.0
    fail_at_step: int | None = None
    preempt_at_step: int | None = None
    resume: bool = False


def make_runs(out_dir: Path, count: int, **extra: Any) -> list[ToyRun]:
    """``count`` toy runs writing under ``out_dir``, each with its own seed."""
    return [ToyRun(f"toy/seed{seed}", str(out_dir / f"seed{seed}" / "done"), str(out_dir / f"seed{seed}"), seed, **extra)
            for seed in range(count)]


def singles(runs: list[ToyRun]) -> list[list[ToyRun]]:
    """Each run a stack of its own."""
    return [[run] for run in runs]


def toy_stack(runs: list[ToyRun]) -> None:
    """The run_fn the launchers call: train the stack's runs one after another."""
    for run in runs:
        toy_run(run)


def toy_run(run_args: ToyRun) -> None:
    """Train the toy run ``run_args`` describes, resuming from its checkpoint if it has one."""
    out_dir = Path(run_args.out_dir)
    if Path(run_args.done_path).exists():
        return
    checkpoint = out_dir / "checkpoint.json"
    state = json.loads(checkpoint.read_text()) if checkpoint.exists() else {
        "step": 0, "value": run_args.seed, "records": []}
    started_at = state["step"]
    _log_event(out_dir, "start", state["step"])
    while state["step"] < run_args.n_steps:
        if state["step"] == run_args.fail_at_step:
            raise ValueError(f"toy failure at step {state['step']}")
        if state["step"] == run_args.preempt_at_step and started_at == 0:
            raise ToyPreemption(f"preempted at step {state['step']}")
        time.sleep(run_args.step_seconds)
        state["value"] = (state["value"] * 31 + 7) % 1009
        state["step"] += 1
        state["records"].append({"step": state["step"], "value": state["value"]})
        atomic_write_json(state, checkpoint)
    atomic_write_text("".join(json.dumps(record) + "\n" for record in state["records"]),
                      out_dir / "records.jsonl")
    _log_event(out_dir, "end", state["step"])
    atomic_write_text("", run_args.done_path)


def _log_event(out_dir: Path, event: str, step: int) -> None:
    append_jsonl(out_dir / "events.jsonl", {
        "event": event, "step": step, "time": time.time(), "pid": os.getpid(),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0))})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file, parsed."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def outputs(run: ToyRun) -> list[dict[str, Any]]:
    """A finished toy run's records."""
    return read_jsonl(Path(run.out_dir) / "records.jsonl")


def starts(run: ToyRun) -> list[dict[str, Any]]:
    """The start events of a toy run, oldest first."""
    return [event for event in read_jsonl(Path(run.out_dir) / "events.jsonl") if event["event"] == "start"]


# What sbatch says when no controller answers (three lines; submitit used to print them all).
SBATCH_OFFLINE = ("sbatch: error: slurm_persist_conn_open_without_init: failed to open persistent connection",
                  "sbatch: error: Sending PersistInit msg: Connection refused",
                  "sbatch: error: Batch job submission failed: Unable to contact slurm controller (connect failure)")
SUBMISSION_FAILED = (f"sbatch could not submit the runs ({SBATCH_OFFLINE[-1]}): no job was submitted; check that the "
                     "cluster answers from this machine (sinfo, squeue) and that --slurm_partition gpu exists")


def offline_slurm(folder: Path) -> Path:
    """A folder of stand-ins for a cluster's commands where no controller answers: each prints
    sbatch's lines on stderr and fails. Its path, to put first on PATH."""
    folder.mkdir()
    for command in ("sbatch", "srun", "sinfo", "squeue", "sacct"):
        lines = "".join(f"echo '{line}' >&2\n" for line in SBATCH_OFFLINE)
        (folder / command).write_text(f"#!/bin/sh\n{lines}exit 1\n")
        (folder / command).chmod(0o755)
    return folder
