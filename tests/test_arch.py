"""The architecture record: width rounding, channel splits, identity, JSON, validation and layer resolution.

Reference figures come from ``shared/reference/mixnet_reference.md`` (§1.2, §1.3, §1.5, §3.1, §3.4), embedded here
so the tests do not need the shared folder.
"""

from __future__ import annotations

import json

import pytest

from mixnas.errors import ArchitectureError
from mixnas.search_space.arch import (
    Architecture,
    BlockArgs,
    GlobalParams,
    round_filters,
    round_repeats,
    split_channels,
)
from mixnas.search_space.arch_strings import decode_arch
from mixnas.search_space.counting import count, count_layer
from mixnas.search_space.presets import arch_preset_names, load_arch_preset

# --- round_filters / round_repeats ---------------------------------------------------------------------------


def test_round_filters_without_multiplier_leaves_widths_alone() -> None:
    assert round_filters(30, None) == 30
    assert round_filters(7, None) == 7


@pytest.mark.parametrize(
    ("filters", "expected"),
    # MixNet-L = MixNet-M x 1.3 (reference §1.5): stem 24 -> 32, outputs 32 -> 40, 40 -> 56, 80 -> 104, ...
    [(16, 24), (24, 32), (32, 40), (40, 56), (80, 104), (120, 160), (200, 264)],
)
def test_round_filters_mixnet_l_widths(filters: int, expected: int) -> None:
    assert round_filters(filters, 1.3) == expected


def test_round_filters_nearest_multiple_of_divisor() -> None:
    assert round_filters(30, 1.0) == 32
    assert round_filters(28, 1.0) == 32  # 28 + 4 = 32 -> rounds up on the half
    assert round_filters(26, 1.0) == 24
    assert round_filters(27, 1.0) == 32  # 24 < 0.9 * 27: the 0.9 rule bumps it
    assert round_filters(26, 1.0, divisor=4) == 28


def test_round_filters_point_nine_rule() -> None:
    # 11 -> nearest multiple of 8 is 8, which loses more than 10% (8 < 9.9), so one divisor is added.
    assert round_filters(11, 1.0) == 16
    # 12 -> 16 directly; 44 * 0.25 = 11 -> 16 by the 0.9 rule as well.
    assert round_filters(12, 1.0) == 16
    assert round_filters(44, 0.25) == 16
    # 36 -> 40 (rounding up) and 35 -> 32 (32 >= 0.9 * 35 = 31.5, no bump).
    assert round_filters(36, 1.0) == 40
    assert round_filters(35, 1.0) == 32


def test_round_filters_minimum_depth() -> None:
    assert round_filters(3, 1.0) == 8
    assert round_filters(3, 1.0, min_depth=16) == 16
    assert round_filters(16, 0.1) == 8


def test_round_repeats_uses_ceil() -> None:
    assert round_repeats(3, None) == 3
    assert round_repeats(3, 1.2) == 4
    assert round_repeats(1, 1.01) == 2
    assert round_repeats(2, 0.5) == 1


# --- split_channels ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "groups", "expected"),
    [
        (100, 3, (34, 33, 33)),
        (96, 5, (20, 19, 19, 19, 19)),
        (144, 3, (48, 48, 48)),
        (7, 1, (7,)),
        (5, 5, (1, 1, 1, 1, 1)),
    ],
)
def test_split_channels_equal_puts_remainder_first(total: int, groups: int, expected: tuple[int, ...]) -> None:
    assert split_channels(total, groups) == expected
    assert sum(expected) == total


@pytest.mark.parametrize(
    ("total", "groups", "expected"),
    [(64, 3, (32, 16, 16)), (64, 1, (64,)), (100, 4, (50, 25, 12, 13)), (96, 2, (48, 48))],
)
def test_split_channels_exponential(total: int, groups: int, expected: tuple[int, ...]) -> None:
    assert split_channels(total, groups, "exponential") == expected


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ((10, 0), "at least 1 group"),
        ((2, 3), "a group would be empty"),
        ((3, 3, "exponential"), "a group would be empty"),
        ((10, 2, "random"), "unknown channel partition 'random'"),
    ],
)
def test_split_channels_errors(args: tuple, fragment: str) -> None:
    with pytest.raises(ArchitectureError, match=fragment):
        split_channels(*args)


# --- identity and JSON ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", arch_preset_names())
def test_json_round_trip_of_every_preset(name: str) -> None:
    arch = load_arch_preset(name)
    back = Architecture.from_json(arch.to_json())
    assert back == arch
    assert back.id == arch.id
    assert back.name == name
    assert Architecture.from_dict(json.loads(arch.to_json(indent=2))) == arch


def test_id_is_a_stable_content_hash() -> None:
    # Ids are stored in ledgers; changing how they are computed orphans every saved run.
    assert load_arch_preset("mixnet_s").id == "4dd00036e99bcf0d"
    assert load_arch_preset("mnasnet_a1").id == "9f75d9a6782a48ac"


