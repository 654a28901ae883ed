"""Phase 1 (XRM group inference) and phase 2 (MAT and baselines); the command lives in
XRM/cli/train_command.py (installed: ``xrm-train``, ``python -m XRM train``).

    python main.py --phase 1 --datasets Synthetic --num_hparams_combs 4 --out_dir out
    python main.py --phase 2 --datasets Synthetic --algorithms MAT ERM --group_labels no \
        --num_hparams_combs 4 --out_dir out
"""
from XRM.cli.train_command import run  # light: the arguments are parsed before torch is imported

if __name__ == "__main__":
    run(plugins=("mat",))  # imported once the arguments are checked: registers MAT
