"""Where each dataset's files come from: URL, stored name and place, checksums.

Only facts about files live here; what to do with them is in ``prepare.py``.
"""
from dataclasses import dataclass


@dataclass(frozen=True)
class RemoteFile:
    """One file a dataset needs, as published by its authors.

    ``name`` is the file's original name: it is what ``--mirror`` serves under
    ``<mirror>/<dataset>/<name>`` and what a user saves a copy downloaded by hand as,
    in ``<data_path>/<dataset folder>/<directory>/``.
    """

    name: str
    url: str
    directory: str = ""
    # None: a plain file used as it is. A folder (relative to the dataset folder):
    # the archive is unpacked there.
    extract_to: str | None = None
    # Paths (relative to the dataset folder) that exist once the file is in place;
    # a folder prepared by hand or by the reference code is recognised by them.
    provides: tuple[str, ...] = ()
    md5: str | None = None
    sha256: str | None = None
    # The git blob id of a file taken from a git repository: sha1 of "blob <size>\0" + bytes.
    git_sha1: str | None = None
    # A checksum given by a single unofficial source: a mismatch is only a warning.
    sha256_unconfirmed: str | None = None
    google_drive_id: str | None = None

    @property
    def is_archive(self) -> bool:
        """Whether the file is unpacked rather than used as it is."""
        return self.extract_to is not None


def _drive_url(file_id: str) -> str:
    return f"https://drive.google.com/uc?id={file_id}"


STANFORD_DRO = "https://nlp.stanford.edu/data/dro"
CODALAB_BUNDLE = "https://worksheets.codalab.org/rest/bundles"

WATERBIRDS_FILES = (
    RemoteFile(
        name="waterbird_complete95_forest2water2.tar.gz",
        url=f"{STANFORD_DRO}/waterbird_complete95_forest2water2.tar.gz",
        extract_to="",
        provides=("waterbird_complete95_forest2water2/metadata.csv",),
        sha256_unconfirmed="56c51b77f7d17283ac97003d973e9107e8af9ceebffcb0c8be14d024f846f951",
    ),
)

# The image zip from the S3 copy the reference uses (same bytes as torchvision's Drive
# file); the two list files from torchvision's Drive ids, with torchvision's MD5s.
CELEBA_FILES = (
    RemoteFile(
        name="img_align_celeba.zip",
        url="https://s3.amazonaws.com/pytorch-tutorial-assets/img_align_celeba.zip",
        extract_to="",
        provides=("img_align_celeba",),
        md5="00d2c5bc6d35e252742224ab0c1e8fcb",
    ),
    RemoteFile(
        name="list_eval_partition.txt",
        url=_drive_url("0B7EVK8r0v71pY0NSMzRuSXJEVkk"),
        provides=("list_eval_partition.txt",),
        md5="d32c9cbf5e040fd4025c592c306e6668",
        google_drive_id="0B7EVK8r0v71pY0NSMzRuSXJEVkk",
    ),
    RemoteFile(
        name="list_attr_celeba.txt",
        url=_drive_url("0B7EVK8r0v71pblRyaVFSWGxPY0U"),
        provides=("list_attr_celeba.txt",),
        md5="75e246fa4810816ffd6ee81facbd244c",
        google_drive_id="0B7EVK8r0v71pblRyaVFSWGxPY0U",
    ),
)

# WILDS v1.0 release; the bundle URL has no file name, so WILDS's archive name is used.
CIVILCOMMENTS_FILES = (
    RemoteFile(
        name="civilcomments_v1.0.tar.gz",
        url=f"{CODALAB_BUNDLE}/0x8cd3de0634154aeaad2ee6eb96723c6e/contents/blob/",
        extract_to="",
        provides=("all_data_with_identities.csv",),
    ),
)

MULTINLI_CACHED_FEATURES = (
    "cached_train_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli",
    "cached_dev_bert-base-uncased_128_mnli-mm",
)
MULTINLI_FILES = (
    RemoteFile(
        name="multinli_bert_features.tar.gz",
        url=f"{STANFORD_DRO}/multinli_bert_features.tar.gz",
        directory="glue_data/MNLI",
        extract_to="glue_data/MNLI",
        provides=tuple(f"glue_data/MNLI/{name}" for name in MULTINLI_CACHED_FEATURES),
    ),
    RemoteFile(
        name="metadata_random.csv",
        url="https://raw.githubusercontent.com/kohpangwei/group_DRO/master/"
        "dataset_metadata/multinli/metadata_random.csv",
        directory="data",
        provides=("data/metadata_random.csv",),
        git_sha1="dd501d956c5a25f3ecb64ccc721ac1e085168357",
    ),
)

METASHIFT_FILES = (
    RemoteFile(
        name="metashift.tar.gz",
        url="https://www.dropbox.com/s/a7k65rlj4ownyr2/metashift.tar.gz?dl=1",
        extract_to="",
        provides=("MetaShift-Cat-Dog-indoor-outdoor",),
    ),
)

# The reference also fetches original.tar.gz, which none of its splits reads: left out.
IMAGENETBG_FILES = (
    RemoteFile(
        name="backgrounds_challenge_data.tar.gz",
        url="https://github.com/MadryLab/backgrounds_challenge/releases/download/data/"
        "backgrounds_challenge_data.tar.gz",
        extract_to="",
        provides=("bg_challenge",),
    ),
    RemoteFile(
        name="in9l.tar.gz",
        url="https://www.dropbox.com/s/8w29bg9niya19rn/in9l.tar.gz?dl=1",
        extract_to="",
        provides=("in9l",),
    ),
)

# NICO++'s domain-generalisation track, from the Dropbox folder SubpopBench downloads (no checksums published).
NICOPP_DROPBOX = "https://www.dropbox.com/sh/u2bq2xo8sbax4pr"
NICOPP_FILES = (
    RemoteFile(
        name="track_1.zip",
        url=f"{NICOPP_DROPBOX}/AACvgYpfQHfS7u_M3yJwkK-ra/track_1/track_1.zip?dl=1",
        extract_to="",
        provides=("public_dg_0416/train",),
    ),
    RemoteFile(
        name="dg_label_id_mapping.json",
        url=f"{NICOPP_DROPBOX}/AADMZPkoNJVI4IP1qbLuKtlFa/track_1/dg_label_id_mapping.json?dl=1",
        provides=("dg_label_id_mapping.json",),
    ),
)

MNIST_URL = "https://ossci-datasets.s3.amazonaws.com/mnist"
_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
# Images in each split of the published MNIST (torchvision's train=True / train=False).
MNIST_SPLIT_SIZES = {"train": 60000, "test": 10000}
# Unpacked where torchvision.datasets.MNIST(root=<data_path>/mnist) looks for them.
MNIST_FILES = tuple(
    RemoteFile(
        name=name,
        url=f"{MNIST_URL}/{name}",
        directory="MNIST/raw",
        extract_to="MNIST/raw",
        provides=(f"MNIST/raw/{name.removesuffix('.gz')}",),
        md5=md5,
    )
    for name, md5 in _MNIST_MD5.items()
)
