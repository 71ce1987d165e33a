"""The run directory: the one module that knows its format (documented in docs/run-format.md).

    RUN/run.json                       what was recorded and how (identity key, layouts, versions)
    RUN/images.parquet                 one row per probe image: index, image_id, path, label, status
    RUN/units.parquet                  one row per unit: unit id `layer:index`, statistics
    RUN/hist_edges.npy                 histogram bin edges shared by all units
    RUN/layers/LAYER/*.npy             top/bottom values and image indices (U, k), histogram (U, bins),
                                       and with --save-acts the pooled matrix acts.npy (N, U) float32
    RUN/labels/METHOD.parquet          labels from one describe method: unit, method, rank, label, score
    RUN/labels/METHOD.json             that method's config (backend, concept set, parameters)
    RUN/labels/.partial/NAME.jsonl     finished units of an interrupted labelling run (vlm), appended
    RUN/cache/chat.sqlite              chat/VLM response cache (keyed by model, prompt, image hashes)
    RUN/truth.parquet                  true labels of units that have them (synthetic units): unit,
                                       truth, kind, concepts; `Run.units` joins it
    RUN/dissect/KEY/                   netdissect's thresholds and (unit, concept pattern) counts per
                                       layer, reused by later netdissect / compositional runs
    RUN/evaluation/NAME.parquet        evaluation tables (ground_truth, simulation, agreement, detection, summary)
    RUN/basis/LAYER.npz                the encoder a layer's units were recorded in (unit basis)
    RUN/partials/SHARD/checkpoint.npz  a shard's accumulators + progress, replaced atomically
    RUN/partials/SHARD/digests.bin     (index int64, blake2b-16) per decoded image, append-only
    RUN/partials/SHARD/acts/LAYER.npy  a shard's pooled rows, in shard order
    RUN/partials/SHARD/lock            held (flock) by the process recording that shard: PID, host, start
    RUN/locks/{setup,merge}.lock       held while run.json and the listing are created / while merging
    RUN/atlas/                         caches of the atlas (derived, safe to delete): index.sqlite,
                                       tiles-KEY/ exemplar images"""

# One package knows the format; its modules each own one part of the directory. Everything is
# re-exported here, so callers write `from neuronatlas.run import X` or `from neuronatlas import run`.
from .storage import *  # noqa: F401,F403
from .storage import _atomic_write, _short  # noqa: F401
from .labels import *  # noqa: F401,F403
from .lock import RunLocked, merge_lock, run_lock, setup_lock  # noqa: F401
from .storage import shard_lock  # noqa: F401
from .reader import *  # noqa: F401,F403
from .second_order_store import *  # noqa: F401,F403
from .basis_store import *  # noqa: F401,F403
from .dissect_store import *  # noqa: F401,F403
