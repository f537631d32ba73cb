"""Run exported PuMer models in applications: one backend interface, and a VQA pipeline on top.

>>> from pumer_export.runtime import VqaPipeline
>>> vqa = VqaPipeline("exports/pumer")                       # an export folder (manifest.json), ONNX Runtime
>>> vqa(["cat.jpg"], ["what is it?"], top_k=3)
[[{'answer': 'cat', 'score': 0.91}, ...]]

Backends (:func:`load_backend`), all with ``run(feeds) -> {output name: array}``:

* ``ort``: an ONNX export folder on ONNX Runtime (``provider`` "cpu" or "cuda");
* ``trt``: a TensorRT engine folder (engine + plugin library, checked against the engine's sidecar);
* ``torch``: the PyTorch reference, from a pumer-export checkpoint directory (so the same pipeline compares
  backends on the same inputs).

The pipeline prepares inputs exactly as the checkpoint's processor does (the processor files travel with the
export), fits them to the export's fixed canvas and text length (the family's ``encode``) and batches within the
export's batch range. Scores are sigmoid probabilities (VQA heads are trained with binary cross-entropy).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .errors import MissingDependencyError, PumerExportError

BACKENDS = ("ort", "trt", "torch")


@dataclasses.dataclass
class ModelInfo:
    """What the pipeline needs to know of a model, from a manifest or a checkpoint."""

    family: str
    image_size: tuple[int, int]
    text_length: int
    id2label: dict[int, str]
    batch_min: int
    batch_max: int
    input_names: tuple[str, ...]
    input_dtypes: dict[str, str]
    processor_dir: Path
    source: Path


class Backend:
    """``run(feeds)``: numpy inputs by name -> numpy outputs by name (``logits`` first)."""

    name = "backend"
    info: ModelInfo

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    def describe(self) -> str:
        return f"{self.name} ({self.info.source})"


def _info_from_manifest(manifest: dict[str, Any]) -> ModelInfo:
    directory = Path(manifest["directory"])
    return ModelInfo(
        family=manifest["family"], image_size=tuple(manifest["image_size"]), text_length=int(manifest["text_length"]),
        id2label=manifest["id2label"], batch_min=int(manifest["batch"]["min"]), batch_max=int(manifest["batch"]["max"]),
        input_names=tuple(i["name"] for i in manifest["inputs"]),
        input_dtypes={i["name"]: i["dtype"] for i in manifest["inputs"]}, processor_dir=directory, source=directory,
    )


class OrtBackend(Backend):
    """An ONNX export folder on ONNX Runtime."""

    name = "ort"

    def __init__(self, folder: str | Path, provider: str = "cpu", threads: int | None = None):
        from .manifest import read_manifest, verify_hashes

        manifest = read_manifest(folder)
        verify_hashes(manifest)  # a file swapped or changed after export is refused, not silently run
        if manifest["backend"] != "onnx":
            raise PumerExportError(f"{folder} holds a {manifest['backend']} export; use --backend trt for it")
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("ONNX Runtime is not installed: pip install onnxruntime") from None
        from .parity.runners import ORT_PROVIDERS

        wanted = ORT_PROVIDERS[provider]
        if wanted not in ort.get_available_providers():
            raise MissingDependencyError(f"ONNX Runtime has no {wanted} here; install onnxruntime-gpu for CUDA")
        from .backends import ort_session_options

        self.info = _info_from_manifest(manifest)
        self.session = ort.InferenceSession(str(Path(manifest["directory"]) / manifest["model_file"]),
                                            ort_session_options(threads), providers=[wanted])
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        feed = {name: feeds[name].astype(self.info.input_dtypes[name], copy=False) for name in self.info.input_names}
        return dict(zip(self.output_names, self.session.run(None, feed)))


class TrtBackend(Backend):
    """A TensorRT engine folder: ``manifest.json`` (backend "tensorrt"), the engine and its sidecar."""

    name = "trt"

    def __init__(self, folder: str | Path, plugins: str | Path | None = None):
        from .manifest import read_manifest
        from .parity.runners import tensorrt_available

        if not tensorrt_available():
            raise MissingDependencyError("TensorRT is not installed (pip install tensorrt from NVIDIA's index, or "
                                         "JetPack's); use --backend ort")
        manifest = read_manifest(folder)
        if manifest["backend"] != "tensorrt":
            raise PumerExportError(f"{folder} holds an ONNX export; build an engine folder with `pumer-export build` "
                                   "or use --backend ort")
        from .tensorrt.engine import load_engine

        self.info = _info_from_manifest(manifest)
        self.engine = load_engine(Path(manifest["directory"]) / manifest["model_file"], plugins=plugins)

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:  # pragma: no cover - needs TensorRT
        feed = {name: feeds[name].astype(self.info.input_dtypes[name], copy=False) for name in self.info.input_names}
        return {name: np.asarray(value) for name, value in self.engine.infer(feed).items()}


class TorchBackend(Backend):
    """The PyTorch reference from a pumer-export checkpoint (optionally on an export's canvas)."""

    name = "torch"

    def __init__(self, checkpoint: str | Path, *, image_size: tuple[int, int] | None = None,
                 text_length: int | None = None, reduction: bool = True, device: str = "cpu", model=None):
        """``model``: the checkpoint's model already loaded (shared by several backends: each runs it with its
        reduction on or off, ``reduction``)."""
        import torch

        from . import models
        from .checkpoints import load_pumer_model
        from .manifest import MANIFEST_FILE
        from .schedule import input_size

        checkpoint = Path(checkpoint)
        if (checkpoint / MANIFEST_FILE).is_file():
            raise PumerExportError(f"{checkpoint} is an export folder; the torch backend runs the checkpoint: pass "
                                   "the pumer-export checkpoint directory")
        self.model = (model if model is not None else load_pumer_model(checkpoint)).to(device)
        self.reduction = reduction
        self.family = models.for_model(self.model)
        self.device = device
        config = self.model.config
        size, length = input_size(config, image_size, text_length)
        self.family.check_input_size(config, size, length)
        self.info = ModelInfo(
            family=self.family.NAME, image_size=tuple(size), text_length=length,
            id2label={int(k): v for k, v in config.id2label.items()}, batch_min=1, batch_max=4096,
            input_names=self.family.INPUT_NAMES,
            input_dtypes={n: "float32" if n == "pixel_values" else "int64" for n in self.family.INPUT_NAMES},
            processor_dir=checkpoint, source=checkpoint,
        )
        self._torch = torch

    def run(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        torch = self._torch
        inputs = {name: torch.from_numpy(np.ascontiguousarray(feeds[name])).to(self.device)
                  for name in self.info.input_names}
        inputs["pixel_values"] = inputs["pixel_values"].to(next(self.model.parameters()).dtype)
        from .models import reduction_set

        with reduction_set(self.model, self.reduction), torch.inference_mode():
            out = self.family.reference_forward(self.model, inputs)
        result = {"logits": out.logits.float().cpu().numpy()}
        result.update({k: v.cpu().numpy() for k, v in out.reduction_indices.items()})
        return result


def load_backend(source: str | Path, backend: str = "ort", *, provider: str = "cpu", threads: int | None = None,
                 plugins: str | Path | None = None, canvas: ModelInfo | None = None) -> Backend:
    """The ``backend`` for ``source`` (an export folder for ort / trt, a checkpoint directory for torch).

    ``canvas``: for torch, run at another backend's fixed image size and text length (to compare them).
    """
    if backend not in BACKENDS:
        raise PumerExportError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "ort":
        return OrtBackend(source, provider, threads)
    if backend == "trt":
        return TrtBackend(source, plugins)
    if threads:
        import torch

        torch.set_num_threads(threads)
    return TorchBackend(source, image_size=canvas.image_size if canvas else None,
                        text_length=canvas.text_length if canvas else None)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x.astype(np.float64)))


