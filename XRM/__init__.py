"""Group-robust training core: datasets, networks, algorithms, training and sweeps."""
