"""A client for the ``pumer_vqa`` ensemble of a pumer-export Triton repository (tritonclient, HTTP)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import MissingDependencyError, PumerExportError, missing


def _http():
    try:
        import tritonclient.http as httpclient
    except ImportError:
        raise MissingDependencyError("the Triton client is not installed: pip install -e \".[serve]\"") from None
    return httpclient


def _host_port(url: str) -> str:
    url = url.strip()
    for prefix in ("http://", "https://"):
        if url.startswith(prefix):
            url = url[len(prefix):]
    url = url.rstrip("/")
    host, _, port = url.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise PumerExportError(f"--url {url!r} must be HOST:PORT with a port 1-65535, e.g. 127.0.0.1:8000")
    return url


def request_inputs(image_bytes: Sequence[bytes], questions: Sequence[str]):
    """The ensemble's inputs for a batch of (image file bytes, question)."""
    httpclient = _http()
    images = np.array([[b] for b in image_bytes], dtype=np.object_)
    texts = np.array([[q.encode("utf-8")] for q in questions], dtype=np.object_)
    tensors = []
    for name, array in (("IMAGE", images), ("QUESTION", texts)):
        tensor = httpclient.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        tensors.append(tensor)
    return tensors


def parse_answers(result) -> list[list[dict[str, Any]]]:
    answers, scores = result.as_numpy("ANSWERS"), result.as_numpy("SCORES")
    return [[{"answer": a.decode("utf-8") if isinstance(a, bytes) else str(a), "score": float(s)}
             for a, s in zip(row_a, row_s)] for row_a, row_s in zip(answers, scores)]


class VqaClient:
    """``ask(images, questions)`` against a running server (one request per call, batched by the server)."""

    def __init__(self, url: str, model: str = "pumer_vqa", timeout: float = 60.0):
        address = _host_port(url)  # a bad address is the user's first mistake to name, before any import
        httpclient = _http()
        self.model = model
        self.client = httpclient.InferenceServerClient(address, connection_timeout=timeout,
                                                       network_timeout=timeout)
        try:
            live = self.client.is_server_ready()
        except Exception as exc:
            raise PumerExportError(f"no Triton server answers at {url} ({type(exc).__name__}); start one with "
                                   "`pumer-export serve REPO`") from None
        if not live:
            raise PumerExportError(f"the Triton server at {url} is not ready")

    def ask(self, images: Sequence[str | Path | bytes], questions: Sequence[str]) -> list[list[dict[str, Any]]]:
        blobs = []
        for image in images:
            if isinstance(image, bytes):
                blobs.append(image)
                continue
            path = Path(image)
            if not path.is_file():
                raise missing(path, "--image")
            blobs.append(path.read_bytes())
        from tritonclient.utils import InferenceServerException

        try:
            result = self.client.infer(self.model, request_inputs(blobs, list(questions)))
        except InferenceServerException as exc:
            raise PumerExportError(f"the server refused the request: {exc.message()}") from None
        return parse_answers(result)
