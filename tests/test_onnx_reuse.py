"""The run's first ONNX graph reused for later networks: their own weights, verified, and a fresh capture
whenever anything but the weights differs (:mod:`exporters.onnx_reuse`)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exporters.onnx_export import export_onnx
from exporters.onnx_reuse import GraphReuse
from exporters.weight_map import WeightMap
from rfr_deploy.models.factory import create_model

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxscript")


def tiny(seed: int, features: int = 8):
    torch.manual_seed(seed)
    return create_model("dncnn", weights=None, channels=3, depth=3, features=features).eval()


def run(path, x: torch.Tensor) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["denoised"], {"noisy": x.numpy()})[0]


def test_a_later_network_takes_the_first_graph_with_its_own_weights(tmp_path, captures):
    reuse, x = GraphReuse(), torch.rand(1, 3, 20, 24)
    first = export_onnx(tiny(0), tmp_path / "a.onnx", example=x, reuse=reuse)
    second_model = tiny(1)
    second = export_onnx(second_model, tmp_path / "b.onnx", example=x, reuse=reuse)
    assert (first.graph, second.graph, len(captures)) == ("captured", "reused", 1)
    assert second.max_abs_error is not None and second.max_abs_error <= 1e-4
    # The template's sizes were verified at two sizes; a reused graph is checked on the example alone.
    assert len(first.verified_shapes) == 2 and second.verified_shapes == ((1, 3, 20, 24),)
    unseen = torch.rand(2, 3, 13, 17)  # another batch and size than the example
    with torch.no_grad():
        want = second_model(unseen).numpy()
    got = run(tmp_path / "b.onnx", unseen)
    assert np.abs(got - want).max() < 1e-4 and np.abs(run(tmp_path / "a.onnx", unseen) - want).max() > 1e-2
    initializers = {
        i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(tmp_path / "b.onnx").graph.initializer
    }
    for key, value in second_model.state_dict().items():
        np.testing.assert_array_equal(initializers[key], value.numpy())


def test_another_structure_or_other_export_options_are_captured_afresh(tmp_path, captures):
    reuse, x = GraphReuse(), torch.rand(1, 3, 20, 24)
    reports = [
        export_onnx(tiny(0), tmp_path / "a.onnx", example=x, reuse=reuse),
        export_onnx(tiny(1, features=16), tmp_path / "b.onnx", example=x, reuse=reuse),
        export_onnx(tiny(2, features=16), tmp_path / "c.onnx", example=x, reuse=reuse, precision="fp16"),
        export_onnx(
            tiny(3, features=16), tmp_path / "d.onnx", example=x, reuse=reuse, precision="fp16", ensemble=True
        ),
        export_onnx(tiny(4, features=16), tmp_path / "e.onnx", example=x, reuse=reuse, dynamic=False),
        export_onnx(
            tiny(5, features=16), tmp_path / "f.onnx", example=x[..., :16], reuse=reuse, dynamic=False
        ),
        export_onnx(
            tiny(6, features=16), tmp_path / "g.onnx", example=x[..., :16], reuse=reuse, dynamic=False
        ),
    ]
    assert [r.graph for r in reports] == ["captured"] * 6 + ["reused"] and len(captures) == 6
    assert reports[-1].verified_shapes == ((1, 3, 20, 16),)


def test_a_run_alternating_two_architectures_captures_each_once(tmp_path, captures):
    """A folder of gray and colour images switches networks; without the graph cache each switch used to
    capture again (one template held)."""
    reuse = GraphReuse()
    graphs = []
    for i, channels in enumerate((3, 1, 1, 3, 1)):
        torch.manual_seed(i)
        model = create_model("dncnn", weights=None, channels=channels, depth=3, features=8).eval()
        x = torch.rand(1, channels, 20, 24)
        graphs.append(export_onnx(model, tmp_path / f"{i}.onnx", example=x, reuse=reuse).graph)
    assert graphs == ["captured", "captured", "reused", "reused", "reused"] and len(captures) == 2
    for i in range(GraphReuse.KEPT + 1):  # more architectures than it holds: the oldest goes
        reuse.keep(tiny(i, features=8 + i), (), onnx.load(tmp_path / "0.onnx"), "test")
    assert len(reuse._templates) == GraphReuse.KEPT


def test_a_tensor_no_initializer_holds_must_equal_the_templates(tmp_path, captures):
    """Buffers outside the state dict are baked into a graph: a network whose buffers differ gets its own."""
    reuse, x = GraphReuse(), torch.rand(1, 3, 20, 24)
    models = [tiny(0), tiny(1), tiny(2)]
    for model in models:
        model.net.register_buffer("baked", torch.zeros(3), persistent=False)
    models[2].net.baked += 1
    graphs = [
        export_onnx(m, tmp_path / f"{i}.onnx", example=x, reuse=reuse).graph for i, m in enumerate(models)
    ]
    assert graphs == ["captured", "reused", "captured"] and len(captures) == 2


def test_a_reused_graph_that_fails_verification_is_captured_afresh(tmp_path, captures, monkeypatch):
    reuse, x = GraphReuse(), torch.rand(1, 3, 20, 24)
    export_onnx(tiny(0), tmp_path / "a.onnx", example=x, reuse=reuse)
    arrays = WeightMap.arrays
    monkeypatch.setattr(
        WeightMap, "arrays", lambda self, state: {k: 0 * v for k, v in arrays(self, state).items()}
    )
    model = tiny(1)
    report = export_onnx(model, tmp_path / "b.onnx", example=x, reuse=reuse)
    assert report.graph == "captured" and len(captures) == 2 and report.max_abs_error <= 1e-4
    with torch.no_grad():
        assert np.abs(run(tmp_path / "b.onnx", x) - model(x).numpy()).max() < 1e-4


def test_an_unverified_graph_is_never_reused(tmp_path, captures):
    reuse, x = GraphReuse(), torch.rand(1, 3, 20, 24)
    graphs = [
        export_onnx(tiny(i), tmp_path / f"{i}.onnx", example=x, reuse=reuse, verify=False).graph
        for i in range(2)
    ]
    assert graphs == ["captured", "captured"] and len(captures) == 2


def test_a_reused_dynamic_graph_is_verified_on_a_smaller_crop_a_static_one_at_its_shape(tmp_path, captures):
    """Every weight takes part at any size: the reused graph's weights are checked on at most 64²."""
    x = torch.rand(1, 3, 80, 96)
    for dynamic, shape in ((True, (1, 3, 64, 64)), (False, (1, 3, 80, 96))):
        reuse = GraphReuse()
        export_onnx(tiny(0), tmp_path / "a.onnx", example=x, reuse=reuse, dynamic=dynamic)
        report = export_onnx(tiny(1), tmp_path / "b.onnx", example=x, reuse=reuse, dynamic=dynamic)
        assert (
            report.graph == "reused" and report.verified_shapes == (shape,) and report.max_abs_error <= 1e-4
        )
