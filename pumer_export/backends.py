"""The backends pumer-export runs, the precisions each measures (light: read by the CLI parser), and the one way
this package opens ONNX Runtime sessions."""

from __future__ import annotations

BACKENDS = ("torch", "ort", "trt")
#: Precisions per backend; every command checks a requested pair against this before any work.
BACKEND_DTYPES = {"torch": ("fp32", "fp16", "bf16"), "ort": ("fp32", "fp16", "int8", "int8-static"),
                  "trt": ("fp32", "fp16")}
#: Quantized precisions (``pumer-export quantize``): ``int8`` = ONNX Runtime dynamic (bench and eval make it from
#: the fp32 export), ``int8-static`` = calibrated QDQ (only from a given export: it needs calibration data).
QUANTIZED = ("int8", "int8-static")


def ort_session_options(threads: int | None = None):
    """ONNX Runtime session options for every session this package opens: ``threads`` intra-op threads (None: ONNX
    Runtime's choice), and worker threads that spin for work only while a run is active
    (``session.force_spinning_stop``). By default an idle pool keeps spinning after its run returns; with several
    sessions in one process (``bench`` interleaves a baseline and a reduced model, a generation runs three graphs)
    those spinning threads take the cores from the session that runs next: on the 2-core machine of this project
    that doubled the baseline's latency at batch 1 and understated a reduced model's speedup."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.force_spinning_stop", "1")
    return options
