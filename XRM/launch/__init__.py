"""Launching a sweep's stacks: here, on this machine's GPUs, or on SLURM (XRM/launch/launchers.py)."""
from XRM.launch import slurm_launcher  # noqa: F401 (registers the "slurm" launcher)
