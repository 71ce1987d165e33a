"""Looking at units: exemplar grids with heatmaps, and the web atlas.

exemplars.py  re-run a unit's exemplars, draw grids (PNG/SVG)
tiles.py      batched exemplar tiles (plain + heat) cached under RUN/atlas/tiles-KEY/
index.py      the SQLite + FTS5 index of units, labels and scores (RUN/atlas/index.sqlite)
queries.py    search / filter / sort / page over the index (server and export)
pages.py      the page shell, the URL path guard, unit page data
server.py     the read-only FastAPI app (`neuronatlas atlas RUN --serve`)
export.py     the static site that opens from file:// (`neuronatlas atlas RUN --export DIR`)
cli.py        the `atlas` command
"""
