"""A toy run_fn for the launcher tests: it trains nothing but keeps the core's contract.

It steps a deterministic recurrence, checkpoints after every step (atomically), resumes
from its checkpoint when called again, returns at once when done, and writes its records
and then its done file last. It also appends one event line per start and end, so a test
can tell where each attempt started, on which GPU, and under which SLURM restart count.
"""
import json
import os
import time
from pathlib import Path
from typing import Any

from XRM.fileio import append_jsonl, atomic_write_json, atomic_write_text


class ToyPreemption(Exception):
    """Raised once, on the first attempt, at ``preempt_at_step``: an interrupted job."""


def make_runs(out_dir: Path, count: int, **extra: Any) -> list[dict[str, Any]]:
    """``count`` toy runs writing under ``out_dir``, each with its own seed."""
    runs = []
    for seed in range(count):
        run_dir = out_dir / f"seed{seed}"
        runs.append({"run_name": f"toy/seed{seed}", "done_path": str(run_dir / "done"),
                     "out_dir": str(run_dir), "seed": seed, "n_steps": 6, "step_seconds": 0.0, **extra})
    return runs


def toy_run(run_args: dict[str, Any]) -> None:
    """Train the toy run ``run_args`` describes, resuming from its checkpoint if it has one."""
    out_dir = Path(run_args["out_dir"])
    if Path(run_args["done_path"]).exists():
        return
    checkpoint = out_dir / "checkpoint.json"
    state = json.loads(checkpoint.read_text()) if checkpoint.exists() else {
        "step": 0, "value": run_args["seed"], "records": []}
    started_at = state["step"]
    _log_event(out_dir, "start", state["step"])
    while state["step"] < run_args["n_steps"]:
        if state["step"] == run_args.get("fail_at_step"):
            raise ValueError(f"toy failure at step {state['step']}")
        if state["step"] == run_args.get("preempt_at_step") and started_at == 0:
            raise ToyPreemption(f"preempted at step {state['step']}")
        time.sleep(run_args["step_seconds"])
        state["value"] = (state["value"] * 31 + 7) % 1009
        state["step"] += 1
        state["records"].append({"step": state["step"], "value": state["value"]})
        atomic_write_json(state, checkpoint)
    atomic_write_text("".join(json.dumps(record) + "\n" for record in state["records"]),
                      out_dir / "records.jsonl")
    _log_event(out_dir, "end", state["step"])
    atomic_write_text("", run_args["done_path"])


def _log_event(out_dir: Path, event: str, step: int) -> None:
    append_jsonl(out_dir / "events.jsonl", {
        "event": event, "step": step, "time": time.time(), "pid": os.getpid(),
        "gpus": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_restart_count": int(os.environ.get("SLURM_RESTART_COUNT", 0))})


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Every line of a JSON-lines file, parsed."""
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def outputs(run: dict[str, Any]) -> list[dict[str, Any]]:
    """A finished toy run's records."""
    return read_jsonl(Path(run["out_dir"]) / "records.jsonl")


def starts(run: dict[str, Any]) -> list[dict[str, Any]]:
    """The start events of a toy run, oldest first."""
    return [event for event in read_jsonl(Path(run["out_dir"]) / "events.jsonl") if event["event"] == "start"]
