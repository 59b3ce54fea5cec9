"""Read the operator list of a .tflite flatbuffer.

Read from the file rather than from a running interpreter: once XNNPACK is
applied, the interpreter reports fused DELEGATE nodes instead of the ops.
"""
from __future__ import annotations

import collections

from keras_slim.export import _deps

# TFLite op names that only exist with the Flex (select TF ops) delegate.
FLEX_PREFIX = "Flex"


def tflite_op_histogram(buf: bytes) -> dict[str, int]:
    """{op name: count} over all subgraphs; custom ops appear under their custom code."""
    schema = _deps.litert_schema()
    model = schema.Model.GetRootAs(bytearray(buf), 0)
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items()
                     if not k.startswith("_") and isinstance(v, int)}
    opcodes = []
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # Codes >= 127 live in BuiltinCode; older files only fill the deprecated byte.
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        if builtin == schema.BuiltinOperator.CUSTOM:
            custom = code.CustomCode()
            opcodes.append(custom.decode() if custom else "CUSTOM")
        else:
            opcodes.append(builtin_names.get(builtin, f"BUILTIN_{builtin}"))
    hist: collections.Counter = collections.Counter()
    for s in range(model.SubgraphsLength()):
        subgraph = model.Subgraphs(s)
        for j in range(subgraph.OperatorsLength()):
            hist[opcodes[subgraph.Operators(j).OpcodeIndex()]] += 1
    return dict(sorted(hist.items()))


def non_builtin_ops(histogram: dict[str, int]) -> list[str]:
    """Ops the stock LiteRT runtime cannot run without extra delegates/libraries."""
    builtin_names = set(vars(_deps.litert_schema().BuiltinOperator))
    return sorted(op for op in histogram if op not in builtin_names)
