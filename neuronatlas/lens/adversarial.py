"""Neuron-guided semantic adversarial images (second-order lens, section "adversarial images").

To make images of class `source` that CLIP classifies as class `target`:
1. d = e(target) - e(source), the difference of the two class text embeddings;
2. score every neuron by pc . d (its second-order direction's push from source towards target) and
   keep the `n_neurons` with the largest |pc . d|;
3. gather the words of their sparse text decompositions, each weighted by coefficient x (pc . d), so a
   word counts for the target when the neuron carries it that way; drop the class names themselves and
   words whose text-embedder similarity to the target is >= `max_similarity` (they would just paint the
   target); keep the `n_words` best;
4. write prompts: the source class's prompt and a few of those words (`TemplatePromptWriter`; the
   paper had an LLM write captions), render them with a text-to-image backend, and
5. count a success when CLIP's image embedding has img . d > 0 (the paper's check) and, stricter, when
   the image's zero-shot class among `classes` is the target.
`random_words_baseline` does steps 4-5 with as many words drawn at random from the same text set.

Backends (`load_text_to_image`): `world` renders procedural-world scenes from the world concepts a
prompt names (offline; the object is the source class, other attributes come from the words), and
`diffusers:PATH_OR_ID` runs a diffusers pipeline (FLUX.1-schnell, SDXL-turbo, ...) when diffusers and
the weights are installed.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass

import numpy as np

from ..errors import UserError


@dataclass(frozen=True)
class AdversarialConfig:
    n_neurons: int = 50
    n_words: int = 20
    max_similarity: float = 0.6
    n_prompts: int = 8
    words_per_prompt: int = 3
    images_per_prompt: int = 4
    seed: int = 0

    def __post_init__(self):
        for name in ("n_neurons", "n_words", "n_prompts", "words_per_prompt", "images_per_prompt"):
            if getattr(self, name) < 1:
                raise UserError(f"{name} must be at least 1 (got {getattr(self, name)})")

    def to_json(self) -> dict:
        return asdict(self)


# -- steps 1-3: neurons and words (plain arrays) ----------------------------------------------------
def neuron_push(pcs_ND: np.ndarray, direction_D: np.ndarray) -> np.ndarray:
    """pc . d for every neuron: how much its second-order direction moves the embedding along d."""
    pcs, d = np.asarray(pcs_ND, np.float64), np.asarray(direction_D, np.float64)
    if pcs.shape[1] != d.shape[0]:
        raise UserError(f"neuron directions have {pcs.shape[1]} dimensions but the class direction "
                        f"{d.shape[0]}: use the same CLIP model for both")
    return pcs @ d


def guiding_words(pcs_ND: np.ndarray, neuron_terms: list, direction_D: np.ndarray, n_neurons: int,
                  n_words: int, exclude=()) -> list[tuple[str, float]]:
    """The words that push towards the target: (word, weight) sorted by weight, positive weights only.

    `neuron_terms[i]` is neuron i's decomposition [(text, coef), ...] (rows aligned with pcs)."""
    if len(neuron_terms) != len(pcs_ND):
        raise UserError(f"{len(neuron_terms)} neuron decompositions for {len(pcs_ND)} neuron directions")
    push = neuron_push(pcs_ND, direction_D)
    chosen = np.argsort(-np.abs(push), kind="stable")[:n_neurons]
    drop = {str(w).lower() for w in exclude}
    weight: dict[str, float] = {}
    for i in chosen:
        for text, coef in neuron_terms[i]:
            if text.lower() not in drop:
                weight[text] = weight.get(text, 0.0) + float(coef) * float(push[i])
    ranked = sorted(((w, s) for w, s in weight.items() if s > 0), key=lambda ws: (-ws[1], ws[0]))
    return ranked[:n_words]


def drop_similar(words: list[tuple[str, float]], target: str, embedder, max_similarity: float
                 ) -> list[tuple[str, float]]:
    """Words whose text-embedder cosine to the target class name is below `max_similarity`."""
    if not words:
        return words
    vecs = embedder.embed([target] + [w for w, _ in words]).numpy()
    sims = vecs[1:] @ vecs[0]
    return [ws for ws, s in zip(words, sims) if s < max_similarity]


