"""How long the report of a 300-trial run takes to make, and to load and draw in a browser; how large it is.

A synthetic run directory (``tests/synthetic_run.py``: real ledger rows of sampled ``tiny`` architectures, a real
latency table holding their parts, made-up accuracies; failed, pruned, screened, copied and re-ranked trials
among them) is rendered by ``mixnas report`` and opened in headless Chromium (``tests/headless_chromium.py``,
the DevTools protocol over a pipe), several times, each a fresh navigation. Figures, medians over the loads:

* drawn: from the navigation's start to the end of the page's script (every plot and the network drawn), read
  from the page (``performance.now()``, which the script stores in ``body[data-drawn]``);
* painted: the first animation frame after the load event, in the same clock: the drawn page is on screen by then
  (an upper bound: it includes one round trip of the driver);
* load event: wall time from the navigate command to the load event, as the driver sees it.

Baseline measured in the same browser: the same file without its script (the tables alone, static HTML), so the
ratio is what drawing the plots costs on top of opening a page of that size. Goal (issue 32): under 2 s.

    .venv/bin/python benchmarks/report_render.py [--trials 300] [--loads 5] [--keep DIR] [--json]

Needs Debian's Chromium (``apt-get install -y chromium``).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the synthetic run and the browser client the tests use

from headless_chromium import CHROMIUM, INSTALL, Chromium  # noqa: E402
from synthetic_run import make_run  # noqa: E402


# the next frame after the load event, in ms since navigation start: by then the drawn page has been painted
PAINTED = "new Promise(r => requestAnimationFrame(() => setTimeout(() => r(performance.now()))))"


def timings(browser: Chromium, page: Path, loads: int) -> dict[str, float]:
    """Median milliseconds of ``loads`` fresh loads of ``page``: drawn, painted, load event."""
    drawn, paint, load = [], [], []
    for _ in range(loads):
        since = len(browser.events)  # leave the page, so that the next load starts from nothing
        browser.send("Page.navigate", url="about:blank")
        browser.wait_for("Page.loadEventFired", since)
        since = len(browser.events)
        load.append(1000 * browser.open(page))
        if browser.errors(since):
            raise SystemExit(f"{page}: errors in the browser: {browser.errors(since)}")
        mark = browser.evaluate("document.body.getAttribute('data-drawn')")
        if mark is not None:  # the baseline has no script
            drawn.append(float(mark))
        paint.append(browser.evaluate(PAINTED))
    return {"drawn_ms": statistics.median(drawn) if drawn else None, "painted_ms": statistics.median(paint),
            "load_event_ms": statistics.median(load)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=300, help="trainings in the synthetic run (default 300)")
    parser.add_argument("--loads", type=int, default=5, help="page loads to take the median of (default 5)")
    parser.add_argument("--keep", type=Path, help="make the run and the pages in this folder and keep them")
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    args = parser.parse_args()
    if not CHROMIUM.exists():
        print(f"needs Chromium: {INSTALL}", file=sys.stderr)
        return 2
    from mixnas.launch.report_page import write_report

    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        run_dir = make_run(folder / "synthetic", trials=args.trials)
        t0 = time.perf_counter()
        page, size = write_report(run_dir, folder / "report.html")
        render_s = time.perf_counter() - t0
        t0 = time.perf_counter()  # the command as a user runs it: a fresh process, imports included
        subprocess.run([sys.executable, "-m", "mixnas", "report", str(run_dir), "-o", str(folder / "cli.html")],
                       check=True, capture_output=True)
        command_s = time.perf_counter() - t0
        html = page.read_text()
        static = folder / "report_static.html"  # the baseline: the same page without its script
        static.write_text(re.sub(r"<script>.*?</script>", "", html, flags=re.S))
        data = re.search(r'id="report-data">(.*?)</script>', html, re.S).group(1)
        with Chromium(width=1280, height=900) as browser:
            timings(browser, page, 1)  # warm the browser's caches once
            full = timings(browser, page, args.loads)
            points = browser.evaluate("document.querySelectorAll('#points circle.pt').length")
            base = timings(browser, static, args.loads)
    result = {
        "trials": args.trials, "rows": len(json.loads(data)["trials"]), "points": points,
        "file_bytes": size, "data_bytes": len(data.encode()), "render_s": render_s, "command_s": command_s,
        "report": full, "baseline_tables_only": base,
        "painted_ratio": full["painted_ms"] / base["painted_ms"],
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"report of a {args.trials}-trial run ({result['rows']} ledger rows, {points} points plotted)")
    print(f"  file: {size / 1024:.0f} KiB ({result['data_bytes'] / 1024:.0f} KiB of it the embedded data), "
          f"made in {render_s:.2f} s in process ({command_s:.2f} s for the command `mixnas report`, a fresh "
          "process with its imports)")
    print(f"  in headless Chromium, median of {args.loads} loads: drawn {full['drawn_ms']:.0f} ms after the navigation "
          f"started, painted by {full['painted_ms']:.0f} ms, load event seen by the driver after "
          f"{full['load_event_ms']:.0f} ms (goal: under 2000 ms)")
    print(f"  baseline, the same page without its script (tables only): painted by {base['painted_ms']:.0f} ms, "
          f"load event after {base['load_event_ms']:.0f} ms; the report takes {result['painted_ratio']:.2f}x as "
          "long to paint")
    return 0


if __name__ == "__main__":
    sys.exit(main())
