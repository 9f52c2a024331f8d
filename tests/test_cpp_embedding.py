"""The C++ sample (exporters/cpp): built with CMake against the torch wheel's libtorch, run on small images,
compared with ONNX Runtime and PyTorch in Python."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from exporters.torchscript_export import export_torchscript
from rfr_deploy.models.factory import create_model, get_entry
from tests.model_helpers import perturbed_model, torch_output

CPP = Path(__file__).resolve().parent.parent / "exporters" / "cpp"


def torch_cmake_dir() -> Path | None:
    import torch.utils

    path = Path(torch.utils.cmake_prefix_path)
    return path if (path / "Torch" / "TorchConfig.cmake").is_file() else None


@pytest.fixture(scope="module")
def denoise_cpu(tmp_path_factory) -> Path:
    compiler = shutil.which("c++") or shutil.which("g++")
    if shutil.which("cmake") is None or compiler is None:
        pytest.skip("cmake and a C++ compiler are needed to build the C++ sample")
    prefix = torch_cmake_dir()
    if prefix is None:
        pytest.skip("this torch installation ships no libtorch CMake config (torch/share/cmake/Torch)")
    build = tmp_path_factory.mktemp("cpp_build")
    configure = [
        "cmake",
        "-S",
        str(CPP),
        "-B",
        str(build),
        f"-DCMAKE_PREFIX_PATH={prefix}",
        "-DCMAKE_BUILD_TYPE=Release",
    ]
    for command in (configure, ["cmake", "--build", str(build), "-j", "2"]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    binary = build / "rfr_denoise_cpu"
    assert binary.is_file()
    return binary


def tiny(name: str, channels: int):
    return perturbed_model(name, channels, depth=4, seed=3)


def write_pnm(path: Path, pixels: np.ndarray) -> None:
    h, w, c = pixels.shape
    header = f"{'P5' if c == 1 else 'P6'}\n# written by the test\n{w} {h}\n255\n".encode()
    path.write_bytes(header + pixels.astype(np.uint8).tobytes())


def run(binary: Path, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(binary), *map(str, args)], capture_output=True, text=True, timeout=120)


def test_ppm_through_a_noise_map_network_matches_onnx_runtime_and_pytorch(denoise_cpu, tmp_path, rng):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from exporters.onnx_export import export_onnx, onnx_metadata
    from exporters.onnx_runtime import OnnxDenoiser

    model = tiny("ffdnet", 3)
    sigma = 20 / 255
    export_torchscript(model, tmp_path / "m.pt", example=torch.rand(1, 3, 32, 32), sigma=sigma)
    export_onnx(
        model,
        tmp_path / "m.onnx",
        example=torch.rand(1, 3, 32, 32),
        sigma=sigma,
        metadata=onnx_metadata(model, sigma=sigma),
    )
    image = (rng.random((23, 31, 3)) * 255).round()
    write_pnm(tmp_path / "in.ppm", image)
    done = run(denoise_cpu, tmp_path / "m.pt", tmp_path / "in.ppm", tmp_path / "out.raw")
    assert done.returncode == 0, done.stderr
    got = np.fromfile(tmp_path / "out.raw", dtype=np.float32).reshape(23, 31, 3)
    pixels = (image / 255).astype(np.float32)
    assert np.abs(got - OnnxDenoiser(tmp_path / "m.onnx").denoise(pixels)).max() < 1e-3
    assert np.abs(got - torch_output(model, pixels, sigma)).max() < 1e-3
    # An explicit --sigma overrides the stored level, and 8-bit output is written as PPM.
    done = run(denoise_cpu, tmp_path / "m.pt", tmp_path / "in.ppm", tmp_path / "out.ppm", "--sigma", 40)
    assert done.returncode == 0, done.stderr
    data = (tmp_path / "out.ppm").read_bytes()
    assert data.startswith(b"P6\n31 23\n255\n")
    written = np.frombuffer(data[len(b"P6\n31 23\n255\n") :], dtype=np.uint8).reshape(23, 31, 3)
    expected = np.clip(np.round(torch_output(model, pixels, 40 / 255) * 255), 0, 255)
    assert np.abs(written.astype(int) - expected).max() <= 1


def test_raw_float_gray_image_matches_pytorch(denoise_cpu, tmp_path, rng):
    model = tiny("dncnn", 1)
    export_torchscript(model, tmp_path / "g.pt", example=torch.rand(1, 1, 24, 24))
    pixels = rng.random((17, 29, 1)).astype(np.float32)
    pixels.tofile(tmp_path / "in.f32")
    done = run(denoise_cpu, tmp_path / "g.pt", tmp_path / "in.f32", tmp_path / "out.f32", "--raw", "17x29x1")
    assert done.returncode == 0, done.stderr
    got = np.fromfile(tmp_path / "out.f32", dtype=np.float32).reshape(17, 29, 1)
    assert np.abs(got - torch_output(model, pixels, None)).max() < 1e-3


@pytest.mark.parametrize(("name", "size"), [("ffdnet", (1, 5)), ("ffdnet", (3, 1)), ("cbdnet", (2, 9))])
def test_an_image_too_small_to_reflect_runs_edge_padded_like_pytorch(denoise_cpu, tmp_path, rng, name, size):
    """The graph reflects its padding, which a side no longer than the padding cannot: the sample edge-pads
    such an image first (pad_multiple from the module's settings), as the PyTorch denoiser pads it."""
    if name == "cbdnet":  # pads to multiples of 4
        model = create_model(name, weights=None, channels=3, **get_entry(name).test_kwargs).eval()
    else:
        model = tiny(name, 3)
    export_torchscript(model, tmp_path / "m.pt", example=torch.rand(1, 3, 16, 16), sigma=0.1)
    h, w = size
    pixels = rng.random((h, w, 3)).astype(np.float32)
    pixels.tofile(tmp_path / "in.f32")
    done = run(
        denoise_cpu, tmp_path / "m.pt", tmp_path / "in.f32", tmp_path / "out.f32", "--raw", f"{h}x{w}x3"
    )
    assert done.returncode == 0, done.stderr
    got = np.fromfile(tmp_path / "out.f32", dtype=np.float32).reshape(h, w, 3)
    sigma = 0.1 if model.meta.noise_map else None
    assert np.abs(got - torch_output(model, pixels, sigma)).max() < 1e-3


def test_errors_are_reported_in_one_line(denoise_cpu, tmp_path, rng):
    model = tiny("dncnn", 1)
    export_torchscript(model, tmp_path / "g.pt", example=torch.rand(1, 1, 24, 24))
    write_pnm(tmp_path / "rgb.ppm", (rng.random((8, 8, 3)) * 255).round())
    done = run(denoise_cpu, tmp_path / "g.pt", tmp_path / "rgb.ppm", tmp_path / "out.pgm")
    assert done.returncode == 2 and done.stderr.strip() == (
        f"error: the model takes 1-channel images, {tmp_path / 'rgb.ppm'} has 3"
    )
    (tmp_path / "short.ppm").write_bytes(b"P6\n8 8\n255\n\x00\x01")
    done = run(denoise_cpu, tmp_path / "g.pt", tmp_path / "short.ppm", tmp_path / "out.pgm")
    assert done.returncode == 1 and "truncated" in done.stderr and not (tmp_path / "out.pgm").exists()
    (tmp_path / "photo.png").write_bytes(b"\x89PNG\r\n\x1a\n")  # a format the sample does not read
    done = run(denoise_cpu, tmp_path / "g.pt", tmp_path / "photo.png", tmp_path / "out.pgm")
    assert done.stderr.count("\n") == 1 and "photo.png: not a .pgm/.ppm/.pnm image" in done.stderr
    assert "(convert PNG or JPEG to PPM first)" in done.stderr


def test_options_may_come_anywhere_and_help_is_not_an_error(denoise_cpu, tmp_path, rng):
    model = tiny("dncnn", 1)
    export_torchscript(model, tmp_path / "g.pt", example=torch.rand(1, 1, 24, 24))
    write_pnm(tmp_path / "in.pgm", (rng.random((8, 9, 1)) * 255).round())
    done = run(denoise_cpu, "--threads", 1, tmp_path / "g.pt", tmp_path / "in.pgm", tmp_path / "out.pgm")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out.pgm").read_bytes().startswith(b"P5")
    done = run(denoise_cpu, "--help")
    assert (done.returncode, done.stderr) == (0, "") and done.stdout.startswith(
        "usage: rfr_denoise_cpu MODEL.pt"
    )
    done = run(denoise_cpu, tmp_path / "g.pt", tmp_path / "in.pgm")  # two operands
    assert done.returncode == 2 and done.stderr.startswith("usage: ")
