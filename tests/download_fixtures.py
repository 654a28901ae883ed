"""Tiny copies of the real datasets' published files, and a local HTTP mirror serving them.

Each ``make_*`` writes into ``<mirror>/<dataset>/`` the files download.py fetches, in
their real formats and archive layouts, and returns the group counts its metadata must
show: {split: {(y, a): count}}.
"""
import gzip
import http.server
import io
import os
import shutil
import socket
import struct
import subprocess
import sys
import tarfile
import threading
import types
import zipfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from archive_cases import DELETE, tarfile_patches
from XRM.cli.entry_point import call_main

REPO = Path(__file__).resolve().parents[1]


def jpeg_bytes(seed: int, size: int = 8) -> bytes:
    """A tiny JPEG whose pixels depend on ``seed``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    return buffer.getvalue()


def _write(path: Path, data: bytes | str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


def pack_tar(source: Path, archive: Path, members: list[str]) -> None:
    """tar.gz ``members`` (paths relative to ``source``) into ``archive``."""
    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for member in members:
            tar.add(source / member, arcname=member)


# Waterbirds rows: (species folder, y, split, place); 2 species, groups g = (y, place).
WATERBIRDS_ROWS = [
    ("001.Black_footed_Albatross", 1, 0, 1), ("001.Black_footed_Albatross", 1, 0, 1),
    ("001.Black_footed_Albatross", 1, 0, 0), ("002.Crested_Auklet", 0, 0, 0),
    ("002.Crested_Auklet", 0, 0, 0), ("002.Crested_Auklet", 0, 0, 0), ("002.Crested_Auklet", 0, 0, 1),
    ("001.Black_footed_Albatross", 1, 1, 1), ("002.Crested_Auklet", 0, 1, 0),
    ("001.Black_footed_Albatross", 1, 2, 0), ("002.Crested_Auklet", 0, 2, 1), ("002.Crested_Auklet", 0, 2, 0),
]
WATERBIRDS_GROUPS = {0: {(0, 0): 3, (0, 1): 1, (1, 0): 1, (1, 1): 2}, 1: {(0, 0): 1, (1, 1): 1},
                     2: {(0, 0): 1, (0, 1): 1, (1, 0): 1}}


def make_waterbirds(mirror: Path, work: Path) -> dict:
    """waterbirds/waterbird_complete95_forest2water2.tar.gz with metadata.csv and JPEGs."""
    root = work / "waterbird_complete95_forest2water2"
    lines = ["img_id,img_filename,y,split,place,place_filename"]
    for index, (species, y, split, place) in enumerate(WATERBIRDS_ROWS, start=1):
        filename = f"{species}/{species.split('.')[1]}_{index:04d}.jpg"
        _write(root / filename, jpeg_bytes(index))
        lines.append(f"{index},{filename},{y},{split},{place},/b/bamboo_forest/{index:08d}.jpg")
    _write(root / "metadata.csv", "\n".join(lines) + "\n")
    pack_tar(work, mirror / "waterbirds" / "waterbird_complete95_forest2water2.tar.gz",
             ["waterbird_complete95_forest2water2"])
    return WATERBIRDS_GROUPS


CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose Black_Hair "
    "Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee Gray_Hair Heavy_Makeup "
    "High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard Oval_Face Pale_Skin Pointy_Nose "
    "Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat "
    "Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young").split()
# (split, blond, male) per image 000001.jpg, 000002.jpg, ...
CELEBA_ROWS = [(0, 1, 0), (0, 0, 1), (0, 0, 1), (0, 1, 1), (0, 0, 0), (1, 1, 0), (1, 0, 1), (2, 0, 0), (2, 1, 1)]
CELEBA_GROUPS = {0: {(0, 0): 1, (0, 1): 2, (1, 0): 1, (1, 1): 1}, 1: {(0, 1): 1, (1, 0): 1},
                 2: {(0, 0): 1, (1, 1): 1}}


def make_celeba(mirror: Path, work: Path) -> dict:
    """celeba/: img_align_celeba.zip, list_eval_partition.txt, list_attr_celeba.txt."""
    partition, attributes = [], [str(len(CELEBA_ROWS)), " ".join(CELEBA_ATTRIBUTES)]
    (mirror / "celeba").mkdir(parents=True)
    with zipfile.ZipFile(mirror / "celeba" / "img_align_celeba.zip", "w") as bundle:
        for index, (split, blond, male) in enumerate(CELEBA_ROWS, start=1):
            name = f"{index:06d}.jpg"
            bundle.writestr(f"img_align_celeba/{name}", jpeg_bytes(100 + index, size=16))
            partition.append(f"{name} {split}")
            values = ["-1"] * len(CELEBA_ATTRIBUTES)
            values[9], values[20], values[31] = ("1" if blond else "-1"), ("1" if male else "-1"), "1"
            attributes.append(f"{name} " + " ".join(f"{v:>2}" for v in values))
    _write(mirror / "celeba" / "list_eval_partition.txt", "\n".join(partition) + "\n")
    _write(mirror / "celeba" / "list_attr_celeba.txt", "\n".join(attributes) + "\n")
    return CELEBA_GROUPS


CIVIL_IDENTITIES = ["male", "female", "LGBTQ", "christian", "muslim", "other_religions", "black", "white"]
# (split, toxicity, {identity: score}, text)
CIVIL_ROWS = [
    ("train", 0.9, {"male": 0.8}, "you are, \"awful\"\nreally"),
    ("train", 0.1, {}, "nice day"),
    ("train", 0.6, {}, "bad"),
    ("train", 0.0, {"black": 0.5, "white": 0.2}, "ok"),
    ("val", 0.7, {"female": 1.0, "muslim": 0.6}, "val one"),
    ("val", 0.2, {}, "val none"),
    ("test", 0.1, {"white": 0.9}, "test one"),
    ("test", 0.5, {"christian": 0.5, "white": 0.5}, "test two"),
]
# Train: a = 1 when no identity. Val/test: one row per identity, a = its index (0..7).
CIVIL_GROUPS = {0: {(0, 0): 1, (0, 1): 1, (1, 0): 1, (1, 1): 1}, 1: {(1, 1): 1, (1, 4): 1},
                2: {(0, 7): 1, (1, 3): 1, (1, 7): 1}}
# Texts of civilcomments_coarse.csv in order: train, then test and val identity by identity.
CIVIL_TEXTS = ["you are, \"awful\"\nreally", "nice day", "bad", "ok", "test two", "test one", "test two",
               "val one", "val one"]


def make_civilcomments(mirror: Path, work: Path) -> dict:
    """civilcomments/civilcomments_v1.0.tar.gz holding all_data_with_identities.csv."""
    import csv
    header = ["", "id", "comment_text", "split", "toxicity", "severe_toxicity", *CIVIL_IDENTITIES,
              "identity_any"]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(header)
    for index, (split, toxicity, identities, text) in enumerate(CIVIL_ROWS):
        # An unrated identity is an empty cell in the real file.
        scores = [("" if index == 1 and name == "LGBTQ" else identities.get(name, 0.0)) for name in CIVIL_IDENTITIES]
        writer.writerow([index, 1000 + index, text, split, toxicity, 0.0, *scores, int(bool(identities))])
    _write(work / "all_data_with_identities.csv", buffer.getvalue())
    pack_tar(work, mirror / "civilcomments" / "civilcomments_v1.0.tar.gz", ["all_data_with_identities.csv"])
    return CIVIL_GROUPS


def utils_glue_module() -> types.ModuleType:
    """A stand-in ``utils_glue`` module, so pickles name ``utils_glue.InputFeatures`` as the real files do."""
    module = types.ModuleType("utils_glue")

    class InputFeatures:
        def __init__(self, input_ids, input_mask, segment_ids, label_id):
            self.input_ids, self.input_mask = input_ids, input_mask
            self.segment_ids, self.label_id = segment_ids, label_id

    InputFeatures.__module__, InputFeatures.__qualname__ = "utils_glue", "InputFeatures"
    module.InputFeatures = InputFeatures
    return module


def save_cached_features(path: Path, labels: list[int], legacy_format: bool, length: int = 128) -> None:
    """torch.save a list of utils_glue.InputFeatures, as group_DRO's cached files are."""
    module = utils_glue_module()
    sys.modules["utils_glue"] = module
    try:
        records = [module.InputFeatures([101 + i] * length, [1] * length, [0] * length, label)
                   for i, label in enumerate(labels)]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(records, path, _use_new_zipfile_serialization=not legacy_format)
    finally:
        del sys.modules["utils_glue"]


