"""The optional TensorBoard view of a run's records (``--tensorboard``).

Each run writes its own folder (``RunFiles.tensorboard``: ``<run folder>/tensorboard/hpcomb_<k>_seed<s>/``)
with the standard ``torch.utils.tensorboard.SummaryWriter``: every number of each record it appends
to its results file, as a scalar of the record's name at the record's step. The results file stays
the truth; the writer only reads the records. A run that resumes from step s appends to its
folder and purges the steps from s on that a killed process had written (``purge_step``), so its
curves are those of an unbroken run; a run that starts afresh purges from step 0.

Importable without torch or tensorboard: the commands check for the package before they train.
"""
import importlib.util
from pathlib import Path

from XRM.common.errors import UserError
from XRM.results.records import STEP

#: the option that asks for TensorBoard files, and how to get the package it needs
TENSORBOARD_OPTION = "--tensorboard"
INSTALL = "pip install tensorboard"


def require_tensorboard() -> None:
    """A UserError unless the tensorboard package is installed."""
    if importlib.util.find_spec("tensorboard") is None:
        raise UserError(f"{TENSORBOARD_OPTION} needs the tensorboard package: {INSTALL}")


def scalars(record: dict) -> dict[str, float]:
    """The numbers of a record that TensorBoard shows: every value but its step, ``degenerate``
    (true or false) and nulls (test metrics not evaluated there)."""
    return {key: value for key, value in record.items()
            if key != STEP and isinstance(value, (int, float)) and not isinstance(value, bool)}


class RecordWriter:
    """One run's TensorBoard writer: :meth:`write` shows a record as scalars at its step."""

    def __init__(self, folder: Path, first_step: int) -> None:
        require_tensorboard()
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder), purge_step=first_step)

    def write(self, record: dict) -> None:
        """The record's scalars (see :func:`scalars`) at its step."""
        for key, value in scalars(record).items():
            self.writer.add_scalar(key, value, record[STEP])

    def flush(self) -> None:
        """Everything written so far onto the disk (with each checkpoint)."""
        self.writer.flush()

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
