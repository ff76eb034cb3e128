"""The checkpoint's ``generation_config.json`` as greedy decoding uses it, and the one repetition-penalty function.

The release calls ``model.generate(..., do_sample=False, num_beams=1, max_new_tokens=1024)``, which Hugging Face merges
over the checkpoint's ``generation_config.json``. Greedy decoding with that merge depends on three fields of the file:

* ``eos_token_id`` (an id or a list): the stop ids;
* ``repetition_penalty``: HF's ``RepetitionPenaltyLogitsProcessor``, applied in greedy search too, over the ids in
  ``input_ids``; the prompt goes in as ``inputs_embeds``, so that is the *generated* ids only;
* ``max_new_tokens``: the budget (the release passes its own, so for the release this one never applies).

Every other field is classified, never silently dropped: sampling and beam-search fields set to anything but HF's
defaults are *ignored* (greedy, one beam; they are logged once where the file is read and recorded in the manifest),
bookkeeping fields are *inert* (they cannot change the generated ids), and anything else set to a non-default value
is *unsupported* (it would change the ids and is not implemented here: a warning, recorded too). :class:`CheckpointGeneration` is also the
manifest's ``generation`` section, so the torch-free runtime gets it without the checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine_format import FormatError, read_json_object

logger = logging.getLogger(__name__)

GENERATION_CONFIG_FILE = "generation_config.json"

HONOURED_FIELDS = ("eos_token_id", "repetition_penalty", "max_new_tokens")
"""Fields greedy decoding applies (see the module docstring)."""

SAMPLING_FIELDS = frozenset(
    {"do_sample", "temperature", "top_k", "top_p", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "top_h",
     "num_return_sequences"}
)
"""Fields that only act when sampling (greedy: ``do_sample=False``, as the release calls ``generate``)."""

BEAM_FIELDS = frozenset(
    {"num_beams", "num_beam_groups", "diversity_penalty", "length_penalty", "early_stopping", "constraints",
     "force_words_ids"}
)
"""Fields that only act in beam search (the release passes ``num_beams=1``)."""

INERT_FIELDS = frozenset(
    {"_from_model_config", "transformers_version", "bos_token_id", "pad_token_id", "decoder_start_token_id",
     "use_cache", "cache_implementation", "cache_config", "compile_config", "disable_compile", "output_attentions",
     "output_hidden_states", "output_scores", "output_logits", "return_dict_in_generate", "low_memory",
     "prompt_lookup_num_tokens", "max_matching_ngram_size", "num_assistant_tokens", "num_assistant_tokens_schedule",
     "assistant_confidence_threshold", "assistant_early_exit", "assistant_lookbehind", "target_lookbehind",
     "assistant_ensemble_weight", "is_assistant", "prefill_chunk_size", "max_cache_len", "continuous_batching_config",
     "speculation_type", "use_mtp", "encoder_no_repeat_ngram_size", "encoder_repetition_penalty",
     "renormalize_logits", "remove_invalid_values", "max_length"}
)
"""Fields that cannot change greedy ids here: bookkeeping, caching, speculation (exact by construction), encoder-
decoder-only penalties, log-softmax renormalisation (arg-max unchanged), and ``max_length`` (``max_new_tokens`` is
always set, and takes precedence in HF)."""

_DEFAULTS: dict[str, Any] = {
    "no_repeat_ngram_size": 0,
    "min_length": 0,
    "min_new_tokens": None,
    "bad_words_ids": None,
    "suppress_tokens": None,
    "begin_suppress_tokens": None,
    "forced_bos_token_id": None,
    "forced_eos_token_id": None,
    "sequence_bias": None,
    "exponential_decay_length_penalty": None,
    "guidance_scale": None,
    "watermarking_config": None,
    "penalty_alpha": None,
    "token_healing": False,
    "dola_layers": None,
    "stop_strings": None,
    "max_time": None,
}
"""Fields that change greedy ids (or stop it) when set, with the value that means "off"."""


_SEARCH_DEFAULTS: dict[str, Any] = {
    "do_sample": False, "temperature": 1.0, "top_k": 50, "top_p": 1.0, "min_p": None, "typical_p": 1.0,
    "epsilon_cutoff": 0.0, "eta_cutoff": 0.0, "top_h": None, "num_return_sequences": 1, "num_beams": 1,
    "num_beam_groups": 1, "diversity_penalty": 0.0, "length_penalty": 1.0, "early_stopping": False,
    "constraints": None, "force_words_ids": None,
}
"""HF's values of the sampling and beam fields: a file that sets these asks for nothing greedy ignores."""


