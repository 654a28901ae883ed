"""The paper's Table 1 protocol in one command; it lives in XRM/cli/reproduce_command.py
(installed: ``xrm-reproduce``, ``python -m XRM.cli reproduce``).

    python reproduce.py --datasets Waterbirds CelebA --algorithms MAT GroupDRO ERM --data_path ./data \\
        --out_dir ./table1

Run it again after a crash, a preemption or Ctrl-C: finished runs are kept, unfinished ones resume.
"""
from functools import partial

# light: the arguments are parsed before torch is imported
from XRM.cli.reproduce_command import get_args_parser, protocol_from_args, run  # noqa: F401  (for importers)
from XRM.cli.reproduce_command import main as reproduce_main

PLUGINS = ("mat",)  # imported once the arguments are checked: registers MAT
main = partial(reproduce_main, plugins=PLUGINS)  # reproduce.main(args), as importers call it

if __name__ == "__main__":
    run(plugins=PLUGINS)
