"""``--gray-weights``: a colour network named by ``--weights`` gets its gray one, for grey images stored as RGB
and colour images whose noise their channels share (official weights are one file per channel count)."""

import json

import numpy as np
import pytest
from cli_helpers import run
from test_per_channel import photo

from rfr_deploy.adaptation.config import AdaptConfig
from rfr_deploy.images import read_image, write_image
from rfr_deploy.jobs.resume import run_fingerprint
from rfr_deploy.jobs.settings import JobSettings
from rfr_deploy.models.weights import save_weights


def test_a_colour_networks_gray_weights_take_grey_and_shared_noise_images(
    tmp_path, weights_file, gray_weights_file, recwarn, monkeypatch
):
    from rfr_deploy.jobs import model_cache

    # tiny random networks: SURE's choice between them means nothing; the shared noise decides here
    monkeypatch.setattr(model_cache, "per_channel_scores_better", lambda *args, level, share: share < 0.5)
    write_image(tmp_path / "in" / "shared.png", photo(1.0))
    write_image(tmp_path / "in" / "white.png", photo(0.0))
    write_image(tmp_path / "in" / "grey.png", np.repeat(photo(1.0)[:, :, 1:2], 3, axis=2))
    args = [
        "--weights",
        weights_file,
        "--gray-weights",
        gray_weights_file,
        "-o",
        tmp_path / "out",
        "--json",
        "--quiet",
    ]
    result = run("denoise", tmp_path / "in", *args)
    assert result.exit_code == 0, result.output
    records = {r["input"].rsplit("/", 1)[-1]: r for r in json.loads(result.stdout)}
    assert (
        records["shared.png"].get("per_channel") is True and records["grey.png"].get("stored_channels") == 3
    )
    assert "per_channel" not in records["white.png"] and "stored_channels" not in records["white.png"]
    assert not [w for w in recwarn if "gray weights" in str(w.message)]
    planes = tmp_path / "planes"  # the shared-noise image: the gray weights on each channel alone
    for c in range(3):
        write_image(planes / f"c{c}.png", photo(1.0)[:, :, c : c + 1])
    assert (
        run("denoise", planes, "--weights", gray_weights_file, "-o", planes / "out", "--quiet").exit_code == 0
    )
    expected = np.concatenate([read_image(planes / "out" / f"c{c}_denoised.png").pixels for c in range(3)], 2)
    np.testing.assert_array_equal(read_image(tmp_path / "out" / "shared_denoised.png").pixels, expected)


def test_adapt_and_export_records_the_gray_weights_it_adapted(tmp_path, weights_file, gray_weights_file):
    path = write_image(tmp_path / "photo.png", photo(1.0))
    args = [
        "--weights",
        weights_file,
        "--gray-weights",
        gray_weights_file,
        "--steps",
        1,
        "-o",
        tmp_path / "out",
    ]
    # --per-channel on: SURE's choice between tiny random networks means nothing
    result = run("adapt-and-export", path, *args, "--per-channel", "on", "--quiet")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "photo.json").read_text())
    assert (
        manifest["model"]["weights"] == str(gray_weights_file)
        and manifest["inputs"][0]["per_channel"] is True
    )


@pytest.mark.parametrize("command", ["denoise", "adapt-and-export"])
def test_gray_weights_that_are_not_gray_are_refused_before_any_work(tmp_path, weights_file, command):
    path = write_image(tmp_path / "photo.png", photo(0.0))  # no image needs them: checked all the same
    result = run(
        command, path, "--weights", weights_file, "--gray-weights", weights_file, "-o", tmp_path / "o"
    )
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert line.startswith("error: ") and "--gray-weights" in line
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_the_gray_weights_content_is_part_of_the_resume_fingerprint(tmp_path, gray_weights_file, tiny_dncnn):
    import os

    settings = JobSettings(gray_weights=str(gray_weights_file))
    before = run_fingerprint(settings, AdaptConfig(), [])
    model = tiny_dncnn(1)
    next(model.net.parameters()).data.add_(1.0)
    save_weights(gray_weights_file, model.net, model.meta)
    os.utime(gray_weights_file, ns=(1, 1))  # a new modification time whatever the file system's resolution
    assert run_fingerprint(settings, AdaptConfig(), []) != before
    assert run_fingerprint(JobSettings(), AdaptConfig(), []) != before
