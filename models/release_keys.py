"""State-dict key mapping between the authors' release (github cszy98/SPGNet, Intr-Flow's FlowUnet_v2) and
models.release_generator.ReleaseGenerator / models.release_flow.ReleaseFlowNet. Pure functions on names and
tensors, used by scripts/import_release.py and by the tests.

Each of our keys comes from one or more release keys by a `Rule`:
  copy    the same tensor under another name
  cat     SEAN's stacked gamma/beta convs: cat[release gamma, release beta] along dim 0
  stack   a SEAN layer's 20 per-class Linear(128,128): stack[fc_mu0 .. fc_mu19] -> (K, D, D) / (K, D)
  blend   SEAN's blend logits: -cat[blending_gamma, blending_beta] (the release's sigmoid weighs the style
          branch, ours the parsing branch, and 1 - sigmoid(b) = sigmoid(-b))
The release also stores buffers it never reads (the running statistics of the unused batch norm inside every
ACE's SPADE); `unused_release_keys` names them, with the values a fresh release module holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

# our StyleEncoder's Sequential index -> the release Zencoder's (its reflection pads are separate modules)
_ZENCODER_INDEX = {"0": "1", "3": "4", "6": "7", "9": "10", "12": "14"}
_BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


@dataclass(frozen=True)
class Rule:
    ours: str
    release: tuple[str, ...]
    kind: str  # copy | cat | stack | blend


def _shift(index: str, by: int) -> str:
    return str(int(index) + by)


# (our module path pattern, release module path) for the generator; \g<n> picks our indices
_GENERATOR_MODULES: list[tuple[str, Callable[[re.Match], str]]] = [
    (r"style_encoder\.features\.(\d+)", lambda m: f"Zencoder.model.{_ZENCODER_INDEX[m[1]]}"),
    (r"pose_stem\.(\d+)", lambda m: f"encp_pre_conv.{m[1]}"),
    (r"app_stem\.(\d+)", lambda m: f"enca_pre_conv.{m[1]}"),
    (r"pose_res\.(\d+)\.(\d+)\.body\.(\d+)", lambda m: f"encp_{m[1]}_res_{m[2]}.conv.{_shift(m[3], -1)}"),
    (r"app_res\.(\d+)\.(\d+)\.body\.(\d+)", lambda m: f"enca_{m[1]}_res_{m[2]}.conv.{_shift(m[3], -1)}"),
    (r"pose_down\.(\d+)\.(\d+)", lambda m: f"encp_{m[1]}_downsample.{m[2]}"),
    (r"app_down\.(\d+)\.(\d+)", lambda m: f"enca_{m[1]}_downsample.{m[2]}"),
    (r"gates\.(\d+)\.(\d+)\.side\.(\d+)", lambda m: f"enca_{m[1]}_vis_{m[2]}.conv_a.{m[3]}"),
    (r"gates\.(\d+)\.(\d+)\.fuse\.(\d+)", lambda m: f"enca_{m[1]}_vis_{m[2]}.conv.{_shift(m[3], -1)}"),
    (r"fuse\.(\d+)", lambda m: f"dec_fuse.{m[1]}"),
    (r"ups\.(\d+)\.(\d+)", lambda m: f"dec_{m[1]}_upsample.{m[2]}"),
    (r"up_norms\.(\d+)", lambda m: f"dec_{m[1]}_upsample_norm"),
    (r"dec_blocks\.(\d+)\.(\d+)\.norm_in", lambda m: f"dec_{m[1]}_res_{m[2]}.conv_a_norm"),
    (r"dec_blocks\.(\d+)\.(\d+)\.norm_out", lambda m: f"dec_{m[1]}_res_{m[2]}.conv_norm"),
    (r"dec_blocks\.(\d+)\.(\d+)\.conv_in", lambda m: f"dec_{m[1]}_res_{m[2]}.conv_a"),
    (r"dec_blocks\.(\d+)\.(\d+)\.conv_out", lambda m: f"dec_{m[1]}_res_{m[2]}.conv"),
    (r"to_image\.(\d+)", lambda m: f"dec_output.{m[1]}"),
]

# ReleaseFlowNet -> FlowUnet_v2 (pre_conv flattens [channel_mapping, (ResidualBlock, act, conv, BN) x s])
_FLOW_MODULES: list[tuple[str, Callable[[re.Match], str]]] = [
    (r"stem\.(\d+)", lambda m: f"pre_conv.0.{m[1]}"),
    (r"pre_res\.(\d+)\.body\.(\d+)", lambda m: f"pre_conv.{1 + 4 * int(m[1])}.conv.{_shift(m[2], -1)}"),
    (r"pre_down\.(\d+)\.(\d+)", lambda m: f"pre_conv.{4 * int(m[1]) + int(m[2]) + 2}"),
    (r"enc_res\.(\d+)\.(\d+)\.body\.(\d+)", lambda m: f"enc_{m[1]}_res_{m[2]}.conv.{_shift(m[3], -1)}"),
    (r"enc_down\.(\d+)\.(\d+)", lambda m: f"enc_{m[1]}_downsample.{m[2]}"),
    (r"dec_up\.(\d+)\.(\d+)", lambda m: f"dec_{m[1]}_upsample.{m[2]}"),
    (r"dec_res\.(\d+)\.(\d+)\.side\.(\d+)", lambda m: f"dec_{m[1]}_res_{m[2]}.conv_a.{m[3]}"),
    (r"dec_res\.(\d+)\.(\d+)\.fuse\.(\d+)", lambda m: f"dec_{m[1]}_res_{m[2]}.conv.{_shift(m[3], -1)}"),
    (r"flow_heads\.(\d+)\.(\d+)", lambda m: f"pred_flow_{m[1]}.{m[2]}"),
    (r"vis_head\.(\d+)", lambda m: f"pred_vis.{m[1]}"),
]

_SEAN_LEAF = re.compile(r"(.*)\.(noise_scale|refine\.(?:weight|bias)|sean\..+)")


class MappingError(ValueError):
    """An our-side key that no release name corresponds to (a mapping and architecture out of step)."""


def _module_name(path: str, table: list[tuple[str, Callable[[re.Match], str]]]) -> str:
    for pattern, to_release in table:
        m = re.fullmatch(pattern, path)
        if m:
            return to_release(m)
    raise MappingError(f"no release name for our module '{path}'")


def _sean_rule(key: str, prefix: str, leaf: str, num_classes: int) -> Rule:
    """A key inside a ReleaseSEAN at `prefix` (release name of that layer) -> its Rule."""
    if leaf == "noise_scale":
        return Rule(key, (f"{prefix}.noise_var",), "copy")
    if leaf.startswith("refine."):
        param = leaf.split(".")[1]
        return Rule(key, tuple(f"{prefix}.fc_mu{j}.{param}" for j in range(num_classes)), "stack")
    sub = leaf.removeprefix("sean.")
    if sub == "blend_logits":
        return Rule(key, (f"{prefix}.blending_gamma", f"{prefix}.blending_beta"), "blend")
    if sub.startswith("norm."):
        return Rule(key, (f"{prefix}.param_free_norm.{sub.removeprefix('norm.')}",), "copy")
    if sub.startswith("parsing_shared."):
        return Rule(key, (f"{prefix}.Spade.mlp_shared.{sub.removeprefix('parsing_shared.')}",), "copy")
    for ours, (gamma, beta) in (("parsing_gamma_beta.", ("Spade.mlp_gamma", "Spade.mlp_beta")),
                                ("style_gamma_beta.", ("conv_gamma", "conv_beta"))):
        if sub.startswith(ours):
            param = sub.removeprefix(ours)
            return Rule(key, (f"{prefix}.{gamma}.{param}", f"{prefix}.{beta}.{param}"), "cat")
    raise MappingError(f"no release name for our SEAN key '{key}'")


def generator_rules(ours: Mapping[str, torch.Tensor]) -> list[Rule]:
    """One Rule per key of a ReleaseGenerator state dict."""
    rules = []
    for key, tensor in ours.items():
        sean = _SEAN_LEAF.fullmatch(key)
        if sean:
            num_classes = tensor.shape[0] if sean[2].startswith("refine.") else 0
            rules.append(_sean_rule(key, _module_name(sean[1], _GENERATOR_MODULES), sean[2], num_classes))
            continue
        module, leaf = key.rsplit(".", 1)  # spectral norm's weight_orig, weight_u, weight_v keep their names
        rules.append(Rule(key, (f"{_module_name(module, _GENERATOR_MODULES)}.{leaf}",), "copy"))
    return rules


def flow_rules(ours: Mapping[str, torch.Tensor]) -> list[Rule]:
    """One Rule per key of a ReleaseFlowNet state dict."""
    rules = []
    for key in ours:
        module, leaf = key.rsplit(".", 1)
        rules.append(Rule(key, (f"{_module_name(module, _FLOW_MODULES)}.{leaf}",), "copy"))
    return rules


def unused_release_keys(ours: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The release buffers no computation reads (each ACE's SPADE.param_free_norm statistics), with the values
    of a freshly built release module; keyed by release name."""
    unused = {}
    for key, tensor in ours.items():
        sean = _SEAN_LEAF.fullmatch(key)
        if sean and sean[2] == "noise_scale":
            prefix = _module_name(sean[1], _GENERATOR_MODULES)
            c = tensor.shape[0]
            defaults = (torch.zeros(c), torch.ones(c), torch.tensor(0, dtype=torch.long))
            unused.update({f"{prefix}.Spade.param_free_norm.{b}": v for b, v in zip(_BN_BUFFERS, defaults)})
    return unused


