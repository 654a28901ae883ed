"""Wall time of whole main.py commands as a user runs them: the stacked engine vs --stack_size 1.

python benchmarks/sweep_speed.py --device cpu --train 600 --val 200 --test 200 --dim 64 --combs 2 \
    --sweep_combs 2 --sweep_seeds 2 --num_steps 101
python benchmarks/sweep_speed.py --device cuda   # Waterbirds-sized (4795/1199/5794 x 2048), 1001 steps,
    # --combs "10 100" and the 600-run sweep (10 combs x 10 seeds x 6 algorithms)
Writes random Waterbirds features (a weak label signal, a strong spurious one) under a temporary
folder, then times each command in a new Python process (import included): --help, phase 1 (XRM),
phase 2 MAT, and ERM GroupDRO IRM RWG SUBG MAT on XRM-inferred groups. Each timed command gets a
fresh --out_dir; phase 2 starts from a copy of phase-1 results, made untimed.
"""
import argparse
import json
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from anywhere without PYTHONPATH
from XRM.data.feature_file import FEATURES_FILE, save_feature_file  # noqa: E402

#: mode -> the flags it adds to a training command
MODES = {"stacked": [], "single": ["--stack_size", "1"]}
SWEEP_ALGORITHMS = ["ERM", "GroupDRO", "IRM", "RWG", "SUBG", "MAT"]


@dataclass
class Command:
    """One timed command line: ``needs_phase_1`` / ``makes_phase_1`` give the combinations of the phase-1
    results it starts from / writes (None: none)."""

    label: str
    argv: list[str]
    runs: int
    needs_phase_1: int | None = None
    makes_phase_1: int | None = None


def write_waterbirds_features(data_path: Path, sizes: dict[str, int], dim: int) -> None:
    """``<data_path>/waterbirds/features.pt``: y weakly in x[:, 0], the attribute m strongly in x[:, 1].

    m agrees with y for 95% of training rows and half of validation and test rows, as in Waterbirds, so
    XRM's twins learn m first and their cross-mistakes find the training minority (groups not degenerate).
    """
    generator = torch.Generator().manual_seed(0)
    features = {}
    for split, n in sizes.items():
        y = torch.randint(0, 2, (n, 1), generator=generator)
        agree = torch.rand(n, 1, generator=generator) < (0.95 if split == "tr" else 0.5)
        m = torch.where(agree, y, 1 - y)
        x = torch.randn(n, dim, generator=generator)
        x[:, 0] += 1.0 * (2 * y[:, 0] - 1)
        x[:, 1] += 3.0 * (2 * m[:, 0] - 1)
        features[split] = {"x": x, "y": y, "m": m}
    (data_path / "waterbirds").mkdir(parents=True)
    save_feature_file(features, data_path / "waterbirds" / FEATURES_FILE)


def run_command(argv: list[str]) -> float:
    """Wall seconds of ``python main.py ARGV`` in a new process; prints its stderr tail and exits 1 if it fails.

    Exit status 1 (some runs failed, e.g. an IRM combination that diverges) still times the command; the
    failed runs are counted on a line of their own.
    """
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "main.py", *argv], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    failed = [line for line in done.stdout.splitlines() if line.startswith("failed: ")]
    if done.returncode == 1 and failed:
        print(f"  ({failed[-1]} runs: {done.stdout.splitlines()[-1].strip()})")
    elif done.returncode != 0:
        print(f"failed (exit {done.returncode}): python main.py {shlex.join(argv)}", file=sys.stderr)
        print("\n".join(done.stderr.splitlines()[-30:]), file=sys.stderr)
        sys.exit(1)
    return seconds


def start_up_floor(device: str) -> float:
    """Wall seconds of a new Python that imports torch and starts the device: what no command can avoid."""
    device = "cuda" if device == "auto" and torch.cuda.is_available() else "cpu" if device == "auto" else device
    code = f"import torch; torch.ones(1, device={device!r}).sum().item()"
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True)
    return time.perf_counter() - start


def phase_1_argv(combs: int, common: list[str]) -> list[str]:
    """Phase 1 (XRM) with ``combs`` combinations."""
    return ["--phase", "1", "--num_hparams_combs", str(combs), *common]


def build_commands(args: argparse.Namespace, common: list[str]) -> list[Command]:
    """--help, phase 1 and phase-2 MAT for each of --combs, then the big sweep; ``{out}`` marks the out_dir."""
    combs = [int(c) for c in args.combs.split()]
    commands = [Command("--help", ["--help"], 0)]
    commands += [Command(f"phase 1 XRM, {c} combs", phase_1_argv(c, common), c, makes_phase_1=c) for c in combs]
    commands += [Command(f"phase 2 MAT, {c} combs", ["--phase", "2", "--algorithms", "MAT", "--group_labels", "no",
                                                     "--num_hparams_combs", str(c), *common], c, c) for c in combs]
    runs = len(SWEEP_ALGORITHMS) * args.sweep_combs * args.sweep_seeds
    commands.append(Command(
        f"phase 2 {len(SWEEP_ALGORITHMS)} algorithms, {args.sweep_combs} combs x {args.sweep_seeds} seeds",
        ["--phase", "2", "--algorithms", *SWEEP_ALGORITHMS, "--group_labels", "{out}/XRM", "--num_hparams_combs",
         str(args.sweep_combs), "--num_seeds", str(args.sweep_seeds), *common], runs, args.sweep_combs))
    return commands


