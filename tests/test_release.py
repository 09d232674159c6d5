"""The authors' release rebuilt: its SEAN layer against a slow per-sample, per-class loop, its style codes
against masked means, and the key mapping against the release's module definitions (transcribed below from
models/SPG_net_deepfashion.py, SPG_net_market.py and networks.FlowUnet_v2 of github cszy98/SPGNet)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from models import release_keys as rk
from models.release_flow import ReleaseFlowNet
from models.release_generator import ReleaseGenerator, ReleaseSEAN
from models.style import StyleEncoder


def one_hot_parsing(b: int, k: int, h: int, w: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, k - 1, (b, h, w), generator=g)  # class k-1 never appears: an absent region
    return F.one_hot(labels, k).permute(0, 3, 1, 2).float()


def randomize_(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for name, b in module.named_buffers():
            if name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
            elif name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)


def ace_loop(layer: ReleaseSEAN, x, parsing, codes, noise):
    """The release's ACE.forward, per sample and per class (masked_scatter of ReLU(fc_j(code)) onto class j)."""
    sean = layer.sean
    c = x.shape[1]
    normalized = sean.norm(x + noise * layer.noise_scale.view(1, -1, 1, 1))
    seg = F.interpolate(parsing, size=x.shape[2:], mode="nearest")
    b, k, h, w = seg.shape
    middle = torch.zeros(b, codes.shape[2], h, w)
    for i in range(b):
        for j in range(k):
            mask = seg[i, j].bool()
            if mask.sum() > 0:
                mu = F.relu(codes[i, j] @ layer.refine.weight[j].T + layer.refine.bias[j])  # fc_mu{j}
                middle[i][:, mask] = mu.unsqueeze(1)
    pad = sean.padding
    sw, sb = sean.style_gamma_beta.weight, sean.style_gamma_beta.bias
    gamma_avg = F.conv2d(middle, sw[:c], sb[:c], padding=pad)
    beta_avg = F.conv2d(middle, sw[c:], sb[c:], padding=pad)
    actv = sean.parsing_shared(seg)
    pw, pb = sean.parsing_gamma_beta.weight, sean.parsing_gamma_beta.bias
    gamma_spade = F.conv2d(actv, pw[:c], pb[:c], padding=pad)
    beta_spade = F.conv2d(actv, pw[c:], pb[c:], padding=pad)
    s_gamma, s_beta = torch.sigmoid(-sean.blend_logits)  # the release's weights of the style branch
    gamma = s_gamma * gamma_avg + (1 - s_gamma) * gamma_spade
    beta = s_beta * beta_avg + (1 - s_beta) * beta_spade
    return normalized * (1 + gamma) + beta


@pytest.mark.parametrize("kernel_size", [3, 5])
def test_release_sean_matches_a_per_sample_per_class_loop(kernel_size):
    torch.manual_seed(0)
    k, d, c = 5, 6, 4
    layer = ReleaseSEAN(c, num_classes=k, style_dim=d, hidden=3, kernel_size=kernel_size).eval()
    randomize_(layer, 1)
    x = torch.randn(2, c, 6, 5)
    parsing = one_hot_parsing(2, k, 12, 10, seed=2)  # at twice the feature size: nearest resize inside
    codes = torch.randn(2, k, d)
    with torch.no_grad():
        layer.noise = False
        expected = ace_loop(layer, x, parsing, codes, torch.zeros(2, 1, 6, 5))
        torch.testing.assert_close(layer(x, parsing, codes), expected, atol=1e-5, rtol=1e-5)
        # noise on: the release's draw randn(B, W, H, 1).transpose(1, 3), one value per pixel for every channel
        layer.noise = True
        torch.manual_seed(7)
        noise = torch.randn(2, 5, 6, 1).transpose(1, 3)
        torch.manual_seed(7)
        torch.testing.assert_close(layer(x, parsing, codes), ace_loop(layer, x, parsing, codes, noise),
                                   atol=1e-5, rtol=1e-5)


def test_release_style_codes_are_masked_means_of_the_reflection_padded_encoder():
    torch.manual_seed(3)
    enc = StyleEncoder(4, 8, width=2, refine=False, padding_mode="reflect", up_channels=16)
    image, parsing = torch.randn(2, 3, 16, 12), one_hot_parsing(2, 4, 16, 12, seed=4)
    features = enc.features(image)  # (B,8,8,6)
    seg = F.interpolate(parsing, size=features.shape[2:], mode="nearest").bool()
    expected = torch.zeros(2, 4, 8)
    for i in range(2):
        for j in range(4):
            if seg[i, j].any():
                expected[i, j] = features[i][:, seg[i, j]].mean(1)
    torch.testing.assert_close(enc(image, parsing), expected)
    # reflection: the stem conv of a constant image gives the same value at the border as inside
    stem = enc.features[0]
    out = stem(torch.ones(1, 3, 5, 5)) - stem.bias.view(1, -1, 1, 1)
    torch.testing.assert_close(out[..., 0, 0], out[..., 2, 2])


