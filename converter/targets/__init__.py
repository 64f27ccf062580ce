"""What a target board needs of a model: the board profile's meaning for conversion
(:mod:`.profile`), Edge TPU readiness predicted from Coral's op table (:mod:`.edgetpu`) and
the compiler's own verdict (:mod:`.edgetpu_compiler`), NPU readiness (:mod:`.npu`), and
XNNPACK's sparse-inference conditions (:mod:`.xnnpack_sparse`).

Every module here is pure Python and this file imports none of them: `edgefleet inspect`
uses them on boards without TensorFlow.
"""
