"""Search spaces: codecs round-trip, sampling and mutation contracts, presets, validation messages, CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from mixnas.errors import ConfigError
from mixnas.launch.cli import main as cli_main
from mixnas.search_space.arch import Architecture
from mixnas.search_space.counting import count
from mixnas.search_space.presets import load_arch_preset, space_preset_names
from mixnas.search_space.spaces import (
    ChoiceSpace,
    Dimension,
    StageSpace,
    load_space,
    nas_bench_macro_encoding,
    nas_bench_macro_key,
)

PRESETS = ("mixnet", "mnasnet", "tiny", "nas_bench_macro")


def test_every_preset_loads_and_is_listed():
    assert set(PRESETS) <= set(space_preset_names())
    for name in space_preset_names():
        space = load_space(name)
        assert space.name == name
        assert space.cardinality == int(np.prod([d.size for d in space.dimensions], dtype=object))
        assert space.log10_cardinality == pytest.approx(np.log10(float(space.cardinality)))
        assert all(d.size > 1 for d in space.dimensions)  # single choices are constants, not dimensions


@pytest.mark.parametrize("name", PRESETS)
def test_round_trip_on_thousands_of_samples(name):
    space = load_space(name)
    rng = np.random.default_rng(7)
    for _ in range(2000):
        encoding = space.sample(rng)
        assert space.encode(space.decode(encoding)) == encoding


@pytest.mark.parametrize("name", ["mixnet", "mnasnet", "tiny"])
def test_decoded_architectures_are_valid_and_counted_exactly(name):
    space = load_space(name)
    rng = np.random.default_rng(11)
    for _ in range(300):
        encoding = space.sample(rng)
        arch = space.decode(encoding)
        rebuilt = Architecture(blocks=arch.blocks, global_params=arch.global_params, name=arch.name)
        assert rebuilt == arch  # the fast constructor gives the same (validated) record
        assert space.count(encoding) == count(arch)
        assert space.contains(arch)


@pytest.mark.parametrize(
    ("space_name", "inside", "outside"),
    [
        ("mixnet", ["mixnet_s", "mixnet_m"], ["mnasnet_a1", "mixnet_tiny"]),
        ("mnasnet", ["mnasnet_a1"], ["mixnet_s", "mnasnet_b1"]),
        ("tiny", ["mixnet_tiny"], ["mixnet_s"]),
    ],
)
def test_reference_architectures(space_name, inside, outside):
    space = load_space(space_name)
    for name in inside:
        arch = load_arch_preset(name)
        decoded = space.decode(space.encode(arch))
        assert decoded.blocks == arch.blocks
        assert count(decoded) == count(arch)
    for name in outside:
        assert not space.contains(load_arch_preset(name))


def test_mixnet_l_is_in_the_mixnet_space_with_its_width_multiplier():
    space = load_space("mixnet", overrides={"globals": {"width_multiplier": [None, 1.3]}})
    assert space.contains(load_arch_preset("mixnet_l"))
    assert space.contains(load_arch_preset("mixnet_s"))


def test_not_in_space_says_why():
    with pytest.raises(ConfigError, match=r"mnasnet_a1 is not in the space: globals.stem_width: 32 is not one of"):
        load_space("mixnet").encode(load_arch_preset("mnasnet_a1"))


@pytest.mark.parametrize("name", PRESETS)
@pytest.mark.parametrize("n", [1, 2, 3])
def test_mutation_changes_exactly_n_dimensions(name, n):
    space = load_space(name)
    rng = np.random.default_rng(n)
    for _ in range(200):
        parent = space.sample(rng)
        child = space.mutate(parent, rng, n=n)
        assert sum(a != b for a, b in zip(parent, child)) == n
        space.validate_encoding(child)


def test_neighbours_are_all_hamming_one():
    space = load_space("nas_bench_macro")
    neighbours = space.neighbours((0,) * 8)
    assert len(neighbours) == 16 == len(set(neighbours))
    assert all(sum(v != 0 for v in e) == 1 for e in neighbours)


def test_same_seed_same_samples_in_a_fresh_process():
    code = textwrap.dedent(
        """
        import json, numpy as np
        from mixnas.search_space.spaces import load_space
        rng = np.random.default_rng(123)
        print(json.dumps({n: [load_space(n).sample(rng) for _ in range(20)] for n in %r}))
        """
        % (PRESETS,)
    )
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
            for _ in range(2)]
    assert runs[0] == runs[1]
    rng = np.random.default_rng(123)
    here = {n: [list(load_space(n).sample(rng)) for _ in range(20)] for n in PRESETS}
    assert json.loads(runs[0]) == here


def test_nas_bench_macro_keys_map_one_to_one():
    space = load_space("nas_bench_macro")
    assert space.cardinality == 3**8
    assert nas_bench_macro_key((2, 2, 2, 1, 2, 2, 2, 0)) == "22212220"
    assert nas_bench_macro_encoding("22212220") == (2, 2, 2, 1, 2, 2, 2, 0)
    rng = np.random.default_rng(0)
    for _ in range(200):
        e = space.sample(rng)
        assert space.table_key(e) == nas_bench_macro_key(e)
        assert nas_bench_macro_encoding(nas_bench_macro_key(e)) == e
    with pytest.raises(ConfigError, match="expected 8 characters"):
        nas_bench_macro_encoding("2221")


def test_nas_bench_macro_keys_match_the_table(shared_dir):
    table = shared_dir / "benchmarks" / "nas_bench_macro" / "nas-bench-macro_cifar10.json"
    if not table.is_file():
        pytest.skip(f"{table} is absent")
    keys = set(json.loads(table.read_text()))
    space = load_space("nas_bench_macro")
    import itertools

    ours = {nas_bench_macro_key(e) for e in itertools.product(*(range(d.size) for d in space.dimensions))}
    assert ours == keys


def test_choice_space_api():
    space = ChoiceSpace(
        [Dimension("lr", (0.1, 0.01)), Dimension("opt", ("sgd", "adam", "rmsprop")), Dimension("bn", (True,))],
        name="hp",
    )
    assert [d.name for d in space.dimensions] == ["lr", "opt"]
    assert space.cardinality == 6
    assert space.decode((1, 2)) == {"lr": 0.01, "opt": "rmsprop", "bn": True}
    assert space.encode({"lr": 0.01, "opt": "rmsprop", "bn": True}) == (1, 2)
    assert not space.contains({"lr": 0.5, "opt": "sgd", "bn": True})
    assert not space.contains({"lr": 0.1, "opt": "sgd", "bn": 1})  # a bool choice does not take 1
    assert load_space(space.to_dict()).dimensions == space.dimensions
    with pytest.raises(ConfigError, match="appears twice"):
        Dimension("x", (1, 2, 1))
    with pytest.raises(ConfigError, match="at least one choice"):
        Dimension("x", ())


@pytest.mark.parametrize(
    ("encoding", "message"),
    [
        ((0, 1), r"expected 3 integers \(one per dimension\), got 2"),
        ((0, 1, 3), r"encoding\[2\] \(c\): index 3 out of range, expected 0..2"),
        ((0, 1, -1), r"index -1 out of range"),
        ((0, 1.0, 0), r"encoding\[1\] \(b\): expected an integer index, got 1.0"),
        ((True, 0, 0), r"expected an integer index, got True"),
        (None, "expected a sequence of 3 integers"),
    ],
)
def test_validate_encoding_messages(encoding, message):
    space = ChoiceSpace([Dimension(n, (0, 1, 2)) for n in "abc"], name="s")
    with pytest.raises(ConfigError, match=message):
        space.validate_encoding(encoding)


def test_mutate_rejects_bad_n():
    space = load_space("nas_bench_macro")
    with pytest.raises(ConfigError, match=r"n must be an integer in 1..8, got 9"):
        space.mutate((0,) * 8, np.random.default_rng(0), n=9)


def test_hard_constraints_hold_and_fail_clearly():
    space = load_space("tiny", overrides={"constraints": {"max_params": 90_000, "max_macs": 2_000_000}})
    assert isinstance(space, StageSpace)
    rng = np.random.default_rng(0)
    for _ in range(100):
        e = space.sample(rng)
        c = count(space.decode(e))
        assert c.params <= 90_000 and c.macs <= 2_000_000
        assert space.is_feasible(e)
        mutant = space.mutate(e, rng, n=2)
        assert space.is_feasible(mutant)
    impossible = load_space("tiny", overrides={"constraints": {"max_params": 1000, "max_rejections": 20}})
    with pytest.raises(ConfigError, match=r"no architecture with params <= 1,000 in 21 tries \(the smallest member"):
        impossible.sample(rng)


def test_extends_and_overrides(tmp_path: Path):
    base = tmp_path / "base.yaml"
    base.write_text("extends: tiny\nname: mine\nglobals: {num_classes: 100}\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nstages: {1: {widths: [24]}, 3: {repeats_delta: 0}}\n")
    space = load_space(child)
    tiny = load_space("tiny")
    assert space.name == "mine"
    assert space.cardinality * 3 * 2 == tiny.cardinality
    arch = space.decode(space.sample(np.random.default_rng(0)))
    assert arch.num_classes == 100 and arch.blocks[1].output_filters == 24
    again = load_space(space.to_dict())
    assert again.dimensions == space.dimensions
    loop = tmp_path / "loop.yaml"
    loop.write_text("extends: loop.yaml\n")
    with pytest.raises(ConfigError, match="extends: cycle"):
        load_space(loop)


def test_layer_granularity_merges_identical_layers():
    space = load_space(
        {
            "name": "flat",
            "globals": {"resolution": 32, "stem_width": 8, "head_width": 64, "num_classes": 10},
            "stages": [{"stride": 2, "filters": 16, "repeats": 3, "granularity": "layer", "kernel_groups": [1, 2],
                        "expand_ratio": 3}],
        }
    )
    assert [d.name for d in space.dimensions] == [f"stages[0].layers[{j}].kernel_groups" for j in range(3)]
    arch = space.decode((1, 0, 0))
    assert [b.num_repeat for b in arch.blocks] == [1, 2]
    for encoding in [(0, 0, 0), (1, 0, 1), (0, 1, 1)]:
        assert space.encode(space.decode(encoding)) == encoding


BASE = """\
name: t
globals: {resolution: 32, stem_width: 16, head_width: 64, num_classes: 10}
stages:
  - {stride: 1, filters: 16, repeats: 1}
  - {stride: 2, filters: 24, repeats: 2, repeats_delta: [0, 1], granularity: split, kernel_groups: [1, 2]}
