"""Speed kernels of the Table I layers: the same values as the plain torch forms, in fewer passes.

- `spectral_norm`: spectral normalization written for speed and pickling (`SpectralNormMixin`,
  `SNConv2d`, `SNConvTranspose2d`), whose normalized weight (`SpectralNormalize`) and output-scaled
  convolution (`SNConvolution`) carry hand-written gradients;
- `prepack`: CPU inference on weights kept in oneDNN's blocked layout (`PrepackedWeight`, `Conv2d`,
  `ConvTranspose2d`; switched on by `fuse_for_inference`);
- `prelu`: PReLU whose CPU backward runs in vectorized kernels (`PReLU`, `prelu`, `PReLUFunction`);
- `stacking`: K parallel branch layers run side by side as one call (`stacked_layer`, used by Er);
- `layout`: the helpers they share (memory-order views, output sizes, whole-kernel convolutions as matrix
  products, keeping channels-last layouts).

Each is checked against its reference form (torch's spectral norm parametrization, aten's PReLU backward,
the plain convolution, the per-branch loop) in tests/test_equivalence.py, and timed against the reference
forms in benchmarks/bench.py; the reference layers (torch's nn.PReLU, spectral norm that always divides the
weight) are built there by benchmarks/reference_forms.py, not here.
"""
