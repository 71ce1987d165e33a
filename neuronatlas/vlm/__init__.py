"""VLM mechanistic interpretability on Llava-family models (issue 14): the logit lens so far.
Imports data / models / run / recording / backends / worldmodels.arch (inference only); nothing imports it."""
