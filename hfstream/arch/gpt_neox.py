"""GPT-NeoX (GPTNeoXForCausalLM: Pythia, GPT-NeoX-20B, ...): refused, because there is no reference
output to match.

llama.cpp's converter (llama-cpp-python 0.3.36) writes the rope dimension count from
``hparams["rotary_pct"]``, but it reads config.json through transformers' ``AutoConfig``, and
transformers 5 moves ``rotary_pct`` into ``rope_parameters.partial_rotary_factor`` (and
``rotary_emb_base`` into ``rope_parameters.rope_theta``): the reference stops with a KeyError on
every GPT-NeoX config (checked with transformers 5.23 on a Pythia-shaped fixture). Converting it
anyway would mean writing a file nobody can compare byte for byte. With a reference that reads
``rope_parameters`` this becomes a family: the fused ``query_key_value`` is stored per head
(q, k, v of head 0, then of head 1, ...) and the reference regroups it into q rows, k rows, v rows.
"""

from __future__ import annotations

from . import refuse

refuse("GPTNeoXForCausalLM",
       "llama.cpp's converter stops on it with transformers 5 (it reads rotary_pct, which transformers 5 "
       "moves into rope_parameters), so there is no reference output for hfstream to match")
