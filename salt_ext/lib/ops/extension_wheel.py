"""Build a wheel of the installed saltext-slurm, so the master can serve it to clean nodes.

A node that has only salt-minion gets the extension from the master's file server
(``salt://slurm_files/wheels/``) through the ``slurm.bootstrap`` state, with no index and no
internet. The wheel is assembled from the files Python imports (works for regular and
editable installs alike), so what nodes run is exactly what the master runs.
"""

import base64
import hashlib
import importlib
import importlib.metadata
import io
import os
import zipfile

from salt_ext.lib.util import fsutil

DIST = "saltext-slurm"
WHEEL_DIR = "wheels"


def wheel_name(version):
    return f"saltext_slurm-{version}-py3-none-any.whl"


def _package_files():
    """``{archive name: filesystem path}`` of every file of salt_ext (runners included)."""
    files = {}
    for package, prefix in (("salt_ext", "salt_ext"), ("salt_ext.runners", "salt_ext/runners")):
        module = importlib.import_module(package)
        for root_dir in module.__path__:
            for current, dirs, names in os.walk(root_dir):
                dirs[:] = [d for d in dirs if d != "__pycache__"]
                for name in names:
                    if name.endswith((".pyc", ".pyo")):
                        continue
                    path = os.path.join(current, name)
                    rel = os.path.relpath(path, root_dir).replace(os.sep, "/")
                    files.setdefault(f"{prefix}/{rel}", path)
    return files


def _record_line(name, data):
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def build(out_dir):
    """Write the wheel into ``out_dir`` atomically; return ``(path, version)``."""
    dist = importlib.metadata.distribution(DIST)
    version = dist.version
    info = f"saltext_slurm-{version}.dist-info"
    requires = "".join(f"Requires-Dist: {r}\n" for r in dist.requires or [])
    meta = {
        f"{info}/METADATA": (
            f"Metadata-Version: 2.1\nName: {DIST}\nVersion: {version}\n"
            f"Requires-Python: >=3.10\n{requires}"
        ),
        f"{info}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: saltext-slurm\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
        f"{info}/entry_points.txt": dist.read_text("entry_points.txt") or "",
    }
    buffer = io.BytesIO()
    record = []
    # fixed timestamps: the same sources give the same wheel (and the same hash on nodes)
    stamp = (2020, 1, 1, 0, 0, 0)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, path in sorted(_package_files().items()):
            with open(path, "rb") as handle:
                data = handle.read()
            archive.writestr(zipfile.ZipInfo(name, stamp), data)
            record.append(_record_line(name, data))
        for name, text in meta.items():
            data = text.encode()
            archive.writestr(zipfile.ZipInfo(name, stamp), data)
            record.append(_record_line(name, data))
        record.append(f"{info}/RECORD,,")
        archive.writestr(zipfile.ZipInfo(f"{info}/RECORD", stamp), "\n".join(record) + "\n")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, wheel_name(version))
    fsutil.atomic_write(path, buffer.getvalue(), mode=0o644)
    return path, version
