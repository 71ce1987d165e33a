"""The procedural world: vocabulary, sampling, rendering, masks, captions, QA and the world: source."""

import pickle
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neuronatlas.data import open_probe
from neuronatlas.data.world import (CATEGORIES, CONCEPTS, SceneOptions, WorldProbeSet, all_words,
                                    caption, caption_concepts, parse_caption, questions, render,
                                    render_image, sample_scene, tokenize)
from neuronatlas.errors import UserError

N_SCENES = 300
MIN_COUNTS = {"shape": 8, "color": 10, "texture": 6, "background": 4}


@pytest.fixture(scope="module")
def scenes():
    return [sample_scene(0, i) for i in range(N_SCENES)]


@pytest.fixture(scope="module")
def rendered32(scenes):
    return [render(s, 32) for s in scenes]


# vocabulary ---------------------------------------------------------------------------------------

def test_vocabulary_categories_and_ids():
    assert set(CATEGORIES) == {"shape", "color", "texture", "background", "size", "position"}
    for cat, need in MIN_COUNTS.items():
        assert len(CONCEPTS.by_category(cat)) >= need
    ids = CONCEPTS.ids()
    assert len(ids) == len(set(ids))
    for c in CONCEPTS:
        assert c.id == f"{c.category}:{c.name}" and c.id in CONCEPTS and CONCEPTS[c.id] is c
        assert (c.rgb is not None) == (c.category == "color")
    assert "shape:circle" in CONCEPTS and "color:red" in CONCEPTS and "texture:solid" in CONCEPTS
    assert "background:gray" in CONCEPTS
    phrases = [c.phrase for c in CONCEPTS if c.category in ("shape", "color", "texture")]
    assert len(phrases) == len(set(phrases))  # captions can be parsed back


def test_every_category_value_is_sampled(scenes):
    seen = {cat: Counter() for cat in CATEGORIES}
    for s in scenes:
        seen["background"][s.background] += 1
        for o in s.objects:
            for cat in ("shape", "color", "texture", "size", "position"):
                seen[cat][getattr(o, cat)] += 1
    for cat in CATEGORIES:
        assert set(seen[cat]) == set(CONCEPTS.names(cat)), cat
    for cat, need in MIN_COUNTS.items():
        assert len(seen[cat]) >= need
    assert Counter(len(s.objects) for s in scenes).keys() == {1, 2, 3}


# sampling and rendering ---------------------------------------------------------------------------

def test_scene_depends_on_seed_and_index_only():
    assert sample_scene(0, 7) == sample_scene(0, 7)
    assert sample_scene(0, 7) != sample_scene(0, 8)
    assert sample_scene(0, 7) != sample_scene(1, 7)
    a = WorldProbeSet(n=10, size=32).scene(7)
    b = WorldProbeSet(n=500, size=32).scene(7)
    assert a == b == sample_scene(0, 7)


def test_render_is_deterministic_and_indices_differ(scenes):
    a = np.asarray(render_image(scenes[3], 64))
    b = np.asarray(render_image(sample_scene(0, 3), 64))
    assert np.array_equal(a, b)
    img, masks = render(scenes[3], 64)
    assert np.array_equal(np.asarray(img), a)
    again = render(scenes[3], 64)[1]
    assert all(np.array_equal(masks[k], again[k]) for k in masks)
    arrays = [np.asarray(render_image(s, 32)).tobytes() for s in scenes[:40]]
    assert len(set(arrays)) == 40


@pytest.mark.parametrize("size", [32, 64, 100, 224])
def test_any_resolution(scenes, size):
    for s in scenes[:6]:
        img, masks = render(s, size)
        assert img.mode == "RGB" and img.size == (size, size)
        for m in masks.values():
            assert m.shape == (size, size) and m.dtype == bool
        assert all(masks[f"object:{k}"].any() for k in range(len(s.objects)))


def test_same_scene_looks_alike_across_resolutions(scenes):
    from PIL import Image

    for s in scenes[:10]:
        small = np.asarray(render_image(s, 32), dtype=float)
        down = np.asarray(render_image(s, 224).resize((32, 32), Image.BOX), dtype=float)
        assert np.abs(small - down).mean() < 20