# -- step 4: prompts -------------------------------------------------------------------------------
class TemplatePromptWriter:
    """Prompts: the source class's own prompt ("a red thing", "a photo of a dog") followed by `k`
    guiding words sampled by weight (seeded)."""

    template = "{source}, {words}"

    def __init__(self, words_per_prompt: int = 3, seed: int = 0):
        self.k, self.seed = words_per_prompt, seed

    def write(self, source: str, words: list[tuple[str, float]], n: int) -> list[str]:
        rng = random.Random(f"prompts/{self.seed}/{source}")
        texts = [w for w, _ in words]
        weights = [max(float(s), 1e-12) for _, s in words]
        prompts = []
        for _ in range(n):
            picked: list[str] = []
            pool, wts = list(texts), list(weights)
            while pool and len(picked) < self.k:  # weighted, without replacement
                j = rng.choices(range(len(pool)), weights=wts)[0]
                picked.append(pool.pop(j))
                wts.pop(j)
            prompts.append(self.template.format(source=source, words=", ".join(picked)))
        return prompts


# -- text-to-image backends ---------------------------------------------------------------------------
class TextToImage:
    """Base class: prompts -> images. `generate(prompts, n, seed)` gives n images per prompt."""

    name = "text-to-image"

    def generate(self, prompts: list[str], n: int = 4, seed: int = 0) -> list[list]:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name}


class WorldTextToImage(TextToImage):
    """Renders procedural-world scenes from the world concepts a prompt mentions (offline).

    The first shape and first colour named become the object's (the prompt writer names the source
    class first); every texture, background and size named is allowed, one picked per image; what the
    prompt does not name is sampled from the whole world. One object per image (the source)."""

    name = "world"

    def __init__(self, size: int = 64):
        self.size = size

    @staticmethod
    def parse(prompt: str) -> dict[str, list[str]]:
        """{category: [names in order of mention]} for every world concept phrase in the prompt."""
        import re

        from ..data.world import CONCEPTS

        text = " " + " ".join(re.findall(r"[a-z]+", prompt.lower())) + " "
        found: list[tuple[int, str, str]] = []
        # longest phrases first so "horizontally striped" is not also read as something shorter
        for c in sorted(CONCEPTS, key=lambda c: -len(c.phrase)):
            for m in re.finditer(f" {re.escape(c.phrase)} ", text):
                lo, hi = m.start() + 1, m.end() - 1  # the phrase without its bounding spaces
                if not any(s < hi and lo < e for s, e, _, _ in found):
                    found.append((lo, hi, c.category, c.name))
        out: dict[str, list[str]] = {}
        for _, _, cat, name in sorted(found):
            if name not in out.setdefault(cat, []):
                out[cat].append(name)
        return out

    def options(self, prompt: str):
        from ..data.world import SceneOptions
        from ..data.world.vocab import BACKGROUND_EXCLUDES

        named = self.parse(prompt)
        kw = {"n_objects": (1, 1)}
        if named.get("shape"):
            kw["shapes"] = (named["shape"][0],)
        if named.get("color"):
            kw["colors"] = (named["color"][0],)
        for cat in ("texture", "size", "background"):
            if named.get(cat):
                kw[cat + "s"] = tuple(named[cat])
        if "colors" in kw:  # never a background that hides the object's colour
            from ..data.world import CONCEPTS

            bgs = kw.get("backgrounds") or CONCEPTS.names("background")
            ok = tuple(b for b in bgs if kw["colors"][0] not in BACKGROUND_EXCLUDES.get(b, ()))
            kw["backgrounds"] = ok or tuple(b for b in CONCEPTS.names("background")
                                            if kw["colors"][0] not in BACKGROUND_EXCLUDES.get(b, ()))
        return SceneOptions(**kw)

    def generate(self, prompts: list[str], n: int = 4, seed: int = 0) -> list[list]:
        from ..data.world import render_image, sample_scene

        out = []
        for p, prompt in enumerate(prompts):
            opts = self.options(prompt)
            out.append([render_image(sample_scene(seed * 100003 + p, i, opts), self.size)
                        for i in range(n)])
        return out

    def describe(self) -> dict:
        return {"name": self.name, "size": self.size}


