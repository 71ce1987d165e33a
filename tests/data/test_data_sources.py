"""Each probe source lists images in a deterministic order with stable ids, labels and paths; bad
inputs are refused with one-line UserErrors."""

import io
import json
import pickle
import tarfile

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from neuronatlas.data import ImageItem, ProbeSet, open_probe
from neuronatlas.data.tar_shards import expand_braces
from neuronatlas.errors import UserError


def png_bytes(seed, size=12, fmt="PNG"):
    arr = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def write(path, data=None, seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(seed) if data is None else data)
    return path


def listing(probe):
    return [(it.image_id, it.label) for it in probe.items]


# --- folder ---------------------------------------------------------------------------------------

def test_folder_nested_classes_sorted(tmp_path):
    root = tmp_path / "imgs"
    for rel in ["b/z.png", "a/deep/er/x.JPG", "a/y.png", "top.png", "a/b.webp", "B/k.tiff"]:
        write(root / rel)
    write(root / "a" / "notes.txt", b"not an image")
    write(root / ".hidden" / "h.png")
    write(root / "a" / ".h.png")
    write(root / "a" / "noext")
    (root / "a" / "loop").symlink_to(root)  # a symlink loop must not recurse forever
    probe = open_probe(str(root))
    assert probe.kind == "folder" and probe.spec == f"folder:{root.resolve()}"
    assert listing(probe) == [("B/k.tiff", "B"), ("a/b.webp", "a"), ("a/deep/er/x.JPG", "a"),
                              ("a/y.png", "a"), ("b/z.png", "b"), ("top.png", None)]
    assert probe.items[2].path == str(root.resolve() / "a/deep/er/x.JPG")
    assert probe.read_bytes(0) == (root / "B/k.tiff").read_bytes()
    again = open_probe(f"folder:{root}")
    assert again.items == probe.items and again.fingerprint() == probe.fingerprint()
    write(root / "a" / "new.png")
    assert open_probe(str(root)).fingerprint() != probe.fingerprint()


def test_probeset_passthrough_and_pickle(tmp_path):
    write(tmp_path / "x.png")
    probe = open_probe(tmp_path)  # a pathlib.Path works too
    assert open_probe(probe) is probe
    clone = pickle.loads(pickle.dumps(probe))
    assert clone.items == probe.items and clone.read_bytes(0) == probe.read_bytes(0)


# --- file list ------------------------------------------------------------------------------------

def test_file_list_labels_comments_relative_paths(tmp_path):
    write(tmp_path / "imgs" / "one.png", seed=1)
    abs_img = write(tmp_path / "elsewhere" / "two.png", seed=2)
    lst = tmp_path / "lists" / "probe.txt"
    lst.parent.mkdir()
    lst.write_text(f"# a comment\n\n../imgs/one.png\tcat\n{abs_img}\n  # indented comment\n"
                   f"../imgs/gone.png\tdog\n")
    probe = open_probe(str(lst))
    assert probe.kind == "filelist"
    assert listing(probe) == [("../imgs/one.png", "cat"), (str(abs_img), None),
                              ("../imgs/gone.png", "dog")]
    assert probe.items[0].path == str(tmp_path / "imgs" / "one.png")
    assert probe.read_bytes(0) == (tmp_path / "imgs" / "one.png").read_bytes()
    assert open_probe(f"filelist:{lst}").fingerprint() == probe.fingerprint()


def test_file_list_csv_and_tsv(tmp_path):
    write(tmp_path / "a.png")
    write(tmp_path / "b c.png")
    (tmp_path / "l.csv").write_text("path,label\na.png,x\n\"b c.png\",\n")
    assert listing(open_probe(str(tmp_path / "l.csv"))) == [("a.png", "x"), ("b c.png", None)]
    (tmp_path / "l.tsv").write_text("a.png\tx y\nb c.png\n")
    assert listing(open_probe(str(tmp_path / "l.tsv"))) == [("a.png", "x y"), ("b c.png", None)]


def test_file_list_duplicate_line_is_refused(tmp_path):
    (tmp_path / "l.txt").write_text("a.png\nb.png\na.png\n")
    with pytest.raises(UserError, match=r"twice \(lines 1 and 3\)"):
        open_probe(str(tmp_path / "l.txt"))


# --- tar shards -----------------------------------------------------------------------------------