# (gold_label, sentence2_has_negation, split) per row: train file, dev file, dev-mm file.
MULTINLI_FILES = {
    "cached_train_bert-base-uncased_128_mnli": [(0, 1, 0), (1, 0, 0), (2, 0, 1), (2, 1, 0)],
    "cached_dev_bert-base-uncased_128_mnli": [(1, 1, 2), (0, 0, 0)],
    "cached_dev_bert-base-uncased_128_mnli-mm": [(2, 0, 2)],
}
MULTINLI_GROUPS = {0: {(0, 0): 1, (0, 1): 1, (1, 0): 1, (2, 1): 1}, 1: {(2, 0): 1}, 2: {(1, 1): 1, (2, 0): 1}}


def make_multinli(mirror: Path, work: Path) -> dict:
    """multinli/: multinli_bert_features.tar.gz (three cached files at its root) and metadata_random.csv."""
    lines, index = [",gold_label,sentence2_has_negation,split"], 0
    for number, (name, rows) in enumerate(MULTINLI_FILES.items()):
        save_cached_features(work / name, [row[0] for row in rows], legacy_format=number == 0)
        for label, negation, split in rows:
            lines.append(f"{index},{label},{negation},{split}")
            index += 1
    pack_tar(work, mirror / "multinli" / "multinli_bert_features.tar.gz", list(MULTINLI_FILES))
    _write(mirror / "multinli" / "metadata_random.csv", "\n".join(lines) + "\n")
    return MULTINLI_GROUPS


