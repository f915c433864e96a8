import os
import stat

import pytest

from salt_ext.lib.util import fsutil


def test_atomic_write_sets_mode_and_content(tmp_path):
    path = tmp_path / "secret"
    fsutil.atomic_write(str(path), b"abc", mode=0o400)
    assert path.read_bytes() == b"abc"
    assert stat.S_IMODE(path.stat().st_mode) == 0o400


def test_atomic_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "slurm.conf"
    path.write_text("old\n")

    def boom(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        fsutil.atomic_write(str(path), "new\n")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["slurm.conf"]


def test_sha256_file_none_when_missing(tmp_path):
    assert fsutil.sha256_file(str(tmp_path / "nope")) is None
