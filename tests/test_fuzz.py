"""Fuzzing the input boundaries: every hostile input ends in one MixnasError, never another exception or a hang.

The corpus is generated here from a fixed seed (nothing is committed): mutated block strings of the real presets in
both grammars, malformed experiment YAMLs, latency tables and data files, all through the real decoders and loaders
in-process, plus a small sample of the same classes through the ``mixnas`` command in subprocesses (exit code 2,
exactly one ``mixnas: error:`` line on stderr, no traceback).
"""

from __future__ import annotations

import gzip
import json
import os
import random
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mixnas.errors import ArchitectureError, BlockStringError, ConfigError, DataError, LatencyTableError, MixnasError
from mixnas.data.spec import DataSpec
from mixnas.data.load import load_images
from mixnas.evaluators.latency.lut import Entry, LatencyTable
from mixnas.evaluators.latency.signatures import arch_signatures
from mixnas.launch.config import load_config, parse_override
from mixnas.search_space.arch import Architecture
from mixnas.search_space.block_string import decode_mnasnet, decode_tf, encode_tf
from mixnas.search_space.timm_string import decode_timm, encode_timm, encode_timm_arch
from mixnas.search_space.arch_strings import decode_arch, encode_arch
from mixnas.search_space.presets import arch_preset_names, load_arch_preset, resolve_arch

ROOT = Path(__file__).resolve().parents[1]
SEED = 20240613
# Characters a mutation inserts: the grammar's own, digits, separators, and Unicode that looks like them.
ALPHABET = list("rkapseiocnxdqz_.0123456789 ") + ["\u00b2", "\u0663", "\uff11", "\u00e9", "\x00", "\n", "\t", "-", "+"]


# --- block strings ---------------------------------------------------------------------------------------------
def _seed_strings() -> tuple[list[str], list[str], list[str]]:
    """TF, MnasNet and timm strings of every preset (timm only where the preset is expressible in it)."""
    tf, mnasnet, timm = [], [], []
    for name in arch_preset_names():
        arch = load_arch_preset(name)
        tf += [encode_tf(b) for b in arch.blocks]
        try:
            timm += encode_timm_arch(arch)
        except BlockStringError:
            timm += [encode_timm(b) for b in arch.blocks if not b.dilated and b.partition == "equal"]
    mnasnet = [s.replace("_a1_p1", "") for s in tf if "." not in s.split("_")[1] and "_a1_p1_" in s]
    return sorted(set(tf)), sorted(set(mnasnet)), sorted(set(timm))


def _huge_number(rng: random.Random) -> str:
    return rng.choice(["9" * 20, "1" + "0" * 500, "7" * 5000, "0" * 300 + "3", "99999999"])


def mutate(string: str, rng: random.Random) -> str:
    """One to three random edits of a block string."""
    for _ in range(rng.randint(1, 3)):
        tokens = string.split("_")
        kind = rng.randrange(8)
        pos = rng.randrange(len(string) + 1)
        if kind == 0:  # insert a character
            string = string[:pos] + rng.choice(ALPHABET) + string[pos:]
        elif kind == 1 and string:  # delete a character
            string = string[: min(pos, len(string) - 1)] + string[min(pos, len(string) - 1) + 1 :]
        elif kind == 2 and string:  # replace a character
            i = min(pos, len(string) - 1)
            string = string[:i] + rng.choice(ALPHABET) + string[i + 1 :]
        elif kind == 3:  # duplicate a token
            i = rng.randrange(len(tokens))
            tokens.insert(i, tokens[i])
            string = "_".join(tokens)
        elif kind == 4 and len(tokens) > 1:  # drop a token
            tokens.pop(rng.randrange(len(tokens)))
            string = "_".join(tokens)
        elif kind == 5:  # a huge (or merely large) integer in place of a token's value
            i = rng.randrange(len(tokens))
            head = tokens[i].rstrip("0123456789.")
            tokens[i] = (head or tokens[i][:1]) + _huge_number(rng)
            string = "_".join(tokens)
        elif kind == 6:  # swap two tokens
            i, j = rng.randrange(len(tokens)), rng.randrange(len(tokens))
            tokens[i], tokens[j] = tokens[j], tokens[i]
            string = "_".join(tokens)
        else:  # an unknown trailing suffix, as in 'c16x' or 'nswq'
            i = rng.randrange(len(tokens))
            tokens[i] += rng.choice(["x", "zz", "q", ".", "..5", "e3", "\u00b2"])
            string = "_".join(tokens)
    return string


