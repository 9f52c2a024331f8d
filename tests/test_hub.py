"""Named official weights: downloaded once from a local HTTP server on 127.0.0.1, verified by a tensor hash."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import shutil
import threading

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from rfr_deploy.cli import main
from rfr_deploy.errors import WeightsError
from rfr_deploy.images import write_image
from rfr_deploy.models import hub
from rfr_deploy.models.factory import create_model
from rfr_deploy.models.registry import WeightsMeta
from rfr_deploy.models.weights import read_state_dict


@pytest.fixture
def served(tmp_path):
    """A folder served over HTTP on 127.0.0.1 (base URL, folder, stop())."""
    folder = tmp_path / "served"
    folder.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stop():
        server.shutdown()
        server.server_close()

    yield f"http://127.0.0.1:{server.server_address[1]}", folder, stop
    if thread.is_alive():
        stop()


@pytest.fixture
def tiny_release(served, tmp_path, monkeypatch, tiny_dncnn):
    """A tiny DnCNN served as ``tiny.pth`` and registered as ``kair:tiny``; torch's hub cache in tmp_path."""
    base, folder, stop = served
    model = tiny_dncnn(3)
    state = model.net.state_dict()
    torch.save(state, folder / "tiny.pth")
    meta = WeightsMeta(arch="dncnn", channels=3, arch_kwargs={"depth": 3, "features": 8}, source="tiny.pth")
    entry = hub.NamedWeights(
        "kair:tiny", f"{base}/tiny.pth", hub.tensors_sha256(state), meta, "tiny test net"
    )
    monkeypatch.setitem(hub.NAMED_WEIGHTS, entry.name, entry)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    return entry, model, stop


def cache_files(entry) -> list[str]:
    folder = hub.cache_path(entry).parent
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


