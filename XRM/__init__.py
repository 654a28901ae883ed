"""XRM, the group-robust training toolkit: data, networks, algorithms, the stacked engine, runs with
their files, launching (here, local GPUs, SLURM) and results. Sub-packages in layers, each importing
only those below it: common (1); results, networks, launch (2); data, algorithms (3); engine (4);
runs (5); cli (6). The paper's own method, MAT, is the ``mat`` package built on this one."""

__version__ = "0.1.0"
