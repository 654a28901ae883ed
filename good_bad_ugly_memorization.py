"""Figure 3 of the paper: good, bad and ugly memorisation on a toy regression. The command lives
in mat/cli/figure3_command.py (installed: ``mat-figure3``, ``python -m mat figure3``).

    python good_bad_ugly_memorization.py --out_dir figures/figure3
"""
from mat.cli.figure3_command import get_args_parser, main, run  # noqa: F401  (get_args_parser, main: for importers)

if __name__ == "__main__":
    run()
