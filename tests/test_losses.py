"""Losses against independent computations: torchvision's VGG19 sliced by hand, the GAN formulas written out,
log-softmax gathers, and slow per-block loops for the multi-scale end-point error."""

from __future__ import annotations

import copy
import logging
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision

from losses import LOSSES, build_loss
from losses.flow import MultiScaleEPE, VisibilityCrossEntropy
from losses.gan import GANLoss
from losses.parsing import ParsingCrossEntropy, balanced_class_weights, pixel_accuracy
from losses.perceptual import VGGPerceptualLoss
from losses.reconstruction import L1Loss
from utils.weights import MissingWeightsError

# torchvision vgg19().features: 0 conv1_1, 1 relu1_1, 2 conv1_2, 3 relu1_2, 4 pool1, 5 conv2_1, 6 relu2_1, ...
RELU_INDEX = {"relu1_1": 1, "relu2_1": 6, "relu3_1": 11, "relu4_1": 20}
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def tv_features() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torchvision.models.vgg19(weights=None).features.eval()


def reference_features(features: torch.nn.Sequential, images: torch.Tensor, layer: str) -> torch.Tensor:
    x = ((images + 1) / 2 - MEAN) / STD
    with torch.no_grad():
        return features[: RELU_INDEX[layer] + 1](x)


def random_loss(**kwargs) -> VGGPerceptualLoss:
    with pytest.warns(UserWarning, match="RANDOM-INIT VGG19"):
        return VGGPerceptualLoss(weights="random", **kwargs)


# ------------------------------------------------------------------------------------------ perceptual


def test_perceptual_random_matches_torchvision_by_hand(tv_features, caplog):
    with caplog.at_level(logging.WARNING):
        loss = random_loss()
    assert "RANDOM-INIT VGG19" in caplog.text
    tv = copy.deepcopy(tv_features[:21])
    missing, unexpected = tv.load_state_dict(loss.vgg.state_dict(), strict=False)
    assert not missing and not unexpected  # same indices, same shapes, cut after relu4_1
    torch.manual_seed(1)
    a, b = torch.rand(2, 3, 32, 24) * 2 - 1, torch.rand(2, 3, 32, 24) * 2 - 1
    out = loss(a, b)
    total = 0.0
    for layer in RELU_INDEX:
        fa, fb = reference_features(tv, a, layer), reference_features(tv, b, layer)
        expected = ((fa - fb) ** 2).sum().item() / fa.numel()  # ||.||^2 / (C H W), batch mean
        assert out[f"perceptual/{layer}"].item() == pytest.approx(expected, rel=1e-4)
        total += expected
    assert out["perceptual"].item() == pytest.approx(total, rel=1e-4)


def test_perceptual_layer_weights_and_unknown_layer():
    loss = random_loss(layers=("relu1_1", "relu2_1"), layer_weights=(2.0, 0.5))
    torch.manual_seed(2)
    a, b = torch.rand(1, 3, 16, 16) * 2 - 1, torch.rand(1, 3, 16, 16) * 2 - 1
    out = loss(a, b)
    expected = 2.0 * out["perceptual/relu1_1"] + 0.5 * out["perceptual/relu2_1"]
    assert out["perceptual"].item() == pytest.approx(expected.item(), rel=1e-6)
    assert len(loss.vgg) == 7  # truncated right after relu2_1
    with pytest.raises(ValueError, match="relu9_9"):
        VGGPerceptualLoss(layers=("relu9_9",), weights="random")


def test_perceptual_zero_for_identical_inputs_and_gradients():
    loss = random_loss()
    torch.manual_seed(3)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    assert loss(x, x.clone())["perceptual"].item() == 0.0
    pred = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    target = (torch.rand(2, 3, 16, 16) * 2 - 1).requires_grad_(True)
    loss(pred, target)["perceptual"].backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0
    assert target.grad is None  # the ground truth's features are computed under no_grad
    assert all(p.grad is None and not p.requires_grad for p in loss.vgg.parameters())
    # the batched no-grad path (validation) gives the same value as the two-pass training path
    two_pass = loss(pred, target)["perceptual"].item()
    with torch.no_grad():
        assert loss(pred, target)["perceptual"].item() == pytest.approx(two_pass, rel=1e-5)


