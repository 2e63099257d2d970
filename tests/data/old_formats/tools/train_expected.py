"""Logits of a train folder's model (loaded by the mixnas on PYTHONPATH) on a fixed input; prints JSON.

    PYTHONPATH=/tmp/oldfmt_COMMIT python train_expected.py TRAIN_DIR
"""
import json
import sys

import numpy as np
import torch

from mixnas.training.checkpoint import load_model, read_arch

torch.set_num_threads(1)
folder = sys.argv[1]
arch = read_arch(__import__("pathlib").Path(folder))
x = torch.from_numpy(np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32))
with torch.no_grad():
    logits = load_model(folder)(x)
print(json.dumps({"arch_id": arch.id, "input": "numpy.random.default_rng(0).standard_normal((2, 3, 16, 16)), float32",
                  "logits": logits.tolist()}))
