"""The cache folder (:mod:`rfr_deploy.caches`): entries grouped by key, trimmed least recently used first to
``RFR_DEPLOY_CACHE_SIZE``, and ``rfr-deploy cache list`` / ``clear``."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import torch

from exporters.engine_cache import EngineCache
from rfr_deploy.caches import (
    DEFAULT_LIMIT,
    cache_limit,
    format_bytes,
    kind_folder,
    list_entries,
    parse_bytes,
    trim_cache,
)
from rfr_deploy.errors import ConfigError
from rfr_deploy.models.hub import NAMED_WEIGHTS, cache_path
from tests.cli_helpers import run

HOUR = 3600.0


def put(root, kind: str, name: str, size: int, age_hours: float = 0.0):
    """A file of ``size`` bytes in ``kind``'s folder of ``root``, last modified ``age_hours`` ago."""
    path = kind_folder(kind, root) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    then = time.time() - age_hours * HOUR
    os.utime(path, (then, then))
    return path


@pytest.fixture
def root(own_cache_folder):
    return own_cache_folder / "rfr-deploy"


def test_an_entry_is_the_files_of_one_key_and_partial_writes_stand_alone(root):
    put(root, "onnx-graphs", "abc.onnx", 100, age_hours=3)
    put(root, "onnx-graphs", "abc.json", 10, age_hours=2)
    put(root, "onnx-graphs", ".abc.k2j3.part.onnx", 7, age_hours=1)
    put(root, "tensorrt-engines", "def.engine", 50)
    put(root, "tensorrt-engines", "def.engine.json", 5)
    put(root, "tensorrt-timing", "tensorrt-10.16.0.72-NVIDIA-L4-sm89.timing", 3)
    (root / "notes.txt").write_text("not an entry")  # outside every kind's folder: never listed
    entries = list_entries(root)
    assert [(e.kind, e.key, e.size, e.partial) for e in entries] == [
        ("onnx-graphs", "abc", 110, False),  # its newest file is two hours old
        ("onnx-graphs", ".abc.k2j3.part.onnx", 7, True),
        ("tensorrt-engines", "def", 55, False),
        ("tensorrt-timing", "tensorrt-10.16.0.72-NVIDIA-L4-sm89", 3, False),
    ]
    assert [p.name for p in entries[2].files] == ["def.engine", "def.engine.json"]


def test_trimming_removes_the_least_recently_used_entries_first(root):
    old = put(root, "onnx-graphs", "old.onnx", 400, age_hours=30)
    mid = put(root, "tensorrt-engines", "mid.engine", 400, age_hours=20)
    new = put(root, "onnx-graphs", "new.onnx", 400, age_hours=10)
    stale = put(root, "onnx-graphs", ".x.1.part.onnx", 100, age_hours=5)  # a killed process's write
    young = put(root, "onnx-graphs", ".y.2.part.onnx", 100, age_hours=0.1)  # maybe still being written
    just = put(root, "onnx-graphs", "just.onnx", 400, age_hours=40)  # just stored, with an old mtime
    removed = trim_cache(root, limit=999, keep=[just])
    assert [e.key for e in removed] == ["old", "mid", "new"]
    assert [p.exists() for p in (old, mid, new, stale, young, just)] == [False] * 3 + [True] * 3
    assert [e.key for e in trim_cache(root, limit=550, keep=[just])] == [".x.1.part.onnx"]
    assert trim_cache(root, limit=None) == [] and just.exists() and young.exists()


def test_a_write_renamed_into_place_while_the_folder_is_listed_costs_no_error(root, monkeypatch):
    """Another process's write can be renamed between two looks at it: trimming after a store then met a
    key without files and failed the export (a Ray worker's, two images exporting at once)."""
    put(root, "onnx-graphs", "abc.onnx", 100, age_hours=2)
    moving = put(root, "onnx-graphs", ".abc.k2j3.part.json", 7)
    original, looks = Path.stat, []

    def stat_then_rename(path, *args, **kwargs):
        if path == moving:
            looks.append(path)
            if len(looks) > 1:  # the writer renames it after the first look
                moving.rename(moving.with_name("abc.json"))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", stat_then_rename)
    entries = list_entries(root)
    assert [(e.key, e.size, e.partial) for e in entries] == [("abc", 100, False), (moving.name, 7, True)]
    assert [e.key for e in trim_cache(root, limit=1)] == ["abc"]