# ------------------------------------------------------------------ the release's keys, transcribed


def _conv(keys, name, cin, cout, k, bias):
    keys[f"{name}.weight"] = (cout, cin, k, k)
    if bias:
        keys[f"{name}.bias"] = (cout,)


def _bn(keys, name, c, affine=True):
    if affine:
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (c,), (c,)
    keys[f"{name}.running_mean"], keys[f"{name}.running_var"], keys[f"{name}.num_batches_tracked"] = (c,), (c,), ()


def _ace(keys, name, c, ks, nc=20, style=128, hidden=64):
    """ACE(config, norm_nc=c, spade_params=[config, c, 20]): SPADE(...) with its own unused param-free BN."""
    keys[f"{name}.blending_gamma"] = keys[f"{name}.blending_beta"] = (1,)
    keys[f"{name}.noise_var"] = (c,)
    _bn(keys, f"{name}.Spade.param_free_norm", c, affine=False)
    _conv(keys, f"{name}.Spade.mlp_shared.0", nc, hidden, ks, True)
    _conv(keys, f"{name}.Spade.mlp_gamma", hidden, c, ks, True)
    _conv(keys, f"{name}.Spade.mlp_beta", hidden, c, ks, True)
    _bn(keys, f"{name}.param_free_norm", c, affine=False)
    for j in range(nc):
        keys[f"{name}.fc_mu{j}.weight"], keys[f"{name}.fc_mu{j}.bias"] = (style, style), (style,)
    _conv(keys, f"{name}.conv_gamma", style, c, ks, True)
    _conv(keys, f"{name}.conv_beta", style, c, ks, True)


def _res(keys, name, c, c_a=None):
    """ResidualBlock(dim=c, dim_a): conv = conv3x3 + BN (no bias), conv_a = channel_mapping(c_a, c)."""
    if c_a:
        _conv(keys, f"{name}.conv_a.0", c_a, c, 1, False)
        _bn(keys, f"{name}.conv_a.1", c)
    _conv(keys, f"{name}.conv.0", 2 * c if c_a else c, c, 3, False)
    _bn(keys, f"{name}.conv.1", c)


def release_generator_keys(nf, max_nf, num_scales, num_warp_scales, market):
    """DualUnetGenerator_SEAN(pose_nc=18, appearance_nc=3, output_nc=3, nf, max_nf, num_scales,
    num_warp_scales, n_residual_blocks=2, norm='batch', vis_mode='residual'): name -> shape."""
    ks = 3 if market else 5
    keys: dict[str, tuple] = {}
    # Zencoder(3, 128): ReflectionPad, conv 3->32, IN, LReLU, 2 x (conv s2, IN, LReLU), convT 128->256, ...
    _conv(keys, "Zencoder.model.1", 3, 32, 3, True)
    _conv(keys, "Zencoder.model.4", 32, 64, 3, True)
    _conv(keys, "Zencoder.model.7", 64, 128, 3, True)
    keys["Zencoder.model.10.weight"], keys["Zencoder.model.10.bias"] = (128, 256, 3, 3), (256,)
    _conv(keys, "Zencoder.model.14", 256, 128, 3, True)
    for path, cin in (("encp", 18), ("enca", 3)):
        _conv(keys, f"{path}_pre_conv.0", cin, nf, 1, False)
        _bn(keys, f"{path}_pre_conv.1", nf)
    for level in range(num_scales):
        c_in, c_out = min(nf * (level + 1), max_nf), min(nf * (level + 2), max_nf)
        for path in ("encp", "enca"):
            for i in range(2):
                _res(keys, f"{path}_{level}_res_{i}", c_in)
                if path == "enca" and level < num_warp_scales:
                    _res(keys, f"enca_{level}_vis_{i}", c_in, 2 * c_in)
            _conv(keys, f"{path}_{level}_downsample.1", c_in, c_out, 3, False)
            _bn(keys, f"{path}_{level}_downsample.2", c_out)
        if level == num_scales - 1:
            _conv(keys, "dec_fuse.0", 2 * c_out, c_out, 1, False)
            _bn(keys, "dec_fuse.1", c_out)
        _ace(keys, f"dec_{level}_upsample_norm", c_in if market else c_out, ks)
        _conv(keys, f"dec_{level}_upsample.1", c_out, 4 * c_in, 3, False)
        if not market:
            _bn(keys, f"dec_{level}_upsample.3", c_in)
        for i in range(2):  # ResidualBlock_SEAN(c_in, 2 c_in): spectral-norm convs without bias, two ACEs
            name = f"dec_{level}_res_{i}"
            for conv, cin, k in (("conv_a", 2 * c_in, 1), ("conv", 2 * c_in, 3)):
                keys[f"{name}.{conv}.weight_orig"] = (c_in, cin, k, k)
                keys[f"{name}.{conv}.weight_u"], keys[f"{name}.{conv}.weight_v"] = (c_in,), (cin * k * k,)
            _ace(keys, f"{name}.conv_a_norm", 2 * c_in, ks)
            _ace(keys, f"{name}.conv_norm", 2 * c_in, ks)
    _conv(keys, "dec_output.1", nf, 3, 7, True)
    return keys


