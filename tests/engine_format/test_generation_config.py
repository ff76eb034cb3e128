"""``generation_config.json`` as greedy decoding reads it, and the manifest's ``generation`` section.

``pytest tests/engine_format/test_generation_config.py``. Torch-free, like the package.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine_format import FormatError
from engine_format.generation import CheckpointGeneration, load_generation_config

QWEN_INSTRUCT = {
    "bos_token_id": 151643, "pad_token_id": 151643, "do_sample": True, "eos_token_id": [151645, 151643],
    "repetition_penalty": 1.1, "temperature": 0.7, "top_p": 0.8, "top_k": 20, "transformers_version": "4.37.0",
}


def _write(tmp_path: Path, data: object) -> Path:
    (tmp_path / "generation_config.json").write_text(json.dumps(data))
    return tmp_path


def test_qwen_instruct_file_applies_penalty_and_stop_ids_and_lists_sampling_as_ignored(tmp_path: Path) -> None:
    """Qwen2.5-Instruct's file: penalty 1.1 and eos [151645, 151643] apply; do_sample/temperature/top_p/top_k are
    recorded as ignored by greedy decoding; nothing is unsupported."""
    record = load_generation_config(_write(tmp_path, QWEN_INSTRUCT))
    assert (record.source, record.eos_token_ids, record.repetition_penalty, record.max_new_tokens) == (
        "generation_config.json", (151645, 151643), 1.1, None)
    assert record.ignored == {"do_sample": True, "temperature": 0.7, "top_k": 20, "top_p": 0.8}
    assert record.unsupported == {}
    assert any("ignored by greedy decoding: do_sample=true" in n for n in record.notes())


def test_greedy_defaults_are_not_reported_and_a_missing_file_is_an_empty_record(tmp_path: Path) -> None:
    """do_sample false / num_beams 1 ask for nothing greedy ignores; no file means no record values."""
    record = load_generation_config(_write(tmp_path, {"eos_token_id": 2, "do_sample": False, "num_beams": 1}))
    assert record.eos_token_ids == (2,) and record.ignored == {} and record.notes() == []
    assert load_generation_config(tmp_path / "nowhere") == CheckpointGeneration()


def test_fields_that_would_change_greedy_output_are_flagged_unsupported(tmp_path: Path) -> None:
    """no_repeat_ngram_size 3 is unsupported (and logged as a warning); its default 0 is not."""
    assert load_generation_config(_write(tmp_path, {"no_repeat_ngram_size": 0})).unsupported == {}
    record = load_generation_config(_write(tmp_path, {"no_repeat_ngram_size": 3}))
    assert record.unsupported == {"no_repeat_ngram_size": 3}
    assert any(n.startswith("NOT APPLIED") for n in record.notes())


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"repetition_penalty": 0}, r"repetition_penalty = 0: must be a finite number > 0"),
        ({"eos_token_id": "</s>"}, r"eos_token_id = '</s>': must be a non-negative id"),
        ({"max_new_tokens": 0}, r"max_new_tokens = 0: must be an integer >= 1"),
        ([1, 2], r"must hold a JSON object"),
    ],
)
def test_invalid_values_name_the_file_and_field(tmp_path: Path, data: object, message: str) -> None:
    """A bad honoured field (or a non-object file) is a FormatError naming generation_config.json."""
    with pytest.raises(FormatError, match=r"generation_config\.json.*" + message):
        load_generation_config(_write(tmp_path, data))


def test_manifest_section_round_trips_and_rejects_unknown_keys() -> None:
    """as_dict/from_dict are inverse; an unknown or missing key is named."""
    record = CheckpointGeneration.from_file_data(QWEN_INSTRUCT, "generation_config.json")
    assert CheckpointGeneration.from_dict(record.as_dict(), "generation") == record
    with pytest.raises(FormatError, match=r"generation: missing keys \[\], unknown keys \['top_k'\]"):
        CheckpointGeneration.from_dict({**record.as_dict(), "top_k": 20}, "generation")
