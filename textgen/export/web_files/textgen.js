// textgen.js — generate text in the browser from a textgen web export (`textgen export --format web`).
//
//   import { load } from "./textgen.js";
//   const model = await load(".");                     // the export folder's URL
//   const text = await model.generate({ prompt: "ROMEO:", length: 300, temperature: 0.8, seed: 1,
//                                       onToken: (piece) => output.append(piece) });
//   for await (const piece of model.stream({ prompt: "ROMEO:", length: 300 })) { ... }
//
// It does what `textgen sample` does, with the same numbers: the model's own tokenizer (characters,
// or words by the same pattern as Python's), the prompt fed step by step carrying the recurrent
// states, temperature, top-k, top-p and repetition penalty in float32, and the same counter-based
// noise, so the same prompt, settings and seed give the text `textgen sample` gives. The model runs
// in LiteRT.js (WebAssembly, on the CPU), which ships in the export folder: no CDN, works offline.
// A model trained on records (metadata.document) starts each sample at <bos> and the `label`'s
// token, and ends it at <eos> (or, with `stopAtEnd: false`, runs on, each record after a blank line).

import { Tensor, loadAndCompile, loadLiteRt } from "./litert/litert.js";

const NEG_INF = -1e9;
const f32 = Math.fround;
let runtime = null; // LiteRT.js loads once per page

/** Load the export at `url` (a folder holding metadata.json, model.tflite and litert/). */
export async function load(url = ".", { accelerator = "wasm" } = {}) {
  const base = new URL(url.endsWith("/") ? url : `${url}/`, globalThis.location?.href);
  runtime ??= loadLiteRt(new URL("litert/", base).href);
  const metadataResponse = await fetch(new URL("metadata.json", base));
  if (!metadataResponse.ok) throw new Error(`cannot load ${metadataResponse.url}: ${metadataResponse.status}`);
  const [metadata] = await Promise.all([metadataResponse.json(), runtime]);
  const compiled = await loadAndCompile(new URL("model.tflite", base).href, { accelerator });
  return new TextModel(metadata, compiled);
}

/** A loaded model: `generate`, `stream`, and its tokenizer (`encode`, `decode`). */
export class TextModel {
  constructor(metadata, compiled) {
    if (metadata.format !== "textgen-export") throw new Error("not a textgen export: metadata.json");
    this.metadata = metadata;
    this.compiled = compiled;
    this.level = metadata.level;
    this.document = metadata.document ?? null; // {bos_id, eos_id, label_ids} for a model of records
    const control = new Set(this.document ? [this.document.bos_id, this.document.eos_id,
      ...Object.values(this.document.label_ids)] : []);
    this.vocabulary = metadata.vocabulary.map((token, id) => (control.has(id) ? "" : token)); // id -> text
    this.ids = new Map(metadata.vocabulary.map((token, id) => [token, id])
      .filter(([, id]) => id > 0 && !control.has(id))); // text is never cut into <bos>, <eos> or labels
    this.labels = this.document ? Object.keys(this.document.label_ids) : [];
    this.pattern = this.level === "word" ? new RegExp(metadata.web.word_pattern, "gu") : null;
    this.states = metadata.states; // [{input, output, size}]
    this.runner = compiled.signatures?.[metadata.tflite.signature] ?? compiled;
  }

  /** The text cut into the model's pieces: characters (code points), or words, spaces and marks. */
  pieces(text) {
    return this.level === "word" ? text.match(this.pattern) ?? [] : Array.from(text);
  }

  /** Ids of the pieces of `text`; 0 for pieces the vocabulary lacks. */
  encode(text) {
    return this.pieces(text).map((piece) => this.ids.get(piece) ?? 0);
  }

  decode(ids) {
    return ids.map((id) => this.vocabulary[id]).join("");
  }

  /** Pieces of `prompt` the vocabulary lacks (generation skips them). */
  unknown(prompt) {
    return [...new Set(this.pieces(prompt).filter((piece) => !this.ids.has(piece)))];
  }

  /** The continuation of `prompt` (without it), `length` tokens long; `onToken` gets each piece. */
  async generate({ onToken, ...options } = {}) {
    let text = "";
    for await (const piece of this.stream(options)) {
      text += piece;
      onToken?.(piece);
    }
    return text;
  }

  /** The continuation of `prompt`, piece by piece; `signal` (an AbortSignal) stops it. */
  async *stream({ prompt = "", length = 200, temperature = 0.8, topK = 0, topP = 1, repetitionPenalty = 1,
                  seed, signal, label = null, stopAtEnd = true } = {}) {
    checkSettings({ length, temperature, topK, topP, repetitionPenalty });
    seed = seed ?? Math.floor(Math.random() * 2 ** 31);
    if (!Number.isInteger(seed)) throw new RangeError("seed must be an integer");
    const vocab = this.vocabulary.length;
    let ids = [...this.documentStart(label), ...this.encode(prompt).filter((id) => id !== 0)];
    if (ids.length === 0) ids = [this.metadata.prime_fallback_id];
    const seen = new Uint8Array(vocab);
    for (const id of ids) seen[id] = 1;
    let states = Object.fromEntries(this.states.map((s) => [s.input, new Tensor(new Float32Array(s.size), [1, s.size])]));
    let logits;
    try {
      for (const id of ids) [logits, states] = await this.step(id, states);
      const settings = { temperature, topK, topP, penalty: repetitionPenalty, seed };
      for (let step = 0; step < length; step++) {
        if (signal?.aborted) return;
        const id = choose(logits, seen, settings, step);
        seen[id] = 1;
        if (this.document && id === this.document.eos_id) {
          if (stopAtEnd) return;
          yield "\n\n"; // as textgen sample --no-stop-at-end shows where a record ended
        } else {
          yield this.vocabulary[id];
        }
        if (step < length - 1) [logits, states] = await this.step(id, states);
      }
    } finally {
      for (const tensor of Object.values(states)) tensor.delete();
    }
  }

