"""Parity checks between the PyTorch reference, ONNX Runtime and TensorRT (``pumer-export validate``).

* :mod:`.runners`: Polygraphy runners (a CPU PyTorch reference runner, ONNX Runtime, TensorRT);
* :mod:`.inputs`: the validation inputs (seeded random, a saved ``.npz`` batch, a folder of
  (image, question) pairs);
* :mod:`.tolerances`: Polygraphy-style ``--atol`` / ``--rtol`` parsing and the dtype defaults;
* :mod:`.compare`: the comparison (Polygraphy's comparator for the tensors, plus index agreement
  with near-ties and VQA top-1 / top-5 agreement);
* :mod:`.report`: ``report.json``, ``report.md`` and the JUnit XML file;
* :mod:`.validate`: the whole check, as used by the command and the demo.
"""
