"""Text in, batches out: corpus sources, tokenizers, and the tf.data pipeline of training windows."""
