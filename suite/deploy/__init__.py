"""Deployment: export of trained weights to what runtimes load, each artefact checked (export), and the runtimes
that run exported models, Paddle Inference and ONNX Runtime (runtimes)."""
