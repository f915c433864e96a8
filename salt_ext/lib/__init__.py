"""saltext-slurm lib."""