def _block_cases() -> list[tuple[str, str]]:
    rng = random.Random(SEED)
    tf, mnasnet, timm = _seed_strings()
    cases = [("tf", mutate(rng.choice(tf), rng)) for _ in range(900)]
    cases += [("mnasnet", mutate(rng.choice(mnasnet), rng)) for _ in range(200)]
    cases += [("timm", mutate(rng.choice(timm), rng)) for _ in range(900)]
    return cases


def _decode_one(grammar: str, string: str):
    if grammar == "tf":
        return decode_tf(string)
    if grammar == "mnasnet":
        return decode_mnasnet(string)
    return decode_timm(string, 16)


def test_mutated_block_strings_decode_or_raise_block_string_errors() -> None:
    cases = _block_cases()
    assert len(cases) >= 1000
    decoded = refused = 0
    for grammar, string in cases:
        try:
            block = _decode_one(grammar, string)
        except (BlockStringError, ArchitectureError) as exc:
            refused += 1
            message = str(exc)
            assert "\n" not in message and len(message) < 2000, (string, message)
            continue
        decoded += 1
        # What decodes is a valid block whose canonical string decodes back to it.
        assert decode_tf(encode_tf(block)) == block, string
    assert decoded > 50 and refused > 1000  # the corpus exercises both paths


def test_mutated_block_string_lists_build_bounded_architectures() -> None:
    rng = random.Random(SEED + 1)
    for name in arch_preset_names():
        arch = load_arch_preset(name)
        strings = [encode_tf(b) for b in arch.blocks]
        for _ in range(40):
            mutated = list(strings)
            i = rng.randrange(len(mutated))
            mutated[i] = mutate(mutated[i], rng)
            if rng.random() < 0.3:  # token-level duplication of a whole block
                mutated.insert(i, mutated[i])
            try:
                built = decode_arch(mutated, "tf", arch.global_params)
            except (BlockStringError, ArchitectureError) as exc:
                assert "\n" not in str(exc), mutated
                continue
            # what builds is an architecture whose canonical strings build it again (the layer limit is
            # Architecture's own check)
            assert decode_arch(encode_arch(built), "tf", arch.global_params) == built, mutated


@pytest.mark.parametrize(
    ("string", "fragment"),
    [
        ("r99999999999999999999_k3_a1_p1_s11_e1_i16_o16", "at most 64"),
        ("r1_k3_a1_p1_s11_e1_i16_o99999", "at most 16384"),
        ("r1_k33_a1_p1_s11_e1_i16_o16", "1..31"),
        ("r1_k3_a1_p1_s11_e65_i16_o16", "at most 64"),
        ("r\u00b2_k3_a1_p1_s11_e1_i16_o16", "expected one of the TF MixNet tokens"),
        ("r1_k3_a1_p1_s11_e1_i16_o1\u0663", "positive integer number of output filters"),
        ("r1_k3_a1_p1_s11_e1_i16_o16_se0." + "9" * 5000, "squeeze-and-excite"),
    ],
)
def test_out_of_range_tokens_name_the_limit(string: str, fragment: str) -> None:
    with pytest.raises(BlockStringError, match=fragment):
        decode_tf(string)


@pytest.mark.parametrize(
    "string", ["ir_r1_k3_s1_e6_c16x", "ir_r1_k3_s1_e6_c16_se0.25zz", "ds_r1_k3_s1_c16_nswq", "ds_r1_k3_s1_e1e9_c16"]
)
def test_unknown_trailing_characters_in_timm_tokens(string: str) -> None:
    with pytest.raises(BlockStringError, match="token"):
        decode_timm(string, 16)


def test_every_preset_is_within_the_limits() -> None:
    for name in arch_preset_names():
        arch = load_arch_preset(name)
        assert Architecture.from_json(arch.to_json()) == arch


REFERENCE_ARCHS = ROOT.parent / "shared" / "reference" / "reference_archs.json"


@pytest.mark.skipif(not REFERENCE_ARCHS.is_file(), reason=f"{REFERENCE_ARCHS} is absent (../shared not copied)")
def test_every_reference_arch_is_within_the_limits() -> None:
    reference = json.loads(REFERENCE_ARCHS.read_text())
    checked = 0
    for entry in reference.values():
        strings = entry.get("tf_official_block_strings") if isinstance(entry, dict) else None
        if isinstance(strings, list) and all(isinstance(s, str) for s in strings):
            grammar = "tf" if any("_a1" in s for s in strings) else "mnasnet"
            decode_arch(strings, grammar)  # raises if a limit were too tight
            checked += 1
    assert checked >= 5  # the official MixNet and MnasNet builders' networks


