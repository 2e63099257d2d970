"""Block-string codecs: official strings, random round trips, every error path, timm conversion, `mixnas build`.

The official strings are copied from tensorflow/tpu (``mixnet_builder.py``, ``mnasnet_models.py``) and timm
(``efficientnet.py``) as quoted in ``shared/reference/mixnet_reference.md`` §1.5, §1.6, §2.2 and
``reference_archs.json`` (``timm_block_strings``).
"""

from __future__ import annotations

import random

import pytest

from mixnas.errors import BlockStringError
from mixnas.launch.cli import main
from mixnas.search_space.arch import Architecture, BlockArgs, GlobalParams
from mixnas.search_space.block_string import decode_mnasnet, decode_tf, encode_mnasnet, encode_tf, format_float
from mixnas.search_space.timm_string import (
    decode_timm,
    decode_timm_arch,
    encode_timm,
    encode_timm_arch,
    encode_timm_stages,
    group_timm_stages,
    timm_problems,
)
from mixnas.search_space.arch_strings import decode_arch, encode_arch, tf_to_timm, timm_to_tf
from mixnas.search_space.presets import load_arch_preset

MIXNET_S = [
    "r1_k3_a1_p1_s11_e1_i16_o16",
    "r1_k3_a1.1_p1.1_s22_e6_i16_o24",
    "r1_k3_a1.1_p1.1_s11_e3_i24_o24",
    "r1_k3.5.7_a1_p1_s22_e6_i24_o40_se0.5_sw",
    "r3_k3.5_a1.1_p1.1_s11_e6_i40_o40_se0.5_sw",
    "r1_k3.5.7_a1_p1.1_s22_e6_i40_o80_se0.25_sw",
    "r2_k3.5_a1_p1.1_s11_e6_i80_o80_se0.25_sw",
    "r1_k3.5.7_a1.1_p1.1_s11_e6_i80_o120_se0.5_sw",
    "r2_k3.5.7.9_a1.1_p1.1_s11_e3_i120_o120_se0.5_sw",
    "r1_k3.5.7.9.11_a1_p1_s22_e6_i120_o200_se0.5_sw",
    "r2_k3.5.7.9_a1_p1.1_s11_e6_i200_o200_se0.5_sw",
]
MIXNET_M = [
    "r1_k3_a1_p1_s11_e1_i24_o24",
    "r1_k3.5.7_a1.1_p1.1_s22_e6_i24_o32",
    "r1_k3_a1.1_p1.1_s11_e3_i32_o32",
    "r1_k3.5.7.9_a1_p1_s22_e6_i32_o40_se0.5_sw",
    "r3_k3.5_a1.1_p1.1_s11_e6_i40_o40_se0.5_sw",
    "r1_k3.5.7_a1_p1_s22_e6_i40_o80_se0.25_sw",
    "r3_k3.5.7.9_a1.1_p1.1_s11_e6_i80_o80_se0.25_sw",
    "r1_k3_a1_p1_s11_e6_i80_o120_se0.5_sw",
    "r3_k3.5.7.9_a1.1_p1.1_s11_e3_i120_o120_se0.5_sw",
    "r1_k3.5.7.9_a1_p1_s22_e6_i120_o200_se0.5_sw",
    "r3_k3.5.7.9_a1_p1.1_s11_e6_i200_o200_se0.5_sw",
]
MNASNET_A1 = [
    "r1_k3_s11_e1_i32_o16_noskip",
    "r2_k3_s22_e6_i16_o24",
    "r3_k5_s22_e3_i24_o40_se0.25",
    "r4_k3_s22_e6_i40_o80",
    "r2_k3_s11_e6_i80_o112_se0.25",
    "r3_k5_s22_e6_i112_o160_se0.25",
    "r1_k3_s11_e6_i160_o320",
]
MNASNET_B1 = [
    "r1_k3_s11_e1_i32_o16_noskip",
    "r3_k3_s22_e3_i16_o24",
    "r3_k5_s22_e3_i24_o40",
    "r3_k5_s22_e6_i40_o80",
    "r2_k3_s11_e6_i80_o96",
    "r4_k5_s22_e6_i96_o192",
    "r1_k3_s11_e6_i192_o320_noskip",
]
TIMM_MIXNET_S = [
    ["ds_r1_k3_s1_e1_c16"],
    ["ir_r1_k3_a1.1_p1.1_s2_e6_c24", "ir_r1_k3_a1.1_p1.1_s1_e3_c24"],
    ["ir_r1_k3.5.7_s2_e6_c40_se0.5_nsw", "ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw"],
    ["ir_r1_k3.5.7_p1.1_s2_e6_c80_se0.25_nsw", "ir_r2_k3.5_p1.1_s1_e6_c80_se0.25_nsw"],
    ["ir_r1_k3.5.7_a1.1_p1.1_s1_e6_c120_se0.5_nsw", "ir_r2_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw"],
    ["ir_r1_k3.5.7.9.11_s2_e6_c200_se0.5_nsw", "ir_r2_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw"],
]
# timm's mixnet_m and mixnet_l (the latter with channel_multiplier=1.3) share these strings.
TIMM_MIXNET_M = [
    ["ds_r1_k3_s1_e1_c24"],
    ["ir_r1_k3.5.7_a1.1_p1.1_s2_e6_c32", "ir_r1_k3_a1.1_p1.1_s1_e3_c32"],
    ["ir_r1_k3.5.7.9_s2_e6_c40_se0.5_nsw", "ir_r3_k3.5_a1.1_p1.1_s1_e6_c40_se0.5_nsw"],
    ["ir_r1_k3.5.7_s2_e6_c80_se0.25_nsw", "ir_r3_k3.5.7.9_a1.1_p1.1_s1_e6_c80_se0.25_nsw"],
    ["ir_r1_k3_s1_e6_c120_se0.5_nsw", "ir_r3_k3.5.7.9_a1.1_p1.1_s1_e3_c120_se0.5_nsw"],
    ["ir_r1_k3.5.7.9_s2_e6_c200_se0.5_nsw", "ir_r3_k3.5.7.9_p1.1_s1_e6_c200_se0.5_nsw"],
]
TIMM_MNASNET_A1 = [
    ["ds_r1_k3_s1_e1_c16_noskip"],
    ["ir_r2_k3_s2_e6_c24"],
    ["ir_r3_k5_s2_e3_c40_se0.25"],
    ["ir_r4_k3_s2_e6_c80"],
    ["ir_r2_k3_s1_e6_c112_se0.25"],
    ["ir_r3_k5_s2_e6_c160_se0.25"],
    ["ir_r1_k3_s1_e6_c320"],
]
# timm writes B1's first block without e1 (a ds block ignores e); mixnas writes e1 as timm's MixNets and A1 do.
TIMM_MNASNET_B1 = [
    ["ds_r1_k3_s1_c16_noskip"],
    ["ir_r3_k3_s2_e3_c24"],
    ["ir_r3_k5_s2_e3_c40"],
    ["ir_r3_k5_s2_e6_c80"],
    ["ir_r2_k3_s1_e6_c96"],
    ["ir_r4_k5_s2_e6_c192"],
    ["ir_r1_k3_s1_e6_c320_noskip"],
]