class VqaPipeline:
    """Images and questions in, top-k answers out (see the module doc)."""

    def __init__(self, source: str | Path, backend: str = "ort", **kwargs: Any):
        from . import models
        from .processing import load_processor

        self.backend = backend if isinstance(backend, Backend) else load_backend(source, backend, **kwargs)
        self.info = self.backend.info
        self.family = models.get(self.info.family)
        self.processor = load_processor(self.info.processor_dir)

    def encode(self, images: Sequence[Any], questions: Sequence[str]) -> dict[str, np.ndarray]:
        """The fixed-size model inputs of ``images`` (paths, PIL images or arrays) and ``questions``."""
        from .processing import load_image

        if len(images) != len(questions):
            raise PumerExportError(f"got {len(images)} image(s) but {len(questions)} question(s); pass one question "
                                   "per image")
        pictures = [load_image(image, f"image {i + 1}") for i, image in enumerate(images)]
        return self.family.encode(self.processor, pictures, list(questions), image_size=self.info.image_size,
                                  text_length=self.info.text_length)

    def logits(self, images: Sequence[Any], questions: Sequence[str], batch_size: int | None = None) -> np.ndarray:
        """Raw answer logits [N, labels], run in batches within the model's batch range."""
        if not images:
            raise PumerExportError("no images given")
        size = min(batch_size or self.info.batch_max, self.info.batch_max)
        if size < self.info.batch_min:
            raise PumerExportError(f"batch size {size} is below the model's minimum {self.info.batch_min}")
        feeds = self.encode(images, questions)
        outputs = []
        for start in range(0, len(images), size):
            batch = {k: v[start:start + size] for k, v in feeds.items()}
            count = len(batch["input_ids"])
            if count < self.info.batch_min:  # pad a short last batch up to the engine's minimum
                batch = {k: np.concatenate([v, np.repeat(v[-1:], self.info.batch_min - count, 0)]) for k, v in
                         batch.items()}
            outputs.append(self.backend.run(batch)["logits"][:count])
        return np.concatenate(outputs)

    def __call__(self, images: Sequence[Any], questions: Sequence[str], top_k: int = 5,
                 batch_size: int | None = None) -> list[list[dict[str, Any]]]:
        """For every (image, question): the ``top_k`` answers, best first, as ``{"answer", "score"}``."""
        if top_k < 1:
            raise PumerExportError(f"top-k must be at least 1, got {top_k}")
        scores = sigmoid(self.logits(images, questions, batch_size))
        k = min(top_k, scores.shape[1])
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[{"answer": self.info.id2label.get(int(i), str(int(i))), "score": float(row[i])} for i in idx]
                for row, idx in zip(scores, order)]


