"""Victor's reference: the one definition of what Victor changes in a LLaVA, every backend is held to it.

* The prompt carries M register placeholders right after the N image tokens (``[prefix ; image ; registers ;
  text]``; this project's choice, the paper's Algorithm 1 starts at the image); the registers, learned vectors
  ``[M, d]``, are placed there like the image features (:func:`pumer_export.models.llava.decoding.embed`).
* Before layer k the image span ``[s, s+N)`` leaves: not "the first N tokens" (the prefix stays), through an index
  that depends on ``s`` only, so every shape is static (``L - N``) — :func:`select`.
* Rotary positions after the drop are the full sequence's ("keep"; the paper does not say, see
  :mod:`.config`); layers ``< k`` keep the image's keys and values for decoding, so a generated token sees the image
  there as in teacher-forced training.

The decoder is run by :mod:`pumer_export.models.llava.decoding` (two layer groups, a KV cache of two lengths), which
FastV shares. With ``M = 0`` and ``k`` = the layer count this is stock LLaVA (tested against transformers' forward).
"""

from __future__ import annotations

from ...models.llava.decoding import Layout, Select


def select(where: Layout, length: int) -> Select:
    """Victor's drop for prompts of ``length`` positions laid out as ``where``: every position but the image span's,
    in order ([B, L - N]); registers, prefix and text stay."""
    return Select(lambda _attention: where.without_image(length))
