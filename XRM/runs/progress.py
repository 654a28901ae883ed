"""How a stack's training shows itself while it runs.

On a terminal, a progress bar (on stderr) whose postfix is the key metric at the last evaluation.
Off a terminal (SLURM logs, nohup, CI), where a bar is noise, one line per evaluation on stdout
(stderr keeps warnings and errors): the step, the key metric (the run's, or the mean, min and
max over a stack's runs), steps per second and the time left.

:class:`Throughput` measures the steps per second that each evaluation record holds.
"""
import math
import sys
import time
from typing import TextIO

from tqdm import tqdm


def format_duration(seconds: float) -> str:
    """``seconds`` as h:mm:ss (m:ss under an hour)."""
    if not math.isfinite(seconds):
        return "?"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def summarise(metric: str, values: list[float]) -> str:
    """``metric`` of one run (``va_wga 0.812``) or of a stack (``va_wga mean 0.75 [0.61, 0.83] over 10 runs``)."""
    finite = [value for value in values if math.isfinite(value)]
    if not finite:
        return f"{metric} -"
    if len(values) == 1:
        return f"{metric} {finite[0]:.3f}"
    mean = sum(finite) / len(finite)
    return f"{metric} mean {mean:.3f} [{min(finite):.3f}, {max(finite):.3f}] over {len(finite)} runs"


class Progress:
    """A stack's progress from step ``start`` to ``total``: a bar on ``terminal`` when it is one, else
    log lines on ``log`` (see the module docstring)."""

    def __init__(self, label: str, start: int, total: int, log: TextIO | None = None,
                 terminal: TextIO | None = None) -> None:
        self.label, self.start, self.total = label, start, total
        self.log, terminal = log or sys.stdout, terminal or sys.stderr
        self.terminal = terminal.isatty()
        self.bar = tqdm(total=total, initial=start, desc=label, disable=not self.terminal, file=terminal)
        self.began = time.monotonic()

    def advance(self, steps: int) -> None:
        """``steps`` more steps trained."""
        self.bar.update(steps)

    def evaluated(self, step: int, metric: str, values: list[float]) -> None:
        """The evaluation after step ``step``: the key ``metric`` of each live run."""
        summary = summarise(metric, values)
        if self.terminal:
            self.bar.set_postfix_str(summary)
            return
        done = step + 1 - self.start
        rate = done / max(time.monotonic() - self.began, 1e-9)
        left = (self.total - step - 1) / rate if rate > 0 else math.inf
        print(f"{self.label}: step {step + 1}/{self.total}, {summary}, {rate:.1f} steps/s, "
              f"{format_duration(left)} left", file=self.log, flush=True)

    def close(self) -> None:
        """The end of training (the bar closed)."""
        self.bar.close()


class Throughput:
    """A stack's training speed between two evaluations: steps per second of the time it trained,
    from :meth:`restart` (training started, or went on after an evaluation and its checkpoints) to
    the evaluation of a later step (read once the device has finished that step's work)."""

    def __init__(self, start: int) -> None:
        self.last_step = start - 1
        self.restart()

    def restart(self) -> None:
        """Training starts, or goes on after an evaluation: the clock runs from now."""
        self.began = time.monotonic()

    def steps_per_second(self, step: int) -> float:
        """Steps trained per second from the last evaluation (or the start) up to ``step``, evaluated now."""
        seconds = max(time.monotonic() - self.began, 1e-9)
        rate = (step - self.last_step) / seconds
        self.last_step = step
        return rate
