"""A trained or pruned encoder written as a Hugging Face / sentence-transformers model with its
model card and ONNX graphs, encoded through those graphs as they serve, and published on the Hub."""
