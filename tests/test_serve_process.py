import pytest

from binwise.errors import BinwiseError
from binwise.serve_process import serving


def test_a_server_that_cannot_start_is_reported_with_its_log(tmp_path):
    log = tmp_path / "serve.log"
    with pytest.raises(BinwiseError, match="binwise serve exited with 2") as e:
        with serving(tmp_path / "missing.safetensors", log):
            pass
    assert "no such model file" in str(e.value)  # the server's own message, from its log
