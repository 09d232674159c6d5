"""models/schp.py: SCHP's heads against slow transcriptions of the reference's layers, the published key names and
shapes, the parameter count, the LIP = CIHP label table, and the extractor's affine transform and its inverse."""

import io

import cv2
import numpy as np
import pytest
import torch

from data.parsing import CIHP_LABELS
from models import schp
from scripts import download_weights
from utils.weights import MissingWeightsError

# Measured on the reference network (AugmentCE2P.resnet101, 20 classes) built beside ours with random weights.
REFERENCE_PARAMETERS = 66_723_928


def randomise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random weights, batch-norm statistics and affine parameters, so that every term of every ABN matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if name.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (0.3 if t.dim() > 1 else 0.5))
    return module.eval()


# ------------------------------------------------------------------------------- slow transcriptions


def abn_ref(x: torch.Tensor, bn: schp.ABN) -> torch.Tensor:
    """inplace_abn in eval mode, per channel: (x - mean) / sqrt(var + eps) * weight + bias, then leaky ReLU."""
    out = torch.empty_like(x)
    for c in range(x.shape[1]):
        y = (x[:, c] - bn.running_mean[c]) / torch.sqrt(bn.running_var[c] + bn.eps) * bn.weight[c] + bn.bias[c]
        out[:, c] = torch.where(y >= 0, y, 0.01 * y) if bn.activation == "leaky_relu" else y
    return out


