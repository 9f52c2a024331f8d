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
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16, raising=False)
    assert devices.cpu_bf16_units() == units
    assert devices.cpu_native_bf16() is (units is not None)
    described = devices.describe_device(torch.device("cpu"))
    assert described.startswith(f"CPU ({devices.cpu_model()}, {units or 'no native bf16'}, ")


def test_cpu_model_is_a_name_not_empty():
    assert devices.cpu_model().strip()
