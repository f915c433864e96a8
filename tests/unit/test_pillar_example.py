import pathlib

import pytest
import yaml

from salt_ext.lib.node import settings

EXAMPLE = pathlib.Path(__file__).resolve().parents[2] / "pillar" / "slurm.sls.example"


@pytest.fixture(scope="module")
def example():
    return yaml.safe_load(EXAMPLE.read_text())


def _key_paths(mapping, prefix="slurm"):
    for key, value in mapping.items():
        path = f"{prefix}:{key}"
        yield path
        if isinstance(value, dict):
            yield from _key_paths(value, path)


def test_example_has_only_the_slurm_root_key(example):
    assert list(example) == ["slurm"]


def test_example_validates(example):
    settings.validate(example["slurm"])


def test_example_has_every_top_level_default_key(example):
    assert set(settings.DEFAULTS) <= set(example["slurm"])


def test_example_has_every_nested_default_key(example):
    missing = set(_key_paths(settings.DEFAULTS)) - set(_key_paths(example["slurm"]))
    assert not missing


def test_example_has_no_key_settings_does_not_know(example):
    unknown = set(_key_paths(example["slurm"])) - set(_key_paths(settings.DEFAULTS))
    assert not unknown


def test_example_values_are_the_documented_defaults(example):
    # the comments state each default; the values must agree with settings.DEFAULTS
    cfg = settings.validate(example["slurm"])
    assert cfg == settings.validate({"controller": example["slurm"]["controller"]})


def _commented_example(key):
    """The commented-out example under ``slurm:accounting:<key>: {}``, as YAML."""
    lines = EXAMPLE.read_text().splitlines()
    start = lines.index(f"    {key}: {{}}") + 1
    block = []
    for line in lines[start:]:
        if not line.startswith("    #   "):
            break
        block.append(line[len("    #") :])
    return yaml.safe_load("\n".join(block))


def test_accounting_examples_in_the_comments_validate():
    from salt_ext.lib.accounting import pillar as accounting_pillar  # noqa: PLC0415

    example = {key: _commented_example(key) for key in ("qos", "accounts", "users")}
    assert set(example["users"]) == {"alice", "bob"}
    wanted = accounting_pillar.validate(example)
    assert wanted["accounts"]["physics"]["parent"] == "science"
    assert wanted["qos"]["single"]["MaxWall"] == 2880