def conv_ref(x: torch.Tensor, conv: torch.nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution as, per output channel, a weighted sum of the input channels; others through F.conv2d with
    the same padding."""
    if conv.kernel_size != (1, 1):
        return torch.nn.functional.conv2d(x, conv.weight, conv.bias, padding=conv.padding)
    out = torch.zeros(x.shape[0], conv.out_channels, *x.shape[2:])
    for o in range(conv.out_channels):
        out[:, o] = (conv.weight[o, :, 0, 0, None, None] * x).sum(dim=1)
        if conv.bias is not None:
            out[:, o] += conv.bias[o]
    return out


def upsample_ref(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear with align_corners=True: output pixel i samples the input at i (h - 1) / (H - 1)."""
    h, w = x.shape[-2:]
    out = torch.empty(*x.shape[:2], *size)
    for i in range(size[0]):
        for j in range(size[1]):
            y = i * (h - 1) / (size[0] - 1) if size[0] > 1 else 0.0
            xx = j * (w - 1) / (size[1] - 1) if size[1] > 1 else 0.0
            y0, x0 = min(int(y), h - 1), min(int(xx), w - 1)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            dy, dx = y - y0, xx - x0
            out[..., i, j] = ((1 - dy) * (1 - dx) * x[..., y0, x0] + (1 - dy) * dx * x[..., y0, x1]
                              + dy * (1 - dx) * x[..., y1, x0] + dy * dx * x[..., y1, x1])
    return out


def pool_ref(x: torch.Tensor, s: int) -> torch.Tensor:
    """Adaptive average pooling to s x s: cell (i, j) averages rows floor(i h / s) .. ceil((i + 1) h / s) - 1."""
    h, w = x.shape[-2:]
    out = torch.empty(*x.shape[:2], s, s)
    for i in range(s):
        for j in range(s):
            rows = slice(i * h // s, -(-(i + 1) * h // s))
            cols = slice(j * w // s, -(-(j + 1) * w // s))
            out[..., i, j] = x[..., rows, cols].mean(dim=(-2, -1))
    return out


def conv_abn_ref(x: torch.Tensor, block: torch.nn.Sequential) -> torch.Tensor:
    return abn_ref(conv_ref(x, block[0]), block[1])


def test_psp_module_against_its_transcription():
    psp = randomise(schp.PSPModule(features=6, out_features=4), seed=1)
    x = torch.randn(2, 6, 7, 9)
    priors = [upsample_ref(abn_ref(conv_ref(pool_ref(x, s), stage[1]), stage[2]), (7, 9))
              for s, stage in zip(schp.PSP_SIZES, psp.stages)]
    expected = conv_abn_ref(torch.cat([*priors, x], dim=1), psp.bottleneck)
    with torch.no_grad():
        torch.testing.assert_close(psp(x), expected, atol=1e-5, rtol=1e-5)


def test_edge_module_against_its_transcription():
    edge = randomise(schp.EdgeModule(in_features=(3, 4, 5), mid=6, out=2), seed=2)
    xs = [torch.randn(1, 3, 8, 8), torch.randn(1, 4, 4, 4), torch.randn(1, 5, 2, 2)]
    feats = [conv_abn_ref(x, conv) for x, conv in zip(xs, (edge.conv1, edge.conv2, edge.conv3))]
    edges = [conv_ref(f, edge.conv4) for f in feats]  # the 3x3 conv4 is shared by the three levels
    edges = [edges[0]] + [upsample_ref(e, (8, 8)) for e in edges[1:]]
    feats = [feats[0]] + [upsample_ref(f, (8, 8)) for f in feats[1:]]
    with torch.no_grad():
        got_edge, got_feats = edge(*xs)
        torch.testing.assert_close(got_edge, conv_ref(torch.cat(edges, dim=1), edge.conv5), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(got_feats, torch.cat(feats, dim=1), atol=1e-5, rtol=1e-5)


def test_decoder_and_fusion_against_their_transcription():
    decoder = randomise(schp.DecoderModule(num_classes=5), seed=3)
    context, low = torch.randn(1, 512, 3, 3), torch.randn(1, 256, 6, 5)
    x = torch.cat([upsample_ref(conv_abn_ref(context, decoder.conv1), (6, 5)), conv_abn_ref(low, decoder.conv2)], 1)
    x = abn_ref(conv_ref(abn_ref(conv_ref(x, decoder.conv3[0]), decoder.conv3[1]), decoder.conv3[2]),
                decoder.conv3[3])
    with torch.no_grad():
        logits, features = decoder(context, low)
        torch.testing.assert_close(features, x, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(logits, conv_ref(x, decoder.conv4), atol=1e-4, rtol=1e-4)
    net = randomise(schp.SCHPNet(num_classes=5), seed=4)
    parsing_features, edge_features = torch.randn(1, 256, 4, 4), torch.randn(1, 768, 4, 4)
    fused = torch.cat([parsing_features, edge_features], 1)  # dropout is the identity in eval mode
    expected = conv_ref(abn_ref(conv_ref(fused, net.fushion[0]), net.fushion[1]), net.fushion[3])
    with torch.no_grad():
        torch.testing.assert_close(net.fushion(fused), expected, atol=1e-4, rtol=1e-4)


def test_bottleneck_against_its_transcription():
    block = randomise(schp.Bottleneck(8, 4, stride=1, dilation=2), seed=5)
    x = torch.randn(1, 8, 9, 9)
    relu = torch.nn.functional.relu
    out = relu(abn_ref(conv_ref(x, block.conv1), block.bn1))
    out = relu(abn_ref(torch.nn.functional.conv2d(out, block.conv2.weight, padding=2, dilation=2), block.bn2))
    out = abn_ref(conv_ref(out, block.conv3), block.bn3)
    residual = abn_ref(conv_ref(x, block.downsample[0]), block.downsample[1])  # 8 -> 16 channels: a projection
    with torch.no_grad():
        torch.testing.assert_close(block(x), relu(out + residual), atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------- weights and labels


def test_parameter_count_and_output_sizes_equal_the_references():
    with torch.device("meta"):
        net = schp.SCHPNet().eval()
        parsing, fused, edge = net(torch.empty(1, 3, schp.INPUT_SIZE, schp.INPUT_SIZE))
    assert sum(p.numel() for p in net.parameters()) == REFERENCE_PARAMETERS
    assert parsing.shape == fused.shape == (1, 20, 119, 119) and edge.shape == (1, 2, 119, 119)


def test_published_names_load_and_a_missing_or_misshapen_key_is_named():
    shapes = schp.published_shapes()
    assert len(shapes) == 603 and all(k.startswith("module.") for k in shapes)
    # a few of the published names, spelled as the reference spells its modules
    assert shapes["module.fushion.3.weight"] == (20, 256, 1, 1)
    assert shapes["module.context_encoding.stages.3.1.weight"] == (512, 2048, 1, 1)
    assert shapes["module.context_encoding.bottleneck.0.weight"] == (512, 4096, 3, 3)
    assert shapes["module.layer4.2.conv2.weight"] == (512, 512, 3, 3)
    assert shapes["module.layer1.0.downsample.1.running_var"] == (256,)
    assert shapes["module.edge.conv5.weight"] == (2, 6, 1, 1)
    assert shapes["module.decoder.conv3.2.weight"] == (256, 256, 1, 1)
    assert not any("num_batches_tracked" in k for k in shapes)  # inplace_abn keeps no counter
    state = {k: torch.zeros(v) for k, v in shapes.items()}
    net = schp.SCHPNet()
    net.load_state_dict(schp.published_state_dict({"state_dict": state, "cycle_n": 3}, "file.pth"))
    state.pop("module.edge.conv4.bias")
    with pytest.raises(schp.SCHPWeightsError, match=r"file.pth: not SCHP's LIP model.*missing: module.edge.conv4.bias"):
        schp.published_state_dict({"state_dict": state}, "file.pth")
    state["module.edge.conv4.bias"] = torch.zeros(3)
    with pytest.raises(schp.SCHPWeightsError, match=r"wrong shape: module.edge.conv4.bias \(3,\) \(expected \(2,\)\)"):
        schp.published_state_dict({"state_dict": state}, "file.pth")


def test_missing_weights_name_the_file_and_the_command(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(MissingWeightsError, match=r"(?s)exp-schp-201908261155-lip.pth.*download_weights.py schp_lip"):
        schp.build_schp("published")


def test_lip_labels_are_cihp_labels_id_by_id():
    """SCHP's LIP names against data.parsing's CIHP names, ignoring case and a plural 's' (Jumpsuits/jumpsuit)."""
    def norm(label: str) -> str:
        return label.lower().rstrip("s")

    assert [norm(x) for x in schp.LIP_LABELS] == [norm(x) for x in CIHP_LABELS]
    assert schp.LIP_LABELS[14:20] == ("Left-arm", "Right-arm", "Left-leg", "Right-leg", "Left-shoe", "Right-shoe")


# ------------------------------------------------------------------------------- the extractor's transform


def test_affine_maps_the_whole_image_box_to_the_input_and_back():
    """A 300x200 (h x w) image: S = 299, scale 472 / 299, its centre (99.5, 149.5) -> (236, 236)."""
    forward, inverse = schp.input_affine(300, 200)
    points = np.array([[99.5, 149.5], [99.5, 0.0], [99.5, 299.0], [0.0, 149.5]])  # (x, y)
    moved = points @ forward[:, :2].T + forward[:, 2]
    k = 472 / 299
    np.testing.assert_allclose(moved, [[236, 236], [236, 0], [236, 472], [236 - 99.5 * k, 236]], atol=1e-4)
    np.testing.assert_allclose(moved @ inverse[:, :2].T + inverse[:, 2], points, atol=1e-4)


def test_input_normalises_bgr_and_pads_black():
    image = np.zeros((100, 50, 3), np.uint8)
    image[:] = (255, 128, 0)  # RGB
    forward, _ = schp.input_affine(100, 50)
    x = schp.to_input(image, forward)  # (3,473,473) B, G, R
    blue, green, red = 0 / 255, 128 / 255, 255 / 255
    expected = [(v - m) / s for v, m, s in zip((blue, green, red), schp.MEAN_BGR, schp.STD_BGR)]
    torch.testing.assert_close(x[:, 236, 236], torch.tensor(expected, dtype=torch.float32))
    black = [-m / s for m, s in zip(schp.MEAN_BGR, schp.STD_BGR)]  # the warp's border, outside the narrow image
    torch.testing.assert_close(x[:, 236, 5], torch.tensor(black, dtype=torch.float32))


def test_logits_go_back_to_the_image():
    """Labels warped into the 473x473 input as one-hot logits come back as the same labels, but at edges."""
    rng = np.random.default_rng(0)
    labels = np.kron(rng.integers(0, 20, (6, 4)), np.ones((50, 50), np.int64)).astype(np.uint8)  # (300,200)
    forward, inverse = schp.input_affine(*labels.shape)
    warped = cv2.warpAffine(labels, forward, (473, 473), flags=cv2.INTER_NEAREST)
    one_hot = torch.nn.functional.one_hot(torch.from_numpy(warped).long(), 20).permute(2, 0, 1).float()  # (20,473,473)
    back = schp.logits_to_image(one_hot, inverse, *labels.shape).argmax(-1)
    assert back.shape == labels.shape and (back == labels).mean() > 0.98


def test_download_without_a_published_digest_checks_the_state_dict(monkeypatch, tmp_path, capsys):
    """SCHP publishes no checksum: a download that does not load as its state dict (here a web page) is removed."""
    page = b"<html>Google Drive can't scan this file for viruses</html>"
    monkeypatch.setattr(download_weights.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(page))
    with pytest.raises(download_weights.DownloadError, match="1 of 1 downloads failed: schp_lip"):
        download_weights.main(["schp_lip", "--dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "schp_lip: not the network's state dict" in err and "no checksum is published" in err
    assert list(tmp_path.iterdir()) == []