# ----------------------------------------------------------------------------- generation (LLaVA: Victor, FastV)
class GenerationBackend:
    """The three steps of a generative export, on numpy arrays: ``image_features(pixel_values)``,
    ``prefill(input_ids, attention_mask, image_features) -> (logits [B, 1, V], attention_mask_short, presents)`` and
    ``decode(input_ids, position_ids, attention_mask_full, attention_mask_short, pasts) -> (logits, presents)``
    (presents: keys and values per layer, layer-major). ``meta`` is the export's ``generation.json``.
    :func:`generate` is the one loop over them."""

    name = "backend"
    meta: dict[str, Any]

    def start_request(self, new_tokens: int) -> None:
        """Called by :func:`generate` before each request's prefill (``new_tokens``: the most decode steps it
        runs); a backend that keeps per-request buffers allocates them from here."""

    def check_pasts(self, pasts: Sequence[np.ndarray], mask_full: np.ndarray, mask_short: np.ndarray) -> None:
        """One line when a past cache does not have the lengths the decode graph needs: ``P`` for the layers before
        the drop, ``P - D`` after it (D: the positions dropped; ONNX cannot state the relation, so it is checked
        here)."""
        k, n = self.meta["drop_layer"], self.meta["dropped_tokens"]
        full, short = mask_full.shape[1] - 1, mask_short.shape[1] - 1
        if full - short != n:
            raise PumerExportError(f"the short attention mask must be {n} (the dropped positions) shorter than the "
                                   f"full one; got past lengths {full} and {short}")
        for i in range(self.meta["layers"]):
            want = full if i < k else short
            got = pasts[2 * i].shape[2]
            if got != want:
                raise PumerExportError(f"past.{i}.key holds {got} positions; layer {i} needs {want} ("
                                       f"{'the full' if i < k else 'the short'} length: layers < {k} keep the image)")


