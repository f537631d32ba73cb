"""Victor (Wen et al., arXiv 2410.14072): M learned registers summarise the N visual tokens of a LLaVA-style model,
which leave the decoder before layer k.

No official code or checkpoint exists; the paper fixes the method, this project chooses what it leaves open (each
choice is named where it is made): the sequence layout and the positions after the drop (:mod:`.config`,
:mod:`.reference`), the register initialisation (:mod:`pumer_export.models.llava.victor`).

Where it lives: settings :class:`.config.VictorConfig` (config.json key ``"victor"``); the drop rule
:mod:`.reference`, run by the LLaVA decoder machinery it shares with FastV
(:mod:`pumer_export.models.llava.decoding`: prefill, decode with a KV cache of two lengths, generation), the one
definition every backend is held to; the training objective and the stages' parameters :mod:`.training`; the LLaVA
model class with the registers :mod:`pumer_export.models.llava.victor`.

Built: the reference on PyTorch, the answer loss (:mod:`pumer_export.models.llava.training`), the three ONNX graphs
(:mod:`pumer_export.onnx.generation`), the runtime's loop (:func:`pumer_export.runtime.generate`), the commands
(``apply --method victor``, ``finetune --method victor``, ``info``, ``onnx``, ``validate``, ``run``, ``eval``,
``bench``: :mod:`pumer_export.generation`) and the shipped ``easy-vqa-llava-victor``. A LLaVA checkpoint names its
method by the settings it carries (:func:`pumer_export.models.llava.checkpoint.method_of`), not through
:data:`pumer_export.methods.METHODS`, whose interface is the classification families'. Not built: TensorRT engines.
"""
