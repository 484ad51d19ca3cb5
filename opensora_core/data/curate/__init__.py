"""Curation stages that turn raw, long videos into a training table (``python -m opensora_core.data.prepare STAGE``).

Each stage reads a table (``path`` plus Open-Sora's metadata columns), writes a table and a JSON report next to
it (:mod:`.common`), and can run alone or in any order:

``probe``         :mod:`opensora_core.data.prepare` (metadata columns + quarantine list)
``split-scenes``  :mod:`.scenes` (PySceneDetect shot boundaries -> clip files + a clip table)
``score``         :mod:`.scores` (motion: optical flow; aesthetic: CLIP + LAION aesthetic head)
``filter``        :mod:`.filter` (typed thresholds; every dropped row with its rule)
``caption``       :mod:`.captions` (captions from the table or sidecar ``.txt`` files, cleaned)
``dedup``         :mod:`.dedup` (exact content hash, near duplicates by keyframe dHash)
``holdout``       :mod:`.holdout` (train / held-out split by a hash of the clip path)
"""