def test_bad_size_is_refused(scenes):
    with pytest.raises(ValueError, match="too small"):
        render(scenes[0], 4)


# masks and captions -------------------------------------------------------------------------------

def test_masks_partition_the_image_and_follow_the_objects(scenes, rendered32):
    for s, (img, masks) in zip(scenes, rendered32):
        objs = [masks[f"object:{k}"] for k in range(len(s.objects))]
        bg = masks[f"background:{s.background}"]
        total = bg.astype(int) + sum(o.astype(int) for o in objs)
        assert (total == 1).all()  # every pixel belongs to exactly one thing
        for k, (o, m) in enumerate(zip(s.objects, objs)):
            assert m.any(), f"object {k} of scene {s.index} is hidden"
            for cid in o.concept_ids():
                assert (masks[cid] >= m).all()  # concept masks cover their objects
            # the object is mostly visible: at least half of what it would cover alone
            alone = render(type(s)(s.seed, s.index, s.background, s.background_seed, (o,)), 32)[1]
            assert m.sum() >= 0.5 * alone["object:0"].sum()


def test_caption_concepts_equal_mask_concepts(scenes, rendered32):
    for s, (_, masks) in zip(scenes, rendered32):
        concepts = caption_concepts(s)
        mask_concepts = {k for k in masks if not k.startswith("object:")}
        assert concepts == mask_concepts == s.concept_ids()
        for cid in concepts:
            assert masks[cid].any(), (s.index, cid)
            assert cid in CONCEPTS


def test_caption_grammar(scenes):
    s = next(s for s in scenes if len(s.objects) == 2)
    text = caption(s)
    left, right = (o for _, o in s.left_to_right())
    assert text.startswith(f"a {left.size} {left.color} ")
    assert f" and a {right.size} {right.color} " in text
    assert text.endswith(" background")
    solid = next(s for s in scenes if any(o.texture == "solid" for o in s.objects))
    assert " solid " in caption(solid) and "texture:solid" in caption_concepts(solid)
    with pytest.raises(ValueError):
        parse_caption("a red thing")
    for s in scenes[:50]:
        assert set(tokenize(caption(s))) <= set(all_words())


# questions ----------------------------------------------------------------------------------------

def test_qa_answers_match_the_scene(scenes):
    kinds = Counter()
    for s in scenes:
        qa = questions(s)
        assert qa == questions(s)  # deterministic
        pairs = {(o.color, o.shape) for o in s.objects}
        shapes = Counter(o.shape for o in s.objects)
        colors = Counter(o.color for o in s.objects)
        presence = [q for q in qa if q.kind == "presence"]
        assert sum(q.answer == "yes" for q in presence) == sum(q.answer == "no" for q in presence) > 0
        assert len({q.question for q in qa}) == len(qa)
        for q in qa:
            kinds[q.kind] += 1
            words = q.question.removesuffix("?").split()
            assert set(tokenize(q.question)) | set(tokenize(q.answer)) <= set(all_words())
            if q.kind == "presence":
                assert q.answer == ("yes" if (words[3], words[4]) in pairs else "no")
            elif q.kind in ("color", "texture", "size"):
                shape = words[-1]
                assert shapes[shape] == 1  # only asked when unambiguous
                obj = next(o for o in s.objects if o.shape == shape)
                attr = getattr(obj, q.kind)
                assert q.answer == CONCEPTS.get(q.kind, attr).phrase
            elif q.kind == "shape":
                color = words[-2]
                assert colors[color] == 1
                assert q.answer == next(o.shape for o in s.objects if o.color == color)
            elif q.kind == "position":
                pos = words[-1]
                assert q.answer == next(o.shape for o in s.objects if o.position == pos)
            elif q.kind == "count":
                assert q.answer == ("one", "two", "three")[len(s.objects) - 1]
    assert set(kinds) == {"presence", "color", "shape", "texture", "size", "position", "count"}


