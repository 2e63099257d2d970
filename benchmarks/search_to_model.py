"""Case study, from a search to a trained model: does a hardware-aware search beat hand designs and random search?

On Fashion-MNIST at 32x32 (Debian package ``dataset-fashion-mnist``: IDX gzip files in
``/usr/share/datasets/fashion-mnist``), on this CPU, through the ``mixnas`` command line only:

1. ``baselines``: ``mixnet_tiny`` and the same network with every MixConv replaced by one 3x3 depthwise kernel (a
   MobileNetV2-style control); the latency of ``mixnet_tiny`` (ONNX Runtime, 1 thread, batch 1) becomes the target
   of the search's MnasNet reward.
2. ``search``: ``experiments/fashion_mnist.yaml`` (the ``tiny`` space, regularized evolution, proxy training, MnasNet
   hard reward) and the same experiment with ``controller.type=random``, side by side (one core each), each stopped
   after ``--minutes`` by SIGTERM (a stopped search keeps every finished trial; this script resumes one that was
   cut short by anything else, for the rest of its time).
3. ``rerank``: ``mixnas rerank RUN --top 3 --seeds 2`` for both runs; each run's winner is its best mean reward.
4. ``train``: the two winners and the two baselines, ``mixnas train`` with the same recipe and epochs, ``--seeds``
   seeds each, on all 60,000 training images, scored on the official 10,000-image test split.
5. ``report``: the four finalists' latency measured together (``mixnas latency measure``, interleaved), a table of
   test top-1 mean +- standard error, params, MACs and latency (``report.md``, ``report.json``) and a plot of test
   top-1 against latency with every search trial behind it (``pareto.png``).

Every stage skips what is already done, so the script can be stopped and run again. Usage::

    apt-get install dataset-fashion-mnist
    .venv/bin/python benchmarks/search_to_model.py --out runs/case_study            # the whole study (~2.5 h)
    .venv/bin/python benchmarks/search_to_model.py --out runs/case_study --stage report
    .venv/bin/python benchmarks/search_to_model.py --minutes 5 --epochs 1 --seeds 2 --out /tmp/cs   # a smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DATA = Path("/usr/share/datasets/fashion-mnist")
INSTALL = "Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (IDX gzip files in /usr/share/datasets/fashion-mnist)"
STAGES = ("baselines", "search", "rerank", "train", "report")
SEARCHES = {"search": "evolution", "random": "random"}
RECIPE = "sgd-cosine"


def mixnas(*args: str, capture: bool = True) -> str:
    """Run the mixnas CLI (the same interpreter); stdout when captured. A failure stops the study with its stderr."""
    cmd = [sys.executable, "-m", "mixnas", *args]
    print("$ mixnas " + " ".join(args), file=sys.stderr, flush=True)
    done = subprocess.run(cmd, cwd=REPO, text=True, stdout=subprocess.PIPE if capture else None)
    if done.returncode != 0:
        raise SystemExit(f"search_to_model: `mixnas {' '.join(args)}` exited {done.returncode}")
    return done.stdout or ""


def read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def write_json(path: Path, doc: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


# ----------------------------------------------------------------------------------------------------------------
def stage_baselines(out: Path) -> dict:
    """The two hand designs as block-string files and the target latency (mixnet_tiny's)."""
    done = read_json(out / "baselines.json")
    if done:
        return done
    from mixnas.search_space.header import encode_arch_text
    from mixnas.search_space.presets import resolve_arch

    tiny = resolve_arch("mixnet_tiny")
    control = tiny.replace(blocks=tuple(b.replace(kernel_sizes=(3,)) for b in tiny.blocks), name="mixnet_tiny_3x3")
    files = {}
    for name, arch in (("mixnet_tiny", tiny), ("mixnet_tiny_3x3", control)):
        files[name] = str(out / f"{name}.txt")
        Path(files[name]).write_text(encode_arch_text(arch, "tf"))
    measured = json.loads(mixnas("latency", "measure", files["mixnet_tiny"], "--backend", "onnxruntime",
                                 "--threads", "1", "--json"))
    target = round(measured["results"][0]["min_ms"], 4)
    doc = {"files": files, "target_ms": target}
    write_json(out / "baselines.json", doc)
    return doc


def _run_search(out: Path, key: str, target: float, minutes: float) -> None:
    """One search until its time is spent; a later call resumes it for what is left."""
    run_dir = out / key
    clock = out / f"{key}.time.json"
    spent = (read_json(clock) or {}).get("seconds", 0.0)
    left = minutes * 60 - spent
    if left <= 5 or (read_json(clock) or {}).get("finished"):
        return
    if (run_dir / "ledger.sqlite").is_file():
        cmd = ["resume", str(run_dir), "-q"]
    else:
        cmd = ["search", str(REPO / "experiments" / "fashion_mnist.yaml"), "-o", str(run_dir), "-q",
               "--set", f"reward.target={target}", "--set", f"controller.type={SEARCHES[key]}",
               "--set", f"name=fashion_mnist_{key}"]
    print(f"$ mixnas {' '.join(cmd)}  (for {left / 60:.1f} min)", file=sys.stderr, flush=True)
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "mixnas", *cmd], cwd=REPO)
    try:
        code = proc.wait(timeout=left)
        finished = code == 0
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # handled like Ctrl-C: the running trial is dropped, the ledger kept
        proc.wait()
        finished = True
    write_json(clock, {"seconds": spent + time.monotonic() - start, "finished": finished})


