"""saltext-slurm states."""
