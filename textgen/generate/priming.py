"""What generation starts from: the prime's ids, after <bos> and a label's token for a model of
records. Shared by the compiled generator, the step generator, exports and the server."""

from __future__ import annotations

import numpy as np

from textgen.errors import TextgenError
from textgen.text.tokenizers import UNK_ID, Tokenizer


def fallback_id(tokenizer: Tokenizer) -> int:
    """What an empty prime starts from: a line break, or id 1 if the vocabulary has none."""
    newline = tokenizer.encode("\n")
    return int(newline[0]) if len(newline) and newline[0] != UNK_ID else 1


def prime_ids(tokenizer: Tokenizer, prime: str, label: str | None = None) -> np.ndarray:
    """What generation starts from: the ids of the prime's known pieces, after <bos> and the label's
    token for a model of records; a model of one text falls back to a line break without any."""
    ids = tokenizer.encode(prime)
    ids = ids[ids != UNK_ID]
    specials = tokenizer.specials
    if specials is None:
        if label is not None:
            raise TextgenError("this model was trained on one text, not on records with labels")
        return ids if len(ids) else np.array([fallback_id(tokenizer)], np.int32)
    head = [specials.bos] if label is None else [specials.bos, specials.label_id(label)]
    return np.concatenate([np.array(head, np.int32), ids])
