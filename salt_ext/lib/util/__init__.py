"""Utilities with no knowledge of Slurm: run a command (argv, never a shell), write files
atomically, run a command with its output and time capped.

The bottom layer: imports nothing of ours, and only the standard library.
"""