def _is_default(name: str, value: Any) -> bool:
    """Whether ``value`` turns field ``name`` off (``min_new_tokens`` 0 and ``guidance_scale`` 1 are off too)."""
    if name in ("min_new_tokens", "penalty_alpha") and value in (0, 0.0):
        return True
    if name == "guidance_scale" and value == 1:
        return True
    if name in _SEARCH_DEFAULTS:
        default = _SEARCH_DEFAULTS[name]
        return isinstance(value, bool) == isinstance(default, bool) and value == default
    return name in _DEFAULTS and value == _DEFAULTS[name]


def _json_value(value: Any, where: str) -> Any:
    """Checks that a recorded field value is plain JSON (it goes into the manifest)."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise FormatError(f"{where} = {value!r}: not a JSON value ({exc})") from exc
    return value


@dataclass(frozen=True)
class CheckpointGeneration:
    """What a checkpoint's ``generation_config.json`` asks of greedy decoding.

    Attributes:
        source: The file it was read from (``generation_config.json``), or None when the checkpoint has none.
        eos_token_ids: Its stop ids, or None when it names none.
        repetition_penalty: Its repetition penalty, or None when unset.
        max_new_tokens: Its token budget, or None when unset.
        ignored: Sampling and beam-search fields with their values (greedy, one beam: not applied).
        unsupported: Fields that would change greedy ids but are not implemented here, with their values.
    """

    source: str | None = None
    eos_token_ids: tuple[int, ...] | None = None
    repetition_penalty: float | None = None
    max_new_tokens: int | None = None
    ignored: Mapping[str, Any] = field(default_factory=dict)
    unsupported: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_file_data(cls, data: Mapping[str, Any], where: str) -> CheckpointGeneration:
        """Parses a ``generation_config.json`` object, validating the honoured fields and classifying the rest.

        Args:
            data: The parsed file.
            where: The file, for messages.

        Raises:
            FormatError: Naming the field, for a bad stop id, penalty or budget.
        """
        eos = data.get("eos_token_id")
        penalty = data.get("repetition_penalty")
        budget = data.get("max_new_tokens")
        ignored: dict[str, Any] = {}
        unsupported: dict[str, Any] = {}
        for name in sorted(data):
            value = data[name]
            if name in HONOURED_FIELDS or name in INERT_FIELDS:
                continue
            if _is_default(name, value):
                continue
            if name in SAMPLING_FIELDS or name in BEAM_FIELDS:
                ignored[name] = _json_value(value, f"{where}: {name}")
            else:
                unsupported[name] = _json_value(value, f"{where}: {name}")
        return cls(
            source=GENERATION_CONFIG_FILE,
            eos_token_ids=_stop_ids(eos, f"{where}: eos_token_id"),
            repetition_penalty=_penalty(penalty, f"{where}: repetition_penalty"),
            max_new_tokens=_budget(budget, f"{where}: max_new_tokens"),
            ignored=ignored,
            unsupported=unsupported,
        )

    # ------------------------------------------------------------------ manifest section
    def as_dict(self) -> dict[str, Any]:
        """The manifest's ``generation`` section."""
        return {
            "source": self.source,
            "eos_token_ids": None if self.eos_token_ids is None else list(self.eos_token_ids),
            "repetition_penalty": self.repetition_penalty,
            "max_new_tokens": self.max_new_tokens,
            "ignored": dict(self.ignored),
            "unsupported": dict(self.unsupported),
        }

    @classmethod
    def from_dict(cls, data: Any, where: str) -> CheckpointGeneration:
        """Parses the manifest's ``generation`` section.

        Raises:
            FormatError: Naming the missing, unknown or mistyped key.
        """
        if not isinstance(data, dict):
            raise FormatError(f"{where}: must be an object")
        keys = set(cls().as_dict())
        missing, unknown = sorted(keys - set(data)), sorted(set(data) - keys)
        if missing or unknown:
            raise FormatError(f"{where}: missing keys {missing}, unknown keys {unknown} (re-export the engines)")
        source = data["source"]
        if source is not None and not isinstance(source, str):
            raise FormatError(f"{where}.source = {source!r}: must be a file name or null")
        for key in ("ignored", "unsupported"):
            if not isinstance(data[key], dict):
                raise FormatError(f"{where}.{key} = {data[key]!r}: must be an object")
        return cls(
            source=source,
            eos_token_ids=_stop_ids(data["eos_token_ids"], f"{where}.eos_token_ids"),
            repetition_penalty=_penalty(data["repetition_penalty"], f"{where}.repetition_penalty"),
            max_new_tokens=_budget(data["max_new_tokens"], f"{where}.max_new_tokens"),
            ignored=dict(data["ignored"]),
            unsupported=dict(data["unsupported"]),
        )

    # ------------------------------------------------------------------ messages
    def notes(self) -> list[str]:
        """Readable lines about the fields not applied (empty when everything in the file is applied or inert)."""
        lines = []
        if self.ignored:
            lines.append("sampling/beam fields ignored by greedy decoding: " + _fields(self.ignored))
        if self.unsupported:
            lines.append("NOT APPLIED (would change greedy output; not implemented): " + _fields(self.unsupported))
        return lines

    def log_notes(self, where: str) -> None:
        """Logs :meth:`notes` once for this read of the file (ignored fields at INFO, unsupported ones as a warning)."""
        if self.ignored:
            logger.info("%s: sampling/beam fields ignored by greedy decoding: %s", where, _fields(self.ignored))
        if self.unsupported:
            logger.warning(
                "%s: field(s) %s would change greedy output and are NOT applied (not implemented)",
                where, _fields(self.unsupported),
            )


