"""Download, verify and prepare the datasets; the command lives in XRM/cli/download_command.py
(installed: ``xrm-download``, ``python -m XRM.cli download``).

    python download.py --download --data_path ./data waterbirds
"""
# light: the arguments are parsed before torch is imported; get_args_parser and main for importers
from XRM.cli.download_command import get_args_parser, main, run  # noqa: F401

if __name__ == "__main__":
    run()
