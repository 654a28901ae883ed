"""Text datasets on BERT: CivilComments (tokenised once, cached) and MultiNLI (cached features).

Inputs are token tensors [n, L, 3] (ids, attention mask, token type ids) held on the
device like features; nothing is tokenised per item at train time.
"""
import copy
import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from XRM.common.commands import command
from XRM.common.errors import UserError
from XRM.data.base import SPLITS, GroupDataset, InputOptions, SplitTensors
from XRM.data.files import download_hint, open_csv, require_file
from XRM.data.metadata_table import SPLIT_IDS, MetadataTable, read_metadata_csv
from XRM.data.multinli import CACHED_FEATURES_DIR, load_multinli_features
from XRM.data.registry import register_dataset
from XRM.data.sources import MULTINLI_CACHED_FEATURES
from XRM.data.token_cache import cache_name, cached_text_tokens, cached_tokens
from XRM.networks.backbones import TEXT_MODEL_VARIABLE, BackboneSpec, load_tokenizer

CIVILCOMMENTS_MAX_LENGTH = 220
# MultiNLI's cached inputs are bert-base-uncased token ids (group_DRO's files): a text model
# must read the same ids, which its tokenizer's vocabulary size and special ids tell cheaply.
BERT_UNCASED_NAMES = ("bert-base-uncased", "google-bert/bert-base-uncased")
BERT_UNCASED_IDS = {"vocab_size": 30522, "pad_token_id": 0, "cls_token_id": 101, "sep_token_id": 102}


def require_bert_uncased_ids(name: str) -> None:
    """A UserError unless text model ``name`` reads bert-base-uncased token ids: that hub
    model, or a local folder whose tokenizer has its vocabulary size and special ids."""
    if name in BERT_UNCASED_NAMES:
        return
    problem = "only bert-base-uncased or a local folder holding a model with its vocabulary can"
    if Path(name).expanduser().is_dir():
        tokenizer = load_tokenizer(name)
        found = {key: getattr(tokenizer, key) for key in BERT_UNCASED_IDS}
        if found == BERT_UNCASED_IDS:
            return
        problem = "its tokenizer has " + ", ".join(f"{key} {value}" for key, value in found.items())
    raise UserError(f"MultiNLI's cached inputs are bert-base-uncased token ids, which text model {name!r} cannot "
                    f"read ({problem}): drop --text_model and unset {TEXT_MODEL_VARIABLE}, or pass a folder "
                    "holding bert-base-uncased")


def read_text_column(path: Path, column: str) -> Callable[[], list[str]]:
    """A function reading one column of a CSV (empty cells as empty strings), for lazy use."""

    def read() -> list[str]:
        with open_csv(path) as handle:
            reader = csv.DictReader(handle)
            if column not in (reader.fieldnames or []):
                raise UserError(f"{path} has no {column!r} column")
            return [row[column] or "" for row in reader]

    return read


def token_splits(table: MetadataTable, tokens: torch.Tensor, positions: np.ndarray, origin: Path) -> dict[str, SplitTensors]:
    """The three splits of ``table``; row r's input is ``tokens[positions[r]]``."""
    if len(positions) and (positions.min() < 0 or positions.max() >= len(tokens)):
        raise UserError(f"{origin} refers to text rows up to {positions.max()}, but there are {len(tokens)}: "
                        "re-create the dataset's files")
    splits = {}
    for split in SPLITS:
        rows = table.rows_of_split(SPLIT_IDS[split])
        splits[split] = SplitTensors(tokens[torch.as_tensor(positions[rows])], torch.as_tensor(table.y[rows]),
                                     torch.as_tensor(table.a[rows]))
    return splits


def tokens_for(table_path: Path, texts: Callable[[], list[str]], text_sources: list[Path], spec: BackboneSpec,
               max_length: int, prefix: str = "tokens") -> torch.Tensor:
    """Tokens of every text row with ``spec``'s tokenizer, through the cache beside ``table_path``."""
    tokenizer = load_tokenizer(spec.name)
    return cached_text_tokens(table_path.parent, texts, text_sources, spec.name, tokenizer, max_length, prefix)


class TextDataset(GroupDataset):
    """A dataset of token tensors for a BERT classifier (AdamW, bf16 autocast on CUDA)."""

    family, inputs = "text", "tokens"
    num_steps, eval_every = 60001, 250

    def resolve(self, data_path: str, phase: int, options: InputOptions) -> GroupDataset:
        """A copy that knows which text model to tokenise with and fine-tune."""
        super().resolve(data_path, phase, options)
        view = copy.copy(self)
        view.backbone = options.text_spec()
        return view

    def text_spec(self) -> BackboneSpec:
        """The text model (the default one when the dataset was not resolved)."""
        return self.backbone or InputOptions().text_spec()


@register_dataset("CivilComments")
class CivilComments(TextDataset):
    """CivilComments (WILDS, coarse groups): y toxic, a identity; class-balanced batches."""

    balanced_batches = True
    max_length = CIVILCOMMENTS_MAX_LENGTH

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        """Metadata rows with the cached tokens of civilcomments_coarse.csv (tokenised on first use)."""
        folder = Path(data_path) / "civilcomments"
        how = download_hint(data_path, "civilcomments")
        metadata = require_file(folder / "metadata_civilcomments_coarse.csv", "metadata file", how)
        texts = require_file(folder / "civilcomments_coarse.csv", "text file", how)
        table = read_metadata_csv(metadata)
        tokens = tokens_for(metadata, read_text_column(texts, "comment_text"), [texts], self.text_spec(),
                            self.max_length)
        return token_splits(table, tokens, _positions(table, metadata), metadata)


@register_dataset("MultiNLI")
class MultiNLI(TextDataset):
    """MultiNLI: y entailment/neutral/contradiction, a negation in sentence 2; group_DRO's cached features."""

    num_classes = 3

    def load_splits(self, data_path: str) -> dict[str, SplitTensors]:
        """Metadata rows with the cached features stacked as [n, 128, 3] (read once into a token cache)."""
        require_bert_uncased_ids(self.text_spec().name)
        folder = Path(data_path) / "multinli"
        how = download_hint(data_path, "multinli")
        metadata = require_file(folder / "metadata_multinli.csv", "metadata file", how)
        sources = [require_file(folder / CACHED_FEATURES_DIR / name, "cached features file", how)
                   for name in MULTINLI_CACHED_FEATURES]
        table = read_metadata_csv(metadata)

        def stack() -> torch.Tensor:
            features = load_multinli_features(folder)
            return torch.stack([features["input_ids"], features["input_mask"], features["segment_ids"]],
                               dim=2).to(torch.int32)

        key = {"source_bytes": [source.stat().st_size for source in sources]}
        tokens = cached_tokens(folder / cache_name("cached_features", 128), key, stack)
        return token_splits(table, tokens, _positions(table, metadata), metadata)


def _positions(table: MetadataTable, origin: Path) -> np.ndarray:
    # ``filename`` is the row's position in the text (or cached features) file.
    try:
        return np.asarray([int(name) for name in table.filenames], dtype=np.int64)
    except ValueError:
        raise UserError(f"{origin}: 'filename' must be the row number of the text file; re-create it with "
                        f"{command('download')}") from None
