"""The HF checkpoint path (`hf:DIR`): a llava-phi style LlavaForConditionalGeneration saved with its
processor (CLIP image processor: shorter side + center crop; a word-level tokenizer with <image> as
a special token) loads through load_subject, the prompt holds exactly n_image_tokens image tokens
read from the config, the model's view is the processor's crop, and the lens's last layer is the
model's logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from neuronatlas.errors import UserError
from neuronatlas.vlm.logit_lens import lens_topk, residuals
from neuronatlas.vlm.subject import load_subject

from tests.vlm.tiny import IMAGE_ID, VOCAB, tiny_llava


def save_checkpoint(path):
    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = ["<pad>", "<s>", "</s>", "<unk>", "USER:", "ASSISTANT:", "Describe", "the", "image.", "Is",
             "there", "a", "dog", "in"]
    vocab = {w: i for i, w in enumerate(words)}
    vocab.update({f"w{i}": i for i in range(len(words), VOCAB - 1)})
    vocab["<image>"] = IMAGE_ID
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"})
    ip = transformers.CLIPImageProcessor(size={"shortest_edge": 30}, crop_size={"height": 30, "width": 30},
                                         do_center_crop=True)
    proc = transformers.LlavaProcessor(image_processor=ip, tokenizer=fast, patch_size=6,
                                       vision_feature_select_strategy="default", image_token="<image>",
                                       num_additional_image_tokens=1)
    model = tiny_llava("llava-phi", attn="eager")
    model.save_pretrained(path)
    proc.save_pretrained(path)
    return model


def test_hf_llava_phi_checkpoint_loads_and_lenses(tmp_path):
    ref = save_checkpoint(tmp_path)
    s = load_subject(f"hf:{tmp_path}")
    assert s.grid == 5 and not s.has_cls and s.n_image_tokens == 25 and s.image_token_id == IMAGE_ID
    ids = s.build_prompt(s.n_image_tokens, "Is there a dog in the image.")
    assert ids.count(IMAGE_ID) == 25 and ids[:1] == [4]  # USER: first, then the image tokens
    wide = Image.fromarray((np.random.default_rng(0).random((40, 90, 3)) * 255).astype("uint8"))
    assert s.seen(wide).size == (30, 30) and s.transform(wide).shape == (3, 30, 30)
    inputs = s.inputs(torch.stack([s.transform(wide)] * 2), ["Is there a dog", None])
    hs, logits = residuals(s, inputs)
    probs, top = lens_topk(s, hs, 3)
    ref_top = torch.softmax(logits.float(), -1).topk(3, -1)
    assert torch.equal(top[-1], ref_top.indices)
    with torch.no_grad():  # the loaded weights are the saved ones
        torch.testing.assert_close(ref(**inputs).logits, logits)


def test_not_a_checkpoint_is_one_line(tmp_path):
    with pytest.raises(UserError, match="config.json"):
        load_subject(f"hf:{tmp_path}")
