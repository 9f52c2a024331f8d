"""``adapt-and-export --dry-run``: every check the run makes before adapting, then the plan; nothing written."""

from __future__ import annotations

import json

import pytest

from rfr_deploy.adaptation import cpu_runners
from rfr_deploy.images import write_image
from tests.cli_helpers import run


def two_images(image_file, smooth_image):
    """``image_file`` (noisy.png) and a second image beside it, 24×20."""
    write_image(image_file.parent / "second.png", smooth_image[:24, :20])
    return image_file.parent


def test_the_plan_names_what_is_done_and_what_would_adapt(tmp_path, image_file, weights_file, smooth_image):
    folder, out = two_images(image_file, smooth_image), tmp_path / "out"
    common = ("--weights", weights_file, "--sigma", 25, "--steps", 1, "-o", out)
    assert run("adapt-and-export", image_file, *common, "--quiet").exit_code == 0
    written = sorted(p.name for p in out.iterdir())
    result = run("adapt-and-export", folder, *common, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    assert sorted(p.name for p in out.iterdir()) == written  # nothing more was written
    assert plan["output_dir"] == str(out) and plan["device"] == "cpu" and plan["formats"] == []
    by_name = {g["images"][0]["path"].rsplit("/", 1)[-1]: g for g in plan["groups"]}
    assert by_name["noisy.png"]["status"] == "done" and by_name["noisy.png"]["manifest"] == str(
        out / "noisy.json"
    )
    second = by_name["second.png"]
    assert second["status"] == "to adapt" and second["noise"] == "gaussian"
    assert second["images"] == [
        {
            "path": str(folder / "second.png"),
            "height": 24,
            "width": 20,
            "channels": 3,
            "sigma": 25.0,
            "sigma_from": "given",
        }
    ]
    text = run("adapt-and-export", folder, *common, "--dry-run").stdout.splitlines()
    assert "second.png: 24×20, 3 channel(s), σ 25 (given), gaussian noise: to adapt" in text
    assert f"noisy.png: done with these settings ({out / 'noisy.json'})" in text
    per_set = run("adapt-and-export", folder, *common, "--per-set", "--dry-run").stdout.splitlines()
    assert per_set[0] == (
        "set of 2 images (noisy.png, second.png): 32×40 / 24×20, 3 channel(s), σ 25 (given), gaussian noise: to adapt"
    )
    assert (
        text[-1]
        == f"dry run: 1 of 2 group(s) to adapt on cpu, writing image + weights to {out}; nothing was written"
    )


def test_a_dry_run_estimates_the_level_and_writes_nothing(tmp_path, image_file, weights_file):
    out = tmp_path / "out"
    result = run("adapt-and-export", image_file, "--weights", weights_file, "-o", out, "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    (image,) = json.loads(result.stdout)["groups"][0]["images"]
    assert image["sigma_from"] == "estimated" and 15 < image["sigma"] < 35  # the image's noise: σ ≈ 25
    assert not out.exists()


def test_a_dry_run_makes_the_runs_checks(tmp_path, image_file, weights_file):
    (image_file.parent / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    result = run(
        "adapt-and-export",
        image_file.parent,
        "--weights",
        weights_file,
        "--dry-run",
        "-q",
        "-o",
        tmp_path / "o",
    )
    assert result.exit_code == 2 and result.output.startswith("error: ") and "broken.png" in result.output
    assert not (tmp_path / "o").exists()


def _refused(tmp_path, *args) -> str:
    """The one line a dry run refuses ``args`` with (exit 2, nothing written)."""
    result = run("adapt-and-export", *args, "--device", "cpu", "--dry-run", "-o", tmp_path / "o")
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1
    assert not (tmp_path / "o").exists()
    return result.output


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (("--fast", "on"), "fast='on' (--fast on) needs a CUDA device"),
        (("--amp", "bf16"), "amp='bf16' but this CPU has no native bfloat16"),
        (("--noise", "camera", "--recorrupted", 0.5), "--recorrupted needs Gaussian noise of one level"),
        (("--unknown-sigma", "uniform", "--sure-loss", 0.5), "not Gaussian noise of a random σ"),
        (("--affine-lr", 0.01), "--affine-lr is the rate of the affine maps of --tune affine or all+affine"),
    ],
)
def test_a_dry_run_refuses_updates_this_run_cannot_make(
    tmp_path, image_file, weights_file, options, message, monkeypatch
):
    monkeypatch.setattr(cpu_runners, "cpu_native_bf16", lambda: False)  # any CPU: as one without bf16
    assert message in _refused(tmp_path, image_file, "--weights", weights_file, *options)


def test_a_dry_run_refuses_outputs_that_would_collide(tmp_path, image_file, weights_file, smooth_image):
    other = write_image(tmp_path / "other" / "noisy.jpg", smooth_image)
    line = _refused(tmp_path, image_file, other, "--weights", weights_file, "--sigma", 25, "--per-set")
    assert f"would both write {tmp_path / 'o' / 'noisy_rfr.png'}" in line  # one adapted image per input
    (tmp_path / "o" / "noisy_rfr.onnx").mkdir(parents=True)  # a folder where an export goes
    result = run(
        "adapt-and-export", image_file, "--weights", weights_file, "--sigma", 25, "-o", tmp_path / "o"
    )
    assert (
        result.exit_code == 2 and "noisy_rfr.onnx is a folder, where this run writes a file" in result.output
    )
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["noisy_rfr.onnx"]  # refused before adapting


def test_a_folder_that_is_its_own_output_folder_is_not_read_again(tmp_path, image_file, weights_file):
    folder = image_file.parent
    common = ("--weights", weights_file, "--sigma", 25, "--steps", 1, "-o", folder)
    assert run("adapt-and-export", folder, *common, "--quiet").exit_code == 0
    assert (folder / "noisy_rfr.png").is_file()
    with pytest.warns(UserWarning, match=r"skipping 1 image\(s\) in .* \(noisy_rfr\.png\)"):
        result = run("adapt-and-export", folder, *common, "--dry-run", "--json")
    groups = json.loads(result.stdout)["groups"]
    assert [g["images"][0]["path"] for g in groups] == [str(image_file)] and groups[0]["status"] == "done"
    # an adapted image given without its source is an input like any other
    alone = run("adapt-and-export", folder / "noisy_rfr.png", *common, "--dry-run", "--json")
    assert json.loads(alone.stdout)["groups"][0]["status"] == "to adapt"
