"""Save and load SAEs in SAELens's on-disk format: `cfg.json` + `sae_weights.safetensors`.

Our own training record goes next to them in `neuronatlas.json` (SAELens ignores it). The input
scale is folded into the weights on save (W_enc x s, W_dec / s, b_dec / s: all three, the omission
of b_dec was SAELens#354), so the files encode raw activations and load in SAELens as they are; the
scale itself is kept in neuronatlas.json for the record.

Loading takes a folder (ours or SAELens's, v6 nested or pre-6 flat cfg.json) or a hub id
`REPO_ID` / `REPO_ID:SUBFOLDER` (downloaded once into the hub cache). Conventions other than ours are
folded in on load so one encode path serves all: apply_b_dec_to_input=false and
rescale_acts_by_decoder_norm=true are rewritten into equivalent weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import UserError
from .architectures import build_sae
from .base import SparseAutoencoder
from .config import SAEConfig, write_json

CFG_FILE, WEIGHTS_FILE, OURS_FILE = "cfg.json", "sae_weights.safetensors", "neuronatlas.json"
SAELENS_VERSION = "6.0.0"  # the cfg.json layout we write (nested metadata, v6 and later)
# our architecture -> SAELens's inference architecture (BatchTopK infers as one-threshold JumpReLU)
TO_SAELENS = {"topk": "topk", "relu": "standard", "jumprelu": "jumprelu", "batchtopk": "jumprelu"}


def save_sae(sae: SparseAutoencoder, folder: str | Path, metadata: dict | None = None,
             record: dict | None = None) -> Path:
    """Write cfg.json, sae_weights.safetensors (SAELens) and neuronatlas.json into `folder`."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = sae.cfg
    arch = TO_SAELENS[cfg.architecture]
    meta = {"sae_lens_version": SAELENS_VERSION, "sae_lens_training_version": None,
            "model_name": None, "hook_name": None, **(metadata or {})}
    saelens_cfg = {"architecture": arch, "d_in": cfg.d_in, "d_sae": cfg.d_sae, "dtype": "float32",
                   "device": "cpu", "apply_b_dec_to_input": True, "normalize_activations": "none",
                   "reshape_activations": "none", "metadata": meta}
    if arch == "topk":
        saelens_cfg.update(k=cfg.k, rescale_acts_by_decoder_norm=False)
    tensors = {k: v.contiguous() for k, v in sae.folded_state().items()}
    tmp = folder / (WEIGHTS_FILE + ".tmp")
    save_file(tensors, str(tmp))
    tmp.replace(folder / WEIGHTS_FILE)
    write_json(folder / CFG_FILE, saelens_cfg)
    write_json(folder / OURS_FILE, {"format": 1, "sae_config": cfg.to_json(),
                                    "scale": float(sae.scale), **(record or {})})
    return folder


def _from_hub(source: str) -> Path:
    repo, _, sub = source.partition(":")
    try:
        from huggingface_hub import snapshot_download

        root = snapshot_download(repo, allow_patterns=[f"{sub}/*"] if sub else None)
    except Exception as e:  # offline, unknown repo, no access: one line, with what to do
        raise UserError(f"cannot get SAE '{source}' from the hub ({type(e).__name__}): pass a local "
                        f"folder with cfg.json and sae_weights.safetensors instead") from None
    return Path(root) / sub if sub else Path(root)


def _read_cfg(folder: Path) -> dict:
    try:
        cfg = json.loads((folder / CFG_FILE).read_text())
    except (OSError, ValueError) as e:
        raise UserError(f"{folder / CFG_FILE} cannot be read ({type(e).__name__}): an SAE folder "
                        f"needs cfg.json and {WEIGHTS_FILE}") from None
    if "metadata" not in cfg:  # pre-6.0 flat layout
        cfg = dict(cfg)
        act = cfg.get("activation_fn_str", cfg.get("activation_fn", "relu"))
        kwargs = cfg.get("activation_fn_kwargs") or {}
        arch = cfg.get("architecture", "standard")
        if arch == "standard" and act == "topk":
            arch, cfg["k"] = "topk", kwargs.get("k", cfg.get("k"))
        cfg["architecture"] = arch
        cfg.setdefault("apply_b_dec_to_input", True)
    return cfg


def _our_config(cfg: dict, state: dict, folder: Path) -> SAEConfig:
    arch = cfg["architecture"]
    ours = folder / OURS_FILE
    if ours.exists():  # our own file: rebuild the exact architecture (batchtopk included)
        return SAEConfig.from_json(json.loads(ours.read_text())["sae_config"])
    names = {"standard": "relu", "relu": "relu", "topk": "topk", "jumprelu": "jumprelu"}
    if arch not in names:
        raise UserError(f"SAE architecture '{arch}' in {folder / CFG_FILE} is not supported: "
                        f"supported are standard, topk and jumprelu")
    d_in, d_sae = state["W_enc"].shape
    return SAEConfig(architecture=names[arch], d_in=int(d_in), d_sae=int(d_sae),
                     k=int(cfg.get("k") or 1))


def load_sae(source: str | Path) -> SparseAutoencoder:
    """An SAE (eval mode, scale folded in) from a folder or a hub id."""
    from safetensors.torch import load_file

    folder = Path(source)
    if not folder.exists():
        if str(source).startswith((".", "/")) or Path(str(source)).suffix:
            raise UserError(f"SAE folder {source} does not exist: check the path")
        folder = _from_hub(str(source))
    cfg = _read_cfg(folder)
    try:
        state = load_file(str(folder / WEIGHTS_FILE))
    except Exception as e:
        raise UserError(f"{folder / WEIGHTS_FILE} cannot be read ({type(e).__name__}): an SAE "
                        f"folder needs cfg.json and {WEIGHTS_FILE}") from None
    state = {k: v.to(torch.float32) for k, v in state.items()}
    norm = cfg.get("normalize_activations", "none")
    if norm not in ("none", None):
        raise UserError(f"{folder / CFG_FILE} asks for normalize_activations='{norm}', which is "
                        f"applied at run time: fold it into the weights first (SAELens "
                        f"fold_activation_norm_scaling_factor)")
    if not cfg.get("apply_b_dec_to_input", True):
        # x @ W_enc + b_enc == (x - b_dec) @ W_enc + (b_enc + b_dec @ W_enc)
        state["b_enc"] = state["b_enc"] + state["b_dec"] @ state["W_enc"]
    if cfg.get("rescale_acts_by_decoder_norm"):
        norms = state["W_dec"].norm(dim=1)
        state["W_enc"], state["b_enc"] = state["W_enc"] * norms, state["b_enc"] * norms
        state["W_dec"] = state["W_dec"] / norms[:, None]
    sae = build_sae(_our_config(cfg, state, folder))
    sae.load_folded_state(state)
    return sae.eval()