class OrtGeneration(GenerationBackend):
    """A generative export folder (``generation.json`` and the three graphs: Victor, FastV) on ONNX Runtime.

    Within a request (:func:`generate`) the decode steps write their KV caches through I/O binding into buffers
    allocated once for the request (:meth:`_present_buffers`); one request at a time per backend."""

    name = "ort"

    def __init__(self, folder: str | Path, provider: str = "cpu", threads: int | None = None):
        import json

        folder = Path(folder)
        manifest = folder / "generation.json"
        if not manifest.is_file():
            raise PumerExportError(f"{folder} is not a generative export (no generation.json): export a Victor or "
                                   "FastV LLaVA with pumer_export.onnx.generation.export_generation")
        self.meta = json.loads(manifest.read_text())
        if self.meta.get("backend") == "tensorrt":
            raise PumerExportError(f"{folder} holds TensorRT engines: run it with --backend trt, or run the ONNX "
                                   "export folder they were built from on ort")
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingDependencyError("ONNX Runtime is not installed: pip install onnxruntime") from None
        from .parity.runners import ORT_PROVIDERS

        from .backends import ort_session_options

        options = ort_session_options(threads)
        self.sessions = {name: ort.InferenceSession(str(folder / f"{name}.onnx"), options,
                                                    providers=[ORT_PROVIDERS[provider]])
                         for name in self.meta["graphs"]}
        decode = self.sessions["decode"]  # its input and output names, read once (decode runs every step)
        self._decode_io = ([i.name for i in decode.get_inputs()], [o.name for o in decode.get_outputs()])

    def image_features(self, pixel_values):
        return self.sessions["vision"].run(None, {"pixel_values": pixel_values.astype(np.float32)})[0]

    def prefill(self, input_ids, attention_mask, image_features):
        outputs = self.sessions["prefill"].run(None, {"input_ids": input_ids.astype(np.int64),
                                                      "attention_mask": attention_mask.astype(np.int64),
                                                      "image_features": image_features})
        return outputs[0], outputs[1], outputs[2:]

    def start_request(self, new_tokens: int) -> None:
        self._request = {"new_tokens": int(new_tokens), "buffers": None}

    def _present_buffers(self, pasts) -> list[np.ndarray] | None:
        """Where the decode step writes its presents: views into the request's KV buffers, allocated once per request
        (at its first decode step, as long as the request can grow each cache) in two sets, so that a step reads
        its pasts from one set and writes its presents into the other; None outside a request or past its end."""
        request = getattr(self, "_request", None)
        if request is None or not pasts:
            return None
        if request["buffers"] is None:
            request["buffers"] = [[np.empty(p.shape[0] * p.shape[1] * (p.shape[2] + request["new_tokens"])
                                            * p.shape[3], dtype=p.dtype) for p in pasts] for _ in range(2)]
        buffers = request["buffers"]
        target = buffers[1] if np.shares_memory(pasts[0], buffers[0][0]) else buffers[0]
        views = []
        for past, flat in zip(pasts, target):
            shape = (past.shape[0], past.shape[1], past.shape[2] + 1, past.shape[3])
            size = shape[0] * shape[1] * shape[2] * shape[3]
            if size > flat.size or past.dtype != flat.dtype:
                return None
            views.append(flat[:size].reshape(shape))
        return views

    def decode(self, input_ids, position_ids, attention_mask_full, attention_mask_short, pasts):
        self.check_pasts(pasts, attention_mask_full, attention_mask_short)
        session = self.sessions["decode"]
        names, output_names = self._decode_io
        feeds = dict(zip(names, [input_ids.astype(np.int64), position_ids.astype(np.int64),
                                 attention_mask_full.astype(np.int64), attention_mask_short.astype(np.int64),
                                 *pasts]))
        presents = self._present_buffers(pasts)
        if presents is None:
            outputs = session.run(None, feeds)
            return outputs[0], outputs[1:]
        binding = session.io_binding()  # the presents are written in place: no cache is allocated per step
        for name, value in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(value))
        binding.bind_output(output_names[0], "cpu")
        for name, view in zip(output_names[1:], presents):
            binding.bind_output(name, "cpu", 0, view.dtype, list(view.shape), view.ctypes.data)
        session.run_with_iobinding(binding)
        return binding.get_outputs()[0].numpy(), presents


