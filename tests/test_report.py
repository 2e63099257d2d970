"""``mixnas report`` (issue 32): one self-contained HTML page of a run, checked in a real headless browser.

A real digits search (the quickstart, cut down) and a run still going (a hand-made ledger with ``running``
trials, a latency table and a driver holding the run's lock) are rendered, opened in Debian's Chromium through
the DevTools protocol on a pipe (``headless_chromium.py``), and checked as a user would see them: no console
error, no request beyond the file itself, the plots and the network drawing present, and hovering / clicking a
Pareto-front point showing that trial's block strings. Without ``/usr/bin/chromium`` the browser tests skip
with the install line.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from headless_chromium import CHROMIUM, INSTALL, Chromium
from mixnas.launch.cli import main
from mixnas.launch.ledger import Ledger
from mixnas.launch.rundir import RunPaths, load_run_config, run_lock
from mixnas.launch.summary import arch_text, record_arch, summarize
from synthetic_run import PRESET, make_run

REPO = Path(__file__).resolve().parents[1]


def _records(run_dir: Path):
    with Ledger(RunPaths(run_dir).ledger, readonly=True) as ledger:
        return ledger.trials()


def _summary(run_dir: Path):
    records = _records(run_dir)
    return summarize(load_run_config(RunPaths(run_dir)), records), {r.trial: r for r in records}


def _page_data(html: str) -> dict:
    text = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', html, re.S).group(1)
    return json.loads(text)


def _assert_self_contained(html: str) -> None:
    """No external resource: nothing loaded from a URL, and a policy that forbids the network anyway."""
    assert not re.search(r"""(?:src|href|action)\s*=\s*["']?\s*(?:https?:|//|ftp:)""", html, re.I)
    assert not re.search(r"<link\b|@import|url\(\s*['\"]?(?:https?:|//)", html, re.I)
    assert "Content-Security-Policy" in html and "default-src 'none'" in html


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"needs Chromium: {INSTALL}")
    with Chromium(width=1280, height=900) as b:
        yield b


def _open(browser: Chromium, page: Path) -> None:
    """Load ``page``; it must draw without a console error and request nothing but itself."""
    start = len(browser.events)
    browser.open(page)
    assert browser.evaluate("document.body.getAttribute('data-drawn')") is not None  # the script ran to its end
    assert browser.errors(start) == []
    requests = [e["params"]["request"]["url"] for e in browser.events[start:]
                if e["method"] == "Network.requestWillBeSent"]
    assert requests == [page.resolve().as_uri()], requests


def _check_hover_and_click(browser: Chromium, trials: dict, trial: int) -> None:
    """Hovering front point ``trial`` shows its block strings with their ``# mixnas:`` line; clicking draws its
    network (one card per block repeat)."""
    point = f'#points circle.front[data-trial="{trial}"]'
    browser.evaluate("document.getElementById('detail').textContent = ''")
    browser.hover(point)
    shown = browser.evaluate("document.querySelector('#detail pre.arch').textContent")
    expected = arch_text(trials[trial])
    assert shown == expected and expected.startswith("# mixnas:")
    browser.click(point)
    assert browser.evaluate("document.getElementById('pick').value") == str(trial)
    layers = browser.evaluate("document.querySelectorAll('#net-svg g.part.layer').length")
    assert layers == len(record_arch(trials[trial]).layers())
    browser.hover("#glance")  # the pointer leaves: the clicked trial stays pinned
    assert browser.evaluate("document.querySelector('#detail pre.arch').textContent") == expected


