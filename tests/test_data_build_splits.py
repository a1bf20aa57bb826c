"""data build's splits: near-duplicate files share a split, and an input's name in the build does not
depend on the other inputs (real files, real builds through the CLI)."""

import csv
import itertools
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance

from batchmask.datasets.build import source_tags
from batchmask.near_duplicates import fingerprint, fingerprints, near_duplicate_pairs
from batchmask.datasets.splits import assign_split, group_key
from conftest import SAMPLES, batchmask


def test_an_inputs_name_does_not_depend_on_the_other_inputs(tmp_path):
    un, ma = tmp_path / "p" / "un", tmp_path / "p" / "ma"
    assert source_tags([un, ma]) == ["un", "ma"]
    # an unrelated input elsewhere (the common parent used to move, renaming every input and reshuffling its splits)
    assert source_tags([un, ma, tmp_path / "q" / "r" / "extra"]) == ["un", "ma", "extra"]
    # inputs of the same name are told apart by as much of their paths as it takes
    assert source_tags([tmp_path / "a" / "x" / "faces", tmp_path / "b" / "x" / "faces", ma]) == ["a/x/faces", "b/x/faces", "ma"]
    assert source_tags([Path("/")]) == ["root"]
    # no input's name may be the start of another's: `X` and `X/Y` would put both inputs' X/Y/f.jpg on one crop path
    assert source_tags([tmp_path / "m" / "X" / "Y", tmp_path / "n" / "Y", tmp_path / "o" / "X"]) == ["m/X/Y", "n/Y", "o/X"]
    # nor on the order the inputs are given in
    folders = [tmp_path / "kaggle" / "faces", tmp_path / "celeb" / "faces", tmp_path / "mafa" / "faces", tmp_path / "X", tmp_path / "q" / "X" / "Y"]
    named = dict(zip(folders, source_tags(folders)))
    assert all(dict(zip(order, source_tags(order))) == named for order in itertools.permutations(folders)), named
    assert named[tmp_path / "mafa" / "faces"] == "mafa/faces"


def test_near_duplicates_are_found_and_different_photos_are_not(tmp_path):
    original = Image.open(SAMPLES / "astronaut.jpg")
    original.resize((300, 300)).save(tmp_path / "small_q50.jpg", quality=50)
    ImageEnhance.Brightness(original).enhance(1.15).save(tmp_path / "brighter.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not a photo")
    paths = [SAMPLES / "astronaut.jpg", tmp_path / "small_q50.jpg", tmp_path / "brighter.png", SAMPLES / "chelsea.jpg",
             SAMPLES / "masks" / "astronaut_surgical.jpg", tmp_path / "broken.jpg"]
    prints = fingerprints([str(p) for p in paths], threads=2)
    assert prints[5] is None and fingerprint(str(tmp_path / "missing.jpg")) is None
    pairs = set(near_duplicate_pairs(prints))
    # the copies and the same photo with a drawn mask are one source; the cat is not
    assert pairs == {(0, 1), (0, 2), (1, 2), (0, 4), (1, 4), (2, 4)}
    assert near_duplicate_pairs(prints[3:4]) == [] and near_duplicate_pairs([None, None]) == []
    # face crops of different people all look alike at the hash's 8 x 8 frequencies: the thumbnails must agree too
    flat = (0x0F0F0F0F0F0F0F0F, prints[0][1])
    assert near_duplicate_pairs([flat, (0x0F0F0F0F0F0F0F0F, prints[3][1])]) == []


def _names_in_two_splits(tag: str, stem: str) -> tuple[str, str]:
    """Two file names whose own split keys (seed 0) land in different splits."""
    names = [f"{stem}{i}.jpg" for i in range(50)]
    first = names[0]
    other = next(n for n in names[1:] if assign_split(group_key(tag, n)) != assign_split(group_key(tag, first)))
    return first, other


def test_a_build_keeps_near_duplicates_in_one_split(tmp_path):
    un, ma = tmp_path / "un", tmp_path / "ma"
    un.mkdir()
    ma.mkdir()
    a, b = _names_in_two_splits("un", "photo")
    shutil.copy(SAMPLES / "astronaut.jpg", un / a)
    Image.open(SAMPLES / "astronaut.jpg").resize((400, 400)).save(un / b, quality=70)  # a re-encoded copy
    shutil.copy(SAMPLES / "chelsea.jpg", un / "cat.jpg")
    c = next(n for n in (f"masked{i}.jpg" for i in range(50)) if assign_split(group_key("ma", n)) != assign_split(group_key("un", a)))
    shutil.copy(SAMPLES / "masks" / "astronaut_cloth.jpg", ma / c)  # the same photo, masked: one source
    data = tmp_path / "data"
    r = batchmask("data", "build", "--unmasked", un, "--masked", ma, "--out", data, "--mask-share", "0", "-q", "-w", "1")
    assert r.returncode in (0, 2), r.stderr
    said = r.stderr.replace("\n", " ")
    assert "3 near-duplicate pairs found: 2 files share a split with a near-duplicate in another group" in said, said
    assert "warning: 2 near-duplicate pairs across --masked and --unmasked inputs (the same photo under both labels?)" in said, said
    rows = {(r["source"], r["source_file"]): r for r in csv.DictReader(open(data / "metadata.csv"))}
    astronauts = [rows[("un", a)], rows[("un", b)], rows[("ma", c)]]
    assert len({r["split"] for r in astronauts}) == 1 and len({r["group"] for r in astronauts}) == 1
    assert astronauts[0]["group"] == min(group_key("un", a), group_key("un", b), group_key("ma", c))
    summary = json.loads((data / "summary.json").read_text())["near_duplicates"]
    assert summary["pairs"] == 3 and summary["files_joined"] == 2 and summary["across_labels_count"] == 2 and summary["largest_group"] == 3
    assert sorted(map(sorted, summary["across_labels"])) == sorted(sorted([f"un/{x}", f"ma/{c}"]) for x in (a, b))
    # the same command gives the same build
    again = batchmask("data", "build", "--unmasked", un, "--masked", ma, "--out", tmp_path / "again", "--mask-share", "0", "-q", "-w", "1")
    assert again.returncode == r.returncode
    assert (tmp_path / "again" / "metadata.csv").read_text() == (data / "metadata.csv").read_text()


def test_train_keeps_near_duplicate_crops_of_a_flat_folder_on_one_side(tmp_path):
    """`train` on DATA/{masked,unmasked}/ (no build) splits by file name: near-duplicates go together."""
    from batchmask.training import _list_split

    flat = tmp_path / "flat"
    (flat / "masked").mkdir(parents=True)
    (flat / "unmasked").mkdir()
    names = [f"frame{i}.jpg" for i in range(40)]
    by_name = {n: assign_split(f"masked/{n}", fractions=(0.85, 0.15, 0.0)) for n in names}
    assert len(set(by_name.values())) == 2  # by name alone these would be on both sides
    surgical = Image.open(SAMPLES / "masks" / "astronaut_surgical.jpg")
    for i, n in enumerate(names):
        surgical.resize((300 + i, 300 + i)).save(flat / "masked" / n, quality=80)  # one photo, re-saved
    for i in range(20):  # different pictures: some of them fill the validation side
        Image.fromarray((np.random.default_rng(i).random((64, 64, 3)) * 255).astype(np.uint8)).save(flat / "unmasked" / f"{i}.png")
    splits = _list_split(flat)
    sides = {s for s, items in splits.items() for p, _ in items if p.parent.name == "masked"}
    assert len(sides) == 1, {s: len(v) for s, v in splits.items()}
