"""Config system: YAML over typed defaults, `base:` chains, dotted overrides, errors that name the culprit."""

import warnings
from pathlib import Path

import pytest
import torch
import yaml

from data.parsing import num_labels
from models.build import build_all, pose_channels
from utils.config import (
    Config,
    ConfigError,
    architecture_mismatches,
    config_from_dict,
    load_config,
    save_config,
    to_dict,
)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))  # found from this file, whatever the working directory
# The generator each shipped config must build, read from where the file lies: configs/ablation/<variant>.yaml,
# configs/release/* (the authors' DualUnetGenerator_SEAN), and otherwise the full SPGNet.
ABLATION_GENERATORS = {"full": "SPGNetGenerator", "baseline": "SPGNetGenerator", "baseline_s": "SPGNetGenerator",
                       "ours_spade": "SPGNetGenerator", "ours_cc": "SPGNetGenerator", "patn_s": "PATNSGenerator",
                       "sean": "SEANGenerator"}
# Parameter counts the release configs' headers state (the authors' weights files hold exactly these tensors)
RELEASE_GENERATOR_PARAMETERS = {"deepfashion.yaml": 87.8e6, "market.yaml": 30.9e6}


def expected_classes(path: Path) -> dict[str, str]:
    folder = path.parent.name
    generator = {"ablation": ABLATION_GENERATORS.get(path.stem), "release": "ReleaseGenerator"}.get(folder,
                                                                                                  "SPGNetGenerator")
    return {"spatn": "SPATN", "generator": generator, "discriminator": "PatchDiscriminator",
            "flow": "ReleaseFlowNet" if folder == "release" else "FlowNet"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_builds_its_networks_from_any_folder(path, tmp_path, monkeypatch):
    """Each YAML under configs/ loads (its base: chain resolved from the file) and builds the joint stage's four
    networks, which take a batch of its shapes: on the meta device, so shapes are checked and nothing computed."""
    monkeypatch.chdir(tmp_path)
    cfg = load_config(path)
    h, w = cfg.data.image_size
    k, p = num_labels(cfg), pose_channels(cfg)
    with torch.device("meta"):
        nets = build_all(cfg)
        image, pose, parsing = torch.empty(2, 3, h, w), torch.empty(2, p, h, w), torch.empty(2, k, h, w)
        logits = nets["spatn"](parsing if cfg.model.spatn.input == "parsing" else image, pose, pose)
        keypoints = torch.empty(2, 18, 2)  # (y, x) per joint: model.flow.limb_flows builds candidates from them
        flow = nets["flow"](pose, pose, keypoints, keypoints)
        generated = nets["generator"](image, pose, parsing, parsing, torch.empty(2, 2, h, w),
                                      torch.zeros(2, h, w, dtype=torch.long))
        patches = nets["discriminator"](image, generated, pose)
    assert {name: type(net).__name__ for name, net in nets.items()} == expected_classes(path)
    counts = {name: sum(t.numel() for t in net.parameters()) for name, net in nets.items()}
    assert all(n > 0 for n in counts.values()), counts
    if path.parent.name == "release":
        assert counts["generator"] == pytest.approx(RELEASE_GENERATOR_PARAMETERS[path.name], rel=5e-4)
    assert logits.shape == (2, k, h, w) and generated.shape == (2, 3, h, w)
    assert flow.flow.shape[:2] == (2, 2) and patches.shape[:2] == (2, 1)


def test_release_file_names_and_sizes():
    df = load_config("configs/deepfashion.yaml")
    assert df.data.image_size == (256, 176)
    assert df.data.annotation_train == "fasion-resize-annotation-train.csv"
    assert df.data.pairs_test == "fasion-resize-pairs-test.csv"
    assert load_config("configs/deepfashion_256.yaml").data.image_size == (256, 256)
    market = load_config("configs/market.yaml")
    assert market.data.image_size == (128, 64)
    assert market.data.pairs_train == "market-pairs-train.csv"
    assert market.train.batch_size == 32 and df.train.batch_size == 4  # paper sec. 4.1


def test_paper_loss_weights_are_the_defaults():
    loss = load_config("configs/deepfashion.yaml").loss
    w = loss.weights
    assert (w.ce, w.l1, w.perceptual, w.adversarial) == (10.0, 1.0, 1.0, 0.01)


def test_base_chain_overrides_only_what_it_states():
    cfg = load_config("configs/ablation/ours_spade.yaml")
    assert cfg.model.generator.variant == "ours_spade"
    assert cfg.data.image_size == (256, 176)  # from ../deepfashion.yaml
    assert cfg.model.spatn.n_blocks == 9


def test_dotted_overrides_parse_yaml_values():
    cfg = load_config("configs/synthetic.yaml", ["train.batch_size=8", "data.image_size=[128, 64]", "train.lr=1e-3"])
    assert cfg.train.batch_size == 8
    assert cfg.data.image_size == (128, 64)
    assert cfg.train.lr == pytest.approx(1e-3)
    assert cfg.model.flow.checkpoint is None
    assert load_config(None, ["model.flow.checkpoint=a/b.pt"]).model.flow.checkpoint == "a/b.pt"


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  batch_sise: 8\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "train.batch_sise" in str(err.value) and "bad.yaml" in str(err.value)


def test_unknown_section_and_override_are_errors(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("trian:\n  batch_size: 8\n")
    with pytest.raises(ConfigError, match="'trian'"):
        load_config(path)
    with pytest.raises(ConfigError, match="model.generator.widht"):
        load_config(None, ["model.generator.widht=3"])
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, ["train.batch_size"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("train.batch_size=abc", "train.batch_size"),
        ("train.batch_size=2.5", "train.batch_size"),
        ("train.lr=true", "train.lr"),
        ("data.image_size=[256]", "data.image_size"),
        ("train.compile=1", "train.compile"),
        ("model.generator.variant=fancy", "model.generator.variant"),
        ("data.image_size=[250, 176]", "data.image_size"),
        ("loss.visibility_class_weights=[1, 0, 1]", "loss.visibility_class_weights"),
        ("loss.visibility_class_weights=[1, 1]", "loss.visibility_class_weights"),
        ("loss.flow_coarse=median", "loss.flow_coarse"),
        ("data.flow_pairs=disk", "data.flow_pairs"),
    ],
)
def test_wrong_types_and_values_name_the_key(override, key):
    with pytest.raises(ConfigError) as err:
        load_config("configs/synthetic.yaml", [override])
    assert key in str(err.value)


def test_wrong_type_in_file_names_the_file(tmp_path):
    path = tmp_path / "typed.yaml"
    path.write_text("data:\n  num_workers: many\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "typed.yaml" in str(err.value) and "data.num_workers" in str(err.value)



def test_invalid_yaml_is_one_line_naming_file_line_and_column(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("data:\n  root: [unclosed\n  x: :\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert "\n" not in message, message  # the one `error:` line of the entry points
    assert message.startswith(f"{path.resolve()}:3:4: not valid YAML"), message  # PyYAML's mark, 0-based there


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("configs/market.yaml", ["train.seed=7"])
    save_config(cfg, tmp_path / "config.yaml")
    again = config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == cfg


def test_architecture_mismatch_lists_keys():
    a = load_config("configs/synthetic.yaml")
    changes = ["model.generator.base_channels=12", "train.lr=1.0", "data.image_size=[128, 64]"]
    b = load_config("configs/synthetic.yaml", changes)
    diffs = architecture_mismatches(to_dict(a), b)
    assert any(d.startswith("model.generator.base_channels") for d in diffs)
    assert any(d.startswith("data.image_size") for d in diffs)
    assert not any(d.startswith("train.lr") for d in diffs)  # training settings may change on resume
    assert architecture_mismatches(to_dict(a), a) == []


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.spatn.norm=btach", "key 'model.spatn.norm' = 'btach' is not one of batch, instance, none"),
        ("model.flow.norm=group", "key 'model.flow.norm' = 'group' is not one of batch, instance, none"),
        ("model.discriminator.norm=spectral", "key 'model.discriminator.norm' = 'spectral' is not one of"),
        ("loss.perceptual_layers=[relu1_1,relu9_1]", "key 'loss.perceptual_layers[1]' = 'relu9_1' is not one of"),
        ("loss.gan_mode=wgan", "key 'loss.gan_mode' = 'wgan' is not one of vanilla, lsgan, hinge"),
        ("train.ckpt_every=0", "key 'train.ckpt_every' = 0 must be positive"),
        ("train.max_steps=-5", "key 'train.max_steps' = -5 must be positive"),
        ("train.lr=-1e-4", "key 'train.lr' = -0.0001 must be positive"),
        ("train.max_minutes=0", "key 'train.max_minutes' = 0.0 must be positive"),
        ("train.lr_factor=2", "key 'train.lr_factor' = 2.0 must be below 1"),
        ("loss.weights.l1=-1", "key 'loss.weights.l1' = -1.0 must not be negative"),
        ("data.hflip_prob=1.5", "key 'data.hflip_prob' = 1.5 must lie in [0, 1]"),
    ],
)
def test_choices_and_ranges_are_checked_at_load(override, message):
    with pytest.raises(ConfigError) as err:
        load_config("configs/synthetic.yaml", [override])
    assert message in str(err.value)


def test_dead_keys_are_gone():
    """Keys that were validated and then ignored are unknown keys now, not silent no-ops."""
    for key in ("train.image_every=10", "test.save_grids=true", "test.save_parsing=true", "data.use_flow_files=true",
                "loss.ce=10"):
        with pytest.raises(ConfigError, match="unknown key"):
            load_config("configs/synthetic.yaml", [key])


def test_a_generator_key_the_variant_does_not_take_is_an_error():
    from models.build import build_spgnet

    cfg = load_config("configs/deepfashion.yaml", ["model.generator.variant=patn_s",
                                                   "model.generator.n_warp_scales=3"])
    with pytest.raises(ConfigError, match=r"'patn_s' takes no model.generator.n_warp_scales \(= 3\)"):
        build_spgnet(cfg)
    net = build_spgnet(load_config("configs/deepfashion.yaml", ["model.generator.variant=patn_s"]))
    assert type(net).__name__ == "PATNSGenerator"


# ------------------------------------------------------------------ what YAML would accept but a config must not


def test_a_key_given_twice_in_one_mapping_is_refused_naming_it_and_both_lines(tmp_path):
    """YAML keeps the last of two `train:` sections without a word: the first one's settings would vanish."""
    path = tmp_path / "dup.yaml"
    path.write_text("train:\n  batch_size: 2\ndata:\n  root: x\ntrain:\n  lr: 0.1\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path.resolve()}:5:1: key 'train' is given twice"), err.value
    assert "first on line 1" in str(err.value)
    path.write_text("train:\n  batch_size: 2\n  batch_size: 4\n")
    with pytest.raises(ConfigError, match=r"dup.yaml:3:3: key 'batch_size' is given twice"):
        load_config(path)


def test_an_alias_bomb_is_refused_at_once_in_one_short_line(tmp_path):
    """9 levels of 9 aliases: 387 million leaves once expanded (hundreds of MB in a message that printed the value)."""
    levels = ["&a [1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"&{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]" for i in range(8)]
    path = tmp_path / "bomb.yaml"
    path.write_text("train:\n  batch_size:\n" + "\n".join("    - " + line for line in levels) + "\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path.resolve()}:4:11: alias '*a': configs take no YAML aliases"), err.value
    assert len(str(err.value)) < 300


def test_a_long_value_is_shortened_in_the_message():
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.batch_size=[" + ", ".join(["[1, 2, 3, 4, 5, 6, 7, 8]"] * 10_000) + "]"])
    assert "train.batch_size" in str(err.value) and len(str(err.value)) < 300


@pytest.mark.parametrize("value", ["[", "@run1", "*old", "!!python/name:os.system", "{a: 1", "`x`"])
def test_an_override_that_is_not_yaml_is_one_error_naming_it(value):
    with pytest.raises(ConfigError) as err:
        load_config("configs/synthetic.yaml", [f"train.name={value}"])
    message = str(err.value)
    assert message.startswith(f"command line override 'train.name={value}'") and "\n" not in message, message
    assert message.endswith("(quote a string value: train.name='...')")
    assert load_config("configs/synthetic.yaml", [f"train.name='{value}'"]).train.name == value


@pytest.mark.parametrize("base", ["[synthetic.yaml]", "3", "{a: b}", "''"])
def test_a_base_that_is_not_one_file_name_is_refused(tmp_path, base):
    path = tmp_path / "based.yaml"
    path.write_text(f"base: {base}\ntrain:\n  batch_size: 2\n")
    with pytest.raises(ConfigError, match=r"based.yaml: key 'base' = .* must name one config file"):
        load_config(path)


# ------------------------------------------- network-shaping values: what loads builds networks that run


def run_networks(cfg: Config) -> None:
    """A forward pass of SPATN, the generator and the discriminator at cfg's image size (batch of 2)."""
    from models.build import build_discriminator, build_spatn, build_spgnet

    h, w = cfg.data.image_size
    k, p = num_labels(cfg), pose_channels(cfg)
    image, pose = torch.zeros(2, 3, h, w), torch.zeros(2, p, h, w)
    parsing = torch.zeros(2, k, h, w)
    parsing[:, 0] = 1
    with torch.no_grad():
        assert build_spatn(cfg)(parsing, pose, pose).shape == (2, k, h, w)
        flow, vis = torch.zeros(2, 2, h, w), torch.zeros(2, h, w, dtype=torch.long)
        assert build_spgnet(cfg)(image, pose, parsing, parsing, flow, vis).shape == (2, 3, h, w)
        assert build_discriminator(cfg).train()(image, image, pose).numel() > 0


TINY_NETS = ["data.image_size=[128, 64]", "model.spatn.ngf=2", "model.spatn.n_blocks=1",
             "model.generator.base_channels=2", "model.generator.max_channels=4", "model.generator.style_dim=4",
             "model.generator.norm_hidden=2", "model.discriminator.ndf=2"]


@pytest.mark.parametrize(("accepted", "refused", "message"), [
    ("model.spatn.n_downsampling=6", "model.spatn.n_downsampling=7", "multiples of 128"),  # 64 px wide
    ("model.discriminator.n_layers=4", "model.discriminator.n_layers=5", "5 halvings leave 2 px"),
    ("model.generator.base_channels=1", "model.generator.base_channels=0", "must be at least 1"),
    ("model.spatn.ngf=1", "model.spatn.ngf=0", "must be at least 1"),
    ("model.discriminator.ndf=1", "model.discriminator.ndf=0", "must be at least 1"),
    ("model.generator.style_dim=1", "model.generator.style_dim=0", "must be at least 1"),
])
def test_the_last_accepted_value_runs_and_the_first_refused_one_fails_in_the_network(accepted, refused, message):
    """The range check sits exactly where the networks stop working: the boundary value builds networks whose
    forward pass runs, the next one is refused at load -- and fails in the network when built without the check."""
    run_networks(load_config("configs/synthetic_market.yaml", [*TINY_NETS, accepted]))
    with pytest.raises(ConfigError, match=message) as err:
        load_config("configs/synthetic_market.yaml", [*TINY_NETS, refused])
    assert refused.split("=")[0] in str(err.value)
    unchecked = load_config("configs/synthetic_market.yaml", [*TINY_NETS, accepted])
    section, key = refused.split("=")[0].rsplit(".", 1)
    node = unchecked
    for part in section.split("."):
        node = getattr(node, part)
    setattr(node, key, int(refused.split("=")[1]))
    with pytest.raises((RuntimeError, ValueError, ZeroDivisionError)), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch: "Initializing zero-element tensors is a no-op"
        run_networks(unchecked)


@pytest.mark.parametrize(("override", "message"), [
    ("pose.sigma=0", "key 'pose.sigma' = 0.0 must be positive"),
    ("pose.radius=-1", "key 'pose.radius' = -1.0 must be positive"),
    ("model.flow.n_scales=0", "key 'model.flow.n_scales' = 0 must be at least 1"),
    ("model.spatn.n_blocks=-1", "key 'model.spatn.n_blocks' = -1 must be at least 0"),
    ("model.generator.n_res_blocks=-1", "key 'model.generator.n_res_blocks' = -1 must be at least 0"),
    ("model.generator.sean_kernel=4", "key 'model.generator.sean_kernel' = 4 must be odd"),
    ("model.flow.flow_scale=0", "key 'model.flow.flow_scale' = 0.0 must be positive"),
])
def test_network_values_out_of_range_are_refused_at_load(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        load_config("configs/synthetic.yaml", [override])
