"""The paper's Table 1 protocol in one command; it lives in XRM/cli/reproduce_command.py
(installed: ``xrm-reproduce``, ``python -m XRM reproduce``).

    python reproduce.py --datasets Waterbirds CelebA --algorithms MAT GroupDRO ERM --data_path ./data \\
        --out_dir ./table1

Run it again after a crash, a preemption or Ctrl-C: finished runs are kept, unfinished ones resume.
"""
from XRM.cli.reproduce_command import run  # light: the arguments are parsed before torch is imported

if __name__ == "__main__":
    run(plugins=("mat",))  # imported once the arguments are checked: registers MAT
