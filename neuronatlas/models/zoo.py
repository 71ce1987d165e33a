"""The embedded model zoo: `zoo:NAME` specs that run offline. Each entry names a factory
`build(weights: str | None, random_weights: bool) -> Target`, imported lazily."""

ZOO: dict[str, str] = {
    # filled by the zoo issue: "efficientnet-lite0", "mobilenet-v2", "world-clip", "world-llava", ...
    "efficientnet-lite0": "neuronatlas.models.zoo_classifiers:build_efficientnet_lite0",
    "mobilenet-v2": "neuronatlas.models.zoo_classifiers:build_mobilenet_v2",
    "world-clip": "neuronatlas.worldmodels.zoo:build_world_clip",
    "world-llava": "neuronatlas.worldmodels.zoo:build_world_llava",
    "synthetic-units": "neuronatlas.models.synthetic_units:build",
}
