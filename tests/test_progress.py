from rfr_deploy.progress import Reporter


def test_a_bar_of_unknown_length_learns_its_total_and_names_its_stage(capsys):
    with Reporter().bar(None, "adapting a.png") as progress:
        progress.stage("pseudo-clean target")
        progress.stage("updating", 5)
        progress(2, 0.5)
        progress.stage("output")
    shown = capsys.readouterr().err
    assert "adapting a.png: pseudo-clean target" in shown
    assert "adapting a.png: updating" in shown and "2/5" in shown
    assert "adapting a.png: output" in shown


def test_quiet_progress_shows_nothing(capsys):
    with Reporter(quiet=True).bar(None, "adapting a.png") as progress:
        progress.stage("updating", 5)
        progress(2, 0.5)
    assert capsys.readouterr().err == ""
