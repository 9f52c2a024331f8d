from rfr_deploy import progress as progress_module
from rfr_deploy.progress import Reporter


def test_a_bar_of_unknown_length_learns_its_total_and_names_its_stage(capsys, monkeypatch):
    """Where stderr is a log, not a terminal: a line per stage, steps at most every LINE_SECONDS."""
    clock = iter([0.0, 1.0, 2.0, 3.0, 15.0, 16.0, 17.0, 18.0])
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: next(clock))
    with Reporter().bar(None, "adapting a.png") as progress:
        progress.stage("pseudo-clean target")
        progress.stage("updating", 5)
        progress(1, 0.5)  # 1 s after the last line: not shown
        progress(2, 0.25)  # 12 s after: shown
        progress.stage("output")
    assert capsys.readouterr().err.splitlines() == [
        "adapting a.png: pseudo-clean target",
        "adapting a.png: updating",
        "adapting a.png: 2/5 (loss 2.500e-01)",
        "adapting a.png: output",
    ]


def test_quiet_progress_shows_nothing(capsys):
    with Reporter(quiet=True).bar(None, "adapting a.png") as progress:
        progress.stage("updating", 5)
        progress(2, 0.5)
    assert capsys.readouterr().err == ""
