"""Samplers need no model: they are fed hand-made logits."""

import numpy as np
import tensorflow as tf

from textgen.generate.sampling import filter_top_k, filter_top_p, sample_next, sample_rows

LOGITS = tf.constant([[1.0, 3.0, 2.0, 0.5], [4.0, 0.0, 0.0, 3.9]])


def draw(logits=LOGITS, temperature=1.0, top_k=0, top_p=1.0, seed=(1, 2), banned=None):
    return sample_next(logits, tf.constant(temperature), tf.constant(top_k), tf.constant(top_p),
                       tf.constant(seed, tf.int32), banned).numpy().tolist()


def test_temperature_zero_is_greedy():
    assert draw(temperature=0.0) == [1, 0]


def test_top_k_one_and_tiny_top_p_are_greedy():
    for seed in range(20):
        assert draw(top_k=1, seed=(seed, 0)) == [1, 0]
        assert draw(top_p=1e-6, seed=(seed, 0)) == [1, 0]


def test_filters_keep_the_right_tokens():
    kept = filter_top_k(LOGITS, tf.constant(2)).numpy() > -1e8
    assert kept.tolist() == [[False, True, True, False], [True, False, False, True]]
    # softmax of row 0 is about [.09, .64, .24, .05]: 0.7 needs the two likeliest tokens
    kept = filter_top_p(LOGITS, tf.constant(0.7)).numpy() > -1e8
    assert kept[0].tolist() == [False, True, True, False]


def test_banned_ids_are_never_sampled():
    banned = tf.constant([False, True, False, False])
    for seed in range(50):
        assert draw(temperature=5.0, seed=(seed, 0), banned=banned)[0] != 1
    assert draw(temperature=0.0, banned=banned)[0] == 2


def test_same_seed_same_tokens_and_frequencies_follow_probabilities():
    assert draw(seed=(7, 3)) == draw(seed=(7, 3))
    logits = tf.math.log(tf.constant([[0.2, 0.8]]))
    counts = np.bincount([draw(logits, seed=(s, 0))[0] for s in range(400)], minlength=2)
    assert 0.7 < counts[1] / 400 < 0.9


def test_repetition_penalty_lowers_seen_tokens_only():
    from textgen.generate.sampling import apply_repetition_penalty

    logits = tf.constant([[2.0, -1.0, 3.0]])
    seen = tf.constant([[True, True, False]])
    out = apply_repetition_penalty(logits, seen, tf.constant(2.0)).numpy().tolist()
    assert out == [[1.0, -2.0, 3.0]]
    assert apply_repetition_penalty(logits, seen, tf.constant(1.0)).numpy().tolist() == [[2.0, -1.0, 3.0]]


def test_each_row_samples_with_its_own_settings_and_noise():
    """A batch of rows with settings of their own draws, row by row, what each row alone draws with
    its settings (a server batches requests so): its seed, step and row choose its noise."""
    rng = np.random.default_rng(3)
    logits = tf.constant(rng.normal(0, 2, (6, 50)).astype("float32"))
    temperature = [0.0, 0.7, 1.3, 1.0, 2.0, 0.9]
    top_k = [0, 5, 0, 2, 0, 10]
    top_p = [1.0, 1.0, 0.6, 1.0, 0.95, 0.3]
    seeds, steps, rows = [1, 2, 3, 4, 5, 6], [0, 7, 3, 9, 1, 4], [0, 1, 0, 2, 1, 0]
    together = sample_rows(logits, tf.constant(temperature), tf.constant(top_k), tf.constant(top_p),
                           tf.constant(seeds), tf.constant(steps), tf.constant(rows)).numpy().tolist()
    alone = [sample_next(logits[r:r + 1], tf.constant(temperature[r]), tf.constant(top_k[r]),
                         tf.constant(top_p[r]), tf.constant([seeds[r], steps[r]]),
                         first_row=rows[r]).numpy()[0] for r in range(6)]
    assert together == alone and len(set(together)) > 3


def test_a_row_whose_top_p_is_one_keeps_every_token_beside_rows_that_filter():
    logits = tf.constant([[0.0] * 8, [5.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    kept = filter_top_p(logits, tf.constant([1.0, 0.5])).numpy() > -1e8
    assert kept[0].all() and kept[1].tolist() == [True] + [False] * 7
