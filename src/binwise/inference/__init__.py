"""Scoring photos with a model file in any format: ``classifier.Classifier`` and its runners
(torch, ONNX Runtime, LiteRT), and explanations (``explain``)."""
