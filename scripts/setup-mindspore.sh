#!/usr/bin/env bash
# Create .venv-mindspore: MindSpore for the checkpoint and MINDIR tests (tests/test_weights_mindspore.py)
# and `binwise export --format mindir`. binwise itself never imports MindSpore; it gets its own venv
# because MindSpore 2.10 imports only with numpy 1.x.
exec bash "$(dirname "$0")/side-venv.sh" .venv-mindspore mindspore mindspore 'numpy<2'
