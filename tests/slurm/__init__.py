"""Tests that need a real SLURM cluster: run them with `make test-slurm` (tests/slurm/cluster.sh)."""
