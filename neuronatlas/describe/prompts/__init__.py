"""Prompt templates of the VLM describer and the detection judge, as editable text files.

    caption.txt     mode B: one exemplar image -> a detailed caption        ({highlight})
    summarize.txt   mode B: the captions -> FINAL SUMMARY + LABEL (LLM)      ({n}, {captions})
    grid.txt        mode A: the whole exemplar grid -> LABEL                 ({n}, {highlight})
    highlight.txt   the sentence put in {highlight} when exemplars carry a heatmap overlay
    detect.txt      detection judge: one image + a label -> yes / no         ({label})

`load_prompts(directory)` reads these package files; a user directory (`--prompts DIR`) overrides
any of them by file name (files it lacks fall back to the package's). Placeholders are `{name}`;
only the names above are replaced, so other braces in a prompt are left as they are.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ...errors import UserError

NAMES = ("caption", "summarize", "grid", "highlight", "detect")
PACKAGE_DIR = Path(__file__).parent


def load_prompts(directory: str | Path | None = None) -> dict[str, str]:
    user = Path(directory) if directory else None
    if user is not None and not user.is_dir():
        raise UserError(f"--prompts {user} is not a directory: make one holding any of "
                        f"{', '.join(n + '.txt' for n in NAMES)} (copy them from {PACKAGE_DIR})")
    if user is not None and not any((user / f"{n}.txt").exists() for n in NAMES):
        raise UserError(f"--prompts {user} has none of {', '.join(n + '.txt' for n in NAMES)}: "
                        f"copy the defaults from {PACKAGE_DIR} and edit them")
    out = {}
    for name in NAMES:
        path = user / f"{name}.txt" if user is not None and (user / f"{name}.txt").exists() \
            else PACKAGE_DIR / f"{name}.txt"
        out[name] = path.read_text(encoding="utf-8").rstrip("\n")
    return out


def render(template: str, **values) -> str:
    for key, value in values.items():
        template = template.replace("{" + key + "}", str(value))
    return template


def fingerprint(prompts: dict[str, str]) -> dict[str, str]:
    """sha256 (12 hex) of each template: recorded in the labels config, part of the resume key."""
    return {k: hashlib.sha256(v.encode()).hexdigest()[:12] for k, v in sorted(prompts.items())}