# curricula ----------------------------------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), index=st.integers(0, 10**6))
def test_restricted_scenes_respect_options(seed, index):
    opts = SceneOptions(n_objects=(1, 1), shapes=("circle", "star"), textures=("solid",),
                        backgrounds=("gray",), sizes=("large",))
    s = sample_scene(seed, index, opts)
    assert len(s.objects) == 1 and s.background == "gray"
    o = s.objects[0]
    assert o.shape in ("circle", "star") and o.texture == "solid" and o.size == "large"
    crowded = sample_scene(seed, index, SceneOptions(n_objects=(3, 3)))
    assert len(crowded.objects) == 3
    assert {o.position for o in crowded.objects} == {"left", "center", "right"}


def test_background_never_hides_an_object_colour(scenes):
    for s in scenes:
        if s.background == "grass":
            assert all(o.color != "green" for o in s.objects)


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="valid shapes"):
        SceneOptions(shapes=("hexagon",))
    with pytest.raises(UserError, match="objects"):
        SceneOptions(n_objects=(0, 4))
    with pytest.raises(UserError, match="green"):  # green only, on grass only
        SceneOptions(colors=("green",), backgrounds=("grass",))


# the world: probe source --------------------------------------------------------------------------

def test_world_source_defaults_and_items():
    p = open_probe("world:n=5,size=32")
    assert isinstance(p, WorldProbeSet) and p.kind == "world" and len(p) == 5
    assert p.spec == "world:n=5,size=32,seed=0"
    it = p.items[2]
    assert it.image_id == "world/0/2" and it.path == "world:seed=0,size=32#2"
    assert it.label == p.caption(2) == caption(sample_scene(0, 2))
    img = p.read_image(2)
    assert img.size == (32, 32) and img.mode == "RGB"
    assert p.read_bytes(2) == img.tobytes() and len(p.read_bytes(2)) == 32 * 32 * 3
    d = open_probe("world:")
    assert (len(d), d.size, d.seed) == (1000, 224, 0)


def test_world_annotation_and_pickle():
    p = open_probe("world:n=4,size=48,seed=3")
    a = p.annotation(1)
    assert a.scene == sample_scene(3, 1) and a.caption == p.items[1].label
    assert a.concepts == {k for k in a.masks if not k.startswith("object:")}
    assert all(m.shape == (48, 48) for m in a.masks.values())
    assert a.qa == questions(a.scene)
    assert p.annotation(1, size=16).masks["object:0"].shape == (16, 16)
    q = pickle.loads(pickle.dumps(p))
    assert q.read_bytes(3) == p.read_bytes(3) and q.fingerprint() == p.fingerprint()
    with pytest.raises(IndexError):
        p.scene(4)


def test_world_fingerprint_and_ids_follow_the_content():
    base = open_probe("world:n=3,size=32")
    assert base.fingerprint() == open_probe("world:n=3,size=32,seed=0").fingerprint()
    assert base.fingerprint() != open_probe("world:n=3,size=64").fingerprint()
    assert base.fingerprint() != open_probe("world:n=3,size=32,seed=1").fingerprint()
    cur = open_probe("world:n=3,size=32,objects=1,textures=solid,backgrounds=gray/noise")
    assert cur.spec == "world:n=3,size=32,seed=0,objects=1,textures=solid,backgrounds=gray/noise"
    assert cur.items[0].image_id.startswith("world/0.") and cur.items[0].image_id != "world/0/0"
    assert cur.fingerprint() != base.fingerprint()
    assert all(len(cur.scene(i).objects) == 1 for i in range(3))


@pytest.mark.parametrize("spec, match", [
    ("world:m=3", "keys n, size, seed"),
    ("world:sed=3", "did you mean .*seed"),
    ("world:n=ten", "whole number"),
    ("world:n=0", "at least 1"),
    ("world:size=4", "at least 8"),
    ("world:size", "KEY=VALUE"),
    ("world:shapes=hexagon", "valid shapes"),
    ("world:objects=2-5", "objects"),
])
def test_world_spec_errors(spec, match):
    with pytest.raises(UserError, match=match):
        open_probe(spec)
