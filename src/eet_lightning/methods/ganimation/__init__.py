"""GANimation (Pumarola et al., ECCV 2018): an AU-conditioned generator with an attention mask, as a baseline.

G takes a face and a target vector of AU intensities and paints colour where the expression changes: its
output is ``mask * input + (1 - mask) * colour``, so where the mask is 1 the input is kept. A WGAN-GP
PatchGAN critic with an AU-regression head judges realism and reads the AUs of real and generated faces.

- `eet_lightning.methods.ganimation.model`: the networks and `GANimationModel`, the trained model as users
  meet it (no Lightning);
- `eet_lightning.methods.ganimation.training`: `GANimation`, the one training stage (Lightning), named in a
  config as ``stage1.class_path: eet_lightning.methods.ganimation.training.GANimation``.

Nothing is imported here, so that loading the inference side never loads Lightning.
"""
