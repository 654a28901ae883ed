"""``python -m XRM.cli <command> [options]``: the toolkit's commands, as the console scripts run them
(train: xrm-train, results: xrm-results, reproduce: xrm-reproduce, download: xrm-download)."""
from XRM.cli.entry_point import run_subcommand

COMMANDS = {
    "train": "XRM.cli.train_command",
    "results": "XRM.cli.results_command",
    "reproduce": "XRM.cli.reproduce_command",
    "download": "XRM.cli.download_command",
}

if __name__ == "__main__":
    run_subcommand("XRM.cli", COMMANDS)
