"""The data stage: asset loading, the synthetic world, dataset rendering, scoring, filtering, captions.

Modules: `assets` (load real assets into the object frame), `synthetic` (the procedural world
that trains the demo models), `dataset_renderer` (objects to training images + cameras.json),
`filter` and `manifest` (scores and the design's filtering rules), `captions`.
"""
