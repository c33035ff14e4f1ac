"""Word-level quality: `textgen train --level word` next to PyTorch's word_language_model example,
same tokens, same model size, same wall-clock budget, same run.

    pip install torch==2.13.0
    python bench/word_quality.py [--seconds 300] [--tied]   # prints one JSON object

Both train on the first 90% of tiny shakespeare cut into textgen's word tokens and are measured
on the last 10% in nats per token, all on windows of 100 tokens from a zero state (what
`textgen evaluate --seq-len 100` reports, whatever window a model trained on), PyTorch also the
example's own way (one pass carrying the state, which sees more context and so reads lower).
The model: LSTM 2 x 200, embedding 200, dropout 0.2 (the example's defaults); `--tied` ties
embedding and output weights in both. textgen trains it with its word defaults' optimizer, which
is the example's (SGD at 20, the global gradient norm clipped at 0.25: `textgen_example_size`),
and with AdamW at the presets' AdamW rate (`textgen_example_size_adamw`: --optimizer adamw),
and runs its own defaults too (`textgen_defaults`).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np

from common import SHAKESPEARE

WINDOW = 100  # every model is read on windows of this many tokens, each from a zero state
EXAMPLE_SIZE = ["--cell", "lstm", "--layers", "2", "--units", "200", "--embedding-dim", "200",
                "--dropout", "0.2"]


def textgen_run(folder: Path, seconds: float, extra: list[str], val_ids: np.ndarray) -> dict:
    subprocess.run([sys.executable, "-m", "textgen", "train", str(SHAKESPEARE), "--level", "word",
                    "--time-limit", str(seconds), "--no-samples", "--quiet", "--output-dir", str(folder),
                    "--name", "word", "--force", *extra], check=True, capture_output=True)
    config = json.loads((folder / "word" / "config.json").read_text(encoding="utf-8"))
    history = json.loads((folder / "word" / "history.json").read_text(encoding="utf-8"))
    loss = windows_loss(folder / "word", val_ids, WINDOW)
    return {"settings": " ".join(extra) or "defaults", "parameters": config["result"]["parameters"],
            "steps": config["result"]["steps"], "epochs": config["result"]["epochs"],
            "seq_len": config["train"]["seq_len"], "batch_size": config["train"]["batch_size"],
            "tokens_per_s": round(float(np.median(history["tokens_per_second"]))),
            "val_loss_windows": round(loss, 4), "val_perplexity_windows": round(float(np.exp(loss)), 2),
            "val_loss_per_epoch": [round(v, 3) for v in history["val_loss"] if v is not None]}


def windows_loss(model_dir: Path, val_ids: np.ndarray, seq_len: int) -> float:
    """The best model's loss on windows of `seq_len` (whatever it trained on), as PyTorch's is read."""
    import textgen
    from textgen.generate.evaluation import LossTally, evaluate_windows
    from textgen.text.tokens import TokenSource

    model = textgen.load(model_dir)
    source = TokenSource(lambda: iter([(val_ids, np.ones_like(val_ids))]), len(val_ids), len(val_ids), "val")
    return evaluate_windows(model._window_losses(), source, seq_len, 64,
                            LossTally(model.tokenizer.vocab_size))["loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300)
    parser.add_argument("--tied", action="store_true")
    args = parser.parse_args()
    from textgen.text.corpus import open_corpus
    from textgen.text.tokenizers import WordTokenizer

    corpus = open_corpus([str(SHAKESPEARE)], progress=False)
    tokenizer, total = WordTokenizer.fit(corpus.chunks())
    ids = np.concatenate([chunk for chunk, _ in tokenizer.encode_stream(corpus.chunks())])
    val_tokens = min(int(total * 0.1), 1_000_000)  # textgen's default validation tail
    results: dict = {"corpus": f"tiny shakespeare, {total:,} word tokens, vocabulary "
                               f"{tokenizer.vocab_size:,}, last {val_tokens:,} validate",
                     "seconds": args.seconds}
    # explicit either way: a word preset ties by itself when the embedding equals the units
    tied = ["--tie-weights"] if args.tied else ["--no-tie-weights"]
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "ids.npy", ids)
        torch = subprocess.run([sys.executable, str(Path(__file__).resolve().parent / "torch_word_lm.py"),
                                str(Path(folder) / "ids.npy"), str(val_tokens), str(args.seconds),
                                *(["--tied"] if args.tied else [])], capture_output=True, text=True)
        if torch.returncode != 0:
            raise RuntimeError(torch.stderr)
        results["pytorch"] = json.loads(torch.stdout.strip().splitlines()[-1])
        results["textgen_example_size"] = textgen_run(Path(folder), args.seconds, EXAMPLE_SIZE + tied,
                                                        ids[-val_tokens:])
        results["textgen_example_size_adamw"] = textgen_run(Path(folder), args.seconds,
                                                             [*EXAMPLE_SIZE, *tied, "--optimizer", "adamw"],
                                                             ids[-val_tokens:])
        results["textgen_defaults"] = textgen_run(Path(folder), args.seconds, [], ids[-val_tokens:])
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
