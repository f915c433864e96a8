import pytest

from salt_ext.lib.node import munge


def test_parse_unmunge_success():
    out = (
        "STATUS:          Success (0)\n"
        "ENCODE_HOST:     n1 (10.77.0.11)\n"
        "UID:             root (0)\n"
        "GID:             root (0)\n"
        "\n"
        "hello"
    )
    meta = munge.parse_unmunge(out)
    assert meta["ok"] is True
    assert meta["encode_host"] == "n1 (10.77.0.11)"
    assert meta["uid"] == "root (0)"
    assert meta["payload"] == "hello"


def test_parse_unmunge_invalid_credential_is_not_ok_and_says_why():
    meta = munge.parse_unmunge(
        "STATUS:          Invalid credential (15)\n\n",
        "unmunge: Error: Invalid credential",
        15,
    )
    assert meta["ok"] is False
    assert "Invalid credential" in meta["error"]


def test_key_hash_is_sha256_of_content_and_missing_key_is_an_error(tmp_path):
    key = tmp_path / "munge.key"
    key.write_bytes(b"x" * 128)
    assert munge.key_hash(str(key)) == (
        "sha256:" + __import__("hashlib").sha256(b"x" * 128).hexdigest()
    )
    with pytest.raises(FileNotFoundError):
        munge.key_hash(str(tmp_path / "absent"))


def test_new_key_is_random_and_long_enough():
    first, second = munge.new_key(), munge.new_key()
    assert len(first) >= 32 and first != second
