"""The paper's user study (sec. 4.3, Table 2 right): build a self-contained browser study, score its answers.

Two protocols:
  real-vs-fake  (Ma et al. 2017, Siarohin et al. 2018, as the paper runs it) a random n_generated generated
                and n_real real images (55 and 55), shuffled; the first `practice` (10) are practice, the rest
                (100) scored. Each is shown for display_ms (1000) and the participant says "real" or "generated".
  best-of       per trial a source image, the target pose picture, the ground truth and every method's output
                in a random order; the participant picks the output closest to the ground truth in pose and
                appearance.

A study folder holds index.html (the page, with the public part of the study inlined: no network, works from
file:// and from a static web server), images/ (every picture re-encoded as PNG under a neutral name, so that
neither the name nor the file format tells real from generated or one method from another) and manifest.json
(the whole study, truths included, which the page never reads). The study id is a hash of the manifest and the
image bytes: the same inputs and seed give the same study, and answers carry the id so that `score` refuses
answers from another study.

Scores, in percent, over scored trials only (the manifest's practice flags decide, not the answers file's):
  R2G  real images judged generated / real images answered
  G2R  generated images judged real / generated images answered
  Jab  per method: trials where its output was picked / trials answered
A participant's skipped trials (no entry, or answer null) leave both numerator and denominator. "Pooled" sums
numerators and denominators over participants; its 95% interval is a percentile bootstrap over participants
(participants drawn with replacement, the pooled ratio recomputed, resamples whose denominator is 0 dropped).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from data.annotations import read_annotations, read_pairs
from data.datasets import generated_image_name
from data.pose import encode_pose
from data.visual import pose_picture
from utils.errors import InputError

REAL_VS_FAKE, BEST_OF = "real-vs-fake", "best-of"
PROTOCOLS = (REAL_VS_FAKE, BEST_OF)
REAL, GENERATED = "real", "generated"
MANIFEST_FORMAT, ANSWERS_FORMAT, FORMAT_VERSION = "spgnet-user-study", "spgnet-user-study-answers", 1
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".bmp")
PAGE_TEMPLATE = Path(__file__).with_name("page.html")
PAGE_TOKEN = "__STUDY_JSON__"
SHOW_MISSING = 10  # file names listed per folder in a mismatch error; the rest are counted


class StudyError(InputError):
    """Bad input to build or score; the message names the file, folder or entry."""


# ------------------------------------------------------------------------------------------------ build

def list_images(folder: str | Path) -> list[str]:
    """Sorted image file names (not paths) in a folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise StudyError(f"{folder}: not a folder")
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def _read_image(path: Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)  # (H,W,3) BGR
    if image is None:
        raise StudyError(f"{path}: cannot read as an image")
    return image


def _png(image: np.ndarray, what: str) -> bytes:
    ok, data = cv2.imencode(".png", image)
    if not ok:
        raise StudyError(f"cannot encode {what} as PNG")
    return data.tobytes()


def draw_real_vs_fake(generated: Sequence[str], real: Sequence[str], n_generated: int, n_real: int,
                      practice: int, seed: int) -> list[dict[str, Any]]:
    """Draw n_generated of `generated` and n_real of `real` without replacement and shuffle them together.

    Returns trials in display order: {"id", "practice", "truth", "file"}; the first `practice` are practice.
    Three independent streams of the seed: changing one count does not change the other set's draw.
    """
    for kind, names, n in (("generated", generated, n_generated), ("real", real, n_real)):
        if n < 1:
            raise StudyError(f"the number of {kind} images must be >= 1, got {n}")
        if len(names) < n:
            raise StudyError(f"{len(names)} {kind} images given, {n} needed")
    if not 0 <= practice < n_generated + n_real:
        raise StudyError(f"practice trials must be in 0..{n_generated + n_real - 1}, got {practice}")
    gen_rng, real_rng, order_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3))
    items = [(GENERATED, generated[i]) for i in gen_rng.choice(len(generated), n_generated, replace=False)]
    items += [(REAL, real[i]) for i in real_rng.choice(len(real), n_real, replace=False)]
    order = order_rng.permutation(len(items))
    return [{"id": f"t{k:03d}", "practice": k < practice, "truth": items[i][0], "file": items[i][1]}
            for k, i in enumerate(order)]