def release_flow_keys(nf, max_nf, start_scale, num_scales):
    """FlowUnet_v2(input_nc=36, nf, max_nf, start_scale, num_scales, n_residual_blocks=2, norm='batch')."""
    keys: dict[str, tuple] = {}
    start_level = start_scale.bit_length() - 1
    _conv(keys, "pre_conv.0.0", 36, nf, 1, False)
    _bn(keys, "pre_conv.0.1", nf)
    for i in range(start_level):
        c_in, c_out = min(nf * (i + 1), max_nf), min(nf * (i + 2), max_nf)
        _res(keys, f"pre_conv.{1 + 4 * i}", c_in)
        _conv(keys, f"pre_conv.{3 + 4 * i}", c_in, c_out, 3, False)
        _bn(keys, f"pre_conv.{4 + 4 * i}", c_out)
    for level in range(num_scales):
        c_in, c_out = min(nf * (start_level + level + 1), max_nf), min(nf * (start_level + level + 2), max_nf)
        for i in range(2):
            _res(keys, f"enc_{level}_res_{i}", c_in)
            _res(keys, f"dec_{level}_res_{i}", c_in, c_in)
        _conv(keys, f"enc_{level}_downsample.1", c_in, c_out, 3, False)
        _bn(keys, f"enc_{level}_downsample.2", c_out)
        _conv(keys, f"dec_{level}_upsample.1", c_out, 4 * c_in, 3, False)
        _bn(keys, f"dec_{level}_upsample.3", c_in)
        _conv(keys, f"pred_flow_{level}.1", c_in, 2, 3, True)
    _conv(keys, "pred_vis.1", nf * (1 + start_level), 3, 3, True)
    return keys


GENERATOR_CASES = {
    "deepfashion": ({"n_scales": 3, "n_warp_scales": 2}, False),
    "market": ({"n_scales": 3, "n_warp_scales": 2, "sean_kernel": 3, "sean_after_upsample": True}, True),
}


def small_generator(args) -> ReleaseGenerator:
    return ReleaseGenerator(base_channels=4, max_channels=8, **args)


def shapes(state):
    return {k: tuple(v.shape) for k, v in state.items()}


@pytest.mark.parametrize("case", GENERATOR_CASES)
def test_generator_mapping_gives_exactly_the_release_keys_and_shapes(case):
    args, market = GENERATOR_CASES[case]
    ours = small_generator(args).state_dict()
    release = rk.ours_to_release(ours, rk.generator_rules(ours), rk.unused_release_keys(ours))
    assert shapes(release) == release_generator_keys(4, 8, args["n_scales"], args["n_warp_scales"], market)


def test_flow_mapping_gives_exactly_the_release_keys_and_shapes():
    for start_scale, num_scales in ((2, 3), (4, 2)):
        ours = ReleaseFlowNet(nf=4, max_nf=12, start_scale=start_scale, num_scales=num_scales).state_dict()
        release = rk.ours_to_release(ours, rk.flow_rules(ours))
        assert shapes(release) == release_flow_keys(4, 12, start_scale, num_scales)


def test_full_size_parameter_counts_are_the_release_s():
    """87,795,177 (DeepFashion) and 30,914,805 (Market) parameters, counted on the release's modules."""
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ReleaseGenerator()) == 87_795_177
    assert count(ReleaseGenerator(n_scales=5, n_warp_scales=4, sean_kernel=3, sean_after_upsample=True)) == 30_914_805


