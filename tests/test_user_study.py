"""The user study tool (paper sec. 4.3): scoring against hand-worked answer sets, the bootstrap, building study
folders and their errors, and the real page driven in headless Chromium."""

from __future__ import annotations

import contextlib
import functools
import http.server
import importlib.util
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from data.annotations import read_annotations, write_annotations, write_pairs
from data.datasets import generated_image_name
from scripts import user_study
from userstudy import study as us
from utils.cli import run_main

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "user_study.py"


def run_script(*args: str) -> subprocess.CompletedProcess:
    """scripts/user_study.py in this process (a subprocess would pay torch's import each time)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            run_main(functools.partial(user_study.main, [str(a) for a in args]))  # the script's own handler
            code = 0
        except SystemExit as exit_:  # run_main's exit 2, or argparse's
            code = exit_.code
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def run_subprocess(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The script as a user runs it, from another folder (it must find the repository's packages itself)."""
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, cwd=cwd)


def assert_clean_error(proc: subprocess.CompletedProcess, *fragments: str) -> None:
    """Exit 2, one 'error:' line naming the fragments, no traceback."""
    assert proc.returncode == 2, proc.stderr + proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


# ------------------------------------------------------------------------------- scoring, hand-worked

# t000-t001 practice (real, generated); scored t002-t006 real, t007-t011 generated
RVF_TRUTH = ["real", "generated"] + ["real"] * 5 + ["generated"] * 5
# best-of: t000 practice; the method shown in each candidate slot
BO_SLOTS = [["Ours", "PATN", "GFLA"], ["PATN", "Ours", "GFLA"], ["GFLA", "PATN", "Ours"], ["Ours", "GFLA", "PATN"],
            ["PATN", "GFLA", "Ours"]]


def write_study_by_hand(folder: Path, manifest: dict) -> None:
    (folder / "answers").mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps(manifest))


def answers_file(path: Path, study_id: str, participant: str, answers: list[tuple[str, object]]) -> Path:
    path.write_text(json.dumps({"format": us.ANSWERS_FORMAT, "version": 1, "study_id": study_id,
                                "participant": participant, "display_ms": 1000,
                                "answers": [{"trial": t, "answer": a, "rt_ms": 400 + 10 * i,
                                             "practice": t in ("t000", "t001")}
                                            for i, (t, a) in enumerate(answers)]}))
    return path


@pytest.fixture
def hand_studies(tmp_path):
    rvf = {"format": us.MANIFEST_FORMAT, "version": 1, "study_id": "rvf0000000000001", "protocol": "real-vs-fake",
           "method": "Ours", "display_ms": 1000,
           "trials": [{"id": f"t{i:03d}", "practice": i < 2, "truth": truth, "image": f"images/t{i:03d}.png"}
                      for i, truth in enumerate(RVF_TRUTH)]}
    bo = {"format": us.MANIFEST_FORMAT, "version": 1, "study_id": "bo00000000000001", "protocol": "best-of",
          "methods": {"Ours": "o", "PATN": "p", "GFLA": "g"}, "display_ms": 0,
          "trials": [{"id": f"t{i:03d}", "practice": i < 1, "methods": slots,
                      "candidates": [f"images/t{i:03d}_c{k}.png" for k in range(3)]}
                     for i, slots in enumerate(BO_SLOTS)]}
    write_study_by_hand(tmp_path / "rvf", rvf)
    write_study_by_hand(tmp_path / "bo", bo)
    g, r = "generated", "real"
    # Alice answers everything. Practice: the real t000 called generated, the generated t001 called real; counted,
    # they would change both figures. Scored real t002-t006: G R R G R -> R2G 2/5; generated t007-t011:
    # R G G G G -> G2R 1/5.
    alice = answers_file(tmp_path / "rvf" / "answers" / "alice.json", rvf["study_id"], "alice",
                         [("t000", g), ("t001", r), ("t002", g), ("t003", r), ("t004", r), ("t005", g), ("t006", r),
                          ("t007", r), ("t008", g), ("t009", g), ("t010", g), ("t011", g)])
    # Bob skips: t004 answered null, t005, t006, t010, t011 absent. Real answered t002, t003: both called
    # generated -> R2G 2/2; generated answered t007-t009: R R G -> G2R 2/3. 5 of 10 scored trials answered.
    bob = answers_file(tmp_path / "rvf" / "answers" / "bob.json", rvf["study_id"], "bob",
                       [("t000", g), ("t002", g), ("t003", g), ("t004", None), ("t007", r), ("t008", r), ("t009", g)])
    # best-of, Xena: practice t000 slot 0 (Ours, excluded); t001 slot 1 Ours, t002 slot 2 Ours, t003 slot 1 GFLA,
    # t004 slot 0 PATN -> Ours 2/4, PATN 1/4, GFLA 1/4.
    xena = answers_file(tmp_path / "bo" / "answers" / "xena.json", bo["study_id"], "xena",
                        [("t000", 0), ("t001", 1), ("t002", 2), ("t003", 1), ("t004", 0)])
    # Yuri: t001 slot 0 PATN, t002 skipped (null), t003 slot 0 Ours, t004 absent -> PATN 1/2, Ours 1/2, GFLA 0/2.
    yuri = answers_file(tmp_path / "bo" / "answers" / "yuri.json", bo["study_id"], "yuri",
                        [("t001", 0), ("t002", None), ("t003", 0)])
    return {"rvf": [alice, bob], "bo": [xena, yuri], "root": tmp_path}


