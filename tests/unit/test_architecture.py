"""The shape of salt_ext/lib, read from the source with ast (nothing is imported).

Layers, lowest first; a module may import its own layer and the layers it stands on, never a
higher one (README, "Architecture")::

    util < conf < node < ops        keyvault stands on util only
    util < accounting < node, ops   accounting (sacctmgr as code) stands on util only

lib is Salt-free (no ``import salt``), imports nothing of salt_ext outside lib, and holds no
module of its own besides the layer packages. The exec and state modules run on minions and
take only util, conf, node and accounting.
"""

import ast
import configparser
import pathlib

import pytest

import salt_ext

REPO = pathlib.Path(__file__).resolve().parents[2]
LIB = REPO / "salt_ext" / "lib"

# layer -> the layers it may import (itself included)
ALLOWED = {
    "util": {"util"},
    "conf": {"util", "conf"},
    "node": {"util", "conf", "node", "accounting"},
    "ops": {"util", "conf", "node", "ops", "accounting"},
    "keyvault": {"util", "keyvault"},
    "accounting": {"util", "accounting"},
}
MINION_SIDE = ("salt_ext/modules", "salt_ext/states", "salt_ext/beacons")
MINION_LAYERS = {"util", "conf", "node", "accounting"}


def _lib_modules():
    return sorted(p for p in LIB.rglob("*.py") if "__pycache__" not in p.parts)


def _dotted(path):
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path):
    """Absolute names ``path`` imports: ``import a.b`` gives ``a.b``; ``from a import b, c``
    gives ``a.b`` and ``a.c`` (b may be a module or a name; both are checked as modules)."""
    tree = ast.parse(path.read_text(), str(path))
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rpartition(".")[0]
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            names.append((node.lineno, module))
            names += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return names


def _layer(dotted):
    """``salt_ext.lib.<layer>...`` -> layer; None for anything else."""
    parts = dotted.split(".")
    if parts[:2] == ["salt_ext", "lib"] and len(parts) > 2:
        return parts[2]
    return None


def _rel(path):
    return str(path.relative_to(REPO))


def test_lib_holds_only_layer_packages():
    loose = [p.name for p in LIB.glob("*.py") if p.name != "__init__.py"]
    assert loose == [], f"modules directly in salt_ext/lib (put them in a layer): {loose}"
    layers = {p.name for p in LIB.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert layers == set(ALLOWED), "a layer package without a rank in ALLOWED (or one missing)"


@pytest.mark.parametrize("path", _lib_modules(), ids=_rel)
def test_lib_module_is_salt_free_and_imports_only_downward(path):
    layer = _layer(_dotted(path))
    wrong = []
    for line, name in _imports(path):
        if name == "salt" or name.startswith("salt."):
            wrong.append(f"line {line}: imports Salt ({name}); lib is Salt-free")
        elif name == "salt_ext" or name.startswith("salt_ext."):
            target = _layer(name)
            if name in ("salt_ext.lib", "salt_ext.lib.__init__"):
                continue
            if target is None:
                wrong.append(f"line {line}: imports {name}, outside lib")
            elif target not in ALLOWED.get(layer, ()):
                wrong.append(f"line {line}: {layer} imports {name} ({target} is not below it)")
    assert not wrong, f"{_rel(path)}:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    "path",
    sorted(p for side in MINION_SIDE for p in (REPO / side).glob("*.py")),
    ids=_rel,
)
def test_minion_side_loader_modules_take_only_minion_layers(path):
    wrong = [
        f"line {line}: {name}"
        for line, name in _imports(path)
        if _layer(name) and _layer(name) not in MINION_LAYERS
    ]
    assert not wrong, f"{_rel(path)} runs on minions; it imports master-side code:\n" + "\n".join(
        wrong
    )


def test_the_import_check_sees_a_wrong_way_arrow(tmp_path, monkeypatch):
    """The checker itself: a conf module importing ops, a relative import and Salt."""
    fake = tmp_path / "salt_ext" / "lib" / "conf"
    fake.mkdir(parents=True)
    module = fake / "bad.py"
    module.write_text("import salt.utils\nfrom ..ops import rollout\nfrom . import model\n")
    monkeypatch.setattr(f"{__name__}.REPO", tmp_path)
    with pytest.raises(AssertionError) as err:
        test_lib_module_is_salt_free_and_imports_only_downward(module)
    assert "imports Salt" in str(err.value)
    assert "salt_ext.lib.ops.rollout" in str(err.value)
    assert "conf.model" not in str(err.value)


def _setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def test_version_has_one_source():
    version = _setup_cfg()["metadata"]["version"].strip()
    assert version in ("attr: salt_ext.__version__", salt_ext.__version__), version


def test_setup_cfg_lists_every_package():
    listed = set(_setup_cfg()["options"]["packages"].split())
    packages = {_dotted(p.parent) for p in (REPO / "salt_ext").rglob("__init__.py")} | {
        "salt_ext.runners"
    }
    assert packages - listed == set(), "packages missing from setup.cfg: a wheel would lack them"
    assert listed - packages == set()
