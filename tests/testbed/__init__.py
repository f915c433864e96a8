"""Network-namespace test bed shared by the test suite and ``make demo``."""

from tests.testbed.bed import BedError, SandboxCluster

__all__ = ["BedError", "SandboxCluster"]
