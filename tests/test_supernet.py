"""The weight-sharing supernet: a subnet's forward equals the stand-alone network holding its slice of the weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mixnas.errors import ConfigError
from mixnas.evaluators.supernet import Supernet
from mixnas.evaluators.supernet.layout import supernet_layout
from mixnas.models import build
from mixnas.search_space.presets import resolve_arch
from mixnas.search_space.spaces import load_space


def _randomise_bn(net: Supernet, seed: int = 0) -> None:
    """Non-trivial batch-norm state, so that eval mode tests the sliced statistics too."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0.0, 0.1, generator=g)
                m.running_var.uniform_(0.5, 1.5, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.normal_(0.0, 0.1, generator=g)


def _net(space, seed: int = 0) -> Supernet:
    net = Supernet(space, generator=torch.Generator().manual_seed(seed))
    _randomise_bn(net, seed)
    return net.eval()


@pytest.fixture(scope="module")
def tiny():
    space = load_space("tiny")
    return space, _net(space)


@torch.no_grad()
def test_subnet_equals_stand_alone_tiny(tiny):
    space, net = tiny
    rng = np.random.default_rng(0)
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    encodings = [space.sample(rng) for _ in range(22)] + [net.largest(), net.smallest()]
    for enc in encodings:
        arch = space.decode(enc)
        model = net.extract(arch)
        assert isinstance(model, type(build(arch))) and model.arch.blocks == arch.blocks
        torch.testing.assert_close(net(x, arch), model(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(net(x, enc), model(x), atol=1e-5, rtol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("resolution", [32, 64])
def test_subnet_equals_stand_alone_mixnet(resolution):
    space = load_space("mixnet")
    net = _net(space, seed=resolution)
    rng = np.random.default_rng(resolution)
    x = torch.randn(2, 3, resolution, resolution, generator=torch.Generator().manual_seed(2))
    for _ in range(2):
        arch = space.decode(space.sample(rng)).replace(resolution=resolution)
        torch.testing.assert_close(net(x, arch), net.extract(arch)(x), atol=1e-5, rtol=1e-5)


def test_mixnet_s_is_a_subnet():
    space = load_space("mixnet")
    net = Supernet(space)
    arch = resolve_arch("mixnet_s")
    model = net.extract(arch)
    assert sum(p.numel() for p in model.parameters()) == sum(p.numel() for p in build(arch).parameters())


def test_layout_is_the_largest_member(tiny):
    space, net = tiny
    layout = net.layout
    assert len(layout.positions) == 1 + 1 + 3 + 2  # deepest member of each stage
    biggest = space.decode(net.largest()).layers()
    for spec, pos in zip(biggest, layout.positions[:2]):
        assert (spec.in_channels, spec.mid_channels, spec.out_channels) == (
            pos.in_channels, pos.mid_channels, pos.out_channels)
    # a 3-group layer of the widest choice: the first third of the channels only ever gets 3x3
    stage1 = layout.positions[1]
    assert stage1.kernel == 7 and stage1.channel_kernels[0] == 3 and stage1.channel_kernels[-1] == 7
    assert net.shared_parameters() < sum(p.numel() for p in net.parameters())


@torch.no_grad()
def test_retargeted_candidate_maps(tiny):
    """A candidate with the data's classes and resolution (what the evaluator gets) still finds its layers."""
    space, net = tiny
    arch = space.decode(space.sample(np.random.default_rng(3)))
    moved = arch.replace(resolution=40)
    x = torch.randn(2, 3, 40, 40)
    torch.testing.assert_close(net(x, moved), net.extract(moved)(x), atol=1e-5, rtol=1e-5)


def test_training_updates_shared_weights(tiny):
    space, _ = tiny
    net = Supernet(space).train()
    enc = net.smallest()  # narrower than the supernet everywhere it can be
    loss = net(torch.randn(4, 3, 32, 32), enc).logsumexp(1).mean()
    loss.backward()
    assert net.stem_weight.grad is not None and net.stem_weight.grad.abs().sum() > 0
    arch, positions = net.subnet(enc)
    narrower = [(p, spec.mid_channels) for p, spec in zip(positions, arch.layers())
                if net.layers[p].dw_weight.shape[0] > spec.mid_channels]
    assert narrower, "the smallest subnet should leave some depthwise channels of the supernet unused"
    for p, used in narrower:  # the subnet's channels learn; the channels beyond its width get no gradient
        grad = net.layers[p].dw_weight.grad
        assert grad[:used].abs().sum() > 0 and grad[used:].abs().sum() == 0


def test_refuses_what_it_cannot_share():
    with pytest.raises(ConfigError, match="width_multiplier"):
        supernet_layout(load_space({"extends": "tiny", "globals": {"width_multiplier": [1.0, 1.5]}}))
    with pytest.raises(ConfigError, match="stage space"):
        supernet_layout(load_space("nas_bench_macro"))
    net = Supernet(load_space("tiny"))
    with pytest.raises(ConfigError, match="not in the space"):
        net.extract(resolve_arch("mixnet_s"))


@torch.no_grad()
def test_every_kind_of_choice_is_shared():
    """Per-layer granularity, explicit kernels, exponential partition, expansion 1 or more, skip on / off, stem and
    head widths, stride-1 stages of varying depth."""
    space = load_space({
        "name": "odd", "kind": "stages",
        "globals": {"resolution": 32, "stem_width": [8, 16], "head_width": [64, 128], "num_classes": 5},
        "layer": {"kernels": [3, [3, 5], [5, 7, 9]], "partition": ["equal", "exponential"], "expand_ratio": [1, 4],
                  "se_ratio": [0, 0.5], "swish": [False, True], "expand_groups": [1, 2], "project_groups": [1, 2],
                  "skip": ["identity", "none"]},
        "stages": [{"stride": 2, "filters": 16, "repeats": 3, "widths": [16, 24], "granularity": "layer"},
                   {"stride": 1, "filters": 24, "repeats": 2, "repeats_delta": [-1, 0, 1], "widths": [24, 32]}],
    })
    net = _net(space, seed=7)
    rng = np.random.default_rng(7)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(7))
    for _ in range(10):
        enc = space.sample(rng)
        torch.testing.assert_close(net(x, enc), net.extract(enc)(x), atol=1e-5, rtol=1e-5)