def flat(stages: list[list[str]]) -> list[str]:
    return [s for stage in stages for s in stage]


# --- official strings ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("string", MIXNET_S + MIXNET_M)
def test_official_tf_strings_round_trip(string: str) -> None:
    assert encode_tf(decode_tf(string)) == string


@pytest.mark.parametrize("string", MNASNET_A1 + MNASNET_B1)
def test_official_mnasnet_strings_round_trip(string: str) -> None:
    assert encode_mnasnet(decode_mnasnet(string)) == string


def test_decode_tf_fields() -> None:
    block = decode_tf("r3_k3.5.7_a1.1_p1_s22_e6_i24_o40_se0.5_noskip_sw_dilated_xp")
    assert block == BlockArgs(
        num_repeat=3,
        kernel_sizes=(3, 5, 7),
        expand_kernels=(1, 1),
        project_kernels=(1,),
        strides=(2, 2),
        expand_ratio=6,
        input_filters=24,
        output_filters=40,
        se_ratio=0.5,
        swish=True,
        id_skip=False,
        dilated=True,
        partition="exponential",
    )


def test_tf_tokens_in_any_order_are_reemitted_canonically() -> None:
    assert encode_tf(decode_tf("sw_o40_i24_e6_s22_p1_a1_k3.5.7_r1_se0.5")) == MIXNET_S[3]


def test_mnasnet_strings_decode_like_tf() -> None:
    for mnas in MNASNET_A1:
        block = decode_mnasnet(mnas)
        assert encode_tf(block) == mnas.replace("_s", "_a1_p1_s", 1)


@pytest.mark.parametrize(
    ("preset", "stages"),
    [("mixnet_s", TIMM_MIXNET_S), ("mixnet_m", TIMM_MIXNET_M), ("mnasnet_a1", TIMM_MNASNET_A1)],
)
def test_presets_encode_to_timms_own_definitions(preset: str, stages: list[list[str]]) -> None:
    arch = load_arch_preset(preset)
    assert encode_arch(arch, "timm") == flat(stages)
    assert encode_timm_stages(arch) == stages
    assert group_timm_stages(flat(stages)) == stages


def test_mnasnet_b1_matches_timm_but_for_the_ds_e1_token() -> None:
    arch = load_arch_preset("mnasnet_b1")
    ours = encode_timm_stages(arch)
    assert ours[0] == ["ds_r1_k3_s1_e1_c16_noskip"]
    assert ours[1:] == TIMM_MNASNET_B1[1:]
    assert decode_timm("ds_r1_k3_s1_c16_noskip", 32) == decode_timm(ours[0][0], 32)


