"""StarGAN (Choi et al., "StarGAN: Unified Generative Adversarial Networks for Multi-Domain Image-to-Image
Translation", CVPR 2018) as an expression-transfer baseline: the domains are the emotion classes, and A
takes B's expression by being translated into B's emotion class.

- `eet_lightning.methods.stargan.model`: the networks and `StarGANModel`, the trained model as users meet
  it (no Lightning);
- `eet_lightning.methods.stargan.training`: `StarGAN`, the training module (one stage) and its losses.

Nothing is imported here, so that loading the inference side never loads Lightning.
"""
