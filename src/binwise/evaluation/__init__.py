"""Judging a model: test reports (``evaluate``), speed (``bench``) and the figures (``plots``)."""
