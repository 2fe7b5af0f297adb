"""Data-side building blocks: the synthetic face renderer (more to come: manifests, alignment)."""