class DiffusersTextToImage(TextToImage):
    """A diffusers text-to-image pipeline (local directory or a cached hub id)."""

    def __init__(self, model: str, steps: int = 4, guidance: float = 0.0, size: int = 256,
                 device: str | None = None):
        try:
            import diffusers
        except ImportError:
            raise UserError("the diffusers backend needs diffusers: `pip install diffusers "
                            "accelerate`, or use the offline `world` backend") from None
        import torch

        self.name = f"diffusers:{model}"
        self.steps, self.guidance, self.size = steps, guidance, size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.pipe = diffusers.AutoPipelineForText2Image.from_pretrained(model).to(self.device)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load diffusers model {model!r}: {exc}; give a local pipeline "
                            f"directory or a hub id already in the cache") from None

    def generate(self, prompts: list[str], n: int = 4, seed: int = 0) -> list[list]:
        import torch

        out = []
        for p, prompt in enumerate(prompts):
            g = torch.Generator(self.device).manual_seed(seed * 100003 + p)
            res = self.pipe(prompt, num_images_per_prompt=n, num_inference_steps=self.steps,
                            guidance_scale=self.guidance, height=self.size, width=self.size,
                            generator=g)
            out.append(list(res.images))
        return out

    def describe(self) -> dict:
        return {"name": self.name, "steps": self.steps, "guidance": self.guidance, "size": self.size}


def load_text_to_image(spec: str = "world", **kwargs) -> TextToImage:
    """`world[:SIZE]` or `diffusers:PATH_OR_ID`."""
    family, _, arg = spec.partition(":")
    if family == "world":
        return WorldTextToImage(size=int(arg) if arg else kwargs.get("size", 64))
    if family == "diffusers":
        if not arg:
            raise UserError("diffusers: names no model (e.g. diffusers:black-forest-labs/FLUX.1-schnell)")
        return DiffusersTextToImage(arg, **kwargs)
    raise UserError(f"unknown text-to-image backend '{spec}': use world[:SIZE] or diffusers:MODEL")


# -- step 5: the CLIP success check (pure) ----------------------------------------------------------
def success_rates(image_emb_ND: np.ndarray, class_emb_CD: np.ndarray, source: int, target: int
                  ) -> dict:
    """`direction`: fraction of images with img . (e_target - e_source) > 0 (the paper's check);
    `classified`: fraction whose argmax over the classes is the target; `kept_source`: argmax is
    the source. Embeddings are normalised here."""
    img = _unit(np.atleast_2d(image_emb_ND))
    cls = _unit(np.atleast_2d(class_emb_CD))
    d = cls[target] - cls[source]
    pred = (img @ cls.T).argmax(1)
    return {"direction": float(np.mean(img @ d > 0)), "classified": float(np.mean(pred == target)),
            "kept_source": float(np.mean(pred == source)), "n_images": int(len(img))}


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(n > 0, n, 1)


# -- the whole pipeline -----------------------------------------------------------------------------
@dataclass
class AdversarialResult:
    source: str
    target: str
    words: list
    prompts: list
    images: list  # per prompt, a list of PIL images
    rates: dict
    baseline_words: list
    baseline_prompts: list
    baseline_rates: dict

    def summary(self) -> dict:
        return {"source": self.source, "target": self.target, "words": self.words,
                "prompts": self.prompts, "rates": self.rates, "baseline_words": self.baseline_words,
                "baseline_rates": self.baseline_rates}