def test_perceptual_vgg_stays_in_eval_mode():
    parent = torch.nn.ModuleDict({"perc": random_loss(layers=("relu1_1",))})
    parent.train()
    assert parent["perc"].training and not parent["perc"].vgg.training
    assert not any(m.training for m in parent["perc"].vgg.modules())


def test_perceptual_imagenet_missing_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    with pytest.raises(MissingWeightsError) as info:
        VGGPerceptualLoss(weights="imagenet")
    message = str(info.value)
    assert "vgg19-dcbb9e9d.pth" in message
    assert "download_weights" in message


def test_perceptual_loads_explicit_path(tv_features, tmp_path):
    path = tmp_path / "my_vgg19.pth"
    # torchvision's key layout (features.<i>.*); the classifier keys are ignored by the loss anyway
    torch.save({f"features.{k}": v for k, v in tv_features.state_dict().items()}, path)
    loss = VGGPerceptualLoss(layers=("relu1_1", "relu2_1", "relu3_1"), weights=str(path))
    torch.manual_seed(4)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        feats = loss.features(x)
    for layer, f in zip(("relu1_1", "relu2_1", "relu3_1"), feats):
        torch.testing.assert_close(f, reference_features(tv_features, x, layer), rtol=1e-5, atol=1e-5)


def test_perceptual_rejects_a_foreign_state_dict(tmp_path):
    path = tmp_path / "not_vgg.pth"
    torch.save({"conv.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="not_vgg.pth"):
        VGGPerceptualLoss(weights=str(path))


# ------------------------------------------------------------------------------------------ GAN


def _logits() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(5)
    return torch.randn(3, 1, 6, 5) * 3, torch.randn(3, 1, 6, 5) * 3


def test_gan_vanilla_by_hand():
    real, fake = _logits()
    gan = GANLoss("vanilla")
    sig = torch.sigmoid
    assert gan.generator_loss(fake).item() == pytest.approx((-torch.log(sig(fake))).mean().item(), rel=1e-5)
    d = gan.discriminator_loss(real, fake)
    assert d["d_real"].item() == pytest.approx((-torch.log(sig(real))).mean().item(), rel=1e-5)
    assert d["d_fake"].item() == pytest.approx((-torch.log(1 - sig(fake))).mean().item(), rel=1e-5)
    # stable where log(sigmoid) underflows: -log sigmoid(-200) = 200
    assert gan.generator_loss(torch.full((1, 1, 2, 2), -200.0)).item() == pytest.approx(200.0)
    assert gan(fake).item() == gan.generator_loss(fake).item()


def test_gan_lsgan_and_hinge_by_hand():
    real, fake = _logits()
    ls = GANLoss("lsgan")
    assert ls.generator_loss(fake).item() == pytest.approx(((fake - 1) ** 2).mean().item(), rel=1e-6)
    d = ls.discriminator_loss(real, fake)
    assert d["d_real"].item() == pytest.approx(((real - 1) ** 2).mean().item(), rel=1e-6)
    assert d["d_fake"].item() == pytest.approx((fake**2).mean().item(), rel=1e-6)
    hinge = GANLoss("hinge")
    assert hinge.generator_loss(fake).item() == pytest.approx(-fake.mean().item(), rel=1e-6)
    d = hinge.discriminator_loss(real, fake)
    assert d["d_real"].item() == pytest.approx(torch.clamp(1 - real, min=0).mean().item(), rel=1e-6)
    assert d["d_fake"].item() == pytest.approx(torch.clamp(1 + fake, min=0).mean().item(), rel=1e-6)


def test_gan_multiscale_averages_scales():
    torch.manual_seed(6)
    scales = [torch.randn(2, 1, 8, 8), torch.randn(2, 1, 4, 4)]
    gan = GANLoss("lsgan")
    expected = (((scales[0] - 1) ** 2).mean() + ((scales[1] - 1) ** 2).mean()) / 2
    assert gan.generator_loss(scales).item() == pytest.approx(expected.item(), rel=1e-6)
    d = gan.discriminator_loss(scales, scales)
    assert d["d_fake"].item() == pytest.approx(((scales[0] ** 2).mean() + (scales[1] ** 2).mean()).item() / 2)
    with pytest.raises(ValueError, match="wgan"):
        GANLoss("wgan")


# ------------------------------------------------------------------------------------------ CE, L1


def manual_ce(logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> float:
    log_prob = logits - logits.exp().sum(dim=1, keepdim=True).log()  # (B,K,H,W)
    picked = -log_prob.gather(1, labels.unsqueeze(1)).squeeze(1)  # (B,H,W)
    if weight is None:
        return picked.mean().item()
    w = weight[labels]
    return ((w * picked).sum() / w.sum()).item()


def test_parsing_ce_matches_manual_gather():
    torch.manual_seed(7)
    logits = torch.randn(2, 5, 6, 4)
    labels = torch.randint(0, 5, (2, 6, 4))
    one_hot = F.one_hot(labels, 5).permute(0, 3, 1, 2).float()
    ce = ParsingCrossEntropy()
    assert ce(logits, labels).item() == pytest.approx(manual_ce(logits, labels), rel=1e-5)
    assert ce(logits, one_hot).item() == pytest.approx(manual_ce(logits, labels), rel=1e-5)
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.1])
    wce = ParsingCrossEntropy(class_weights=weight)
    assert wce(logits, labels).item() == pytest.approx(manual_ce(logits, labels, weight), rel=1e-5)
    assert wce(logits, one_hot).item() == pytest.approx(manual_ce(logits, labels, weight), rel=1e-5)
    with pytest.raises(ValueError, match="does not match"):
        ce(logits, labels[:, :5])


def test_pixel_accuracy_hand_case():
    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 0, 0, 0] = logits[0, 1, 0, 1] = logits[0, 2, 1, 0] = logits[0, 2, 1, 1] = 1.0  # argmax [[0,1],[2,2]]
    labels = torch.tensor([[[0, 1], [2, 0]]])
    assert pixel_accuracy(logits, labels).item() == pytest.approx(0.75)
    one_hot = F.one_hot(labels, 3).permute(0, 3, 1, 2)
    assert pixel_accuracy(logits, one_hot).item() == pytest.approx(0.75)