def stage_search(out: Path, target: float, minutes: float) -> None:
    with ThreadPoolExecutor(len(SEARCHES)) as pool:
        list(pool.map(lambda key: _run_search(out, key, target, minutes), SEARCHES))


def stage_rerank(out: Path, seeds: int) -> dict:
    """Re-evaluate each run's top 3 with more seeds; the winner of a run is its best mean reward."""
    def rerank(key: str) -> dict:
        return json.loads(mixnas("rerank", str(out / key), "--top", "3", "--seeds", str(seeds), "--json"))

    with ThreadPoolExecutor(len(SEARCHES)) as pool:  # side by side, one core each, as the searches ran
        docs = dict(zip(SEARCHES, pool.map(rerank, SEARCHES)))
    winners = {}
    for key, doc in docs.items():
        best = doc["ranking"][0]
        winners[key] = {"trial": best["trial"], "arch": f"{out / key}:{best['trial']}", "rerank": doc["ranking"],
                        "noise": doc["noise"]}
    write_json(out / "winners.json", winners)
    return winners


def finalists(out: Path) -> dict[str, str]:
    """name -> ARCH argument of the four networks trained in the end."""
    base = read_json(out / "baselines.json")["files"]
    win = read_json(out / "winners.json")
    return {"searched": win["search"]["arch"], "random": win["random"]["arch"],
            "mixnet_tiny": base["mixnet_tiny"], "mixnet_tiny_3x3": base["mixnet_tiny_3x3"]}


def _train_one(out: Path, data: Path, name: str, arch: str, seed: int, epochs: int) -> dict:
    folder = out / "train" / f"{name}-seed{seed}"
    metrics = folder / "metrics.json"
    final = read_json(metrics)
    if final and final.get("epochs") == epochs:
        return final
    args = ["train", arch, "--data", str(data), "--resolution", "32", "--epochs", str(epochs), "--recipe", RECIPE,
            "--seed", str(seed), "--threads", "1", "--device", "cpu", "--output", str(folder), "--json",
            "--no-tensorboard"]
    if (folder / "state.json").is_file():
        args.append("--resume")
    return json.loads(mixnas(*args))


def stage_train(out: Path, data: Path, epochs: int, seeds: int, jobs: int) -> None:
    work = [(name, arch, seed) for name, arch in finalists(out).items() for seed in range(seeds)]
    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(lambda w: _train_one(out, data, *w, epochs), work))


# ----------------------------------------------------------------------------------------------------------------
def _mean_sem(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var / len(values))


