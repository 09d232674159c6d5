"""Config -> datasets and DataLoaders (the only place that maps `cfg.data` / `cfg.pose` onto PairDataset)."""

from __future__ import annotations

from pathlib import Path

import torch

from data.datasets import PairDataset
from data.flow_pairs import RenderedFlowPairs
from data.parsing import label_merge
from utils.config import Config, ConfigError
from utils.distributed import ShardedEpochSampler


def build_dataset(cfg: Config, split: str, max_pairs: int | None = None, with_flow: bool = False,
                  augment: bool = False, pairs_file: str | None = None,
                  pair_parsing_dir: str | None = None) -> PairDataset:
    """The train or test pair dataset of the configured layout (docs/data.md#layout). pair_parsing_dir (test.py
    --parsing-dir) reads each pair's target parsing from <dir>/<from-stem>___<to-stem>.png, over the config's
    data.pair_parsing_dir. augment: mirroring (data.hflip_prob) and the release's target transform
    (data.target_augment)."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    d = cfg.data
    image_dir = d.train_dir if split == "train" else d.test_dir
    return PairDataset(
        root=d.root,
        image_dir=image_dir,
        annotation_file=d.annotation_train if split == "train" else d.annotation_test,
        pairs_file=pairs_file or (d.pairs_train if split == "train" else d.pairs_test),
        parsing_dir=d.parsing_dir if d.parsing_dir is not None else image_dir + d.parsing_suffix,
        pair_parsing_dir=pair_parsing_dir or (Path(d.root) / d.pair_parsing_dir if d.pair_parsing_dir else None),
        image_size=tuple(d.image_size),
        flow_dir=image_dir + d.flow_suffix if with_flow else None,
        label_merge=label_merge(cfg),
        heatmap=cfg.pose.heatmap,
        sigma=cfg.pose.sigma,
        radius=cfg.pose.radius,
        kappa=cfg.pose.kappa,
        encode_pose=not (cfg.pose.encode_on_device or cfg.pose.learnable_kappa),
        hflip_prob=d.hflip_prob if augment else 0.0,
        target_augment=(d.aug_scale, tuple(d.aug_shift)) if augment and d.target_augment else None,
        limbs=cfg.pose.limbs,
        keypoint_margin=d.keypoint_margin,
        invalid_poses=d.invalid_poses,
        max_pairs=max_pairs if max_pairs is not None else (d.max_train_pairs if split == "train" else d.max_test_pairs),
    )


def refuse_dataset_folder(out: Path, cfg: Config, flag: str = "--out") -> None:
    """Never write results into (or over) a folder of real data: the dataset root, a split's images, parsing maps
    or flow files, or a folder holding one of them. `out` is resolved, so a symlink into the dataset counts."""
    out, d = Path(out).resolve(), cfg.data
    root = Path(d.root).resolve()
    for sub in (split + suffix for split in (d.train_dir, d.test_dir) for suffix in ("", d.parsing_suffix,
                                                                                     d.flow_suffix)):
        real = (root / sub).resolve()
        if out == real or real in out.parents or out in real.parents or out == root:
            raise ConfigError(f"{flag} {out} is (inside) the dataset folder {real}: refusing to write there")


def build_rendered_flow_pairs(cfg: Config) -> RenderedFlowPairs:
    """Stage 0's training pairs under data.flow_pairs=rendered: the training people of the synthetic dataset at
    data.root in fresh poses (data.flow_pairs)."""
    d, p = cfg.data, cfg.pose
    return RenderedFlowPairs(d.root, d.rendered_pairs, tuple(d.image_size), heatmap=p.heatmap, sigma=p.sigma,
                             radius=p.radius, kappa=p.kappa, encode_pose=not (p.encode_on_device or p.learnable_kappa),
                             limbs=p.limbs)


class SeededSamples(torch.utils.data.Dataset):
    """A dataset read by (index, seed) keys, as utils.distributed.ShardedEpochSampler yields them: the sample's
    random augmentation (mirroring, the target transform) is drawn from torch's RNG seeded with its own seed, so
    it depends on the key alone, not on the rank, the loader worker or where a resumed run started."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> dict:
        index, seed = key
        with torch.random.fork_rng(devices=[]):  # the process's own stream is left as it was
            torch.manual_seed(seed)
            return self.dataset[index]


def build_loader(dataset: torch.utils.data.Dataset, batch_size: int, num_workers: int,
                 sampler: torch.utils.data.Sampler | None = None, shuffle: bool = False,
                 drop_last: bool = False, pin_memory: bool = False,
                 generator: torch.Generator | None = None) -> torch.utils.data.DataLoader:
    """Persistent workers and a prefetch depth that keeps a GPU fed; pinned memory when training on CUDA.
    generator: what each new iterator draws its workers' base seed from (None: torch's global RNG)."""
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=shuffle if sampler is None else False,
        num_workers=num_workers,
        pin_memory=pin_memory,
        drop_last=drop_last,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
        generator=generator,
    )


def training_loader(cfg: Config, dataset: torch.utils.data.Dataset, rank: int = 0, world_size: int = 1,
                    pin_memory: bool = False) -> tuple[torch.utils.data.DataLoader, ShardedEpochSampler]:
    """The training loader and its epoch sampler, as train.py draws batches (and the benchmarks time them): this
    rank's share of each epoch's shuffled batches, each sample's augmentation drawn from its own seed, and each
    epoch's new iterator drawing its workers' base seed from a generator of its own, not from the training stream
    (a resumed run starts one at another point)."""
    t = cfg.train
    sampler = ShardedEpochSampler(len(dataset), t.batch_size, rank, world_size, t.seed)
    loader = build_loader(SeededSamples(dataset), t.batch_size // world_size, cfg.data.num_workers, sampler=sampler,
                          pin_memory=pin_memory, generator=torch.Generator().manual_seed(t.seed))
    return loader, sampler