def test_conversion_round_trip_and_its_errors():
    torch.manual_seed(5)
    net = small_generator(GENERATOR_CASES["deepfashion"][0])
    randomize_(net, 6)
    ours = net.state_dict()
    rules, unused = rk.generator_rules(ours), rk.unused_release_keys(ours)
    release = rk.ours_to_release(ours, rules, unused)
    # the blend is stored with the release's sign: sigmoid(release b) weighs the style branch
    torch.testing.assert_close(release["dec_0_upsample_norm.blending_gamma"],
                               -ours["up_norms.0.sean.blend_logits"][:1])
    torch.testing.assert_close(release["dec_0_upsample_norm.fc_mu3.weight"], ours["up_norms.0.refine.weight"][3])
    back, problems = rk.release_to_ours(release, ours, rules, unused)
    assert problems == []
    assert back.keys() == ours.keys()
    for key in ours:
        torch.testing.assert_close(back[key], ours[key], rtol=0, atol=0)

    broken = dict(release)
    del broken["dec_1_res_0.conv_a.weight_u"]
    broken["dec_9_upsample.1.weight"] = torch.zeros(1)
    broken["enca_0_res_1.conv.0.weight"] = torch.zeros(4, 4, 1, 1)
    broken["dec_0_res_1.conv_norm.fc_mu7.bias"] = torch.zeros(7)
    _, problems = rk.release_to_ours(broken, ours, rules, unused)
    text = "\n".join(problems)
    assert "missing key 'dec_1_res_0.conv_a.weight_u'" in text
    assert "unexpected key 'dec_9_upsample.1.weight'" in text
    assert ("shape mismatch: 'enca_0_res_1.conv.0.weight' is (4, 4, 1, 1), expected (4, 4, 3, 3) for our "
            "'app_res.0.1.body.1.weight' (4, 4, 3, 3)") in problems
    stacked = next(r for r in rules if "dec_0_res_1.conv_norm.fc_mu7.bias" in r.release)  # 20 keys, one tensor
    shape = tuple(ours[stacked.ours].shape)
    assert (f"shape mismatch: 'dec_0_res_1.conv_norm.fc_mu7.bias' is (7,), expected {shape[1:]} for our "
            f"'{stacked.ours}' {shape}") in problems
    assert len(problems) == 4

    # one key of the 20 that form one of our tensors missing: said once, its 19 partners are not "unexpected"
    partial = dict(release)
    del partial["dec_0_upsample_norm.fc_mu3.weight"]
    _, problems = rk.release_to_ours(partial, ours, rules, unused)
    assert problems == ["missing key 'dec_0_upsample_norm.fc_mu3.weight' (needed for our 'up_norms.0.refine.weight')"]


def test_release_generator_runs_and_noise_is_controllable():
    torch.manual_seed(8)
    net = small_generator(GENERATOR_CASES["market"][0])
    with torch.no_grad():
        for name, p in net.named_parameters():
            if name.endswith("noise_scale"):
                p.fill_(1.0)
    b, h, w = 2, 16, 8
    args = (torch.rand(b, 3, h, w) * 2 - 1, torch.rand(b, 18, h, w), one_hot_parsing(b, 20, h, w, 1),
            one_hot_parsing(b, 20, h, w, 2), torch.randn(b, 2, h, w), torch.randint(0, 3, (b, h, w)))
    net.eval()
    with torch.no_grad():
        noisy = [net(*args) for _ in range(2)]
        net.set_noise(False)
        quiet = [net(*args) for _ in range(2)]
    assert noisy[0].shape == (b, 3, h, w) and quiet[0].abs().max() <= 1
    assert not torch.equal(noisy[0], noisy[1])
    torch.testing.assert_close(quiet[0], quiet[1], rtol=0, atol=0)


