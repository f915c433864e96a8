"""saltext-slurm modules."""
