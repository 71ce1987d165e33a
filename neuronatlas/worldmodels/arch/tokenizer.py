"""A word-level tokenizer over the world's vocabulary (`all_words()`), as a `PreTrainedTokenizerFast`.

Ids: 0 <pad>, 1 <unk>, 2 <image>, 3 <bos>, 4 <eos>, 5 <caption> (the captioning instruction), then
the world's words in sorted order. EOS is deliberately not id 2: CLIP's text pooling falls back to
`argmax(input_ids)` when `eos_token_id == 2` (transformers pitfall). Text is lower-cased and "?" is
split off as its own word (the same rule as `neuronatlas.data.world.tokenize`). Encoding with
`add_special_tokens=True` gives `<bos> words <eos>` (what world-clip's text tower reads).
"""

from __future__ import annotations

import os

PAD, UNK, IMAGE, BOS, EOS, CAPTION = "<pad>", "<unk>", "<image>", "<bos>", "<eos>", "<caption>"
SPECIALS = (PAD, UNK, IMAGE, BOS, EOS, CAPTION)
PAD_ID, UNK_ID, IMAGE_ID, BOS_ID, EOS_ID, CAPTION_ID = range(len(SPECIALS))


def vocabulary() -> dict[str, int]:
    from ...data.world import all_words

    words = list(SPECIALS) + [w for w in all_words() if w not in SPECIALS]
    return {w: i for i, w in enumerate(words)}


def build_tokenizer():
    """A fresh tokenizer for the world's words (deterministic: same ids every time)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(WordLevel(vocab=vocabulary(), unk_token=UNK))
    tok.normalizer = normalizers.Sequence([normalizers.Lowercase(), normalizers.Replace("?", " ?")])
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A {EOS}", pair=f"{BOS} $A {EOS} $B {EOS}",
        special_tokens=[(BOS, BOS_ID), (EOS, EOS_ID)])
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return _wrap(tok)


def _wrap(tok):
    from transformers import PreTrainedTokenizerFast

    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token=PAD, unk_token=UNK, bos_token=BOS, eos_token=EOS,
        extra_special_tokens={"image_token": IMAGE, "caption_token": CAPTION},
        model_max_length=256, padding_side="right")
    return fast


def load_tokenizer(path: str):
    """The tokenizer saved as tokenizer.json in `path` (a directory or the file itself)."""
    from tokenizers import Tokenizer

    if os.path.isdir(path):
        path = os.path.join(path, "tokenizer.json")
    return _wrap(Tokenizer.from_file(path))


def save_tokenizer(tokenizer, out_dir: str) -> str:
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "tokenizer.json")
    tokenizer.backend_tokenizer.save(path)
    return path