def make_shard(path, entries):
    """entries: (member name, bytes) written in order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return path


def test_tar_shards_brace_pattern_keys_and_labels(tmp_path):
    d = tmp_path / "shards"
    make_shard(d / "s-000.tar", [("k1.jpg", png_bytes(1, fmt="JPEG")), ("k1.cls", b"7\n"),
                                 ("dir/k2.png", png_bytes(2)), ("dir/k2.json", b'{"label": "dog"}'),
                                 ("k3.json", b"{}"),  # no image: skipped
                                 ("k4.txt", b"a caption"), ("k4.seg.png", b"x"), ("k4.png", png_bytes(4))])
    make_shard(d / "s-001.tar", [("./k1.webp", png_bytes(5, fmt="WEBP")), ("._k1.webp", b"junk")])
    make_shard(d / "s-002.tar", [("k9.png", png_bytes(9))])
    probe = open_probe(str(d / "s-{000..001}.tar"))
    assert probe.kind == "tar"
    assert listing(probe) == [("s-000.tar/k1", "7"), ("s-000.tar/dir/k2", "dog"),
                              ("s-000.tar/k4", "a caption"), ("s-001.tar/k1", None)]
    assert probe.items[1].path == f"{d / 's-000.tar'}::dir/k2.png"
    assert probe.read_bytes(1) == png_bytes(2) and probe.read_bytes(3) == png_bytes(5, fmt="WEBP")
    assert probe.read_image(2).size == (12, 12)
    clone = pickle.loads(pickle.dumps(probe))  # workers get a copy without open descriptors
    assert clone.read_bytes(0) == png_bytes(1, fmt="JPEG")
    again = open_probe(probe.spec)
    assert again.items == probe.items and again.fingerprint() == probe.fingerprint()
    everything = open_probe(f"tar:{d}/*.tar")
    assert len(everything) == 5 and everything.fingerprint() != probe.fingerprint()
    assert len(open_probe(str(d / "s-002.tar"))) == 1
    assert [it.image_id for it in open_probe(f"tar:{d}/s-{{002,000}}.tar").items][:2] == \
        ["s-002.tar/k9", "s-000.tar/k1"]


def test_tar_errors(tmp_path):
    make_shard(tmp_path / "s-000.tar", [("a.png", png_bytes(0))])
    with pytest.raises(UserError, match=r"s-001.tar does not exist"):
        open_probe(str(tmp_path / "s-{000..001}.tar"))
    with pytest.raises(UserError, match="no tar shards match"):
        open_probe(f"tar:{tmp_path}/nope-*.tar")
    with tarfile.open(tmp_path / "c.tar.gz", "w:gz") as tf:
        tf.add(tmp_path / "s-000.tar", "x.png")
    with pytest.raises(UserError, match="uncompressed .tar.*random access"):
        open_probe(str(tmp_path / "c.tar.gz"))
    (tmp_path / "bad.tar").write_bytes(b"this is not a tar file at all" * 30)
    with pytest.raises(UserError, match="bad.tar is not a readable uncompressed tar"):
        open_probe(str(tmp_path / "bad.tar"))


@given(st.integers(0, 120), st.integers(0, 120), st.integers(1, 4))
def test_brace_numeric_ranges_match_bash(lo, hi, width):
    a, b = str(lo).zfill(width), str(hi).zfill(width)
    got = expand_braces(f"x{{{a}..{b}}}.tar")
    step = 1 if hi >= lo else -1
    padded = (len(a) > 1 and a[0] == "0") or (len(b) > 1 and b[0] == "0")
    w = max(len(a), len(b)) if padded else 0
    assert got == [f"x{str(i).zfill(w)}.tar" for i in range(lo, hi + step, step)]


def test_brace_lists_nest_in_order():
    assert expand_braces("{a,b}-{0..1}/{x}") == ["a-0/{x}", "a-1/{x}", "b-0/{x}", "b-1/{x}"]


# --- Hugging Face datasets ------------------------------------------------------------------------

def hf_dataset(n=5, with_ids=False):
    import datasets

    feats = {"image": datasets.Image(), "cls": datasets.ClassLabel(names=["cat", "dog", "eel"])}
    data = {"image": [{"bytes": png_bytes(i, fmt="JPEG" if i % 2 else "PNG"), "path": None}
                      for i in range(n)],
            "cls": [i % 3 for i in range(n)]}
    if with_ids:
        feats["image_id"] = datasets.Value("string")
        data["image_id"] = [f"img-{i}" for i in range(n)]
    return datasets.Dataset.from_dict(data, features=datasets.Features(feats))


def test_hf_dataset_object_with_classlabel():
    ds = hf_dataset()
    probe = open_probe(ds)
    assert probe.kind == "hf" and probe.image_column == "image" and probe.label_column == "cls"
    assert listing(probe) == [("0", "cat"), ("1", "dog"), ("2", "eel"), ("3", "cat"), ("4", "dog")]
    assert probe.items[3].path == f"hf:{ds._fingerprint}[3]"
    assert probe.read_bytes(1) == png_bytes(1, fmt="JPEG")  # the original encoded bytes
    assert np.array_equal(np.asarray(probe.read_image(2)), np.asarray(ds[2]["image"].convert("RGB")))
    clone = pickle.loads(pickle.dumps(probe))
    assert clone.read_bytes(4) == probe.read_bytes(4)
    assert open_probe(hf_dataset()).fingerprint() == probe.fingerprint()
    assert open_probe(hf_dataset(6)).fingerprint() != probe.fingerprint()
    with pytest.raises(UserError, match="in-memory datasets.Dataset"):
        open_probe(probe.spec)


def test_hf_saved_to_disk_and_columns(tmp_path):
    import datasets

    hf_dataset(with_ids=True).save_to_disk(str(tmp_path / "saved"))
    probe = open_probe(f"hf:{tmp_path / 'saved'}")
    assert probe.spec == f"hf:{tmp_path / 'saved'}"
    assert [it.image_id for it in probe.items] == [f"img-{i}" for i in range(5)]
    assert probe.items[0].path == f"hf:{tmp_path / 'saved'}[0]" and probe.items[2].label == "eel"
    assert probe.read_bytes(3) == png_bytes(3, fmt="JPEG")
    loaded = open_probe(datasets.load_from_disk(str(tmp_path / "saved")))
    assert loaded.spec == probe.spec and loaded.fingerprint() == probe.fingerprint()
    # A column that is not an Image feature, found by name; a plain "label" column.
    plain = datasets.Dataset.from_dict({"img": [png_bytes(0), png_bytes(1)], "label": ["x", "y"]})
    p = open_probe(plain)
    assert listing(p) == [("0", "x"), ("1", "y")] and p.read_bytes(1) == png_bytes(1)
    renamed = plain.rename_column("img", "pic")
    with pytest.raises(UserError, match="pass image_column"):
        open_probe(renamed)
    assert open_probe(renamed, image_column="pic").read_bytes(0) == png_bytes(0)
    with pytest.raises(UserError, match="does not exist"):
        open_probe(f"hf:{tmp_path / 'nope'}")
    with pytest.raises(UserError, match="pass one split"):
        open_probe(datasets.DatasetDict({"train": plain, "test": plain}))


# --- open_probe errors ----------------------------------------------------------------------------

def test_open_probe_refuses_bad_input(tmp_path):
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    (tmp_path / "empty" / "sub" / "readme.md").write_text("no images here")
    with pytest.raises(UserError, match=r"probe set folder:.*empty has no images: add image files"):
        open_probe(str(tmp_path / "empty"))
    with pytest.raises(UserError, match=r"probe path .*missing does not exist"):
        open_probe(str(tmp_path / "missing"))
    with pytest.raises(UserError, match=r"missing\.txt does not exist"):
        open_probe(f"filelist:{tmp_path}/missing.txt")
    (tmp_path / "blank.txt").write_text("# only a comment\n")
    with pytest.raises(UserError, match="has no images"):
        open_probe(str(tmp_path / "blank.txt"))
    with pytest.raises(UserError, match=r"unknown probe source 'foldr' \(did you mean folder:"):
        open_probe("foldr:/x")
    with pytest.raises(UserError, match="patterns are only for tar shards"):
        open_probe(str(tmp_path / "*.jpg"))
    write(tmp_path / "one.png")
    with pytest.raises(UserError, match="do not know how to read"):
        open_probe(str(tmp_path / "one.png"))
    with pytest.raises(UserError, match="is not a folder"):
        open_probe(f"folder:{tmp_path / 'one.png'}")

    class Empty(ProbeSet):
        spec, kind, items = "mine:x", "mine", []

    with pytest.raises(UserError, match="probe set mine:x has no images"):
        open_probe(Empty())
    assert ImageItem("a", "b").label is None


def test_concatenated_sources_keep_ids_and_reopen_from_their_spec():
    from neuronatlas.data import open_probe

    both = open_probe(["world:n=5,size=32,seed=0", "photos:"])
    world, photos = open_probe("world:n=5,size=32,seed=0"), open_probe("photos:")
    assert [it.image_id for it in both.items] == \
        [it.image_id for it in world.items] + [it.image_id for it in photos.items]
    assert both.read_bytes(6) == photos.read_bytes(1)
    again = open_probe(both.spec)
    assert again.fingerprint() == both.fingerprint()
    assert [it.image_id for it in again.items] == [it.image_id for it in both.items]
