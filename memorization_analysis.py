"""Memorisation scores of every training example, ERM beside MAT; the command lives in
mat/cli/memorization_command.py (installed: ``mat-memorization``, ``python -m mat memorization``).

    python main.py --phase 1 --datasets Synthetic --out_dir out
    python memorization_analysis.py --dataset Synthetic --phase_1_dir out/XRM --out_dir memo
"""
import importlib.util
from pathlib import Path

COMMAND_FILE = Path(__file__).resolve().parent / "mat" / "cli" / "memorization_command.py"


def _command():
    """The command's module, loaded from its file, not imported as mat.cli.memorization_command: importing
    the package mat registers MAT and loads torch, and --help and usage errors answer before torch loads."""
    spec = importlib.util.spec_from_file_location("memorization_command", COMMAND_FILE)
    command = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(command)
    return command


_COMMAND = _command()
get_args_parser, main, run = _COMMAND.get_args_parser, _COMMAND.main, _COMMAND.run  # main and parser for importers

if __name__ == "__main__":
    run()
