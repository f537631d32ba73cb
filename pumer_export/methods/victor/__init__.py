"""Victor (Wen et al., arXiv 2410.14072): M learned registers summarise the N visual tokens of a LLaVA-style model,
which leave the decoder before layer k.

No official code or checkpoint exists; the paper fixes the method, this project chooses what it leaves open (each
choice is named where it is made): the sequence layout and the positions after the drop (:mod:`.config`,
:mod:`.reference`), the register initialisation (:mod:`pumer_export.models.llava.victor`).

Where it lives: settings :class:`.config.VictorConfig` (config.json key ``"victor"``); the reference (prefill,
decode with a KV cache of two lengths, generation) :mod:`.reference`, the one definition every backend will be held
to; the LLaVA model class with the registers :mod:`pumer_export.models.llava.victor`.

Built so far: the reference on PyTorch. Not yet: the method registry entry and the commands (``apply``,
``finetune``, ``onnx``, ``run``, ``eval``, ``bench``), the three ONNX graphs and the runtime's generation loop.
"""