def _combine(rule: Rule, tensors: list[torch.Tensor]) -> torch.Tensor:
    if rule.kind == "copy":
        return tensors[0]
    if rule.kind == "cat":
        return torch.cat(tensors, dim=0)
    if rule.kind == "stack":
        return torch.stack(tensors, dim=0)
    if rule.kind == "blend":
        return -torch.cat(tensors, dim=0)
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def _split(rule: Rule, tensor: torch.Tensor) -> list[torch.Tensor]:
    if rule.kind == "copy":
        return [tensor]
    if rule.kind == "cat":
        return list(tensor.chunk(2, dim=0))
    if rule.kind == "stack":
        return list(tensor.unbind(0))
    if rule.kind == "blend":
        return list((-tensor).chunk(2, dim=0))
    raise ValueError(f"unknown rule kind {rule.kind!r}")


def release_to_ours(
    release: Mapping[str, torch.Tensor],
    ours: Mapping[str, torch.Tensor],
    rules: list[Rule],
    unused: Mapping[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A release state dict -> ours (`ours` gives the expected names and shapes). Returns the converted
    state and one message per problem: a missing release key (its present partners, which would form one of our
    tensors with it, are not reported again), a release key nothing reads (beyond `unused`), a key of another
    shape than ours needs (the expected shape of that release key, and the found one). The state is only usable
    when the list is empty."""
    unused = unused or {}
    problems, converted, consumed = [], {}, set(unused)
    for rule in rules:
        consumed.update(name for name in rule.release if name in release)
        missing = [name for name in rule.release if name not in release]
        if missing:
            problems += [f"missing key '{name}' (needed for our '{rule.ours}')" for name in missing]
            continue
        parts = [release[name] for name in rule.release]
        expected = tuple(ours[rule.ours].shape)
        wanted = [tuple(p.shape) for p in _split(rule, torch.empty(expected, device="meta"))]  # each key's shape
        wrong = [(name, tuple(part.shape), want) for name, part, want in zip(rule.release, parts, wanted)
                 if tuple(part.shape) != want]
        if wrong or len(parts) != len(wanted):
            name, found, want = wrong[0] if wrong else (rule.release[0], tuple(parts[0].shape), wanted[0])
            more = f" (and {len(wrong) - 1} more of the {len(parts)} keys that form it)" if len(wrong) > 1 else ""
            problems.append(f"shape mismatch: '{name}' is {found}, expected {want} for our '{rule.ours}' "
                            f"{expected}{more}")
            continue
        converted[rule.ours] = _combine(rule, parts).to(ours[rule.ours].dtype)
    for name, tensor in unused.items():
        if name in release and tuple(release[name].shape) != tuple(tensor.shape):
            problems.append(f"shape mismatch: '{name}' is {tuple(release[name].shape)}, expected {tuple(tensor.shape)}")
    problems += [f"unexpected key '{name}' (no part of our network reads it)" for name in release
                 if name not in consumed]
    return converted, problems


def ours_to_release(
    ours: Mapping[str, torch.Tensor], rules: list[Rule], unused: Mapping[str, torch.Tensor] | None = None
) -> dict[str, torch.Tensor]:
    """Our state dict -> the release's names and shapes (the inverse of release_to_ours), unused buffers
    filled with a fresh module's values."""
    release = {name: tensor.clone() for name, tensor in (unused or {}).items()}
    for rule in rules:
        release.update(zip(rule.release, (t.clone() for t in _split(rule, ours[rule.ours]))))
    return release
