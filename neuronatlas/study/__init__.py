"""Blind human-interpretability studies (the study part of CLIP_AUDIT / vit-human-interp).

    from neuronatlas.study import export_study, import_responses, study_report

    export_study("runs/x", "study/for-annotators", "study/mapping.json", ExportConfig(per_layer=30))
    # annotators fill study/for-annotators/form.html (or sheet.csv) and send back the downloads
    import_responses(["alice.json", "bob.csv"], "study/mapping.json", "study/results")
    study_report("study/results")

Modules: schema (the annotation fields), export (grids under random ids + the mapping), form (the
sheet and the HTML form), responses (import and validation), agreement (kappa, alpha), report.
"""

from .export import ExportConfig, export_study, read_mapping
from .report import study_report
from .responses import import_responses

__all__ = ["ExportConfig", "export_study", "read_mapping", "import_responses", "study_report"]
