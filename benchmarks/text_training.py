"""Training throughput of BERT-base fine-tuning on CivilComments-like texts, in real tokens per second.

python benchmarks/text_training.py --texts 16384 --steps 321 --batch_size 32
python benchmarks/text_training.py --device cpu --tiny --texts 2000 --steps 41   (a quick check that it runs)

Writes a custom text dataset (a CSV of id,text,split,y,a) whose token counts follow a
CivilComments-like distribution, and a text-model folder with bert-base-uncased's sizes
(config, a 30522-word vocabulary, its tokenizer; random weights: the same cost as
pretrained ones, nothing downloaded). Then times train_stack (ERM, AdamW, the text
schedule, bf16 autocast on CUDA) through the real path: the token cache, batches drawn
as main.py draws them, the training loop. Training speed is the difference between a
short and a long run (after an untimed one that writes the token cache), so start-up
and the two evaluations cancel out.

Lengths (tokens per text, [CLS] and [SEP] included): log-normal with median 50 and sigma
0.8, clipped to [3, 220] (220: the cut of the reference's tokenizer). Mean about 66 real
tokens, median 50, about 3% of texts cut at 220: most comments are far shorter than the
maximum and a tail reaches it, as in CivilComments. Real tokens are the non-padding ones
(attention mask 1); a padded batch computes 220 per text.
"""
import argparse
import csv
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
from XRM.common.devices import resolve_device  # noqa: E402
from XRM.networks.classifiers import TEXT_PACKING_VARIABLE, text_packing  # noqa: E402
from XRM.results.records import run_directory  # noqa: E402
from XRM.runs.spec import RunSpec  # noqa: E402
from XRM.runs.train import train_stack  # noqa: E402

MAX_LENGTH = 220
MEDIAN_TOKENS, SIGMA = 50, 0.8
WORDS = 5000  # words of the generated vocabulary, one token each
#: a 1-layer, 32-wide BERT: what ``--tiny`` trains, to check a script on a CPU
TINY_BERT_SIZES = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 37}


def civilcomments_like_lengths(count: int, seed: int = 0) -> np.ndarray:
    """Tokens per text ([CLS] and [SEP] included): log-normal (median 50, sigma 0.8), clipped to [3, 220]."""
    rng = np.random.default_rng(seed)
    return np.clip(np.round(MEDIAN_TOKENS * np.exp(SIGMA * rng.standard_normal(count))), 3, MAX_LENGTH).astype(int)


def write_text_model(folder: Path, tiny: bool = False) -> Path:
    """A folder with bert-base-uncased's config (random weights are built from it; a 1-layer, 32-wide
    BERT when ``tiny``) and a 30522-entry vocabulary whose ordinary entries are the words w0, w1, ..."""
    from transformers import BertConfig, BertTokenizerFast

    folder.mkdir(parents=True)
    vocab = ["[PAD]", *[f"[unused{i}]" for i in range(99)], "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab += [f"w{i}" for i in range(30522 - len(vocab))]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast.from_pretrained(str(folder)).save_pretrained(folder)
    BertConfig(**(TINY_BERT_SIZES if tiny else {})).save_pretrained(folder)  # the defaults: bert-base-uncased's sizes
    return folder


def write_texts(path: Path, lengths: np.ndarray, seed: int = 0) -> None:
    """A CSV of id,text,split,y,a: text i has lengths[i] - 2 words (its tokens without [CLS] and [SEP]);
    the first 90% train, then 5% validation, 5% test."""
    rng = np.random.default_rng(seed)
    count = len(lengths)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "text", "split", "y", "a"])
        for i, length in enumerate(lengths):
            words = " ".join(f"w{w}" for w in rng.integers(0, WORDS, length - 2))
            split = 0 if i < count * 9 // 10 else (1 if i < count * 19 // 20 else 2)
            writer.writerow([i, words, split, int(rng.integers(0, 2)), int(rng.integers(0, 2))])


def main() -> None:
    """Time two fine-tuning runs and print sequences and real tokens per second."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--texts", type=int, default=16384, help="generated texts (90/5/5 split)")
    parser.add_argument("--steps", type=int, default=321, help="steps of the long run (the short one has 21)")
    parser.add_argument("--batch_size", type=int, default=32, help="texts per step (the reference draws 16-64)")
    parser.add_argument("--no_cuda_graphs", action="store_true", help="train with every kernel launched (main.py's "
                        "--no_cuda_graphs)")
    parser.add_argument("--tiny", action="store_true", help="a 1-layer, 32-wide BERT: checks the script on a CPU")
    args = parser.parse_args()
    device = resolve_device(args.device)
    root = Path(tempfile.mkdtemp())
    model = write_text_model(root / "bert-base-random", args.tiny)
    lengths = civilcomments_like_lengths(args.texts)
    (root / "data").mkdir()
    write_texts(root / "data" / "civil_like.csv", lengths)
    train_lengths = lengths[: args.texts * 9 // 10]
    common = {"phase": 2, "dataset": str(root / "data" / "civil_like.csv"), "algorithm": "ERM", "group_labels": "yes",
              "seed": 0, "out_dir": str(run_directory(root / "out", "ERM", "civil_like", "yes")),
              "data_path": str(root / "data"), "device": str(device), "text_model": str(model),
              "backbone_weights": "none", "num_workers": 0, "cuda_graphs": not args.no_cuda_graphs}
    short, long = 21, args.steps
    seconds = {}
    for steps in (0, short, long):  # an untimed first run writes the token cache and starts CUDA
        overrides = {"num_steps": max(steps, 2), "eval_every": 10 ** 9, "batch_size": args.batch_size}
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        start = time.perf_counter()
        train_stack([RunSpec(**common, hparams_comb=steps, hparams_overrides=overrides)])
        seconds[steps] = time.perf_counter() - start
    per_step = (seconds[long] - seconds[short]) / (long - short)
    # Class-balanced batches draw texts uniformly within each class: on average a batch holds
    # batch_size texts of the training split's mean length.
    real = args.batch_size * float(train_lengths.mean())
    print(f"device {device}, padding mode {text_packing()} ({TEXT_PACKING_VARIABLE}), CUDA graphs "
          f"{'on' if device.type == 'cuda' and not args.no_cuda_graphs else 'off'}, {args.texts} texts, lengths: mean {lengths.mean():.1f}, median {np.median(lengths):.0f}, "
          f"{(lengths == MAX_LENGTH).mean():.1%} at {MAX_LENGTH}; batch {args.batch_size}: {1 / per_step:.1f} steps/s, "
          f"{args.batch_size / per_step:.0f} texts/s, {real / per_step / 1000:.1f}k real tokens/s "
          f"({args.batch_size * MAX_LENGTH / per_step / 1000:.1f}k tokens/s counting padding to {MAX_LENGTH}); "
          f"a {short}-step run: {seconds[short]:.1f} s" + (f"; GPU memory at most {torch.cuda.max_memory_allocated(device) / 2 ** 30:.1f} GiB "
          f"in the {long}-step run" if device.type == "cuda" else ""))


if __name__ == "__main__":
    main()
