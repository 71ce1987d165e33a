"""The annotation fields (after the CLIP_AUDIT human-audit form), shared by the sheet, the HTML form
and the importer so the three can never disagree."""

from __future__ import annotations

# One row per (annotator, grid id). `image` is the grid's file name, for annotators using the sheet.
COLUMNS = ("id", "image", "annotator", "interpretable", "description", "consistency", "complexity",
           "specificity", "polysemantic", "n_concepts", "feature_type", "notes")
RATINGS = ("consistency", "complexity", "specificity")  # integers 1-5
BINARY = ("interpretable", "polysemantic")  # y / n
ANSWERS = ("interpretable", "description", *RATINGS, "polysemantic", "n_concepts", "feature_type",
           "notes")  # a row where all of these are empty was skipped by the annotator
FEATURE_TYPES = ("color", "texture", "shape", "object", "part", "scene", "text", "spatial", "other")

HELP = {
    "interpretable": "Do the images share a feature you can name? (y/n)",
    "description": "In a few words, what do the images have in common?",
    "consistency": "How many of the images show that feature? 1 = hardly any, 5 = all of them",
    "complexity": "How complex is the feature? 1 = low-level (a colour, an edge), 5 = abstract",
    "specificity": "How specific is it? 1 = very broad, 5 = one narrow thing",
    "polysemantic": "Do the images fall into two or more unrelated groups? (y/n)",
    "n_concepts": "If so, how many groups?",
    "feature_type": "Which kind of feature: " + ", ".join(FEATURE_TYPES),
    "notes": "Anything else (optional)",
}

TRUE_WORDS = {"y", "yes", "true", "1"}
FALSE_WORDS = {"n", "no", "false", "0"}
