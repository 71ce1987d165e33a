"""Greedy answers of a Llava model to one prompt per image, optionally under an intervention (a
context manager that hooks the model: token ablation, attention knockout). No KV cache: every step
runs the whole sequence, so an intervention on prompt positions holds at every step exactly as if
it were applied once at prefill. Rows are right-padded; the next token is read at each row's last
real position. The vision tower runs once per call: the image features are written into the input
embeddings as the model's own forward does (tested equal)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .ablation import image_features
from .subject import VlmSubject


@dataclass
class Answers:
    text: list[str]  # decoded greedy answers (special tokens dropped)
    first_token: list[str]  # the first generated token, decoded ("" if it was end of sequence)
    target_prob: torch.Tensor  # [B] probability of each row's target token at the first step


def eos_id(subject: VlmSubject) -> int | None:
    tok = subject.tokenizer
    e = getattr(tok, "eos_token_id", None) if tok is not None else None
    return e if e is not None else getattr(subject.config.text_config, "eos_token_id", None)


def decode(subject: VlmSubject, ids: list[int]) -> str:
    if subject.tokenizer is not None:
        return subject.tokenizer.decode(ids, skip_special_tokens=True).strip()
    return " ".join(subject.decode_token(i) for i in ids)


def token_id(subject: VlmSubject, word: str) -> int:
    """The first token of `word` (the answer token whose probability is tracked)."""
    return int(subject.tokenizer(word, add_special_tokens=False)["input_ids"][0])


@torch.no_grad()
def greedy(subject: VlmSubject, pixels: torch.Tensor, prompts: list, max_new_tokens: int = 1,
           intervention=None, targets: list[int] | None = None) -> Answers:
    """`intervention(inputs) -> context manager` is entered around every forward pass."""
    base = subject.inputs(pixels, prompts)
    seqs = [row[: int(m.sum())].tolist() for row, m in zip(base["input_ids"], base["attention_mask"])]
    pad = getattr(subject.config.text_config, "pad_token_id", None) or 0
    end = eos_id(subject)
    outs: list[list[int]] = [[] for _ in seqs]
    done = [False] * len(seqs)
    target_prob = torch.full((len(seqs),), float("nan"))
    feats = image_features(subject, pixels)  # the vision tower runs once, not once per step
    table = subject.model.get_input_embeddings()

    def embed(ids):  # what the model's own forward builds from input_ids + pixel_values
        emb = table(ids)
        img = ids == subject.image_token_id
        emb[img] = feats.reshape(-1, feats.shape[-1]).to(emb.dtype)
        return emb

    ctx = intervention(base) if intervention is not None else contextlib.nullcontext()
    with ctx:
        for step in range(max_new_tokens):
            n = max(len(s) for s in seqs)
            ids = torch.tensor([s + [pad] * (n - len(s)) for s in seqs])
            mask = (torch.arange(n)[None] < torch.tensor([len(s) for s in seqs])[:, None]).long()
            logits = subject.model(inputs_embeds=embed(ids), attention_mask=mask).logits
            last = logits[torch.arange(len(seqs)), mask.sum(1) - 1].float()
            if step == 0 and targets is not None:
                target_prob = torch.softmax(last, -1)[torch.arange(len(seqs)), torch.tensor(targets)]
            nxt = last.argmax(-1).tolist()
            for i, t in enumerate(nxt):
                if done[i]:
                    continue
                if t == end:
                    done[i] = True
                else:
                    outs[i].append(t)
                    seqs[i] = seqs[i] + [t]
            if all(done):
                break
    first = [decode(subject, o[:1]) if o else "" for o in outs]
    return Answers([decode(subject, o) for o in outs], first, target_prob)