def _trial_points(run_dir: Path) -> list[tuple[float, float]]:
    """(latency_ms, proxy top1) of every successful trial, read from the run's ledger."""
    from mixnas.launch.ledger import Ledger

    with Ledger(run_dir / "ledger.sqlite", readonly=True) as ledger:
        return [(r.metrics["latency_ms"], r.metrics["top1"]) for r in ledger.trials()
                if r.status == "ok" and "latency_ms" in r.metrics and "top1" in r.metrics]


def stage_report(out: Path, seeds: int) -> dict:
    names = finalists(out)
    lat = json.loads(mixnas("latency", "measure", *names.values(), "--backend", "onnxruntime", "--threads", "1",
                            "--json"))["results"]
    rows = []
    for (name, arch), measured in zip(names.items(), lat):
        runs = [read_json(out / "train" / f"{name}-seed{s}" / "metrics.json") for s in range(seeds)]
        mean, sem = _mean_sem([r["top1"] for r in runs])
        rows.append({"name": name, "arch": arch, "top1_mean": mean, "top1_sem": sem,
                     "top1": [r["top1"] for r in runs], "params": runs[0]["params"], "macs": runs[0]["macs"],
                     "latency_ms": measured["min_ms"]})
    clocks = {key: read_json(out / f"{key}.time.json") for key in SEARCHES}
    trials = {key: len(_trial_points(out / key)) for key in SEARCHES}
    doc = {"rows": rows, "search_minutes": {k: round(v["seconds"] / 60, 1) for k, v in clocks.items()},
           "search_trials_ok": trials, "winners": read_json(out / "winners.json")}
    write_json(out / "report.json", doc)
    (out / "report.md").write_text(_table(rows) + "\n")
    _plot(out, rows)
    return doc


def _table(rows: list[dict]) -> str:
    lines = ["| network | test top-1 (mean +- s.e.) | seeds | params | MACs | latency (ms, ORT 1 thread) |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['top1_mean']:.4f} +- {r['top1_sem']:.4f} | {len(r['top1'])} | "
                     f"{r['params']:,} | {r['macs']:,} | {r['latency_ms']:.4f} |")
    return "\n".join(lines)


def _plot(out: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, colour in (("random", "tab:grey"), ("search", "tab:blue")):
        points = _trial_points(out / key)
        left.scatter([p[0] for p in points], [p[1] for p in points], s=8, alpha=0.5, color=colour,
                     label=f"{key} trials ({len(points)})")
    left.set(xlabel="latency measured in the trial (ms)", ylabel="proxy top-1 (held-out train images)",
             title="search trials")
    left.legend()
    for r in rows:
        right.errorbar(r["latency_ms"], r["top1_mean"], yerr=2 * r["top1_sem"], fmt="o", capsize=3, label=r["name"])
    right.set(xlabel="latency (ms, ONNX Runtime, 1 thread)", ylabel="test top-1 (mean, +- 2 s.e.)",
              title="finalists, trained fully")
    right.legend()
    fig.tight_layout()
    fig.savefig(out / "pareto.png", dpi=110)


# ----------------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/case_study", help="study folder (default %(default)s)")
    p.add_argument("--data", default=str(DATA), help="Fashion-MNIST IDX folder (default %(default)s)")
    p.add_argument("--minutes", type=float, default=60.0, help="wall time of each search (default %(default)s)")
    p.add_argument("--epochs", type=int, default=5, help="epochs of every final training (default %(default)s)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per trained network (default %(default)s)")
    p.add_argument("--jobs", type=int, default=2, help="trainings at once (default %(default)s)")
    p.add_argument("--stage", choices=("all", *STAGES), default="all")
    args = p.parse_args(argv)
    data = Path(args.data)
    if not (data / "train-images-idx3-ubyte.gz").is_file():
        print(f"search_to_model: {INSTALL}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    todo = STAGES if args.stage == "all" else (args.stage,)
    base = stage_baselines(out)
    if "search" in todo:
        stage_search(out, base["target_ms"], args.minutes)
    if "rerank" in todo:
        stage_rerank(out, args.seeds - 1)
    if "train" in todo:
        stage_train(out, data, args.epochs, args.seeds, args.jobs)
    if "report" in todo:
        doc = stage_report(out, args.seeds)
        print(_table(doc["rows"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
