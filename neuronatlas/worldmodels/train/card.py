"""MODEL_CARD.md for a trained world model, written from its checkpoint, plan and metrics."""

from __future__ import annotations

import json
import os


def _params(out_dir: str) -> dict:
    from safetensors import safe_open

    counts: dict[str, int] = {}
    with safe_open(os.path.join(out_dir, "model.safetensors"), "pt") as f:
        for k in f.keys():
            n = 1
            for d in f.get_slice(k).get_shape():
                n *= d
            top = "vision" if "vision" in k else ("text/language" if ("text" in k or "language" in k
                                                                      or "lm_head" in k) else "other")
            counts[top] = counts.get(top, 0) + n
    counts["total"] = sum(counts.values())
    return counts


def _world(spec) -> str:
    if not spec:
        return "full world"
    return ", ".join(f"{k}={v}" for k, v in spec.items())


_QUERY_AT = {"word": "last object-naming word", "answer": '"?" (where the answer is predicted)'}


def _llava_prompt_line(config: dict) -> str:
    n = config["image_seq_length"]
    if config.get("prompt_order", "image-first") == "question-first":
        return (f"- prompt (question first, so the image tokens are read in the light of the question): "
                f"`<bos> QUESTION-WORDS <image>x{n}` -> `ANSWER <eos>`; captioning: `<bos> <caption> "
                f"<image>x{n}` -> `CAPTION <eos>` (the image token written {n} times)")
    return (f"- prompt: `<bos> <image>x{n} QUESTION-WORDS` -> `ANSWER <eos>`; captioning: `<bos> "
            f"<image>x{n} <caption>` -> `CAPTION <eos>` (the image token written {n} times)")


