"""Run exported SavedModels through TensorFlow (`.tflite` files: textgen.export.litert).

A SavedModel is driven through its `step` signature (ids and states in, logits and states out)
by textgen.generate.step_generator, which draws what the Keras generator draws, and also runs its
in-graph `serving_default` loop, as a server would. textgen.exported_model puts these behind the
same API as a trained model.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from textgen.errors import TextgenError
from textgen.export.litert import STEP_SIGNATURE, next_state_name
from textgen.generate.numpy_sampling import temperature_list
from textgen.generate.priming import prime_ids
from textgen.generate.step_generator import States
from textgen.text.tokenizers import Tokenizer


class SavedModelStep:
    """The SavedModel's `step` signature through TensorFlow."""

    def __init__(self, loaded: Any):
        self.signature = loaded.signatures[STEP_SIGNATURE]

    def __call__(self, ids: np.ndarray, states: States) -> tuple[np.ndarray, States]:
        import tensorflow as tf

        outputs = self.signature(token_ids=tf.constant(ids, tf.int32),
                                 **{name: tf.constant(value) for name, value in states.items()})
        return outputs["logits"].numpy(), {name: outputs[next_state_name(name)].numpy() for name in states}


class ServingGenerator:
    """Generation by the SavedModel's `serving_default` signature: the whole loop in its graph."""

    def __init__(self, loaded: Any, tokenizer: Tokenizer):
        self.signature = loaded.signatures["serving_default"]
        self.tokenizer = tokenizer

    def stream(self, prime: str = "", length: int = 200, *, num_samples: int = 1,
               temperature: float | Sequence[float] = 0.8, top_k: int = 0, top_p: float = 1.0,
               repetition_penalty: float = 1.0, seed: int = 0,
               label: str | None = None) -> Iterator[np.ndarray]:
        import tensorflow as tf

        temperatures = temperature_list(temperature)
        prime_ids(self.tokenizer, "", label)  # a label the model does not know: one clear error
        records = self.tokenizer.specials is not None
        labels = {"labels": tf.constant([label or ""] * num_samples)} if records else {}
        if len(temperatures) != 1:
            raise TextgenError("a SavedModel's serving signature takes one temperature, not a list")
        if repetition_penalty != 1:
            raise TextgenError("a SavedModel's serving signature has no repetition penalty")
        outputs = self.signature(prompts=tf.constant([prime] * num_samples), num_tokens=tf.constant(length),
                                 temperature=tf.constant(float(temperatures[0])),
                                 top_k=tf.constant(int(top_k)), top_p=tf.constant(float(top_p)),
                                 seed=tf.constant(int(seed)), **labels)
        yield outputs["token_ids"].numpy()
