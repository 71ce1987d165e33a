"""The CLIP second-order lens (docs/methods/second-order.md): what each MLP neuron of a CLIP ViT adds
to the image embedding through the attention heads of the later blocks, its rank-1 approximation,
significance, and the ablation suite.

    from neuronatlas.lens import SecondOrderConfig, compute_second_order, open_second_order
    res = compute_second_order("zoo:world-clip", "world:n=2000,size=32", "runs/so",
                               SecondOrderConfig(layer="2"))
    res.pc, res.mean_effect, res.threshold, res.top_index      # per neuron
    target, lens = load_lens("zoo:world-clip", SecondOrderConfig(layer="2"))
    lens.coefficients(pixels), lens.effects(...), lens.token_maps(pixels, direction)
"""

from ..run import SecondOrderResult, open_second_order, second_order_layers
from .ablation import (CONDITIONS, AblationStats, ZeroShotTask, ablated_embeddings, zero_shot_ablations,
                       zero_shot_task)
from .compute import SecondOrderConfig, compute_second_order, lens_for, load_lens
from .rank1 import first_components, pcs_of, significance_threshold, significant
from .reference import naive_effects
from .effects import SCALES, Coefficients, SecondOrderLens
from .vit import BlockView, ClipViT, LayerNormView, Trace

__all__ = [
    "ClipViT", "BlockView", "LayerNormView", "Trace",
    "SecondOrderLens", "Coefficients", "SCALES",
    "SecondOrderConfig", "compute_second_order", "load_lens", "lens_for",
    "SecondOrderResult", "open_second_order", "second_order_layers",
    "first_components", "pcs_of", "significance_threshold", "significant",
    "CONDITIONS", "AblationStats", "ablated_embeddings", "ZeroShotTask", "zero_shot_task",
    "zero_shot_ablations", "naive_effects",
]
