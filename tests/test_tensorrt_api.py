"""The TensorRT API as the code uses it, checked against TensorRT 10.16 and 11.1 themselves.

``../shared/tensorrt/<version>/`` holds TensorRT's public C++ headers and the pybind11
sources of its Python module (no libraries). The C++ sample is compiled against the
headers (with the CUDA runtime headers of the ``nvidia-cuda-runtime-cu12`` and
``nvidia-cuda-nvcc-cu12`` wheels) to an object file; linking needs libnvinfer and
libcudart, which no machine here has, so it is not linked or run. Every ``tensorrt``
attribute, enum value and method the Python exporters use is looked up among the
names the pybind sources bind. Its sidecar checks (sha256, strip-plan flag, version
match) need no TensorRT and are compiled and run.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from rfr_deploy.shared import ENV_VAR, shared_path

ROOT = Path(__file__).resolve().parent.parent
CPP = ROOT / "exporters" / "cpp"
VERSIONS = ("10.16", "11.1")


def tensorrt_source(version: str) -> Path:
    folder = shared_path("tensorrt", version)
    if not (folder / "include" / "NvInfer.h").is_file():
        pytest.skip(f"TensorRT {version} headers not found at {folder} (set {ENV_VAR})")
    return folder


def compiler() -> str:
    found = shutil.which("g++")
    if found is None:
        pytest.skip("g++ is needed to compile the C++ sample")
    return found


def cuda_include_dirs() -> list[Path]:
    """cuda_runtime_api.h (nvidia-cuda-runtime-cu12) and its crt/ headers (nvidia-cuda-nvcc-cu12)."""
    folders = []
    for package in ("nvidia.cuda_runtime", "nvidia.cuda_nvcc"):
        try:
            spec = importlib.util.find_spec(package)
        except ModuleNotFoundError:
            spec = None
        if spec is None or not spec.submodule_search_locations:
            pytest.skip(f"{package.replace('.', '-').replace('_', '-')}-cu12 (CUDA headers) is not installed")
        folders.append(Path(next(iter(spec.submodule_search_locations))) / "include")
    return folders


# --------------------------------------------------------------------------- the C++ sample


@pytest.mark.parametrize("version", VERSIONS)
def test_the_tensorrt_sample_compiles_against_tensorrt_headers(tmp_path, version):
    """Compiles only: linking needs libnvinfer and libcudart, which are not available here."""
    headers = tensorrt_source(version) / "include"
    system = [f"-isystem{folder}" for folder in (headers, *cuda_include_dirs())]
    target = tmp_path / "denoise_trt.o"
    command = [compiler(), "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{CPP}", *system, "-c"]
    done = subprocess.run(
        [*command, str(CPP / "denoise_trt.cpp"), "-o", str(target)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    if shutil.which("nm") is None:
        return
    symbols = subprocess.run(["nm", "-u", str(target)], capture_output=True, text=True, check=True).stdout
    undefined = {line.split()[-1] for line in symbols.splitlines() if line.strip()}
    # TensorRT is reached through its two extern "C" entry points (global scope, not nvinfer1::).
    assert {"createInferRuntime_INTERNAL", "getInferLibVersion"} <= undefined
    assert not any(
        "nvinfer1" in name or "getInferLibVersion" in name and name != "getInferLibVersion"
        for name in undefined
    )


@pytest.fixture(scope="module")
def check_plan_binary(tmp_path_factory) -> Path:
    """A tiny driver around sidecar_check.cpp: check_plan(sidecar, plan, version) and sha256 of a file."""
    build = tmp_path_factory.mktemp("sidecar_check")
    driver = build / "driver.cpp"
    driver.write_text(
        """#include <fstream>
