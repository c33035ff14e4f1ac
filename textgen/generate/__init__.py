"""From a trained network to text: sampling, the compiled generation loop, stop strings, evaluation
and novelty."""
