import pytest
import torch

from neuronatlas.backends import ImageTextScorer, load_scorer
from neuronatlas.backends.conse import ConSEScorer
from neuronatlas.errors import UserError


@pytest.fixture(params=["efficientnet-lite0", "mobilenet-v2"])
def scorer(request, effnet, mobilenet, minilm):
    target = {"efficientnet-lite0": effnet, "mobilenet-v2": mobilenet}[request.param]
    return ConSEScorer(target, minilm, top=10)


def test_conse_ranks_the_right_caption_first_for_most_photos(scorer, photos, captions):
    captions = [captions[n] for n in photos]
    sims = scorer.similarity(torch.stack([scorer.preprocess(im) for im in photos.values()]), captions)
    right = (sims.argmax(1) == torch.arange(len(captions))).sum().item()
    assert right >= 5, f"{scorer.name}: {right}/{len(captions)}"


def test_embeddings_are_unit_vectors_in_the_text_space(scorer, photos):
    img = scorer.encode_pil(list(photos.values())[:3])
    assert isinstance(scorer, ImageTextScorer)
    assert img.shape == (3, 384) and torch.allclose(img.norm(dim=1), torch.ones(3), atol=1e-5)
    txt = scorer.encode_texts(["a cat", "a rocket"])
    assert torch.allclose(scorer.similarity(img, txt), img @ txt.T)


def test_top1_is_the_embedding_of_the_predicted_class(mobilenet, minilm, photos):
    conse = ConSEScorer(mobilenet, minilm, top=1)
    x = mobilenet.preprocess(photos["coffee"])[None]
    assert mobilenet.class_names[conse.class_probs(x).argmax()] == "espresso"
    assert torch.allclose(conse.encode_images(x)[0], minilm.embed(["espresso"])[0], atol=1e-5)


def test_load_scorer_specs(tmp_path):
    s = load_scorer("conse", cache_dir=tmp_path)  # default classifier
    assert s.name == "conse:mobilenet-v2" and s.describe()["top"] == 10
    with pytest.raises(UserError, match="known families: conse:"):
        load_scorer("clip-nope:ViT-B-32")
    with pytest.raises(UserError):
        load_scorer("conse:no-such-model", cache_dir=tmp_path)
