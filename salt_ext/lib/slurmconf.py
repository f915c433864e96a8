"""Reading slurm.conf values (keys are case-insensitive in Slurm)."""


def read_values(path):
    """``{lower-case key: value}`` of the simple ``Key=Value`` lines of a slurm.conf.

    NodeName/PartitionName lines (several keys on one line) are skipped; ``Include`` files
    are not followed. Missing file -> ``{}``.
    """
    values = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            lines = handle.readlines()
    except FileNotFoundError:
        return values
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line or "=" not in line:
            continue
        key, _, value = line.partition("=")
        key = key.strip().lower()
        if key in ("nodename", "partitionname", "nodeset", "frontendname", "downnodes"):
            continue
        values[key] = value.strip()
    return values
