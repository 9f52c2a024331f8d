"""``rfr-deploy env``: this machine as rfr-deploy sees it, for bug reports and for knowing what runs here."""

from __future__ import annotations

import importlib
from typing import Any

import click

from rfr_deploy.adaptation.runners import default_update
from rfr_deploy.caches import cache_limit, format_bytes, list_entries
from rfr_deploy.cli.options import device_option, emit_json
from rfr_deploy.devices import describe_environment, resolve_device
from rfr_deploy.errors import ConfigError, first_line
from rfr_deploy.files import cache_folder
from rfr_deploy.optional import installed_version

PACKAGES = {
    "onnx": ("onnx",),
    "onnxscript": ("onnxscript",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu"),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13"),
    "polygraphy": ("polygraphy",),
    "ray": ("ray",),
    "matplotlib": ("matplotlib",),
}
"""The optional packages: module → the distributions that may provide it."""
IMPORTED = ("onnxruntime", "tensorrt")
"""Those imported to be described: ONNX Runtime for its execution providers, TensorRT because PyPI's
placeholder package installs without NVIDIA's libraries (the others are only looked up: importing Ray
alone takes seconds)."""


@click.command("env")
@device_option
@click.option("--json", "as_json", is_flag=True, help="Print a JSON document.")
def command(device: str, as_json: bool) -> None:
    """Show the versions, the device and what the default update runs on it, the optional packages
    and the cache folder (paste it into a bug report)."""
    report = collect(device)
    if as_json:
        emit_json(report)
        return
    env, update, cache = report["environment"], report["default_update"], report["cache"]
    patches = f" on {update['patch']}² patches" if update["patch"] else " on whole images"
    lines = [
        f"rfr-deploy {env['rfr_deploy']}, Python {env['python']}, {env['platform']}",
        f"torch {env['torch']} (CUDA {env['cuda'] or 'none'}, cuDNN {env['cudnn'] or 'none'}), "
        f"{env['cpu_threads']} threads of {env['cpu_count']} CPUs",
        f"device (--device {device}): {env['device']}",
        f"default update (--fast auto, --amp auto): {update['runner']}, {update['precision']}; "
        f"Gaussian noise: {update['steps']} updates{patches}",
        "packages: " + ", ".join(f"{name} {_shown(info)}" for name, info in report["packages"].items()),
        f"cache: {cache['folder']}, {format_bytes(cache['bytes'])}{_limit_shown(cache)}",
    ]
    click.echo("\n".join(lines))


def collect(device_name: str) -> dict[str, Any]:
    """The report ``rfr-deploy env`` prints."""
    device = resolve_device(device_name)
    return {
        "environment": describe_environment(device),
        "default_update": default_update(device),
        "packages": {name: package_info(name, dists) for name, dists in PACKAGES.items()},
        "cache": cache_info(),
    }


def cache_info() -> dict[str, Any]:
    """The cache folder, the bytes its entries hold and their limit. An invalid ``RFR_DEPLOY_CACHE_SIZE``,
    which every other command refuses, is reported here (``limit_error``, the limit None) rather than
    raised: people run ``env`` when something is wrong, and it should show everything it can."""
    info: dict[str, Any] = {"folder": str(cache_folder()), "bytes": sum(e.size for e in list_entries())}
    try:
        info["limit_bytes"] = cache_limit()
    except ConfigError as exc:
        info["limit_bytes"], info["limit_error"] = None, str(exc)
    return info


def package_info(module: str, distributions: tuple[str, ...]) -> dict[str, Any]:
    """The installed version of ``module`` (None if absent); for :data:`IMPORTED` modules, the import's
    failure where it fails, and ONNX Runtime's execution providers."""
    version = installed_version(*distributions)
    info: dict[str, Any] = {"version": version}
    if version is None or module not in IMPORTED:
        return info
    try:
        imported = importlib.import_module(module)
    except Exception as exc:  # e.g. the PyPI 'tensorrt' placeholder without NVIDIA's libraries
        info["error"] = first_line(exc, limit=120)
        return info
    if module == "onnxruntime":
        info["providers"] = list(imported.get_available_providers())
    return info


def _limit_shown(cache: dict[str, Any]) -> str:
    if "limit_error" in cache:
        return f"; its limit is not known: {cache['limit_error']}"
    return " of at most " + (
        "no limit" if cache["limit_bytes"] is None else format_bytes(cache["limit_bytes"])
    )


def _shown(info: dict[str, Any]) -> str:
    if info["version"] is None:
        return "-"
    if "error" in info:
        return f"{info['version']} (cannot be imported: {info['error']})"
    providers = info.get("providers")
    return f"{info['version']} ({', '.join(providers)})" if providers else info["version"]