# Images per MetaShift folder; 20 in all: the reference's re-split gives 13 / 2 / 5.
METASHIFT_COUNTS = {"train/cat/cat(indoor)": 6, "train/dog/dog(outdoor)": 7, "test/cat/cat(outdoor)": 3,
                    "test/dog/dog(indoor)": 4}


def make_metashift(mirror: Path, work: Path) -> dict[tuple[int, int], int]:
    """metashift/metashift.tar.gz with MetaShift-Cat-Dog-indoor-outdoor/...; returns counts per (y, a)."""
    root = work / "MetaShift-Cat-Dog-indoor-outdoor"
    seed = 0
    for folder, count in METASHIFT_COUNTS.items():
        for _ in range(count):
            seed += 1
            _write(root / folder / f"{seed:04d}.jpg", jpeg_bytes(200 + seed))
    pack_tar(work, mirror / "metashift" / "metashift.tar.gz", ["MetaShift-Cat-Dog-indoor-outdoor"])
    return {(1, 1): 6, (0, 0): 7, (1, 0): 3, (0, 1): 4}


IMAGENETBG_CLASSES = ["00_dog", "01_bird", "02_wheeled vehicle", "03_reptile", "04_carnivore", "05_insect",
                      "06_musical instrument", "07_primate", "08_fish"]


def make_imagenetbg(mirror: Path, work: Path) -> None:
    """backgrounds_challenge/: backgrounds_challenge_data.tar.gz (bg_challenge/<variant>/val) and
    in9l.tar.gz (in9l/train: 2 per class, in9l/val: 1 per class); variants hold 1 per class."""
    seed = 0
    folders = {"in9l/train": 2, "in9l/val": 1, "bg_challenge/original/val": 1,
               "bg_challenge/mixed_rand/val": 1, "bg_challenge/only_fg/val": 1}
    for folder, count in folders.items():
        for name in IMAGENETBG_CLASSES:
            for _ in range(count):
                seed += 1
                _write(work / folder / name / f"n0_{seed}.JPEG", jpeg_bytes(300 + seed))
    pack_tar(work, mirror / "imagenetbg" / "backgrounds_challenge_data.tar.gz", ["bg_challenge"])
    pack_tar(work, mirror / "imagenetbg" / "in9l.tar.gz", ["in9l"])


def idx_gz(array: np.ndarray) -> bytes:
    """An MNIST IDX file (unsigned bytes), gzip-compressed."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def make_mnist(mirror: Path) -> None:
    """cmnist/: the four MNIST IDX .gz files, 6 training and 4 test digits."""
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 6), ("t10k", 4)):
        _write(mirror / "cmnist" / f"{prefix}-images-idx3-ubyte.gz", idx_gz(rng.integers(0, 256, (count, 28, 28))))
        _write(mirror / "cmnist" / f"{prefix}-labels-idx1-ubyte.gz", idx_gz(np.arange(count) % 10))


def without_tar_data_filter(monkeypatch) -> None:
    """Make tarfile what Python 3.10 < 3.10.12 and 3.11 < 3.11.4 ship: no ``data_filter``,
    and extraction that filters nothing (3.14 filters with "data" when given no filter)."""
    for owner, name, value in tarfile_patches("without filters"):
        if value is DELETE:
            monkeypatch.delattr(owner, name)
        else:
            monkeypatch.setattr(owner, name, value)


def closed_port_url() -> str:
    """An http://127.0.0.1 URL nothing listens on: every download from it fails as offline."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}"


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep test output clean
        pass


class _DroppingHandler(_QuietHandler):
    """Announces the whole file, sends half of it, then closes the connection."""

    def do_GET(self) -> None:
        data = Path(self.translate_path(self.path)).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


class LocalMirror:
    """An HTTP server on 127.0.0.1 (a free port) serving a folder, in a thread."""

    def __init__(self, directory: Path, drop_connections: bool = False):
        handler = _DroppingHandler if drop_connections else _QuietHandler

        def make_handler(*args, **kwargs):
            return handler(*args, directory=str(directory), **kwargs)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make_handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "LocalMirror":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_download(args: list[str], launcher: bool = False, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run download.py (or the checksum-replacing launcher) as a subprocess from the repository root."""
    script = REPO / "tests" / "download_launcher.py" if launcher else REPO / "download.py"
    environment = {**os.environ, "no_proxy": "127.0.0.1", "NO_PROXY": "127.0.0.1", **(env or {})}
    return subprocess.run([sys.executable, str(script), *args], cwd=REPO, capture_output=True, text=True,
                          env=environment, timeout=300)


def run_main(args: list[str], capsys) -> tuple[int, str]:
    """Run download.py's main in this process; returns (exit code, what it wrote to stderr)."""
    from XRM.cli import download_command

    capsys.readouterr()
    code = call_main(download_command.main, download_command.get_args_parser().parse_args(args))
    return code, capsys.readouterr().err


def error_lines(stderr: str) -> list[str]:
    """The ``error:`` lines of a run's stderr."""
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def copy_tree(source: Path, target: Path) -> None:
    """Copy a mirror folder (for tests that damage one file of it)."""
    shutil.copytree(source, target)
