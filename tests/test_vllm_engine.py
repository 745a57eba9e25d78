"""generate.engine vllm, for real on CPU: vLLM's greedy lines equal the native decoder's, for the
InPars prompt (token ids) and the SPTAR prompt (the soft prompt as prompt_embeds).

Runs in the vLLM environment (``make test-vllm``, which sets SPTAR_REQUIRE_VLLM=1 so that a
missing vLLM fails); the main environment has no vLLM and skips it."""

from __future__ import annotations

import os

import pytest

if not os.environ.get("SPTAR_REQUIRE_VLLM"):
    pytest.importorskip("vllm")

from sptar.config import load_config
from sptar.llm.decoding import Sampling
from sptar.llm.engines import open_engine
from sptar.llm.prompts import PromptFormat
from sptar.outputs.prompt import Prompt
from tests.test_generate import make_adapter

DOCS = ["Photosynthesis turns light, water and carbon dioxide into sugar in the leaves of plants.",
        "Tides follow the moon.", "A vaccine trains the immune system to recognise a virus early.",
        "Coffee contains caffeine, which blocks adenosine receptors and keeps people awake."]
EXAMPLES = [("Bees pollinate flowers and make honey.", "what do bees do")]


@pytest.fixture(scope="module")
def vllm_tiny_llm(tmp_path_factory):
    """A 2-layer Llama with a head size vLLM's CPU attention takes (32), the SmolLM2 tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sptar.models import resolve_model

    folder = tmp_path_factory.mktemp("vllm-tiny-llm")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, vocab_size=len(tokenizer),
                         max_position_embeddings=512, tie_word_embeddings=True,
                         initializer_range=0.5, bos_token_id=tokenizer.bos_token_id,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _lines(cfg, prompt, docs):
    fmt = PromptFormat(_tokenizer(cfg), style=prompt.style, max_doc_tokens=48)
    blocks = [fmt.doc_ids(doc, len(prompt.examples)) for doc in docs]
    prefix = fmt.prefix_ids(prompt.examples)
    with open_engine(cfg, prompt, prefix, max(map(len, blocks)), "cpu", [], "test") as (gen, _):
        return gen.generate(blocks, Sampling())


def _tokenizer(cfg):
    from sptar.models import load_tokenizer

    return load_tokenizer(cfg.models.llm)


@pytest.mark.parametrize("style", ["inpars", "sptar"])
def test_vllm_greedy_lines_equal_the_native_decoder(vllm_tiny_llm, tmp_path, style):
    adapter = None
    if style == "sptar":
        adapter = tmp_path / "adapter"
        make_adapter(vllm_tiny_llm, adapter, virtual_tokens=6)
    prompt = Prompt(style, EXAMPLES, [["q", "d"]], adapter)
    common = [f"models.llm={vllm_tiny_llm}", "device=cpu", "generate.precision=fp32",
              "generate.max_new_tokens=12", "generate.batch_size=4"]
    native = _lines(load_config("tiny", common), prompt, DOCS)
    vllm = _lines(load_config("tiny", [*common, "generate.engine=vllm"]), prompt, DOCS)
    assert [line.token_ids for line in vllm] == [line.token_ids for line in native]
    assert [line.stopped for line in vllm] == [line.stopped for line in native]
    assert [line.mean_logprob for line in vllm] == pytest.approx(
        [line.mean_logprob for line in native], abs=1e-3)
    assert any(len(line.token_ids) > 1 for line in native)  # the lines say something
