"""Which module opens which probe-source prefix (`PREFIX:ARG`). Imported lazily: optional deps stay optional.

Each entry names a function `open_source(arg: str) -> ProbeSet`, where `arg` is the text after the prefix.
"""

SOURCES: dict[str, str] = {
    "folder": "neuronatlas.data.folder:open_source",
    "filelist": "neuronatlas.data.filelist:open_source",
    "tar": "neuronatlas.data.tar_shards:open_source",
    "hf": "neuronatlas.data.hf:open_source",  # a dataset saved with save_to_disk; objects go via open_probe
    "world": "neuronatlas.data.world.source:open_source",
    "photos": "neuronatlas.data.photos:open_source",
    "broden": "neuronatlas.data.broden:open_source",  # a Broden-format folder (with concept masks)
    "coco": "neuronatlas.data.coco:open_source",  # COCO instances JSON + images (per-object masks)
}
