"""Salt loader entry point.

Salt calls :func:`loader_dirs` (``salt.loader`` entry point in setup.cfg) and adds the
returned directories per loader type. A callable is used instead of pointing the entry
point at the package because runner modules live in the repository's top-level
``runners/`` and are installed as ``salt_ext.runners``: with ``pip install -e .`` that
package is not a subfolder of ``salt_ext`` on disk, so Salt's "package subfolder" lookup
would miss it. Importing the package and reading ``__path__`` works for both installs.
"""

import importlib
import os

# loader type (as Salt names it) -> our package holding modules of that type
_LOADER_PACKAGES = {
    "modules": "salt_ext.modules",
    "states": "salt_ext.states",
    "runners": "salt_ext.runners",
    "engines": "salt_ext.engines",
    "beacons": "salt_ext.beacons",
}


def loader_dirs():
    """Return ``{loader_type: [directories]}`` for every loader type we ship."""
    dirs = {}
    for loader_type, package in _LOADER_PACKAGES.items():
        module = importlib.import_module(package)
        paths = [p for p in module.__path__ if os.path.isdir(p)]
        if paths:
            dirs[loader_type] = paths
    return dirs
