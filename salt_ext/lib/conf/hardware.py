"""A node's hardware as slurmd sees it, for the NodeName lines ``slurm.render_conf`` writes.

``slurmd -C`` is the source of truth: it prints the values slurmd registers with, so a
conf rendered from it never drains a node for "Low socket*core*thread count" or "Low
RealMemory" (the reserve in conf.generate covers memory that varies between boots). Before slurmd
is installed, grains give CPUs and memory only. GPUs come from ``nvidia-smi -L`` or, without
the driver tools, from the ``/dev/nvidiaN`` device files.
"""

import os
import re

# the keys of `slurmd -C`'s first line that describe hardware, in slurm.conf's order
TOPOLOGY_KEYS = (
    "CPUs",
    "Boards",
    "SocketsPerBoard",
    "CoresPerSocket",
    "ThreadsPerCore",
    "RealMemory",
)
_VENDOR_WORDS = {"nvidia", "tesla", "geforce", "quadro"}
_NVIDIA_DEV = re.compile(r"^nvidia(\d+)$")


class HardwareError(ValueError):
    """Output we could not read."""


def parse_slurmd_c(text):
    """``slurmd -C`` output -> ``{"NodeName": ..., "CPUs": int, ...}`` (UpTime dropped)."""
    first = next((line for line in text.splitlines() if line.startswith("NodeName=")), None)
    if first is None:
        raise HardwareError(f"no NodeName= line in slurmd -C output: {text.strip()[:200]!r}")
    values = {}
    for token in first.split():
        key, sep, value = token.partition("=")
        if not sep:
            raise HardwareError(f"unexpected token {token!r} in slurmd -C output")
        values[key] = value
    result = {"NodeName": values["NodeName"]}
    for key in TOPOLOGY_KEYS:
        if key in values:
            try:
                result[key] = int(values[key])
            except ValueError:
                raise HardwareError(f"slurmd -C: {key}={values[key]!r} is not a number") from None
    if "CPUs" not in result or "RealMemory" not in result:
        raise HardwareError(f"slurmd -C printed no CPUs/RealMemory: {first!r}")
    return result


def from_grains(grains):
    """CPUs and memory from grains, for a machine without slurmd yet (no topology)."""
    try:
        return {
            "NodeName": grains["host"],
            "CPUs": int(grains["num_cpus"]),
            "RealMemory": int(grains["mem_total"]),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise HardwareError(f"grains lack host/num_cpus/mem_total: {err}") from None


def gpu_type(model):
    """Short GRES type from a GPU model name: "NVIDIA A100-SXM4-40GB" -> "a100",
    "NVIDIA GeForce RTX 3090" -> "rtx3090", "Tesla V100-PCIE-16GB" -> "v100"."""
    words = [w for w in re.split(r"[\s_]+", model.strip()) if w]
    words = [w for w in words if w.lower() not in _VENDOR_WORDS]
    if not words:
        return None
    first = words[0].split("-")[0].lower()
    if first.isalpha() and len(words) > 1:  # "RTX 3090", "A 40"
        first += words[1].split("-")[0].lower()
    cleaned = re.sub(r"[^a-z0-9]", "", first)
    return cleaned or None


def parse_nvidia_smi_l(text):
    """``nvidia-smi -L`` -> ``[{"index": 0, "model": "NVIDIA A100-SXM4-40GB"}, ...]``."""
    gpus = []
    for line in text.splitlines():
        match = re.match(r"^GPU (\d+): (.+?)(?: \(UUID: [^)]*\))?\s*$", line.strip())
        if match:
            gpus.append({"index": int(match.group(1)), "model": match.group(2).strip()})
    return gpus


def nvidia_device_files(dev_dir="/dev"):
    """``/dev/nvidiaN`` files, sorted by N (nvidiactl / nvidia-uvm are not GPUs)."""
    try:
        names = os.listdir(dev_dir)
    except OSError:
        return []
    found = sorted(
        (int(m.group(1)), name) for name in names if (m := _NVIDIA_DEV.match(name)) is not None
    )
    return [os.path.join(dev_dir, name) for _, name in found]


def gpus(smi_output, device_files, autodetect):
    """GPU facts for the GRES line: ``{"count", "type", "files", "autodetect"}``.

    ``smi_output`` is ``nvidia-smi -L``'s output or None; ``autodetect`` is the name of
    a GPU autodetection plugin the node's Slurm has (``nvml``) or None. A mixed-model node
    reports the first model as its type only if all GPUs share it; otherwise no type.
    """
    listed = parse_nvidia_smi_l(smi_output) if smi_output else []
    count = len(listed) or len(device_files)
    if not count:
        return {"count": 0, "type": None, "files": [], "autodetect": None}
    types = {gpu_type(g["model"]) for g in listed}
    files = device_files[:count] if len(device_files) >= count else []
    if not files and listed:
        files = [f"/dev/nvidia{g['index']}" for g in listed]
    return {
        "count": count,
        "type": types.pop() if len(types) == 1 else None,
        "files": files,
        "autodetect": autodetect,
    }


def autodetect_plugin(plugin_dirs):
    """``nvml`` when the node's Slurm ships the NVML GPU plugin, else None."""
    for directory in plugin_dirs:
        if os.path.exists(os.path.join(directory, "gpu_nvml.so")):
            return "nvml"
    return None


PLUGIN_DIRS = (
    "/usr/lib/x86_64-linux-gnu/slurm-wlm",
    "/usr/lib/aarch64-linux-gnu/slurm-wlm",
    "/usr/lib64/slurm",
    "/usr/lib/slurm",
)
