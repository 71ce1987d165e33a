"""Shared test fixtures: tiny real models and probe sets generated on the fly (nothing downloaded)."""

import os

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)

TINY_CNN = '''
import torch
from torch import nn

from neuronatlas.models.target import Preprocess


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.act1 = nn.ReLU()
        self.conv2 = nn.Conv2d(8, 6, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(6, 5)

    def forward(self, x):
        x = self.conv2(self.act1(self.conv1(x)))
        return self.fc(self.pool(x).flatten(1))


def build():
    torch.manual_seed(0)
    return TinyCNN().eval(), Preprocess(size=32, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
'''


def missing_tool(why: str):
    """A test needs a tool that is not installed: skip on a laptop, fail under CI (whose set-up,
    scripts/setup.sh, installs it), so that CI never passes by skipping."""
    if os.environ.get("CI"):
        pytest.fail(f"{why}: scripts/setup.sh must install it (Debian's chromium, node, the pip extras)")
    pytest.skip(why)


@pytest.fixture
def tiny_cnn_file(tmp_path):
    path = tmp_path / "tinycnn.py"
    path.write_text(TINY_CNN)
    return f"{path}:build"


def make_images(folder, n, size=40, seed=0, classes=("a", "b")):
    """n random RGB PNGs in class sub-folders; returns their paths in sorted order."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        d = folder / classes[i % len(classes)]
        d.mkdir(parents=True, exist_ok=True)
        arr = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        p = d / f"img{i:04d}.png"
        Image.fromarray(arr).save(p)
        paths.append(p)
    return sorted(paths)


@pytest.fixture
def image_folder(tmp_path):
    folder = tmp_path / "images"
    make_images(folder, 30)
    return folder


def tiny_hf_clip_target(seed=0, vision_layers=1):
    """A random-weight transformers CLIPModel small enough for unit tests (32 px, patch 8)."""
    import transformers

    from neuronatlas.models.hf_adapter import target_from_hf_model
    from neuronatlas.models.target import Preprocess

    torch.manual_seed(seed)
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16, eos_token_id=63,
                         bos_token_id=0, pad_token_id=0),
        vision_config=dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=vision_layers, num_attention_heads=2), projection_dim=16)
    model = transformers.CLIPModel(cfg).eval()
    return target_from_hf_model(model, Preprocess(32, (0.5,) * 3, (0.5,) * 3), spec="hf:<tiny>")