@pytest.mark.parametrize(
    ("preset", "stages"),
    [
        ("mixnet_s", TIMM_MIXNET_S),
        ("mixnet_m", TIMM_MIXNET_M),
        ("mixnet_l", TIMM_MIXNET_M),
        ("mnasnet_a1", TIMM_MNASNET_A1),
        ("mnasnet_b1", TIMM_MNASNET_B1),
    ],
)
def test_timm_definitions_decode_to_the_presets(preset: str, stages: list[list[str]]) -> None:
    arch = load_arch_preset(preset)
    for strings in (stages, flat(stages)):
        decoded = decode_timm_arch(strings, arch.global_params, name=preset)
        assert decoded == arch


def test_mixnet_l_folds_the_multiplier_or_keeps_it_for_timm() -> None:
    arch = load_arch_preset("mixnet_l")
    folded = encode_timm_arch(arch)
    assert folded[0] == "ds_r1_k3_s1_e1_c32"
    assert folded[-1] == "ir_r3_k3.5.7.9_p1.1_s1_e6_c264_se0.5_nsw"
    # The folded strings build the same network at timm's channel_multiplier 1.0 with stem 32.
    unscaled = decode_timm_arch(folded, GlobalParams(stem_size=32, feature_size=1536))
    assert unscaled.layers() == arch.layers()
    assert encode_timm_stages(arch, channel_multiplier=1.3) == TIMM_MIXNET_M


def test_timm_to_tf_and_back_for_the_references() -> None:
    assert timm_to_tf(TIMM_MIXNET_S, 16) == MIXNET_S
    assert timm_to_tf(TIMM_MIXNET_M, 24) == MIXNET_M
    assert tf_to_timm(MIXNET_S, 16) == flat(TIMM_MIXNET_S)
    assert tf_to_timm(MIXNET_M, 24, width_multiplier=1.3, channel_multiplier=1.3) == flat(TIMM_MIXNET_M)
    assert timm_to_tf(TIMM_MIXNET_M, 24, channel_multiplier=1.3) == MIXNET_M
    a1 = [s.replace("_s", "_a1_p1_s", 1) for s in MNASNET_A1]
    assert timm_to_tf(TIMM_MNASNET_A1, 32) == a1
    assert tf_to_timm(a1, 32) == flat(TIMM_MNASNET_A1)


def test_decode_timm_without_global_params_uses_first_width_as_stem() -> None:
    arch = decode_arch(flat(TIMM_MIXNET_S), "timm")
    assert arch.global_params.stem_size == 16 and arch.head_channels == 1536
    assert encode_arch(arch, "tf") == MIXNET_S


# --- random round trips --------------------------------------------------------------------------------------


def _kernels(rng: random.Random) -> list[int]:
    if rng.random() < 0.7:
        return [3 + 2 * i for i in range(rng.randint(1, 5))]  # the MixConv convention 3, 5, 7, ...
    return [rng.choice([1, 3, 5, 7, 9, 11]) for _ in range(rng.randint(1, 4))]


def _se(rng: random.Random) -> float | None:
    choice = rng.random()
    if choice < 0.4:
        return None
    if choice < 0.8:
        return rng.choice([0.25, 0.5, 1.0, 0.125])
    return rng.randint(1, 999) / 1000


def _join(values: list[int]) -> str:
    return ".".join(str(v) for v in values)


def random_tf_string(rng: random.Random) -> tuple[str, dict]:
    fields = {
        "num_repeat": rng.randint(1, 6),
        "kernel_sizes": tuple(_kernels(rng)),
        "expand_kernels": (1,) * rng.randint(1, 4),
        "project_kernels": (1,) * rng.randint(1, 4),
        "strides": rng.choice([(1, 1), (2, 2)]),
        "expand_ratio": rng.randint(1, 8),
        "input_filters": rng.randint(1, 640),
        "output_filters": rng.randint(1, 640),
        "se_ratio": _se(rng),
        "id_skip": rng.random() < 0.7,
        "swish": rng.random() < 0.5,
        "dilated": rng.random() < 0.2,
        "partition": "exponential" if rng.random() < 0.2 else "equal",
    }
    tokens = [
        f"r{fields['num_repeat']}",
        "k" + _join(fields["kernel_sizes"]),
        "a" + _join(fields["expand_kernels"]),
        "p" + _join(fields["project_kernels"]),
        "s%d%d" % fields["strides"],
        f"e{fields['expand_ratio']}",
        f"i{fields['input_filters']}",
        f"o{fields['output_filters']}",
    ]
    if fields["se_ratio"] is not None:
        tokens.append(f"se{format_float(fields['se_ratio'])}")
    for flag, on in (
        ("noskip", not fields["id_skip"]),
        ("sw", fields["swish"]),
        ("dilated", fields["dilated"]),
        ("xp", fields["partition"] == "exponential"),
    ):
        if on:
            tokens.append(flag)
    return "_".join(tokens), fields


def test_random_tf_strings_round_trip() -> None:
    rng = random.Random(20190722)
    for _ in range(3000):
        string, fields = random_tf_string(rng)
        block = decode_tf(string)
        assert block == BlockArgs(**fields), string
        assert encode_tf(block) == string


