"""Refitting an engine with new weights: which weights fit, setting them, and saving the refitted plan.

Everything here works on the ``tensorrt`` module and engine objects it is given, so the
logic (refuse weights that cannot be set, serialize with the weights included) is
tested with stand-ins for them where TensorRT is absent.
"""

from __future__ import annotations

from pathlib import Path

from .errors import EngineMismatchError
from .tensorrt_runner import tensorrt_logger
from .weight_map import BF16, WeightMap


def check_weight_maps(base: WeightMap | None, new: WeightMap | None, base_path: Path) -> None:
    """Refuse weights whose names, shapes or dtypes differ from the base engine's (another architecture)."""
    if base is None or new is None:
        raise EngineMismatchError(f"{base_path}: no weight-name map in the sidecar; refit from an ONNX file")
    old_shapes = {k: (tuple(base.shapes[v]), base.dtypes[v]) for k, v in base.names.items()}
    new_shapes = {k: (tuple(new.shapes[v]), new.dtypes[v]) for k, v in new.names.items()}
    if old_shapes != new_shapes:
        first = sorted(
            k for k in old_shapes.keys() | new_shapes.keys() if old_shapes.get(k) != new_shapes.get(k)
        )[0]
        raise EngineMismatchError(
            f"the weights do not fit the engine {base_path} (other architecture or precision; first difference: {first})"
        )


def unsettable_parameters(weight_map: WeightMap, refittable: set[str]) -> list[str]:
    """Parameters of the adapted network that a state-dict refit could not set: ambiguous or folded away in
    the ONNX graph, or mapped onto an initializer the engine does not expose as refittable."""
    not_refittable = [key for key, name in weight_map.names.items() if name not in refittable]
    return sorted({*weight_map.ambiguous, *weight_map.absent, *not_refittable})


def refit_from_state_dict(trt, refitter, weight_map: WeightMap, state, base: Path) -> dict:
    """Set every parameter of ``state`` in ``refitter`` by its ONNX name; refuse, naming the parameter, when
    one cannot be set, rather than let it keep the base engine's value. Returns the arrays set, which must
    stay alive until :func:`finish_refit` has run."""
    refittable = set(refitter.get_all_weights())
    skipped = unsettable_parameters(weight_map, refittable)
    if skipped:
        raise EngineMismatchError(
            f"cannot refit {base} from the state dict: {len(skipped)} adapted parameter(s) cannot be set "
            f"({', '.join(skipped[:3])}{', ...' if len(skipped) > 3 else ''}); refit from the ONNX file"
        )
    try:
        arrays = weight_map.arrays(state)  # kept alive until the refit is done
    except (KeyError, ValueError) as exc:
        raise EngineMismatchError(f"the weights do not fit the engine {base} ({exc})") from exc
    for name, array in arrays.items():
        if not refitter.set_named_weights(name, tensorrt_weights(trt, array, weight_map.dtypes[name])):
            raise EngineMismatchError(f"TensorRT rejected the new weights '{name}' for {base}")
    return arrays


def tensorrt_weights(trt, array, dtype: str):
    """``trt.Weights`` over ``array`` (which must outlive them). TensorRT's bindings convert NumPy arrays of
    float32, float16 and integer types only; bf16 weights (raw bits, :meth:`WeightMap.arrays`) are given
    by data type, address and count."""
    if dtype == BF16:
        return trt.Weights(trt.bfloat16, array.ctypes.data, array.size)
    return trt.Weights(array)


def refit_from_onnx(trt, refitter, onnx_path, base: Path) -> None:
    parser_refitter = trt.OnnxParserRefitter(refitter, tensorrt_logger(trt))
    if not parser_refitter.refit_from_file(str(onnx_path)):
        errors = [str(parser_refitter.get_error(i)) for i in range(parser_refitter.num_errors)]
        raise EngineMismatchError(
            f"TensorRT could not refit {base} from {onnx_path}: {'; '.join(errors)[:300]}"
        )


def finish_refit(refitter, base: Path) -> None:
    missing = list(refitter.get_missing_weights())
    if missing:
        raise EngineMismatchError(f"refit of {base} is missing {len(missing)} weights (e.g. {missing[0]})")
    if not refitter.refit_cuda_engine():
        raise EngineMismatchError(f"TensorRT failed to refit {base} (see the TensorRT log)")


def serialize_refitted(trt, engine, base_stripped: bool) -> bytes:
    """The refitted engine's plan, weights included: a plain ``serialize()`` of an engine deserialized from a
    weight-stripped plan would leave them out again. Such engines are serialized with ``EXCLUDE_WEIGHTS``
    cleared and ``INCLUDE_REFIT`` set, so the result runs as it is and can still be refitted."""
    if not base_stripped:
        plan = engine.serialize()
    else:
        config = engine.create_serialization_config()
        config.clear_flag(trt.SerializationFlag.EXCLUDE_WEIGHTS)
        config.set_flag(trt.SerializationFlag.INCLUDE_REFIT)
        plan = engine.serialize_with_config(config)
    if plan is None:
        raise EngineMismatchError("TensorRT could not serialize the refitted engine (see the TensorRT log)")
    return bytes(plan)
