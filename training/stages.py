"""The two training stages, each as the networks, losses and optimizers it owns and one `step` on a device batch;
train.py runs either through the same loop (logging, NaN policy, budget, validation, checkpoints), which asks of a
stage: `name`, `device`, `nets` (the trained modules, as checkpoints save them), `frozen` (modules it runs but
does not train), `optimizers`, `bar_terms` (the prefix of the terms the progress bar shows), `warnings` (lines the
run log opens with), `datasets`, `step`, `log_extra`, `validate`, `on_validation`, `state` and `load`.

  joint (paper sec. 3.3, 4.1)
    SPATN(source parsing, source pose, target pose)               -> target parsing logits (ce)
    SPGNet(source image, target pose, source/target parsing, flow) -> target image (l1, perceptual, adversarial)
    SPGNet sees the GROUND-TRUTH target parsing while training and SPATN's prediction at test time
    (models.pipeline); the flow module is frozen. One step: D step, then G step.
  flow (stage 0)
    FlowNet(source pose, target pose) -> target->source flow and visibility   (flow_epe, visibility)

Every loss term is returned unweighted under its name; `weighted_sum` applies `loss.weights`. Terms come back
namespaced for logging: d/..., g/... (joint), flow/... (stage 0).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch
from torch import nn

from data.loaders import build_dataset, build_rendered_flow_pairs
from data.parsing import num_labels
from data.visual import to_uint8_tensor
from losses import build_loss
from losses.parsing import balanced_class_weights, pixel_accuracy
from metrics.ssim import ssim
from models.build import build_discriminator, build_flow, build_pose_encoder, build_spatn, build_spgnet
from models.pipeline import Pipeline, add_pose_maps, flow_and_visibility, load_flow, spatn_source
from training.flow_cache import FlowCache
from training.steps import autocast, load_optimizer, load_scaler, make_adam, optimizer_step, to_device, wrap
from utils.config import Config, ConfigError
from utils.distributed import DistInfo, convert_sync_batchnorm

# Decides, before an optimizer update, whether it is taken: the update's terms -> take it
# (training.nonfinite.NonFinitePolicy.allow: always under train.nonfinite=stop, only if all are finite under skip).
Guard = Callable[[dict[str, torch.Tensor]], bool]


def weighted_sum(terms: dict[str, torch.Tensor], weights: dict[str, float]) -> torch.Tensor:
    """sum_k lambda_k * term_k over the terms that have a weight (per-layer parts are logged, not weighted)."""
    return sum(weights[k] * v for k, v in terms.items() if k in weights)


class JointStage:
    """SPATN + SPGNet + PatchGAN D with the frozen flow module. `nets` are the plain modules (saved in
    checkpoints); spatn / gen / disc are their runners (DDP / compiled wrappers of the same modules)."""

    name = "joint"
    bar_terms = "g/"

    def __init__(self, cfg: Config, info: DistInfo, flow_net: nn.Module | None):
        device, t = info.device, cfg.train
        self.cfg, self.device, self.is_main = cfg, device, info.is_main
        self.pose_encoder = build_pose_encoder(cfg).to(device)
        nets = {"spatn": build_spatn(cfg), "generator": build_spgnet(cfg), "discriminator": build_discriminator(cfg)}
        if info.enabled:
            nets = {k: convert_sync_batchnorm(v) for k, v in nets.items()}
        self.nets = {k: v.to(device) for k, v in nets.items()}
        self.flow_net = None if flow_net is None else flow_net.to(device)
        self.frozen = {} if self.flow_net is None else {"flow": self.flow_net}
        self.flow_cache = (FlowCache(self.flow_net, int(t.flow_cache_mb * 2**20))
                           if self.flow_net is not None and t.flow_cache_mb > 0 else None)
        self.warnings = (["the perceptual loss uses a RANDOM-INIT VGG19 (offline mode): not the paper's loss"]
                         if cfg.loss.perceptual_weights == "random" else [])
        self.losses = {
            "ce": build_loss("ce").to(device),
            "l1": build_loss("l1").to(device),
            "perceptual": build_loss("perceptual", layers=tuple(cfg.loss.perceptual_layers),
                                     weights=cfg.loss.perceptual_weights,
                                     layer_weights=cfg.loss.perceptual_layer_weights,
                                     distance=cfg.loss.perceptual_distance).to(device),
            "gan": build_loss("adversarial", mode=cfg.loss.gan_mode).to(device),
        }
        self.weights = dataclasses.asdict(cfg.loss.weights)
        # a learnable kappa trains with G; the pose encoder runs outside DDP, so its gradient is averaged by hand
        self.kappa = [p for p in self.pose_encoder.parameters() if p.requires_grad]
        self.g_params = list(self.nets["spatn"].parameters()) + list(self.nets["generator"].parameters())
        self.g_params += self.kappa
        self.opt_g = make_adam(self.g_params, t.lr, t.betas, device)
        self.opt_d = make_adam(self.nets["discriminator"].parameters(), t.lr_d, t.betas, device,
                               weight_decay=t.weight_decay_d)
        self.optimizers = {"g": self.opt_g, "d": self.opt_d}
        self.schedulers = {k: torch.optim.lr_scheduler.ReduceLROnPlateau(o, factor=t.lr_factor, patience=t.lr_patience)
                           for k, o in self.optimizers.items()}
        self.scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
        self.spatn, self.gen, self.disc = (wrap(self.nets[k], info, cfg) for k in ("spatn", "generator",
                                                                                  "discriminator"))

    def datasets(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        """The train and test sets. Under loss.ce_class_weights=inverse_sqrt_frequency, SPATN's cross-entropy
        takes its class weights from the training set's label frequencies here, before the first step."""
        use_files = self.cfg.model.flow.source == "files"
        train_set = build_dataset(self.cfg, "train", with_flow=use_files, augment=True)
        if self.cfg.loss.ce_class_weights == "inverse_sqrt_frequency":
            weights = balanced_class_weights(train_set.label_counts(), power=0.5)
            self.losses["ce"] = build_loss("ce", class_weights=weights).to(self.device)
            if self.is_main:
                print("SPATN cross-entropy class weights (inverse sqrt frequency): "
                      + " ".join(f"{w:.2f}" for w in weights.tolist()), flush=True)
        return train_set, build_dataset(self.cfg, "test", with_flow=use_files)

    def step(self, batch: dict, step: int, guard: Guard) -> dict[str, torch.Tensor]:
        """One training step on a device batch: D step, then G step. Returns the detached, unweighted terms."""
        cfg = self.cfg
        batch = add_pose_maps(batch, self.pose_encoder)
        src, tgt, tgt_pose = batch["src_image"], batch["tgt_image"], batch["tgt_pose"]
        flow, vis = self.flow_cache(batch) if self.flow_cache else flow_and_visibility(self.flow_net, batch)
        adversarial_on = step >= cfg.train.adv_start_step and self.weights["adversarial"] > 0

        # ---- forward: stage 1 predicts the target parsing; stage 2 renders with the GROUND-TRUTH parsing
        with autocast(cfg, self.device):
            logits = self.spatn(spatn_source(cfg.model.spatn.input == "image", batch), batch["src_pose"],
                             tgt_pose)  # (B,K,H,W)
            fake = self.gen(src, tgt_pose, batch["src_parsing"], batch["tgt_parsing"], flow, vis)  # (B,3,H,W)

        # ---- D step: real and generated triplets in one forward (one DDP hook pass)
        terms: dict[str, torch.Tensor] = {}
        stepped = False  # whether an update was taken: the fp16 scaler updates its scale only after one
        if adversarial_on:
            with autocast(cfg, self.device):
                pose = tgt_pose.detach()  # D's update does not reach a learnable kappa
                both = self.disc(torch.cat([src, src]), torch.cat([tgt, fake.detach()]), torch.cat([pose, pose]))
                real_logits, fake_logits = both.float().chunk(2)  # (B,1,h,w) each
                d_terms = self.losses["gan"].discriminator_loss(real_logits, fake_logits)
            if guard(d_terms):
                optimizer_step(cfg.loss.d_scale * sum(d_terms.values()), self.opt_d, self.scaler,
                               list(self.nets["discriminator"].parameters()), None)
                stepped = True
            terms.update({f"d/{k}": v.detach() for k, v in d_terms.items()})

        # ---- G step: SPATN and SPGNet together, each term weighted from the config
        with autocast(cfg, self.device):
            g_terms = {"ce": self.losses["ce"](logits.float(), batch["tgt_parsing"]),
                       "l1": self.losses["l1"](fake.float(), tgt)}
            g_terms.update(self.losses["perceptual"](fake.float(), tgt))  # "perceptual" + one term per VGG layer
            if adversarial_on:
                disc = self.nets["discriminator"]  # the plain module: D is not updated here, so no DDP hooks
                disc.requires_grad_(False)
                g_terms["adversarial"] = self.losses["gan"].generator_loss(disc(src, fake, tgt_pose).float())
                disc.requires_grad_(True)
        g_total = weighted_sum(g_terms, self.weights)
        if guard(g_terms):
            optimizer_step(g_total, self.opt_g, self.scaler, self.g_params, cfg.train.grad_clip, self.kappa)
            stepped = True
        if stepped:
            self.scaler.update()
        terms.update({f"g/{k}": v.detach() for k, v in g_terms.items()})
        terms["g/total"] = g_total.detach()
        return terms

    def log_extra(self) -> dict[str, float]:
        extra = {"lr/g": self.opt_g.param_groups[0]["lr"], "lr/d": self.opt_d.param_groups[0]["lr"]}
        if self.cfg.pose.learnable_kappa:
            extra["pose/kappa"] = float(self.pose_encoder.distance.kappa)
        if self.flow_cache:
            extra.update(self.flow_cache.stats())
        return extra

    def pipeline(self) -> Pipeline:
        """The test-time path over the plain modules (SPATN's prediction feeds SPGNet)."""
        return Pipeline(spatn=self.nets["spatn"], generator=self.nets["generator"], flow=self.flow_net,
                        pose_encoder=self.pose_encoder, num_classes=num_labels(self.cfg),
                        spatn_takes_image=self.cfg.model.spatn.input == "image")

    @torch.no_grad()
    def validate(self, loader: torch.utils.data.DataLoader) -> tuple[dict[str, float], dict]:
        """Held-out losses with SPATN's predicted parsing (as at test time), SSIM against copying the source;
        `val/recon` drives the lr plateau schedule (paper 4.1). Also returns the first batch's render."""
        cfg, pipe = self.cfg, self.pipeline()
        modules = [self.nets["spatn"], self.nets["generator"]]
        for m in modules:
            m.eval()
        sums: dict[str, float] = {}
        count, first = 0, None
        for batch in loader:
            batch = to_device(batch, self.device, cfg.train.channels_last)
            with autocast(cfg, self.device):
                out = pipe.render(batch)
            tgt, n = batch["tgt_image"], batch["tgt_image"].shape[0]
            vals = {
                "ce": self.losses["ce"](out.logits, batch["tgt_parsing"]),
                "parsing_acc": pixel_accuracy(out.logits, batch["tgt_parsing"]),
                "l1": (out.image - tgt).abs().mean(),
                "perceptual": self.losses["perceptual"](out.image, tgt)["perceptual"],
                "ssim": ssim(to_uint8_tensor(out.image), to_uint8_tensor(tgt)).mean(),
                "ssim_copy_source": ssim(to_uint8_tensor(batch["src_image"]), to_uint8_tensor(tgt)).mean(),
            }
            for k, v in vals.items():
                sums[k] = sums.get(k, 0.0) + float(v) * n
            count += n
            if first is None:
                first = {"batch": batch, "rendered": out}
        for m in modules:
            m.train()
        values = {f"val/{k}": v / max(count, 1) for k, v in sums.items()}
        values["val/recon"] = values["val/l1"] + values["val/perceptual"]
        return values, first

    def on_validation(self, value: float) -> None:
        # constant: the release (its step decay never fires within its epochs); linear: train.py sets it per step
        if self.cfg.train.lr_schedule != "plateau":
            return
        for scheduler in self.schedulers.values():
            scheduler.step(value)

    def state(self) -> dict:
        models = {k: v.state_dict() for k, v in self.nets.items()}
        models["pose_encoder"] = self.pose_encoder.state_dict()
        if self.flow_net is not None:  # the frozen flow travels with the checkpoint: test.py needs nothing else
            models["flow"] = self.flow_net.state_dict()
        return {"models": models, "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
                "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
                "scaler": self.scaler.state_dict()}

    def load(self, ckpt: dict) -> None:
        for k, net in self.nets.items():
            net.load_state_dict(ckpt["models"][k])
        if "pose_encoder" in ckpt["models"]:
            self.pose_encoder.load_state_dict(ckpt["models"]["pose_encoder"])
        for k, opt in self.optimizers.items():
            load_optimizer(opt, ckpt["optimizers"][k])
        for k, scheduler in self.schedulers.items():
            scheduler.load_state_dict(ckpt["schedulers"][k])
        load_scaler(self.scaler, ckpt["scaler"])