def adversarial_images(scorer, pcs_ND, neuron_terms, classes: list[str], source: str, target: str,
                       backend: TextToImage, config: AdversarialConfig = AdversarialConfig(),
                       template: str = "{}", vocabulary: list[str] | None = None,
                       embedder=None) -> AdversarialResult:
    """Steps 1-5 for one (source, target) pair of `classes`; also the random-words baseline drawn
    from `vocabulary` (default: every word of the neuron decompositions)."""
    import torch

    for name in (source, target):
        if name not in classes:
            raise UserError(f"class '{name}' is not among the classes: {', '.join(classes)}")
    if source == target:
        raise UserError("source and target classes must differ")
    cls_emb = scorer.encode_texts([template.format(c) for c in classes]).float().cpu().numpy()
    s, t = classes.index(source), classes.index(target)
    d = cls_emb[t] - cls_emb[s]
    words = guiding_words(pcs_ND, neuron_terms, d, config.n_neurons, 10 * config.n_words,
                          exclude=(source, target))
    if embedder is not None:
        words = drop_similar(words, target, embedder, config.max_similarity)
    words = words[:config.n_words]
    if not words:
        raise UserError(f"no word of the chosen neurons pushes '{source}' towards '{target}': use more "
                        f"neurons (--neurons) or a larger text set")
    writer = TemplatePromptWriter(config.words_per_prompt, config.seed)
    source_prompt = template.format(source)
    prompts = writer.write(source_prompt, words, config.n_prompts)

    def run(prompt_list):
        images = backend.generate(prompt_list, config.images_per_prompt, config.seed)
        flat = [im for row in images for im in row]
        with torch.no_grad():
            pix = torch.stack([scorer.preprocess(im) for im in flat])
            emb = scorer.encode_images(pix.to(scorer.device)).float().cpu().numpy()
        return images, success_rates(emb, cls_emb, s, t)

    images, rates = run(prompts)
    pool = sorted({w for terms in neuron_terms for w, _ in terms} if vocabulary is None else set(vocabulary))
    pool = [w for w in pool if w.lower() not in {source.lower(), target.lower()}]
    rng = random.Random(f"baseline/{config.seed}")
    base_words = [(w, 1.0) for w in rng.sample(pool, min(len(words), len(pool)))]
    base_prompts = TemplatePromptWriter(config.words_per_prompt, config.seed).write(
        source_prompt, base_words, config.n_prompts)
    _, base_rates = run(base_prompts)
    return AdversarialResult(source, target, words, prompts, images, rates, base_words, base_prompts,
                             base_rates)


def adversarial_from_run(path, source: str, target: str, classes: str = "world-colors",
                         backend: str | TextToImage = "world", config: AdversarialConfig = AdversarialConfig(),
                         layers=None, save: bool = True, progress: bool = True) -> AdversarialResult:
    """The pipeline on RUN's second-order neurons (all layers computed, or `layers`), with their
    stored second-order labels (computed and stored first if missing). Images and a summary.json go
    to RUN/lens/apps/adversarial/SOURCE-to-TARGET/ when `save`."""
    import json

    from ..describe.second_order import second_order_results, stored_or_new_labels
    from ..run import lens_app_path, write_json
    from ..describe.text_decomposition import model_of, neuron_terms
    from .segmentation import class_set

    results = second_order_results(path, layers)
    _, scorer = model_of(results[0])
    labels = stored_or_new_labels(path, [r.layer for r in results], scorer=scorer, progress=progress)
    units = [u for r in results for u in r.units]
    pcs = np.concatenate([np.asarray(r.pc) for r in results])
    names, prompts = class_set(classes)
    template = _template_of(names, prompts)
    be = load_text_to_image(backend) if isinstance(backend, str) else backend
    res = adversarial_images(scorer, pcs, neuron_terms(labels, units), names, source, target, be,
                             config, template=template, embedder=_optional_embedder())
    if save:
        out = lens_app_path(path, f"adversarial/{_slug(source)}-to-{_slug(target)}")
        out.mkdir(parents=True, exist_ok=True)
        files = []
        for p, row in enumerate(res.images):
            for j, im in enumerate(row):
                f = out / f"prompt{p:02d}-{j}.png"
                im.save(f)
                files.append(f.name)
        write_json(out / "summary.json", json.loads(json.dumps(
            {**res.summary(), "images": files, "backend": be.describe(), "classes": classes,
             "config": config.to_json(), "layers": [r.layer for r in results]}, default=float)))
    return res


def _template_of(names: list[str], prompts: list[str]) -> str:
    """The prompt template shared by every class ('a {} thing'), recovered from the class set."""
    first = prompts[0].replace(names[0], "{}", 1)
    return first if all(first.format(n) == p for n, p in zip(names, prompts)) else "{}"


def _slug(s: str) -> str:
    import re

    return re.sub(r"[^a-z0-9]+", "_", s.lower()).strip("_") or "class"


def _optional_embedder():
    """MiniLM to drop words too close to the target, when installed (else no similarity filter
    beyond the class names themselves)."""
    try:
        from ..backends.text import load_text_embedder

        return load_text_embedder("zoo:minilm")
    except Exception:  # noqa: BLE001 - optional: the package may be missing
        return None
