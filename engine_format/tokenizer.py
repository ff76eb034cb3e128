"""The engines' tokenizer: ``tokenizer.json`` (saved beside the engines by the exporter) read with ``tokenizers``.

The exporter saves the checkpoint's Qwen2 tokenizer already extended with ``<image>`` and the action tokens, so the
runtime needs neither transformers nor the checkpoint: :class:`Tokenizer` encodes text without adding special tokens
(Qwen adds none; control tokens written in the text, such as ``<|im_start|>``, are recognised), decodes, and streams
text incrementally (:class:`TextStream`: each new token costs one step, not a re-decode of everything so far).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from tokenizers import Tokenizer as _HFTokenizer
from tokenizers.decoders import DecodeStream

from engine_format import FormatError
from engine_format.vocab import ActionTokenIds

TOKENIZER_FILE = "tokenizer.json"


class Tokenizer:
    """A ``tokenizers`` tokenizer with the few operations the runtime and the prompt builder need.

    Args:
        backend: The loaded ``tokenizers.Tokenizer``.
        path: Where it was read from (for messages).
    """

    def __init__(self, backend: _HFTokenizer, path: Path | None = None) -> None:
        self.backend = backend
        self.path = path

    @classmethod
    def from_dir(cls, directory: Path | str) -> Tokenizer:
        """Loads ``directory/tokenizer.json``.

        Raises:
            FormatError: If the file is missing or cannot be parsed.
        """
        path = Path(directory) / TOKENIZER_FILE
        if not path.is_file():
            raise FormatError(f"no {TOKENIZER_FILE} in {directory}: the runtime needs the model's tokenizer")
        try:
            backend = _HFTokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception for a malformed file
            raise FormatError(f"{path} is not a valid tokenizer file: {exc}") from exc
        return cls(backend, path)

    def __len__(self) -> int:
        """Entries including added tokens."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text``, no special tokens added."""
        return list(self.backend.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        """Text of ``ids``."""
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def token_to_id(self, token: str) -> int | None:
        """Id of a whole token string, or ``None``."""
        return self.backend.token_to_id(token)

    def single_token_id(self, token: str, where: str) -> int:
        """Id of a token string that must be exactly one token.

        Raises:
            FormatError: Naming ``where`` if ``token`` is unknown or encodes to more than one id.
        """
        token_id = self.token_to_id(token)
        if token_id is None or self.encode(token) != [token_id]:
            raise FormatError(f"{where} = {token!r}: is not a single token of the tokenizer")
        return int(token_id)

    def check_action_tokens(self, ids: ActionTokenIds) -> None:
        """Checks that the action tokens are single tokens at the engines' ids.

        Raises:
            FormatError: Naming the token whose id differs.
        """
        for token, expected in ids.as_dict().items():
            found = self.token_to_id(token)
            if found != expected:
                raise FormatError(
                    f"tokenizer {self.path}: {token} has id {found}, the engines expect {expected} (re-export)"
                )

    def text_stream(self, skip_special_tokens: bool = True) -> TextStream:
        """A new incremental decoder for one generated text."""
        return TextStream(self, skip_special_tokens)


class TextStream:
    """Incremental detokenisation of one generated sequence.

    :meth:`push` returns the text a token completes; a token that ends inside a multi-byte UTF-8 character returns
    ``""`` until a later token completes it (byte-level BPE), so no partial character is ever emitted.
    """

    def __init__(self, tokenizer: Tokenizer, skip_special_tokens: bool = True) -> None:
        self._tokenizer = tokenizer
        self._stream = DecodeStream(skip_special_tokens=skip_special_tokens)
        self.text = ""

    def push(self, token_id: int) -> str:
        """Feeds one generated id; returns the newly completed text (possibly empty)."""
        piece = self._stream.step(self._tokenizer.backend, int(token_id)) or ""
        self.text += piece
        return piece
