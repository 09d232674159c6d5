"""Keypoint and pair CSVs in the release's exact spelling, and errors that name the file and the line."""

from __future__ import annotations

import re

import numpy as np
import pytest

from data.annotations import (
    ANNOTATION_HEADER,
    AnnotationError,
    check_range,
    read_annotations,
    read_pairs,
    write_annotations,
    write_pairs,
)

# Hand-written in the release's format (the PATN/GFLA fasion-resize-annotation-*.csv files): header without
# spaces, then `name: [ys]: [xs]` with ', ' between the ints.
YS = [20, 42, 41, 72, 99, 43, 75, 103, 124, 182, 236, 124, 183, 238, 16, 15, 19, -1]
XS = [90, 91, 69, 64, 60, 112, 117, 120, 75, 74, 75, 104, 104, 105, 86, 95, 80, -1]
RELEASE = (
    "name:keypoints_y:keypoints_x\n"
    "fashionWOMENBlouses_Shirtsid0000637003_1front.jpg: [20, 42, 41, 72, 99, 43, 75, 103, 124, 182, 236, 124, 183, "
    "238, 16, 15, 19, -1]: [90, 91, 69, 64, 60, 112, 117, 120, 75, 74, 75, 104, 104, 105, 86, 95, 80, -1]\n"
)
NAME = "fashionWOMENBlouses_Shirtsid0000637003_1front.jpg"


def line(name: str = "a.jpg", ys: str | None = None, xs: str | None = None) -> str:
    ys = ys if ys is not None else "[" + ", ".join(map(str, YS)) + "]"
    xs = xs if xs is not None else "[" + ", ".join(map(str, XS)) + "]"
    return f"{name}: {ys}: {xs}"


def test_writer_produces_the_release_bytes(tmp_path):
    path = tmp_path / "ann.csv"
    write_annotations(path, {NAME: np.stack([YS, XS], axis=1)})
    assert path.read_bytes() == RELEASE.encode()


def test_reader_parses_the_release_line(tmp_path):
    path = tmp_path / "ann.csv"
    path.write_text(RELEASE)
    out = read_annotations(path)
    assert list(out) == [NAME]
    assert out[NAME].dtype == np.int64 and out[NAME].shape == (18, 2)
    assert out[NAME][:, 0].tolist() == YS and out[NAME][:, 1].tolist() == XS  # (y, x) order


def test_round_trip_keeps_order_and_values(tmp_path):
    rng = np.random.default_rng(0)
    data = {f"img_{i:03d}.jpg": rng.integers(-1, 200, size=(18, 2)) for i in (5, 1, 3, 2)}
    path = tmp_path / "ann.csv"
    write_annotations(path, data)
    back = read_annotations(path)
    assert list(back) == list(data)
    for name, kp in data.items():
        np.testing.assert_array_equal(back[name], kp)


def test_reader_tolerates_spaces_and_crlf(tmp_path):
    path = tmp_path / "ann.csv"
    ys = "[" + ",".join(map(str, YS)) + "]"
    xs = "[ " + " , ".join(map(str, XS)) + " ]"
    path.write_bytes(f"name : keypoints_y : keypoints_x\r\nb.jpg:{ys}:{xs}\r\n c.jpg :  {ys} :{xs}\r\n\r\n".encode())
    out = read_annotations(path)
    assert list(out) == ["b.jpg", "c.jpg"]
    assert out["c.jpg"][:, 1].tolist() == XS


def test_pairs_release_bytes_and_round_trip(tmp_path):
    path = tmp_path / "pairs.csv"
    pairs = [("a.jpg", "b.jpg"), ("b.jpg", "a.jpg"), ("c.jpg", "a.jpg")]
    write_pairs(path, pairs)
    assert path.read_bytes() == b"from,to\na.jpg,b.jpg\nb.jpg,a.jpg\nc.jpg,a.jpg\n"
    assert read_pairs(path) == pairs
    path.write_text("from, to\n a.jpg , b.jpg\n\n")
    assert read_pairs(path) == [("a.jpg", "b.jpg")]