def test_random_mnasnet_strings_round_trip() -> None:
    rng = random.Random(1807)
    for _ in range(2000):
        tokens = [
            f"r{rng.randint(1, 6)}",
            f"k{rng.choice([1, 3, 5, 7])}",
            f"s{rng.choice(['11', '22'])}",
            f"e{rng.randint(1, 8)}",
            f"i{rng.randint(1, 640)}",
            f"o{rng.randint(1, 640)}",
        ]
        se = _se(rng)
        if se is not None:
            tokens.append(f"se{format_float(se)}")
        if rng.random() < 0.3:
            tokens.append("noskip")
        string = "_".join(tokens)
        block = decode_mnasnet(string)
        assert encode_mnasnet(block) == string
        assert decode_tf(encode_tf(block)) == block


def test_random_tf_blocks_encode_as_mnasnet_only_where_expressible() -> None:
    rng = random.Random(7)
    encoded = refused = 0
    for _ in range(2000):
        block = decode_tf(random_tf_string(rng)[0])
        expressible = (
            len(block.kernel_sizes) == 1
            and block.expand_groups == block.project_groups == 1
            and not (block.swish or block.dilated)
            and block.partition == "equal"
        )
        if expressible:
            assert decode_mnasnet(encode_mnasnet(block)) == block
            encoded += 1
        else:
            with pytest.raises(BlockStringError, match="cannot encode block"):
                encode_mnasnet(block)
            refused += 1
    assert encoded > 5 and refused > 1000


def random_timm_string(rng: random.Random) -> str:
    expand = rng.choice([1, 1, 2, 3, 4, 6])
    tokens = ["ds" if expand == 1 else "ir", f"r{rng.randint(1, 6)}", "k" + _join(_kernels(rng))]
    if rng.random() < 0.4:
        tokens.append("a" + _join([1] * rng.randint(2, 4)))
    if rng.random() < 0.4:
        tokens.append("p" + _join([1] * rng.randint(2, 4)))
    tokens += [f"s{rng.choice([1, 2])}", f"e{expand}", f"c{rng.randint(1, 640)}"]
    se = _se(rng)
    if se is not None:
        tokens.append(f"se{format_float(se)}")
    if rng.random() < 0.5:
        tokens.append("nsw")
    if rng.random() < 0.3:
        tokens.append("noskip")
    return "_".join(tokens)


def test_random_timm_strings_round_trip() -> None:
    rng = random.Random(2019)
    for _ in range(3000):
        string = random_timm_string(rng)
        block = decode_timm(string, rng.randint(1, 640))
        assert encode_timm(block) == string