# --------------------------------------------------------------------------------------------------------------
# a real search
# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory, ray_address) -> Path:
    """The quickstart (tiny space, digits, measured latency), 6 trials of 3 steps on 10 images per class."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    sets = [f"execution.address={ray_address}", "execution.trials=6", "evaluator.budget={steps: 3}",
            "evaluator.subset.images_per_class=10", "logging.tensorboard=false",
            "latency.options={min_seconds: 0, warmup: 2, repeats: 10}"]
    proc = subprocess.run([sys.executable, "-m", "mixnas", "search", str(REPO / "experiments" / "quickstart.yaml"),
                           "--output", str(run_dir), "-q", *[x for s in sets for x in ("--set", s)]],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    return run_dir


def test_the_report_of_a_digits_run(browser: Chromium, digits_run: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["report", str(digits_run)]) == 0
    page = digits_run / "report.html"
    assert capsys.readouterr().out.startswith(f"wrote {page} (")
    html = page.read_text()
    _assert_self_contained(html)
    summary, trials = _summary(digits_run)
    data = _page_data(html)
    assert data["best"] == summary.best.trial and data["front"] == [r.trial for r in summary.front]
    assert data["table"] is None and data["refs"] == []  # latency measured end to end: no table to break down

    _open(browser, page)
    ok = [r for r in trials.values() if r.status == "ok" and r.trained]
    assert browser.evaluate("document.querySelectorAll('#points circle.pt').length") == len(ok)
    assert browser.evaluate("document.querySelectorAll('#by-trial svg path.best-line').length") == 1
    assert browser.evaluate("document.querySelectorAll('#by-time svg path.best-line').length") == 1
    # the best trial is drawn first: its network and its block strings
    assert browser.evaluate("document.getElementById('pick').value") == str(summary.best.trial)
    layers = record_arch(summary.best).layers()  # one band per MixConv kernel group of every block repeat
    assert browser.evaluate("document.querySelectorAll('#net-svg rect.kgroup').length") == sum(
        len(layer.kernel_sizes) for layer in layers)
    assert "no latency table" in browser.evaluate("document.getElementById('lat-summary').textContent")
    front = [r.trial for r in summary.front]
    _check_hover_and_click(browser, trials, next((t for t in front if t != summary.best.trial), front[0]))
    assert browser.errors() == []


# --------------------------------------------------------------------------------------------------------------
# a run still going
# --------------------------------------------------------------------------------------------------------------
def test_the_report_of_a_run_in_progress(tmp_path: Path, browser: Chromium) -> None:
    run_dir = make_run(tmp_path, trials=24, running=2)
    paths = RunPaths(run_dir)
    out = tmp_path / "pages" / "now.html"
    code = ("import sys; from mixnas.launch.cli import main; rc = main(sys.argv[1:]); "
            "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH'); sys.exit(rc)")
    writer = sqlite3.connect(paths.ledger, isolation_level=None)
    with run_lock(paths):  # a driver holds the run, in the middle of a write to its ledger
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE trials SET worker = 'w:1' WHERE status = 'running'")
        proc = subprocess.run([sys.executable, "-c", code, "report", str(run_dir), "-o", str(out)],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        writer.execute("ROLLBACK")
    writer.close()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("NO-TORCH")  # a reader of the ledger: no torch import
    html = out.read_text()
    _assert_self_contained(html)
    assert "running · report made" in html
    summary, trials = _summary(run_dir)
    running = [t for t, r in trials.items() if r.status == "running"]
    screened = [t for t, r in trials.items() if r.origin == "screened"]
    copied = [t for t, r in trials.items() if r.origin == "copied"]
    assert len(running) == 2 and screened and copied
    assert f"{summary.counts['running']} running" in html and f"{len(screened)} screened out" in html
    assert all(f"trial {t} = trial {trials[t].copy_of}" in html for t in copied)

    _open(browser, out)
    rows = browser.evaluate("[...document.querySelectorAll('#problems tr')].map(r => r.cells[0].textContent)")
    assert {str(t) for t in running} <= set(rows) and {str(t) for t in screened} <= set(rows)
    # the latency table's breakdown: one bar per part (stem, each block repeat, head, classifier)
    best = summary.best
    parts = len(record_arch(best).layers()) + 3
    assert browser.evaluate("document.querySelectorAll('#lat-bars rect.lat').length") == parts
    shares = browser.evaluate("[...document.querySelectorAll('#lat-bars text')].map(t => t.textContent)"
                              ".filter(t => t.endsWith('%')).map(parseFloat)")
    assert len(shares) == parts and abs(sum(shares) - 100) <= 0.5 * parts  # each share to 2 digits
    text = browser.evaluate("document.getElementById('lat-summary').textContent")
    assert f"the {parts} parts sum to" in text and "latency_ms" in text
    shown = {t["t"]: t for t in _page_data(html)["trials"]}
    net = _page_data(html)["nets"][shown[best.trial]["a"]]
    assert net["pred"] == shown[best.trial]["k"]["latency_ms"]  # the table's sum is what the search predicted
    # the preset the table covers, as a reference line at its predicted latency
    assert PRESET in browser.evaluate("[...document.querySelectorAll('#scatter g.ref text')].map(t => t.textContent).join()")
    # re-ranked trials show their mean over seeds on hover
    reranked = next(r.trial for r in summary.front if "sm" in shown[r.trial])
    _check_hover_and_click(browser, trials, reranked)
    assert "over 3 seeds" in browser.evaluate("document.getElementById('detail').textContent")
    assert browser.errors() == []


def test_a_generic_space_and_a_pareto_reward_render(tmp_path: Path, browser: Chromium) -> None:
    """A tabular run (no architectures) with two objectives and no reward: the page says what it cannot draw."""
    from test_cli_small import make_run as tabular_run  # the 3 x 3 table of the CLI's small tests

    reward = {"type": "pareto", "objectives": [{"metric": "acc", "direction": "max"},
                                               {"metric": "latency_ms", "direction": "min"}]}
    run_dir = tabular_run(tmp_path, reward)
    assert main(["report", str(run_dir), "-o", str(tmp_path / "r.html")]) == 0
    _open(browser, tmp_path / "r.html")
    assert browser.evaluate("document.querySelectorAll('#points circle.front').length") == 3
    assert "no single number" in browser.evaluate("document.getElementById('by-trial').textContent")
    browser.hover('#points circle.front[data-trial="7"]')
    assert browser.evaluate("document.querySelector('#detail pre.arch').textContent") == "a: 2\nb: 1"
    assert "Not a stage space" in browser.evaluate("document.getElementById('net').textContent")
    assert browser.errors() == []


# --------------------------------------------------------------------------------------------------------------
# bad input: one line, exit 2
# --------------------------------------------------------------------------------------------------------------
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run_dir = make_run(tmp_path / "small", trials=3)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    cases = {
        (str(tmp_path / "nothing"),): "not a folder",
        (str(tmp_path),): "no config.yaml here",
        (str(run_dir), "-o", str(tmp_path)): "is a folder, expected a file",
        (str(run_dir), "-o", "/dev/null"): "is a device, FIFO or socket",
        (str(run_dir), "-o", str(fifo)): "is a device, FIFO or socket",
        (str(run_dir), "-o", str(run_dir / "config.yaml" / "x.html")): "cannot write the report",
    }
    for argv, words in cases.items():
        assert main(["report", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("mixnas: error: ") and err.count("\n") == 1 and words in err, (argv, err)
    (run_dir / "ledger.sqlite").unlink()
    assert main(["report", str(run_dir)]) == 2 and "no ledger here" in capsys.readouterr().err


def test_the_file_is_replaced_whole(tmp_path: Path) -> None:
    run_dir = make_run(tmp_path, trials=4)
    page = run_dir / "report.html"
    page.write_text("old")
    assert main(["report", str(run_dir)]) == 0
    assert page.read_text().startswith("<!doctype html>")
    assert sorted(p.name for p in run_dir.iterdir() if p.name.startswith(".report")) == []  # no temporary left
