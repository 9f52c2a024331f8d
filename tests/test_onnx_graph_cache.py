"""Verified ONNX graphs kept on disk for later runs (:mod:`exporters.onnx_graph_cache`): a later run of the
architecture takes the graph with its own weights, verified; a stale, damaged or failing entry costs a
capture, never an export."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import exporters.onnx_graph_cache as graph_cache
import exporters.onnx_reuse as onnx_reuse
from exporters.onnx_export import export_onnx
from exporters.onnx_graph_cache import GraphCache
from exporters.onnx_reuse import GraphReuse
from exporters.weight_map import WeightMap
from rfr_deploy.files import source_digest
from rfr_deploy.models.factory import create_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")


def tiny(seed: int):
    torch.manual_seed(seed)
    return create_model("dncnn", weights=None, channels=3, depth=3, features=8).eval()


def export_in_a_new_run(model, path, cache: GraphCache, x: torch.Tensor):
    """``model`` exported as by a new process: an empty run, with the cache."""
    return export_onnx(model, path, example=x, reuse=GraphReuse(cache))


def test_a_later_run_takes_the_cached_graph_with_its_own_weights(tmp_path, captures):
    cache, x = GraphCache(tmp_path / "cache"), torch.rand(1, 3, 20, 24)
    first = export_in_a_new_run(tiny(0), tmp_path / "a.onnx", cache, x)
    model = tiny(1)
    second = export_in_a_new_run(model, tmp_path / "b.onnx", cache, x)
    assert (first.graph, second.graph, len(captures)) == ("captured", "cached", 1)
    assert second.max_abs_error is not None and second.max_abs_error <= 1e-4
    unseen = torch.rand(2, 3, 13, 17)
    session = ort.InferenceSession(str(tmp_path / "b.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        want = model(unseen).numpy()
    assert np.abs(session.run(["denoised"], {"noisy": unseen.numpy()})[0] - want).max() < 1e-4
    # The entry holds the graph, not the weights: every initializer of a parameter is empty.
    (entry,) = (tmp_path / "cache").glob("*.onnx")
    weights = set(json.loads(entry.with_suffix(".json").read_text())["weights"]["names"].values())
    stored = {i.name: i for i in onnx.load(entry).graph.initializer}
    assert weights == set(model.state_dict()) and all(stored[n].raw_data == b"" for n in weights)


def test_other_software_versions_miss_the_entry(tmp_path, captures, monkeypatch):
    cache, x = GraphCache(tmp_path / "cache"), torch.rand(1, 3, 20, 24)
    export_in_a_new_run(tiny(0), tmp_path / "a.onnx", cache, x)
    monkeypatch.setattr(graph_cache, "_version", lambda package: "99.0")
    report = export_in_a_new_run(tiny(1), tmp_path / "b.onnx", cache, x)
    assert report.graph == "captured" and len(captures) == 2
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2


def test_a_damaged_entry_is_captured_afresh_and_replaced(tmp_path, captures):
    cache, x = GraphCache(tmp_path / "cache"), torch.rand(1, 3, 20, 24)
    export_in_a_new_run(tiny(0), tmp_path / "a.onnx", cache, x)
    (entry,) = (tmp_path / "cache").glob("*.onnx")
    entry.write_bytes(entry.read_bytes()[:-8])
    graphs = [export_in_a_new_run(tiny(i), tmp_path / f"{i}.onnx", cache, x).graph for i in (1, 2)]
    assert graphs == ["captured", "cached"] and len(captures) == 2


def test_a_cached_graph_that_fails_verification_is_removed_then_captured_afresh(
    tmp_path, captures, monkeypatch
):
    cache, x = GraphCache(tmp_path / "cache"), torch.rand(1, 3, 20, 24)
    export_in_a_new_run(tiny(0), tmp_path / "a.onnx", cache, x)
    arrays, remove, removed = WeightMap.arrays, GraphCache.remove, []
    with monkeypatch.context() as patch:  # a cached graph that no longer computes the network
        patch.setattr(
            WeightMap, "arrays", lambda self, state: {k: 0 * v for k, v in arrays(self, state).items()}
        )
        patch.setattr(GraphCache, "remove", lambda self, key: (removed.append(key), remove(self, key)))
        report = export_in_a_new_run(tiny(1), tmp_path / "b.onnx", cache, x)
    assert report.graph == "captured" and report.max_abs_error <= 1e-4 and len(removed) == 1
    assert (
        len(captures) == 2 and export_in_a_new_run(tiny(2), tmp_path / "c.onnx", cache, x).graph == "cached"
    )


def test_a_cache_that_cannot_be_written_costs_a_capture_not_the_export(tmp_path, captures):
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    x = torch.rand(1, 3, 20, 24)
    reports = [
        export_in_a_new_run(tiny(i), tmp_path / f"{i}.onnx", GraphCache(blocked / "cache"), x) for i in (0, 1)
    ]
    assert [r.graph for r in reports] == ["captured", "captured"] and len(captures) == 2
    assert all(r.max_abs_error <= 1e-4 for r in reports)


def test_the_source_digest_follows_the_files_contents_not_their_location(tmp_path):
    for folder, text in (("a", "x = 1\n"), ("b", "x = 1\n"), ("c", "x = 2\n")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "net.py").write_text(text)
    a, b, c = (source_digest([tmp_path / f / "net.py"]) for f in "abc")
    assert a == b != c


def test_edited_network_code_misses_the_entry(tmp_path, captures, monkeypatch):
    """A graph comes from code as much as from the module tree: a changed forward() must not reuse it,
    even where the version number stayed (a development tree)."""
    cache, x = GraphCache(tmp_path / "cache"), torch.rand(1, 3, 20, 24)
    export_in_a_new_run(tiny(0), tmp_path / "a.onnx", cache, x)
    monkeypatch.setattr(onnx_reuse, "_graph_code_digest", lambda model: "the network's file, edited")
    report = export_in_a_new_run(tiny(1), tmp_path / "b.onnx", cache, x)
    assert report.graph == "captured" and len(captures) == 2