def random_arch(rng: random.Random, multiple: int) -> Architecture:
    """A chained random architecture (each input is the previous output) with widths multiples of `multiple`."""
    stem = multiple * rng.randint(max(1, 8 // multiple), 64 // multiple)
    previous = stem
    strings = []
    for index in range(rng.randint(1, 7)):
        out = multiple * rng.randint(max(1, 8 // multiple), 320 // multiple)
        tokens = [
            f"r{rng.randint(1, 3)}",
            "k" + _join([3 + 2 * i for i in range(rng.randint(1, 4))]),
            "a" + _join([1] * rng.randint(1, 2)),
            "p" + _join([1] * rng.randint(1, 2)),
            "s22" if index > 0 and rng.random() < 0.4 else "s11",
            f"e{rng.choice([1, 3, 6])}",
            f"i{previous}",
            f"o{out}",
        ]
        se = rng.choice([None, 0.25, 0.5, 1.0]) if multiple == 8 else _se(rng)
        if se is not None:
            tokens.append(f"se{format_float(se)}")
        if rng.random() < 0.2:
            tokens.append("noskip")
        if rng.random() < 0.5:
            tokens.append("sw")
        strings.append("_".join(tokens))
        previous = out
    return decode_arch(strings, "tf", GlobalParams(stem_size=stem, resolution=64))


def test_random_multiple_of_8_archs_round_trip_through_timm() -> None:
    rng = random.Random(8)
    for _ in range(400):
        arch = random_arch(rng, 8)
        tf_strings = encode_arch(arch, "tf")
        timm_strings = tf_to_timm(tf_strings, arch.global_params.stem_size)
        assert timm_to_tf(timm_strings, arch.global_params.stem_size) == tf_strings
        stages = group_timm_stages(timm_strings)
        assert flat(stages) == timm_strings
        back = decode_timm_arch(stages, arch.global_params)
        assert back == arch


def test_random_archs_convert_to_timm_exactly_or_refuse() -> None:
    rng = random.Random(9)
    converted = refused = 0
    for _ in range(400):
        arch = random_arch(rng, rng.choice([1, 2, 4]))
        try:
            timm_strings = encode_timm_arch(arch)
        except BlockStringError as exc:
            assert "cannot express the architecture in the timm grammar" in str(exc)
            assert timm_problems(arch)
            refused += 1
            continue
        converted += 1
        back = decode_timm_arch(timm_strings, arch.global_params)
        assert back.layers() == arch.layers()  # the same network, layer for layer
        assert all(x.out_channels % 8 == 0 for x in arch.layers())
    assert converted > 5 and refused > 200


# --- malformed strings ---------------------------------------------------------------------------------------

TF_ERRORS = [
    ("r1_k3_a1_s11_e6_i16_o16", "'p'", "missing mandatory"),
    ("k3_a1_p1_s11_e6_i16_o16", "'r'", "missing mandatory"),
    ("r1_k3_a1_p1_s2_e6_i16_o16", "'s2'", "two-digit stride"),
    ("r1_k3_a1_p1_s13_e6_i16_o16", "'s13'", "two-digit stride"),
    ("r1_k4_a1_p1_s11_e6_i16_o16", "'k4'", "odd kernel"),
    ("r1_k3.x_a1_p1_s11_e6_i16_o16", "'k3.x'", "odd kernel"),
    ("r1_k3_k5_a1_p1_s11_e6_i16_o16", "'k5'", "only once"),
    ("r1_k3_a1_p1_s11_e6_i16_o16_sw_sw", "'sw'", "at most once"),
    ("r1_k3_a1_p1_s11_e6_i16_o16_x1", "'x1'", "one of the TF MixNet tokens"),
    ("r1_k3_a1_p1_s11_e6_i16_o16_nsw", "'nsw'", "one of the TF MixNet tokens"),
    ("r1_k3_a1_p1_s11_e1.5_i16_o16", "'e1.5'", "positive integer expansion ratio"),
    ("r1_k3_a1_p1_s11_e0_i16_o16", "'e0'", "positive integer expansion ratio"),
    ("r0_k3_a1_p1_s11_e6_i16_o16", "'r0'", "positive integer number of repeats"),
    ("r1_k3_a1_p1_s11_e6_i16_o16_se0", "'se0'", "(0, 1]"),
    ("r1_k3_a1_p1_s11_e6_i16_o16_se1.5", "'se1.5'", "(0, 1]"),
    ("r1_k3_a3_p1_s11_e6_i16_o16", "'a3'", "only 1x1 kernels"),
    ("r1_k3_a1_p1.3_s11_e6_i16_o16", "'p1.3'", "only 1x1 kernels"),
    ("r1_k3_a1_p1_s11_e6_i16_o16_", "''", "one of the TF MixNet tokens"),
]


@pytest.mark.parametrize(("string", "token", "expected"), TF_ERRORS)
def test_tf_errors_name_string_and_token(string: str, token: str, expected: str) -> None:
    with pytest.raises(BlockStringError) as info:
        decode_tf(string)
    message = str(info.value)
    assert repr(string) in message and token in message and expected in message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("string", ["", "   ", None])
def test_empty_strings_are_refused(string: str | None) -> None:
    for decode in (decode_tf, decode_mnasnet):
        with pytest.raises(BlockStringError, match="expected a non-empty"):
            decode(string)  # type: ignore[arg-type]
    with pytest.raises(BlockStringError, match="expected a non-empty timm block string"):
        decode_timm(string, 16)  # type: ignore[arg-type]


MNASNET_ERRORS = [
    ("r1_k3.5_s11_e6_i16_o16", "'k3.5'", "single odd kernel"),
    ("r1_k4_s11_e6_i16_o16", "'k4'", "single odd kernel"),
    ("r1_k3_a1_p1_s11_e6_i16_o16", "'a1'", "one of the MnasNet tokens"),
    ("r1_k3_s11_e6_i16_o16_sw", "'sw'", "one of the MnasNet tokens"),
    ("r1_k3_s1_e6_i16_o16", "'s1'", "two-digit stride"),
    ("r1_k3_s11_e6_o16", "'i'", "missing mandatory"),
]


@pytest.mark.parametrize(("string", "token", "expected"), MNASNET_ERRORS)
def test_mnasnet_errors_name_string_and_token(string: str, token: str, expected: str) -> None:
    with pytest.raises(BlockStringError) as info:
        decode_mnasnet(string)
    message = str(info.value)
    assert repr(string) in message and token in message and expected in message


TIMM_ERRORS = [
    ("ir_r1_k3_s22_e6_c24", "'s22'", "one-digit stride"),
    ("ir_r1_k3_s3_e6_c24", "'s3'", "one-digit stride"),
    ("ir_r1_k3_s2_e6", "'c'", "missing mandatory timm token"),
    ("ir_r1_k3_s2_c24", "'e'", "missing mandatory timm token"),
    ("ir_r1_k4_s2_e6_c24", "'k4'", "odd kernel"),
    ("ir_r1_k3_k5_s2_e6_c24", "'k5'", "only once"),
    ("ir_r1_k3_s2_e6_c24_q7", "'q7'", "one of the timm tokens"),
    ("ir_r1_k3_s2_e6_c24_i16", "'i16'", "one of the timm tokens"),
    ("ir_r1_k3_s2_e1.5_c24", "'e1.5'", "integer expansion ratio"),
    ("ir_r1_k3_s2_e1_c24", "'e1'", "always builds the 1x1 expansion conv"),
    ("ds_r1_k3_s1_e6_c24", "'e6'", "a ds block has no expansion conv"),
    ("ir_r1_k3_s2_e6_c24_se0", "'se0'", "(0, 1]"),
    ("ir_r1_k3_s2_e6_c24_se1.5", "'se1.5'", "(0, 1]"),
    ("ir_r1_k3_a3_s2_e6_c24", "'a3'", "only 1x1 kernels"),
    ("ir_r1_k3_s2_e6_c24_nhs", "'nhs'", "hard_swish activation has no TF MixNet equivalent"),
    ("ir_r1_k3_s2_e6_c24_nre_nsw", "'nre'", "at most one activation"),
    ("ir_r1_k3_s1_e6_c24_d1", "'d1'", "space-to-depth"),
    ("ir_r1_k3_s1_e6_c24_cc4", "'cc4'", "CondConv"),
    ("er_r1_k3_s2_e4_c24", "'er'", "EdgeResidual"),
    ("dsa_r1_k3_s1_c16", "'dsa'", "no TF MixNet equivalent"),
    ("r1_k3_a1_p1_s11_e6_i16_o16", "'r1'", "timm block type ir or ds"),
    ("ir", "'r'", "missing mandatory timm token"),
]


@pytest.mark.parametrize(("string", "token", "expected"), TIMM_ERRORS)
def test_timm_errors_name_string_and_token(string: str, token: str, expected: str) -> None:
    with pytest.raises(BlockStringError) as info:
        decode_timm(string, 16)
    message = str(info.value)
    assert repr(string) in message and token in message and expected in message


def test_timm_accepts_its_optional_forms() -> None:
    plain = decode_timm("ir_r1_k3_s2_e6_c24", 16)
    assert decode_timm("ir_r1_k3_a1_p1_s2_e6.0_c24_nre", 16) == plain
    assert decode_timm("ir_c24_e6_s2_k3_r1", 16) == plain
    assert not plain.swish and plain.id_skip and plain.expand_groups == 1
    assert decode_timm("ds_r1_k3_s1_c16", 16).expand_ratio == 1


def test_arch_level_errors() -> None:
    with pytest.raises(BlockStringError, match="unknown block-string grammar 'keras'"):
        decode_arch(MIXNET_S, "keras")
    with pytest.raises(BlockStringError, match="no block strings given"):
        decode_arch([], "tf")
    with pytest.raises(BlockStringError, match="no block strings given"):
        decode_timm_arch([])
    with pytest.raises(BlockStringError, match="list of stages"):
        decode_timm_arch([["ds_r1_k3_s1_c16"], "ir_r1_k3_s2_e6_c24"])  # type: ignore[list-item]
    with pytest.raises(BlockStringError, match="timm stage 1 is empty"):
        decode_timm_arch([["ds_r1_k3_s1_c16"], []])
    with pytest.raises(BlockStringError, match="in timm stage 0: stride 2 on block 1"):
        decode_timm_arch([["ds_r1_k3_s1_c16", "ir_r1_k3_s2_e6_c24"]])
    with pytest.raises(BlockStringError, match="block 0 repeat 0"):
        decode_arch(["r1_k3.5.7_a1_p1_s11_e1_i2_o8"], "tf")


# --- timm conversion refusals --------------------------------------------------------------------------------

REFUSALS = [
    (["r1_k3_a1_p1_s11_e1_i16_o30"], 16, "output width 30: timm rounds c30 to 32"),
    (["r1_k3_a1_p1_s11_e6_i20_o24"], 20, "stem width 20: timm rounds stem_size 20 to 24"),
    (["r1_k3_a1_p1_s11_e6_i16_o16_se0.3"], 16, "SE width: TF max(1, int(16*0.3)) = 4, timm round(96*0.3/6) = 5"),
    (["r1_k3_a1_p1_s11_e1_i8_o8_se0.7"], 8, "SE width: TF max(1, int(8*0.7)) = 5, timm round(8*0.7/1) = 6"),
    (["r1_k3_a1_p1_s11_e1_i16_o16_se0.01"], 16, "= 1, timm round(16*0.01/1) = 0"),
    (["r1_k3_a1_p1_s11_e1_i16_o16_dilated"], 16, "the dilated flag (timm has no dilated MixConv; its d token"),
    (["r1_k3.5_a1_p1_s11_e6_i16_o16_xp"], 16, "the xp flag (timm's MixedConv2d always splits channels equally)"),
    (["r1_k3_a1_p1_s11_e6_i16_o16"], 24, "input filters 16 do not match the stem width"),
    (
        ["r1_k3_a1_p1_s11_e6_i16_o16", "r1_k3_a1_p1_s11_e6_i24_o24"],
        16,
        "blocks[1]: input filters 24 do not match the output filters of blocks[0]",
    ),
]


@pytest.mark.parametrize(("strings", "stem", "reason"), REFUSALS)
def test_tf_to_timm_refuses_with_the_reason(strings: list[str], stem: int, reason: str) -> None:
    with pytest.raises(BlockStringError) as info:
        tf_to_timm(strings, stem)
    message = str(info.value)
    # Widths that do not chain are not an architecture at all; everything else is a timm refusal.
    if "do not match" not in reason:
        assert message.startswith("cannot express the architecture in the timm grammar")
    assert reason in message


@pytest.mark.parametrize("stride", ["s12", "s21"])
def test_non_square_strides_are_refused(stride: str) -> None:
    with pytest.raises(BlockStringError, match=r"strides: expected \(1, 1\) or \(2, 2\)"):
        decode_tf(f"r1_k3_a1_p1_{stride}_e6_i16_o16")


def test_expanded_width_rounding_is_refused() -> None:
    # A width multiplier of 0.5 with divisor 4 gives 12 channels, which timm's make_divisible(12*3)=40 would not.
    arch = decode_arch(
        ["r1_k3_a1_p1_s11_e3_i24_o24"],
        "tf",
        GlobalParams(stem_size=24, width_multiplier=0.5, depth_divisor=4),
    )
    message = "; ".join(text for _, text in timm_problems(arch))
    assert "expanded width 12*3 = 36: timm builds make_divisible(36) = 40" in message
    assert "output width 12: timm rounds c12 to 16" in message


def test_multiplier_refusals() -> None:
    arch = load_arch_preset("mixnet_l")
    with pytest.raises(BlockStringError, match="channel_multiplier 1.4 differs from the architecture's width"):
        encode_timm_arch(arch, channel_multiplier=1.4)
    with pytest.raises(BlockStringError, match="fold the multiplier into the widths instead"):
        encode_timm_arch(arch.replace(depth_divisor=4), channel_multiplier=1.3)
    deeper = load_arch_preset("mixnet_s").replace(depth_multiplier=1.2)
    with pytest.raises(BlockStringError, match="depth_multiplier 1.2: timm scales repeats per stage"):
        encode_timm_arch(deeper)


def test_timm_to_tf_refuses_what_timm_would_round() -> None:
    with pytest.raises(BlockStringError) as info:
        timm_to_tf(["ds_r1_k3_s1_c30"], 16)
    message = str(info.value)
    assert message.startswith("timm would build a network the TF grammar cannot express")
    assert "block 0 'ds_r1_k3_s1_c30': output width 30: timm rounds c30 to 32" in message


def test_encode_timm_block_refusal_names_the_block() -> None:
    block = decode_tf("r1_k3_a1_p1_s11_e6_i16_o16_dilated")
    with pytest.raises(BlockStringError, match=r"cannot encode block 'r1_k3_a1_p1_s11_e6_i16_o16_dilated'"):
        encode_timm(block)


def test_ds_keeps_grouped_expansion_kernels_for_an_exact_round_trip() -> None:
    strings = ["r1_k3_a1.1_p1.1_s11_e1_i16_o16_se0.25_sw"]
    timm = tf_to_timm(strings, 16)
    assert timm == ["ds_r1_k3_a1.1_p1.1_s1_e1_c16_se0.25_nsw"]
    assert timm_to_tf(timm, 16) == strings


# --- the `mixnas build` command ------------------------------------------------------------------------------


def test_build_prints_timm_strings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "mixnet_s", "--grammar", "timm"]) == 0
    out = capsys.readouterr().out
    lines = [line.strip() for line in out.splitlines()]
    start = lines.index("block strings (timm):") + 1
    assert lines[start].startswith("# mixnas: resolution=224 num_classes=1000 stem=16 head=1536 ")
    assert [line.split() for line in lines[start + 1:]] == TIMM_MIXNET_S  # one timm stage per line
    assert "4,134,606 params" in out


def test_build_json_with_timm_strings(capsys: pytest.CaptureFixture[str]) -> None:
    import json

    assert main(["build", "mnasnet_a1", "--grammar", "timm", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["block_strings"] == flat(TIMM_MNASNET_A1)
    assert (info["params"], info["macs"]) == (3_887_038, 311_579_072)


def test_build_accepts_timm_input(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", ",".join(flat(TIMM_MIXNET_S)), "--json"]) == 0
    import json

    info = json.loads(capsys.readouterr().out)
    assert info["block_strings"] == MIXNET_S
    assert info["params"] == 4_134_606


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["build", "no_such_arch"], "no_such_arch"),
        (["build", "nonsense"], "unknown architecture 'nonsense'"),
        (["build", "r1_k4_a1_p1_s11_e6_i16_o16"], "'k4'"),
        (["build", "r1_k3_a1_p1_s11_e1_i16_o30", "--grammar", "timm"], "timm rounds c30 to 32"),
    ],
)
def test_build_bad_input_is_one_line_and_exit_2(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("mixnas: error: ") and fragment in lines[0]


# --- hostile input (the seeded corpus is in tests/test_fuzz.py) -----------------------------------------------
@pytest.mark.parametrize(
    ("string", "token"),
    [("ds_r1_k3_s1_c16x", "c16x"), ("ds_r1_k3_s1_c1\u0663", "c1\u0663"), ("ir_r1_k3_s1_e6.0\u00b2_c16", "e6.0\u00b2")],
)
def test_timm_tokens_with_trailing_or_unicode_characters_are_refused(string: str, token: str) -> None:
    with pytest.raises(BlockStringError) as info:
        decode_timm(string, 16)
    assert repr(token) in str(info.value)


def test_huge_values_are_refused_without_converting_them() -> None:
    with pytest.raises(BlockStringError, match="at most 64"):
        decode_tf("r" + "9" * 5000 + "_k3_a1_p1_s11_e1_i16_o16")
    with pytest.raises(BlockStringError, match="at most 512"):
        decode_arch(["r1_k3_a1_p1_s11_e1_i16_o16"] * 513)


# --- the '# mixnas:' settings header -------------------------------------------------------------------------

from mixnas.search_space.header import encode_arch_text, encode_header, parse_header  # noqa: E402
from mixnas.search_space.counting import breakdown  # noqa: E402
from mixnas.search_space.presets import resolve_arch  # noqa: E402


@pytest.mark.parametrize("preset", ["mixnet_tiny", "mixnet_s", "mixnet_l", "mnasnet_a1"])
def test_header_text_rebuilds_the_same_record(preset: str) -> None:
    arch = load_arch_preset(preset).replace(resolution=32, num_classes=10, dropout_rate=0.3)
    text = encode_arch_text(arch)
    assert text.splitlines()[0].startswith("# mixnas: resolution=32 num_classes=10 ")
    assert resolve_arch(text).id == arch.id
    timm = resolve_arch(encode_arch_text(arch, "timm"))  # width folded in: same layers, same counts
    assert timm.layers() == arch.layers() and breakdown(timm).total == breakdown(arch).total
    assert timm.global_params.resolution == 32 and timm.head_channels == arch.head_channels


def test_header_carries_every_non_default_setting() -> None:
    params = GlobalParams(stem_size=24, feature_size=256, width_multiplier=1.25, depth_multiplier=1.5,
                          depth_divisor=4, min_depth=8, dropout_rate=0.0, bn_momentum=0.9, bn_epsilon=1e-5,
                          resolution=48, num_classes=7)
    line = encode_header(params)
    assert line == ("# mixnas: resolution=48 num_classes=7 stem=24 head=256 width=1.25 depth=1.5 dropout=0 "
                    "divisor=4 min_depth=8 bn_momentum=0.9 bn_epsilon=1e-05")
    assert GlobalParams(**parse_header(line)) == params
    assert parse_header("#mixnas: width=none")["width_multiplier"] is None


def test_header_keys_not_given_keep_the_inferred_defaults() -> None:
    arch = resolve_arch("# mixnas: resolution=64\nr1_k3_a1_p1_s11_e1_i24_o24")
    assert (arch.resolution, arch.num_classes, arch.global_params.stem_size, arch.head_channels) == (64, 1000, 24, 1536)


def test_plain_strings_and_other_comments_work_as_before() -> None:
    text = "# my net\nr1_k3_a1_p1_s11_e1_i16_o16  # first\nr1_k3_a1_p1_s22_e6_i16_o24"
    assert resolve_arch(text) == resolve_arch("r1_k3_a1_p1_s11_e1_i16_o16 r1_k3_a1_p1_s22_e6_i16_o24")


@pytest.mark.parametrize(
    ("header", "message"),
    [
        ("# mixnas: resolution=32 colour=red", "header token 'colour=red'"),
        ("# mixnas: resolution=32.5", "expected an integer"),
        ("# mixnas: head=none", "'none' is allowed only"),
        ("# mixnas: stem=16 stem=24", "given twice"),
        ("# mixnas: resolution=0", "resolution"),
        ("# mixnas: grammar=keras", "unknown block-string grammar"),
    ],
)
def test_bad_headers_are_refused_naming_the_token(header: str, message: str) -> None:
    with pytest.raises(BlockStringError, match=message):
        resolve_arch(f"{header}\nr1_k3_a1_p1_s11_e1_i16_o16")


def test_a_timm_text_with_a_header_reads_one_stage_per_line() -> None:
    arch = load_arch_preset("mixnet_s")
    lines = encode_arch_text(arch, "timm").splitlines()
    assert lines[2] == "ir_r1_k3_a1.1_p1.1_s2_e6_c24 ir_r1_k3_a1.1_p1.1_s1_e3_c24"
    merged = "\n".join([lines[0], " ".join(lines[1:])])  # every block in one stage: timm would drop the strides
    with pytest.raises(BlockStringError, match="stride 2 on block"):
        resolve_arch(merged)