def test_id_ignores_the_name_and_tracks_content() -> None:
    arch = load_arch_preset("mixnet_s")
    renamed = arch.replace(name="something else")
    assert renamed.id == arch.id
    assert renamed.replace(resolution=128).id != arch.id
    first = arch.blocks[0]
    changed = arch.replace(blocks=(first.replace(se_ratio=0.25),) + arch.blocks[1:])
    assert changed.id != arch.id
    assert len({load_arch_preset(n).id for n in arch_preset_names()}) == len(arch_preset_names())


def test_architectures_are_hashable_and_frozen() -> None:
    a = load_arch_preset("mixnet_m")
    b = load_arch_preset("mixnet_m")
    assert a == b and hash(a) == hash(b)
    assert len({a, b, load_arch_preset("mixnet_s")}) == 2
    with pytest.raises(AttributeError):
        a.name = "x"  # type: ignore[misc]


def test_replace_accepts_global_parameter_names() -> None:
    arch = load_arch_preset("mixnet_s").replace(resolution=64, num_classes=10)
    assert arch.resolution == 64 and arch.num_classes == 10
    assert arch.global_params.stem_size == 16


def test_block_args_coerce_lists_and_scalars() -> None:
    block = BlockArgs(num_repeat=1, kernel_sizes=[3, 5], strides=2, se_ratio=0)
    assert block.kernel_sizes == (3, 5)
    assert block.strides == (2, 2)
    assert block.se_ratio is None
    assert BlockArgs.from_dict(block.to_dict()) == block


# --- validation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"kernel_sizes": (3, 4)}, "kernel_sizes: expected odd kernels"),
        ({"kernel_sizes": ()}, "non-empty list"),
        ({"kernel_sizes": (33,)}, "odd kernels in 1..31"),
        ({"strides": (3, 3)}, "strides: expected (1, 1) or (2, 2)"),
        ({"se_ratio": 1.5}, "se_ratio: expected a number in (0, 1]"),
        ({"se_ratio": True}, "se_ratio"),
        ({"expand_ratio": 0}, "expand_ratio: expected a positive integer"),
        ({"num_repeat": True}, "num_repeat: expected a positive integer"),
        ({"input_filters": 2.5}, "input_filters"),
        ({"expand_kernels": (3,)}, "only grouped 1x1 convolutions"),
        ({"swish": "yes"}, "swish: expected true or false"),
        ({"partition": "random"}, "partition: expected one of"),
    ],
)
def test_block_args_validation(changes: dict, fragment: str) -> None:
    base = {"num_repeat": 1, "kernel_sizes": (3,)}
    with pytest.raises(ArchitectureError) as info:
        BlockArgs(**{**base, **changes})
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"stem_size": 0}, "stem_size"),
        ({"width_multiplier": -1.0}, "width_multiplier"),
        ({"dropout_rate": 1.0}, "dropout_rate"),
        ({"bn_momentum": 1.5}, "bn_momentum"),
        ({"bn_epsilon": 0}, "bn_epsilon"),
        ({"resolution": 0}, "resolution"),
    ],
)
def test_global_params_validation(changes: dict, fragment: str) -> None:
    with pytest.raises(ArchitectureError, match=fragment):
        GlobalParams(**changes)


def test_architecture_validation() -> None:
    with pytest.raises(ArchitectureError, match="at least one block"):
        Architecture(blocks=())
    with pytest.raises(ArchitectureError, match="expected BlockArgs"):
        Architecture(blocks=("r1_k3",))  # type: ignore[arg-type]
    # 1 input channel cannot feed 3 MixConv groups: the error names the block and repeat.
    tiny = BlockArgs(num_repeat=1, kernel_sizes=(3, 5, 7), input_filters=1, output_filters=8)
    with pytest.raises(ArchitectureError, match="block 0 repeat 0"):
        Architecture(blocks=(tiny,), global_params=GlobalParams(stem_size=1))


def test_from_dict_and_json_errors() -> None:
    data = load_arch_preset("mixnet_s").to_dict()
    with pytest.raises(ArchitectureError, match="unknown format_version 99"):
        Architecture.from_dict({**data, "format_version": 99})
    with pytest.raises(ArchitectureError, match=r"unknown keys \['extra'\]"):
        Architecture.from_dict({**data, "extra": 1})
    with pytest.raises(ArchitectureError, match="'blocks' must be a list"):
        Architecture.from_dict({**data, "blocks": "r1_k3"})
    with pytest.raises(ArchitectureError, match="block: unknown keys"):
        Architecture.from_dict({**data, "blocks": [{"num_repeat": 1, "kernel_sizes": [3], "bogus": 1}]})
    with pytest.raises(ArchitectureError, match="global params: unknown keys"):
        Architecture.from_dict({**data, "global_params": {"stem": 16}})
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        Architecture.from_json("{")
    with pytest.raises(ArchitectureError, match="expected an object"):
        Architecture.from_json("[1, 2]")