@pytest.mark.parametrize("lines, bad_line, message", [
    ([line(), line("b.jpg", ys="[1, 2]")], 3, "keypoints_y has 2 coordinates, expected 18"),
    ([line(xs="[" + ", ".join(["3"] * 19) + "]")], 2, "keypoints_x has 19 coordinates"),
    ([line(), line("c.jpg", xs="[" + ", ".join(["3"] * 17 + ["4.5"]) + "]")], 3, "non-integer coordinate '4.5'"),
    ([line(ys="[" + ", ".join(["a"] * 18) + "]")], 2, "non-integer coordinate 'a'"),
    ([line(), "d.jpg [1, 2] [3, 4]"], 3, "missing ':' separator"),
    ([line() + ": extra"], 2, "4 fields, expected 3"),
    ([line(), line("e.jpg"), line("a.jpg")], 4, "duplicate name 'a.jpg' \\(first on line 2\\)"),
    ([line(ys="14, 37")], 2, "keypoints_y must be a list"),
    ([line(name=" ")], 2, "empty image name"),
])
def test_malformed_annotation_lines_name_file_and_line(tmp_path, lines, bad_line, message):
    path = tmp_path / "bad.csv"
    path.write_text("name:keypoints_y:keypoints_x\n" + "\n".join(lines) + "\n")
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:{bad_line}:") + ".*" + message):
        read_annotations(path)


@pytest.mark.parametrize("header, message", [
    ("", "missing header"),
    ("name:keypoints_x:keypoints_y", "incorrect header"),
    (line(), "incorrect header"),
])
def test_bad_annotation_header(tmp_path, header, message):
    path = tmp_path / "bad.csv"
    path.write_text(header + "\n" + line() + "\n")
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:1:") + ".*" + message):
        read_annotations(path)


@pytest.mark.parametrize("text, bad_line, message", [
    ("to,from\na.jpg,b.jpg\n", 1, "incorrect header"),
    ("from,to\na.jpg,b.jpg\na.jpg;b.jpg\n", 3, "1 fields, expected 2"),
    ("from,to\na.jpg,b.jpg,c.jpg\n", 2, "3 fields, expected 2"),
    ("from,to\n,b.jpg\n", 2, "empty image name"),
])
def test_malformed_pairs_name_file_and_line(tmp_path, text, bad_line, message):
    path = tmp_path / "pairs.csv"
    path.write_text(text)
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:{bad_line}:") + ".*" + message):
        read_pairs(path)


def test_missing_file(tmp_path):
    with pytest.raises(AnnotationError, match="nope.csv: file not found"):
        read_annotations(tmp_path / "nope.csv")


def test_range_check_names_file_line_and_image(tmp_path):
    path = tmp_path / "ann.csv"
    inside = np.stack([YS, XS], axis=1)  # max y 238, max x 120, missing joint 17
    outside = inside.copy()
    outside[4] = (99, 176)  # x = W: just outside a 256x176 frame
    write_annotations(path, {"ok.jpg": inside, "bad.jpg": outside})
    assert list(read_annotations(path, image_size=(256, 177), margin=0)) == ["ok.jpg", "bad.jpg"]  # (-1, -1) fine
    with pytest.raises(AnnotationError, match=re.escape(f"{path}:3:") + " 'bad.jpg' joint 4 has x = 176"):
        read_annotations(path, image_size=(256, 176), margin=0)
    negative = inside.copy()
    negative[0] = (-3, 10)
    with pytest.raises(AnnotationError, match="'neg.jpg' joint 0 has y = -3"):
        check_range({"neg.jpg": negative}, 256, 176, path, margin=0)
    check_range({"ok.jpg": inside}, 239, 121, path, margin=0)
    with pytest.raises(AnnotationError, match="has y = 238"):
        check_range({"ok.jpg": inside}, 238, 121, path, margin=0)


