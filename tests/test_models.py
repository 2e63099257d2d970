"""The PyTorch builder: exact counts against the analytic counter, shapes, gradients, layer semantics."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from mixnas.errors import ArchitectureError
from mixnas.models import (
    GroupedConv1x1,
    MBConvBlock,
    MixConv,
    MixNet,
    SqueezeExcite,
    build,
    make_block,
    make_classifier,
    make_head,
    make_stem,
)
from mixnas.search_space import counting
from mixnas.search_space.arch import Architecture, GlobalParams
from mixnas.search_space.arch_strings import decode_arch
from mixnas.search_space.presets import arch_preset_names, load_arch_preset

PRESETS = arch_preset_names()
SMALL = 64  # resolution of the forward / backward tests


def small_resolution(arch: Architecture) -> int:
    return min(arch.resolution, SMALL)


def tiny_arch(*strings: str, stem: int = 16, head: int = 32, resolution: int = 16) -> Architecture:
    params = GlobalParams(stem_size=stem, feature_size=head, resolution=resolution, num_classes=5)
    return decode_arch(list(strings), grammar="tf", global_params=params)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def flop_counter_macs(model: nn.Module, resolution: int) -> int:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(1, 3, resolution, resolution))
    return counter.get_total_flops() // 2


@pytest.fixture(scope="module")
def models() -> dict[str, MixNet]:
    torch.manual_seed(0)
    return {name: build(load_arch_preset(name)) for name in PRESETS}


def test_presets_exist() -> None:
    assert {"mixnet_s", "mixnet_m", "mixnet_l", "mnasnet_a1", "mnasnet_b1", "mixnet_tiny"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_params_match_counting(models: dict[str, MixNet], name: str) -> None:
    arch = load_arch_preset(name)
    assert n_params(models[name]) == counting.count(arch).params


@pytest.mark.parametrize("name", PRESETS)
def test_macs_match_flop_counter(models: dict[str, MixNet], name: str) -> None:
    arch = load_arch_preset(name)
    # The reference figures are at 224 for the ImageNet models; mixnet_tiny is a 32x32 design.
    assert arch.resolution == 224 or name == "mixnet_tiny"
    assert flop_counter_macs(models[name], arch.resolution) == counting.count(arch).macs


def test_macs_match_at_another_resolution(models: dict[str, MixNet]) -> None:
    arch = load_arch_preset("mixnet_m").replace(resolution=97)  # odd size: exercises ceil(size / 2)
    assert flop_counter_macs(models["mixnet_m"], 97) == counting.count(arch).macs


def test_reference_figures() -> None:
    expected = {"mixnet_s": (4_134_606, 239_173_360), "mnasnet_a1": (3_887_038, 311_579_072)}
    for name, (params, macs) in expected.items():
        model = build(load_arch_preset(name))
        assert n_params(model) == params
        assert flop_counter_macs(model, 224) == macs


@pytest.mark.parametrize("name", PRESETS)
def test_forward_backward(models: dict[str, MixNet], name: str) -> None:
    model = models[name].train()
    size = small_resolution(model.arch)
    out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, model.arch.num_classes)
    assert torch.isfinite(out).all()
    model.zero_grad(set_to_none=True)
    out.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert missing == []


def test_pieces_match_counting_breakdown() -> None:
    arch = load_arch_preset("mixnet_s")
    parts = counting.breakdown(arch, num_classes=7)
    assert n_params(make_stem(arch)) == parts.stem.params
    assert n_params(make_head(arch)) == parts.head.params
    assert n_params(make_classifier(arch, 7)) == parts.classifier.params
    for layer, count in zip(arch.layers(), parts.layers):
        assert n_params(make_block(arch, layer)) == count.params


def test_blocks_follow_layer_specs() -> None:
    arch = load_arch_preset("mixnet_s")
    model = build(arch)
    assert len(model.blocks) == len(arch.layers())
    for block, layer in zip(model.blocks, arch.layers()):
        assert isinstance(block, MBConvBlock)
        mix = block.depthwise[0]
        assert mix.splits == layer.dw_splits and mix.kernel_sizes == layer.kernel_sizes
        assert block.has_skip == layer.has_skip
        assert isinstance(block.se, SqueezeExcite) == (layer.se_channels > 0)
        act = nn.SiLU if layer.swish else nn.ReLU
        assert isinstance(block.depthwise[2], act)
    assert isinstance(model.stem[2], nn.ReLU) and isinstance(model.head[2], nn.ReLU)
    bn = model.stem[1]
    assert bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-3)


def test_split_rule_uneven() -> None:
    arch = tiny_arch("r1_k3.5.7_a1_p1_s11_e1_i100_o100", stem=100)
    mix = build(arch).blocks[0].depthwise[0]
    assert [conv.in_channels for conv in mix.convs] == [34, 33, 33]
    assert [conv.groups for conv in mix.convs] == [34, 33, 33]
    assert [conv.kernel_size for conv in mix.convs] == [(3, 3), (5, 5), (7, 7)]


def test_mixconv_single_group_is_plain_depthwise() -> None:
    mix = MixConv([8], [5])
    ref = nn.Conv2d(8, 8, 5, padding=2, groups=8, bias=False)
    ref.load_state_dict(mix.convs[0].state_dict())
    x = torch.randn(2, 8, 9, 9)
    torch.testing.assert_close(mix(x), ref(x))


def test_mixconv_matches_per_group_reference() -> None:
    mix = MixConv([6, 5, 5], [3, 5, 7], stride=2)
    x = torch.randn(2, 16, 11, 11)
    chunks = (x[:, :6], x[:, 6:11], x[:, 11:])
    expected = torch.cat([conv(c) for conv, c in zip(mix.convs, chunks)], dim=1)
    out = mix(x)
    assert out.shape == (2, 16, 6, 6)
    torch.testing.assert_close(out, expected)


def test_grouped_1x1_equals_conv_groups_2() -> None:
    grouped = GroupedConv1x1([8, 8], [12, 12])
    dense = nn.Conv2d(16, 24, 1, groups=2, bias=False)
    with torch.no_grad():
        dense.weight.copy_(torch.cat([conv.weight for conv in grouped.convs], dim=0))
    x = torch.randn(2, 16, 5, 5)
    torch.testing.assert_close(grouped(x), dense(x))


def test_grouped_1x1_uneven_has_no_shuffle() -> None:
    grouped = GroupedConv1x1([5, 4], [3, 2])
    x = torch.randn(1, 9, 3, 3)
    out = grouped(x)
    torch.testing.assert_close(out[:, :3], grouped.convs[0](x[:, :5]))
    torch.testing.assert_close(out[:, 3:], grouped.convs[1](x[:, 5:]))


def test_dilated_stride_1_uses_dilated_3x3() -> None:
    arch = tiny_arch("r1_k3.5.7_a1_p1_s11_e1_i16_o16_dilated")
    mix = build(arch).blocks[0].depthwise[0]
    assert [c.kernel_size for c in mix.convs] == [(3, 3)] * 3
    assert [c.dilation for c in mix.convs] == [(1, 1), (2, 2), (3, 3)]
    assert [c.padding for c in mix.convs] == [(1, 1), (2, 2), (3, 3)]
    assert mix(torch.randn(1, 16, 8, 8)).shape == (1, 16, 8, 8)


def test_dilated_ignored_at_stride_2() -> None:
    arch = tiny_arch("r1_k3.5_a1_p1_s22_e1_i16_o16_dilated")
    mix = build(arch).blocks[0].depthwise[0]
    assert [c.kernel_size for c in mix.convs] == [(3, 3), (5, 5)]
    assert [c.dilation for c in mix.convs] == [(1, 1), (1, 1)]
    assert mix(torch.randn(1, 16, 8, 8)).shape == (1, 16, 4, 4)


def test_channels_last_matches_default_layout() -> None:
    torch.manual_seed(1)
    model = build(load_arch_preset("mixnet_s")).eval()
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        expected = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-5)


def _skip_block(rate: float) -> MBConvBlock:
    layer = tiny_arch("r1_k3.5_a1_p1_s11_e2_i8_o8_se0.25_sw", stem=8).layers()[0]
    assert layer.has_skip
    return MBConvBlock(layer, bn_momentum=0.01, bn_eps=1e-3, drop_connect_rate=rate)


def test_drop_connect_only_in_training() -> None:
    torch.manual_seed(2)
    block = _skip_block(0.5)
    x = torch.randn(64, 8, 4, 4)
    block.train()
    out = block(x)
    dropped = (out == x).flatten(1).all(dim=1)
    assert 0 < int(dropped.sum()) < 64  # some residual branches were dropped, not all
    block.eval()
    reference = _skip_block(0.0).eval()
    reference.load_state_dict(block.state_dict())
    torch.testing.assert_close(block(x), reference(x))


def test_drop_connect_not_used_without_skip() -> None:
    layer = tiny_arch("r1_k3_a1_p1_s22_e2_i8_o8", stem=8).layers()[0]
    block = MBConvBlock(layer, drop_connect_rate=0.9).train()
    x = torch.randn(16, 8, 4, 4)
    torch.testing.assert_close(block(x), block(x))


def test_drop_connect_schedule_is_linear() -> None:
    arch = load_arch_preset("mixnet_tiny")
    model = build(arch, drop_connect_rate=0.2)
    n = len(model.blocks)
    assert [b.drop_connect_rate for b in model.blocks] == pytest.approx([0.2 * i / n for i in range(n)])
    assert all(b.drop_connect_rate == 0 for b in build(arch).blocks)


def test_build_does_not_mutate_arch() -> None:
    arch = load_arch_preset("mixnet_tiny")
    before = (arch.to_json(), arch.id)
    model = build(arch, num_classes=3, dropout_rate=0.5, drop_connect_rate=0.1)
    assert model.arch is arch
    assert (arch.to_json(), arch.id) == before


def test_num_classes_and_dropout_override() -> None:
    arch = load_arch_preset("mixnet_tiny")
    model = build(arch, num_classes=7, dropout_rate=0.3)
    assert model.num_classes == 7 and model.classifier.out_features == 7
    assert model.dropout.p == 0.3
    assert n_params(model) == counting.count(arch, num_classes=7).params
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 7)
    assert build(arch).dropout.p == arch.global_params.dropout_rate


@pytest.mark.parametrize(
    "kwargs", [{"num_classes": 0}, {"num_classes": 2.5}, {"dropout_rate": 1.0}, {"drop_connect_rate": -0.1}]
)
def test_bad_build_options_raise(kwargs: dict) -> None:
    with pytest.raises(ArchitectureError):
        build(load_arch_preset("mixnet_tiny"), **kwargs)


def test_bad_layer_arguments_raise() -> None:
    with pytest.raises(ArchitectureError, match="one of each per group"):
        MixConv([8, 8], [3])
    with pytest.raises(ArchitectureError, match="odd"):
        MixConv([8], [4])
    with pytest.raises(ArchitectureError, match="same number"):
        GroupedConv1x1([8, 8], [16])


def test_tf_initialisation() -> None:
    arch = load_arch_preset("mixnet_s")
    model = build(arch, generator=torch.Generator().manual_seed(0))
    # depthwise 9x9 group of a late block: fan_out = 9 * 9 (TF's depthwise kernel has depth multiplier 1)
    conv = model.blocks[-1].depthwise[0].convs[3]
    assert conv.kernel_size == (9, 9)
    assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 81), rel=0.05)
    head = model.head[0]
    assert head.weight.std().item() == pytest.approx(math.sqrt(2 / 1536), rel=0.05)
    bound = 1 / math.sqrt(1000)
    assert model.classifier.weight.abs().max().item() <= bound
    assert model.classifier.bias.abs().sum().item() == 0
    se = model.blocks[-1].se
    assert se.reduce.bias.abs().sum().item() == 0
    again = build(arch, generator=torch.Generator().manual_seed(0))
    for a, b in zip(model.state_dict().values(), again.state_dict().values()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize(
    ("kernels", "stride", "dilations"),
    [((3, 5, 7, 9), 1, None), ((3, 5, 7, 9, 11), 2, None), ((3, 3), 1, (1, 2)), ((9,), 1, None)],
)
def test_mixconv_fast_cpu_backward_equals_builtin_gradients(kernels, stride, dilations, memory_format) -> None:
    # MixConv's CPU training path (dense channels_last operands, 3x3-tiled weight gradients for large stride-1
    # kernels) must give nn.Conv2d's gradients, up to float summation order.
    torch.manual_seed(0)
    splits = [5] * len(kernels)
    mix = MixConv(splits, kernels, stride=stride, dilations=dilations)
    x = torch.randn(3, sum(splits), 13, 13).to(memory_format=memory_format)
    grad = torch.randn_like(mix(x))

    def gradients(fast: bool) -> list[torch.Tensor]:
        inp = x.clone().requires_grad_()
        mix.zero_grad()
        if fast:
            out = mix(inp)
        else:
            chunks = torch.split(inp, splits, dim=1)
            out = torch.cat([conv(chunk) for conv, chunk in zip(mix.convs, chunks)], dim=1)
        out.backward(grad)
        return [inp.grad.clone()] + [conv.weight.grad.clone() for conv in mix.convs]

    fast, builtin = gradients(True), gradients(False)
    for a, b in zip(fast, builtin):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)


def test_mixconv_eval_and_no_grad_use_plain_convolutions() -> None:
    mix = MixConv([4, 4], [3, 5]).eval()
    x = torch.randn(1, 8, 9, 9, requires_grad=True)
    out = mix(x)
    assert out.grad_fn is not None and "DepthwiseConv" not in type(out.grad_fn).__name__


def test_torch_jit_script_matches_eager() -> None:
    torch.manual_seed(0)
    arch = load_arch_preset("mixnet_tiny")
    model = build(arch).eval()
    scripted = torch.jit.script(model)
    x = torch.randn(2, 3, small_resolution(arch), small_resolution(arch))
    with torch.no_grad():
        torch.testing.assert_close(scripted(x), model(x), atol=1e-6, rtol=0)
    # grouped 1x1 convs and a multi-kernel MixConv, also in training mode (batch norm in batch statistics)
    arch = tiny_arch("r1_k3_a1_p1_s11_e1_i16_o16", "r2_k3.5.7_a1.1_p1.1_s22_e6_i16_o24_se0.25_sw")
    model = build(arch.replace(dropout_rate=0.0)).train()  # no dropout: its masks would differ
    scripted = torch.jit.script(model)
    x = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(scripted(x), model(x), atol=1e-6, rtol=0)
