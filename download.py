"""Download, verify and prepare the datasets; the command lives in XRM/cli/download_command.py
(installed: ``xrm-download``, ``python -m XRM download``).

    python download.py --download --data_path ./data waterbirds
"""
from XRM.cli.download_command import run  # light: the arguments are parsed before torch is imported

if __name__ == "__main__":
    run()
