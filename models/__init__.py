"""Networks and the model registry (versioned checkpoints with manifests)."""
