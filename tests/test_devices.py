"""What a results file says about the CPU: its model and its bf16 units."""

from __future__ import annotations

import pytest
import torch

from rfr_deploy import devices


@pytest.mark.parametrize(
    ("amx", "avx512_bf16", "units"),
    [(True, True, "AMX"), (False, True, "AVX512-BF16"), (False, False, None)],
)
def test_cpu_bf16_units_name_the_fastest_bf16_hardware(monkeypatch, amx, avx512_bf16, units):
    uncap_onednn(monkeypatch)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert devices.cpu_bf16_units() == units
    assert devices.cpu_native_bf16() is (units is not None)
    described = devices.describe_device(torch.device("cpu"))
    assert described.startswith(f"CPU ({devices.cpu_model()}, {units or 'no native bf16'}, ")


def uncap_onednn(monkeypatch):
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize(
    ("name", "value", "units"),
    [
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16", "AVX512-BF16"),
        ("DNNL_MAX_CPU_ISA", "avx10_1_512", "AVX512-BF16"),
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_VNNI", None),
        ("ONEDNN_MAX_CPU_ISA", "AVX2", None),
        ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX", "AMX"),
        ("ONEDNN_MAX_CPU_ISA", "DEFAULT", "AMX"),
    ],
)
def test_onednn_isa_cap_limits_the_bf16_units_and_is_named(monkeypatch, name, value, units):
    uncap_onednn(monkeypatch)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setenv(name, value)
    assert devices.cpu_bf16_units() == units
    assert f"{units or 'no native bf16'} under {name}={value}, " in devices.describe_device(
        torch.device("cpu")
    )


def test_onednn_cap_takes_the_onednn_name_first_and_never_adds_units(monkeypatch):
    uncap_onednn(monkeypatch)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    monkeypatch.setenv("DNNL_MAX_CPU_ISA", "DEFAULT")
    assert devices.onednn_isa_setting() == ("ONEDNN_MAX_CPU_ISA", "AVX512_CORE")
    assert devices.cpu_bf16_units() is None
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_AMX")
    assert devices.cpu_bf16_units() == "AVX512-BF16"


def test_read_cpuinfo_takes_the_first_value_of_a_field(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text(
        "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 9R14\n\nvendor_id\t: x\n"
    )
    assert devices.read_cpuinfo("vendor_id", str(info)) == "AuthenticAMD"
    assert devices.read_cpuinfo("model name", str(info)) == "AMD EPYC 9R14"
    assert devices.read_cpuinfo("flags", str(info)) == ""
    assert devices.read_cpuinfo("vendor_id", str(tmp_path / "missing")) == ""


def test_cpu_vendor_falls_back_on_the_platform_processor_string(monkeypatch):
    monkeypatch.setattr(devices, "read_cpuinfo", lambda field: "")
    monkeypatch.setattr(
        devices.platform, "processor", lambda: "AMD64 Family 25 Model 17 Stepping 1, AuthenticAMD"
    )
    assert devices.cpu_vendor() == "AuthenticAMD"
    monkeypatch.setattr(devices.platform, "processor", lambda: "arm")
    assert devices.cpu_vendor() == ""


def test_cpu_model_is_a_name_not_empty():
    assert devices.cpu_model().strip()


@pytest.mark.parametrize(
    ("avx512", "cap", "usable"),
    [
        (True, None, True),
        (True, "AVX2", False),  # oneDNN held below AVX-512
        (True, "avx512_core", True),
        (True, "AVX512_CORE_AMX", True),
        (False, None, False),  # an AVX2-only CPU such as AMD's Zen 2
        (False, "DEFAULT", False),
    ],
)
def test_cpu_avx512_needs_the_instructions_and_no_onednn_cap_below_them(monkeypatch, avx512, cap, usable):
    uncap_onednn(monkeypatch)
    monkeypatch.setattr(torch.cpu, "_is_avx512_supported", lambda: avx512, raising=False)
    if cap:
        monkeypatch.setenv("DNNL_MAX_CPU_ISA", cap)
    assert devices.cpu_avx512() is usable
