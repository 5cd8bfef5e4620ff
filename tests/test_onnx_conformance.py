"""ONNX's own node test suite, run against accelc (compile for host fp32, compare with ONNX's outputs).

Only the node tests whose ops all have a frontend handler are included; the list is derived from the
frontend's handler table at collection time, so adding a handler adds its tests. A test whose model
accelc declines on purpose (``UnsupportedFeatureError``: an attribute value, dtype or mode with no
implementation, reported with a reason) is skipped with that reason rather than failed; a wrong
result or any other error fails. Known failures are listed in ``EXCLUDE`` with the reason each fails.

Builds go through the backend's content-addressed cache, so a rerun is fast. CI runs this module
(with ``-n 2``); run it alone with ``python -m pytest -n 2 tests/test_onnx_conformance.py``.
"""
from __future__ import annotations

import re
import unittest

import pytest

pytest.importorskip("onnx")

import onnx.backend.test  # noqa: E402

from accelc.errors import UnsupportedFeatureError  # noqa: E402
from accelc.onnx_backend import AccelcBackend, node_tests_with_supported_ops  # noqa: E402

pytestmark = pytest.mark.conformance


class _ConformanceBackend(AccelcBackend):
    """Turns a deliberate, explained refusal into a skip; everything else propagates."""

    @classmethod
    def prepare(cls, model, device="CPU", **kwargs):
        try:
            return super().prepare(model, device, **kwargs)
        except UnsupportedFeatureError as e:
            raise unittest.SkipTest(f"accelc does not support this case: {e}") from None


# Known failures: test-name regex -> why it fails. Keep this short; fix the cause instead of adding.
EXCLUDE: dict[str, str] = {
    r"^test_attention_4d_causal_fp16_expanded_cpu$":
        "f16 reductions (softmax sum, matmul) accumulate in fp32 and round once, where ONNX's expected "
        "output rounds in f16 along the way: 2 of 192 values differ by 1-2 f16 ulps (5e-4), over rtol 1e-3",
}

backend_test = onnx.backend.test.BackendTest(_ConformanceBackend, __name__)
for _name in node_tests_with_supported_ops():
    backend_test.include(f"^{re.escape(_name)}_cpu$")
for _pattern in EXCLUDE:
    backend_test.exclude(_pattern)

globals().update(backend_test.test_cases)