def fill(argv: list[str], out_dir: Path) -> list[str]:
    """``argv`` with ``{out}`` replaced by ``out_dir``."""
    return [word.replace("{out}", str(out_dir)) for word in argv]


def format_table(results: list[dict]) -> str:
    """The markdown table: command | runs | stacked s | --stack_size 1 s | speed-up."""
    def cell(value: float | str | None) -> str:
        return "-" if value is None else value if isinstance(value, str) else f"{value:.1f}"

    lines = ["| command | runs | stacked s | --stack_size 1 s | speed-up |", "|---|---|---|---|---|"]
    for result in results:
        seconds = result["seconds"]
        stacked, single = seconds.get("stacked"), seconds.get("single")
        speedup = f"{single / stacked:.2f}x" if isinstance(single, float) and isinstance(stacked, float) else "-"
        lines.append(f"| {result['command']} | {result['runs']} | {cell(stacked)} | {cell(single)} | {speedup} |")
    return "\n".join(lines)


def benchmark(args: argparse.Namespace, work: Path) -> list[dict]:
    """Time every command in every mode; phase-1 results of the first mode are reused by phase 2."""
    data_path = work / "data"
    sizes = {"tr": args.train, "va": args.val, "te": args.test}
    write_waterbirds_features(data_path, sizes, args.dim)
    print(f"Waterbirds-shaped features {sizes} x {args.dim}, device {args.device}, modes {' '.join(args.modes)}")
    common = ["--datasets", "Waterbirds", "--data_path", str(data_path), "--out_dir", "{out}", "--device", args.device]
    if args.num_steps is not None:
        common += ["--hparams", json.dumps({"num_steps": args.num_steps})]
    phase_1_results: dict[int, Path] = {}  # combinations -> an out_dir holding XRM/
    floor = start_up_floor(args.device)
    print(f"import torch + start the device: {floor:.1f} s")
    results = [{"command": "import torch + start the device (no main.py)", "argv": [], "runs": 0,
                "seconds": {"stacked": floor}}]
    for index, command in enumerate(build_commands(args, common)):
        seconds: dict[str, float | str] = {}
        for mode in args.modes:
            if mode == "single" and command.runs > args.skip_single_above:
                seconds[mode] = "skipped"
                print(f"{command.label} [{mode}]: skipped ({command.runs} runs > {args.skip_single_above})")
                continue
            out_dir = work / "out" / f"{index}_{mode}"
            combs = command.needs_phase_1
            if combs is not None:
                if combs not in phase_1_results:  # untimed
                    source = work / "out" / f"phase_1_{combs}"
                    run_command([*fill(phase_1_argv(combs, common), source), *MODES[args.modes[0]]])
                    phase_1_results[combs] = source
                shutil.copytree(phase_1_results[combs] / "XRM", out_dir / "XRM")
            seconds[mode] = run_command([*fill(command.argv, out_dir), *MODES[mode]])
            if command.makes_phase_1 is not None:
                phase_1_results.setdefault(command.makes_phase_1, out_dir)
            print(f"{command.label} [{mode}]: {seconds[mode]:.1f} s", flush=True)
        results.append({"command": command.label, "argv": command.argv, "runs": command.runs, "seconds": seconds})
    return results


def main() -> None:
    """Parse the options, time the commands, print the table (and write --json)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="passed to main.py: auto, cpu, cuda, ...")
    parser.add_argument("--train", type=int, default=4795, help="training rows (Waterbirds: 4795)")
    parser.add_argument("--val", type=int, default=1199, help="validation rows (Waterbirds: 1199)")
    parser.add_argument("--test", type=int, default=5794, help="test rows (Waterbirds: 5794)")
    parser.add_argument("--dim", type=int, default=2048, help="feature dimension (ResNet-50: 2048)")
    parser.add_argument("--combs", default="10 100", help="hyper-parameter combinations of phase 1 and MAT, e.g. '10 100'")
    parser.add_argument("--sweep_combs", type=int, default=10, help="combinations of the six-algorithm sweep")
    parser.add_argument("--sweep_seeds", type=int, default=10, help="seeds of the six-algorithm sweep")
    parser.add_argument("--num_steps", type=int, default=None, help="passed as --hparams '{\"num_steps\": N}'")
    parser.add_argument("--modes", default="stacked single", help="'stacked' (default engine), 'single' (--stack_size 1)")
    parser.add_argument("--skip_single_above", type=int, default=10, help="no single mode for sweeps of more runs")
    parser.add_argument("--work_dir", default=None, help="folder for data and results, kept (default: a temporary one)")
    parser.add_argument("--json", default=None, metavar="PATH", help="also write the numbers to this JSON file")
    args = parser.parse_args()
    args.modes = args.modes.split()
    if not args.modes or any(mode not in MODES for mode in args.modes):
        parser.error(f"--modes takes some of: {', '.join(MODES)}; got {' '.join(args.modes)!r}")
    if args.work_dir:
        work = Path(args.work_dir)
        if work.exists() and any(work.iterdir()):
            parser.error(f"--work_dir {work} is not empty; give a new or empty folder (finished runs would be skipped)")
        work.mkdir(parents=True, exist_ok=True)
        results = benchmark(args, work)
    else:
        with tempfile.TemporaryDirectory() as folder:
            results = benchmark(args, Path(folder))
    print(format_table(results))
    if args.json:
        Path(args.json).write_text(json.dumps({"options": vars(args), "results": results}, indent=1) + "\n")


if __name__ == "__main__":
    main()
