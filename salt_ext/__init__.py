"""saltext-slurm: Salt extension that builds and keeps a Slurm cluster healthy."""

__version__ = "0.1.0"
