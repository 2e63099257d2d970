"""Write one controller state_dict per controller type with the mixnas on PYTHONPATH (run from a worktree of the
commit), plus the next suggestions the saved controller makes (the continuation a resume must reproduce).

    PYTHONPATH=/tmp/oldfmt_COMMIT python make_controllers.py OUT_DIR macro3.json
"""
import json
import sys
from pathlib import Path

from mixnas.controllers.base import Result
from mixnas.controllers.registry import make_controller

try:
    from mixnas.search_space.space import load_space  # before 14a9bee
except ImportError:
    from mixnas.search_space.spaces.yaml_reader import load_space

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
table = json.loads(Path(sys.argv[2]).read_text())
space = load_space({"name": "macro3", "kind": "choices",
                    "dimensions": {"layer0": [0, 1, 2], "layer1": [0, 1, 2], "layer2": [0, 1, 2]}})
OPTIONS = {"random": {}, "evolution": {"population_size": 4, "sample_size": 2},
           "rl": {"hidden_size": 8, "batch_size": 2}, "optuna": {"sampler": "tpe"}}
expected = {}
for name, options in OPTIONS.items():
    c = make_controller(name, space, objectives=[("mean_acc", "max")], seed=7, **options)
    for _ in range(3):  # three rounds of two asks and two tells
        asked = [c.ask() for _ in range(2)]
        for s in asked:
            acc = table["".join(str(i) for i in s.encoding)]["mean_acc"]
            c.tell(s.id, Result("ok", {"mean_acc": acc}))
    pending = c.ask()  # one suggestion left pending in the saved state
    state = c.state_dict()
    (out / f"{name}.json").write_text(json.dumps(state, sort_keys=True) + "\n")
    c.tell(pending.id, Result("ok", {"mean_acc": table["".join(str(i) for i in pending.encoding)]["mean_acc"]}))
    nxt = []
    for _ in range(3):
        s = c.ask()
        nxt.append([s.id, list(s.encoding)])
        c.tell(s.id, Result("ok", {"mean_acc": table["".join(str(i) for i in s.encoding)]["mean_acc"]}))
    expected[name] = {"pending": [pending.id, list(pending.encoding)], "next": nxt}
(out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
print(json.dumps(expected))