"""


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ("colour: red\n", r"colour: unknown key; allowed keys here: \['name', 'kind', 'description'"),
        ("stages: {1: {kernel_groups: [1, 7]}}\n", r"stages\[1\]\.kernel_groups\[1\]: expected an integer in 1..5, got 7"),
        ("stages: {1: {kernel_groups: []}}\n", r"stages\[1\]\.kernel_groups: expected at least one choice, got an empty list"),
        ("stages: {1: {kernel_groups: [2, 2]}}\n", r"stages\[1\]\.kernel_groups\[1\]: duplicate choice 2"),
        ("stages: {1: {swish: 'yes'}}\n", r"stages\[1\]\.swish: expected true or false, got 'yes'"),
        ("stages: {1: {stride: 3}}\n", r"stages\[1\]\.stride: expected 1 or 2, got 3"),
        ("stages: {1: {expand_groups: [1, 4]}}\n", r"stages\[1\]\.expand_groups\[1\]: expected 1 or 2, got 4"),
        ("stages: {1: {partition: [equal, random]}}\n", r"partition\[1\]: expected one of equal, exponential, got 'random'"),
        ("stages: {1: {se_ratio: 1.5}}\n", r"stages\[1\]\.se_ratio: expected a number in \[0, 1\], got 1.5"),
        ("stages: {1: {skip: [identity, pool]}}\n", r"skip\[1\]: expected one of identity, none, got 'pool'"),
        ("stages: {0: {kernels: [4]}}\n", r"stages\[0\]\.kernels\[0\]: expected an odd kernel size"),
        ("stages: {1: {kernels: [3], kernel_groups: 1}}\n", r"stages\[1\]\.kernels: use either kernel_groups or kernels"),
        ("stages: {1: {first: {colour: 1}}}\n", r"stages\[1\]\.first\.colour: unknown key"),
        ("stages: {0: {first: {kernel_groups: 2}}}\n", r"stages\[0\]\.first: needs granularity split or layer"),
        ("stages: {1: {granularity: cell}}\n", r"stages\[1\]\.granularity: expected one of stage, split, layer, got 'cell'"),
        ("stages: {1: {repeats_delta: [-1, 0]}}\n", r"stages\[1\]\.repeats_delta\[0\]: inconsistent skeleton: repeats 2 -1 gives 1"),
        ("stages: {1: {widths: [24], width_multiplier: 1.0}}\n", r"stages\[1\]\.width_multiplier: use either widths"),
        ("stages: {1: {width_multiplier: [1.0, 1.01]}}\n", r"width_multiplier\[1\]: 1.01 and 1.0 both give 24 filters"),
        ("stages: {1: {filters: 0}}\n", r"stages\[1\]\.filters: expected an integer in 1\.\.16384, got 0"),
        ("stages: {1: {kernel_groups: 5, expand_ratio: 1, widths: [2], partition: exponential}}\n",
         r"stages\[1\]: inconsistent skeleton: the narrowest layer has \d+ channels, too few"),
        ("stages: []\n", r"stages: expected a non-empty list of stage mappings, got \[\]"),
        ("stages: {1: {repeats: null}}\n", r"stages\[1\]\.repeats: expected an integer in 1..64, got null"),
        ("globals: {num_classes: [10, 100]}\n", r"globals\.num_classes: expected a single value \(it cannot be searched\)"),
        ("globals: {resolution: 4}\n", r"globals\.resolution: expected an integer in 8..4096, got 4"),
        ("globals: {width_multiplier: [1.0, 1.0]}\n", r"globals\.width_multiplier\[1\]: duplicate choice 1.0"),
        ("layer: {expand_ratio: 0}\n", r"layer\.expand_ratio: expected an integer in 1..64, got 0"),
        ("constraints: {max_params: -5}\n", r"constraints\.max_params: expected a number in \(0, 1e\+15\] or null, got -5"),
        ("kind: graph\n", r"kind: expected one of stages, choices, got 'graph'"),
    ],
)
def test_validation_errors_name_file_path_value_and_allowed(tmp_path: Path, patch: str, message: str):
    (tmp_path / "base.yaml").write_text(BASE)
    path = tmp_path / "bad.yaml"
    path.write_text("extends: base.yaml\n" + patch)
    load_space(tmp_path / "base.yaml")  # the base itself is fine
    with pytest.raises(ConfigError, match=message) as info:
        load_space(path)
    text = str(info.value)
    assert text.startswith(f"{path}: ") and "\n" not in text


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("name: [unclosed\n", r"not valid YAML"),
        ("- 1\n- 2\n", r"expected a mapping at the top level"),
        ("dimensions: {a: []}\n", r"dimensions\.a: expected at least one choice"),
        ("dimensions: {a: [1, 1]}\n", r"dimensions\.a\[1\]: duplicate choice 1"),
        ("dimensions: {a: [{x: 1}]}\n", r"dimensions\.a\[0\]: expected a number, a string or a bool"),
        ("dimensions: {}\n", r"dimensions: expected a non-empty mapping"),
        ("extends: no_such_space\n", r"unknown search space 'no_such_space': expected a preset name"),
    ],
)
def test_choice_space_and_file_errors(tmp_path: Path, content: str, message: str):
    path = tmp_path / "space.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_space(path)


def test_unknown_space_name():
    with pytest.raises(ConfigError, match=r"unknown search space 'mixnett': expected a preset name \(mixnet"):
        load_space("mixnett")


def test_cli_show_json(capsys):
    assert cli_main(["space", "show", "mixnet", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["contains"]["mixnet_s"] and info["contains"]["mixnet_m"]
    assert info["cardinality"] == load_space("mixnet").cardinality
    assert info["log10_cardinality"] == pytest.approx(load_space("mixnet").log10_cardinality)
    assert len(info["dimensions"]) == len(load_space("mixnet").dimensions)


def test_cli_sample_json_matches_library(capsys):
    assert cli_main(["space", "sample", "tiny", "-n", "3", "--seed", "5", "--json"]) == 0
    samples = json.loads(capsys.readouterr().out)
    space = load_space("tiny")
    rng = np.random.default_rng(5)
    for item in samples:
        encoding = space.sample(rng)
        assert item["encoding"] == list(encoding)
        c = count(space.decode(encoding))
        assert (item["params"], item["macs"]) == (c.params, c.macs)
        assert Architecture.from_dict(item["architecture"]).blocks == space.decode(encoding).blocks
        assert item["block_strings"][0].startswith("r1_k3_a1_p1_s11_e1_i16_o16")


def test_cli_bad_yaml_is_one_line(tmp_path: Path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("extends: tiny\nstages: {2: {kernel_groups: [1, 7]}}\n")
    assert cli_main(["space", "show", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "stages[2].kernel_groups[1]: expected an integer in 1..5, got 7" in err


def test_sampled_architectures_build_and_run_forward():
    torch = pytest.importorskip("torch")
    models = pytest.importorskip("mixnas.models", reason="mixnas.models is not written yet")
    if not hasattr(models, "build"):
        pytest.skip("mixnas.models.build is not available yet")
    rng = np.random.default_rng(3)
    cases = [("tiny", None, 3), ("mixnet", {"globals": {"resolution": 32}}, 2), ("mnasnet", {"globals": {"resolution": 32}}, 1)]
    for name, overrides, n in cases:
        space = load_space(name, overrides=overrides)
        for _ in range(n):
            arch = space.decode(space.sample(rng))
            model = models.build(arch).eval()
            with torch.no_grad():
                out = model(torch.randn(1, 3, arch.resolution, arch.resolution))
            assert out.shape == (1, arch.num_classes)


def test_config_node_raises_the_given_error_class_and_shows_yaml_values():
    from mixnas.confignode import ConfigNode
    from mixnas.errors import ArchitectureError

    node = ConfigNode({"a": "", "b": True}, "top", "f.yaml", error=ArchitectureError, keys=("a", "b", "c"))
    with pytest.raises(ArchitectureError, match=r"^f.yaml: top.a: expected a non-empty string, got ''$"):
        node.string("a")
    with pytest.raises(ArchitectureError, match=r"^f.yaml: top.b: expected an integer, got true$"):
        node.integer("b")
    assert str(node.error("top.c", None, "a number")) == "f.yaml: top.c: expected a number, got null"
    with pytest.raises(ArchitectureError, match=r"^f.yaml: top.d: unknown key; allowed keys here: \['a', 'b', 'c'\]$"):
        ConfigNode({"d": 1}, "top", "f.yaml", error=ArchitectureError, keys=("a", "b", "c"))
    node.finish()  # declared keys need not be read

