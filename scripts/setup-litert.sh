#!/usr/bin/env bash
# Create .venv-litert: binwise with the 'tflite-export' extra (litert-torch, the maintained
# PyTorch -> TFLite converter), for `binwise export --format tflite` and its tests
# (tests/test_tflite_export.py finds this venv by itself). Its own venv because litert-torch pins
# typing-extensions < 4.13, which would downgrade pydantic under the service in .venv.
exec bash "$(dirname "$0")/side-venv.sh" .venv-litert litert_torch -e '.[train,tflite-export]'
