"""Wall time of the whole Table 1 protocol for one features dataset, as a user runs it.

python benchmarks/protocol_speed.py --dataset Synthetic --device cpu      # the built-in dataset
python benchmarks/protocol_speed.py --dataset Waterbirds --device cuda    # random Waterbirds-sized features
    # (4795/1199/5794 x 2048, as benchmarks/sweep_speed.py writes them)

Runs ``python reproduce.py --datasets <dataset> --algorithms MAT GroupDRO ERM`` with the defaults (10
combinations, 10 seeds) in a new process into a fresh --out_dir, and prints the time at which each
stage line appeared, the total (import included) and the CPU time the process used. Extra arguments after ``--`` go to reproduce.py.
"""
import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # sweep_speed's feature writer
sys.path.insert(0, str(REPO))


def main() -> int:
    """Time the protocol once; 0, or reproduce.py's exit status when it fails."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="Synthetic", choices=["Synthetic", "Waterbirds"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", nargs=3, type=int, default=[4795, 1199, 5794], metavar=("TR", "VA", "TE"),
                        help="split sizes of the Waterbirds-shaped features")
    parser.add_argument("--dim", type=int, default=2048, help="feature width of the Waterbirds-shaped features")
    parser.add_argument("--out_dir", default=None,
                        help="keep the results here (an empty or new folder; default: a temporary folder)")
    parser.add_argument("extra", nargs="*", help="more reproduce.py arguments (after --)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data = Path(folder) / "data"
        if args.dataset == "Waterbirds":
            from sweep_speed import write_waterbirds_features

            write_waterbirds_features(data, dict(zip(("tr", "va", "te"), args.sizes)), args.dim)
        argv = [sys.executable, "reproduce.py", "--datasets", args.dataset, "--algorithms", "MAT", "GroupDRO", "ERM",
                "--data_path", str(data), "--out_dir", args.out_dir or str(Path(folder) / "out"), "--device", args.device, *args.extra]
        print("$", " ".join(argv[1:]), flush=True)
        start = time.perf_counter()
        process = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, text=True)
        for line in process.stdout:
            if line.startswith("stage "):
                print(f"{time.perf_counter() - start:7.1f} s  {line.rstrip()[:150]}", flush=True)
        process.wait()
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)  # on a shared machine, CPU time says more than wall time
        print(f"total {time.perf_counter() - start:.1f} s wall, {usage.ru_utime + usage.ru_stime:.1f} s CPU "
              f"(user + system), exit {process.returncode}")
        return process.returncode


if __name__ == "__main__":
    sys.exit(main())
