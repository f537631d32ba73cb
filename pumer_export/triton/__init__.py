"""Serving exports with NVIDIA Triton Inference Server: the model repository (:mod:`.repository`), starting a
server on it (:mod:`.server`) and a client for its VQA ensemble (:mod:`.client`)."""
