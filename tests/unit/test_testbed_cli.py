"""``python -m tests.testbed … --name``: acting on a named bed, never on the demo instead."""

import json

import pytest

from tests.testbed import __main__ as cli


def test_default_is_the_demo_bed():
    bed = cli.bed_named(cli.DEMO["name"])
    assert (bed.name, bed.subnet) == ("sxdemo", "10.78.0")


def test_a_named_bed_is_read_from_its_state_file(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "STATE_ROOT", tmp_path)
    (tmp_path / "sxq").mkdir()
    state = {"master_ip": "10.81.0.1", "nodes": {"ctl": {}, "a1": {}}}
    (tmp_path / "sxq" / "bed.json").write_text(json.dumps(state))
    bed = cli.bed_named("sxq")
    assert (bed.name, bed.subnet, sorted(bed.nodes)) == ("sxq", "10.81.0", ["a1", "ctl"])
    assert bed.nodes["a1"].ip.startswith("10.81.0.")


def test_a_bed_without_state_is_still_named(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "STATE_ROOT", tmp_path)
    assert cli.bed_named("sxgone").name == "sxgone"


def test_up_of_another_bed_is_refused():
    with pytest.raises(SystemExit):
        cli.main(["up", "--name", "sxq"])