def draw_best_of(pairs: Sequence[tuple[str, str]], n_trials: int, n_methods: int, practice: int,
                 seed: int) -> list[dict[str, Any]]:
    """Draw n_trials pairs without replacement and a random candidate order per trial.

    Returns trials in display order: {"id", "practice", "pair": [from, to], "order": [method index per slot]}.
    """
    if n_trials < 1:
        raise StudyError(f"the number of trials must be >= 1, got {n_trials}")
    if len(pairs) < n_trials:
        raise StudyError(f"{len(pairs)} pairs given, {n_trials} needed")
    if not 0 <= practice < n_trials:
        raise StudyError(f"practice trials must be in 0..{n_trials - 1}, got {practice}")
    pair_rng, order_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    picked = pair_rng.choice(len(pairs), n_trials, replace=False)
    orders = np.argsort(order_rng.random((n_trials, n_methods)), axis=1)  # (T, M): a permutation per row
    return [{"id": f"t{k:03d}", "practice": k < practice, "pair": list(pairs[i]), "order": orders[k].tolist()}
            for k, i in enumerate(picked)]


def _study_id(manifest: Mapping[str, Any], images: Mapping[str, bytes]) -> str:
    digest = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode())
    for name in sorted(images):
        digest.update(name.encode() + b"\0" + hashlib.sha256(images[name]).digest())
    return digest.hexdigest()[:16]


