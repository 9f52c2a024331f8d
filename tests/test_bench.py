"""``rfr-deploy bench``: settings, CPU timing modes, budgets, unknown models, reports (no timing assertions)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from rfr_deploy.adaptation import cpu_runners
from rfr_deploy.adaptation.cpu_runners import FusedAdamRunner
from rfr_deploy.bench import run as bench_run
from rfr_deploy.bench.job import time_job
from rfr_deploy.bench.limits import Limits
from rfr_deploy.bench.report import BenchReport, ModelResult, ModeTiming, default_mode, write_report
from rfr_deploy.bench.run import fitted_size, run_bench, time_modes
from rfr_deploy.bench.settings import PAPER_SIZE, BenchSettings
from rfr_deploy.cli import main
from rfr_deploy.devices import cpu_native_bf16, describe_environment
from rfr_deploy.errors import ConfigError
from rfr_deploy.models.factory import create_model

TINY = {"size": 16, "steps": 1, "repeats": 2, "warmup": 0}


@pytest.fixture(autouse=True)
def fp32_cpu_default(monkeypatch):
    """The reports below compare the CPU's default fast path, channels-last fp32, with eager; on a CPU
    where ``amp='auto'`` means bf16 (AMX, AMD's AVX512-BF16) that default would be the bf16 mode instead,
    and on one without AVX-512 the default layout with fused Adam."""
    monkeypatch.setattr(cpu_runners, "CPU_BF16_AUTO", ())
    monkeypatch.setattr(cpu_runners, "cpu_avx512", lambda: True)


def test_the_cpu_default_mode_is_bf16_where_auto_picks_it(monkeypatch):
    monkeypatch.setattr(cpu_runners, "cpu_bf16_units", lambda: None)
    monkeypatch.setattr(cpu_runners, "cpu_avx512", lambda: True)
    assert default_mode("cpu") == "channels-last" and default_mode("cuda") == "amp+graphs"
    monkeypatch.setattr(cpu_runners, "cpu_avx512", lambda: False)  # no fast channels-last weight gradient
    assert default_mode("cpu") == "fused-adam"
    monkeypatch.setattr(cpu_runners, "CPU_BF16_AUTO", (("AMX", None),))
    monkeypatch.setattr(cpu_runners, "cpu_bf16_units", lambda: "AMX")
    assert default_mode("cpu") == "bf16"


def test_cpu_bench_times_eager_and_the_fast_path():
    report = run_bench(BenchSettings(models=("dncnn",), job=False, **TINY))
    (dncnn,) = report.results
    assert dncnn.size == 16 and dncnn.params == 668_227  # full-size CDnCNN-B
    bf16 = cpu_native_bf16()
    assert [m.mode for m in dncnn.modes] == ["eager", "channels-last"] + (["bf16"] if bf16 else [])
    assert [m.runner for m in dncnn.modes][:2] == ["eager", "eager+channels-last"]
    if bf16:
        assert dncnn.modes[2].runner == "eager+channels-last+bf16"
    for m in dncnn.modes:
        assert m.error is None and m.updates == 2 and m.repeats == 2
        assert 0 < m.min_ms <= m.median_ms <= m.max_ms
    eager, fast = dncnn.modes[:2]
    assert len(eager.rounds_ms) == len(fast.rounds_ms) == 2
    paired = sorted(e / f for e, f in zip(eager.rounds_ms, fast.rounds_ms, strict=True))
    assert dncnn.fast_over_eager("cpu") == pytest.approx(sum(paired) / 2)  # median of two
    assert dncnn.speedup_vs_paper is None  # the paper timed 256×256 only
    assert report.environment["device_type"] == "cpu" and report.environment["cpu_threads"] >= 1


def test_without_avx512_the_cpu_bench_also_times_the_default_layout_with_fused_adam(monkeypatch):
    monkeypatch.setattr(cpu_runners, "cpu_avx512", lambda: False)  # as on AMD's Zen 2
    report = run_bench(BenchSettings(models=("dncnn",), job=False, limits=False, **TINY))
    (dncnn,) = report.results
    assert [m.mode for m in dncnn.modes][:3] == ["eager", "fused-adam", "channels-last"]
    assert dncnn.modes[1].runner == FusedAdamRunner.name and dncnn.modes[1].error is None
    assert dncnn.fast_over_eager("cpu") == dncnn.over_eager("fused-adam") is not None


@pytest.mark.skipif(not cpu_native_bf16(), reason="bf16 is timed only on CPUs with native bf16")
def test_cpu_bench_times_the_unfused_bf16_update_on_request():
    report = run_bench(BenchSettings(models=("dncnn",), job=False, limits=False, unfused=True, **TINY))
    modes = report.results[0].modes
    assert [m.mode for m in modes] == ["eager", "channels-last", "bf16", "bf16-unfused"]
    assert [m.runner for m in modes][2:] == ["eager+channels-last+bf16", "eager+channels-last+bf16-unfused"]
    assert all(m.error is None and m.updates == 2 for m in modes)
    limits = Limits(conv_fp32_gflops=1.0, conv_low_gflops=2.0, train_fp32_gflops=3.0, train_low_gflops=4.0)
    assert limits.rate_for("bf16-unfused") == 2.0 and limits.train_rate_for("bf16-unfused") == 4.0


def test_a_spent_budget_stops_every_mode_after_one_timed_update():
    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8)
    settings = BenchSettings(size=16, steps=50, repeats=3, warmup=1)
    timings = time_modes(["eager", "channels-last"], model, torch.rand(1, 3, 16, 16), settings, budget=1e-6)
    assert [(t.updates, t.repeats) for t in timings] == [(1, 1), (1, 1)]
    assert all(t.median_ms is not None for t in timings)


def test_a_mode_that_cannot_run_here_is_reported_not_raised():
    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8)
    failed, eager = time_modes(
        ["amp+graphs", "eager"], model, torch.rand(1, 3, 16, 16), BenchSettings(**TINY), 10
    )
    assert failed.median_ms is None and failed.error.startswith("failed: CUDA graphs need CUDA tensors")
    assert eager.error is None and eager.updates == 2  # the other modes still run
    assert all(p.is_contiguous() for p in model.parameters())


def _result(model="dncnn", size=PAPER_SIZE, eager=10.0, fast=4.0) -> ModelResult:
    modes = [
        ModeTiming("eager", "eager", eager, eager, eager, 3, 3),
        ModeTiming("channels-last", "eager+channels-last", fast, fast, fast, 3, 3),
        ModeTiming("amp+graphs", error="failed: no GPU"),
    ]
    return ModelResult(model, size=size, params=1, modes=modes)


def test_the_speed_up_pairs_rounds_that_ran_back_to_back():
    r = _result()
    r.modes[0].rounds_ms = [10.0, 40.0, 12.0]  # the machine got busy during round 2
    r.modes[1].rounds_ms = [5.0, 20.0, 4.0]
    assert r.fast_over_eager("cpu") == pytest.approx(2.0)  # median of 2, 2, 3


def test_summary_figures_compare_with_the_paper_only_at_its_size():
    r = _result()
    assert r.fastest.mode == "channels-last"
    assert r.paper_ms == pytest.approx(35.0)
    assert r.speedup_vs_paper == pytest.approx(35.0 / 4.0)
    assert r.fast_over_eager("cpu") == pytest.approx(2.5)
    assert r.fast_over_eager("cuda") is None  # amp+graphs failed
    assert _result(size=128).speedup_vs_paper is None
    assert _result(model="rdn").paper_ms is None


def test_reports_render_as_markdown_and_json(tmp_path):
    settings = BenchSettings(models=("dncnn", "ridnet", "mirnet"), job=False)
    untimed = ModelResult("mirnet", params=1, modes=[ModeTiming("eager", error="failed: out of memory")])
    report = BenchReport(
        settings, describe_environment(torch.device("cpu")), [_result(), _result("ridnet"), untimed]
    )
    text = report.to_markdown()
    assert "| mirnet | 1 | 256 | eager |  | failed: out of memory |" in text
    assert "| mirnet | 256 | none timed | - |" in text
    assert "failed: no GPU" in text and "8.75x" in text  # 35 ms / 4 ms
    data = json.loads(write_report(report, tmp_path / "r.json").read_text())
    assert data["paper"]["seconds_per_update_v100"]["mirnet"] == pytest.approx(0.666)
    assert data["results"][0]["speedup_vs_paper"] == pytest.approx(8.75)
    assert data["results"][1]["fast_over_eager"] == pytest.approx(2.5)
    assert write_report(report, tmp_path / "r.md").read_text() == text


def test_invalid_settings_are_rejected():
    for kwargs in (
        {"size": 8},
        {"steps": 0},
        {"budget": 0},
        {"models": ()},
        {"sizes": {"mirnet": 4}},
        {"models": ("dncnn",), "sizes": {"dncnm": 64}},
    ):
        with pytest.raises(ConfigError):
            BenchSettings(**kwargs)


def test_per_model_sizes():
    settings = BenchSettings(size=256, sizes={"mirnet": 64})
    assert settings.size_of("mirnet") == 64 and settings.size_of("dncnn") == 256


def test_cli_bench_json_output_plot_and_job(tmp_path):
    pytest.importorskip("matplotlib", reason="--plot needs matplotlib (the plot/test extras)")
    out, png = tmp_path / "speed.md", tmp_path / "speed.png"
    result = CliRunner().invoke(
        main,
        [
            "bench",
            "--models",
            "dncnn",
            "--size",
            "16",
            "--size-for",
            "dncnn=24",
            "--steps",
            "1",
            "--repeats",
            "1",
            "--warmup",
            "0",
            "--job-steps",
            "1",
            "--no-job-export",
            "--device",
            "cpu",
            "--json",
            "--output",
            str(out),
            "--plot",
            str(png),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    (dncnn,) = data["results"]
    assert dncnn["size"] == 24
    default = "eager+channels-last" + ("+bf16" if default_mode("cpu") == "bf16" else "")
    assert dncnn["job_s"] is not None and f"1 updates ({default}), output (no" in dncnn["job_note"]
    assert out.read_text().startswith("# rfr-deploy speed benchmark (cpu)")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_bench_rejects_an_unknown_model_before_timing_anything(monkeypatch):
    def fail(*args):
        raise AssertionError("the bench measured its limits before checking the model names")

    monkeypatch.setattr(bench_run, "bench_limits", fail)
    result = CliRunner().invoke(main, ["bench", "--models", "dncnn,dncnm", "--no-job", "--device", "cpu"])
    assert result.exit_code == 2
    assert (
        result.output.startswith("error: unknown model 'dncnm'; available: ")
        and result.output.count("\n") == 1
    )


@pytest.mark.parametrize("option", [["--job-steps", "3"], ["--no-job-export"]])
def test_cli_bench_refuses_job_settings_without_the_job(option):
    result = CliRunner().invoke(main, ["bench", "--no-job", *option])
    assert result.exit_code == 2 and result.output == (
        f"error: {option[0]} sets the adapt-and-export job, which --no-job leaves out: drop one\n"
    )


def test_cli_bench_rejects_a_malformed_size():
    result = CliRunner().invoke(main, ["bench", "--size-for", "mirnet", "--no-job"])
    assert result.exit_code == 2 and "MODEL=SIZE" in result.output


def test_cpu_sizes_shrink_to_fit_the_budget():
    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8)
    settings = BenchSettings(warmup=1)
    assert fitted_size(model, 256, settings, share=1e9) == 256
    assert fitted_size(model, 256, settings, share=1e-9) == 32  # never below the probe size
    assert fitted_size(model, 24, settings, share=1e-9) == 24  # small images are not probed


class _FlagRunner:
    """Records cuDNN's autotuning flag at each update; its construction sets the flag like FastRunner."""

    def __init__(self, wants: bool | None):
        if wants is not None:  # None: leaves it alone, like EagerRunner
            torch.backends.cudnn.benchmark = wants
        self.name, self.seen = f"flag-{wants}", []

    def step(self, index, k, offsets):
        self.seen.append(torch.backends.cudnn.benchmark)
        return torch.zeros(())


def test_cudnn_autotuning_is_set_per_mode(monkeypatch):
    runners = {}

    def fake(context, mode):
        runners[mode] = _FlagRunner(None if mode == "eager" else True)
        return runners[mode]

    monkeypatch.setattr("rfr_deploy.bench.run.make_runner", fake)
    before = torch.backends.cudnn.benchmark
    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8)
    settings = BenchSettings(size=16, steps=2, repeats=3, warmup=1)
    time_modes(["amp+graphs", "eager", "amp"], model, torch.rand(1, 3, 16, 16), settings, budget=60)
    assert (
        runners["eager"].seen == [before] * 7
    )  # the later "amp" runner's flag never leaks into eager's rounds
    assert runners["amp+graphs"].seen == runners["amp"].seen == [True] * 7
    assert torch.backends.cudnn.benchmark == before


