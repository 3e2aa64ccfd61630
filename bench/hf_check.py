#!/usr/bin/env python3
"""Load a model `magc export` wrote into transformers and record what it computes.

    python3 bench/hf_check.py EXPORT_DIR OUT.safetensors

Writes `input_ids` [2, 10] (the ids cmd/magc's tests use: (37*i + 11) mod 1000),
transformers' fp32 `logits` on them, and the greedy continuation (16 new tokens,
`generate(do_sample=False)`) of a fixed prompt as `prompt_ids` / `greedy_ids`.
The metadata holds the sha256 of the exported model.safetensors, the transformers
version and the greedy text, so a test can tell the export it was made from.
"""

import hashlib
import os
import sys

import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer, MambaForCausalLM, __version__

PROMPT = "def forward(self, hidden_states):"


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    model = MambaForCausalLM.from_pretrained(src, torch_dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(src)
    ids = torch.tensor([(37 * i + 11) % 1000 for i in range(20)], dtype=torch.int64).reshape(2, 10)
    with torch.no_grad():
        logits = model(ids).logits.float().contiguous()
        prompt = tok(PROMPT, return_tensors="pt").input_ids
        greedy = model.generate(prompt, max_new_tokens=16, min_new_tokens=16, do_sample=False)
    with open(os.path.join(src, "model.safetensors"), "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    text = tok.decode(greedy[0])
    save_file(
        {
            "input_ids": ids.to(torch.int32),
            "logits": logits,
            "prompt_ids": prompt.to(torch.int32),
            "greedy_ids": greedy.to(torch.int32),
        },
        out,
        metadata={"model_sha256": digest, "transformers": __version__, "greedy_text": text},
    )
    print(f"transformers {__version__}: logits {tuple(logits.shape)}, greedy {greedy[0].tolist()}")
    print(f"greedy text: {text!r}")


if __name__ == "__main__":
    main()
