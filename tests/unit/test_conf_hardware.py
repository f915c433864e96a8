import pytest

from salt_ext.lib.conf import hardware

SLURMD_C = (
    "NodeName=n7 CPUs=64 Boards=1 SocketsPerBoard=2 CoresPerSocket=16 ThreadsPerCore=2 "
    "RealMemory=257843\nUpTime=12-03:04:05\n"
)

SMI_4_A100 = "\n".join(
    f"GPU {i}: NVIDIA A100-SXM4-40GB (UUID: GPU-5b2f{i}c3e-aaaa-bbbb-cccc-0123456789ab)"
    for i in range(4)
)


def test_slurmd_c_gives_topology_and_memory_as_numbers():
    assert hardware.parse_slurmd_c(SLURMD_C) == {
        "NodeName": "n7",
        "CPUs": 64,
        "Boards": 1,
        "SocketsPerBoard": 2,
        "CoresPerSocket": 16,
        "ThreadsPerCore": 2,
        "RealMemory": 257843,
    }


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no NodeName= line"),
        ("slurmd: fatal: something\n", "no NodeName= line"),
        ("NodeName=n1 CPUs=two RealMemory=1\n", "CPUs='two' is not a number"),
        ("NodeName=n1 Boards=1\n", "no CPUs/RealMemory"),
        ("NodeName=n1 CPUs=2 junk RealMemory=5\n", "unexpected token 'junk'"),
    ],
)
def test_unreadable_slurmd_c_is_an_error_naming_the_problem(text, message):
    with pytest.raises(hardware.HardwareError, match=message):
        hardware.parse_slurmd_c(text)


def test_grains_fallback_has_cpus_and_memory_only():
    grains = {"host": "n2", "num_cpus": 8, "mem_total": 15890, "os": "Debian"}
    assert hardware.from_grains(grains) == {"NodeName": "n2", "CPUs": 8, "RealMemory": 15890}
    with pytest.raises(hardware.HardwareError):
        hardware.from_grains({"host": "n2"})


@pytest.mark.parametrize(
    "model, expected",
    [
        ("NVIDIA A100-SXM4-40GB", "a100"),
        ("NVIDIA H100 80GB HBM3", "h100"),
        ("Tesla V100-PCIE-16GB", "v100"),
        ("NVIDIA GeForce RTX 3090", "rtx3090"),
        ("Quadro RTX 6000", "rtx6000"),
        ("NVIDIA L40S", "l40s"),
        ("NVIDIA", None),
    ],
)
def test_gpu_type_is_a_short_lowercase_model(model, expected):
    assert hardware.gpu_type(model) == expected


def test_nvidia_smi_list_is_parsed_with_indexes():
    gpus = hardware.parse_nvidia_smi_l(SMI_4_A100 + "\nsome warning line\n")
    assert [g["index"] for g in gpus] == [0, 1, 2, 3]
    assert {g["model"] for g in gpus} == {"NVIDIA A100-SXM4-40GB"}


def test_gpus_from_nvidia_smi_with_device_files():
    files = [f"/dev/nvidia{i}" for i in range(4)]
    assert hardware.gpus(SMI_4_A100, files, None) == {
        "count": 4,
        "type": "a100",
        "files": files,
        "autodetect": None,
    }


def test_gpus_from_device_files_only_have_no_type():
    files = ["/dev/nvidia0", "/dev/nvidia1"]
    assert hardware.gpus(None, files, None) == {
        "count": 2,
        "type": None,
        "files": files,
        "autodetect": None,
    }


def test_mixed_models_have_no_single_type():
    smi = "GPU 0: NVIDIA A100-SXM4-40GB (UUID: x)\nGPU 1: Tesla V100-PCIE-16GB (UUID: y)\n"
    assert hardware.gpus(smi, [], "nvml")["type"] is None
    assert hardware.gpus(smi, [], "nvml")["files"] == ["/dev/nvidia0", "/dev/nvidia1"]


def test_no_gpu_is_count_zero():
    assert hardware.gpus(None, [], "nvml") == {
        "count": 0,
        "type": None,
        "files": [],
        "autodetect": None,
    }


def test_device_files_skip_control_devices_and_sort_numerically(tmp_path):
    for name in ("nvidia10", "nvidia2", "nvidiactl", "nvidia-uvm", "nvidia0", "sda"):
        (tmp_path / name).touch()
    assert hardware.nvidia_device_files(str(tmp_path)) == [
        str(tmp_path / "nvidia0"),
        str(tmp_path / "nvidia2"),
        str(tmp_path / "nvidia10"),
    ]
    assert hardware.nvidia_device_files(str(tmp_path / "missing")) == []


def test_autodetect_needs_the_nvml_plugin(tmp_path):
    assert hardware.autodetect_plugin([str(tmp_path)]) is None
    (tmp_path / "gpu_nvml.so").touch()
    assert hardware.autodetect_plugin(["/nonexistent", str(tmp_path)]) == "nvml"