def test_flops_per_update_count_the_forward_and_backward_convolutions():
    from rfr_deploy.bench.limits import conv_flops, update_flops

    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    forward = sum(2 * m.in_channels * m.out_channels * 9 * 16 * 16 for m in convs)
    flops = update_flops(model, 3, 16)
    # backward: weight gradients of every layer, input gradients of all but the first
    first = 2 * convs[0].in_channels * convs[0].out_channels * 9 * 16 * 16
    assert flops == pytest.approx(3 * forward - first, rel=0.05)
    assert conv_flops(16) == 2 * 64 * 64 * 9 * 256


def test_measured_limits_are_positive_rates():
    from rfr_deploy.bench.limits import measure_limits

    limits = measure_limits(torch.device("cpu"), 16, "bf16", repeats=1)
    assert limits.conv_fp32_gflops > 0 and limits.conv_low_gflops > 0 and limits.copy_gbps is None
    assert limits.rate_for("bf16") == limits.conv_low_gflops
    assert limits.rate_for("channels-last") == limits.rate_for("eager") == limits.conv_fp32_gflops
    assert limits.train_fp32_gflops > 0 and limits.train_low_gflops > 0
    assert limits.train_rate_for("bf16") == limits.train_low_gflops
    assert limits.train_rate_for("eager") == limits.train_fp32_gflops
    no_low = measure_limits(torch.device("cpu"), 16, None, repeats=1)
    assert no_low.conv_low_gflops is None and no_low.train_low_gflops is None


