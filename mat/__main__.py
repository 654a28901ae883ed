"""``python -m mat <command> [options]``: the paper's commands, as the console scripts run them
(figure1: mat-figure1, figure3: mat-figure3, memorization: mat-memorization)."""
from XRM.cli.entry_point import run_subcommand

COMMANDS = {
    "figure1": "mat.cli.figure1_command",
    "figure3": "mat.cli.figure3_command",
    "memorization": "mat.cli.memorization_command",
}

if __name__ == "__main__":
    run_subcommand("mat", COMMANDS)
