"""The machinery behind :mod:`lalic_core.train` (``lalic train``).

- :mod:`.data`: random training crops that are a pure function of (seed, position), so a
  resumed or data-parallel run sees exactly the data it would have seen; validation images.
- :mod:`.checkpoints`: atomic checkpoint files and the RNG states of torch, numpy, python.
- :mod:`.trainer`: models from specs, the rate-distortion loss, one training step, validation,
  and the training loop (single process or DistributedDataParallel under ``torchrun``).

The configuration and the command line live in :mod:`lalic_core.train`, which imports this
package lazily so that ``lalic --help`` stays fast.
"""