def test_score_real_vs_fake_by_hand_with_skips_and_practice_excluded(hand_studies):
    [r] = us.score(hand_studies["rvf"], n_boot=4000, seed=3)
    alice, bob = r["participants"]
    assert (alice["answered"], alice["skipped"], bob["answered"], bob["skipped"]) == (10, 0, 5, 5)
    assert alice["values"] == pytest.approx({"R2G": 40.0, "G2R": 20.0})
    assert bob["values"] == pytest.approx({"R2G": 100.0, "G2R": 200 / 3})
    assert alice["median_rt_ms"] == pytest.approx(465.0)  # scored rt 420, 430, ..., 510 ms: (460 + 470) / 2
    # pooled = summed numerators over summed denominators: R2G (2 + 2) / (5 + 2), G2R (1 + 2) / (5 + 3)
    assert r["pooled"]["R2G"]["value"] == pytest.approx(400 / 7)
    assert r["pooled"]["G2R"]["value"] == pytest.approx(37.5)
    assert r["pooled"]["R2G"]["counts"] == [4, 7] and r["pooled"]["G2R"]["counts"] == [3, 8]
    # Two participants: a resample is (alice, alice) with probability 1/4, (bob, bob) 1/4, mixed 1/2, so the
    # 2.5% and 97.5% quantiles are alice's and bob's own values.
    assert r["pooled"]["R2G"]["ci"] == pytest.approx([40.0, 100.0])
    assert r["pooled"]["G2R"]["ci"] == pytest.approx([20.0, 200 / 3])


def test_score_best_of_by_hand_and_the_combined_table(hand_studies):
    results = us.score(hand_studies["rvf"] + hand_studies["bo"], n_boot=4000, seed=0)
    bo = results[1]
    xena, yuri = bo["participants"]
    assert xena["values"] == pytest.approx({"Ours": 50.0, "PATN": 25.0, "GFLA": 25.0})
    assert yuri["values"] == pytest.approx({"Ours": 50.0, "PATN": 50.0, "GFLA": 0.0})
    assert (xena["answered"], yuri["answered"], yuri["skipped"]) == (4, 2, 2)
    # pooled over the 6 answered trials: Ours 3, PATN 2, GFLA 1
    assert {m: bo["pooled"][m]["value"] for m in ("Ours", "PATN", "GFLA")} == pytest.approx(
        {"Ours": 50.0, "PATN": 100 / 3, "GFLA": 100 / 6})
    assert bo["pooled"]["GFLA"]["ci"] == pytest.approx([0.0, 25.0])
    table = us.markdown(results)
    assert "| Method | R2G ↑ | G2R ↑ | Jab ↑ |" in table
    assert "| Ours | 57.14 [40.00, 100.00] | 37.50 [20.00, 66.67] | 50.00 [50.00, 50.00] |" in table
    assert "| PATN | - | - | 33.33 [25.00, 50.00] |" in table
    assert "| bob | 5 | 5 |" in table