# --- experiment YAML -------------------------------------------------------------------------------------------
def _yaml_cases(rng: random.Random) -> list[bytes]:
    base = (ROOT / "experiments" / "quickstart.yaml").read_bytes()
    lines = base.splitlines(keepends=True)
    numeric = [i for i, line in enumerate(lines) if line.rstrip().split(b":")[-1].strip().isdigit()]
    cases: list[bytes] = []
    for _ in range(25):  # a byte that is not UTF-8
        pos = rng.randrange(len(base))
        cases.append(base[:pos] + bytes([rng.choice([0xFF, 0xFE, 0xC3, 0x80])]) + base[pos:])
    for _ in range(25):  # a huge integer where a count is
        i = rng.choice(numeric)
        key = lines[i].split(b":")[0]
        digits = rng.choice([30, 120, 500, 5000])
        cases.append(b"".join(lines[:i] + [key + b": " + b"9" * digits + b"\n"] + lines[i + 1 :]))
    for _ in range(20):  # cut short inside an unclosed flow collection
        pos = rng.randrange(len(base))
        cases.append(base[:pos] + b"\nname: [unclosed, " + b"{" * rng.randint(1, 5) + b"\n")
    for depth in (65, 200, 10_000, 100_000):  # nesting
        cases.append(b"name: x\nevaluator: " + b"[" * depth + b"]" * depth + b"\n")
        cases.append(b"name: x\nevaluator: " + b"{a: " * depth + b"1" + b"}" * depth + b"\n")
    for _ in range(10):  # a NUL or other control character, which YAML forbids
        pos = rng.randrange(len(base))
        cases.append(base[:pos] + rng.choice([b"\x00", b"\x07", b"\x1b"]) + base[pos:])
    for _ in range(10):  # an unknown key at the top level
        cases.append(base + f"unknown_{rng.randrange(10**6)}: 1\n".encode())
    bomb = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n".encode() for i in range(9)
    )
    cases += [bomb, b"a: &a [*a]\n", b"", b"- 1\n- 2\n", b"name: x\nseed: 2024-13-45\n", os.urandom(64) + b"\xff"]
    cases += [rng.randbytes(rng.randint(1, 400)) + b"\xff" for _ in range(6)]
    return cases


def test_malformed_experiment_yamls_end_in_config_errors(tmp_path: Path) -> None:
    cases = _yaml_cases(random.Random(SEED + 2))
    assert len(cases) >= 100
    for i, content in enumerate(cases):
        path = tmp_path / f"case{i}.yaml"
        path.write_bytes(content)
        with pytest.raises(MixnasError) as info:
            load_config(path)
        assert "\n" not in str(info.value), (content[:80], str(info.value))


