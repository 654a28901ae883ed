"""Where and with what a run was trained, for its results header: the device it used, the versions
of torch, CUDA, Python and this toolkit, the git commit of the checkout, the host and the start time."""
import functools
import platform
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import XRM

#: the key of the provenance in a results header
PROVENANCE = "provenance"


@functools.cache
def git_commit() -> str | None:
    """The commit of the checkout the toolkit runs from (``+dirty`` when files differ from it), or None
    when it is not a git checkout (an installed package) or git is missing."""
    root = Path(XRM.__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "diff", "--quiet", "HEAD"], capture_output=True,
                               timeout=10).returncode == 1
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def device_name(device: torch.device) -> str:
    """The device as a person names it: the GPU's model, or the CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.machine()})"


def provenance(device: torch.device) -> dict[str, Any]:
    """The provenance of a run starting now on ``device``."""
    return {"device_used": device_name(device), "torch": torch.__version__, "cuda": torch.version.cuda,
            "python": platform.python_version(), "toolkit": XRM.__version__, "commit": git_commit(),
            "host": socket.gethostname(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