def same_output(a, b) -> bool:
    x = torch.rand(1, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return torch.allclose(a.eval()(x), b.eval()(x), atol=1e-6)


def test_named_weights_download_once_verify_and_carry_their_metadata(tiny_release):
    entry, model, stop = tiny_release
    loaded = create_model("dncnn", weights="kair:tiny", channels=3)
    assert cache_files(entry) == ["tiny.pth"] and same_output(model, loaded)
    assert loaded.meta == entry.meta
    stop()  # the cached, verified copy serves from now on
    assert same_output(model, create_model("dncnn", weights="kair:tiny"))


def test_a_hash_mismatch_names_url_and_cache_path_and_leaves_nothing(tiny_release, monkeypatch):
    entry, _, _ = tiny_release
    wrong = dataclasses.replace(entry, tensors_sha256="0" * 64)
    monkeypatch.setitem(hub.NAMED_WEIGHTS, entry.name, wrong)
    with pytest.raises(WeightsError) as info:
        create_model("dncnn", weights="kair:tiny")
    message = str(info.value)
    assert entry.url in message and str(hub.cache_path(entry)) in message and "\n" not in message
    assert cache_files(entry) == []


def test_offline_names_url_and_cache_path_and_leaves_nothing(tiny_release):
    entry, _, stop = tiny_release
    stop()
    with pytest.raises(WeightsError, match="cannot download kair:tiny") as info:
        create_model("dncnn", weights="kair:tiny")
    assert entry.url in str(info.value) and str(hub.cache_path(entry)) in str(info.value)
    assert cache_files(entry) == []


def test_a_copy_placed_by_hand_verifies_even_when_re_serialised(tiny_release):
    entry, model, stop = tiny_release
    stop()
    state = model.net.state_dict()
    path = hub.cache_path(entry)
    path.parent.mkdir(parents=True)
    torch.save({k: state[k].clone() for k in reversed(list(state))}, path)  # other key order, other bytes
    assert same_output(model, create_model("dncnn", weights="kair:tiny"))


def test_named_weights_for_another_architecture_are_refused(tiny_release):
    with pytest.raises(Exception, match="weights for model 'dncnn', not 'ffdnet'"):
        create_model("ffdnet", weights="kair:tiny")
    with pytest.raises(WeightsError, match="unknown named weights 'kair:nope'; available: .*kair:tiny"):
        create_model("dncnn", weights="kair:nope")


def test_the_cli_takes_named_weights_and_lists_them(tiny_release, tmp_path, smooth_image):
    entry, _, _ = tiny_release
    image = write_image(tmp_path / "img.png", smooth_image)
    args = ["denoise", str(image), "--weights", "kair:tiny", "-o", str(tmp_path / "out"), "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["model"] == "dncnn"  # the architecture comes with the name
    listed = json.loads(CliRunner().invoke(main, ["models", "--json"]).stdout)["named_weights"]
    assert {"name": "kair:tiny", "cached": True}.items() <= next(
        w for w in listed if w["name"] == "kair:tiny"
    ).items()


def test_tensor_hash_ignores_key_order_and_sees_every_byte():
    state = {"a": torch.zeros(2, 3), "b": torch.arange(4, dtype=torch.int64)}
    pin = hub.tensors_sha256(state)
    assert hub.tensors_sha256(dict(reversed(list(state.items())))) == pin
    for changed in (
        {**state, "a": torch.zeros(3, 2)},
        {**state, "a": torch.zeros(2, 3, dtype=torch.float64)},
        {**state, "b": torch.tensor([0, 1, 2, 5])},
        {"c": state["a"], "b": state["b"]},
    ):
        assert hub.tensors_sha256(changed) != pin


@pytest.mark.shared
@pytest.mark.parametrize("entry", list(hub.NAMED_WEIGHTS.values()), ids=lambda e: e.name)
def test_every_pin_matches_the_shared_copy_and_its_metadata_fits(shared, entry, tmp_path, monkeypatch):
    stem = entry.filename.removesuffix(".pth")
    source = shared("weights", "ffdnet" if stem.startswith("ffdnet") else "dncnn", entry.filename)
    assert hub.tensors_sha256(read_state_dict(source)) == entry.tensors_sha256
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    hub.cache_path(entry).parent.mkdir(parents=True)
    shutil.copy(source, hub.cache_path(entry))  # as a user would place it by hand
    model = create_model(entry.meta.arch, weights=entry.name)
    assert model.meta == entry.meta
    x = torch.from_numpy(np.full((1, entry.meta.channels, 8, 8), 0.5, np.float32))
    sigma = 0.1 if entry.meta.noise_map else None
    with torch.no_grad():
        assert torch.isfinite(model(x, sigma)).all()


def test_a_damaged_cached_file_is_downloaded_again_or_named_when_offline(tiny_release):
    entry, model, stop = tiny_release
    path = hub.cache_path(entry)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"PK\x03\x04 half a download")
    assert same_output(model, create_model("dncnn", weights="kair:tiny"))  # replaced by a verified copy
    assert cache_files(entry) == ["tiny.pth"]
    path.write_bytes(b"PK\x03\x04 half a download")
    stop()
    with pytest.raises(WeightsError) as info:
        create_model("dncnn", weights="kair:tiny")
    assert str(info.value).startswith(f"the cached file {path} does not hold the weights kair:tiny (")
    assert "; cannot download kair:tiny (" in str(info.value) and entry.url in str(info.value)


def test_a_failed_download_leaves_the_file_another_process_finished(tiny_release, served, monkeypatch):
    entry, model, _ = tiny_release
    real = torch.hub.download_url_to_file

    def finished_elsewhere_then_failed(url, dst, progress=True):
        hub.cache_path(entry).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(
            served[1] / "tiny.pth", hub.cache_path(entry)
        )  # another process's verified download lands
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch.hub, "download_url_to_file", finished_elsewhere_then_failed)
    with pytest.raises(WeightsError, match="cannot download kair:tiny"):
        hub.fetch(entry)
    assert cache_files(entry) == ["tiny.pth"]  # the other process's file stays, no temporary file left
    monkeypatch.setattr(torch.hub, "download_url_to_file", real)
    assert same_output(model, create_model("dncnn", weights="kair:tiny"))
