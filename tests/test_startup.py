"""Start-up cost: commands load torch, torchvision, submitit, transformers or matplotlib only
when their work needs them (each takes seconds to import).

Each test runs a fresh interpreter that reports which of those modules were imported.
"""
import json

import pytest

from XRM.data.catalog import dataset_names
from XRM.data.registry import DATASETS

HEAVY = ("matplotlib", "submitit", "torch", "torchvision", "transformers")

# Runs a script as ``python <script> <args>`` would (a name without .py: ``python -m <name> <args>``),
# then prints, as its last line, the exit status and the heavy modules imported.
RUN_SCRIPT = f"""
import json, runpy, sys
script, sys.argv = sys.argv[1], sys.argv[1:]
try:
    if script.endswith(".py"):
        runpy.run_path(script, run_name="__main__")
    else:
        runpy.run_module(script, run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as stop:
    code = stop.code
print(json.dumps({{"exit": code, "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""

# Imports the package's light entry points and lists the datasets, as a features sweep does.
IMPORT_MODULES = f"""
import json, sys
import XRM.networks.backbones, XRM.networks.classifiers, XRM.launch.status
from XRM.data.registry import DATASETS
from XRM.data.catalog import dataset_names
print(json.dumps({{"names": dataset_names(), "loaded": sorted(m for m in {HEAVY!r} if m in sys.modules)}}))
"""


def _report(result) -> dict:
    assert result.stdout.strip(), result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def _phase_2_results(folder):
    """One ERM run (combination 0, seed 0) on Synthetic with true group labels: a header, two evaluations."""
    lines = [{"algorithm": "ERM", "dataset": "Synthetic", "hparams": {"lr": 0.001}},
             {"step": 0, "va_avg_acc": 0.5, "va_wga": 0.25, "te_avg_acc": 0.5, "te_wga": 0.25},
             {"step": 10, "va_avg_acc": 0.75, "va_wga": 0.5, "te_avg_acc": 0.625, "te_wga": 0.375}]
    directory = folder / "ERM" / "Synthetic" / "group_labels_yes"
    directory.mkdir(parents=True)
    (directory / "results_hpcomb_0_seed0.json").write_text("".join(json.dumps(line) + "\n" for line in lines))


def test_read_results_never_imports_torch(tmp_path, script):
    _phase_2_results(tmp_path)
    result = script("-c", RUN_SCRIPT, "XRM/read_results.py", "--dir", str(tmp_path))
    assert _report(result) == {"exit": 0, "loaded": []}
    assert result.stdout.splitlines()[:-1] == [
        "",
        "== ERM / Synthetic / group_labels_yes  (phase 2, selected by va_wga)",
        "   hpcomb   step va_avg_acc     va_wga  va_gi_wga te_avg_acc     te_wga",
        "*       0     10       75.0       50.0          -       62.5       37.5",
        "best hpcomb 0 by va_wga (seed 0); over 1 seed(s): te_wga 37.5 +/- 0.0, te_avg_acc 62.5 +/- 0.0",
    ]


@pytest.mark.parametrize("command, exit_code", [
    (["main.py", "--help"], 0),
    (["main.py", "--phase", "3"], 2),  # usage error
    (["main.py", "--phase", "1", "--num_seeds", "0"], 2),  # a count that cannot describe a sweep
    (["download.py", "--help"], 0),
    (["download.py"], 2),  # usage error: no dataset, no --data_path
    (["XRM/read_results.py", "--help"], 0),
    (["XRM/read_results.py"], 2),  # usage error: no --dir
    (["memorization_analysis.py", "--help"], 0),
    (["memorization_analysis.py", "--algorithms", "XRM"], 2),  # usage error: no --dataset, unknown algorithm
    (["reproduce.py", "--help"], 0),
    (["reproduce.py", "--num_seeds", "many"], 2),  # usage error
    (["main.py", "--version"], 0),
    (["memorization_analysis.py", "--version"], 0),
    # the installed commands (xrm-train, ...), as python -m XRM.cli runs them
    (["XRM.cli", "--version"], 0),
    (["XRM.cli", "train", "--help"], 0),
    (["XRM.cli", "train", "--phase", "1", "--num_seeds", "0"], 2),
    (["XRM.cli", "results", "--help"], 0),
    (["XRM.cli", "reproduce", "--version"], 0),
    (["XRM.cli", "download", "--help"], 0),
])
def test_help_and_usage_errors_never_import_torch(script, command, exit_code):
    result = script("-c", RUN_SCRIPT, *command)
    assert _report(result) == {"exit": exit_code, "loaded": []}


def test_read_results_table_never_imports_torch_or_matplotlib(tmp_path, script):
    _phase_2_results(tmp_path)
    result = script("-c", RUN_SCRIPT, "XRM/read_results.py", "--dir", str(tmp_path), "--table", "csv")
    assert _report(result) == {"exit": 0, "loaded": []}, result.stderr
    assert result.stdout.splitlines()[:-1] == [
        "dataset,algorithm,selection,n_seeds,te_wga_mean,te_wga_std,te_avg_mean,te_avg_std",
        "Synthetic,ERM,va_wga,1,37.50,0.00,62.50,0.00"]


def test_read_results_plots_load_matplotlib_not_torch(tmp_path, script):
    _phase_2_results(tmp_path)
    result = script("-c", RUN_SCRIPT, "XRM/read_results.py", "--dir", str(tmp_path), "--plots", str(tmp_path / "p"))
    assert _report(result) == {"exit": 0, "loaded": ["matplotlib"]}, result.stderr
    assert sorted(path.name for path in (tmp_path / "p").iterdir()) == ["curves_Synthetic.png", "groups_Synthetic.png"]


def test_datasets_networks_and_sweep_status_import_torch_alone(script):
    result = script("-c", IMPORT_MODULES)
    assert result.returncode == 0, result.stderr
    # Other tests register datasets of their own in this process; the package's are those of XRM modules.
    builtin = [name for name in dataset_names() if DATASETS[name].__module__.startswith("XRM.")]
    assert _report(result) == {"names": builtin, "loaded": ["torch"]}


def test_a_features_sweep_loads_torch_alone(script, tmp_path):
    result = script("-c", RUN_SCRIPT, "main.py", "--phase", "1", "--datasets", "Synthetic", "--num_hparams_combs", "2",
                    "--hparams", '{"num_steps": 11, "eval_every": 5}', "--out_dir", str(tmp_path))
    assert _report(result) == {"exit": 0, "loaded": ["torch"]}, result.stderr
    assert len(list(tmp_path.rglob("done_*"))) == 2
