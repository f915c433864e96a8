import os

import pytest

from salt_ext.lib.conf import cluster_files
from salt_ext.loader import loader_dirs


def test_loader_dirs_include_runners_from_top_level_package():
    dirs = loader_dirs()
    assert set(dirs) >= {"modules", "runners", "states", "engines"}
    assert any(os.path.isfile(os.path.join(d, "slurm.py")) for d in dirs["runners"])
    assert any(os.path.isfile(os.path.join(d, "munge.py")) for d in dirs["modules"])


def test_files_dir_prefers_explicit_setting_then_first_file_root():
    assert cluster_files.files_dir({"slurm_files_dir": "/x"}) == "/x"
    opts = {"file_roots": {"base": ["/srv/salt", "/other"]}}
    assert cluster_files.files_dir(opts) == "/srv/salt/slurm_files"
    with pytest.raises(cluster_files.FilesDirError, match="slurm_files_dir"):
        cluster_files.files_dir({"file_roots": {}})
    assert cluster_files.salt_url("munge.key") == "salt://slurm_files/munge.key"