def test_modes_are_shown_against_the_measured_limit(tmp_path):
    r = _result()  # eager 10 ms, channels-last 4 ms, at 256²
    r.flops_per_update = 2e9
    slow = Limits(conv_fp32_gflops=400.0, conv_low_gflops=800.0, size=256, train_fp32_gflops=800.0)
    fast = Limits(conv_fp32_gflops=1000.0, conv_low_gflops=600.0, size=256, train_fp32_gflops=500.0)
    report = BenchReport(
        BenchSettings(job=False), describe_environment(torch.device("cpu")), [r], [slow, fast]
    )
    best = report.best_limits()
    assert (best.conv_fp32_gflops, best.conv_low_gflops, best.train_fp32_gflops) == (1000.0, 800.0, 800.0)
    assert best.train_low_gflops is None
    text = report.to_markdown()
    assert "## Against the machine's limit" in text
    assert (
        "| dncnn | 256 | 2.0 | eager | 10.00 | 200.0 | 1000.00 | 20.00 % | 1.00x | 800.00 | 25.00 % |" in text
    )
    assert (
        "| dncnn | 256 | 2.0 | channels-last | 4.00 | 500.0 | 1000.00 | 50.00 % | 2.50x | 800.00 | 62.50 % |"
        in text
    )
    assert "| dncnn | 256 | 2.0 | paper V100 | 35.00 | 57.1 | 15700.00 |" in text
    data = json.loads(write_report(report, tmp_path / "r.json").read_text())
    rows = data["results"][0]["against_limit"]
    assert [row["mode"] for row in rows] == ["eager", "channels-last", "paper V100"]
    assert rows[1]["fraction"] == pytest.approx(0.5) and len(data["limits"]) == 2
    assert rows[1]["train_fraction"] == pytest.approx(0.625)


