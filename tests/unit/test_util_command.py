"""lib/util/command: a command that cannot run is a CommandFailed, never a crash."""

import pytest

from salt_ext.lib.util import command


def test_a_non_executable_binary_is_a_failed_command(tmp_path):
    script = tmp_path / "slurmd"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o644)
    with pytest.raises(command.CommandFailed, match="slurmd: cannot execute: Permission denied"):
        command.run([str(script), "-V"], timeout=5, check=False)


def test_a_missing_binary_is_a_failed_command(tmp_path):
    with pytest.raises(command.CommandFailed, match="command not found"):
        command.run([str(tmp_path / "nothing")], timeout=5)