def public_study(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What the page gets: no truths, no source file names, no method order."""
    keep = ("id", "practice", "image", "source", "pose", "target", "candidates")
    return {"format": manifest["format"], "version": manifest["version"], "study_id": manifest["study_id"],
            "protocol": manifest["protocol"], "title": manifest["title"], "display_ms": manifest["display_ms"],
            "trials": [{k: t[k] for k in keep if k in t} for t in manifest["trials"]]}


def page_html(manifest: Mapping[str, Any]) -> str:
    """index.html: the page template with the public study inlined as JSON."""
    template = PAGE_TEMPLATE.read_text(encoding="utf-8")
    if template.count(PAGE_TOKEN) != 1:
        raise StudyError(f"{PAGE_TEMPLATE}: expected the placeholder {PAGE_TOKEN} exactly once")
    # "</" inside a <script> block would end it early; "<\/" is the same string to JSON.parse
    data = json.dumps(public_study(manifest), ensure_ascii=False).replace("</", "<\\/")
    return template.replace(PAGE_TOKEN, data)


def _prepare_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StudyError(f"{out}: exists and is not an empty folder; choose another --out (answers already "
                         f"collected in a study folder must not be overwritten)")


def write_study(out: str | Path, manifest: dict[str, Any], images: Mapping[str, bytes]) -> dict[str, Any]:
    """Write images/, manifest.json (with its study id) and index.html into `out`, which must be absent or
    empty. Everything goes to a temporary sibling folder first and is renamed at the end, so a failure
    leaves no half-written study."""
    out = Path(out)
    _prepare_out(out)
    manifest = {**manifest, "study_id": _study_id(manifest, images)}
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        (tmp / "images").mkdir()
        (tmp / "answers").mkdir()  # where the downloaded answers files go (README)
        for name, data in images.items():
            (tmp / name).write_bytes(data)
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
        (tmp / "index.html").write_text(page_html(manifest), encoding="utf-8")
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _header(protocol: str, title: str, display_ms: int, seed: int, practice: int) -> dict[str, Any]:
    if display_ms < 0:
        raise StudyError(f"display time must be >= 0 ms (0: until answered), got {display_ms}")
    return {"format": MANIFEST_FORMAT, "version": FORMAT_VERSION, "protocol": protocol, "title": title,
            "display_ms": display_ms, "seed": seed, "practice": practice}


def build_real_vs_fake(generated_dir: str | Path, real_dir: str | Path, out: str | Path, n_generated: int = 55,
                       n_real: int = 55, practice: int = 10, display_ms: int = 1000, seed: int = 0,
                       name: str | None = None) -> dict[str, Any]:
    """Draw, copy and write a real-vs-fake study (module docstring); returns the manifest written.

    `name` labels the method whose images are the generated ones (default: the folder's name)."""
    generated_dir, real_dir = Path(generated_dir), Path(real_dir)
    # the title is shown to participants: it must not name the method
    manifest = _header(REAL_VS_FAKE, "Real or generated?", display_ms, seed, practice)
    _prepare_out(Path(out))
    generated, real = list_images(generated_dir), list_images(real_dir)
    for kind, folder, names, n in (("generated", generated_dir, generated, n_generated),
                                   ("real", real_dir, real, n_real)):
        if len(names) < n:
            raise StudyError(f"{folder}: {len(names)} {kind} images ({', '.join(IMAGE_EXTS)}), {n} needed "
                             f"(lower the count with --{kind}-count)")
    trials = draw_real_vs_fake(generated, real, n_generated, n_real, practice, seed)
    images: dict[str, bytes] = {}
    sizes: dict[str, set[tuple[int, int]]] = {REAL: set(), GENERATED: set()}
    for t in trials:
        image = _read_image((generated_dir if t["truth"] == GENERATED else real_dir) / t["file"])
        sizes[t["truth"]].add(image.shape[:2])
        t["image"] = f"images/{t['id']}.png"
        images[t["image"]] = _png(image, t["file"])
    if sizes[REAL] != sizes[GENERATED]:
        print(f"warning: real images are {sorted(sizes[REAL])} and generated ones {sorted(sizes[GENERATED])} "
              f"(height, width): participants can tell them apart by shape")
    manifest.update(method=name or generated_dir.name, generated_dir=str(generated_dir), real_dir=str(real_dir),
                    counts={"generated": n_generated, "real": n_real}, trials=trials)
    return write_study(out, manifest, images)


def _missing_outputs(methods: Mapping[str, Path], pairs: Sequence[tuple[str, str]]) -> dict[tuple[str, str], list]:
    """Per pair, the output file of each method ((from-stem)___(to-stem) with any image extension); a
    StudyError naming the missing files of each folder when any is absent."""
    found: dict[tuple[str, str], list[Path]] = {pair: [] for pair in pairs}
    report = []
    for method, folder in methods.items():
        by_stem = {Path(n).stem: folder / n for n in list_images(folder)}
        missing = []
        for pair in pairs:
            want = Path(generated_image_name(*pair)).stem
            if want in by_stem:
                found[pair].append(by_stem[want])
            else:
                missing.append(want + ".png")
        if missing:
            more = f" ... and {len(missing) - SHOW_MISSING} more" if len(missing) > SHOW_MISSING else ""
            report.append(f"{method} ({folder}) lacks {len(missing)} of {len(pairs)}: "
                          f"{', '.join(missing[:SHOW_MISSING])}{more}")
    if report:
        raise StudyError("the pair list does not match the method folders: " + "; ".join(report))
    return found


def build_best_of(methods: Mapping[str, str | Path], pairs_csv: str | Path, images_dir: str | Path,
                  annotations_csv: str | Path, out: str | Path, n_trials: int = 55, practice: int = 0,
                  display_ms: int = 0, seed: int = 0) -> dict[str, Any]:
    """Draw, copy and write a best-of study (module docstring); returns the manifest written.

    methods: name -> folder of that method's outputs, named as test.py writes them (data.datasets.
    generated_image_name). Source and ground truth come from images_dir, the target pose picture is drawn from
    the keypoints of annotations_csv at the ground truth's size (data.visual.pose_picture)."""
    if len(methods) < 2:
        raise StudyError(f"best-of needs at least 2 methods, got {len(methods)}")
    methods = {name: Path(folder) for name, folder in methods.items()}
    images_dir = Path(images_dir)
    manifest = _header(BEST_OF, "Which result is closest to the ground truth?", display_ms, seed, practice)
    _prepare_out(Path(out))
    pairs = read_pairs(pairs_csv)
    if not pairs:
        raise StudyError(f"{pairs_csv}: no pairs")
    outputs = _missing_outputs(methods, pairs)
    keypoints = read_annotations(annotations_csv)
    trials = draw_best_of(pairs, n_trials, len(methods), practice, seed)
    names = list(methods)
    missing = sorted({n for t in trials for n in t["pair"] if not (images_dir / n).is_file()})
    if missing:
        raise StudyError(f"{images_dir}: {len(missing)} source/ground-truth images missing: {', '.join(missing)}")
    no_pose = sorted({t["pair"][1] for t in trials if t["pair"][1] not in keypoints})
    if no_pose:
        raise StudyError(f"{annotations_csv}: no keypoints for target images {', '.join(no_pose)}")
    images: dict[str, bytes] = {}
    for t in trials:
        src, tgt = t["pair"]
        target = _read_image(images_dir / tgt)
        pose = encode_pose(keypoints[tgt], target.shape[0], target.shape[1])  # (30,H,W), the model's encoding
        pictures = {"source": _read_image(images_dir / src), "pose": pose_picture(pose[None])[0][..., ::-1],
                    "target": target}
        for key, image in pictures.items():
            t[key] = f"images/{t['id']}_{key}.png"
            images[t[key]] = _png(np.ascontiguousarray(image), f"the {key} picture of {src},{tgt}")
        t["candidates"], t["methods"] = [], []
        for slot, m in enumerate(t.pop("order")):
            path = f"images/{t['id']}_c{slot}.png"
            images[path] = _png(_read_image(outputs[(src, tgt)][m]), str(outputs[(src, tgt)][m]))
            t["candidates"].append(path)
            t["methods"].append(names[m])
    manifest.update(methods={n: str(p) for n, p in methods.items()}, pairs_csv=str(pairs_csv),
                    images_dir=str(images_dir), annotations=str(annotations_csv), trials=trials)
    return write_study(out, manifest, images)


# ------------------------------------------------------------------------------------------------ score

def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StudyError(f"{path}: {what} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise StudyError(f"{path}: not a JSON {what}: {err}") from None


def load_manifest(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    manifest = _read_json(path, "manifest")
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise StudyError(f"{path}: not a user-study manifest (format {MANIFEST_FORMAT!r} expected)")
    for key in ("study_id", "protocol", "trials"):
        if key not in manifest:
            raise StudyError(f"{path}: manifest lacks {key!r}")
    if manifest["protocol"] not in PROTOCOLS:
        raise StudyError(f"{path}: unknown protocol {manifest['protocol']!r}")
    return manifest


def find_manifest(answers: str | Path) -> Path:
    """The manifest.json of the study an answers file belongs to: beside it, or one folder up (study/answers/)."""
    answers = Path(answers).resolve()
    for folder in (answers.parent, answers.parent.parent):
        if (folder / "manifest.json").is_file():
            return folder / "manifest.json"
    raise StudyError(f"{answers}: no manifest.json beside it or one folder up; name it with --manifest")


@dataclass
class Participant:
    """One answers file, checked against its study."""

    participant: str
    path: Path
    study_id: str
    display_ms: float | None
    # trial id -> answer ("real"/"generated", or a candidate slot), scored trials only; None = skipped
    answers: dict[str, Any] = field(default_factory=dict)
    rt_ms: list[float] = field(default_factory=list)  # response times of the scored trials answered


def load_answers(path: str | Path, manifest: Mapping[str, Any]) -> Participant:
    """Read and check one answers file (the page's download) against its manifest."""
    path = Path(path)
    data = _read_json(path, "answers file")
    if not isinstance(data, dict) or data.get("format") != ANSWERS_FORMAT:
        raise StudyError(f"{path}: not a user-study answers file (format {ANSWERS_FORMAT!r} expected)")
    if data.get("study_id") != manifest["study_id"]:
        raise StudyError(f"{path}: answers from another study: study id {data.get('study_id')!r}, the manifest's "
                         f"is {manifest['study_id']!r}")
    entries = data.get("answers")
    if not isinstance(entries, list):
        raise StudyError(f"{path}: 'answers' must be a list")
    trials = {t["id"]: t for t in manifest["trials"]}
    out = Participant(participant=str(data.get("participant") or path.stem), path=path,
                      study_id=manifest["study_id"], display_ms=data.get("display_ms"))
    seen: set[str] = set()
    for i, entry in enumerate(entries):
        where = f"{path}: answers[{i}]"
        if not isinstance(entry, dict) or "trial" not in entry or "answer" not in entry:
            raise StudyError(f"{where}: expected an object with 'trial' and 'answer', got {entry!r}")
        tid, answer = entry["trial"], entry["answer"]
        if tid not in trials:
            raise StudyError(f"{where}: unknown trial {tid!r}")
        if tid in seen:
            raise StudyError(f"{where}: trial {tid!r} answered twice")
        seen.add(tid)
        trial = trials[tid]
        if manifest["protocol"] == REAL_VS_FAKE:
            valid = answer in (REAL, GENERATED, None)
        else:
            valid = answer is None or (type(answer) is int and 0 <= answer < len(trial["candidates"]))
        if not valid:
            expected = "'real', 'generated'" if manifest["protocol"] == REAL_VS_FAKE else \
                f"a candidate index 0..{len(trial['candidates']) - 1}"
            raise StudyError(f"{where}: answer {answer!r} to trial {tid!r}; expected {expected} or null")
        if trial["practice"]:  # the manifest decides what is practice, not the answers file
            continue
        out.answers[tid] = answer
        rt = entry.get("rt_ms")
        if answer is not None and isinstance(rt, int | float):
            out.rt_ms.append(float(rt))
    return out


def answer_matrix(manifest: Mapping[str, Any], participants: Sequence[Participant]) -> tuple[np.ndarray,
                                                                                              list[dict]]:
    """(P, T) int answers over the T scored trials: real-vs-fake 0 real, 1 generated; best-of the candidate
    slot; -1 skipped. Also returns the scored trials, in manifest order."""
    scored = [t for t in manifest["trials"] if not t["practice"]]
    code = {REAL: 0, GENERATED: 1} if manifest["protocol"] == REAL_VS_FAKE else {}
    matrix = np.array([[-1 if (a := p.answers.get(t["id"])) is None else code.get(a, a) for t in scored]
                       for p in participants], dtype=np.int64).reshape(len(participants), len(scored))
    return matrix, scored


def counts(manifest: Mapping[str, Any], participants: Sequence[Participant]) -> tuple[np.ndarray, np.ndarray,
                                                                                       list[str]]:
    """Per participant, the numerators (P, S) and denominators (P, S) of the study's S statistics, and their
    names: real-vs-fake S = 2 (R2G, G2R); best-of one Jab per method, in the manifest's method order."""
    answers, scored = answer_matrix(manifest, participants)  # (P, T)
    answered = answers >= 0
    if manifest["protocol"] == REAL_VS_FAKE:
        generated = np.array([t["truth"] == GENERATED for t in scored], dtype=bool)  # (T,)
        # R2G: real judged generated (answer 1); G2R: generated judged real (answer 0)
        wrong = answered & (answers != generated.astype(np.int64))  # (P, T)
        hits = np.stack([(wrong & ~generated).sum(1), (wrong & generated).sum(1)], axis=1)  # (P, 2)
        totals = np.stack([(answered & ~generated).sum(1), (answered & generated).sum(1)], axis=1)
        return hits, totals, ["R2G", "G2R"]
    names = list(manifest["methods"])
    slot_method = np.array([[names.index(m) for m in t["methods"]] for t in scored], np.int64).reshape(-1, len(names))
    chosen = np.where(answered, slot_method[np.arange(len(scored)), np.maximum(answers, 0)], -1)  # (P, T) method
    hits = (chosen[..., None] == np.arange(len(names))).sum(1)  # (P, M)
    return hits, np.repeat(answered.sum(1, keepdims=True), len(names), axis=1), names


def _percent(value: float) -> float | None:
    """A ratio as percent, None (null in JSON) where it is undefined."""
    return 100 * float(value) if np.isfinite(value) else None


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0."""
    return np.where(den > 0, num / np.maximum(den, 1), np.nan)


def bootstrap_ci(hits: np.ndarray, totals: np.ndarray, n_boot: int = 10000, level: float = 0.95,
                 seed: int = 0) -> np.ndarray:
    """Percentile bootstrap over participants of the pooled ratio sum(hits) / sum(totals), per statistic.

    hits, totals: (P, S) per participant. Returns (S, 2) [low, high]; NaN where no resample has a non-zero
    denominator. All statistics share the same resamples of participants."""
    hits, totals = np.asarray(hits, np.float64), np.asarray(totals, np.float64)
    rng = np.random.default_rng(seed)
    draw = rng.integers(0, hits.shape[0], size=(n_boot, hits.shape[0]))  # (B, P) participant indices
    num, den = hits[draw].sum(axis=1), totals[draw].sum(axis=1)  # (B, S)
    ratio = _ratio(num, den)
    alpha = (1 - level) / 2
    out = np.full((hits.shape[1], 2), np.nan)
    some = np.isfinite(ratio).any(axis=0)  # (S,) statistics with at least one usable resample
    if some.any():
        out[some] = np.nanquantile(ratio[:, some], [alpha, 1 - alpha], axis=0).T
    return out


def score_study(manifest: Mapping[str, Any], participants: Sequence[Participant], n_boot: int = 10000,
                level: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Per participant and pooled values (percent) of one study, with the bootstrap interval of the pooled."""
    hits, totals, names = counts(manifest, participants)
    ci = bootstrap_ci(hits, totals, n_boot=n_boot, level=level, seed=seed)
    pooled = _ratio(hits.sum(0), totals.sum(0))
    n_scored = sum(not t["practice"] for t in manifest["trials"])
    rows = []
    for i, p in enumerate(participants):
        answered = sum(a is not None for a in p.answers.values())
        rows.append({"participant": p.participant, "file": str(p.path), "answered": answered,
                     "skipped": n_scored - answered, "display_ms": p.display_ms,
                     "median_rt_ms": float(np.median(p.rt_ms)) if p.rt_ms else None,
                     "values": {n: _percent(v) for n, v in zip(names, _ratio(hits[i], totals[i]))},
                     "counts": {n: [int(h), int(t)] for n, h, t in zip(names, hits[i], totals[i])}})
    return {"study_id": manifest["study_id"], "protocol": manifest["protocol"], "method": manifest.get("method"),
            "scored_trials": n_scored, "manifest_display_ms": manifest.get("display_ms"),
            "statistics": names, "participants": rows,
            "pooled": {n: {"value": _percent(pooled[s]), "ci": [_percent(c) for c in ci[s]],
                           "counts": [int(hits[:, s].sum()), int(totals[:, s].sum())]} for s, n in enumerate(names)},
            "bootstrap": {"resamples": n_boot, "level": level, "seed": seed, "over": "participants"}}


def score(answer_files: Sequence[str | Path], manifests: Sequence[str | Path] = (), n_boot: int = 10000,
          level: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
    """Score answers files, grouped by study. Without `manifests`, each file's manifest is found beside it or
    one folder up (find_manifest); with them, every file must belong to one of them (by study id)."""
    if not answer_files:
        raise StudyError("no answers files given")
    given = {}
    for path in manifests:
        m = load_manifest(path)
        given[m["study_id"]] = m
    studies: dict[str, tuple[dict[str, Any], list[Participant]]] = {}
    for path in answer_files:
        path = Path(path)
        if given:
            data = _read_json(path, "answers file")
            sid = data.get("study_id") if isinstance(data, dict) else None
            if sid not in given:
                raise StudyError(f"{path}: answers from another study: study id {sid!r}, the manifests given have "
                                 f"{', '.join(sorted(given))}")
            manifest = given[sid]
        else:
            mpath = find_manifest(path)
            manifest = load_manifest(mpath)
        entry = studies.setdefault(manifest["study_id"], (manifest, []))
        p = load_answers(path, manifest)
        clash = [q.path for q in entry[1] if q.participant == p.participant]
        if clash:
            raise StudyError(f"{path}: participant {p.participant!r} already answered this study in {clash[0]}")
        entry[1].append(p)
    results = [score_study(m, ps, n_boot=n_boot, level=level, seed=seed) for m, ps in studies.values()]
    methods_seen: dict[tuple[str, str], str] = {}
    for r in results:
        for method in ([r["method"]] if r["protocol"] == REAL_VS_FAKE else r["statistics"]):
            key = (r["protocol"], method)
            if key in methods_seen:
                raise StudyError(f"two {r['protocol']} studies ({methods_seen[key]}, {r['study_id']}) both score "
                                 f"method {method!r}; score them separately")
            methods_seen[key] = r["study_id"]
    return results


def _cell(stat: Mapping[str, Any] | None) -> str:
    """'19.47 [15.10, 24.02]'; '-' where the study was not run, 'n/a' where nothing was answered."""
    if stat is None:
        return "-"
    if stat["value"] is None:
        return "n/a"
    lo, hi = stat["ci"]
    return f"{stat['value']:.2f} [{lo:.2f}, {hi:.2f}]"


def _display(ms: int | None) -> str:
    return "until answered" if ms == 0 else f"{ms} ms"


def markdown(results: Sequence[Mapping[str, Any]]) -> str:
    """The Table 2 (right) shaped summary, a line per study, and a per-participant table per study."""
    rows: dict[str, dict[str, Any]] = {}
    for r in results:
        if r["protocol"] == REAL_VS_FAKE:
            rows.setdefault(r["method"], {}).update(r2g=r["pooled"]["R2G"], g2r=r["pooled"]["G2R"])
        else:
            for m in r["statistics"]:
                rows.setdefault(m, {})["jab"] = r["pooled"][m]
    level = int(round(100 * results[0]["bootstrap"]["level"]))
    lines = [f"User study, percent, pooled over participants [{level}% bootstrap interval over participants]",
             "", "| Method | R2G ↑ | G2R ↑ | Jab ↑ |", "|---|---:|---:|---:|"]
    lines += [f"| {m} | {_cell(v.get('r2g'))} | {_cell(v.get('g2r'))} | {_cell(v.get('jab'))} |"
              for m, v in rows.items()]
    for r in results:
        b = r["bootstrap"]
        what = f"method {r['method']}" if r["protocol"] == REAL_VS_FAKE else f"methods {', '.join(r['statistics'])}"
        lines += ["", f"Study {r['study_id']} ({r['protocol']}, {what}): {len(r['participants'])} participants, "
                  f"{r['scored_trials']} scored trials each (practice excluded), "
                  f"display {_display(r['manifest_display_ms'])}; "
                  f"bootstrap {b['resamples']} resamples, seed {b['seed']}", "",
                  "| Participant | Answered | Skipped | Median RT (ms) | " + " | ".join(r["statistics"]) + " |",
                  "|---|---:|---:|---:|" + "---:|" * len(r["statistics"])]
        for p in r["participants"]:
            rt = "-" if p["median_rt_ms"] is None else f"{p['median_rt_ms']:.0f}"
            vals = " | ".join("n/a" if p["values"][s] is None else f"{p['values'][s]:.2f}"
                              for s in r["statistics"])
            lines.append(f"| {p['participant']} | {p['answered']} | {p['skipped']} | {rt} | {vals} |")
        off = [p["participant"] for p in r["participants"]
               if p["display_ms"] is not None and p["display_ms"] != r["manifest_display_ms"]]
        if off:
            lines.append(f"\nNote: {', '.join(off)} ran with another display time than the manifest's "
                         f"{r['manifest_display_ms']} ms (a display_ms URL parameter).")
    return "\n".join(lines)

