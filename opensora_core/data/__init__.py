"""Data pipeline: metadata preparation, buckets, samplers, datasets and PyAV video I/O.

Modules (import what you need; nothing heavy is imported here):

- ``aspect``: ``ASPECT_RATIOS`` tables and ``get_closest_ratio`` (Open-Sora v1.1 numbers).
- ``bucket``: ``Bucket(bucket_config)`` with reference-exact ``get_bucket_id`` and vectorised ``assign``.
- ``sampler``: ``StatefulDistributedSampler``, ``VariableVideoBatchSampler``, ``data_parallel_coords``.
- ``datasets``: ``VideoTextDataset``, ``VariableVideoTextDataset`` (bad files replaced and counted).
- ``video_io``: probing, seek-decode of frame windows, full decode, image reading, H.264 writing.
- ``transforms``: ``center`` / ``resize_crop`` clip transforms to ``[3, T, H, W]`` in [-1, 1].
- ``mask``: ``MaskGenerator`` for ``mask_ratios``.
- ``prepare``: ``prepare(input, output, workers=...) -> PrepareReport`` and its CLI.
- ``synthetic``: synthetic shape clips, ``score_clip`` and ``parse_caption``.
"""
