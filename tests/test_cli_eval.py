"""The ``eval`` command end to end on tiny images and tiny models: PSNR before and after, budgets,
real-noise pairs, the self-ensemble, malformed settings."""

import json

import numpy as np
import pytest
from cli_helpers import run
from click.testing import CliRunner

from rfr_deploy.cli import main
from rfr_deploy.images import write_image


def test_eval_reports_psnr_before_and_after(tmp_path, smooth_image, weights_file):
    data = tmp_path / "set"
    for i in range(2):
        write_image(data / f"{i}.png", np.roll(smooth_image, 3 * i, axis=1))
    result = run(
        "eval",
        data,
        "--weights",
        weights_file,
        "--sigma",
        25,
        "--steps",
        "0,2,3",
        "--interpolation",
        0.25,
        "--warmup",
        1,
        "--json",
        "--markdown",
        tmp_path / "t.md",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert set(report["mean"]) == {"0", "2", "3"} and len(report["images"]) == 2
    assert report["adapt"]["interpolation"] == 0.25 and report["adapt"]["warmup"] == 1
    assert report["images"][0]["noisy_psnr"] < 25
    assert all(i["noise_sigma"] == 25 for i in report["images"])  # the known level adaptation drew at
    assert report["environment"]["torch"] and report["wall_seconds"] > 0
    table = (tmp_path / "t.md").read_text()
    assert "| **mean** |" in table and "interpolation=0.25" in table and "σ = 25" in table
    # SURE chose each checkpoint's interpolation (the default); the weight is recorded per image
    assert report["adapt"]["select"] == "sure"
    assert all(set(i["interpolation"]) == {"2", "3"} for i in report["images"])
    # M = 3 is scored on the network adapt returns; the update it interpolates is recorded per image
    assert all(i["checkpoint"] in (1, 2, 3) for i in report["images"])


def test_eval_scores_adapt_and_exports_own_budget_by_default(
    tmp_path, smooth_image, weights_file, monkeypatch
):
    from rfr_deploy.adaptation import config, defaults

    monkeypatch.setattr(defaults, "GAUSSIAN_STEPS", 4)  # the CPU's default Gaussian budget, made tiny
    data = tmp_path / "set"
    write_image(data / "a.png", smooth_image)
    result = run("eval", data, "--weights", weights_file, "--warmup", 0, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["settings"]["steps"] == [0, 4] and set(report["mean"]) == {"0", "4"}
    adapt = report["adapt"]
    assert (adapt["steps"], adapt["patch"], adapt["ema"]) == (4, config.GAUSSIAN_PATCH, config.GAUSSIAN_EMA)
    assert report["images"][0]["psnr"]["4"] != report["images"][0]["psnr"]["0"]
    # intermediate M are scored along the same run; an M past the default budget is refused
    result = run("eval", data, "--weights", weights_file, "--warmup", 0, "--steps", "2,default", "--json")
    assert set(json.loads(result.output)["mean"]) == {"0", "2", "4"}
    result = CliRunner().invoke(
        main, ["eval", str(data), "--weights", str(weights_file), "--steps", "0,8,default"]
    )
    assert (
        result.exit_code == 2
        and result.output == "error: --steps 8 is beyond the default budget of 4 updates\n"
    )


def test_eval_reads_every_image_before_adapting_and_holds_one_at_a_time(
    tmp_path, smooth_image, weights_file, monkeypatch
):
    import weakref

    from rfr_deploy.jobs import evaluate

    data = tmp_path / "set"
    for i in range(3):
        write_image(data / f"{i}.png", np.roll(smooth_image, 3 * i, axis=1))
    (data / "3.png").write_bytes(b"not a png")  # the last one: found before any adaptation
    monkeypatch.setattr(evaluate, "adapt", lambda *a, **k: pytest.fail("adaptation started"))
    result = run("eval", data, "--weights", weights_file, "--steps", "0,1", "-q")
    assert result.exit_code == 2 and "3.png" in result.stderr
    (data / "3.png").unlink()
    monkeypatch.undo()
    read, score = evaluate.read_source, evaluate._score_image
    decoded, most = [], [0]

    def tracked_read(source):
        images = read(source)
        decoded.append(weakref.ref(images[1].pixels))
        return images

    def tracked_score(image_run, *args):
        most[0] = max(most[0], sum(ref() is not None for ref in decoded))
        return score(image_run, *args)

    monkeypatch.setattr(evaluate, "read_source", tracked_read)
    monkeypatch.setattr(evaluate, "_score_image", tracked_score)
    result = run("eval", data, "--weights", weights_file, "--steps", "0,1", "--crop", 16, "-q")
    assert result.exit_code == 0, result.output
    assert len(decoded) == 6 and most[0] == 0  # each read twice; whole images let go once cropped
    result = run("eval", data, "--weights", weights_file, "--steps", "0,1", "-q")
    assert result.exit_code == 0 and most[0] == 1  # uncropped: the image being scored, no other


@pytest.mark.parametrize("steps", ["", "0,ten", "-1,default", "0,1.5"])
def test_eval_refuses_malformed_steps(tmp_path, smooth_image, steps):
    write_image(tmp_path / "set" / "a.png", smooth_image)
    result = CliRunner().invoke(main, ["eval", str(tmp_path / "set"), "--steps", steps])
    assert result.exit_code == 2 and "--steps" in result.output and "default" in result.output


def test_eval_on_real_noise_pairs_adapts_with_camera_noise(tmp_path, smooth_image, weights_file, rng):
    data = tmp_path / "pairs"
    for i in range(2):
        clean = np.roll(smooth_image, 5 * i, axis=0)
        noisy = np.clip(clean + 0.04 * rng.standard_normal(clean.shape), 0, 1)
        write_image(data / "gt" / f"{i}_mean.png", clean)
        write_image(data / "noisy" / f"{i}_real.png", noisy)
    # files pair up by name without their suffixes; with no true σ, "known" falls back to the estimate
    result = run(
        "eval",
        data,
        "--pairs",
        "--weights",
        weights_file,
        "--noise",
        "camera",
        "--steps",
        "0,2",
        "--select",
        "off",
        "--warmup",
        0,
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["settings"]["pairs"] is True and report["settings"]["noise"] == "camera"
    assert len(report["images"]) == 2 and set(report["mean"]) == {"0", "2"}
    for image in report["images"]:
        # the PSNR of the real noisy image, not of synthetic noise added to the clean one
        assert 24 < image["noisy_psnr"] < 31
        assert image["psnr"]["2"] != image["psnr"]["0"]


def test_eval_pairs_without_the_gt_folder_is_a_one_line_error(tmp_path, weights_file, smooth_image):
    write_image(tmp_path / "pairs" / "noisy" / "a.png", smooth_image)
    result = CliRunner().invoke(
        main, ["eval", str(tmp_path / "pairs"), "--pairs", "--weights", str(weights_file)]
    )
    assert result.exit_code != 0 and "expected sub-folders 'noisy' and 'gt'" in result.output
    assert "Traceback" not in result.output


def test_eval_scores_the_self_ensemble_beside_the_single_pass(tmp_path, smooth_image, weights_file):
    data = tmp_path / "set"
    write_image(data / "a.png", smooth_image)
    result = run(
        "eval",
        data,
        "--weights",
        weights_file,
        "--steps",
        "0,2",
        "--select",
        "off",
        "--score-ensemble",
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    image = report["images"][0]
    assert set(image["ensemble_psnr"]) == {"0", "2"} and image["interpolation"] == {"2": 0.5}
    assert image["ensemble_psnr"]["0"] != image["psnr"]["0"]
    gain = report["ensemble_gain_db"]["0"]
    assert gain == pytest.approx(image["ensemble_psnr"]["0"] - image["psnr"]["0"], abs=1e-3)


def test_eval_names_files_that_share_a_stem_by_their_whole_name(tmp_path, smooth_image, weights_file):
    data = tmp_path / "set"
    for name in ("a.png", "a.jpg", "b.png"):
        write_image(data / name, smooth_image)
    result = run("eval", data, "--weights", weights_file, "--steps", "0", "--json")
    assert result.exit_code == 0, result.output
    assert [i["name"] for i in json.loads(result.stdout)["images"]] == ["a.jpg", "a.png", "b"]
    table = run("eval", data, "--weights", weights_file, "--steps", "0", "-q").stdout
    assert "| a.jpg |" in table and "| a.png |" in table and "| b |" in table


def test_eval_pairs_warns_of_files_without_a_partner_and_counts_the_pairs(
    tmp_path, smooth_image, weights_file
):
    data = tmp_path / "pairs"
    write_image(data / "noisy" / "NOISY_1.png", smooth_image)
    write_image(data / "gt" / "GT_1.png", smooth_image)
    write_image(data / "noisy" / "NOISY_2.png", smooth_image)
    write_image(data / "gt" / "GT_3.png", smooth_image)
    left = r"evaluating 1 pair\(s\); left out, .*: noisy/NOISY_2\.png, gt/GT_3\.png"
    with pytest.warns(UserWarning, match=left):
        result = run("eval", data, "--pairs", "--weights", weights_file, "--steps", "0", "--json")
    report = json.loads(result.stdout)
    assert [i["name"] for i in report["images"]] == ["1"]
    assert report["left_out"] == ["noisy/NOISY_2.png", "gt/GT_3.png"]
    with pytest.warns(UserWarning, match=left):
        table = run("eval", data, "--pairs", "--weights", weights_file, "--steps", "0", "-q").stdout
    assert "1 real noise pair (2 files without a partner left out)" in table.splitlines()[0]


def test_eval_pairs_refuses_two_files_that_match_one_name(tmp_path, smooth_image, weights_file):
    data = tmp_path / "pairs"
    for name in ("noisy/NOISY_1.png", "noisy/1_noisy.png", "gt/GT_1.png"):
        write_image(data / name, smooth_image)
    result = CliRunner().invoke(main, ["eval", str(data), "--pairs", "--weights", str(weights_file)])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert result.output.startswith("error: ") and "1_noisy.png and NOISY_1.png" in result.output


def test_the_test_noise_is_not_the_stream_the_adaptation_draws_from():
    """eval adapts image ``index`` with seed ``seed + index``, the seed of its training noise: the test noise
    of that image must come from another stream (it used to be the first update's noise)."""
    import torch

    from rfr_deploy.jobs.evaluate import add_gaussian_noise

    zeros = torch.zeros(1, 1, 32, 32)
    for index in range(3):
        test = add_gaussian_noise(zeros, 1.0, seed=0, index=index)
        training = torch.randn(zeros.shape, generator=torch.Generator().manual_seed(0 + index))
        assert abs(float((test * training).mean())) < 0.2  # uncorrelated (they were equal)
        assert torch.equal(test, add_gaussian_noise(zeros, 1.0, seed=0, index=index))  # reproducible
