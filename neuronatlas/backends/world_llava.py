"""`zoo:world-llava` as a chat client: the embedded world model, offline, on the CPU.

world-llava does not follow free instructions: it was trained to caption world images and to answer
world questions (neuronatlas.worldmodels.arch.llava). So the client reads the request as follows:
- if the last user text has a sentence ending in "?" whose words are all in the world vocabulary
  (e.g. "Is there a red circle?"), that question is asked of each image;
- otherwise each image is captioned;
- a request without images is refused (it cannot summarise text: use an offline summariser).
Several images in one request get one answer each, joined by newlines. Token counts are the prompt
ids (image tokens included) and the generated ids.
"""

from __future__ import annotations

import hashlib
import re
import threading

import torch

from ..errors import UserError
from .chat import ChatClient, ChatError, ChatRequest, ChatResponse


def _weights_hash(path: str) -> str:
    h = hashlib.blake2b(digest_size=8)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class WorldLlavaClient(ChatClient):
    name = "zoo:world-llava"
    reads_text_only = False

    def __init__(self, weights: str | None = None, max_new_tokens: int = 40, **kwargs):
        import os

        from ..worldmodels import weights_dir
        from ..worldmodels.arch.checkpoint import load_world_model
        from .world_clip import preprocess

        self.model, self.tokenizer = load_world_model("world-llava", weights)
        self.transform = preprocess(self.model.config.vision_config.image_size).transform()
        self.max_new_tokens = max_new_tokens
        folder = weights or weights_dir("world-llava")
        # the weights' content names the model: a retrained world-llava never reuses old answers
        self.model_id = f"zoo:world-llava#{_weights_hash(os.path.join(folder, 'model.safetensors'))}"
        self._lock = threading.Lock()  # one forward at a time (torch uses the cores already)
        self._vocab = set(self.tokenizer.get_vocab())
        super().__init__(**kwargs)

    def question(self, text: str) -> str | None:
        """The last '?'-ended sentence of `text` made only of world words, lower-cased; else None."""
        for sentence in reversed(re.findall(r"[^.?!\n]*\?", text)):
            q = " ".join(sentence.lower().replace("?", " ?").split())
            if q and all(w in self._vocab for w in q.split()):
                return q.replace(" ?", "?")
        return None

    def _complete(self, request: ChatRequest) -> ChatResponse:
        from ..worldmodels.arch.llava import answer_batch, prompt_ids, prompt_order

        images = [im for m in request.messages if m.role == "user" for im in m.images()]
        if not images:
            raise ChatError("zoo:world-llava only answers questions about images; for text-only "
                            "steps (summaries) leave --llm unset (offline summariser) or pass an "
                            "openai: model")
        q = self.question(request.last_user_text())
        pixels = torch.stack([self.transform(im.to_pil()) for im in images])
        n_new = min(self.max_new_tokens, request.max_tokens) if q is None else 1
        with self._lock, torch.no_grad():
            answers = answer_batch(self.model, self.tokenizer, pixels, [q] * len(images), n_new)
        n_img = self.model.config.image_seq_length
        order = prompt_order(self.model.config)
        prompt = sum(len(prompt_ids(self.tokenizer, n_img, q, order)) for _ in images)
        completion = sum(len(self.tokenizer(a, add_special_tokens=False)["input_ids"]) + 1
                         for a in answers)
        return ChatResponse("\n".join(a.strip() for a in answers), prompt, completion)


def load(arg: str, **kwargs) -> ChatClient:
    if arg != "world-llava":
        raise UserError(f"zoo:{arg} is not a chat model; the zoo's VLM is zoo:world-llava")
    return WorldLlavaClient(**kwargs)
