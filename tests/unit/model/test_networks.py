import copy

import pytest
import torch

from model.blocks import fuse_norms
from model.config import make_config
from model.errors import ConfigError
from model.networks import GRDNet, InferenceNet


@pytest.mark.parametrize("profile", ["line", "paper"])
@pytest.mark.parametrize("bottleneck", ["crae", "drae"])
def test_shapes_both_profiles_and_bottlenecks(profile, bottleneck):
    # paper profile at a reduced size keeps the test fast; widths and depth logic are the same
    size = 64 if profile == "paper" else 128
    over = {"image_size": size, "generator": {"bottleneck": bottleneck}}
    if profile == "paper":
        over["segmenter"] = {"widths": [64, 128, 256, 512]}
    cfg = make_config(profile, **over)
    net = GRDNet(cfg).eval()
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        x_hat, z, z_hat = net.generator(x)
        logit, f = net.discriminator(x)
        out = net.infer(x)
    assert x_hat.shape == x.shape
    assert 0 <= float(x_hat.min()) and float(x_hat.max()) <= 1
    if bottleneck == "crae":
        assert z.shape == (2, 32, 8, 8)
    else:
        assert z.shape == (2, 2048)
    assert z_hat.shape == z.shape
    assert logit.shape == (2,)
    assert f.shape[0] == 2 and f.shape[2:] == (8, 8)
    assert out.heat.shape == (2, 1, size, size)
    assert out.score.shape == (2,)


def test_paper_profile_full_size_generator_shapes():
    cfg = make_config("paper")
    assert cfg.image_size == 256 and cfg.generator.base == 64 and cfg.n_stages == 5
    g = GRDNet(cfg).generator.eval()
    with torch.no_grad():
        out = g(torch.rand(1, 3, 256, 256))
    assert out.x_hat.shape == (1, 3, 256, 256) and out.z.shape == (1, 32, 8, 8)


def test_e1_e2_have_separate_weights():
    net = GRDNet(make_config("line", image_size=64, channels=1))
    p1 = dict(net.generator.e1.named_parameters())
    p2 = dict(net.generator.e2.named_parameters())
    assert p1.keys() == p2.keys()
    assert all(p1[k].data_ptr() != p2[k].data_ptr() for k in p1)


def test_grayscale_and_128px_line():
    cfg = make_config("line", channels=1)
    assert cfg.image_size == 128 and cfg.n_stages == 4
    out = GRDNet(cfg).eval().infer(torch.rand(1, 1, 128, 128))
    assert out.x_hat.shape == (1, 1, 128, 128)


def test_fused_inference_matches_eval_net():
    torch.manual_seed(0)
    net = GRDNet(make_config("line", image_size=64, channels=3))
    net.train()
    with torch.no_grad():  # give BatchNorm non-trivial running statistics
        for _ in range(3):
            net.generator(torch.rand(4, 3, 64, 64))
            net.segmenter(torch.rand(4, 3, 64, 64), torch.rand(4, 3, 64, 64))
    net.eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        ref = InferenceNet(net)(x)
        fused = fuse_norms(InferenceNet(copy.deepcopy(net)).eval())
        out = fused(x)
    torch.testing.assert_close(out[0], ref[0], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[1], ref[1], atol=1e-3, rtol=1e-3)


def test_bad_config_is_rejected():
    with pytest.raises(ConfigError):
        make_config("line", image_size=100)
    with pytest.raises(ConfigError):
        make_config("line", generator={"nonsense": 1})
    with pytest.raises(ConfigError):
        make_config("nope")
