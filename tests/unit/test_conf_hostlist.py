"""salt_ext.lib.conf.hostlist: outputs observed from Slurm 22.05 ``scontrol`` and edge cases."""

import pytest

from salt_ext.lib.conf.hostlist import compress, count, expand

# (names, scontrol show hostlist) -- all observed with scontrol 22.05.8
COMPRESS = [
    ([], ""),
    (["n1"], "n1"),
    (["n3", "n1", "n2", "n1"], "n[3,1-2,1]"),
    (["n3", "n1", "n2", "n1", "a01", "a2", "x1y2", "x1y3"], "n[3,1-2,1],a[01,2],x1y[2-3]"),
    (["n01", "n1", "n001", "n2", "n02"], "n[01,1,001,2,02]"),
    (["n9", "n10", "n11", "n08"], "n[9-11,08]"),
    (["a", "b", "a1", "a"], "a,b,a1,a"),
    (["n1-2", "n1-3", "n1-4"], "n1-[2-4]"),
    (["n1", "n1"], "n[1,1]"),
    (["a", "a"], "a,a"),
    (["n001", "n002", "n2", "n3"], "n[001-002,2-3]"),
    (["n9", "n010"], "n[9,010]"),
    (["n10", "n011"], "n[10,011]"),
    (["n99", "n100", "n101"], "n[99-101]"),
    (["n099", "n100"], "n[099-100]"),
    (["n100", "n0101"], "n[100,0101]"),
    (["n00", "n01", "n1", "n2"], "n[00-01,1-2]"),
    (["x1y2", "x1y3", "x1y"], "x1y[2-3],x1y"),
    (["n1", "a", "n2"], "n1,a,n2"),
    (["n1", "n2", "a", "n3"], "n[1-2],a,n3"),
    (["1", "2", "3"], "[1-3]"),
    (["n3", "n2", "n1"], "n[3,2,1]"),
    (["rack1-n01", "rack1-n02", "rack2-n01"], "rack1-n[01-02],rack2-n01"),
    (
        ["n18446744073709551614", "n18446744073709551615"],
        "n[18446744073709551614-18446744073709551615]",
    ),
    (
        ["n000000000000000000000001", "n000000000000000000000002"],
        "n[000000000000000000000001-000000000000000000000002]",
    ),
    (["a" * 90 + "1", "a" * 90 + "2"], "a" * 90 + "[1-2]"),
]

# (expression, scontrol show hostnames) -- observed with scontrol 22.05.8
EXPAND = [
    ("", []),
    ("n1", ["n1"]),
    ("a[1-2]b[3-4]", ["a1b3", "a1b4", "a2b3", "a2b4"]),
    ("n[001-003,7,010-011]", ["n001", "n002", "n003", "n7", "n010", "n011"]),
    (
        "a[1-2]b[3-4]c[5-6]",
        ["a1b3c5", "a1b3c6", "a2b3c5", "a2b3c6", "a1b4c5", "a1b4c6", "a2b4c5", "a2b4c6"],
    ),
    ("a[1-2][3-4]", ["a13", "a14", "a23", "a24"]),
    ("rack[1-2]-n[01-02]", ["rack1-n01", "rack1-n02", "rack2-n01", "rack2-n02"]),
    ("n[01-2]x[1-2]", ["n01x1", "n01x2", "n02x1", "n02x2"]),
    ("n[1-3,2-4]", ["n1", "n2", "n3", "n2", "n3", "n4"]),
    ("n[1,1]", ["n1", "n1"]),
    ("[1-3]", ["1", "2", "3"]),
    ("n[01-3]", ["n01", "n02", "n03"]),
    ("n[1-03]", ["n1", "n2", "n3"]),
    ("n[001-3]", ["n001", "n002", "n003"]),
    ("n[0-0]", ["n0"]),
    ("n[1]", ["n1"]),
    ("n[1-]", ["n1"]),
    ("n[9-11]", ["n9", "n10", "n11"]),
    ("n1-2", ["n1-2"]),
    ("n1,,n2", ["n1", "n2"]),
    ("n1 n2\tn3", ["n1", "n2", "n3"]),
    ("n[1-2],,", ["n1", "n2"]),
    (",n1", ["n1"]),
    ("n[1-2]\tn3", ["n1", "n2", "n3"]),
    ("n[1-2],m,a,b", ["n1", "n2", "m", "a", "b"]),
    ("n[1-2]x[3-4],n[1-2]x[5-6]", ["n1x3", "n1x4", "n2x3", "n2x4", "n1x5", "n1x6", "n2x5", "n2x6"]),
    ("p%d[1-2]", ["p%d1", "p%d2"]),
    ("p%[08-10]", ["p%08", "p%09", "p%10"]),
]


