"""The generation task: LLaVA checkpoints, stock or with a decoder method (Victor, FastV), from checkpoint to report.

The classification families (ViLT, METER) answer by choosing a label; a LLaVA writes its answer. What differs is
here, one module per pipeline step, each on top of the shared pieces (the reference
:mod:`pumer_export.models.llava`, the ONNX graphs :mod:`pumer_export.onnx.generation`, the backends and the loop
:mod:`pumer_export.runtime`):

* :mod:`.data`: questions to prompts and answer targets (the checkpoint's own processor);
* :mod:`.finetune`: training on a VQA set phrased as generation (``pumer-export finetune`` on a LLaVA);
* :mod:`.answers`: generated answers and their VQA accuracy per backend (``run``, ``eval``);
* :mod:`.validate`: an export against the reference (``validate``);
* :mod:`.bench`: prefill latency, decode speed and KV-cache bytes against the stock model (``bench``);
* :mod:`.info`: the token layout and costs ``info`` shows.
"""