def test_a_model_timed_at_another_size_is_compared_with_the_limit_measured_at_its_size():
    small = _result("mirnet", size=64)  # --size-for mirnet=64, or shrunk to fit the budget
    small.flops_per_update = 1e9
    small.modes[1].error = "failed: out of memory"  # after its rounds so far: shown, not hidden
    at_256 = Limits(conv_fp32_gflops=1000.0, conv_low_gflops=None, size=256, when="start")
    at_64 = Limits(conv_fp32_gflops=250.0, conv_low_gflops=None, size=64, when="for mirnet")
    report = BenchReport(
        BenchSettings(job=False), describe_environment(torch.device("cpu")), [small], [at_256, at_64]
    )
    assert report.best_limits(64).conv_fp32_gflops == 250.0 and report.best_limits().size == 256
    text = report.to_markdown()
    assert "| mirnet | 64 | 1.0 | eager | 10.00 | 100.0 | 250.00 | 40.00 % |" in text
    assert "start at 256²: fp32 1000, no bf16 rate GFLOP/s" in text and "for mirnet at 64²: fp32 250" in text
    assert "| channels-last (failed: out of memory after 3 rounds) |" in text


def test_the_bench_measures_the_limit_again_at_a_models_own_size(monkeypatch):
    measured = []

    def limits_at(device, size, reporter, when):
        measured.append((size, when))
        return Limits(conv_fp32_gflops=1.0, conv_low_gflops=None, size=size, when=when)

    monkeypatch.setattr(bench_run, "bench_limits", limits_at)
    sizes = {"dncnn": 24}
    run_bench(BenchSettings(models=("dncnn", "ridnet"), sizes=sizes, job=False, **TINY | {"budget": 60}))
    assert measured == [(16, "start"), (24, "for dncnn"), (16, "end")]


