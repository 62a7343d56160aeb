"""The image pipeline around a network: one module per job.

- ``image``: PIL/numpy images through a model (colour, alpha, 8/16 bits, scales, tiles).
- ``fastpath``: its colour arithmetic and chroma bicubic, in as few passes as possible (CPU).
- ``device``: the same arithmetic in torch on the network's device, for batches of frames.
- ``tiling``: receptive radius, memory estimates and exact tiling.
- ``video``: videos frame by frame, other streams copied (the ``video`` extra, PyAV).
- ``batch``: many inputs to many outputs, planned before any work.
- ``files``: one file to one file through an ``Upscaler``, what every front end shares.
- ``cluster``: a batch on a Ray cluster, one ``Upscaler`` per actor (the ``ray`` extra).

Nothing is imported here: ``video`` needs PyAV, and each module is imported where it is used.
"""