def test_visibility_ce_and_l1_by_hand():
    torch.manual_seed(8)
    logits, vis = torch.randn(2, 3, 5, 4), torch.randint(0, 3, (2, 5, 4))
    assert VisibilityCrossEntropy()(logits, vis).item() == pytest.approx(manual_ce(logits, vis), rel=1e-5)
    with pytest.raises(ValueError, match="B,3,H,W"):
        VisibilityCrossEntropy()(torch.randn(2, 4, 5, 4), vis)
    a, b = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4)
    assert L1Loss()(a, b).item() == pytest.approx((a - b).abs().sum().item() / a.numel(), rel=1e-6)


# ------------------------------------------------------------------------------------------ multi-scale EPE


def block_downsample(flow: torch.Tensor, s: int) -> torch.Tensor:
    b, c, h, w = flow.shape
    return flow.reshape(b, c, h // s, s, w // s, s).mean(dim=(3, 5)) / s


def test_epe_zero_for_correctly_downsampled_target():
    torch.manual_seed(9)
    target = torch.randn(2, 2, 16, 16) * 5
    preds = [block_downsample(target, s) for s in (4, 2, 1)]  # coarse to fine
    terms = MultiScaleEPE().terms(preds, target)
    assert set(terms) == {"flow_epe", "flow_epe/4x4", "flow_epe/8x8", "flow_epe/16x16"}
    assert all(v.item() == pytest.approx(0.0, abs=1e-5) for v in terms.values())


def test_epe_constant_offset_scales_by_two_per_level():
    dx, dy = 3.0, 4.0  # |d| = 5 px at full resolution
    target = torch.tensor([dx, dy]).view(1, 2, 1, 1).expand(2, 2, 16, 16).clone()
    preds = [torch.zeros(2, 2, 16 // 2**level, 16 // 2**level) for level in (3, 2, 1, 0)]
    weights = (0.1, 0.2, 0.3, 0.4)
    terms = MultiScaleEPE(weights=weights).terms(preds, target)
    expected = [5.0 / 2**level for level in (3, 2, 1, 0)]
    for pred, value in zip(preds, expected):
        assert terms[f"flow_epe/{pred.shape[2]}x{pred.shape[3]}"].item() == pytest.approx(value, rel=1e-6)
    assert terms["flow_epe"].item() == pytest.approx(sum(w * v for w, v in zip(weights, expected)), rel=1e-6)
    # default weights: the mean over scales; anisotropic scale (x by 1/4, y by 1/2)
    assert MultiScaleEPE()(preds, target).item() == pytest.approx(sum(expected) / 4, rel=1e-6)
    wide = target[:, :, :8, :]  # (2,2,8,16) -> a (4,4) prediction
    assert MultiScaleEPE()(torch.zeros(2, 2, 4, 4), wide).item() == pytest.approx(math.hypot(dx / 4, dy / 2))


def slow_masked_epe(pred: torch.Tensor, target: torch.Tensor, vis: torch.Tensor, s: int, classes) -> float:
    errors = []
    for b in range(pred.shape[0]):
        for i in range(pred.shape[2]):
            for j in range(pred.shape[3]):
                block = vis[b, i * s : (i + 1) * s, j * s : (j + 1) * s]
                if all(int(v) in classes for v in block.flatten()):
                    t = target[b, :, i * s : (i + 1) * s, j * s : (j + 1) * s].mean(dim=(1, 2)) / s
                    errors.append(math.dist(pred[b, :, i, j].tolist(), t.tolist()))
    return sum(errors) / len(errors)


@pytest.mark.parametrize("classes", [(0,), (0, 1)])
def test_epe_mask_excludes_pixels(classes):
    torch.manual_seed(10)
    target = torch.randn(2, 2, 8, 8) * 3
    vis = torch.randint(0, 3, (2, 8, 8))
    vis[:, :4, :4] = 0  # at least one fully valid 2x2 block per image
    preds = [torch.randn(2, 2, 4, 4), torch.randn(2, 2, 8, 8)]
    terms = MultiScaleEPE(mask_classes=classes).terms(preds, target, vis)
    assert terms["flow_epe/8x8"].item() == pytest.approx(slow_masked_epe(preds[1], target, vis, 1, classes), rel=1e-5)
    assert terms["flow_epe/4x4"].item() == pytest.approx(slow_masked_epe(preds[0], target, vis, 2, classes), rel=1e-5)


def slow_valid_mean_epe(pred: torch.Tensor, target: torch.Tensor, vis: torch.Tensor, s: int) -> float:
    """coarse=valid_mean by hand: each block with a visible pixel, on the mean flow of its visible pixels (over s,
    the scale factor), weighted by their share of the block."""
    total = weight = 0.0
    for b in range(pred.shape[0]):
        for i in range(pred.shape[2]):
            for j in range(pred.shape[3]):
                cells = [(y, x) for y in range(i * s, (i + 1) * s) for x in range(j * s, (j + 1) * s)
                         if int(vis[b, y, x]) == 0]
                if not cells:
                    continue
                mean = [sum(float(target[b, c, y, x]) for y, x in cells) / len(cells) / s for c in (0, 1)]
                share = len(cells) / s**2
                total += share * math.dist(pred[b, :, i, j].tolist(), mean)
                weight += share
    return total / weight


def test_epe_valid_mean_supervises_every_block_with_a_visible_pixel():
    torch.manual_seed(12)
    target = torch.randn(2, 2, 8, 8) * 3
    vis = torch.randint(0, 3, (2, 8, 8))  # no 4x4 block is all visible: all_valid would supervise none
    preds = [torch.randn(2, 2, 2, 2), torch.randn(2, 2, 4, 4), torch.randn(2, 2, 8, 8)]
    terms = MultiScaleEPE(coarse="valid_mean").terms(preds, target, vis)
    for pred, s in zip(preds, (4, 2, 1)):
        size = f"{pred.shape[2]}x{pred.shape[3]}"
        assert terms[f"flow_epe/{size}"].item() == pytest.approx(slow_valid_mean_epe(pred, target, vis, s), rel=1e-5)
    # full resolution: the same as all_valid
    strict = MultiScaleEPE().terms(preds, target, vis)
    assert terms["flow_epe/8x8"].item() == pytest.approx(strict["flow_epe/8x8"].item())
    with pytest.raises(ValueError, match="coarse"):
        MultiScaleEPE(coarse="median")


def test_epe_invalid_pixels_do_not_leak():
    torch.manual_seed(11)
    target = torch.randn(1, 2, 8, 8)
    vis = torch.zeros(1, 8, 8, dtype=torch.long)
    vis[:, :, 4:] = 2
    target[:, :, :, 4:] = float("nan")  # a background fill value that must never be read
    pred = torch.randn(1, 2, 4, 4, requires_grad=True)
    value = MultiScaleEPE()([pred], target, vis)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(pred.grad).all()
    assert pred.grad[:, :, :, 2:].abs().sum() == 0  # unsupervised coarse pixels get no gradient
    with pytest.raises(ValueError, match="2 scale weights for 1"):
        MultiScaleEPE(weights=(1.0, 1.0))([pred], target, vis)


# ------------------------------------------------------------------------------------------ registry


def test_registry_builds_by_name_and_rejects_unknown():
    gan = build_loss("adversarial", mode="lsgan")
    assert isinstance(gan, GANLoss) and gan.mode == "lsgan"
    assert isinstance(build_loss("flow_epe", mask_classes=(0, 1)), MultiScaleEPE)
    assert isinstance(build_loss("ce"), ParsingCrossEntropy)
    with pytest.raises(ValueError, match="unknown loss 'dice'.*ce.*perceptual.*visibility"):
        build_loss("dice")


def test_registry_names_are_config_weights():
    from utils.config import LossWeights

    assert set(LOSSES) <= set(LossWeights.__dataclass_fields__)  # every loss has its lambda in the config
    assert all(isinstance(getattr(LossWeights(), name), float) for name in LOSSES)


def test_balanced_class_weights_by_hand():
    """w_k = f_k^-1/2 scaled to a mean pixel weight of 1; an absent class weighs 0."""
    counts = [600, 0, 300, 100]
    f = [0.6, 0.0, 0.3, 0.1]
    raw = [0.6**-0.5, 0.0, 0.3**-0.5, 0.1**-0.5]
    scale = sum(fi * ri for fi, ri in zip(f, raw))
    w = balanced_class_weights(counts)
    assert w.tolist() == pytest.approx([r / scale for r in raw], rel=1e-6)
    assert float((w * torch.tensor(f)).sum()) == pytest.approx(1.0, rel=1e-6)
    assert w[3] > w[2] > w[0]  # rarer classes weigh more
    assert balanced_class_weights(counts, power=1.0).tolist() == pytest.approx(
        [1 / 0.6 / 3, 0.0, 1 / 0.3 / 3, 1 / 0.1 / 3], rel=1e-6)  # inverse frequency: each class weighs 1/3 in all
    with pytest.raises(ValueError, match="non-negative"):
        balanced_class_weights([0, 0])