def write_card(name: str, out_dir: str, metrics: dict, plan: dict, threads: int) -> str:
    with open(os.path.join(out_dir, "config.json")) as f:
        config = json.load(f)
    params = _params(out_dir)
    state = {}
    if os.path.isfile(os.path.join(out_dir, "train_state.json")):
        with open(os.path.join(out_dir, "train_state.json")) as f:
            state = json.load(f)
    v = config["vision_config"]
    t = config["text_config"]
    lines = [f"# {name}", ""]
    if name == "world-clip":
        lines += [
            "A small transformers `CLIPModel` trained by neuronatlas on the procedural world "
            "(`neuronatlas/data/world`). Load it with `load_target(\"zoo:world-clip\")`; "
            "`target.extras[\"scorer\"]` is an `ImageTextScorer`.", "",
            "## Architecture",
            f"- vision: ViT, {v['image_size']} px input, patch {v['patch_size']} "
            f"({(v['image_size'] // v['patch_size']) ** 2} patches + CLS), hidden {v['hidden_size']}, "
            f"{v['num_hidden_layers']} layers, {v['num_attention_heads']} heads, MLP {v['intermediate_size']}",
            f"- text: hidden {t['hidden_size']}, {t['num_hidden_layers']} layers, MLP "
            f"{t['intermediate_size']}, word-level vocabulary of {t['vocab_size']} ids (tokenizer.json; "
            f"eos id {t['eos_token_id']}, so pooling reads the first <eos>), max {t['max_position_embeddings']} tokens",
            f"- projection {config['projection_dim']}",
            f"- parameters: {params['total']:,} (vision {params.get('vision', 0):,}, text "
            f"{params.get('text/language', 0):,}, other {params.get('other', 0):,})",
            f"- preprocessing: render (or resize) to {v['image_size']}x{v['image_size']}, scale to [0, 1], "
            "normalise with mean = std = 0.5",
            "", "## Training data and curriculum",
            f"World seed 10 + seed (`TRAIN_WORLD_SEED`) plus a per-pool offset, images rendered at "
            f"{v['image_size']} px (supersampled and box-averaged), pre-rendered pools: "
            + "; ".join(f"`{k}` {p['n']} scenes (offset {p['offset']}, "
                        f"{_world(p['world'])})" for k, p in plan["pools"].items())
            + f". Batch {plan['batch']}, AdamW lr {plan['lr']} ({plan['warmup']} warm-up steps, one "
            f"cosine to 5% over all phases), weight decay {plan['weight_decay']}, grad clip 1.",
            *[f"{i + 1}. {ph['name']} ({ph['steps']} steps): "
              + ("contrastive CLIP loss plus " + str(ph.get("sup_weight", 0.5)) + " x the supervised "
                 "losses" if ph.get("contrastive") else "supervised vision warm-up")
              + "; batches " + ", ".join(f"{share:.0%} `{k}`" for k, share in ph["mix"].items())
              + "; head weights " + ", ".join(f"{k} {w}" for k, w in ph["heads"].items()) + "."
              for i, ph in enumerate(plan["phases"])],
            "Supervision (heads not part of the checkpoint): `slot` = linear heads on the pooled CLS "
            "output predict shape / colour / texture / size of the object in each slot (left / center "
            "/ right / empty); `patch` = heads on each patch token predict shape / colour / texture of "
            "the object covering it (or background); `present` = position-free heads on the pooled "
            "output predict which shapes / colours / textures are in the image (soft cross-entropy).",
            "Contrastive texts: the full caption (50%) or a partial description of one object (\"a red "
            "thing\", \"a small star on the left\", ...); multi-positive targets (every text in the "
            "batch true of an image is its match).",
            f"The checkpoint kept is the one with the best zero-shot colour + shape on {plan['eval_n']} "
            f"validation images (world seed 998, disjoint from the test world), checked every "
            f"{plan['eval_every']} steps of the contrastive phase and at the end. The vision tower "
            "after the supervised phase is saved as `warmup_vision.safetensors` (world-llava starts "
            "from it in plans v2, v3 and v7-v9).",
            "", "## Held-out metrics (protocol)",
            "Zero-shot top-1 on 1000 held-out single-object images (world seed 999, full world: every "
            "texture, size, background): colour = argmax over the 11 prompts \"a {color} thing\", shape "
            "= argmax over the 9 prompts \"a {shape}\" (chance 9% and 11%).",
        ]
    else:
        lines += [
            "A small transformers `LlavaForConditionalGeneration` trained by neuronatlas to caption and "
            "answer questions about procedural-world images. Load it with "
            "`load_target(\"zoo:world-llava\")` (the forward is vision tower + projector); the full "
            "model and tokenizer are in `target.extras`.", "",
            "## Architecture",
            f"- vision tower: world-clip's (ViT {v['image_size']} px, patch {v['patch_size']}, hidden "
            f"{v['hidden_size']}, {v['num_hidden_layers']} layers), initialised from world-clip's "
            f"{'tower after its supervised warm-up (warmup_vision.safetensors)' if plan.get('tower') == 'warmup' else 'final tower'}"
            + (f" and fine-tuned at {plan['vision_lr_scale']}x the learning rate" if plan['vision_lr_scale']
               else ", frozen (world-llava sees exactly those features)"),
            (f"- image features: all {config['image_seq_length']} tokens (CLS + patches; "
             if config["vision_feature_select_strategy"] == "full" else
             f"- image features: the {config['image_seq_length']} patch tokens (CLS dropped, as in LLaVA-1.5; ")
            + f"vision_feature_select_strategy={config['vision_feature_select_strategy']!r}) of layer "
            f"{config['vision_feature_layer']}, GELU 2-layer projector",
            f"- language model: Llama, hidden {t['hidden_size']}, {t['num_hidden_layers']} layers, "
            f"{t['num_attention_heads']} heads, MLP {t['intermediate_size']}, vocabulary {t['vocab_size']} "
            f"(image token id {config['image_token_index']})",
            f"- parameters: {params['total']:,} (vision {params.get('vision', 0):,}, language "
            f"{params.get('text/language', 0):,}, projector {params.get('other', 0):,})",
            _llava_prompt_line(config),
            "", "## Training data",
            f"{plan['pool']} full-world scenes (world seed 1010 + seed), {v['image_size']} px"
            + (f"; the first {plan['single_steps']} steps on {plan['single_pool']} one-object scenes "
               "(world seed 1510 + seed)" if plan.get("single_steps") else "") + ". "
            f"{plan['steps']} steps of batch {plan['batch']} images, each with up to {plan['k']} "
            "questions of all kinds (weights " + ", ".join(f"{k} {w}" for k, w in plan["kind_weight"].items())
            + (") in one multi-turn row per image" if config.get("prompt_order", "image-first") == "image-first"
               else ") as one row per question (the image repeated in each)")
            + (f", and, for {plan.get('p_caption', 0.25):.0%} of the images, the caption as well"
               if plan.get("p_caption", 0.25) else "")
            + (f"; {plan['p_caption_only']:.0%} of the images are captioned alone instead (the caption "
               "right after the image, as at inference)" if plan.get("p_caption_only") else "")
            + "; loss on answer tokens only"
            + ((f", plus {plan['sup_weight']} x world-clip's supervised scene losses (slot, patch and "
                "present heads on the tower's output; not part of the checkpoint)") if plan["sup_weight"] else "")
            + ((f", plus {plan['bind_weight']} x a binding loss (binding.py): "
                + "; ".join(f"at each question's {_QUERY_AT[at]}, head {head} of language layer {layer}"
                            for at, layer, head in plan["bind_heads"])
                + " is trained to attend to the named object's patch tokens"
                + (" (to <bos> when a presence question's answer is no)" if plan.get("bind_absent") else "")
                + "; the loss is -log of that attention mass"
                + (f", plus {plan['bind_readout']} x linear readout heads there predicting the named "
                   "object's shape and colour (not part of the checkpoint)" if plan.get("bind_readout") else ""))
               if plan.get("bind_weight") else "")
            + (f"; vision tower at {plan['vision_lr_scale']}x the learning rate" if plan["vision_lr_scale"]
               else "; vision tower frozen") + ". AdamW lr "
            f"{plan['lr']} ({plan['warmup']} warm-up steps, cosine to 5%). The checkpoint kept is the "
            f"best on {plan['eval_n']} validation scenes (world seed 999, presence + color + shape "
            f"accuracy; disjoint from the test world 1000), checked every {plan['eval_every']} steps.",
            "", "## Held-out metrics (protocol)",
            "On 300 held-out full-world scenes (world seed 1000, 1-3 objects): every presence "
            "(\"is there a red circle?\"), color (\"what color is the circle?\") and shape (\"what shape "
            "is the red thing?\") question `questions(scene)` gives; the greedy next token after the "
            "question must equal the one-word answer (argmax over the whole vocabulary).",
        ]
    by = metrics.get("by")
    headline = {k: v for k, v in metrics.items() if k != "by"}
    lines += ["", "## Result", "```", json.dumps(headline, indent=1), "```", ""]
    if by:
        lines += ["Zero-shot shape top-1 of the same test images, broken down (headline = all of them):", "",
                  "| by | value | shape top-1 | n |", "|---|---|---|---|"]
        lines += [f"| {attr} | {k} | {r['shape_top1']:.3f} | {r['n']} |"
                  for attr, groups in by.items() for k, r in groups.items()]
        lines += [""]
    lines += [
              f"Seed {metrics.get('seed', 0)}; {metrics.get('steps')} steps; wall time "
              f"{metrics.get('train_seconds', 0) / 60:.1f} min on a shared 2-core CPU with torch threads = "
              f"{threads}. Checkpoint saved at step {state.get('step')}.", "",
              "Reproduce:", "```",
              f"neuronatlas zoo eval {name}        # = python -m neuronatlas.worldmodels.train eval {name}",
              f"neuronatlas zoo train {name} --out DIR --seed 0"
              + (" --threads 1" if threads == 1 else "") + "   # retrain (world-llava starts from the "
              "committed world-clip's warmup_vision.safetensors; --clip-weights DIR for another)",
              "```",
              "Training is deterministic given the seed and thread count (fixed data order and step "
              "counts); `--minutes` is only a safety stop."]
    path = os.path.join(out_dir, "MODEL_CARD.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
