"""The world tokenizer: word-level, every world word known, round trips, CLIP-safe eos id."""

from neuronatlas.data.world import all_words, caption, questions, sample_scene, tokenize
from neuronatlas.worldmodels.arch.tokenizer import (BOS_ID, EOS_ID, IMAGE_ID, PAD_ID, UNK_ID, build_tokenizer,
                                               load_tokenizer, save_tokenizer)


def test_ids_and_specials():
    tok = build_tokenizer()
    assert len(tok) == len(all_words()) + 6
    assert (tok.pad_token_id, tok.unk_token_id, tok.bos_token_id, tok.eos_token_id) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
    assert tok.eos_token_id != 2  # CLIP pools at argmax(input_ids) when eos_token_id == 2
    assert tok.image_token_id == IMAGE_ID == tok.convert_tokens_to_ids("<image>")
    for w in all_words():
        assert tok.convert_tokens_to_ids(w) != UNK_ID, w


def test_round_trip_captions_and_questions(tmp_path):
    tok = build_tokenizer()
    save_tokenizer(tok, str(tmp_path))
    tok2 = load_tokenizer(str(tmp_path))
    for i in range(30):
        scene = sample_scene(0, i)
        texts = [caption(scene)] + [q.question for q in questions(scene)] + [q.answer for q in questions(scene)]
        for text in texts:
            ids = tok(text)["input_ids"]
            assert ids[0] == BOS_ID and ids[-1] == EOS_ID and UNK_ID not in ids
            assert ids == tok2(text)["input_ids"]
            assert tok.decode(ids, skip_special_tokens=True) == " ".join(tokenize(text))
    assert tok("What SHAPE is the red thing?", add_special_tokens=False)["input_ids"][-1] == \
        tok.convert_tokens_to_ids("?")
    assert tok("a zebra")["input_ids"][2] == UNK_ID