def test_score_cli_finds_the_manifest_and_writes_json(hand_studies, tmp_path):
    out = tmp_path / "figures.json"
    proc = run_subprocess("score", *hand_studies["rvf"], "--bootstrap", "500", "--json", out, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "| Ours | 57.14 [40.00, 100.00] | 37.50 [20.00, 66.67] | - |" in proc.stdout
    assert json.loads(out.read_text())[0]["pooled"]["G2R"]["value"] == pytest.approx(37.5)


def test_score_errors(hand_studies, tmp_path):
    rvf = hand_studies["root"] / "rvf"
    other = answers_file(rvf / "answers" / "other.json", "ffffffffffffffff", "carol", [("t002", "real")])
    assert_clean_error(run_script("score", other), "other.json", "another study", "ffffffffffffffff",
                       "rvf0000000000001")
    assert_clean_error(run_script("score", other, "--manifest", rvf / "manifest.json"), "another study")
    bad = rvf / "answers" / "bad.json"
    bad.write_text('{"format": "spgnet-user-study-answers", "answers": [')
    assert_clean_error(run_script("score", bad), "bad.json", "not a JSON")
    for entries, fragment in (([{"trial": "t999", "answer": "real"}], "unknown trial 't999'"),
                              ([{"trial": "t002", "answer": "maybe"}], "answer 'maybe'"),
                              ([{"trial": "t002"}], "answers[0]"),
                              ([{"trial": "t002", "answer": "real"}] * 2, "answered twice")):
        bad.write_text(json.dumps({"format": us.ANSWERS_FORMAT, "study_id": "rvf0000000000001", "answers": entries}))
        assert_clean_error(run_script("score", bad), "bad.json", fragment)
    lonely = tmp_path / "lonely.json"
    lonely.write_text("{}")
    assert_clean_error(run_script("score", lonely), "no manifest.json")


def test_help(capsys):
    for argv in (["--help"], ["build", "--help"], ["score", "--help"]):
        with pytest.raises(SystemExit) as e:
            user_study.main(argv)
        assert e.value.code == 0
    out = capsys.readouterr().out
    assert user_study.__doc__.splitlines()[0] in out and "--generated-count" in out and "--bootstrap" in out


# ------------------------------------------------------------------------------- bootstrap

def test_bootstrap_contains_the_pooled_value_and_narrows_with_participants():
    hits = np.array([2, 4, 5, 6, 8, 9, 10, 12, 14, 15])  # of 20 trials each
    totals = np.full(10, 20)
    ci10 = us.bootstrap_ci(hits[:, None], totals[:, None], n_boot=20000, seed=1)[0]
    pooled = hits.sum() / totals.sum()  # 85 / 200
    assert ci10[0] < pooled < ci10[1]
    # Equal totals: the pooled ratio is the mean of the participants' p_i, whose bootstrap sd is
    # pstdev(p) / sqrt(P); a 95% normal interval is 2 * 1.96 times that wide.
    spread = statistics.pstdev([h / 20 for h in hits.tolist()])
    assert ci10[1] - ci10[0] == pytest.approx(2 * 1.96 * spread / 10 ** 0.5, rel=0.1)
    ci40 = us.bootstrap_ci(np.tile(hits, 4)[:, None], np.tile(totals, 4)[:, None], n_boot=20000, seed=1)[0]
    assert ci40[0] < pooled < ci40[1]
    assert ci40[1] - ci40[0] == pytest.approx(2 * 1.96 * spread / 40 ** 0.5, rel=0.1)  # half the width
    # seeded: the same seed gives the same interval; identical participants give a zero-width one
    np.testing.assert_array_equal(us.bootstrap_ci(hits[:, None], totals[:, None], n_boot=20000, seed=1)[0], ci10)
    assert us.bootstrap_ci(np.full((5, 1), 3), np.full((5, 1), 10), n_boot=100).tolist() == [[0.3, 0.3]]
    # a statistic no participant answered has no interval
    assert np.isnan(us.bootstrap_ci(np.zeros((3, 1)), np.zeros((3, 1)), n_boot=50)).all()


# ------------------------------------------------------------------------------- build

def write_images(folder: Path, n: int, prefix: str, ext: str, seed: int, size=(40, 28)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        path = folder / f"{prefix}{i:02d}{ext}"
        assert cv2.imwrite(str(path), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
        paths.append(path)
    return paths


@pytest.fixture
def image_folders(tmp_path):
    write_images(tmp_path / "gen", 9, "gen", ".png", 1)
    write_images(tmp_path / "real", 8, "real", ".jpg", 2)
    return tmp_path


def build_rvf(root: Path, out: str, seed: int = 0, **kw) -> dict:
    return us.build_real_vs_fake(root / "gen", root / "real", root / out, n_generated=kw.pop("n_generated", 5),
                                 n_real=kw.pop("n_real", 4), practice=kw.pop("practice", 2), seed=seed, **kw)


def test_build_real_vs_fake_counts_manifest_and_page(image_folders):
    m = build_rvf(image_folders, "study", display_ms=700, name="SecretNet")
    out = image_folders / "study"
    trials = m["trials"]
    assert [t["truth"] for t in trials].count("generated") == 5 and [t["truth"] for t in trials].count("real") == 4
    assert [t["practice"] for t in trials] == [True, True] + [False] * 7
    gen_files = [t["file"] for t in trials if t["truth"] == "generated"]
    assert len(set(gen_files)) == 5 and all(f.startswith("gen") for f in gen_files)  # drawn without replacement
    assert all(t["file"].startswith("real") for t in trials if t["truth"] == "real")
    on_disk = json.loads((out / "manifest.json").read_text())
    assert on_disk == m and m["display_ms"] == 700 and m["method"] == "SecretNet" and len(m["study_id"]) == 16
    for t in trials:  # every picture re-encoded as PNG under a neutral name, pixels kept
        folder = image_folders / ("gen" if t["truth"] == "generated" else "real")
        assert t["image"] == f"images/{t['id']}.png"
        np.testing.assert_array_equal(cv2.imread(str(out / t["image"])), cv2.imread(str(folder / t["file"])))
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(f"{t['id']}.png" for t in trials)
    page = (out / "index.html").read_text()
    assert m["study_id"] in page and "__STUDY_JSON__" not in page
    # nothing tells the answer or the method: no truths, no source names, no method name
    assert '"truth"' not in page and "gen0" not in page and "real0" not in page and "SecretNet" not in page
    assert "http://" not in page and "https://" not in page  # no network
    assert (out / "answers").is_dir()


def test_build_is_reproducible_from_its_seed(image_folders):
    a = build_rvf(image_folders, "a", seed=5)
    b = build_rvf(image_folders, "b", seed=5)
    c = build_rvf(image_folders, "c", seed=6)
    assert a["trials"] == b["trials"] and a["study_id"] == b["study_id"]
    assert (image_folders / "a" / "index.html").read_text() == (image_folders / "b" / "index.html").read_text()
    assert [t["file"] for t in c["trials"]] != [t["file"] for t in a["trials"]] and c["study_id"] != a["study_id"]
    # the generated draw has its own stream: another real count leaves it alone
    d = build_rvf(image_folders, "d", seed=5, n_real=3)
    assert sorted(t["file"] for t in d["trials"] if t["truth"] == "generated") == \
        sorted(t["file"] for t in a["trials"] if t["truth"] == "generated")


def test_build_real_vs_fake_errors(image_folders):
    root = image_folders
    proc = run_subprocess("build", "--protocol", "real-vs-fake", "--generated", root / "gen", "--real",
                          root / "real", "--out", root / "s1", cwd=root)  # the paper's default of 55 + 55
    assert_clean_error(proc, str(root / "gen"), "9 generated images", "55 needed")
    assert not (root / "s1").exists()  # nothing written
    proc = run_script("build", "--protocol", "real-vs-fake", "--generated", root / "gen", "--real", root / "real",
                      "--out", root / "s1", "--generated-count", "5", "--real-count", "9")
    assert_clean_error(proc, str(root / "real"), "8 real images", "9 needed")
    proc = run_script("build", "--protocol", "real-vs-fake", "--generated", root / "gen", "--real", root / "real",
                      "--out", root / "s1", "--generated-count", "5", "--real-count", "5", "--practice", "2")
    assert proc.returncode == 0 and "2 practice + 8 scored trials, 1000 ms each" in proc.stdout, proc.stderr
    (root / "s1" / "answers" / "kept.json").write_text("{}")
    proc = run_script("build", "--protocol", "real-vs-fake", "--generated", root / "gen", "--real", root / "real",
                      "--out", root / "s1", "--generated-count", "5", "--real-count", "5")
    assert_clean_error(proc, str(root / "s1"), "not an empty folder")
    assert (root / "s1" / "answers" / "kept.json").read_text() == "{}"
    (root / "real" / "real03.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(us.StudyError, match="cannot read"):
        build_rvf(root, "s2", n_real=8)


@pytest.fixture
def best_of_inputs(tmp_path):
    """6 images of 40x28, keypoints, 8 pairs, and three method folders with an output for every pair."""
    names = [p.name for p in write_images(tmp_path / "test", 6, "person", ".jpg", 3)]
    rng = np.random.default_rng(4)
    keypoints = {n: np.stack([rng.integers(2, 38, 18), rng.integers(2, 26, 18)], 1) for n in names}
    write_annotations(tmp_path / "ann.csv", keypoints)
    pairs = [(a, b) for a in names for b in names if a != b][:8]
    write_pairs(tmp_path / "pairs.csv", pairs)
    for k, method in enumerate(("ours", "patn", "gfla")):
        (tmp_path / method).mkdir()
        for a, b in pairs:
            value = np.full((40, 28, 3), 60 * k + 10, np.uint8)  # the method is readable from the pixels
            assert cv2.imwrite(str(tmp_path / method / generated_image_name(a, b)), value)
    return tmp_path


def best_of_args(root: Path, out: str, *extra: str, pairs: str = "pairs.csv") -> list:
    return ["build", "--protocol", "best-of", "--methods", f"Ours={root / 'ours'}", f"PATN={root / 'patn'}",
            f"GFLA={root / 'gfla'}", "--pairs", root / pairs, "--images", root / "test", "--annotations",
            root / "ann.csv", "--out", root / out, *extra]


def test_build_best_of_candidates_match_their_methods(best_of_inputs):
    root = best_of_inputs
    proc = run_script(*best_of_args(root, "bo", "--trials", "5", "--practice", "1", "--seed", "2"))
    assert proc.returncode == 0 and "1 practice + 4 scored trials, each until answered" in proc.stdout, proc.stderr
    m = json.loads((root / "bo" / "manifest.json").read_text())
    assert list(m["methods"]) == ["Ours", "PATN", "GFLA"] and len(m["trials"]) == 5
    assert len({tuple(t["pair"]) for t in m["trials"]}) == 5
    value = {"Ours": 10, "PATN": 70, "GFLA": 130}
    for t in m["trials"]:
        assert sorted(t["methods"]) == ["GFLA", "Ours", "PATN"]
        for path, method in zip(t["candidates"], t["methods"]):  # the manifest's slot -> method is the truth
            assert (cv2.imread(str(root / "bo" / path)) == value[method]).all()
        src, tgt = t["pair"]
        np.testing.assert_array_equal(cv2.imread(str(root / "bo" / t["source"])), cv2.imread(str(root / "test" / src)))
        np.testing.assert_array_equal(cv2.imread(str(root / "bo" / t["target"])), cv2.imread(str(root / "test" / tgt)))
        assert cv2.imread(str(root / "bo" / t["pose"])).shape == (40, 28, 3)  # drawn at the target's size
    orders = [tuple(t["methods"]) for t in m["trials"]]
    assert len(set(orders)) > 1  # the order is drawn per trial
    page = (root / "bo" / "index.html").read_text()
    assert "PATN" not in page and "patn" not in page and "person0" not in page  # the page does not name methods


def test_best_of_pose_picture_marks_the_target_joints(best_of_inputs):
    root = best_of_inputs
    m = us.build_best_of({"A": root / "ours", "B": root / "patn"}, root / "pairs.csv", root / "test",
                         root / "ann.csv", root / "bo", n_trials=2)
    keypoints = read_annotations(root / "ann.csv")
    for t in m["trials"]:
        pose = cv2.imread(str(root / "bo" / t["pose"]))  # BGR
        for y, x in keypoints[t["pair"][1]]:  # a joint centre is full red (255) over the grey limbs
            assert pose[y, x, 2] == 255, (y, x)


def test_build_best_of_errors(best_of_inputs):
    root = best_of_inputs
    a, b = "person00.jpg", "person02.jpg"
    (root / "patn" / generated_image_name(a, b)).unlink()
    (root / "gfla" / generated_image_name(a, b)).unlink()
    proc = run_script(*best_of_args(root, "bo"))
    assert_clean_error(proc, "does not match the method folders", "PATN", "GFLA", "person00___person02.png")
    assert not (root / "bo").exists()
    write_pairs(root / "few.csv", [(a, "person01.jpg")])
    assert_clean_error(run_script(*best_of_args(root, "bo", pairs="few.csv")), "1 pairs given, 55 needed")
    (root / "pairs.csv").write_text("from,to\nperson00.jpg\n")
    assert_clean_error(run_script(*best_of_args(root, "bo")), "pairs.csv:2")
    proc = run_script("build", "--protocol", "best-of", "--methods", f"Ours={root / 'ours'}", "--pairs",
                      root / "few.csv", "--images", root / "test", "--annotations", root / "ann.csv", "--out",
                      root / "bo")
    assert_clean_error(proc, "at least 2 methods")


# ------------------------------------------------------------------------------- the page in headless Chromium

def browser_paths() -> tuple[str, str]:
    """(chromium, chromedriver); skips locally, fails under CI, when either or selenium is missing."""
    chromium = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    missing = [what for what, ok in (("chromium", chromium), ("chromedriver (Debian: chromium-driver)", driver),
                                     ("the selenium package", importlib.util.find_spec("selenium"))) if not ok]
    if missing:
        reason = f"the headless browser test needs {', '.join(missing)}"
        if os.environ.get("CI"):
            pytest.fail(reason + "; .ci/run installs them")
        pytest.skip(reason + " (apt-get install chromium chromium-driver; pip install selenium)")
    return chromium, driver


def test_browser_test_fails_under_ci_and_skips_elsewhere_without_chromium(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="needs chromium, chromedriver"):
        browser_paths()
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="needs chromium, chromedriver"):
        browser_paths()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium, chromedriver = browser_paths()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1200,900"):
        options.add_argument(arg)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    driver = webdriver.Chrome(service=Service(chromedriver), options=options)
    driver.downloads = downloads
    yield driver
    driver.quit()


class Page:
    """The study page as the test sees it: the body's data-phase / data-trial / data-ready attributes."""

    def __init__(self, driver):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.ui import WebDriverWait

        self.driver, self.by = driver, By
        self.wait = WebDriverWait(driver, 20, poll_frequency=0.02)

    def attr(self, name: str) -> str | None:
        return self.driver.find_element(self.by.TAG_NAME, "body").get_attribute(name)

    def settle(self) -> str:
        """Wait for a screen that takes input; returns its phase."""
        def ready(_):
            phase = self.attr("data-phase")
            return phase in ("start", "break", "done") or (phase == "trial" and self.attr("data-ready") == "1")
        self.wait.until(ready)
        return self.attr("data-phase")

    def element(self, id_: str):
        return self.driver.find_element(self.by.ID, id_)

    def keys(self, text: str) -> None:
        self.driver.find_element(self.by.TAG_NAME, "body").send_keys(text)

    def stored(self, study_id: str) -> list[dict]:
        stored = self.driver.execute_script(f"return localStorage.getItem('user-study:{study_id}')")
        return json.loads(stored)["answers"]


def drive(driver, url: str, study_id: str, participant: str, respond, reload_after: int) -> Path:
    """Run a study to its end: respond(page, trial id, trial index) answers each trial; the page is reloaded
    once, mid-study, after `reload_after` answers. Returns the downloaded answers file."""
    for old in driver.downloads.iterdir():
        old.unlink()
    driver.get(url)
    page = Page(driver)
    assert page.settle() == "start"
    page.element("participant").send_keys(participant)
    page.keys("\n")
    answered, reloaded, breaks = 0, False, 0
    while (phase := page.settle()) != "done":
        if phase == "break":
            breaks += 1
            page.keys(" ")
            page.wait.until(lambda _: page.attr("data-phase") != "break")
            continue
        if phase == "start":  # after the reload: the page offers to resume
            assert f"{answered} of" in page.element("resume").text
            page.element("start-button").click()
            continue
        if answered == reload_after and not reloaded:
            before = page.stored(study_id)
            driver.refresh()
            reloaded = True
            assert page.settle() == "start" and page.stored(study_id) == before and len(before) == answered
            continue
        trial, index = page.attr("data-trial"), int(page.attr("data-index"))
        respond(page, trial, index)
        page.wait.until(lambda _, shown=trial: page.attr("data-trial") != shown or page.attr("data-phase") != "trial")
        answered += 1
    assert reloaded and breaks == 1
    page.element("download-button").click()
    page.wait.until(lambda _: any(p.suffix == ".json" for p in driver.downloads.iterdir()))
    [path] = list(driver.downloads.glob("*.json"))
    return path


def serve(folder: Path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_page_real_vs_fake_in_headless_chromium(browser, image_folders):
    m = build_rvf(image_folders, "study", n_generated=6, n_real=6, practice=2)
    study = image_folders / "study"
    truth = {t["id"]: t["truth"] for t in m["trials"]}

    def scripted(index: int) -> str:
        return "generated" if index % 3 == 0 else "real"

    def respond(page, trial: str, index: int) -> None:
        if index % 2:  # odd trials by key, even ones by button
            page.keys("g" if scripted(index) == "generated" else "r")
        else:
            page.element(f"answer-{scripted(index)}").click()

    url = (study / "index.html").as_uri() + "?display_ms=20"
    path = drive(browser, url, m["study_id"], "alice", respond, reload_after=5)
    data = json.loads(path.read_text())
    assert data["study_id"] == m["study_id"] and data["participant"] == "alice" and data["display_ms"] == 20
    assert [a["trial"] for a in data["answers"]] == [t["id"] for t in m["trials"]]
    assert [a["answer"] for a in data["answers"]] == [scripted(i) for i in range(12)]
    assert [a["practice"] for a in data["answers"]] == [True, True] + [False] * 10
    assert all(a["rt_ms"] > 0 for a in data["answers"])
    shutil.copy(path, study / "answers" / path.name)
    # expected figures from the scripted answers and the manifest's truths, scored trials only
    scored = [(truth[t["id"]], scripted(i)) for i, t in enumerate(m["trials"]) if not t["practice"]]
    r2g = 100 * sum(a == "generated" for tr, a in scored if tr == "real") / sum(tr == "real" for tr, _ in scored)
    g2r = 100 * sum(a == "real" for tr, a in scored if tr == "generated") / sum(tr == "generated" for tr, _ in scored)
    figures = image_folders / "figures.json"
    proc = run_script("score", study / "answers" / path.name, "--json", figures)
    assert proc.returncode == 0, proc.stderr
    pooled = json.loads(figures.read_text())[0]["pooled"]
    assert pooled["R2G"]["value"] == pytest.approx(r2g) and pooled["G2R"]["value"] == pytest.approx(g2r)
    assert f"| gen | {r2g:.2f} [{r2g:.2f}, {r2g:.2f}] | {g2r:.2f} [{g2r:.2f}, {g2r:.2f}] | - |" in proc.stdout


def test_page_best_of_over_http_in_headless_chromium(browser, best_of_inputs):
    root = best_of_inputs
    m = us.build_best_of({"Ours": root / "ours", "PATN": root / "patn", "GFLA": root / "gfla"}, root / "pairs.csv",
                         root / "test", root / "ann.csv", root / "bo", n_trials=6, practice=2, display_ms=1000)

    def respond(page, trial: str, index: int) -> None:
        slot = index % 3
        if index % 2:
            page.keys(str(slot + 1))
        else:
            page.driver.find_element(page.by.CSS_SELECTOR, f'.candidate[data-slot="{slot}"]').click()

    server = serve(root / "bo")
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/index.html?display_ms=30"
        path = drive(browser, url, m["study_id"], "bea", respond, reload_after=3)
    finally:
        server.shutdown()
    data = json.loads(path.read_text())
    assert [a["answer"] for a in data["answers"]] == [i % 3 for i in range(6)]
    shutil.copy(path, root / "bo" / "answers" / path.name)
    picks = [t["methods"][i % 3] for i, t in enumerate(m["trials"]) if not t["practice"]]  # 4 scored trials
    proc = run_script("score", root / "bo" / "answers" / path.name)
    assert proc.returncode == 0, proc.stderr
    for method in ("Ours", "PATN", "GFLA"):
        jab = 100 * picks.count(method) / 4
        assert f"| {method} | - | - | {jab:.2f} [{jab:.2f}, {jab:.2f}] |" in proc.stdout