def test_release_flow_is_zero_on_predicted_background_and_scaled_per_level():
    torch.manual_seed(9)
    net = ReleaseFlowNet(nf=4, max_nf=8, num_scales=2).eval()
    randomize_(net, 10)
    with torch.no_grad():
        net.vis_head[1].bias.zero_()  # no class favoured: the labels vary across the map
        out = net(torch.rand(2, 18, 16, 8), torch.rand(2, 18, 16, 8))
    background = out.vis_logits.argmax(1) == 2
    assert background.any() and (~background).any()
    assert out.flow.permute(0, 2, 3, 1)[background].abs().max() == 0
    assert [tuple(f.shape[2:]) for f in out.flows] == [(4, 2), (8, 4)]
    # finest level at H/2: its own pixels are half the full-resolution flow (bilinear upsampling x 2)
    up = F.interpolate(out.flows[-1] * 2, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(out.flow, up * (~background).unsqueeze(1))


# ------------------------------------------------------------------ the release recipe's pieces


def test_release_only_keys_are_refused_with_other_networks():
    from models.build import build_spgnet
    from utils.config import ConfigError, load_config

    for key in ("model.generator.sean_kernel=3", "model.generator.sean_after_upsample=true",
                "model.generator.noise=false"):  # the registry refuses a field the variant does not take
        with pytest.raises(ConfigError, match=key.split("=")[0]):
            build_spgnet(load_config("configs/synthetic.yaml", [key]))
    for keys in (["model.flow.start_scale=4"], ["data.aug_scale=1.5"],
                 ["data.target_augment=true", "model.flow.source=files"]):
        with pytest.raises(ConfigError, match=keys[0].split("=")[0]):
            load_config("configs/synthetic.yaml", keys)


def test_kaiming_init_follows_the_release_scheme():
    from models.init import kaiming_init_

    torch.manual_seed(11)
    net = small_generator(GENERATOR_CASES["deepfashion"][0])
    sn_before = net.dec_blocks[0][0].conv_in.weight_orig.clone()
    kaiming_init_(net)
    fc = net.up_norms[0].refine  # 20 x Linear(128, 128): kaiming-normal with fan_in 128 each, zero bias
    assert abs(fc.weight.std().item() - (2 / 128) ** 0.5) < 0.003 and fc.bias.abs().max() == 0
    bn = net.app_down[0][2]
    assert bn.bias.abs().max() == 0 and (bn.weight - 1).abs().max() < 0.1 and bn.weight.std() > 0
    conv = net.up_norms[0].sean.style_gamma_beta  # 5x5 over 128 channels: std sqrt(2 / (128 * 25))
    assert abs(conv.weight.std().item() / (2 / (128 * 25)) ** 0.5 - 1) < 0.1
    assert torch.equal(net.dec_blocks[0][0].conv_in.weight_orig, sn_before)  # the release's init misses these


def test_perceptual_l1_distance_weights_each_layer():
    from losses.perceptual import VGGPerceptualLoss

    torch.manual_seed(12)
    with pytest.warns(UserWarning):
        loss = VGGPerceptualLoss(("relu1_1", "relu2_1"), weights="random", layer_weights=(0.125, 0.5), distance="l1")
    a, b = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 3, 16, 16) * 2 - 1
    fa, fb = loss.features(a), loss.features(b)
    expected = 0.125 * (fa[0] - fb[0]).abs().mean() + 0.5 * (fa[1] - fb[1]).abs().mean()
    torch.testing.assert_close(loss(a, b)["perceptual"], expected)


def test_joint_maps_only_are_the_first_18_channels():
    from data.pose import encode_pose

    kp = torch.tensor([[10.0, 12.0]] * 18)
    kp[3] = -1
    full = encode_pose(kp, 32, 24, mode="binary", radius=4)
    joints = encode_pose(kp, 32, 24, mode="binary", radius=4, limbs=False)
    assert joints.shape == (18, 32, 24)
    torch.testing.assert_close(joints, full[:18])


def test_target_augmentation_moves_image_parsing_and_keypoints_together():
    import cv2
    import numpy as np

    from data.datasets import affine_keypoints, release_target_affine

    torch.manual_seed(13)
    h, w = 128, 64
    affine = release_target_affine((h, w), 1.2, (10, 10))
    # the release's formula with its x offset centred on H / 2 (sic), from the same draws
    torch.manual_seed(13)
    dx, dy = int(torch.randint(-10, 10, ())), int(torch.randint(-10, 10, ()))
    s = 1.2 ** (float(torch.rand(())) * 2 - 1)
    np.testing.assert_allclose(affine, [[s, 0, 0.5 * h * (1 - s) + dx], [0, s, 0.5 * w * (1 - s) + dy]])
    keypoints = np.full((18, 2), -1.0, np.float32)
    keypoints[0], keypoints[1], keypoints[2] = (40, 30), (100, 20), (130, 20)  # (y, x); the third is outside
    moved = affine_keypoints(keypoints, affine, (h, w))
    for j in range(2):  # a lit pixel at the joint lands where the joint goes
        image = np.zeros((h, w), np.float32)
        image[int(keypoints[j, 0]), int(keypoints[j, 1])] = 1.0
        warped = cv2.warpAffine(image, affine, (w, h), flags=cv2.INTER_LINEAR)
        y, x = np.unravel_index(warped.argmax(), warped.shape)
        assert abs(y - moved[j, 0]) <= 1 and abs(x - moved[j, 1]) <= 1
    assert (moved[2:] == -1).all()
