"""VLM mechanistic interpretability on Llava-family models (issue 14): the logit lens so far.
Imports data / models / run / recording / backends / worldmodels' inference parts; nothing imports it."""