def test_the_job_note_says_whether_the_timed_export_captured_its_graph(tiny_dncnn):
    """A graph from the graph cache skips the capture, most of an export's time: the note names the source."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    requests = []

    def run_job(request):
        requests.append(request)
        files = [{"role": "image"}, {"role": "onnx", "graph": "cached"}]
        return {"adaptation": {"runner": "eager"}, "files": files}

    noisy = torch.rand(16, 16, 3).numpy()
    seconds, note = time_job(
        "dncnn", tiny_dncnn(3), noisy, BenchSettings(models=("dncnn",)), run_job, 60.0, None
    )
    assert requests[0].formats == ("onnx",) and seconds is not None
    assert note.endswith("updates (eager), output + ONNX export (graph cached)")


def test_cli_bench_times_a_model_named_twice_once(monkeypatch):
    timed = []
    monkeypatch.setattr(bench_run, "bench_model", lambda name, *args: timed.append(name) or ModelResult(name))
    args = ["bench", "--models", "dncnn,ridnet,DnCNN", "--no-job", "--no-limits", "--device", "cpu", "--json"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert timed == ["dncnn", "ridnet"]
    assert [r["model"] for r in json.loads(result.stdout)["results"]] == ["dncnn", "ridnet"]


def test_unfused_without_native_bf16_is_ignored_with_a_warning(monkeypatch):
    monkeypatch.setattr(bench_run, "cpu_native_bf16", lambda: False)
    settings = BenchSettings(models=("dncnn",), job=False, limits=False, unfused=True, **TINY)
    with pytest.warns(UserWarning, match="--unfused is ignored: this CPU has no native bf16"):
        report = run_bench(settings)
    assert "bf16-unfused" not in [m.mode for m in report.results[0].modes]
    assert bench_run.ignored_options(settings, torch.device("cuda"))[0].startswith("--unfused is ignored")
    monkeypatch.setattr(bench_run, "cpu_native_bf16", lambda: True)
    assert bench_run.ignored_options(settings, torch.device("cpu")) == []


def test_cli_bench_quiet_still_prints_its_report(monkeypatch):
    monkeypatch.setattr(bench_run, "bench_model", lambda name, *args: ModelResult(name))
    args = ["bench", "--models", "dncnn", "--no-job", "--no-limits", "--device", "cpu", "-q"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("# rfr-deploy speed benchmark") and result.stderr == ""
