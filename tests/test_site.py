"""The static results site, rendered and checked in a real headless Chromium (skipped where none is installed)."""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pandas as pd
import pytest

import tests.plugin_stages  # noqa: F401  (tiny-bars)
from bench.config import load_config
from bench.runner import run_profile

from tests.test_runner import GRID  # the same small grid

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("site")
    (root / "bench.toml").write_text(textwrap.dedent(GRID))
    config = load_config(root / "bench.toml")
    profile = config.profile("t")
    out = config.results_dir(profile)
    run_profile(profile, out, progress=False)
    return out


def test_bench_run_leaves_a_self_contained_page(site):
    page = (site / "index.html").read_text()
    assert "<script src" not in page and "<link" not in page and "http://" not in page and "https://" not in page
    for needle in ("Grid status", "Leaderboard", "tiny-bars", "beta-vae", "factorvae", "other seeds (1)", "hyperparameters"):
        assert needle in page, needle
    images = [p for p in (site / "site").iterdir() if p.suffix == ".png"]
    assert len(images) == 4 * 4  # originals, reconstructions, samples, traversal of each of the 4 models


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("no headless browser: install Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1300,2200", "--hide-scrollbars"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_renders_in_chromium_sorts_and_has_no_broken_image(site, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    broken = browser.execute_script(
        "return Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
    assert broken == []
    assert browser.execute_script("return document.images.length") >= 16 + 2
    table = browser.find_element(By.CSS_SELECTOR, "table.board[data-dataset='tiny-bars']")
    heads = [th.text.strip() for th in table.find_elements(By.CSS_SELECTOR, "thead th")]
    assert heads[:2] == ["method", "seeds"] and {"factorvae", "dci_disentanglement", "dci_completeness"} <= set(heads)
    rows = lambda: [(tr.find_elements(By.TAG_NAME, "td")[0].text,
                     tr.find_elements(By.TAG_NAME, "td")[heads.index("factorvae")].get_attribute("data-value"))
                    for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")]
    assert sorted(m for m, _ in rows()) == ["ae", "beta-vae"]
    header = table.find_elements(By.CSS_SELECTOR, "thead th")[heads.index("factorvae")]
    header.click()
    ascending = [float(v) for _, v in rows()]
    assert ascending == sorted(ascending)
    header.click()
    descending = [float(v) for _, v in rows()]
    assert descending == sorted(descending, reverse=True) and descending != ascending or len(set(descending)) == 1
    browser.find_element(By.CSS_SELECTOR, "table.board thead th").click()  # by method name
    assert [m for m, _ in rows()] in (["ae", "beta-vae"], ["beta-vae", "ae"])
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert errors == []
    shot = tmp_path / "site.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000


def test_the_page_shows_iqm_intervals_and_the_probability_of_improvement(site, browser):
    from selenium.webdriver.common.by import By

    board = pd.read_csv(site / "leaderboard.csv")
    assert {"factorvae_iqm", "factorvae_iqm_lo", "factorvae_iqm_hi"} <= set(board.columns)
    assert (board["factorvae_iqm_lo"] <= board["factorvae_iqm"]).all() and (board["factorvae_iqm"] <= board["factorvae_iqm_hi"]).all()
    assert "## Probability of improvement" in (site / "leaderboard.md").read_text()
    assert (site / "plots" / "tiny-bars__intervals.png").stat().st_size > 1000
    browser.get((site / "index.html").as_uri())
    table = browser.find_element(By.CSS_SELECTOR, "table.intervals[data-dataset='tiny-bars']")
    cells = {tr.find_elements(By.TAG_NAME, "td")[0].text: tr.find_elements(By.TAG_NAME, "td")[1].text
             for tr in table.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert set(cells) == {"ae", "beta-vae"} and all("[" in c and "]" in c for c in cells.values())
    matrix = browser.find_element(By.CSS_SELECTOR, "table.improvement[data-metric='factorvae']")
    values = {}
    for tr in matrix.find_elements(By.CSS_SELECTOR, "tbody tr"):
        tds = tr.find_elements(By.TAG_NAME, "td")
        for other, td in zip(("ae", "beta-vae"), tds[1:]):
            if td.get_attribute("data-value"):
                values[(tds[0].text, other)] = float(td.get_attribute("data-value"))
    assert values[("ae", "beta-vae")] + values[("beta-vae", "ae")] == pytest.approx(1.0)


def test_the_page_says_where_the_numbers_come_from_and_keeps_diagnostics_apart(site, browser):
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    header = browser.find_element(By.TAG_NAME, "header").text
    assert "profile t" in header and "preset tiny" in header and "git commit" in header and "torch=" in header
    assert str(site.parent) not in header  # the folder's name, not an absolute path
    provenance = browser.find_element(By.CSS_SELECTOR, "p.provenance").text
    assert "num_train" in provenance and "60" in provenance  # the grid's reduced DCI sample sizes
    assert "num_train 60 is below the study default 10,000" in provenance  # said, not left to the reader
    md = (site / "leaderboard.md").read_text().split("| dataset")[0]  # the leaderboard says it too
    assert "profile t" in md and "preset tiny" in md and "git commit" in md and "torch=" in md
    assert "num_train 60 is below the study default 10,000" in md
    board_csv = pd.read_csv(site / "leaderboard.csv")
    assert (board_csv["profile"] == "t").all() and (board_csv["preset"] == "tiny").all()
    assert board_csv["below_study_default"].str.contains("dci.num_train 60 < 10,000").all()
    board = browser.find_element(By.CSS_SELECTOR, "table.board[data-dataset='tiny-bars']")
    heads = {th.get_attribute("data-metric"): th.get_attribute("data-direction")
             for th in board.find_elements(By.CSS_SELECTOR, "thead th")}
    assert heads["factorvae"] == "higher" and "final_loss" not in heads and "train_images_per_s" not in heads
    best = board.find_elements(By.CSS_SELECTOR, "td.best")
    column = [th.get_attribute("data-metric") for th in board.find_elements(By.CSS_SELECTOR, "thead th")]
    values = {}
    for tr in board.find_elements(By.CSS_SELECTOR, "tbody tr"):
        td = tr.find_elements(By.TAG_NAME, "td")[column.index("factorvae")]
        values[td.get_attribute("data-value")] = "best" in (td.get_attribute("class") or "")
    numeric = {float(v): b for v, b in values.items() if v}
    if len(numeric) == 2:  # the higher FactorVAE score of the two methods is marked
        assert numeric[max(numeric)] and not numeric[min(numeric)]
    assert best
    diagnostics = browser.find_element(By.CSS_SELECTOR, "table.diagnostics[data-dataset='tiny-bars']")
    assert "final_loss" in [th.get_attribute("data-metric") for th in diagnostics.find_elements(By.CSS_SELECTOR, "thead th")]


def test_the_page_counts_the_profiles_stages_not_the_whole_store(site):
    """A stage folder of another grid in the same store is not in this page's status (as `bench status
    --profile` would count it), and the header counts models, not rows."""
    from bench.report import regenerate

    stray = site / "stages" / "model" / "0123456789abcdef"
    stray.mkdir(parents=True)
    (stray / "done.json").write_text("{}")
    try:
        regenerate(site)
        page = (site / "index.html").read_text()
    finally:
        shutil.rmtree(stray)
        regenerate(site)
    from bench.status import collect

    expected = collect(site, "t")["roles"]["model"]["done"]
    assert f"<td>{expected}</td>" in page.split("id=status")[1].split("</table>")[0]
    assert "0123456789abcdef" not in page and "result rows" not in page and "4 models" in page


def test_the_traversal_names_each_rows_factor_and_the_loss_plot_has_a_panel_per_method(site, browser):
    from selenium.webdriver.common.by import By

    browser.get((site / "index.html").as_uri())
    captions = [el.get_attribute("textContent") for el in browser.find_elements(By.CSS_SELECTOR, "div.panel")]
    traversal = [c for c in captions if c.startswith("traversal")]
    assert traversal and all("rows, top to bottom: z0" in c for c in traversal)
    # tiny-bars' factors are the bar's row and column: every labelled row names one of them
    assert any("· row |r|" in c or "· col |r|" in c for c in traversal)
    import matplotlib.image

    loss = matplotlib.image.imread(site / "plots" / "tiny-bars__loss.png")
    assert loss.shape[1] > 1.5 * loss.shape[0]  # two methods side by side, each on its own axis
