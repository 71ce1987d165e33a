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
            "- preprocessing: render (or resize) to 32x32, scale to [0, 1], normalise with mean = std = 0.5",
            "", "## Training data and curriculum",
            "World seed 10 + seed (`TRAIN_WORLD_SEED`), images rendered at 32 px (8x supersampled and "
            "box-averaged), pre-rendered pools. Batch " + str(plan["batch"]) + ", AdamW lr "
            + str(plan["lr"]) + " (150 warm-up steps, cosine to 5%), weight decay 0.05, grad clip 1.",
            f"1. A1 ({plan['a1_steps']} steps): supervised vision warm-up on {plan['a1_pool']} single "
            f"solid medium/large objects on gray/gradient backgrounds.",
            f"2. A2 ({plan['a2_steps']} steps): the same supervision on {plan['a2_pool']} full-world "
            "scenes (1-3 objects, all shapes, colours, textures, sizes, backgrounds).",
            f"   Supervision: linear heads on the pooled CLS output predict shape / colour / texture / "
            "size of the object in each slot (left / center / right / empty); heads on each patch token "
            "predict shape / colour / texture of the object covering it (or background). The heads are "
            "not part of the checkpoint.",
            f"3. B ({plan['b_steps']} steps): contrastive CLIP loss (plus 0.5 x the supervised losses) on "
            "the full-world pool (3/4 of each batch) and " + str(plan["single_pool"]) + " single-object "
            "scenes (1/4). Texts: the full caption (50%) or a partial description of one object "
            "(\"a red thing\", \"a small star on the left\", ...). Targets are multi-positive: every "
            "text in the batch that is true of an image counts as its match.",
            "The checkpoint kept is the one with the best zero-shot colour + shape on 300 held-out "
            "images, checked every 200 steps of phase B and at the end.",
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
            f"{v['hidden_size']}, {v['num_hidden_layers']} layers), initialised from the trained "
            "world-clip and fine-tuned at 0.25x the learning rate",
            f"- image features: all {config['image_seq_length']} tokens (CLS + patches; "
            f"vision_feature_select_strategy={config['vision_feature_select_strategy']!r}) of layer "
            f"{config['vision_feature_layer']}, GELU 2-layer projector",
            f"- language model: Llama, hidden {t['hidden_size']}, {t['num_hidden_layers']} layers, "
            f"{t['num_attention_heads']} heads, MLP {t['intermediate_size']}, vocabulary {t['vocab_size']} "
            f"(image token id {config['image_token_index']})",
            f"- parameters: {params['total']:,} (vision {params.get('vision', 0):,}, language "
            f"{params.get('text/language', 0):,}, projector {params.get('other', 0):,})",
            "- prompt: `<bos> <image>x65 QUESTION-WORDS` -> `ANSWER <eos>`; captioning: "
            "`<bos> <image>x65 <caption>` -> `CAPTION <eos>` (the image token written 65 times)",
            "", "## Training data",
            f"{plan['pool']} full-world scenes (world seed 1010 + seed), 32 px. {plan['steps']} steps of "
            f"batch {plan['batch']} images, each with up to {plan['k']} questions of all kinds "
            "(weights presence 3, shape 3, color 2, texture 1, position 1, size 0.7, count 0.5) in one "
            "multi-turn row per image, and, for " + f"{plan.get('p_caption', 0.25):.0%}" + " of the images, "
            "the caption as a last turn; loss on answer tokens only; vision tower at "
            + str(plan["vision_lr_scale"]) + "x the learning rate. AdamW lr "
            f"{plan['lr']} (100 warm-up steps, cosine to 5%). The checkpoint kept is the best on 100 "
            "held-out scenes (presence + color + shape accuracy), checked every 250 steps.",
            "", "## Held-out metrics (protocol)",
            "On 300 held-out full-world scenes (world seed 1000, 1-3 objects): every presence "
            "(\"is there a red circle?\"), color (\"what color is the circle?\") and shape (\"what shape "
            "is the red thing?\") question `questions(scene)` gives; the greedy next token after the "
            "question must equal the one-word answer (argmax over the whole vocabulary).",
        ]
    lines += ["", "## Result", "```", json.dumps(metrics, indent=1), "```", "",
              f"Seed {metrics.get('seed', 0)}; {metrics.get('steps')} steps; wall time "
              f"{metrics.get('train_seconds', 0) / 60:.1f} min on a shared 2-core CPU with torch threads = "
              f"{threads}. Checkpoint saved at step {state.get('step')}.", "",
              "Reproduce:", "```",
              f"neuronatlas zoo eval {name}        # = python -m neuronatlas.worldmodels.train eval {name}",
              f"neuronatlas zoo train {name} --out DIR --seed 0"
              + (" --threads 1" if threads == 1 else "") + "   # retrain (world-llava reads world-clip's committed weights)",
              "```",
              "Training is deterministic given the seed and thread count (fixed data order and step "
              "counts); `--minutes` is only a safety stop."]
    path = os.path.join(out_dir, "MODEL_CARD.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