class TrtGeneration(GenerationBackend):  # pragma: no cover - needs TensorRT and a GPU
    """An engine folder of a generative export (``pumer-export build EXPORT OUT``: three plans and
    ``generation.json``) on TensorRT, through Polygraphy's runner (one execution context per graph, kept for the
    backend's life; inputs and outputs copied between host and GPU on each call, as ONNX Runtime's CPU session
    does)."""

    name = "trt"

    def __init__(self, folder: str | Path):
        from .tensorrt.engine import load_engine
        from .tensorrt.generation import read_generation_manifest

        folder = Path(folder)
        self.meta = read_generation_manifest(folder)
        if self.meta.get("backend") != "tensorrt":
            raise PumerExportError(f"{folder} is an ONNX export: build its engines with pumer-export build {folder} "
                                   "OUT (needs TensorRT and a GPU) and run OUT")
        from polygraphy.backend.trt import TrtRunner

        self.runners = {}
        for name, plan in self.meta["engines"].items():
            runner = TrtRunner(load_engine(folder / plan).engine)
            runner.activate()
            self.runners[name] = runner
        self._presents = [f"present.{i}.{kind}" for i in range(self.meta["layers"]) for kind in ("key", "value")]

    def _infer(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {name: value.copy() for name, value in self.runners[graph].infer(feed_dict=feeds).items()}

    def image_features(self, pixel_values):
        return self._infer("vision", {"pixel_values": pixel_values.astype(np.float32)})["image_features"]

    def prefill(self, input_ids, attention_mask, image_features):
        out = self._infer("prefill", {"input_ids": input_ids.astype(np.int64),
                                      "attention_mask": attention_mask.astype(np.int64),
                                      "image_features": image_features})
        return out["logits"], out["attention_mask_short"], [out[name] for name in self._presents]

    def decode(self, input_ids, position_ids, attention_mask_full, attention_mask_short, pasts):
        self.check_pasts(pasts, attention_mask_full, attention_mask_short)
        feeds = {"input_ids": input_ids.astype(np.int64), "position_ids": position_ids.astype(np.int64),
                 "attention_mask_full": attention_mask_full.astype(np.int64),
                 "attention_mask_short": attention_mask_short.astype(np.int64)}
        feeds.update((name.replace("present", "past", 1), past) for name, past in zip(self._presents, pasts))
        out = self._infer("decode", feeds)
        return out["logits"], [out[name] for name in self._presents]


class TorchGeneration(GenerationBackend):
    """The PyTorch reference of a LLaVA model with a decoder method behind the same three steps."""

    name = "torch"

    def __init__(self, model):
        from .models.llava import image_tokens

        self.model = model.eval()
        config = model.config
        self.meta = {"image_tokens": image_tokens(config), "dropped_tokens": model.dropped_tokens,
                     "drop_layer": model.drop_layer,
                     "layers": config.text_config.num_hidden_layers, "image_token_id": config.image_token_id,
                     "eos_token_id": config.text_config.eos_token_id, "pad_token_id": config.text_config.pad_token_id,
                     "max_positions": config.text_config.max_position_embeddings}

    def image_features(self, pixel_values):
        import torch

        from .models.llava import decoding

        with torch.no_grad():
            return decoding.image_features(self.model, torch.from_numpy(pixel_values)).numpy()

    def prefill(self, input_ids, attention_mask, image_features):
        import torch

        from .models.llava import decoding

        with torch.no_grad():
            embeds, select = self.model.prepare(torch.from_numpy(input_ids), torch.from_numpy(image_features))
            logits, state = decoding.prefill(self.model, self.meta["drop_layer"], torch.from_numpy(attention_mask),
                                             embeds, select, logits_to_keep=1)
        return (logits.numpy(), state.mask_short.numpy(),
                [t.numpy() for cache in state.caches for t in cache])

    def decode(self, input_ids, position_ids, attention_mask_full, attention_mask_short, pasts):
        import torch

        from .models.llava import decoding

        self.check_pasts(pasts, attention_mask_full, attention_mask_short)
        caches = [(torch.from_numpy(pasts[2 * i]), torch.from_numpy(pasts[2 * i + 1])) for i in range(len(pasts) // 2)]
        state = decoding.State(caches, torch.from_numpy(attention_mask_full[:, :-1]),
                               torch.from_numpy(attention_mask_short[:, :-1]), torch.from_numpy(position_ids[:, 0]))
        with torch.no_grad():
            logits, state = decoding.decode(self.model, self.meta["drop_layer"], torch.from_numpy(input_ids), state)
        return logits.numpy(), [t.numpy() for cache in state.caches for t in cache]


def generate(backend: GenerationBackend, input_ids: np.ndarray, attention_mask: np.ndarray,
             pixel_values: np.ndarray, max_new_tokens: int, sampling=None, stop_at_eos: bool = True) -> np.ndarray:
    """[B, max_new_tokens] token ids from any :class:`GenerationBackend`: prefill, then one decode step per token
    with the two masks and positions kept as the reference keeps them (the next token's choice is the reference's
    :class:`~pumer_export.models.llava.decoding.Sampling`, greedy by default); rows that reach end-of-sequence
    are padded (without ``stop_at_eos`` every row runs ``max_new_tokens`` steps: what benchmarks time)."""
    import torch

    from .models.llava.decoding import Sampling

    sampling = sampling or Sampling()
    meta = backend.meta
    eos, pad = meta.get("eos_token_id") if stop_at_eos else None, meta.get("pad_token_id") or 0
    generator = torch.Generator().manual_seed(sampling.seed) if sampling.temperature > 0 else None
    limit = meta.get("max_positions")
    if limit is not None and input_ids.shape[1] + max_new_tokens > limit:
        raise PumerExportError(f"the prompt ({input_ids.shape[1]} positions) and {max_new_tokens} new tokens are "
                               f"longer than the model's {limit} positions: shorten the question or ask for fewer "
                               "new tokens")
    backend.start_request(max_new_tokens)
    mask_full = attention_mask.astype(np.int64)
    position = np.maximum(mask_full.cumsum(axis=1) - 1, 0)[:, -1] + 1
    logits, mask_short, pasts = backend.prefill(input_ids, mask_full, backend.image_features(pixel_values))
    mask_short = mask_short.astype(np.int64)
    finished = np.zeros(input_ids.shape[0], dtype=bool)
    out = np.full((input_ids.shape[0], max_new_tokens), pad, dtype=np.int64)
    for step in range(max_new_tokens):
        token = sampling.choose(torch.from_numpy(np.ascontiguousarray(logits[:, -1])), generator).numpy()
        token = np.where(finished, pad, token)
        out[:, step] = token
        if eos is not None:
            finished |= token == eos
        if step + 1 == max_new_tokens or finished.all():
            break
        one = np.ones((input_ids.shape[0], 1), dtype=np.int64)
        mask_full, mask_short = np.concatenate([mask_full, one], 1), np.concatenate([mask_short, one], 1)
        logits, pasts = backend.decode(token[:, None], position[:, None], mask_full, mask_short, pasts)
        position = position + 1
    return out