@pytest.mark.parametrize(("names", "expected"), COMPRESS)
def test_compress(names, expected):
    assert compress(names) == expected


@pytest.mark.parametrize(("expr", "expected"), EXPAND)
def test_expand(expr, expected):
    assert expand(expr) == expected


@pytest.mark.parametrize(("names", "compressed"), [c for c in COMPRESS if c[0]])
def test_round_trip(names, compressed):
    assert expand(compressed) == names


def test_large_range():
    names = expand("n[1-65536]")
    assert len(names) == 65536
    assert names[0] == "n1" and names[-1] == "n65536"
    assert compress(names) == "n[1-65536]"
    assert len(expand("n[1-65536]x[1-2]")) == 131072


def test_compress_accepts_any_iterable():
    assert compress(f"n{i:03d}" for i in range(1, 11)) == "n[001-010]"


def test_numbers_beyond_unsigned_long_stay_exact():
    # deliberate difference: scontrol clamps these to 18446744073709551615
    # (and prints nothing for a range ending at that value)
    assert expand("n[18446744073709551614-18446744073709551615]") == [
        "n18446744073709551614",
        "n18446744073709551615",
    ]
    big = "n99999999999999999999999"
    assert compress([big]) == big
    assert expand(big) == [big]
    assert (
        compress([big, "n100000000000000000000000"])
        == "n[99999999999999999999999-100000000000000000000000]"
    )


@pytest.mark.parametrize(
    ("expr", "named"),
    [
        ("n[5-3]", "'5-3'"),
        ("n[1-2", "'n[1-2'"),
        ("n1-2]", "'n1-2]'"),
        ("a,n[[1-2],b", "'n[[1-2]'"),
        ("n]1[", "'n]1['"),
        ("n[1-2]]", "'n[1-2]]'"),
        ("n[1-2]x", "'x'"),
        ("a[1-2]b3", "'b3'"),
        ("n[1-2].foo,n3", "'.foo'"),
        ("n[]", "''"),
        ("n[a]", "'a'"),
        ("n[-1]", "'-1'"),
        ("n[1,,2]", "''"),
        ("n[1--2]", "'1--2'"),
        ("n[1-2-3]", "'1-2-3'"),
        ("n[+1-2]", "'+1-2'"),
        ("n[ 1-2]", "' 1-2'"),
        ("n[1-70000]", "'1-70000'"),
        ("n[1-40000,1-40000]x[1]", "[1-40000,1-40000]"),
    ],
)
def test_expand_invalid(expr, named):
    with pytest.raises(ValueError, match=named.replace("[", r"\[").replace("+", r"\+")):
        expand(expr)


@pytest.mark.parametrize("bad", ["", "n[1]", "a,b", "n 1", "n\t1", "x]"])
def test_compress_invalid_names(bad):
    with pytest.raises(ValueError, match="invalid host name"):
        compress(["n1", bad])


def test_compress_rejects_a_string():
    with pytest.raises(TypeError):
        compress("n1,n2")


def test_expression_expanding_to_billions_is_refused_not_built():
    with pytest.raises(ValueError, match="expands to 1600000000 hosts"):
        expand("n[1-40000]y[1-40000]x[1]")


@pytest.mark.parametrize("expr", [e for e, _ in EXPAND])
def test_count_is_the_length_of_expand(expr):
    assert count(expr) == len(expand(expr))


def test_count_sizes_a_product_without_building_it():
    # what the slurm.cmd gateway checks before scontrol expands a hostlist
    assert count("a[0-65535]b[0-9999]") == 655_360_000
    assert count("n[1-40000]y[1-40000]x[1],m1") == 1_600_000_001


@pytest.mark.parametrize(("expr", "named"), [("n[5-3]", "'5-3'"), ("n]1[", "'n]1['")])
def test_count_refuses_what_expand_refuses(expr, named):
    with pytest.raises(ValueError, match=named.replace("[", r"\[")):
        count(expr)