@pytest.mark.parametrize(
    "text",
    ["execution.trials=" + "9" * 5000, "execution.trials=" + "[" * 10_000, "a." * 40 + "b=1", "x=\xff: [", "=3",
     "x=&a [*a]"],
)
def test_bad_set_overrides_are_config_errors(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_override(text)


# --- latency tables --------------------------------------------------------------------------------------------
def _lut_text() -> str:
    arch = resolve_arch("mixnet_tiny")
    table = LatencyTable(backend="torch", threads=1, batch_size=1, device={"cpu": "fuzz"})
    for i, sig in enumerate(dict.fromkeys(arch_signatures(arch))):
        table.entries[sig] = Entry(ms=i + 1.0, mean_ms=i + 1.5, std_ms=0.1, count=10)
    return json.dumps(table.to_dict(), indent=1)


def _lut_cases(rng: random.Random) -> list[bytes]:
    text = _lut_text()
    data = json.loads(text)
    body = text.rstrip()
    sig = next(iter(data["entries"]))
    cases: list[bytes] = []
    for _ in range(30):  # truncated: a strict prefix of a JSON object is never valid
        cases.append(body[: rng.randrange(len(body))].encode())
    for _ in range(15):  # not UTF-8
        pos = rng.randrange(len(text))
        cases.append(text[:pos].encode() + b"\xff\xfe" + text[pos:].encode())
    for depth in (65, 1000, 100_000):
        cases.append(("[" * depth + "]" * depth).encode())
        cases.append(json.dumps({**data, "device": {"cpu": "x"}})[:-1].encode() + b', "deep": ' + b"[" * depth
                     + b"]" * depth + b"}")
    bad_values = ["1" + "0" * 5000, "1e999", "-1", "0", "NaN", "Infinity", '"fast"', "null", "[]", "true"]
    for field in ("ms", "mean_ms", "std_ms", "count"):
        for raw in bad_values:
            if field == "std_ms" and raw == "0":
                continue
            entry = json.dumps({**data["entries"][sig], field: "@@"}).replace('"@@"', raw)
            cases.append(json.dumps({**data, "entries": {sig: "@@"}}).replace('"@@"', entry).encode())
    for field, raw in [("format_version", "9" * 5000), ("format_version", "99"), ("threads", "0"),
                       ("threads", "1" + "0" * 200), ("batch_size", '"one"'), ("backend", "7"), ("entries", "[]"),
                       ("format", '"other"'), ("signature_version", "-3"), ("calibration", '"yes"')]:
        cases.append(json.dumps({**data, field: "@@"}).replace('"@@"', raw).encode())
    cases += [b"", b"[]", b"null", b"42", os.urandom(100) + b"\xff", json.dumps({**data, "extra": 1}).encode()]
    return cases


def test_malformed_latency_tables_end_in_latency_table_errors(tmp_path: Path) -> None:
    good = tmp_path / "good.json"
    good.write_text(_lut_text())
    assert len(LatencyTable.load(good).entries) > 0
    cases = _lut_cases(random.Random(SEED + 3))
    assert len(cases) >= 100
    for i, content in enumerate(cases):
        path = tmp_path / f"lut{i}.json"
        path.write_bytes(content)
        with pytest.raises(LatencyTableError) as info:
            LatencyTable.load(path)
        assert "\n" not in str(info.value), (content[:80], str(info.value))
    for bad in (tmp_path / ("a" * 300 + ".json"), tmp_path, Path("/dev/zero")):
        with pytest.raises(LatencyTableError):
            LatencyTable.load(bad)


def test_malformed_latency_csv_ends_in_latency_table_errors(tmp_path: Path) -> None:
    cases = [b"\xff\xfe", b"signature,mean_ms,std_ms\nx," + b"1" * 5000 + b",0\n",
             b"signature,mean_ms,std_ms,count\nx,1,0," + b"9" * 5000 + b"\n",
             b"signature,mean_ms,std_ms\n\"" + b"x" * 200_000 + b"\",1,0\n", b"signature,mean_ms,std_ms\nx,1e999,0\n"]
    for i, content in enumerate(cases):
        path = tmp_path / f"t{i}.csv"
        path.write_bytes(content)
        with pytest.raises(LatencyTableError):
            LatencyTable.from_csv(path, backend="torch")
    with pytest.raises(LatencyTableError):
        LatencyTable.from_csv(tmp_path / ("b" * 300 + ".csv"), backend="torch")


# --- data files ------------------------------------------------------------------------------------------------
def _idx_bytes(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape) + array.tobytes()


def _write_data_cases(root: Path, rng: random.Random) -> list[tuple[Path, str]]:
    """(path, format) of data sets that are each broken in one way."""
    cases: list[tuple[Path, str]] = []
    nprng = np.random.default_rng(SEED)

    def new(name: str) -> Path:
        folder = root / f"c{len(cases)}"
        folder.mkdir(parents=True)
        return folder / name

    for i in range(30):  # npz: object arrays, truncated, garbage, wrong keys, wrong dtypes, 0-based labels
        path = new("train_data_batch_1.npz")
        kind = i % 6
        if kind == 0:
            np.savez(path, data=np.array([{"x": 1}] * 3, dtype=object), labels=np.array([1, 2, 3]))
        elif kind == 1:
            np.savez(path, data=np.zeros((3, 12), np.uint8), labels=np.array([{"y": 2}] * 3, dtype=object))
        elif kind == 2:
            np.savez(path, data=np.zeros((3, 12), np.uint8), labels=np.array([1, 2, 3]))
            whole = path.read_bytes()
            path.write_bytes(whole[: rng.randrange(1, len(whole) - 1)])
        elif kind == 3:
            path.write_bytes(rng.randbytes(rng.randint(0, 500)))
        elif kind == 4:
            np.savez(path, images=np.zeros((3, 12), np.uint8), labels=np.array([1, 2, 3]))
        else:
            np.savez(path, data=np.zeros((3, 12), np.uint8), labels=np.array([0, 1, 2]))
        cases.append((path, "npz"))
    for i in range(30):  # IDX: bad magic, truncated, zero dims, garbage gzip, truncated gzip, missing labels
        path = new("train-images-idx3-ubyte.gz" if i % 2 else "train-images-idx3-ubyte")
        images = nprng.integers(0, 255, (4, 5, 5), dtype=np.uint8)
        payload = _idx_bytes(images)
        kind = i % 5
        if kind == 0:
            payload = b"\x00\x00\x09\x03" + payload[4:]
        elif kind == 1:
            payload = payload[: rng.randrange(len(payload) - 1)]
        elif kind == 2:
            payload = _idx_bytes(np.zeros((0, 5, 5), np.uint8))
        raw = gzip.compress(payload) if path.name.endswith(".gz") else payload
        if kind == 3 and path.name.endswith(".gz"):
            raw = raw[: len(raw) // 2]
        elif kind == 3:
            raw = rng.randbytes(40)
        path.write_bytes(raw)
        if kind != 4:
            labels = _idx_bytes(np.zeros(4, np.uint8))
            label_name = path.name.replace("images-idx3", "labels-idx1")
            (path.parent / label_name).write_bytes(gzip.compress(labels) if label_name.endswith(".gz") else labels)
        cases.append((path, "idx"))
    for i in range(25):  # CIFAR binary: partial records, empty, labels out of range
        fmt = "cifar10" if i % 2 else "cifar100"
        path = new("data_batch_1.bin" if fmt == "cifar10" else "train.bin")
        record = (1 if fmt == "cifar10" else 2) + 3072
        kind = i % 3
        if kind == 0:
            path.write_bytes(rng.randbytes(record * 2 - rng.randint(1, 100)))
        elif kind == 1:
            path.write_bytes(b"")
        else:
            path.write_bytes(bytes([250] * (record - 3072)) + bytes(3072))
        cases.append((path, fmt))
    for i in range(20):  # image folders: corrupt images, empty class, no class folder
        folder = root / f"c{len(cases)}"
        (folder / "cat").mkdir(parents=True)
        kind = i % 3
        if kind == 0:
            (folder / "cat" / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + rng.randbytes(50))
        elif kind == 1:
            (folder / "cat" / "a.jpg").write_bytes(rng.randbytes(200))
            (folder / "dog").mkdir()
        else:
            (folder / "cat" / "notes.txt").write_text("no images here")
        cases.append((folder, "folder"))
    for i in range(10):  # garbage with a name that asks for auto-detection
        path = new(rng.choice(["weird.dat", "x.npz", "y.bin", "z-images-idx3-ubyte"]))
        path.write_bytes(rng.randbytes(rng.randint(0, 300)))
        cases.append((path, "auto"))
    return cases


def test_malformed_data_files_end_in_data_errors(tmp_path: Path) -> None:
    cases = _write_data_cases(tmp_path / "data", random.Random(SEED + 4))
    assert len(cases) >= 100
    for path, fmt in cases:
        spec = DataSpec(source=str(path), format=fmt, resolution=8, cache_dir=str(tmp_path / "cache"), workers=1)
        with pytest.raises(DataError) as info:
            load_images(spec)
        assert "\n" not in str(info.value), (path, fmt, str(info.value))


@pytest.mark.parametrize(
    "changes",
    [{"source": "x" * 300}, {"source": "/dev/zero"}, {"source": "synthetic", "classes": 10**9},
     {"source": "synthetic", "resolution": 10**8}, {"source": "synthetic", "images_per_class": 10**12},
     {"source": "synthetic", "classes": 1000, "images_per_class": 10_000}],
)
def test_absurd_data_specs_are_data_errors(changes: dict) -> None:
    with pytest.raises(DataError):
        load_images(DataSpec(**{"format": "auto", **changes}))


# --- the command line ------------------------------------------------------------------------------------------
def _cli_cases(tmp: Path) -> list[list[str]]:
    long = "a" * 300
    (tmp / "bad.yaml").write_bytes(b"name: \xff\n")
    (tmp / "deep.yaml").write_text("[" * 100_000 + "]" * 100_000)
    (tmp / "big.yaml").write_text("name: x\nexecution:\n  trials: " + "1" * 5000 + "\n")
    (tmp / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp / "bad.txt").write_bytes(b"r1_k3_a1_p1_s11_e1_i16_o16 \xff\n")
    (tmp / "lut.json").write_text('{"format_version": ' + "9" * 5000 + "}")
    np.savez(tmp / "obj.npz", data=np.array([{"a": 1}], dtype=object), labels=np.array([1]))
    (tmp / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + os.urandom(30))
    (tmp / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b" + os.urandom(30))
    quick = str(ROOT / "experiments" / "quickstart.yaml")
    return [
        ["build", "ir_r1_k3_s1_e6_c16x"],
        ["build", "ds_r1_k3_s1_c16_nswq"],
        ["build", "ir_r1_k3_s1_e6_c16_se0.25zz"],
        ["build", "r99999999999999999999_k3_a1_p1_s11_e1_i16_o16"],
        ["build", "r" + "9" * 5000 + "_k3_a1_p1_s11_e1_i16_o16"],
        ["build", "r1_k3_a1_p1_s11_e1_i16_o16", "--resolution", "999999999"],
        ["build", long],
        ["train-proxy", "--arch", "mixnet_tiny", "--data", "synthetic", "--threads", "1000000", "--steps", "1"],
        ["build", str(tmp / "bad.txt")],
        ["build", str(tmp / "deep.json")],
        ["build", str(tmp / "deep.yaml")],
        ["build", "mixnet_s", "--grammar", "onnx"],
        ["status", long],
        ["export", long],
        ["search", long + ".yaml"],
        ["search", str(tmp / "bad.yaml")],
        ["search", str(tmp / "deep.yaml")],
        ["search", str(tmp / "big.yaml")],
        ["search", quick, "--set", "execution.trials=" + "9" * 5000],
        ["search", "/dev/zero"],
        ["space", "show", long],
        ["space", "show", str(tmp / "deep.yaml")],
        ["space", "sample", "tiny", "-n", "100000000"],
        ["latency", "predict", "--lut", str(tmp / "lut.json"), "mixnet_s"],
        ["latency", "predict", "--lut", long, "mixnet_s"],
        ["latency", "import-csv", "--out", str(tmp / "o.json"), "--backend", "torch", str(tmp / "bad.txt")],
        ["train-proxy", "--arch", "mixnet_tiny", "--data", "synthetic", "--format", "tfrecord"],
        ["train-proxy", "--arch", "mixnet_tiny", "--data", str(tmp / "obj.npz"), "--steps", "1"],
        ["train-proxy", "--arch", "mixnet_tiny", "--data", str(tmp / "train-images-idx3-ubyte.gz"), "--steps", "1"],
        ["train-proxy", "--arch", "mixnet_tiny", "--data", long, "--steps", "1"],
    ]


def _run_cli(args: list[str], cwd: Path) -> tuple[list[str], subprocess.CompletedProcess | None]:
    try:
        done = subprocess.run(
            [sys.executable, "-m", "mixnas.launch.cli", *args], capture_output=True, text=True, errors="replace",
            timeout=10, cwd=cwd, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    except subprocess.TimeoutExpired:
        return args, None
    return args, done


def test_cli_refuses_hostile_input_with_one_line_and_exit_2(tmp_path: Path) -> None:
    cases = _cli_cases(tmp_path)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda a: _run_cli(a, tmp_path), cases))
    failures = []
    for args, done in results:
        shown = " ".join(a if len(a) < 60 else a[:40] + "..." for a in args)
        if done is None:
            failures.append(f"{shown}: no answer within 10 s")
            continue
        lines = done.stderr.splitlines()
        if done.returncode != 2 or len(lines) != 1 or not lines[0].startswith("mixnas: error:"):
            failures.append(f"{shown}: exit {done.returncode}, stderr {done.stderr[-300:]!r}")
        elif "Traceback" in done.stderr:
            failures.append(f"{shown}: traceback")
    assert not failures, "\n".join(failures)


# --- every numeric command-line option has a range, checked while parsing ---------------------------------------
HOSTILE_NUMBERS = ("9" * 400, "1e400", "-1", "0", "nan", "inf", "-inf", "abc", "1.5", "")


def _numeric_options():
    import argparse

    from mixnas.launch.cli import make_parser

    def walk(parser, prog):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{prog} {name}")
            elif action.type is not None and action.option_strings:
                yield prog, action

    return list(walk(make_parser(None), "mixnas"))


def test_every_numeric_option_has_a_range_that_refuses_hostile_values() -> None:
    import argparse

    options = _numeric_options()
    raw = [f"{prog} {a.option_strings[0]}" for prog, a in options if a.type in (int, float)]
    assert not raw, f"numeric options without a range (use mixnas.bounds): {raw}"
    ranged = [(prog, a) for prog, a in options if hasattr(a.type, "range")]
    assert len(ranged) >= 60, len(ranged)
    for prog, action in ranged:
        rng = action.type.range
        assert rng.high is not None, f"{prog} {action.option_strings[0]}: no upper bound"
        for text in HOSTILE_NUMBERS:
            try:
                value = action.type(text)
            except argparse.ArgumentTypeError as exc:
                message = str(exc)
                assert message.startswith("expected ") and "\n" not in message and len(message) < 200, message
            else:
                assert rng.contains(value), (prog, action.option_strings, text, value)
        if action.default is not None:
            assert rng.contains(action.default), (prog, action.option_strings, action.default)


@pytest.mark.parametrize("argv", [
    ["status", "RUN", "--top", "-1"],
    ["latency", "profile", "--space", "tiny", "-n", "0", "--out", "x.json"],
    ["latency", "measure", "mixnet_tiny", "--min-seconds", "1e308"],
    ["latency", "measure", "mixnet_tiny", "--rounds", "9" * 50],
    ["train", "mixnet_tiny", "--data", "digits", "--threads", "5000"],
    ["train-proxy", "--arch", "mixnet_tiny", "--data", "digits", "--lr", "nan"],
    ["rerank", "RUN", "--seeds", "1000"],
])
def test_an_out_of_range_option_is_one_line_and_exit_2_before_any_work(argv, capsys) -> None:
    from mixnas.launch.cli import main

    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mixnas: error: argument ") and "expected " in err[0], err


def test_every_numeric_config_key_refuses_hostile_values_in_one_line() -> None:
    import copy

    import yaml

    from mixnas.errors import ConfigError
    from mixnas.launch.config import apply_overrides, config_from_dict
    from mixnas.launch.experiment_config import CONFIG_RANGES

    repo = Path(__file__).resolve().parents[1]
    base = yaml.safe_load((repo / "experiments" / "quickstart.yaml").read_text())
    base["execution"]["scheduler"] = {"type": "none"}
    supernet_keys = {"evaluator.bn_batches", "evaluator.batch_size", "evaluator.eval_batch_size", "evaluator.threads"}
    for key, rng in CONFIG_RANGES.items():
        if key in supernet_keys:
            continue  # a supernet evaluator needs a trained supernet folder; its keys go through the same ranged()
        for text in ("9" * 400, "1e400", "-1", "0", ".nan", ".inf", "abc", "1.5", "[1]"):
            try:
                data = apply_overrides(copy.deepcopy(base), [f"{key}={text}"])
                cfg = config_from_dict(data, source="q.yaml", check_space=False)
            except ConfigError as exc:
                message = str(exc)
                assert "\n" not in message and len(message) < 400, (key, text, message)
                assert key.split(".")[-1] in message, (key, text, message)
            else:  # accepted: the value is in the documented range
                value = yaml.safe_load(text)
                assert rng.contains(value), (key, text, cfg)


def test_every_range_table_in_the_docs_is_the_one_in_the_code() -> None:
    """Each ``<!-- ranges: generated from MODULE.NAME -->`` table of docs/ lists that table's keys and ranges, in
    its order; and every range table of the configuration has one."""
    import importlib
    import re

    docs = Path(__file__).resolve().parents[1] / "docs"
    found = set()
    for page in sorted(docs.glob("*.md")):
        text = page.read_text()
        for match in re.finditer(r"<!-- ranges: generated from ([\w.]+)\.(\w+);.*?-->(.*?)<!-- /ranges -->", text, re.S):
            module, name, block = match.groups()
            table = getattr(importlib.import_module(module), name)
            rows = [line for line in block.splitlines() if line.startswith("| `")]
            assert rows == [f"| `{key}` | {rng.describe()} |" for key, rng in table.items()], (page.name, name)
            found.add(name)
    assert found >= {"CONFIG_RANGES", "SPACE_RANGES", "SUPERNET_RANGES", "PROXY_RANGES", "DATA_RANGES",
                     "MEASURE_RANGES"}, found
