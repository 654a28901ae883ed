"""Tiny data in the real layouts and a tiny BERT folder, for the backbone tests (no network)."""
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from XRM.data.metadata_table import table_from_rows, write_metadata_csv

WORDS = ["you", "are", "awful", "nice", "day", "bad", "ok", "good", "people", "hate", "love", "this"]


def write_tiny_bert(folder: Path, uncased_ids: bool = False, **config_options) -> Path:
    """A local text-model folder (config, random weights, tokenizer) of a 1-layer, 32-wide BERT
    (``config_options``: other BertConfig values, such as its dropout probabilities).

    ``uncased_ids``: a vocabulary laid out as bert-base-uncased's (30,522 entries, [PAD] 0,
    [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103), the only kind MultiNLI's cached ids accept.
    """
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    if uncased_ids:
        vocab = ["[PAD]", *[f"[unused{i}]" for i in range(99)], "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
        vocab += [f"tok{i}" for i in range(30522 - len(vocab))]
    else:
        vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS]
        vocab += [f"tok{i}" for i in range(140 - len(vocab))]  # ids up to 139
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    # from the folder's vocab.txt: the one way that works on transformers 4 and 5 alike
    BertTokenizerFast.from_pretrained(str(folder)).save_pretrained(folder)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=256, **config_options)
    BertModel(config).save_pretrained(folder)
    return folder


def write_jpegs(folder: Path, names: list[str], size: int = 32) -> None:
    """Random ``size`` x ``size`` RGB JPEGs at ``folder / name``."""
    rng = np.random.default_rng(0)
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / name)


# (split, y, a) of every example of the tiny datasets, in metadata order: each class of the
# training and validation splits has a majority (a = y) and a minority (a != y) part
IMAGE_ROWS = [(0, 0, 0), (0, 0, 0), (0, 0, 1), (0, 1, 1), (0, 1, 1), (0, 1, 0),
              (1, 0, 0), (1, 0, 1), (1, 1, 1), (1, 1, 0), (2, 0, 0), (2, 1, 1)]


def write_features(path: Path, rows: list[tuple[int, int, int]] = IMAGE_ROWS, dim: int = 6) -> None:
    """A features.pt in DESIGN.md's format for ``rows``, in their order within each split.

    The features show the attribute only (+-3 plus a little noise): XRM's twins learn it and
    so make cross-mistakes on exactly the minority, which keeps phase 1 from degenerating.
    """
    generator = torch.Generator().manual_seed(0)
    content = {}
    for split_id, split in enumerate(("tr", "va", "te")):
        members = [(y, a) for s, y, a in rows if s == split_id]
        y = torch.tensor([[m[0]] for m in members])
        m = torch.tensor([[m[1]] for m in members])
        x = 3.0 * (2.0 * m.float() - 1.0) + 0.1 * torch.randn(len(members), dim, generator=generator)
        content[split] = {"x": x, "y": y, "m": m}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(content, path)


def write_waterbirds(data_path: Path, with_features: bool = True) -> None:
    """waterbirds/: metadata_waterbirds.csv, JPEGs under waterbird_complete95_forest2water2/, features.pt."""
    folder = data_path / "waterbirds"
    names = [f"{i:03d}.Bird/{i}.jpg" for i in range(len(IMAGE_ROWS))]
    write_jpegs(folder / "waterbird_complete95_forest2water2", names)
    write_metadata_csv(table_from_rows(list(range(len(names))), names, *zip(*IMAGE_ROWS)),
                       folder / "metadata_waterbirds.csv")
    if with_features:
        write_features(folder / "features.pt")


CIVIL_TEXTS = ["you are awful", "nice day", "bad people", "ok", "good day", "i hate this", "love this", "awful",
               "nice people", "bad day", "you are nice", "this is ok"]


def write_civilcomments(data_path: Path, texts: list[str] = CIVIL_TEXTS,
                        rows: list[tuple[int, int, int]] = IMAGE_ROWS) -> list[str]:
    """civilcomments/: metadata_civilcomments_coarse.csv and civilcomments_coarse.csv of ``texts`` and their
    (split, y, a) ``rows``; returns the texts."""
    folder = data_path / "civilcomments"
    folder.mkdir(parents=True)
    (folder / "civilcomments_coarse.csv").write_text(
        "comment_text\n" + "".join(json.dumps(text) + "\n" for text in texts))
    positions = list(range(len(texts)))
    write_metadata_csv(table_from_rows(positions, positions, *zip(*rows)), folder / "metadata_civilcomments_coarse.csv")
    return texts


def main_args(*args: str) -> list[str]:
    """Arguments of a short CPU run of main.py: few steps, small batches, no loader workers."""
    return [*args, "--device", "cpu", "--num_workers", "0"]


def run_main(argv: list[str]) -> int:
    """main.py's main, in process (a UserError propagates)."""
    from XRM.cli import train_command

    return train_command.main(train_command.get_args_parser().parse_args(argv), plugins=("mat",))


def records(path: Path) -> tuple[dict, list[dict]]:
    """The header and the evaluation records of a results file."""
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return lines[0], lines[1:]