@pytest.mark.parametrize(("axis", "side"), [(0, 256), (1, 176)])
def test_range_margin_is_half_the_side_beyond_each_border(tmp_path, axis, side):
    """Keypoint validity (docs/design.md): a present joint may lie beyond a border by up to half the image side (by
    default)."""
    inside = np.stack([YS, XS], axis=1)
    low, high = -side // 2, side - 1 + side // 2  # the outermost allowed integer coordinates, by hand
    for value, ok in ((low, True), (low - 1, False), (high, True), (high + 1, False), (5000, False)):
        kp = inside.copy()
        kp[6, axis] = value
        if ok:
            check_range({"a.jpg": kp}, 256, 176, tmp_path / "ann.csv")
        else:
            with pytest.raises(AnnotationError, match=f"'a.jpg' joint 6 has {'yx'[axis]} = {value}, outside"):
                check_range({"a.jpg": kp}, 256, 176, tmp_path / "ann.csv")


def test_range_refuses_nan_and_inf(tmp_path):
    for value in (np.nan, np.inf, -np.inf):
        kp = np.stack([YS, XS], axis=1).astype(np.float64)
        kp[2, 1] = value
        with pytest.raises(AnnotationError, match=f"'a.jpg' joint 2 has x = {value}"):
            check_range({"a.jpg": kp}, 256, 176, tmp_path / "ann.csv")


def test_writer_rejects_bad_values(tmp_path):
    with pytest.raises(ValueError, match="'a.jpg' must have shape"):
        write_annotations(tmp_path / "a.csv", {"a.jpg": np.zeros((17, 2))})
    with pytest.raises(ValueError, match="must be integers"):
        write_annotations(tmp_path / "a.csv", {"a.jpg": np.full((18, 2), 0.5)})
    with pytest.raises(ValueError, match="may not contain ':'"):
        write_annotations(tmp_path / "a.csv", {"a:b.jpg": np.zeros((18, 2), int)})
    with pytest.raises(ValueError, match="may not be empty or contain ','"):
        write_pairs(tmp_path / "p.csv", [("a,b.jpg", "c.jpg")])


@pytest.mark.parametrize("name", ["../x.jpg", "a/../../x.jpg", "/etc/x.jpg", "..", "a/..\\..\\x.jpg"])
def test_a_name_that_leaves_the_image_folder_is_refused_naming_file_and_line(tmp_path, name):
    """A pair (or keypoint row) naming '../../outside/secret.jpg' was read from outside the dataset."""
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(f"from,to\na.jpg,b.jpg\n{name},b.jpg\n")
    with pytest.raises(AnnotationError, match=rf"^{pairs}:3: image name .* leaves the image folder"):
        read_pairs(pairs)
    rows = tmp_path / "ann.csv"
    rows.write_text(f"{ANNOTATION_HEADER}\n{name}: {[-1] * 18}: {[-1] * 18}\n")
    with pytest.raises(AnnotationError, match=rf"^{rows}:2: image name .* leaves the image folder"):
        read_annotations(rows)


def test_names_in_folders_and_with_dots_are_kept(tmp_path):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("from,to\nf1/a.jpg,..b.jpg\nc..d/e.jpg,f.jpg\n")
    assert read_pairs(pairs) == [("f1/a.jpg", "..b.jpg"), ("c..d/e.jpg", "f.jpg")]


def test_a_repeated_pair_is_used_once_with_a_note_naming_its_lines(tmp_path, capsys):
    """6 distinct pairs and 3 repeats were generated and scored 9 times: evaluate.py reported images=9."""
    pairs = tmp_path / "pairs.csv"
    rows = [f"a{i}.jpg,b{i}.jpg" for i in range(6)]
    pairs.write_text("from,to\n" + "\n".join(rows + rows[1:3] + [" a1.jpg , b1.jpg "]) + "\n")
    assert read_pairs(pairs) == [(f"a{i}.jpg", f"b{i}.jpg") for i in range(6)]
    note = capsys.readouterr().err
    assert note == f"note: {pairs}: 3 repeated pairs dropped, each is used once (lines 8 (= 3), 9 (= 4), 10 (= 3))\n"
