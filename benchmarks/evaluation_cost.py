"""How many test examples a backbone run evaluates with and without --test_every_evaluation.

python benchmarks/evaluation_cost.py                 # CelebA- and MultiNLI-sized runs, 20 simulated curves each
python benchmarks/evaluation_cost.py --runs 100 --seed 1

By default the test split is evaluated only at the evaluations where va_wga or va_avg_acc reaches or
ties its best so far after step 0 (XRM.results.selection.reaches_best: the only steps a selection rule
can pick). This counts those evaluations on simulated validation curves, a noisy rise to a plateau
followed by a slow decline (overfitting), each value a whole number of correct examples (va_wga over
the smallest validation group, va_avg_acc over the whole split), and prints the test examples evaluated
either way and the fraction of all evaluation work (validation + test examples) saved. CPU only, no torch.
"""
import argparse
import math
import random
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from XRM.results import records, selection  # noqa: E402


@dataclass(frozen=True)
class RunSize:
    """A backbone run's schedule and split sizes; ``smallest_group``: the smallest validation group (assumed)."""

    name: str
    num_steps: int
    eval_every: int
    validation: int
    test: int
    smallest_group: int

    def evaluation_steps(self) -> list[int]:
        """Every evaluated step: each eval_every-th, and the last."""
        steps = list(range(0, self.num_steps, self.eval_every))
        return steps if steps[-1] == self.num_steps - 1 else steps + [self.num_steps - 1]


SIZES = (RunSize("CelebA", 10001, 50, 19867, 19962, 182), RunSize("MultiNLI", 60001, 250, 82462, 123712, 1000))


def _accuracy(mean: float, size: int, noise: float, rng: random.Random) -> float:
    """A noisy accuracy near ``mean`` on ``size`` examples: a whole number of them correct."""
    correct = round(size * min(1.0, max(0.0, rng.gauss(mean, noise))))
    return correct / size


def simulated_records(size: RunSize, rng: random.Random) -> list[dict]:
    """One run's validation records: va_avg_acc and va_wga rising to a plateau, then slowly declining."""
    rise, peak, decline = rng.uniform(0.05, 0.3), rng.uniform(0.4, 0.9), rng.uniform(0.0, 0.15)
    found = []
    for step in size.evaluation_steps():
        progress = step / (size.num_steps - 1)
        level = (1 - math.exp(-progress / rise)) - decline * progress
        found.append({records.STEP: step,
                      records.VA_AVG_ACC: _accuracy(0.6 + 0.35 * level, size.validation, 0.004, rng),
                      records.VA_WGA: _accuracy(0.1 + peak * level, size.smallest_group, 0.03, rng)})
    return found


def tested_evaluations(run_records: list[dict]) -> int:
    """How many of a run's evaluations evaluate the test split by default (selection.reaches_best)."""
    bests: dict[str, float] = {}
    return sum(selection.reaches_best(bests, record) for record in run_records)


def report(size: RunSize, runs: int, rng: random.Random) -> str:
    """The lines for one run size: evaluations, test passes and examples either way, work saved."""
    evaluations = len(size.evaluation_steps())
    tested = [tested_evaluations(simulated_records(size, rng)) for _ in range(runs)]
    mean = statistics.mean(tested)
    every, selected = evaluations * size.test, mean * size.test
    total_every = evaluations * (size.validation + size.test)
    saved_test, saved_total = 1 - selected / every, (every - selected) / total_every
    return (f"{size.name}: {size.num_steps} steps, evaluation every {size.eval_every} ({evaluations} evaluations), "
            f"{size.validation} validation + {size.test} test examples\n"
            f"  test passes per run: {evaluations} with --test_every_evaluation; by default mean {mean:.1f} "
            f"(min {min(tested)}, max {max(tested)}) over {runs} simulated runs\n"
            f"  test examples evaluated: {every:,} with the option, {selected:,.0f} without\n"
            f"  saved: {100 * saved_test:.1f}% of test evaluation, {100 * saved_total:.1f}% of all evaluation "
            f"(validation + test)")


def main() -> int:
    """Print the report for the CelebA- and MultiNLI-sized runs; 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="simulated runs per size (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the simulated curves")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error(f"--runs must be at least 1, not {args.runs}")
    rng = random.Random(args.seed)
    print("\n".join(report(size, args.runs, rng) for size in SIZES))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
