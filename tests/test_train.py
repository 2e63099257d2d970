"""``mixnas train``: checkpoints that load with weights_only, metrics, exact resume after a SIGKILL, bad input."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mixnas.data.spec import DataSpec
from mixnas.launch import cli
from mixnas.training.checkpoint import load_model
from mixnas.training.data import load_training_data
from mixnas.search_space.presets import resolve_arch
from mixnas.training.recipe import RECIPES
from mixnas.training.trainer import Trainer, random_resized_crop

RUN = ["mixnet_tiny", "--data", "digits", "--images-per-class", "25", "--epochs", "4", "--batch-size", "32",
       "--device", "cpu", "--no-tensorboard"]
ARGS = [*RUN, "--threads", "1", "--deterministic"]  # deterministic CPU mode (in a subprocess: process-wide)


def _refused(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``mixnas train`` in this process where it is refused before training; its one line of stderr."""
    assert cli.main(["train", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mixnas: error: ") and err.count("\n") == 1, err
    return err


def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "mixnas.launch.cli", "train", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def _train(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(*args), capture_output=True, text=True, env=_env(), timeout=120)


def _final_checkpoint(folder: Path) -> dict:
    state = json.loads((folder / "state.json").read_text())
    return torch.load(folder / state["checkpoint"], weights_only=True)


def test_sigkill_then_resume_gives_identical_weights(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    done = _train(*ARGS, "--output", str(whole))
    assert done.returncode == 0, done.stderr

    proc = subprocess.Popen(_command(*ARGS, "--output", str(cut)), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=_env())
    try:
        while not (cut / "state.json").exists() and proc.poll() is None:
            time.sleep(0.01)  # polling for the first checkpoint, not synchronising on time
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert json.loads((cut / "state.json").read_text())["epoch"] < 4  # killed before the end

    resumed = _train(*ARGS, "--output", str(cut), "--resume")
    assert resumed.returncode == 0, resumed.stderr
    a, b = _final_checkpoint(whole), _final_checkpoint(cut)
    for part in ("model", "ema"):
        assert a[part].keys() == b[part].keys()
        for name in a[part]:
            assert torch.equal(a[part][name], b[part][name]), (part, name)
    assert torch.equal(a["rng"]["generator"], b["rng"]["generator"])

    # outputs: weights load with weights_only, metrics.json, a pickle-free model
    weights = torch.load(whole / "weights.pt", weights_only=True)
    assert all(torch.equal(weights[k], a["ema"][k]) for k in weights)
    metrics = json.loads((whole / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and len(metrics["history"]) == 4 and 0 <= metrics["top1"] <= 1
    assert metrics["eval_split"].startswith("held-out")
    model = load_model(whole)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)

    # a finished run is not restarted by accident; a resume must match the run
    assert "--resume" in _refused(capsys, *RUN, "--output", str(whole))
    assert "different recipe" in _refused(capsys, *RUN, "--output", str(whole), "--resume", "--recipe", "sgd-cosine")
    assert "different architecture" in _refused(capsys, "mixnet_s", *RUN[1:], "--output", str(whole), "--resume")


def test_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _train("mixnet_tiny", "--data", str(tmp_path / "missing"), "--output", str(tmp_path / "o"))
    assert bad.returncode == 2
    assert bad.stderr.startswith("mixnas: error: ") and bad.stderr.count("\n") == 1, bad.stderr
    assert "no checkpoint" in _refused(capsys, *RUN, "--output", str(tmp_path / "empty"), "--resume")
    assert "--epochs" in _refused(capsys, *RUN, "--epochs", "0", "--output", str(tmp_path / "e"))


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_data_is_evaluated_on_its_t10k_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 12)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 255, (n, 8, 8)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 4)
    data = load_training_data(DataSpec(str(tmp_path), resolution=8))
    assert data.eval_split.startswith("test (") and "t10k" in data.eval_split
    assert int(data.train_labels.numel()) == 40 and int(data.eval_labels.numel()) == 12
    assert tuple(data.eval_images.shape) == (12, 8, 8, 3)
    assert sorted(data.eval_labels.tolist()) == sorted((np.arange(12) % 4).tolist())
    assert load_training_data(DataSpec("digits")).eval_split == "held-out 20% of train"


def test_random_resized_crop_is_seeded_and_keeps_the_shape() -> None:
    batch = torch.randint(0, 256, (4, 96, 96, 3), dtype=torch.uint8)
    a = random_resized_crop(batch, torch.Generator().manual_seed(1), flip=True)
    b = random_resized_crop(batch, torch.Generator().manual_seed(1), flip=True)
    assert a.shape == batch.shape and a.dtype == torch.uint8 and torch.equal(a, b)


def test_image_folder_trains_with_random_resized_crop_and_evaluates_on_val(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for name in ("cat", "dog"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 255, (80, 80, 3), dtype=np.uint8)).save(tmp_path / split / name / f"{i}.png")
    spec = DataSpec(str(tmp_path), resolution=72, cache_dir=str(tmp_path / "cache"), workers=1)
    data = load_training_data(spec)
    assert data.eval_split == f"test ({tmp_path / 'val'})" and data.class_names == ("cat", "dog")
    seen = []
    trainer = Trainer(resolve_arch("mixnet_tiny"), data, RECIPES["sgd-cosine"], tmp_path / "out", epochs=1,
                      batch_size=4, device="cpu", on_epoch=lambda epoch, m: seen.append(epoch))
    assert trainer.crop_spec is None  # 72 px: random-resized crop, not pad-crop
    result = trainer.fit()
    assert seen == [1] and result["eval_images"] == 4 and result["evaluated_weights"] == "raw"
    assert load_model(tmp_path / "out")(torch.zeros(1, 3, 72, 72)).shape == (1, 2)


def test_init_fine_tunes_from_given_weights_and_refuses_other_architectures(tmp_path: Path,
                                                                              capsys: pytest.CaptureFixture[str]):
    first = tmp_path / "first"
    quick = [*RUN[:5], "--epochs", "1", *RUN[7:]]  # one epoch of RUN
    assert cli.main(["train", *quick, "--output", str(first)]) == 0
    capsys.readouterr()
    start = torch.load(first / "weights.pt", weights_only=True)
    arch = resolve_arch("mixnet_tiny")
    data = load_training_data(DataSpec(source="digits", images_per_class=25))
    trainer = Trainer(arch, data, RECIPES["sgd-cosine"], tmp_path / "tuned", epochs=1, init=first)
    trainer.output.mkdir()
    model = trainer._start(resume=False).model
    assert all(torch.equal(model.state_dict()[k].contiguous(), v) for k, v in start.items())
    assert json.loads((tmp_path / "tuned" / "run.json").read_text())["init"]["path"] == str(first / "weights.pt")
    other = ["mixnet_s", *RUN[1:], "--resolution", "32"]
    err = _refused(capsys, *other, "--init", str(first), "--output", str(tmp_path / "o"))
    assert "not of this architecture" in err
    assert "no weights file" in _refused(capsys, *RUN, "--init", str(tmp_path / "nothing"), "--output",
                                         str(tmp_path / "o2"))