#include <iostream>
#include <iterator>
#include <stdexcept>
#include "sidecar_check.h"
static std::string slurp(const char* path) {
    std::ifstream in(path, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}
int main(int argc, char** argv) {
    if (argc == 2) { std::cout << rfr::sha256_hex(slurp(argv[1])) << "\\n"; return 0; }
    try { rfr::check_plan(slurp(argv[1]), slurp(argv[2]), argv[3]); }
    catch (const std::exception& e) { std::cerr << "error: " << e.what() << "\\n"; return 1; }
    return 0;
}
"""
    )
    binary = build / "check_plan"
    command = [compiler(), "-std=c++17", "-Wall", "-Wextra", "-Werror", f"-I{CPP}"]
    sources = [str(CPP / "sidecar_check.cpp"), str(driver)]
    done = subprocess.run(
        [*command, *sources, "-o", str(binary)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return binary


@pytest.mark.parametrize("size", [0, 3, 55, 56, 63, 64, 65, 119, 120, 1000])
def test_the_cpp_sha256_matches_hashlib(check_plan_binary, tmp_path, size):
    data = bytes((i * 37 + 11) % 256 for i in range(size))
    path = tmp_path / "plan"
    path.write_bytes(data)
    done = subprocess.run([str(check_plan_binary), str(path)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == hashlib.sha256(data).hexdigest()


def write_engine(tmp_path, plan: bytes, built: str, **fields) -> tuple[Path, Path]:
    """An engine file and a sidecar as json.dumps(indent=2, sort_keys=True) writes it (EngineSidecar.write)."""
    engine = tmp_path / "a.engine"
    engine.write_bytes(plan)
    sidecar = {
        "runtime": {"tensorrt_version": built, "gpu_name": "NVIDIA L4", "compute_capability": "8.9"},
        "engine_sha256": hashlib.sha256(plan).hexdigest(),
        "base_engine_sha256": "f" * 64,
        "strip_plan": False,
        **fields,
    }
    side = tmp_path / "a.engine.json"
    side.write_text(json.dumps(sidecar, indent=2, sort_keys=True))
    return side, engine


@pytest.mark.parametrize(
    "built, here, plan_edit, fields, error",
    [
        ("10.1.1.7", "10.1.1", None, {}, None),
        ("10.1.1", "10.1.1", None, {}, None),
        (
            "10.1.10.2",
            "10.1.1",
            None,
            {},
            "built with TensorRT 10.1.10.2, this program uses 10.1.1",
        ),  # no prefix match
        ("10.1.1.7", "10.1.10", None, {}, "built with TensorRT 10.1.1.7, this program uses 10.1.10"),
        ("10.1.1.7", "10.1.1", None, {"strip_plan": True}, "weight-stripped engine"),
        ("10.1.1.7", "10.1.1", b"another plan", {}, "sha256 differs"),
    ],
)
def test_the_cpp_sample_refuses_what_its_sidecar_does_not_describe(
    check_plan_binary, tmp_path, built, here, plan_edit, fields, error
):
    side, engine = write_engine(tmp_path, b"serialized plan", built, **fields)
    if plan_edit is not None:
        engine.write_bytes(plan_edit)
    done = subprocess.run(
        [str(check_plan_binary), str(side), str(engine), here], capture_output=True, text=True
    )
    if error is None:
        assert done.returncode == 0, done.stderr
    else:
        assert done.returncode == 1 and error in done.stderr and done.stderr.count("\n") == 1, done.stderr


# --------------------------------------------------------------------------- names of the Python module

TRT_OBJECTS = {
    "tensorrt_runner.py": {
        "engine": "ICudaEngine",
        "self.engine": "ICudaEngine",
        "context": "IExecutionContext",
        "self.context": "IExecutionContext",
    },
    "tensorrt_refit.py": {
        "engine": "ICudaEngine",
        "refitter": "Refitter",
        "parser_refitter": "OnnxParserRefitter",
        "config": "ISerializationConfig",
    },
    "tensorrt_engine.py": {"engine": "ICudaEngine", "refitter": "Refitter"},
}
"""Per module: the variables that hold TensorRT objects, and the Python class TensorRT binds them as."""
PYTHON_ONLY = {"__version__", "nptype"}
"""Defined by the tensorrt package's Python code (``tensorrt/__init__.py``), not by the pybind sources."""


def used_names() -> set[tuple[str, str]]:
    """(owner, name) pairs: owner 'tensorrt' for module attributes, an enum or class name for the rest."""
    used: set[tuple[str, str]] = set()
    for module, objects in TRT_OBJECTS.items():
        tree = ast.parse((ROOT / "exporters" / module).read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            owner = ast.unparse(node.value)
            if isinstance(node.value, ast.Call) and ast.unparse(node.value.func).startswith("trt."):
                used.add(
                    (ast.unparse(node.value.func)[4:], node.attr)
                )  # trt.Runtime(...).deserialize_cuda_engine
            elif owner == "trt":
                used.add(("tensorrt", node.attr))
            elif owner.startswith("trt.") and owner.count(".") == 1:
                used.add((owner[4:], node.attr))  # trt.SerializationFlag.INCLUDE_REFIT, trt.Logger.WARNING
            elif owner in objects:
                used.add((objects[owner], node.attr))
    return used


BINDING = re.compile(r"py::(class_|enum_)<([^;{(]*?)>\s*(\w+)?\s*[({]\s*(\w+),\s*\"(\w+)\"")
MEMBER = re.compile(r"\.(?:def|def_property|def_property_readonly|def_readwrite|value)\(\s*\"(\w+)\"")


def bound_names(version: str) -> dict[str, set[str]]:
    """Python name of every class/enum bound in the pybind sources → its methods, properties and values (with
    those of its bound base classes, and enum values exported into it); 'tensorrt' → the module's names."""
    src = tensorrt_source(version) / "python" / "src"
    sources = "\n".join(p.read_text() for p in sorted(src.rglob("*.cpp")))
    heads = list(BINDING.finditer(sources))
    python_name = {m[2].split(",")[0].strip(): m[5] for m in heads}  # C++ type → Python name
    variable = {m[3]: m[5] for m in heads if m[3]}  # py::class_<...> var{m, "Name"} → Name
    members: dict[str, set[str]] = {}
    bases: dict[str, list[str]] = {}
    for head, following in zip(heads, [*heads[1:], None], strict=True):
        block = sources[head.end() : following.start() if following else len(sources)]
        names = set(MEMBER.findall(block))
        members.setdefault(head[5], set()).update(names)
        extra = [t.strip() for t in head[2].split(",")[1:]]
        bases[head[5]] = [python_name[t] for t in extra if t in python_name]
        if head[1] == "enum_" and ".export_values()" in block and head[4] in variable:
            members.setdefault(variable[head[4]], set()).update(names)  # trt.ILogger.WARNING
    bound = {name: set(names) for name, names in members.items()}
    for name in bound:
        stack = list(bases.get(name, []))
        while stack:
            base = stack.pop()
            bound[name] |= members.get(base, set())
            stack.extend(bases.get(base, []))
    bound["tensorrt"] = {m[5] for m in heads if m[4] == "m"} | set(
        re.findall(r"\bm\.(?:def|attr)\(\s*\"(\w+)\"", sources)  # m.attr("bfloat16") = DataType::kBF16
    )
    return bound


def test_the_name_collector_sees_the_calls_it_must_check():
    used = used_names()
    expected = {
        ("IExecutionContext", "execute_async_v3"),
        ("IExecutionContext", "set_tensor_address"),
        ("Refitter", "set_named_weights"),
        ("OnnxParserRefitter", "refit_from_file"),
        ("ICudaEngine", "serialize_with_config"),
        ("SerializationFlag", "INCLUDE_REFIT"),
        ("Runtime", "deserialize_cuda_engine"),
        ("tensorrt", "Refitter"),
    }
    assert expected <= used, expected - used


@pytest.mark.parametrize("version", VERSIONS)
def test_every_tensorrt_name_the_exporters_use_is_bound(version):
    bound = bound_names(version)
    missing = sorted(
        f"{owner}.{name}"
        for owner, name in used_names()
        if not (owner == "tensorrt" and name in PYTHON_ONLY) and name not in bound.get(owner, set())
    )
    assert not missing, f"not in TensorRT {version}'s Python bindings: {', '.join(missing)}"