def test_the_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.delenv("RFR_DEPLOY_CACHE_SIZE", raising=False)
    assert cache_limit() == DEFAULT_LIMIT == 10 * 2**30
    for text, want in (
        ("500M", 500 * 2**20),
        ("2GiB", 2 * 2**30),
        ("1.5g", 3 * 2**29),
        ("4096", 4096),
        ("0", None),
    ):
        monkeypatch.setenv("RFR_DEPLOY_CACHE_SIZE", text)
        assert cache_limit() == want, text
    monkeypatch.setenv("RFR_DEPLOY_CACHE_SIZE", "lots")
    with pytest.raises(ConfigError, match="RFR_DEPLOY_CACHE_SIZE must be a size"):
        cache_limit()
    with pytest.raises(ConfigError, match="--x must be a size"):
        parse_bytes("-1G", "--x")
    assert [format_bytes(n) for n in (0, 1023, 1536, 5 * 2**30)] == ["0 B", "1023 B", "1.5 KiB", "5.0 GiB"]


def test_the_engine_cache_marks_hits_used_and_trims_after_keeping(root, tmp_path):
    cache = EngineCache(kind_folder("tensorrt-engines", root), limit=300)
    older = put(root, "onnx-graphs", "older.onnx", 200, age_hours=50)
    hit = put(root, "tensorrt-engines", "hit.engine", 100, age_hours=40)
    put(root, "tensorrt-engines", "hit.engine.json", 1, age_hours=40)
    assert cache.find("hit") == hit and time.time() - hit.stat().st_mtime < 60  # touched: used now
    built = tmp_path / "base.engine"
    built.write_bytes(b"e" * 150)
    (tmp_path / "base.engine.json").write_text("{}")
    cache.keep("new", built)
    # 200 + 101 + 152 bytes do not fit in 300: the least recently used entry (the graph) went.
    assert not older.exists() and cache.find("new") is not None and cache.find("hit") == hit


def test_a_cache_entry_used_by_a_later_run_outlives_an_unused_one(root, tmp_path, captures):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    from exporters.onnx_export import export_onnx
    from exporters.onnx_graph_cache import GraphCache
    from exporters.onnx_reuse import GraphReuse
    from rfr_deploy.models.factory import create_model

    cache, x = GraphCache(kind_folder("onnx-graphs", root)), torch.rand(1, 3, 20, 24)
    model = create_model("dncnn", weights=None, channels=3, depth=3, features=8).eval()
    export_onnx(model, tmp_path / "a.onnx", example=x, reuse=GraphReuse(cache))
    (entry,) = list_entries(root)
    for path in entry.files:  # stored long ago
        os.utime(path, (time.time() - 100 * HOUR,) * 2)
    put(root, "tensorrt-timing", "unused.timing", 10, age_hours=50)
    report = export_onnx(model, tmp_path / "b.onnx", example=x, reuse=GraphReuse(cache))
    assert report.graph == "cached" and len(captures) == 1
    assert [e.key for e in trim_cache(root, limit=entry.size)] == ["unused"]  # the hit made the graph newer


def fake_entries(root):
    put(root, "onnx-graphs", "a.onnx", 1000, age_hours=72)
    put(root, "onnx-graphs", "a.json", 24, age_hours=72)
    put(root, "onnx-graphs", "b.onnx", 2048, age_hours=1)
    put(root, "tensorrt-timing", "t.timing", 10, age_hours=72)


def test_cache_list_shows_each_kind_and_every_entry_as_json(root, monkeypatch, tmp_path):
    fake_entries(root)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = next(iter(NAMED_WEIGHTS.values()))
    cache_path(weights).parent.mkdir(parents=True)
    cache_path(weights).write_bytes(b"w" * 5)
    monkeypatch.setenv("RFR_DEPLOY_CACHE_SIZE", "2G")
    result = run("cache", "list")
    assert result.exit_code == 0 and run("cache").output == result.output, result.output  # list: the default
    lines = result.output.splitlines()
    assert lines[0] == f"{root} (holds at most 2.0 GiB: RFR_DEPLOY_CACHE_SIZE)"
    assert lines[1].split()[:4] == ["onnx-graphs", "2", "entries", "3.0"]
    assert lines[3].split()[:3] == ["tensorrt-timing", "1", "entry"]
    assert lines[4].split() == ["weights", "1", "entry", "5", "B"]
    document = json.loads(run("cache", "list", "--json").output)
    assert document["limit_bytes"] == 2 * 2**30
    assert [(e["kind"], e["key"], e["bytes"]) for e in document["entries"]] == [
        ("weights", weights.name, 5),
        ("onnx-graphs", "b", 2048),
        ("tensorrt-timing", "t", 10),
        ("onnx-graphs", "a", 1024),
    ]