class FlowStage:
    """Stage 0: the flow module on exact flow targets (multi-scale end-point error + visibility CE)."""

    name = "flow"
    bar_terms = "flow/"

    def __init__(self, cfg: Config, info: DistInfo):
        device, t = info.device, cfg.train
        self.cfg, self.device = cfg, device
        self.pose_encoder = build_pose_encoder(cfg).to(device).requires_grad_(False)  # stage 0 learns no kappa
        net = build_flow(cfg)
        if info.enabled:
            net = convert_sync_batchnorm(net)
        self.net = net.to(device)
        self.nets = {"flow": self.net}
        self.frozen: dict[str, nn.Module] = {}
        self.warnings: list[str] = []
        self.losses = {"flow_epe": build_loss("flow_epe", coarse=cfg.loss.flow_coarse).to(device),
                       "visibility": build_loss("visibility",
                                                class_weights=cfg.loss.visibility_class_weights).to(device)}
        self.weights = dataclasses.asdict(cfg.loss.weights)
        self.opt = make_adam(self.net.parameters(), t.lr, t.betas, device)
        self.optimizers = {"flow": self.opt}
        self.scaler = torch.amp.GradScaler(device.type, enabled=t.amp == "fp16")
        self.runner = wrap(self.net, info, cfg)

    def datasets(self) -> tuple[torch.utils.data.Dataset, torch.utils.data.Dataset]:
        if self.cfg.data.target_augment:
            raise ConfigError("key 'data.target_augment' = true applies to the joint stage (it moves the target but "
                              "not its flow file); train the flow module with data.target_augment=false")
        if self.cfg.data.flow_pairs == "rendered":
            train_set = build_rendered_flow_pairs(self.cfg)
        else:
            train_set = build_dataset(self.cfg, "train", with_flow=True, augment=True)
        return train_set, build_dataset(self.cfg, "test", with_flow=True)

    def step(self, batch: dict, step: int, guard: Guard) -> dict[str, torch.Tensor]:
        batch = add_pose_maps(batch, self.pose_encoder)
        with autocast(self.cfg, self.device):
            out = self.runner(batch["src_pose"], batch["tgt_pose"], batch["src_keypoints"], batch["tgt_keypoints"])
            terms = {"flow_epe": self.losses["flow_epe"]([f.float() for f in out.flows], batch["flow"], batch["vis"]),
                     "visibility": self.losses["visibility"](out.vis_logits.float(), batch["vis"])}
        if guard(terms):
            optimizer_step(weighted_sum(terms, self.weights), self.opt, self.scaler, list(self.net.parameters()),
                           self.cfg.train.grad_clip)
            self.scaler.update()  # only after an update: a skipped one recorded no inf check to count
        return {f"flow/{k}": v.detach() for k, v in terms.items()}

    def log_extra(self) -> dict[str, float]:
        return {"lr/flow": self.opt.param_groups[0]["lr"]}

    @torch.no_grad()
    def validate(self, loader: torch.utils.data.DataLoader) -> tuple[dict[str, float], None]:
        """End-point error on visible target pixels, against the zero-flow baseline, and visibility accuracy."""
        self.net.eval()
        epe = zero = acc = 0.0
        count = 0
        for batch in loader:
            batch = add_pose_maps(to_device(batch, self.device, self.cfg.train.channels_last), self.pose_encoder)
            out = self.net(batch["src_pose"], batch["tgt_pose"], batch["src_keypoints"], batch["tgt_keypoints"])
            visible = (batch["vis"] == 0).float()
            n_vis = visible.sum().clamp_min(1)
            epe += float(((out.flow.float() - batch["flow"]).norm(dim=1) * visible).sum() / n_vis)
            zero += float((batch["flow"].norm(dim=1) * visible).sum() / n_vis)
            acc += float((out.vis_logits.argmax(dim=1) == batch["vis"]).float().mean())
            count += 1
        self.net.train()
        return ({"val/flow_epe": epe / count, "val/flow_epe_zero_flow": zero / count,
                 "val/visibility_acc": acc / count}, None)

    def on_validation(self, value: float) -> None:
        pass  # stage 0 has no plateau schedule (lr_schedule=linear is set by train.py, each step)

    def state(self) -> dict:
        return {"models": {"flow": self.net.state_dict()}, "optimizers": {"flow": self.opt.state_dict()},
                "scaler": self.scaler.state_dict()}

    def load(self, ckpt: dict) -> None:
        self.net.load_state_dict(ckpt["models"]["flow"])
        load_optimizer(self.opt, ckpt["optimizers"]["flow"])
        load_scaler(self.scaler, ckpt.get("scaler", {}))


Stage = JointStage | FlowStage


def build_stage(cfg: Config, info: DistInfo, ckpt: dict | None) -> Stage:
    """The stage train.stage names, restored from `ckpt` when resuming. The joint stage's frozen flow comes from
    the resumed checkpoint or from model.flow.checkpoint (models.pipeline.load_flow)."""
    if cfg.train.stage == "flow":
        stage: Stage = FlowStage(cfg, info)
    else:
        stage = JointStage(cfg, info, load_flow(cfg, ckpt, None))
    if ckpt is not None:
        stage.load(ckpt)
    return stage
