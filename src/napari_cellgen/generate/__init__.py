"""Mask-conditioned latent diffusion for EM: VAE + denoiser + mask layouts, no Qt.

Public entry points (all long jobs are generators yielding :class:`napari_cellgen._progress.Progress`):

- :func:`napari_cellgen.generate.store.load_generator` / :func:`~.store.resolve_generator`
- :func:`napari_cellgen.generate.sample.sample` (and the synchronous :func:`~.sample.sample_sync`)
- :func:`napari_cellgen.generate.train.train_generator`
- :func:`napari_cellgen.generate.layout.fit_layout` / :func:`~.layout.sample_layouts`
- :func:`napari_cellgen.generate.synth.write_synthetic_set` / :func:`~.synth.read_synthetic_set`

Importing this package imports neither torch nor diffusers.
"""
