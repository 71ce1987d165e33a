"""Which scalar output is explained: a class logit, or an image-text score for CLIP-style models.

- classifier (output (1, C)): the logit of `target_class` (a class index or name), by default the
  predicted class; the text says "predicted 'NAME' (p 0.93)".
- image-text (a prompt given): the cosine of the model's image embedding with the prompt's text
  embedding from the model's own scorer (zoo:world-clip, open_clip, hf CLIP).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import UserError


def output_vectors(out) -> torch.Tensor:
    out = out[0] if isinstance(out, (tuple, list)) else out
    if hasattr(out, "logits"):
        out = out.logits
    if hasattr(out, "image_embeds"):
        out = out.image_embeds
    if not isinstance(out, torch.Tensor):
        raise UserError(f"the model's output ({type(out).__name__}) is not a tensor: explain needs "
                        f"logits or an embedding")
    return out.reshape(out.shape[0], -1)


def choose_objective(target, clean, target_class=None, text: str | None = None):
    """(objective(out) -> (B,) tensor, description dict) for the model's clean output."""
    vec = output_vectors(clean)
    if text is not None:
        from ..backends.clip import scorer_from_target

        scorer = scorer_from_target(target)
        emb = scorer.encode_texts([text])[0].to(vec.device, vec.dtype)

        def objective(out):
            return F.normalize(output_vectors(out), dim=-1) @ emb

        score = float(objective(clean)[0])
        return objective, {"kind": "text", "prompt": text, "value": score,
                           "text": f"image-text score for '{text}' ({score:.3f})"}
    names = list(target.class_names or [])
    if target_class is None:
        c = int(vec[0].argmax())
    elif str(target_class).lstrip("-").isdigit():
        c = int(target_class)
    elif str(target_class) in names:
        c = names.index(str(target_class))
    else:
        raise UserError(f"unknown class '{target_class}': pass an index (0..{vec.shape[1] - 1})"
                        + (f" or one of the model's class names" if names else ""))
    if not 0 <= c < vec.shape[1]:
        raise UserError(f"class {c} is outside the model's {vec.shape[1]} outputs")

    def objective(out):
        return output_vectors(out)[:, c]

    name = names[c] if c < len(names) else str(c)
    p = float(F.softmax(vec[0].double(), dim=0)[c])
    verb = "predicted" if target_class is None else "class"
    return objective, {"kind": "class", "class": c, "name": name, "logit": float(vec[0, c]),
                       "probability": p, "text": f"{verb} '{name}' (p {p:.2f})"}
