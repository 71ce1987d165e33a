"""Looking at units: exemplar grids with heatmaps (and, later, the web atlas)."""
