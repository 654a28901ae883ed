"""Figure 1 of the paper: memorisation hurts ERM on a spurious correlation, MAT avoids it. The
command lives in mat/cli/figure1_command.py (installed: ``mat-figure1``, ``python -m mat figure1``).

    python interpretable_experiment.py --out_dir figures/figure1
"""
from mat.cli.figure1_command import get_args_parser, main, run  # noqa: F401  (get_args_parser, main: for importers)

if __name__ == "__main__":
    run()