def test_the_folder_can_be_set_on_its_own(monkeypatch, tmp_path, own_cache_folder):
    assert kind_folder("onnx-graphs") == own_cache_folder / "rfr-deploy" / "onnx-graphs"  # $XDG_CACHE_HOME
    monkeypatch.setenv("RFR_DEPLOY_CACHE_DIR", str(tmp_path / "fast-disk"))
    put(None, "tensorrt-timing", "t.timing", 10)
    assert (tmp_path / "fast-disk" / "tensorrt-timing" / "t.timing").is_file()
    assert run("cache", "list").output.startswith(f"{tmp_path / 'fast-disk'} (holds at most")


def test_cache_clear_removes_what_it_is_asked_to(root, monkeypatch, tmp_path):
    fake_entries(root)
    result = run(
        "cache", "clear", "--kind", "onnx-graphs", "--kind", "onnx-graphs", "--unused-days", 1, "--json"
    )
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    assert [e["key"] for e in document["removed"]] == ["a"] and document["freed_bytes"] == 1024
    assert [e.key for e in list_entries(root)] == ["t", "b"]
    result = run("cache", "clear")
    assert result.output == "removed 2 entries (2.0 KiB) of onnx-graphs, tensorrt-engines, tensorrt-timing\n"
    assert list_entries(root) == [] and run("cache", "clear", "-q").output == ""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("clear", "--kind", "weights", "--unused-days", 3), "--unused-days does not apply to weights"),
        (("clear", "--kind", "engines"), "'engines' is not one of"),
        (("clear", "--unused-days", -1), "--unused-days"),
    ],
)
def test_cache_commands_refuse_bad_options_in_one_line(args, message, root):
    fake_entries(root)
    result = run("cache", *args)
    assert result.exit_code == 2 and message in result.output and result.output.count("\n") == 1
    assert len(list_entries(root)) == 3


def test_a_bad_cache_size_stops_an_export_before_any_work(monkeypatch, tmp_path, image_file, weights_file):
    pytest.importorskip("onnx")
    monkeypatch.setenv("RFR_DEPLOY_CACHE_SIZE", "ten gigabytes")
    out = tmp_path / "o"
    result = run("adapt-and-export", image_file, "--weights", weights_file, "--format", "onnx", "-o", out)
    assert result.exit_code == 2 and result.output.startswith("error: RFR_DEPLOY_CACHE_SIZE must be a size")
    assert not out.exists()
    assert run("cache", "list").exit_code == 2


def test_files_that_are_not_entries_of_their_kind_are_never_listed_or_cleared(root):
    readme = put(root, "onnx-graphs", "README.txt", 10, age_hours=100)
    hidden = put(root, "onnx-graphs", ".DS_Store", 10, age_hours=100)
    foreign = put(root, "tensorrt-engines", ".x.1.part.onnx", 10, age_hours=100)  # another kind's write
    put(root, "onnx-graphs", "a.onnx", 10, age_hours=100)
    assert [e.key for e in list_entries(root)] == ["a"]
    assert run("cache", "clear").output.startswith("removed 1 entry (10 B)")
    assert trim_cache(root, limit=0) == [] and readme.exists() and hidden.exists() and foreign.exists()


def test_cache_clear_spares_partial_files_that_may_still_be_being_written(root):
    young = put(root, "onnx-graphs", ".k2.a1b2.part.onnx", 7, age_hours=0.1)
    stale = put(root, "onnx-graphs", ".k3.c3d4.part.json", 5, age_hours=2)
    put(root, "tensorrt-engines", "e.engine", 100, age_hours=0.1)
    document = json.loads(run("cache", "clear", "--json").output)
    assert sorted(e["key"] for e in document["removed"]) == [".k3.c3d4.part.json", "e"]
    assert [(e["key"], e["partial"]) for e in document["kept"]] == [(".k2.a1b2.part.onnx", True)]
    assert young.exists() and not stale.exists()
    result = run("cache", "clear")
    assert result.output == (
        "removed 0 entries (0 B) of onnx-graphs, tensorrt-engines, tensorrt-timing; "
        "kept 1 entry still being written (partial, under an hour old)\n"
    )
    assert young.exists()


@pytest.mark.parametrize("command", [("list",), ("list", "--json"), ("clear",)])
def test_a_cache_folder_that_is_a_file_is_a_one_line_error(monkeypatch, tmp_path, command):
    (tmp_path / "cache").write_text("not a folder")
    monkeypatch.setenv("RFR_DEPLOY_CACHE_DIR", str(tmp_path / "cache"))
    result = run("cache", *command)
    assert result.exit_code == 2, result.output
    assert result.output == f"error: RFR_DEPLOY_CACHE_DIR: {tmp_path / 'cache'} is a file, not a folder\n"
    assert (tmp_path / "cache").read_text() == "not a folder"
