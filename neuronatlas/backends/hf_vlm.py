"""A local transformers VLM as a chat client: `hf-vlm:PATH` (a saved model directory or a hub id
already in the local cache), loaded with AutoModelForImageTextToText + AutoProcessor. That covers
LLaVA / LLaVA-NeXT, Qwen2-VL / Qwen2.5-VL, InternVL (the `-hf` checkpoints), Idefics, Gemma 3...

The conversation goes through the processor's chat template (images as {"type": "image"} parts, in
message order), then the processor (text + images) and greedy `generate` (or sampling when the
request's temperature > 0). Token counts: the prompt's input ids and the new ids. bfloat16 on CUDA,
float32 on the CPU. One generate runs at a time (a lock); the concurrency limit matters for servers.
"""

from __future__ import annotations

import hashlib
import os
import threading

import torch

from ..errors import UserError
from .chat import ChatClient, ChatRequest, ChatResponse


def weights_fingerprint(path: str) -> str:
    """Names, sizes and mtimes of the checkpoint's files (not their content: hashing 16 GB of
    safetensors on every start would be slow); any re-save changes it."""
    h = hashlib.blake2b(digest_size=8)
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            st = os.stat(os.path.join(path, name))
            h.update(f"{name}:{st.st_size}:{st.st_mtime_ns};".encode())
    else:
        h.update(path.encode())
    return h.hexdigest()


def to_template_messages(request: ChatRequest) -> tuple[list[dict], list]:
    msgs, images = [], []
    for m in request.messages:
        parts = []
        for c in m.content:
            if isinstance(c, str):
                parts.append({"type": "text", "text": c})
            else:
                parts.append({"type": "image"})
                images.append(c.to_pil())
        msgs.append({"role": m.role, "content": parts})
    return msgs, images


class HFVLMClient(ChatClient):
    def __init__(self, path: str, device: str | None = None, dtype=None, **kwargs):
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if not path:
            raise UserError("hf-vlm: needs a model directory, e.g. hf-vlm:/models/Qwen2-VL-2B-Instruct")
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        dtype = dtype or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        try:
            self.processor = AutoProcessor.from_pretrained(path)
            self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise UserError(f"hf-vlm:{path} could not be loaded ({' '.join(str(exc).split())[:200]}): "
                            f"pass a directory saved with save_pretrained (model + processor) of an "
                            f"image-text-to-text model") from None
        self.model.to(self.device).eval()
        self.path = path
        self.name = f"hf-vlm:{path}"
        self.model_id = f"{self.name}#{weights_fingerprint(path)}"
        self._lock = threading.Lock()
        super().__init__(**kwargs)

    def _complete(self, request: ChatRequest) -> ChatResponse:
        msgs, images = to_template_messages(request)
        prompt = self.processor.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
        inputs = self.processor(text=[prompt], images=images or None, return_tensors="pt")
        inputs = {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in inputs.items()}
        if "pixel_values" in inputs and inputs["pixel_values"].is_floating_point():
            inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
        sample = request.temperature > 0
        gen = dict(max_new_tokens=request.max_tokens, do_sample=sample)
        if sample:
            gen["temperature"] = request.temperature
        with self._lock, torch.no_grad():
            out = self.model.generate(**inputs, **gen)
        n_prompt = inputs["input_ids"].shape[1]
        new = out[0, n_prompt:]
        text = self.processor.decode(new, skip_special_tokens=True)
        return ChatResponse(text.strip(), int(n_prompt), int(new.numel()))


def load(arg: str, **kwargs) -> HFVLMClient:
    return HFVLMClient(arg, **kwargs)
