"""Runner modules (installed as salt_ext.runners)."""
