"""export.json's `why_not_onnx` names the failing op, not the exporter's boilerplate."""

from __future__ import annotations

from common.pipeline.export import onnx_failure_reason

EXPORTER_TEXT = (
    "Failed to convert the exported program to an ONNX model. \x1b[96mThis is step 3/3\x1b[0m of exporting.\n"
    "- If there is a missing ONNX function, implement it and register it to the registry.\n\n"
    "## Exception summary\n\n"
    "<class 'DispatchError'>: No ONNX function found for <OpOverload(op='aten._linalg_eigh', overload='default')>.\n"
    "⬆️\n<class 'ConversionError'>: Error when translating node %_linalg_eigh\n\n"
    "(Refer to the full stack trace above for more information.)\n"
)


def test_the_exception_summary_line_is_kept():
    why = onnx_failure_reason(RuntimeError(EXPORTER_TEXT))
    assert "aten._linalg_eigh" in why and "No ONNX function found" in why and "\x1b" not in why


def test_other_errors_keep_their_last_meaningful_line():
    assert onnx_failure_reason(ValueError("first\nop foo is not supported\n(Refer to the trace)")).endswith(
        "op foo is not supported"
    )
    assert onnx_failure_reason(KeyError()) == "KeyError"
