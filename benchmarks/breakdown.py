"""Where a training step's time goes: the joint step's pieces (flow, SPATN, generator, perceptual loss, both
discriminator uses, both optimizers) timed one at a time on the step's own networks, losses and optimizers."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from benchmarks.inputs import joint_setup
from benchmarks.timing import time_calls
from models.pipeline import add_pose_maps, flow_and_visibility, spatn_source
from training.steps import autocast
from utils.config import Config


def step_parts(cfg: Config, nets: dict[str, nn.Module], flow_net: nn.Module | None, losses: dict[str, nn.Module],
               batch: dict, amp: Callable[[], object]) -> dict[str, Callable[[], object]]:
    """The pieces of one joint step as separate calls, on the step's own networks and losses.

    nets: "spatn", "generator", "discriminator" (the runners joint_step calls) and "discriminator_plain" (the
    module the G step's adversarial term uses). "<piece> fwd" is a forward pass with autograd recording, as
    in training; "<piece> fwd+bwd" adds the backward pass of that piece alone. Backward through the generator
    does not depend on the upstream gradient's values, so a random projection of its output stands in for
    the loss terms.
    """
    b = batch
    src, tgt, tgt_pose = b["src_image"], b["tgt_image"], b["tgt_pose"]
    flow, vis = flow_and_visibility(flow_net, b)
    spatn, gen, disc, disc_plain = nets["spatn"], nets["generator"], nets["discriminator"], nets["discriminator_plain"]
    with torch.no_grad(), amp():
        fake_value = gen(src, tgt_pose, b["src_parsing"], b["tgt_parsing"], flow, vis).float()  # (B,3,H,W)
    probe = torch.randn_like(fake_value)

    def zero_grads() -> None:  # as JointStage.step does before each backward: gradients are written, not added
        for net in nets.values():
            net.zero_grad(set_to_none=True)

    def spatn_part(backward: bool) -> None:
        with amp():
            logits = spatn(spatn_source(cfg.model.spatn.input == "image", b), b["src_pose"], tgt_pose)  # (B,K,H,W)
        if backward:
            losses["ce"](logits.float(), b["tgt_parsing"]).backward()

    def generator_part(backward: bool) -> None:
        with amp():
            fake = gen(src, tgt_pose, b["src_parsing"], b["tgt_parsing"], flow, vis)
        if backward:
            (fake.float() * probe).mean().backward()

    def perceptual_part(backward: bool) -> None:
        fake = fake_value.detach().requires_grad_(True)
        with amp():
            loss = losses["perceptual"](fake, tgt)["perceptual"]
        if backward:
            loss.backward()

    def d_step_part(backward: bool) -> None:  # the D update: real and fake triplets in one batch of 2B
        with amp():
            both = disc(torch.cat([src, src]), torch.cat([tgt, fake_value]), torch.cat([tgt_pose, tgt_pose]))
            real, fake = both.float().chunk(2)
            loss = sum(losses["gan"].discriminator_loss(real, fake).values())
        if backward:
            loss.backward()

    def d_in_g_part(backward: bool) -> None:  # the G step's adversarial term: gradients reach the image only
        fake = fake_value.detach().requires_grad_(True)
        disc_plain.requires_grad_(False)
        with amp():
            loss = losses["gan"].generator_loss(disc_plain(src, fake, tgt_pose).float())
        if backward:
            loss.backward()
        disc_plain.requires_grad_(True)

    parts: dict[str, Callable[[], object]] = {}
    if flow_net is not None:
        parts["flow (frozen, no_grad)"] = lambda: flow_and_visibility(flow_net, b)
    for name, fn in (("spatn", spatn_part), ("generator", generator_part), ("perceptual loss", perceptual_part),
                     ("D step (2B)", d_step_part), ("D in G step", d_in_g_part)):
        parts[f"{name} fwd"] = lambda fn=fn: fn(False)
        parts[f"{name} fwd+bwd"] = lambda fn=fn: (zero_grads(), fn(True))
    return parts


def bench_breakdown(cfg: Config, device: torch.device, batch_size: int, warmup: int, iters: int) -> dict:
    """step_parts timed one by one, then both Adam steps (with gradients in place), then their sum.

    The sum against the measured full step shows what the parts miss: the loss arithmetic, the finiteness
    checks, Python overhead, and the cache and allocator effects of running everything in one step.
    """
    j, batch = joint_setup(cfg, device, batch_size)
    batch = add_pose_maps(dict(batch), j.pose_encoder)
    nets = {"spatn": j.spatn, "generator": j.gen, "discriminator": j.disc,
            "discriminator_plain": j.nets["discriminator"]}
    parts = step_parts(cfg, nets, j.flow_net, j.losses, batch, partial(autocast, cfg, device))
    out = {name: time_calls(fn, warmup, iters, device) for name, fn in parts.items()}
    for name, opt, params in (("optimizer G (Adam)", j.opt_g, j.g_params),
                              ("optimizer D (Adam)", j.opt_d, list(j.nets["discriminator"].parameters()))):
        for p in params:  # a step needs gradients; their values do not change its cost
            p.grad = torch.randn_like(p) * 1e-3
        out[name] = time_calls(opt.step, warmup, iters, device)
    counted = [n for n in out if not n.endswith(" fwd")]  # fwd+bwd already contains the fwd
    out["sum of parts"] = {key: sum(out[n][key] for n in counted) for key in ("median_s", "cpu_median_s")}
    return out
