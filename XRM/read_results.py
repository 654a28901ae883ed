"""Print result tables from a results folder (the reference's script path); the command lives in
XRM/cli/results_command.py (installed: ``xrm-results``, ``python -m XRM.cli results``).

    python XRM/read_results.py --dir out --datasets Synthetic --algorithms MAT ERM --group_labels no
    python XRM/read_results.py --dir out --table tex > table1.tex
    python XRM/read_results.py --dir out --plots out/plots
"""
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from XRM.cli.results_command import get_args_parser, main, run  # noqa: E402,F401  (get_args_parser, main: for importers)

if __name__ == "__main__":
    run()