# --- layer resolution (reference §3.4) -----------------------------------------------------------------------

# MixNet-S first repeats: (in, mid, out, stride, out HxW, SE width, params, MACs).
MIXNET_S_BLOCKS = [
    (16, 16, 16, 1, 112, 0, 464, 5_017_600),
    (16, 96, 24, 2, 56, 0, 3_216, 15_955_968),
    (24, 72, 24, 1, 56, 0, 2_712, 7_451_136),
    (24, 144, 40, 2, 28, 12, 17_468, 18_480_768),
    (40, 240, 40, 1, 28, 20, 24_580, 10_734_720),
    (40, 240, 80, 2, 14, 10, 32_010, 10_714_240),
    (80, 480, 80, 1, 14, 20, 87_540, 12_908_160),
    (80, 480, 120, 1, 14, 40, 102_360, 12_049_280),
    (120, 360, 120, 1, 14, 60, 103_260, 11_403_360),
    (120, 720, 200, 2, 7, 60, 361_900, 26_087_760),
    (200, 1200, 200, 1, 7, 100, 655_700, 20_290_800),
]


def test_mixnet_s_layers_match_the_reference_table() -> None:
    layers = load_arch_preset("mixnet_s").layers()
    assert [layer.block_index for layer in layers] == [0, 1, 2, 3, 4, 4, 4, 5, 6, 6, 7, 8, 8, 9, 10, 10]
    firsts = [layer for layer in layers if layer.repeat_index == 0]
    for layer, row in zip(firsts, MIXNET_S_BLOCKS, strict=True):
        c = count_layer(layer)
        got = (
            layer.in_channels,
            layer.mid_channels,
            layer.out_channels,
            layer.stride,
            layer.output_size,
            layer.se_channels,
            c.params,
            c.macs,
        )
        assert got == row, f"block {layer.block_index}"


def test_mixnet_s_splits_expansion_and_skip() -> None:
    layers = load_arch_preset("mixnet_s").layers()
    assert layers[3].dw_splits == (48, 48, 48)
    assert layers[4].dw_splits == (120, 120)
    assert layers[13].dw_splits == (144,) * 5
    assert layers[14].dw_splits == (300,) * 4
    assert not layers[0].has_expand and layers[1].has_expand
    assert layers[0].has_skip and not layers[1].has_skip  # stride 2
    assert layers[5].has_skip and layers[5].repeat_index == 1 and layers[5].stride == 1
    assert not layers[7].has_skip  # 40 -> 80 at stride 2
    assert layers[1].expand_splits == ((8, 8), (48, 48))
    assert layers[3].swish and not layers[2].swish


def test_mixnet_l_channels() -> None:
    arch = load_arch_preset("mixnet_l")
    assert arch.stem_channels == 32
    assert arch.head_channels == 1536
    firsts = [(x.in_channels, x.mid_channels, x.out_channels) for x in arch.layers() if x.repeat_index == 0]
    assert firsts == [
        (32, 32, 32),
        (32, 192, 40),
        (40, 120, 40),
        (40, 240, 56),
        (56, 336, 56),
        (56, 336, 104),
        (104, 624, 104),
        (104, 624, 160),
        (160, 480, 160),
        (160, 960, 264),
        (264, 1584, 264),
    ]
    assert arch.final_channels == 264


def test_dilated_flag_and_noskip() -> None:
    arch = decode_arch(
        ["r1_k3.5.7_a1_p1_s22_e2_i16_o24_dilated", "r2_k3.5.7_a1_p1_s11_e2_i24_o24_dilated_noskip"],
        global_params=GlobalParams(stem_size=16),
    )
    down, first, second = arch.layers()
    assert down.kernel_sizes == (3, 5, 7) and down.dilations == (1, 1, 1)  # stride 2 ignores the flag
    assert first.kernel_sizes == (3, 3, 3) and first.dilations == (1, 2, 3)
    assert not second.has_skip
    assert (down.input_size, down.output_size, first.output_size) == (112, 56, 56)


def test_resolution_changes_sizes() -> None:
    arch = load_arch_preset("mixnet_s").replace(resolution=32)
    assert [x.output_size for x in arch.layers() if x.repeat_index == 0] == [16, 8, 8, 4, 4, 2, 2, 2, 2, 1, 1]
    assert arch.final_size == 1


# --- exact totals (reference §3.1) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "params", "macs"),
    [
        ("mixnet_s", 4_134_606, 239_173_360),
        ("mixnet_m", 5_014_382, 339_172_672),
        ("mixnet_l", 7_329_252, 555_251_792),
        ("mnasnet_a1", 3_887_038, 311_579_072),
        ("mnasnet_b1", 4_383_312, 314_415_872),
    ],
)
def test_exact_params_and_macs_of_every_reference_preset(name: str, params: int, macs: int) -> None:
    total = count(load_arch_preset(name))
    assert (total.params, total.macs) == (params, macs)
