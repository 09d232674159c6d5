"""Flow module (paper sec. 3.2, eq. 5): target->source appearance flow and visibility from two pose maps.

Conventions shared by the whole code base:
- A flow is (B,2,h,w), channel 0 = x (column) offset, channel 1 = y (row) offset, in the pixels of the map it
  lives on, pointing from the TARGET to the SOURCE: target pixel (i, j) takes the source value at
  (i + fy, j + fx). `warp` applies it; `downsample_flow` brings a full-resolution flow to a smaller map.
- Visibility labels (B,h,w) long: 0 visible, 1 invisible (self-occluded in the source), 2 background.
  `downsample_visibility` min-pools them, so a coarse pixel is visible when any pixel under it is
  (priority visible > invisible > background, as the generator's gating expects).

FlowNet stands in for Intr-Flow's flow-regression UNet, which the authors load pretrained and frozen: the
input is cat[source pose, target pose], the output a flow at every decoder scale plus 3-class visibility
logits at full resolution. Network outputs are multiplied by `flow_scale` (20, as Intr-Flow) to give
full-resolution pixels, then by the scale's size ratio to give that scale's pixels (see `FlowNet`).
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from data.pose import LIMBS
from models.blocks import conv_norm_relu

# --------------------------------------------------------------------------------------- flow utilities


def warp(features: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Backward-warp a feature map by a target->source flow (paper eq. 5, the sampling part of F_W).

    features (B,C,h,w); flow (B,2,h,w) (x, y) in this map's pixels. Output pixel (i, j) is the bilinear sample
    of `features` at (i + fy, j + fx), zero outside the map (bilinear weights towards outside pixels count as
    zeros). Sampling happens at exact pixel coordinates (align_corners=True semantics), so an integer flow moves
    features by exactly that many pixels.
    """
    if features.dim() != 4 or flow.dim() != 4 or flow.shape[1] != 2:
        raise ValueError(f"warp: expected features (B,C,h,w) and flow (B,2,h,w), got {tuple(features.shape)} "
                         f"and {tuple(flow.shape)}")
    b, _, h, w = features.shape
    if flow.shape[0] != b or flow.shape[2:] != features.shape[2:]:
        raise ValueError(f"warp: flow {tuple(flow.shape)} does not match features {tuple(features.shape)}")
    # at least float32: half/bfloat16 coordinates cannot resolve sub-pixel positions on a 256-pixel axis
    dtype = torch.promote_types(features.dtype, torch.float32)
    flow = flow.to(dtype)
    ys = torch.arange(h, device=flow.device, dtype=flow.dtype).view(1, h, 1)  # (1,h,1)
    xs = torch.arange(w, device=flow.device, dtype=flow.dtype).view(1, 1, w)  # (1,1,w)
    # pixel p -> (2p + 1)/n - 1 with align_corners=False unnormalises back to exactly p: the same sampling as
    # align_corners=True's p -> 2p/(n-1) - 1, but also defined for a 1-pixel axis (n - 1 = 0)
    x = (2.0 * (xs + flow[:, 0]) + 1.0) / w - 1.0  # (B,h,w)
    y = (2.0 * (ys + flow[:, 1]) + 1.0) / h - 1.0
    grid = torch.stack([x, y], dim=-1)  # (B,h,w,2), grid_sample wants (x, y) last
    out = F.grid_sample(features.to(dtype), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out.to(features.dtype)


def downsample_flow(flow: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Full-resolution flow (B,2,H,W) in pixels -> (B,2,h,w) in the pixels of the (h, w) map.

    Area average (an exact block mean when H/h and W/w are integers), then x scaled by w/W and y by h/H:
    the displacement keeps its length in image units, measured in the small map's pixels.
    """
    _, _, height, width = flow.shape
    h, w = size
    return scale_flow(F.adaptive_avg_pool2d(flow, (h, w)), w / width, h / height)  # (B,2,h,w)


def scale_flow(flow: torch.Tensor, sx: float, sy: float) -> torch.Tensor:
    """(B,2,h,w) flow with x times sx and y times sy. Python scalars: a forward on a GPU copies nothing from the
    host (a tensor of the factors would be one copy, and a wait, per call)."""
    return torch.cat([flow[:, :1] * sx, flow[:, 1:] * sy], dim=1)


def float32_head(head: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """A flow head run in float32 outside autocast. Under bf16 a raw flow of 3 (60 px at flow_scale 20) is
    resolved to 1/64, 0.3 px, and the coarse-to-fine sums of such residuals would add that error per level.
    A device without autocast (the meta device of a shape check) has nothing to leave."""
    device = features.device.type
    with torch.autocast(device, enabled=False) if torch.amp.is_autocast_available(device) else nullcontext():
        return head(features.float())


def downsample_visibility(vis: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Visibility labels (B,H,W) long -> (B,h,w) long by min-pooling (0 visible beats 1 invisible beats 2
    background): a coarse cell that covers any visible body pixel must still sample the source."""
    if vis.dim() != 3:
        raise ValueError(f"downsample_visibility: expected labels (B,H,W), got {tuple(vis.shape)}")
    negated = -vis.unsqueeze(1).float()  # (B,1,H,W); labels 0..2 are exact in float32
    return (-F.adaptive_max_pool2d(negated, tuple(size))).squeeze(1).long()  # (B,h,w)


# ------------------------------------------------------------------------------------------- limb flows

TORSO_JOINTS = (1, 2, 5, 8, 11)  # neck, right/left shoulder, right/left hip
MID_HIP = 18  # a virtual joint after the 18: the midpoint of the hips, when both are present
SEGMENTS = (*LIMBS, (1, MID_HIP))  # the 12 limbs and the torso's axis, neck -> mid-hip
# The torso turns: its axis's similarity with the across-axis component scaled by s. A torso is about half as deep
# as it is wide, so between a front or back view and a side view its cloth narrows or widens by about 2, while the
# shoulders' and hips' spread (what the affine fit sees) changes far more: s = +-1/2 takes a wide target onto a
# narrow source, s = +-2 a narrow target onto a wide one, the sign says whether the pair turned its other side.
TURNS = (0.5, -0.5, 2.0, -2.0)
AFFINE = 2 * len(SEGMENTS)  # the candidate index of the torso's affine map; the turns follow it
NUM_LIMB_FLOWS = 2 * len(SEGMENTS) + 1 + len(TURNS)
# The choice's logits are its head's output times this gain. A crisp choice between neighbouring limbs needs
# logit gaps of several units, and a few hundred Adam steps move a weight by well under one: without the gain,
# the mix stays soft and averages the candidates of neighbouring limbs.
CHOICE_GAIN = 10.0
CHOICE_WIDTH = 32  # channels of the choice head's two hidden layers


def limb_flows(src_keypoints: torch.Tensor, tgt_keypoints: torch.Tensor, height: int, width: int,
               segments: torch.Tensor | None = None, torso: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Candidate target->source flows from the two poses alone: (B,K,2,H,W) in full-resolution pixels and their
    validity (B,K) bool, K = NUM_LIMB_FLOWS. Keypoints (B,18,2) (y, x), -1 missing. `segments` (S,2) and `torso`
    (5,) are SEGMENTS and TORSO_JOINTS as long tensors on the keypoints' device (FlowNet keeps them, so that a
    forward on a GPU copies nothing from the host); made here when None.

    With points as complex numbers z = x + iy, a segment (a, b) of SEGMENTS (the limbs of data.pose.LIMBS and the
    torso's axis) in the target and in the source gives the similarity taking the target segment onto the source
    one, and the same after the mirror image about the target segment's axis (seen from its other side, as
    between a front and a back view):

        r = (b_s - a_s) / (b_t - a_t),  u = (b_t - a_t) / |b_t - a_t|
        S(z) = a_s + r (z - a_t),       S'(z) = a_s + r u^2 conj(z - a_t)

    the torso's affine map, fitted by least squares to the joints of TORSO_JOINTS present in both poses (at
    least 3; a back view's mirror image included, and the joints' narrower spread in a side view, which a side
    view's cloth need not share), and the torso axis's turns: the along-axis part of its similarity kept and the
    across-axis part scaled by s in TURNS (s = 1 is S, s = -1 is S'),

        T_s(z) = (1 + s)/2 S(z) + (1 - s)/2 S'(z).

    Candidate k at pixel z is the flow C_k(z) - z; an invalid one (a joint missing in either pose, a degenerate
    segment) is zero. Candidates 0..12 are the segments' similarities, 13..25 their mirror images, 26 (AFFINE)
    the torso's affine map, 27..30 the torso's turns in the order of TURNS.
    """
    kp_s, kp_t = (torch.cat([k.float(), k[:, [8, 11]].float().mean(1, keepdim=True)], dim=1).flip(-1)
                  for k in (src_keypoints, tgt_keypoints))  # (B,19,2) (x, y), the mid-hip appended
    present = (src_keypoints >= 0).all(-1) & (tgt_keypoints >= 0).all(-1)  # (B,18) in both poses
    present = torch.cat([present, present[:, 8:9] & present[:, 11:12]], dim=1)  # (B,19)
    ys = torch.arange(height, device=kp_s.device, dtype=kp_s.dtype).view(1, 1, height, 1)
    xs = torch.arange(width, device=kp_s.device, dtype=kp_s.dtype).view(1, 1, 1, width)
    if segments is None:
        segments = torch.tensor(SEGMENTS, device=kp_s.device)
    if torso is None:
        torso = torch.tensor(TORSO_JOINTS, device=kp_s.device)
    start, end = segments[:, 0], segments[:, 1]  # (S,) joint indices
    a_t, d_t = kp_t[:, start], kp_t[:, end] - kp_t[:, start]  # (B,S,2)
    a_s, d_s = kp_s[:, start], kp_s[:, end] - kp_s[:, start]
    norm = (d_t**2).sum(-1)  # (B,S) |b_t - a_t|^2
    segment_ok = present[:, start] & present[:, end] & (norm > 1.0)  # shorter than a pixel: degenerate
    norm = norm.clamp_min(1.0)
    r_re = (d_s[..., 0] * d_t[..., 0] + d_s[..., 1] * d_t[..., 1]) / norm  # r = d_s conj(d_t) / |d_t|^2
    r_im = (d_s[..., 1] * d_t[..., 0] - d_s[..., 0] * d_t[..., 1]) / norm
    u2_re, u2_im = (d_t[..., 0] ** 2 - d_t[..., 1] ** 2) / norm, 2 * d_t[..., 0] * d_t[..., 1] / norm
    m_re, m_im = r_re * u2_re - r_im * u2_im, r_re * u2_im + r_im * u2_re  # r u^2
    dx = xs - a_t[..., 0, None, None]  # (B,S,1,W): z - a_t
    dy = ys - a_t[..., 1, None, None]  # (B,S,H,1)

    def flow(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # source points (B,k,H,W) -> flows (B,k,2,H,W)
        return torch.stack([x - xs, y - ys], dim=2)

    similar = flow(a_s[..., 0, None, None] + r_re[..., None, None] * dx - r_im[..., None, None] * dy,
                   a_s[..., 1, None, None] + r_re[..., None, None] * dy + r_im[..., None, None] * dx)
    mirrored = flow(a_s[..., 0, None, None] + m_re[..., None, None] * dx + m_im[..., None, None] * dy,  # r u^2 conj(d)
                    a_s[..., 1, None, None] + m_im[..., None, None] * dx - m_re[..., None, None] * dy)

    weight = present[:, torso].double()  # (B,5)
    design = torch.cat([kp_t[:, torso].double(), torch.ones_like(weight[..., None])], dim=-1)  # (B,5,3) [x y 1]
    normal = design.transpose(1, 2) @ (weight[..., None] * design)  # (B,3,3)
    normal.diagonal(dim1=1, dim2=2).add_(1e-6)  # a ridge keeps a rank-2 fit finite
    fit = torch.linalg.solve(normal, design.transpose(1, 2) @ (weight[..., None] * kp_s[:, torso].double()))
    fit = fit.to(kp_s.dtype)  # (B,3,2): source (x, y) = [x y 1] @ fit
    affine = flow((xs * fit[:, 0, 0, None, None, None] + ys * fit[:, 1, 0, None, None, None]
                   + fit[:, 2, 0, None, None, None]),
                  (xs * fit[:, 0, 1, None, None, None] + ys * fit[:, 1, 1, None, None, None]
                   + fit[:, 2, 1, None, None, None]))  # (B,1,2,H,W)

    axis_similar, axis_mirrored = similar[:, -1], mirrored[:, -1]  # (B,2,H,W): the torso's axis is the last segment
    turns = torch.stack([(1 + s) / 2 * axis_similar + (1 - s) / 2 * axis_mirrored for s in TURNS], dim=1)

    axis_ok = segment_ok[:, -1:].expand(-1, len(TURNS))  # (B,T)
    valid = torch.cat([segment_ok, segment_ok, weight.sum(1, keepdim=True) >= 3, axis_ok], dim=1)  # (B,K)
    candidates = torch.cat([similar, mirrored, affine, turns], dim=1)  # (B,K,2,H,W)
    return torch.where(valid[..., None, None, None], candidates, 0.0), valid


FACING_JOINTS = ((5, 2), (11, 8))  # (left, right) shoulders and hips
FACING_SIGN_WIDTH = 0.05  # sign = tanh(f / this): a side view's f (about +-0.12) already reads as +-1
FACING_WIDE_FROM, FACING_WIDE_SOFTNESS = 0.3, 0.05  # wide = sigmoid((|f| - 0.3) / 0.05): front/back 0.5, side 0.12
NUM_FACING_FEATURES = 7


def facing_features(src_keypoints: torch.Tensor, tgt_keypoints: torch.Tensor) -> torch.Tensor:
    """How the pair turned, from the keypoints (B,18,2) (y, x) of both poses -> (B,7) features of the pair.

    A pose's facing is f = mean over the shoulder and hip pairs present of (x_left - x_right) / |neck - mid-hip|:
    the left joints lie on the image's right when the body faces the camera, so f > 0 facing it, f < 0 from the
    back, |f| small from the side (0 when the torso's axis or both pairs are missing: unknown). With
    sign = tanh(f / FACING_SIGN_WIDTH) and wide = sigmoid((|f| - FACING_WIDE_FROM) / FACING_WIDE_SOFTNESS) per pose,
    the features are the products of [1, sign_s sign_t] x [1, wide_s] x [1, wide_t] but the constant:

        [w_t, w_s, w_s w_t, t, t w_t, t w_s, t w_s w_t],  t = sign_s sign_t,

    on which a linear map can take any value on each of the 8 kinds of pair (same side or turned, each pose wide or
    narrow): whether a limb is seen from the same side (its similarity) or the other (its mirror image), and
    which of the torso's turns takes the target's cloth onto the source's."""
    kp = torch.stack([src_keypoints, tgt_keypoints], dim=1).float()  # (B,2,18,2) (y, x)
    present = (kp >= 0).all(-1)  # (B,2,18)
    pair_ok = torch.stack([present[..., left] & present[..., right] for left, right in FACING_JOINTS], -1).float()
    spreads = torch.stack([kp[..., left, 1] - kp[..., right, 1] for left, right in FACING_JOINTS], -1)  # (B,2,2)
    spread = (spreads * pair_ok).sum(-1) / pair_ok.sum(-1).clamp_min(1)  # (B,2): over the pairs present
    axis = kp[..., 1, :] - (kp[..., 8, :] + kp[..., 11, :]) / 2  # (B,2,2): neck - mid-hip
    length = axis.norm(dim=-1)  # (B,2)
    axis_ok = present[..., 1] & present[..., 8] & present[..., 11] & (length > 1.0) & (pair_ok.sum(-1) > 0)
    f = torch.where(axis_ok, spread / length.clamp_min(1.0), 0.0)  # (B,2)
    sign = torch.tanh(f / FACING_SIGN_WIDTH)
    wide = torch.sigmoid((f.abs() - FACING_WIDE_FROM) / FACING_WIDE_SOFTNESS)
    ones = torch.ones_like(f[:, 0])
    turned = torch.stack([ones, sign[:, 0] * sign[:, 1]], dim=1)  # (B,2)
    wide_s, wide_t = (torch.stack([ones, wide[:, i]], dim=1) for i in (0, 1))  # (B,2) each
    products = torch.einsum("bi,bj,bk->bijk", turned, wide_s, wide_t).flatten(1)  # (B,8), [0] the constant
    return products[:, 1:]


# The visibility head's geometric input: how close a pixel lies to each segment in the target pose, and how close
# the source point its flow takes it to lies to each segment in the source pose. A target pixel is self-occluded
# when that source point shows another part in front of its own (an arm across the torso), a relation between
# two places that can lie half the body apart, beyond what a few convolutions over the pose maps relate.
MEMBERSHIP_WIDTH = 0.15  # in torso lengths (|neck - mid-hip|): about half a limb's width


def segment_distances(keypoints: torch.Tensor, x: torch.Tensor, y: torch.Tensor,
                      segments: torch.Tensor | None = None) -> torch.Tensor:
    """Keypoints (B,18,2) (y, x), -1 missing, and points x, y (B,H,W) in pixels -> (B,S,H,W): each point's
    distance to each segment of SEGMENTS (the closest point of the segment, ends included), in units of the
    pose's torso length |neck - mid-hip|; inf where a joint of the segment, or of the torso's axis, is missing."""
    kp = torch.cat([keypoints.float(), keypoints[:, [8, 11]].float().mean(1, keepdim=True)], dim=1).flip(-1)
    present = (keypoints >= 0).all(-1)  # (B,18)
    present = torch.cat([present, present[:, 8:9] & present[:, 11:12]], dim=1)  # (B,19), the mid-hip appended
    if segments is None:
        segments = torch.tensor(SEGMENTS, device=kp.device)
    start, end = segments[:, 0], segments[:, 1]
    a, d = kp[:, start, :, None, None], (kp[:, end] - kp[:, start])[..., None, None]  # (B,S,2,1,1)
    px, py = x.unsqueeze(1) - a[:, :, 0], y.unsqueeze(1) - a[:, :, 1]  # (B,S,H,W): the point minus the start
    along = ((px * d[:, :, 0] + py * d[:, :, 1]) / (d**2).sum(2).clamp_min(1e-6)).clamp(0.0, 1.0)
    dist = torch.hypot(px - along * d[:, :, 0], py - along * d[:, :, 1])  # (B,S,H,W)
    torso = (kp[:, 1] - kp[:, MID_HIP]).norm(dim=-1)  # (B,)
    ok = present[:, start] & present[:, end] & (present[:, 1] & present[:, MID_HIP] & (torso > 1.0))[:, None]
    return torch.where(ok[..., None, None], dist / torso.clamp_min(1.0)[:, None, None, None], float("inf"))


def occlusion_features(src_keypoints: torch.Tensor, tgt_keypoints: torch.Tensor, flow: torch.Tensor,
                       segments: torch.Tensor | None = None) -> torch.Tensor:
    """The visibility head's geometric input (B,2S,H,W) from both poses' keypoints (B,18,2) (y, x) and the
    target->source flow (B,2,H,W) in pixels: exp(-d^2 / (2 w^2)), w = MEMBERSHIP_WIDTH, for d each target pixel's
    distance to each target segment (which part the pixel is on), then for d its source point's (pixel + flow)
    distance to each source segment (which parts lie there in the source, the occluders among them); 0 where a
    segment is missing."""
    b, _, height, width = flow.shape
    ys = torch.arange(height, device=flow.device, dtype=torch.float32).view(1, height, 1).expand(b, height, width)
    xs = torch.arange(width, device=flow.device, dtype=torch.float32).view(1, 1, width).expand(b, height, width)
    flow = flow.float()
    dist = torch.cat([segment_distances(tgt_keypoints, xs, ys, segments),
                      segment_distances(src_keypoints, xs + flow[:, 0], ys + flow[:, 1], segments)], dim=1)
    return torch.exp(-0.5 * (dist / MEMBERSHIP_WIDTH) ** 2)  # (B,2S,H,W); inf -> 0


# ------------------------------------------------------------------------------------------- network


class FlowOutput(NamedTuple):
    flow: torch.Tensor  # (B,2,H,W) target->source, full-resolution pixels (x, y) == flows[-1]
    flows: list[torch.Tensor]  # coarse to fine, (B,2,h_l,w_l) each in its own scale's pixels
    vis_logits: torch.Tensor  # (B,3,H,W): visible, invisible, background


class FlowNet(nn.Module):
    """Flow-regression UNet over cat[source pose, target pose] (Intr-Flow's flow module, paper eq. 5).

    Levels l = 0 (full resolution) .. n_scales-1 (coarsest, H / 2^(n_scales-1)), width min(base * 2^l, max).
    The decoder predicts a raw 2-channel map r_l at every level, coarse to fine, each a residual on the
    upsampled coarser one (r_l = up(r_{l+1}) + head_l(features_l)). r_l is the flow in full-resolution pixels
    divided by `flow_scale`, at every level, so upsampling it needs no rescaling; the flow in level l's own
    pixels is r_l * flow_scale * (w_l / W, h_l / H) per axis, i.e. r_l * flow_scale / 2^l when the sides
    divide by 2^l (the convention of `downsample_flow`, which builds the targets). The finest prediction is at
    full resolution; visibility logits come from the finest decoder features (with limb_flows, also from the chosen
    flow's `occlusion_features` and the pair's `facing_features`). Sides that do not divide by
    2^(n_scales-1) work too: each upsampling interpolates to the size of its skip connection.
    """

    def __init__(self, pose_channels: int = 30, base_channels: int = 32, max_channels: int = 256, n_scales: int = 5,
                 flow_scale: float = 20.0, norm: str = "batch", limb_flows: bool = False):
        super().__init__()
        if n_scales < 1:
            raise ValueError(f"FlowNet: n_scales must be >= 1, got {n_scales}")
        self.n_scales, self.flow_scale, self.limb_flows = n_scales, float(flow_scale), limb_flows
        widths = [min(base_channels * 2**level, max_channels) for level in range(n_scales)]
        self.widths = widths

        # encoder: level 0 keeps the resolution, each further level halves it with a stride-2 conv
        self.encoder = nn.ModuleList()
        in_ch = 2 * pose_channels
        for level, ch in enumerate(widths):
            stride = 1 if level == 0 else 2
            self.encoder.append(nn.Sequential(conv_norm_relu(in_ch, ch, 3, norm, stride=stride),
                                              conv_norm_relu(ch, ch, 3, norm)))
            in_ch = ch

        # decoder level l sees cat[upsampled level-(l+1) features, skip l, upsampled coarse raw flow]
        self.decoder = nn.ModuleList(
            nn.Sequential(conv_norm_relu(widths[level + 1] + widths[level] + 2, widths[level], 3, norm),
                          conv_norm_relu(widths[level], widths[level], 3, norm))
            for level in range(n_scales - 1)
        )
        self.flow_heads = nn.ModuleList(nn.Conv2d(ch, 2, 3, padding=1) for ch in widths)
        # limb_flows: the visibility head also reads `occlusion_features` of the chosen flow and the pair's facing
        # features, through one more layer (a pixel is occluded where an arm covers its source point, or where the
        # pair turned and its part's other side faced the camera: products, not sums)
        self.vis_head = (nn.Sequential(conv_norm_relu(widths[0] + 2 * len(SEGMENTS) + NUM_FACING_FEATURES,
                                                      widths[0], 3, norm),
                                       nn.Conv2d(widths[0], 3, 3, padding=1)) if limb_flows
                         else nn.Conv2d(widths[0], 3, 3, padding=1))
        # limb_flows: logits of a per-pixel choice between the regressed flow and the NUM_LIMB_FLOWS candidates,
        # from the finest decoder features and the target's pose maps (which limb a pixel lies on is what the
        # limb distance maps say directly), through three 3x3 layers: a single layer, which sees a 3x3 window,
        # chose worse (held-out warped texture 0.41 against 0.43 after 600 stage-0 steps); the last layer is zero
        # at first, an even mix
        # limb_flows also: a per-pair term of the logits from how the pair turned (`facing_features`). Which body
        # part a pixel is on is local, but whether a limb is seen from its other side or the torso turned is one
        # decision for the whole pair, which the per-pixel head, from local features, mostly got wrong
        self.choice_head = (nn.Sequential(conv_norm_relu(widths[0] + pose_channels, CHOICE_WIDTH, 3, norm),
                                          conv_norm_relu(CHOICE_WIDTH, CHOICE_WIDTH, 3, norm),
                                          nn.Conv2d(CHOICE_WIDTH, 1 + NUM_LIMB_FLOWS, 3, padding=1))
                            if limb_flows else None)
        self.orientation_head = nn.Linear(NUM_FACING_FEATURES, 1 + NUM_LIMB_FLOWS) if limb_flows else None
        if self.choice_head is not None:
            for layer in (self.choice_head[-1], self.orientation_head):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            self.register_buffer("segments", torch.tensor(SEGMENTS), persistent=False)  # (S,2) joint indices
            self.register_buffer("torso_joints", torch.tensor(TORSO_JOINTS), persistent=False)  # (5,)
        for head in self.flow_heads:
            # start close to the zero flow (identity warp) while keeping every gradient path alive
            with torch.no_grad():
                head.weight.mul_(0.1)
                head.bias.zero_()

    def forward(self, src_pose: torch.Tensor, tgt_pose: torch.Tensor, src_keypoints: torch.Tensor | None = None,
                tgt_keypoints: torch.Tensor | None = None) -> FlowOutput:
        """src_pose, tgt_pose (B,P,H,W) -> FlowOutput (target->source flow, per-scale flows, visibility). With
        limb_flows, the keypoints (B,18,2) (y, x) of both poses too: the full-resolution flow is then the
        softmax-weighted mix, per pixel, of the regressed flow and the `limb_flows` candidates."""
        if src_pose.shape != tgt_pose.shape:
            raise ValueError(f"FlowNet: source pose {tuple(src_pose.shape)} and target pose "
                             f"{tuple(tgt_pose.shape)} differ")
        if self.limb_flows and (src_keypoints is None or tgt_keypoints is None):
            raise ValueError("FlowNet: limb_flows needs the keypoints of both poses")
        height, width = src_pose.shape[2:]
        x = torch.cat([src_pose, tgt_pose], dim=1)  # (B,2P,H,W)
        skips = []
        for block in self.encoder:
            x = block(x)  # (B,C_l,H_l,W_l)
            skips.append(x)

        feat = skips[-1]
        raw = float32_head(self.flow_heads[-1], feat)  # (B,2,H_L,W_L) full-res pixels / flow_scale, float32
        raws = [raw]
        for level in reversed(range(self.n_scales - 1)):
            skip = skips[level]
            size = skip.shape[2:]
            feat = F.interpolate(feat, size=size, mode="bilinear", align_corners=False)
            raw = F.interpolate(raw, size=size, mode="bilinear", align_corners=False)
            feat = self.decoder[level](torch.cat([feat, skip, raw], dim=1))  # (B,C_l,H_l,W_l)
            raw = raw + float32_head(self.flow_heads[level], feat)  # the sum in float32, also under autocast
            raws.append(raw)

        flows = []
        for r in raws:  # coarse to fine
            h, w = r.shape[2:]
            flows.append(scale_flow(r, self.flow_scale * w / width, self.flow_scale * h / height))  # scale's pixels
        if self.choice_head is not None:  # level 0 is at full resolution
            per_pixel = self.choice_head(torch.cat([feat, tgt_pose.to(feat.dtype)], dim=1))  # (B,1+K,H,W)
            facing = facing_features(src_keypoints, tgt_keypoints)  # (B,7)
            per_pair = self.orientation_head(facing)  # (B,1+K)
            logits = CHOICE_GAIN * (per_pixel.float() + per_pair.float()[..., None, None])
            flows[-1] = self.choose(flows[-1], logits, src_keypoints, tgt_keypoints)
            # the flow as chosen, detached: the visibility loss says nothing about where a pixel comes from
            occlusion = occlusion_features(src_keypoints, tgt_keypoints, flows[-1].detach(), self.segments)
            facing = facing[..., None, None].expand(-1, -1, height, width)
            feat = torch.cat([feat, occlusion.to(feat.dtype), facing.to(feat.dtype)], dim=1)  # (B,C_0+2S+7,H,W)
        return FlowOutput(flow=flows[-1], flows=flows, vis_logits=self.vis_head(feat))

    def choose(self, regressed: torch.Tensor, logits: torch.Tensor, src_keypoints: torch.Tensor,
               tgt_keypoints: torch.Tensor) -> torch.Tensor:
        """sum_k softmax(logits)_k C_k over C_0 = the regressed flow (B,2,H,W) and the valid limb flows, per pixel;
        logits (B,1+K,H,W)."""
        height, width = regressed.shape[2:]
        candidates, valid = limb_flows(src_keypoints, tgt_keypoints, height, width, self.segments,
                                       self.torso_joints)  # (B,K,2,H,W), (B,K)
        candidates = torch.cat([regressed.float().unsqueeze(1), candidates], dim=1)  # (B,1+K,2,H,W)
        valid = torch.cat([valid.new_ones(valid.shape[0], 1), valid], dim=1)  # the regressed flow always
        logits = logits.float().masked_fill(~valid[..., None, None], float("-inf"))
        weights = torch.softmax(logits, dim=1)  # (B,1+K,H,W)
        return (weights.unsqueeze(2) * candidates).sum(dim=1).to(regressed.dtype)  # (B,2,H,W)