def _fields(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={json.dumps(v)}" for k, v in values.items())


def _stop_ids(value: Any, where: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in items):
        raise FormatError(f"{where} = {value!r}: must be a non-negative id or a non-empty list of them")
    return tuple(items)


def _penalty(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise FormatError(f"{where} = {value!r}: must be a finite number > 0 (1.0 = no penalty)")
    return float(value)


def _budget(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise FormatError(f"{where} = {value!r}: must be an integer >= 1")
    return value


def load_generation_config(model_dir: Path | str, log: bool = True) -> CheckpointGeneration:
    """Reads a checkpoint directory's ``generation_config.json`` (an empty record when there is none).

    Args:
        model_dir: Checkpoint directory.
        log: Log the fields that are not applied (once per call: call it once per load).

    Raises:
        FormatError: If the file is not a JSON object or an honoured field is invalid (the message names the file).
    """
    path = Path(model_dir) / GENERATION_CONFIG_FILE
    if not path.exists():
        return CheckpointGeneration()
    record = CheckpointGeneration.from_file_data(read_json_object(path, "generation config"), str(path))
    if log:
        record.log_notes(str(path))
    return record


def apply_repetition_penalty(logits: np.ndarray, generated_ids: Sequence[int], penalty: float) -> np.ndarray:
    """HF ``RepetitionPenaltyLogitsProcessor`` over ``generated_ids``: returns the penalised logits.

    Each id seen so far has its logit divided by ``penalty`` when positive and multiplied by it when negative (so a
    penalty > 1 always makes a repeat less likely). ``penalty == 1`` or no ids returns ``logits`` itself.

    Args:
        logits: ``[V]`` (left unmodified).
        generated_ids: Ids generated so far in this text (duplicates count once, as in HF's gather/scatter).
        penalty: The repetition penalty (> 0).

    Returns:
        ``[V]`` float32 logits.
    """
    if penalty == 1.0 or not len(generated_ids):
        return logits
    ids = np.unique(np.asarray(generated_ids, dtype=np.int64))
    out = np.array(logits, dtype=np.float32, copy=True)
    picked = out[ids]
    out[ids] = np.where(picked < 0, picked * np.float32(penalty), picked / np.float32(penalty))
    return out
