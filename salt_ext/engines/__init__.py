"""saltext-slurm engines."""
