"""Phase 1 (XRM group inference) and phase 2 (MAT and baselines); the command lives in
XRM/cli/train_command.py (installed: ``xrm-train``, ``python -m XRM.cli train``).

    python main.py --phase 1 --datasets Synthetic --num_hparams_combs 4 --out_dir out
    python main.py --phase 2 --datasets Synthetic --algorithms MAT ERM --group_labels no \
        --num_hparams_combs 4 --out_dir out
"""
from functools import partial

# light: the arguments are parsed before torch is imported
from XRM.cli.train_command import get_args_parser, run  # noqa: F401  (get_args_parser: for importers)
from XRM.cli.train_command import main as train_main

PLUGINS = ("mat",)  # imported once the arguments are checked: registers MAT
main = partial(train_main, plugins=PLUGINS)  # main.main(args), as importers call it

if __name__ == "__main__":
    run(plugins=PLUGINS)