  /** A model of records: <bos>, then the label's token (null: none); a model of one text: nothing. */
  documentStart(label) {
    if (!this.document) {
      if (label !== null && label !== undefined) {
        throw new Error("this model was trained on one text, not on records with labels");
      }
      return [];
    }
    if (label === null || label === undefined) return [this.document.bos_id];
    if (!(label in this.document.label_ids)) {
      const known = this.labels.map((name) => `'${name}'`).join(", ") || "none: it was trained without labels";
      throw new Error(`unknown label '${label}'; the model knows ${known}`);
    }
    return [this.document.bos_id, this.document.label_ids[label]];
  }

  /** One token through the step model: its logits, and the next states (the given ones are freed). */
  async step(id, states) {
    const tokens = new Tensor(new Int32Array([id]), [1]);
    let outputs;
    try {
      outputs = await this.runner.run({ token_ids: tokens, ...states });
    } finally {
      tokens.delete();
    }
    const next = {};
    for (const s of this.states) {
      states[s.input].delete();
      next[s.input] = outputs[s.output];
    }
    const logits = outputs.logits.toTypedArray().slice();
    outputs.logits.delete();
    return [logits, next];
  }

  delete() {
    this.compiled.delete();
  }
}

function checkSettings({ length, temperature, topK, topP, repetitionPenalty }) {
  if (!Number.isInteger(length) || length < 1) throw new RangeError("length must be at least 1");
  if (!(temperature >= 0)) throw new RangeError("temperature must be 0 (greedy) or more");
  if (!Number.isInteger(topK) || topK < 0) throw new RangeError("topK must be 0 (off) or more");
  if (!(topP > 0 && topP <= 1)) throw new RangeError("topP must be in (0, 1]");
  if (!(repetitionPenalty >= 1)) throw new RangeError("repetitionPenalty must be at least 1 (1 is off)");
}

// -- sampling: textgen.generate.sampling, in float32 ------------------------------------------------

/** The next token id from float32 `logits`, as `sample_rows` chooses it for row 0 of a request. */
export function choose(logits, seen, { temperature, topK, topP, penalty, seed }, step) {
  const vocab = logits.length;
  const x = Float32Array.from(logits);
  if (penalty !== 1) {
    const p = f32(penalty);
    for (let i = 0; i < vocab; i++) if (seen[i]) x[i] = x[i] > 0 ? x[i] / p : x[i] * p;
  }
  x[0] = NEG_INF; // the unknown token is never emitted
  if (!(temperature > 0)) return argmax(x);
  const t = Math.max(f32(temperature), f32(1e-6));
  const scaled = new Float32Array(vocab);
  for (let i = 0; i < vocab; i++) scaled[i] = x[i] / t;
  if (topK > 0) filterTopK(scaled, Math.min(topK, vocab));
  if (topP < 1) filterTopP(scaled, f32(topP));
  const noise = gumbelNoise(vocab, seed, step, 0);
  const total = new Float32Array(vocab);
  for (let i = 0; i < vocab; i++) total[i] = scaled[i] + noise[i];
  return argmax(total);
}

function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

function descending(values) {
  return Float32Array.from(values).sort().reverse();
}

function filterTopK(scaled, k) {
  const kth = descending(scaled)[k - 1];
  for (let i = 0; i < scaled.length; i++) if (scaled[i] < kth) scaled[i] = NEG_INF;
}

function filterTopP(scaled, p) {
  const sorted = descending(scaled);
  const probs = new Float32Array(sorted.length);
  let sum = f32(0);
  for (let i = 0; i < sorted.length; i++) {
    probs[i] = Math.exp(f32(sorted[i] - sorted[0]));
    sum = f32(sum + probs[i]);
  }
  let before = f32(0);
  let cutoff = sorted[0]; // the most likely token is always kept
  for (let i = 0; i < sorted.length; i++) {
    if (i > 0 && !(before < p)) break;
    cutoff = sorted[i];
    before = f32(before + f32(probs[i] / sum));
  }
  for (let i = 0; i < scaled.length; i++) if (scaled[i] < cutoff) scaled[i] = NEG_INF;
}

// -- noise: textgen.generate.sampling.row_noise, the same 32-bit integer hash --------------------------

function mix32(x) {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}

/** -log(-log(U)) for every entry of row `row`, U uniform in (0, 1) from (seed, step, row, column). */
export function gumbelNoise(vocab, seed, step, row) {
  const key = mix32((mix32(((seed >>> 0) + 0x9e3779b9) >>> 0) ^ (step >>> 0)) >>> 0);
  const noise = new Float32Array(vocab);
  for (let i = 0; i < vocab; i++) {
    const bits = mix32((mix32((row * vocab + i) >>> 0) ^ key) >>> 0);
    const uniform = Math.min(f32((bits >>> 8) * 2 ** -24 + 2 ** -25), 1 - 2 ** -24); // never 1: see row_noise
    noise[i] = -Math.log(f32(-Math.log(uniform)));
  }
  return noise;
}
