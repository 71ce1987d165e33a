"""The explanation in words: an offline template, and optionally an LLM's summary of the chain.

Template: "predicted 'red circle' (p 0.93): mostly 'red' (units:9, 41%), 'circle' (units:0, 33%)".
The percentages are each top unit's share of the positive attribution of the last recorded layer; a
unit's words are its label from the first method the run has (in `methods` order), or its id.
"""

from __future__ import annotations

SUMMARY_PROMPT = """A vision model produced this output on one image: {output}.
Units of its layers that carry the output (from the last layer back), with their labels from
automatic interpretability methods and each method's evaluation score, and the share of the output
each unit carries:
{chain}
In two or three sentences, say why the model produced this output. Use only the evidence above."""


def unit_words(unit: str, labels: dict[str, list[dict]]) -> str:
    entries = labels.get(unit) or []
    return entries[0]["label"] if entries else unit


def template(output: str, top: list[dict], labels: dict[str, list[dict]], n: int = 3) -> str:
    positive = sum(max(t["weight"], 0.0) for t in top) or 1.0
    parts = [f"'{unit_words(t['unit'], labels)}' ({t['unit']}, {max(t['weight'], 0) / positive:.0%})"
             for t in top[:n] if t["weight"] > 0]
    return f"{output}: mostly " + ", ".join(parts) if parts else f"{output}: no unit carries it"


def chain_text(chain: dict, labels: dict[str, list[dict]]) -> str:
    lines = []
    for node in chain["nodes"]:
        entries = labels.get(node["unit"]) or []
        said = "; ".join(f"{e['method']}: '{e['label']}'"
                         + (f" (score {e['evaluation']:.2f})" if e.get("evaluation") is not None else "")
                         for e in entries) or "no labels"
        lines.append(f"- {node['unit']} (weight {node['weight']:.3g}): {said}")
    return "\n".join(lines)


def llm_summary(chat, output: str, chain: dict, labels: dict[str, list[dict]]) -> dict:
    from ..backends.chat import ChatRequest

    prompt = SUMMARY_PROMPT.format(output=output, chain=chain_text(chain, labels))
    reply = chat.chat(ChatRequest.user(prompt, max_tokens=300))
    return {"prompt": prompt, "summary": reply.text.strip()}
