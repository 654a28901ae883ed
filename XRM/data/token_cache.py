"""Token tensors computed once and cached beside the data, never per item at train time.

A cache file holds ``{'key': {...}, 'tokens': int32 [n, L, 3]}`` (input ids, attention
mask, token type ids: the reference's layout). It is reused while its key (tokenizer,
vocabulary, maximum length, size of the source files) matches, and rewritten atomically
otherwise.
"""
import re
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm import tqdm

from XRM.common.fileio import atomic_torch_save

TOKENIZE_CHUNK = 4096


def cache_name(model_name: str, max_length: int, prefix: str = "tokens") -> str:
    """``tokens_<model>_<max_length>.pt``, the model being the last part of a hub name or folder."""
    model = re.sub(r"[^A-Za-z0-9._-]", "_", Path(model_name.rstrip("/\\")).name) or "model"
    return f"{prefix}_{model}_{max_length}.pt"


def vocabulary_hash(tokenizer) -> int:
    """A checksum of the tokenizer's vocabulary, so a folder reusing a name cannot reuse a stale cache."""
    items = sorted(tokenizer.get_vocab().items())
    return zlib.crc32(repr(items).encode())


def cached_tokens(path: Path, key: dict, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """The tensor cached at ``path`` when its key equals ``key``; else ``build()``, saved there atomically."""
    if path.is_file():
        try:
            content = torch.load(path, map_location="cpu", weights_only=True)
            if content.get("key") == key:
                return content["tokens"]
        except Exception as error:  # a damaged cache is rebuilt, never trusted
            print(f"warning: rebuilding unreadable token cache {path} ({type(error).__name__})", file=sys.stderr)
    tokens = build()
    atomic_torch_save({"key": key, "tokens": tokens}, path)
    return tokens


def tokenize(texts: list[str], tokenizer, max_length: int, description: str = "tokenising") -> torch.Tensor:
    """int32 [n, max_length, 3]: ids, attention mask, token type ids, padded and truncated."""
    chunks = []
    for start in tqdm(range(0, len(texts), TOKENIZE_CHUNK), desc=description, unit=" chunks", file=sys.stderr,
                      disable=not sys.stderr.isatty()):
        encoded = tokenizer(texts[start:start + TOKENIZE_CHUNK], padding="max_length", truncation=True,
                            max_length=max_length, return_attention_mask=True, return_token_type_ids=True,
                            return_tensors="pt")
        chunks.append(torch.stack([encoded["input_ids"], encoded["attention_mask"], encoded["token_type_ids"]],
                                  dim=2).to(torch.int32))
    return torch.cat(chunks) if chunks else torch.zeros(0, max_length, 3, dtype=torch.int32)


def cached_text_tokens(folder: Path, texts: Callable[[], list[str]], sources: list[Path], tokenizer_name: str,
                       tokenizer, max_length: int, prefix: str = "tokens") -> torch.Tensor:
    """Tokens of ``texts()`` (read only when the cache is missing or stale) cached in ``folder``
    as ``<prefix>_<model>_<max_length>.pt``."""
    key = {"tokenizer": tokenizer_name, "vocabulary": vocabulary_hash(tokenizer), "max_length": max_length,
           "source_bytes": [source.stat().st_size for source in sources]}
    path = folder / cache_name(tokenizer_name, max_length, prefix)
    return cached_tokens(path, key, lambda: tokenize(texts(), tokenizer, max_length, f"tokenising for {path.name}"))
