"""Tolerances: the defaults per dtype and Polygraphy-style ``--atol`` / ``--rtol`` parsing.

Syntax (as Polygraphy's ``--atol`` / ``--rtol``): a list of entries, each either ``VALUE`` (the
default for every floating-point output) or ``NAME:VALUE`` (one output; ``*:VALUE`` is the same
as a bare ``VALUE``)::

    --atol 1e-4                 # every float output
    --atol logits:5e-4          # logits only, the others keep the default
    --atol 1e-3 --atol logits:5e-4  # the option repeats (the CLI takes one value per --atol)

A float output passes when its maximum absolute difference is within ``atol`` OR its maximum
relative difference is within ``rtol`` (Polygraphy's ``SimpleCompareFunc`` with
``check_error_stat="max"``). Index outputs (``*.keep_idx``, ``*.image_slots``, ``*.text_slots``)
are always compared exactly (atol = rtol = 0); near-ties are judged with the tie tolerance.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

from ..errors import PumerExportError
from .onnxinfo import is_index_output

#: dtype -> (atol, rtol, tie tolerance). fp32: the exported graph runs the reference's float32
#: math in another order, so differences stay at a few ulps of the logits; fp16/bf16 engines are
#: compared with the float32 reference and get tolerances of a few units of their precision.
DEFAULTS = {
    "fp32": (1e-4, 1e-3, 1e-4),
    "fp16": (5e-2, 5e-2, 1e-2),
    "bf16": (1e-1, 5e-2, 5e-2),
}


@dataclasses.dataclass
class Tolerances:
    """Per-output tolerances (``""`` = default for float outputs) and the near-tie tolerance."""

    atol: dict[str, float]
    rtol: dict[str, float]
    tie: float

    def for_output(self, name: str) -> tuple[float, float]:
        if is_index_output(name):
            return 0.0, 0.0
        return self.atol.get(name, self.atol[""]), self.rtol.get(name, self.rtol[""])

    def polygraphy_dicts(self, output_names: Sequence[str]) -> tuple[dict[str, float], dict[str, float]]:
        """atol / rtol dictionaries for ``SimpleCompareFunc`` (index outputs pinned to 0)."""
        atol, rtol = {"": self.atol[""]}, {"": self.rtol[""]}
        for name in output_names:
            atol[name], rtol[name] = self.for_output(name)
        return atol, rtol

    def to_dict(self) -> dict:
        return {"atol": dict(self.atol), "rtol": dict(self.rtol), "tie_tolerance": self.tie,
                "index_outputs": "exact"}


def _parse(entries: Sequence[str] | None, option: str, default: float) -> dict[str, float]:
    result = {"": default}
    for entry in entries or ():
        name, sep, value = entry.rpartition(":")
        if not sep:
            name, value = "", entry
        name = "" if name in ("", "*") else name
        try:
            number = float(value)
        except ValueError:
            raise PumerExportError(
                f"{option} {entry!r}: expected VALUE or OUTPUT:VALUE with a number, e.g. {option} 1e-4 or {option} logits:1e-4"
            ) from None
        if not math.isfinite(number) or number < 0:
            raise PumerExportError(f"{option} {entry!r}: the tolerance must be a non-negative number")
        if name and is_index_output(name):
            raise PumerExportError(f"{option} {entry!r}: index outputs are always compared exactly; "
                                   "near-ties are set with --tie-tolerance")
        result[name] = number
    return result


def parse_tolerances(dtype: str, atol: Sequence[str] | None = None, rtol: Sequence[str] | None = None,
                     tie: float | None = None) -> Tolerances:
    """Tolerances for a ``dtype`` export, with the CLI overrides applied."""
    d_atol, d_rtol, d_tie = DEFAULTS.get(dtype, DEFAULTS["fp32"])
    if tie is not None and (not math.isfinite(tie) or tie < 0):
        raise PumerExportError(f"--tie-tolerance must be a non-negative number, got {tie}")
    return Tolerances(_parse(atol, "--atol", d_atol), _parse(rtol, "--rtol", d_rtol), d_tie if tie is None else tie)


def check_output_names(tol: Tolerances, output_names: Sequence[str]) -> None:
    """Refuse tolerances for outputs the model does not have (a typo would silently do nothing)."""
    for mapping, option in ((tol.atol, "--atol"), (tol.rtol, "--rtol")):
        unknown = sorted(name for name in mapping if name and name not in output_names)
        if unknown:
            raise PumerExportError(
                f"{option} names output(s) {unknown} that the model does not have; outputs: {', '.join(output_names)}"
            )
