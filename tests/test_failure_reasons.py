"""Failure reasons are shown whole and grouped with a count, in `bench status` and on the page (issue 28, item 3)."""

from __future__ import annotations

from bench.site import _status_section
from bench.status import group_failures, render

REASON = "FileNotFoundError: dataset 'shapes3d' is not on this machine\nexpected /data/3dshapes.h5: run `bench data download shapes3d --root /data`"


def _summary() -> dict:
    failed = [{"label": f"ae/shapes3d/seed{i}", "id": f"id{i}", "reason": REASON} for i in range(24)]
    failed.append({"label": "vae/shapes3d/seed0", "id": "other", "reason": "DivergedError: loss became NaN"})
    roles = {"model": {"done": 0, "running": [], "failed": failed, "pending": 0}}
    return {"results": "results", "profile": "p", "stages": 25, "roles": roles}


def test_identical_reasons_are_one_group_with_a_count_and_the_whole_text():
    groups = group_failures(_summary()["roles"]["model"]["failed"])
    assert [(reason, len(stages)) for reason, stages in groups] == [(REASON, 24), ("DivergedError: loss became NaN", 1)]
    text = render(_summary())
    assert text.count("bench data download shapes3d --root /data") == 1  # the line that matters, once
    assert "failed   24 stage(s):" in text and "and 14 more" in text and "failed   1 stage(s): vae/shapes3d/seed0" in text


def test_the_page_shows_each_reason_once_whole_with_its_count():
    html = _status_section({"roles": _summary()["roles"]})
    assert html.count("3dshapes.h5") == 1 and "24 model stage(s) failed" in html and "1 model stage(s) failed" in html
    assert "run `bench data download shapes3d --root /data`" in html.replace("&#x27;", "'")
