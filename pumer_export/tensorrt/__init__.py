"""TensorRT deployment of pumer-export ONNX models.

Only :mod:`.trt_api` imports ``tensorrt``; everything else here is plain Python that runs (and
is tested) without TensorRT or a GPU:

* :mod:`.prepare`: TensorRT version parsing, the local-function / plugin precedence policy per
  TensorRT version, ONNX preparation (function bodies stripped), precision policy, profiles;
* :mod:`.sidecar`: the JSON written next to every engine and its check at load time;
* :mod:`.device`: the CUDA driver and device, read through ``libcuda`` with ctypes;
* :mod:`.engine`: ``build_engine`` / ``load_engine`` orchestration;
* :mod:`.doctor`: the ``pumer-export doctor`` report.
"""

#: What to do when TensorRT is missing (one line, shown by ``build`` and ``doctor``).
INSTALL_HINT = (
    "pip install tensorrt (NVIDIA's wheels; add --extra-index-url https://pypi.nvidia.com if pip cannot find them); "
    "on Jetson use JetPack's python3-libnvinfer (apt)"
)
