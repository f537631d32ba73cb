"""FastV (Chen et al., ECCV 2024, arXiv 2403.06764): training-free; after layer k, keep only the R visual tokens the
last prompt token attends to most (layer k-1's attention, averaged over heads). Victor's paper compares against it.

Follows the public reference code (github.com/pkunlp-icler/FastV) where it is clear: the ranking (the last token's
row of layer k-1's attention, mean over heads), the kept positions keep their original rotary positions. This
project's choices: a fixed count R per checkpoint (so shapes stay static), ties go to the earlier token, layers
before k keep every prompt position in their KV cache (as Victor's do), batches with left padding rank each row on
its own.

Where it lives: settings :class:`.config.FastVConfig` (config.json ``"fastv"``); the rule :mod:`.reference`; the
model class :mod:`pumer_export.models.llava.fastv`; the decoder machinery it shares with Victor
:mod:`pumer_export.models.llava.decoding`. Built: the reference on PyTorch, the ONNX graphs and the runtime
loop (:mod:`pumer_export.onnx.generation`, :func:`pumer_export.runtime.generate`), ``apply --method fastv`` on any
stock llava-hf checkpoint and the commands of :mod:`pumer_export.generation`. Not built: TensorRT engines.
"""
