"""The lab's HTML report: self-contained, rendered by headless Chromium, holding the summary
table."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from normlab.errors import NormlabError  # noqa: E402
from normlab.lab import compare  # noqa: E402
from normlab.lab.report import summary_rows, write_report  # noqa: E402

SCHEMES = ("raw", "feature")


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "digits"
    results = compare(
        "digits",
        schemes=SCHEMES,
        model="linear",
        seeds=2,
        epochs=2,
        n_samples=500,
        lr_min=1 / 4,
        lr_max=4.0,
        lr_factor=4.0,
        out=out,
        progress=False,
    )
    return results, out, out / "report.html"


def test_report_is_self_contained(report):
    results, out, page = report
    text = page.read_text()
    assert "http://" not in text and "https://" not in text  # nothing loaded from the network
    assert not re.search(r"""(src|href)=["'](?!data:)""", text)
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(images) == 5
    for data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    for name in ("learning_curves", "lr_sweep", "probes", "probes_per_epoch", "diagonal"):
        assert (out / "plots" / f"{name}.png").exists()
        assert f'<figure id="{name}">' in text
    assert "illustration, not a training result" in text


def test_table_matches_the_results(report):
    results, _, page = report
    text = page.read_text()
    table = re.search(r'<table id="summary">.*?</table>', text, re.S).group(0)
    rows = re.findall(r"<tr><td>(.*?)</td>", table)
    assert rows == list(SCHEMES)
    for row, scheme in zip(summary_rows(results), SCHEMES, strict=True):
        info = results["schemes"][scheme]
        assert row["scheme"] == scheme
        assert float(row["chosen LR"].split()[0]) == pytest.approx(info["best_lr"], rel=5e-3)
        assert float(row["2/λ_max"]) == pytest.approx(2 / info["lambda_max"], rel=5e-3)
        assert f"<td>{row['samples to target']}</td>" in table


def test_report_from_the_saved_json_is_the_same_page(report, tmp_path):
    _, out, page = report
    saved = json.loads((out / "results.json").read_text())
    again = write_report(saved, tmp_path)
    table = lambda p: re.search(r'<table id="summary">.*?</table>', p.read_text(), re.S).group(0)  # noqa: E731
    assert table(again) == table(page)


def test_interrupted_results_are_marked(report, tmp_path):
    results, _, _ = report
    partial = json.loads(json.dumps(results, allow_nan=False))
    partial["complete"] = False
    del partial["schemes"]["feature"]["summary"]
    page = write_report(partial, tmp_path)
    text = page.read_text()
    assert "interrupted" in text and "<td>feature</td>" not in text


def test_not_a_results_file(tmp_path):
    with pytest.raises(NormlabError, match="results.json"):
        write_report({"hello": 1}, tmp_path)


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        "headless Chromium is needed for the report test: apt-get install chromium (.ci/run does)"
    )


def test_chromium_renders_the_page(report, tmp_path):
    from PIL import Image

    _, _, page = report
    chromium = _chromium()
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
    ]
    shot = tmp_path / "shot.png"
    subprocess.run(
        [chromium, *flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
        check=True,
        capture_output=True,
        timeout=180,
    )
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (2400, 1200)
    not_white = (pixels < 240).any(axis=2).mean()
    assert 0.02 < not_white < 0.9  # text, table and plots drawn, not a blank page
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # plots in colour, not one flat fill
    dom = subprocess.run(
        [chromium, *flags, "--dump-dom", page.as_uri()],
        check=True,
        capture_output=True,
        text=True,
        timeout=180,
    ).stdout
    assert '<table id="summary">' in dom
    # the first paragraph is the verdict: the winner and a ratio against the other scheme
    first = re.search(r'<p id="verdict">(.*?)</p>', dom, re.S).group(1)
    assert dom.index('id="verdict"') < dom.index('<table id="summary">')
    assert "feature trained fastest" in first and re.search(r"\d+\.\d\d× fewer than raw", first)
    for scheme in SCHEMES:
        assert f"<td>{scheme}</td>" in dom
    assert dom.count("<img") == 5
    assert dom.index("<h2>Probes of the mechanism</h2>") < dom.index('<figure id="probes">')


def test_report_holds_the_diagnosis_of_the_training_split(report):
    results, _, page = report
    diagnosis = results["diagnosis"]
    spectrum = diagnosis["spectrum"]
    # centering removes the mean spike: raw's λ_max/λ_2 far above the per-feature z-score's
    assert spectrum["raw"]["ratio_max_2"] > 5 * spectrum["feature"]["ratio_max_2"]
    text = page.read_text()
    assert "Diagnosis (before training)" in text
    assert text.count('<tr><th scope="row">') == len(spectrum)
    assert "not applicable: per-image standardization" in text
    assert html_escape(diagnosis["recommendation"][0]) in text


def html_escape(text: str) -> str:
    import html

    return html.escape(text)
