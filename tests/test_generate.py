"""Weak query generation: exact prefix caching, resume, shards, post-processing, the contract."""

from __future__ import annotations

import shutil

import pytest

from sptar.errors import SptarError
from sptar.io.formats import (
    doc_text,
    read_corpus,
    read_json,
    read_jsonl,
    read_qrels,
    read_queries,
    write_json,
)
from sptar.llm.generation import Item, generate_items
from sptar.outputs.fewshot import load_split
from sptar.run.runner import PARTIAL, execute, paths_for
from sptar.text import clean_query, cut_repeated_tail

NEWLINE = 198  # "\n" in the SmolLM2 tokenizer
FILES = ("queries.jsonl", "qrels/train.tsv", "dropped.jsonl")
TUNED_LIMITS = {"style": "sptar", "max_doc_tokens": 48, "max_example_doc_tokens": 12,
                "max_query_tokens": 6}


# ---------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _one_thread():
    """The tiny model's ops are too small for threads; on a busy machine they only add waiting."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    """A 2-layer Llama (hidden 32) with the SmolLM2 tokenizer, saved to a folder.

    Weights are drawn with a large init so that the output depends on the document, and the
    newline token gets a random output row so that lines end after 1..8 tokens or not at all
    (immediately: an empty query, retried).
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sptar.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=1, eos_token_id=2,
                         pad_token_id=2, tie_word_embeddings=False, initializer_range=0.3)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        model.lm_head.weight[NEWLINE] = torch.randn(config.hidden_size) * 0.5
    folder = tmp_path_factory.mktemp("tiny-llm")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_adapter(tiny_llm, tmp_path_factory):
    """A prompt-tuning adapter for the tiny model as ``sptar tune`` saves it (4 virtual tokens)."""
    folder = tmp_path_factory.mktemp("tiny-adapter")
    make_adapter(tiny_llm, folder)
    return folder


def make_adapter(model_folder, target, virtual_tokens: int = 4) -> None:
    import torch
    from peft import PromptTuningConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_folder)
    peft_model = get_peft_model(model, PromptTuningConfig(task_type=TaskType.CAUSAL_LM,
                                                          num_virtual_tokens=virtual_tokens))
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        weight = peft_model.prompt_encoder["default"].embedding.weight
        weight.copy_(torch.randn(weight.shape, generator=generator) * 0.3)
    peft_model.save_pretrained(target)


@pytest.fixture
def setup(tiny_cfg, tmp_path, tiny_llm, tiny_adapter):
    """``make(root, *overrides) -> (cfg, paths)`` with data, split and a fake tune stage done."""

    def make(root: str = "a", *overrides: str):
        cfg = tiny_cfg(f"models.llm={tiny_llm}", *overrides)
        paths = paths_for(cfg, tmp_path / root)
        execute("data", cfg, paths)
        execute("split", cfg, paths)
        tune = paths.stage("tune")
        if not (tune / "manifest.json").is_file():
            shutil.copytree(tiny_adapter, tune / "adapter")
            split = load_split(paths)
            from sptar.outputs.dataset import load_beir

            corpus = load_beir(paths.beir).corpus
            qid = sorted(split.prompt_train)[0]
            did = sorted(split.prompt_train[qid])[0]
            write_json(tune / "examples.json", {"n_examples": 1, "chosen": [
                {"query_id": qid, "doc_id": did, "query": split.queries[qid],
                 "doc": doc_text(corpus[did])}], "prompt": TUNED_LIMITS})
            write_json(tune / "manifest.json", {"stage": "tune"})
        return cfg, paths

    return make


def outputs(paths, variant: str) -> dict[str, bytes]:
    folder = paths.stage("generate", variant)
    return {name: (folder / name).read_bytes() for name in FILES}


class Interrupt(Exception):
    pass


def interrupt_after(monkeypatch, chunks: int) -> None:
    """Make the run die (like a kill) right after it has written ``chunks`` chunk files."""
    from sptar.llm.generation import Workspace

    original = Workspace.write_chunk
    written = []

    def write_then_maybe_die(self, number, header, items):
        original(self, number, header, items)
        written.append(number)
        if len(written) >= chunks:
            raise Interrupt(f"killed after chunk {number}")

    monkeypatch.setattr(Workspace, "write_chunk", write_then_maybe_die)


# ---------------------------------------------------------------- post-processing


@pytest.mark.parametrize(("raw", "expected"), [
    (" what does vitamin d do for bones?", "what does vitamin d do for bones?"),
    ("Relevant Query: aspirin heart attack risk", "aspirin heart attack risk"),
    ("query: relevant query: statins", "statins"),
    ('  "effect of sleep on memory"  ', "effect of sleep on memory"),
    ("effect of sleep on memory\nDocument: next", "effect of sleep on memory"),
    ("sleep and memory sleep and memory sleep and", "sleep and memory"),
    ("what is the role of the the the", "what is the role of the"),
    ("query-based retrieval models", "query-based retrieval models"),
])
def test_clean_query(raw, expected):
    assert clean_query(raw) == (expected, None)


@pytest.mark.parametrize(("raw", "reason"), [
    ("", "empty"), ("   ", "empty"), ("Relevant Query:", "empty"), ("?!", "empty"),
    ("Document: Vitamin D increases", "prompt echo"), ("Example 3:", "prompt echo"),
])
def test_clean_query_empty(raw, reason):
    assert clean_query(raw) == ("", reason)


def test_cut_repeated_tail_keeps_ordinary_text():
    assert cut_repeated_tail("very very good") == "very very good"
    assert cut_repeated_tail("a b c a b c a b") == "a b c"
    assert cut_repeated_tail("x y z") == "x y z"
    assert cut_repeated_tail("the role of p53 and the role of mdm2") == "the role of p53 and the role of mdm2"
    assert cut_repeated_tail("What is the X? What is the Y") == "What is the X?"


def test_cut_repeated_tail_real_cases():
    # seen in SmolLM2 output on SciFact: a loop cut mid-word by max_new_tokens, and a restart
    assert cut_repeated_tail("HESO1 is a 2'-O-methylase that is a 2'-O-methylase that is a 2") \
        == "HESO1 is a 2'-O-methylase that"
    assert cut_repeated_tail("The genetic basis of the familial deletion of LMNA is known.9,10"
                             " The genetic basis of the familial LMNA") \
        == "The genetic basis of the familial deletion of LMNA is known.9,10"


# ---------------------------------------------------------------- decoding


def test_prefix_cache_equals_no_cache_and_plain_generate(tiny_llm, tiny_adapter, monkeypatch):
    """Cached prefix == recomputed prefix == HF generate (batch 1, full prompt), with and without
    a soft prompt, through row refills and column compaction; sampled rows do not depend on
    their batch-mates."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sptar.llm import decoding
    from sptar.llm.decoding import LineGenerator, Sampling, stop_token_ids
    from sptar.llm.prompts import PromptFormat

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm).eval()
    stops = stop_token_ids(tokenizer)
    assert NEWLINE in stops and tokenizer.eos_token_id in stops
    fmt = PromptFormat(tokenizer, "inpars", max_doc_tokens=40)
    examples = [("The cat sat on the mat.", "where did the cat sit"),
                ("Vitamin D helps bones stay strong.", "vitamin d bone health")]
    texts = [doc_text(doc) for doc in read_corpus("tests/fixtures/beir/tiny/corpus.jsonl").values()]
    prefix = fmt.prefix_ids(examples)
    # unsorted lengths, then short documents and a long one: rows of several lengths (real
    # left padding), refills after compaction with a document wider than the live rows
    docs = [fmt.doc_ids(text, len(examples)) for text in
            [*texts[:14], "Aspirin.", "Sleep.", "Bones.", "Mice.", " ".join(texts[16:20])]]
    assert len({len(d) for d in docs}) > 3
    events = []
    compact, prefill = decoding._Decoding._compact, decoding._Decoding._prefill

    def widening(self, slots, indices):
        if self.end < self.prefix + max(len(self.docs[i]) for i in indices):
            events.append("skip ahead")
        return prefill(self, slots, indices)

    monkeypatch.setattr(decoding._Decoding, "_compact",
                        lambda self: (events.append("compact"), compact(self)))
    monkeypatch.setattr(decoding._Decoding, "_prefill", widening)

    def plain(generate, ids):
        ids = torch.tensor([ids])
        out = generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=8,
                       do_sample=False, eos_token_id=stops, pad_token_id=2)[0].tolist()
        new = out[ids.shape[1]:]
        ends = [i for i, token in enumerate(new) if token in stops]
        return new[:ends[0] + 1] if ends else new

    peft_model = PeftModel.from_pretrained(model, str(tiny_adapter))
    soft = peft_model.get_prompt(batch_size=1)
    base = peft_model.get_base_model()
    for soft_prompt, reference in ((None, base.generate), (soft, peft_model.generate)):
        expected = [plain(reference, prefix + d) for d in docs]
        lengths = [len(ids) for ids in expected]
        assert min(lengths) < 8 and max(lengths) == 8  # some rows stop early, some run out
        for slots in (1, 3, 16):
            for use_cache in (True, False):
                generator = LineGenerator(base, prefix, stop_ids=stops, pad_id=2, slots=slots,
                                          soft_prompt=soft_prompt, max_new_tokens=8,
                                          use_cache=use_cache)
                lines = generator.generate(docs)
                assert [line.token_ids for line in lines] == expected, (slots, use_cache)
                assert all(line.stopped == (line.token_ids[-1] in stops) for line in lines)
        sampling = Sampling(True, 0.8, 0.9)
        together = generator.generate(docs, sampling, seeds=list(range(len(docs))))
        alone = [generator.generate([d], sampling, seeds=[s])[0] for s, d in enumerate(docs[:5])]
        assert [x.token_ids for x in together[:5]] == [x.token_ids for x in alone]
        assert [x.token_ids for x in together] != expected
    assert {"compact", "skip ahead"} <= set(events)
    assert generator.prefix_len == len(prefix) + 4


def test_bf16_decoding_equals_plain_generate_in_bf16(tiny_llm):
    """Under bf16 autocast the cached decoder still matches HF generate run the same way (with
    the same attention: in bf16, sdpa's kernel and the decode attention round differently)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sptar.llm.cpu_attention import use_decode_attention
    from sptar.llm.decoding import LineGenerator, stop_token_ids
    from sptar.llm.prompts import PromptFormat
    from sptar.models import autocast

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm).eval()
    assert use_decode_attention(model)
    stops = stop_token_ids(tokenizer)
    fmt = PromptFormat(tokenizer, "inpars", max_doc_tokens=40)
    examples = [("The cat sat on the mat.", "where did the cat sit")]
    texts = [doc_text(doc) for doc in read_corpus("tests/fixtures/beir/tiny/corpus.jsonl").values()]
    prefix = fmt.prefix_ids(examples)
    docs = [fmt.doc_ids(text, len(examples)) for text in texts[:6]]
    with autocast("cpu", "bf16"):
        assert torch.is_autocast_enabled("cpu")
        expected = []
        for doc in docs:
            ids = torch.tensor([prefix + doc])
            new = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids),
                                 max_new_tokens=8, do_sample=False, eos_token_id=stops,
                                 pad_token_id=2)[0, ids.shape[1]:].tolist()
            ends = [i for i, token in enumerate(new) if token in stops]
            expected.append(new[:ends[0] + 1] if ends else new)
        lines = LineGenerator(model, prefix, stop_ids=stops, pad_id=2, slots=1,
                              max_new_tokens=8).generate(docs)
    assert [line.token_ids for line in lines] == expected


def test_cast_linear_weights_is_bit_identical_under_autocast(tiny_llm):
    """Casting the linear weights once gives the same bf16 logits as autocast casting per call,
    for a frozen model (as PEFT leaves it) with a tied LM head; the embedding stays fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    from sptar.models import autocast, cast_linear_weights

    model = AutoModelForCausalLM.from_pretrained(tiny_llm, tie_word_embeddings=True).eval()
    model.tie_weights()
    model.requires_grad_(False)
    assert model.lm_head.weight is model.get_input_embeddings().weight
    ids = torch.randint(0, 500, (3, 17), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode(), autocast("cpu", "bf16"):
        before = model(input_ids=ids).logits
        assert cast_linear_weights(model, "cpu", "bf16") is model
        after = model(input_ids=ids).logits
    assert torch.equal(before, after)
    assert model.lm_head.weight.dtype == model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.get_input_embeddings().weight.dtype == torch.float32
    fp32 = AutoModelForCausalLM.from_pretrained(tiny_llm)
    cast_linear_weights(fp32, "cpu", "fp32")
    assert {p.dtype for p in fp32.parameters()} == {torch.float32}


@pytest.mark.parametrize("native", [False, True])
def test_auto_precision_is_bf16_only_where_the_cpu_computes_bf16_natively(native, monkeypatch):
    import torch

    from sptar import models

    monkeypatch.setattr(models, "cpu_has_native_bf16", lambda: native)
    assert models.effective_precision("cpu", "auto") == ("bf16" if native else "fp32")
    assert models.effective_precision("cpu", "fp32") == "fp32"
    assert models.effective_precision("cuda:0", "auto") == "bf16"
    with models.autocast("cpu", "auto"):
        assert torch.is_autocast_enabled("cpu") == native


def test_empty_results_are_retried_with_sampling_then_dropped(tiny_cfg):
    from sptar.llm.decoding import Line

    class Fake:
        """Writes nothing for doc 'e'; for doc 'r' only when sampling (the retry)."""

        def __init__(self):
            self.calls = []

        def generate(self, docs, sampling, seeds=None):
            self.calls.append((len(docs), sampling.sample, seeds))
            out = []
            for doc in docs:
                text = {1: [NEWLINE], 2: [NEWLINE] if not sampling.sample else [1437, NEWLINE]}.get(
                    doc[0], [1437, NEWLINE])
                out.append(Line(text, -1.0 * len(text), True))
            return out

    class Tok:
        def decode(self, ids, skip_special_tokens=True):
            return "".join({NEWLINE: "\n", 1437: " aspirin risk"}[i] for i in ids)

    cfg = tiny_cfg("generate.retries=2")
    items = [Item("e", 0, [1]), Item("r", 0, [2]), Item("ok", 0, [3])]
    fake = Fake()
    generate_items(items, fake, Tok(), cfg, prefix_len=10)
    by_doc = {item.doc_id: item for item in items}
    assert (by_doc["ok"].text, by_doc["ok"].attempts, by_doc["ok"].logprob) == ("aspirin risk", 1, -1.0)
    assert (by_doc["r"].text, by_doc["r"].attempts) == ("aspirin risk", 2)
    assert (by_doc["e"].text, by_doc["e"].attempts) == ("", 3)
    assert by_doc["e"].reason == "empty after 3 attempt(s)" and by_doc["e"].logprob is None
    assert by_doc["e"].prompt_tokens == 3 * 11 and by_doc["e"].new_tokens == 3
    # first pass greedy, then the empty ones re-sampled, with a new seed per row and attempt
    assert [(n, s) for n, s, _ in fake.calls] == [(3, False), (2, True), (1, True)]
    assert fake.calls[2][2][0] not in fake.calls[1][2]


# ---------------------------------------------------------------- the stage


def test_both_variants_follow_the_contract(setup):
    cfg, paths = setup()
    pool = load_split(paths).unlabeled
    for variant in ("inpars", "sptar"):
        manifest = execute("generate", cfg, paths, variant=variant)
        folder = paths.stage("generate", variant)
        queries, metadata = read_queries(folder / "queries.jsonl", with_metadata=True)
        qrels = read_qrels(folder / "qrels" / "train.tsv")
        dropped = read_jsonl(folder / "dropped.jsonl") if (folder / "dropped.jsonl").stat().st_size else []
        assert not (folder / "parts").exists()
        assert set(qrels) == set(queries)
        for qid, meta in metadata.items():
            assert qid == f"gen-{meta['doc_id']}-0" and qrels[qid] == {meta["doc_id"]: 1}
            assert meta["variant"] == variant and meta["logprob"] < 0
        assert sorted([m["doc_id"] for m in metadata.values()] + [d["doc_id"] for d in dropped]) \
            == sorted(pool)
        order = [m["doc_id"] for m in metadata.values()]
        assert order == [d for d in pool if d in set(order)]  # pool order
        summary = manifest["summary"]
        assert summary["documents"] == len(pool) == 12 and summary["chunks"] == 3
        assert summary["queries"] == len(queries) and summary["dropped"] == len(dropped)
        assert summary["docs_per_s"] > 0 and summary["new_tokens"] > 0
        assert summary["this_run"]["rows_at_once"] == cfg.generate.batch_size
        assert summary["prompt"]["soft_prompt"] == (variant == "sptar")
        assert summary["prompt"]["prefix_tokens"] > 0
        assert summary["retried"] > 0  # the tiny model writes empty lines: retries happen
    # the sptar prompt cuts its example as the soft prompt was tuned (examples.json "prompt")
    from sptar.llm.prompts import PromptFormat
    from sptar.models import load_tokenizer

    examples = [(pair["doc"], pair["query"])
                for pair in read_json(paths.stage("tune") / "examples.json")["chosen"]]
    tuned = PromptFormat(load_tokenizer(cfg.models.llm), "sptar", max_example_doc_tokens=12,
                         max_query_tokens=6)
    assert manifest["summary"]["prompt"]["prefix_tokens"] == 4 + len(tuned.prefix_ids(examples))
    inpars = read_queries(paths.stage("generate", "inpars") / "queries.jsonl")
    sptar = read_queries(paths.stage("generate", "sptar") / "queries.jsonl")
    assert inpars != sptar
    # finished and unchanged: skipped
    again = execute("generate", cfg, paths, variant="inpars")
    assert again["finished_at"] == read_json(paths.stage("generate", "inpars") / "manifest.json")["finished_at"]


def test_precision_bf16_runs_the_decoder_under_autocast(setup, monkeypatch):
    import torch

    from sptar.llm import decoding

    seen = []
    original = decoding.LineGenerator.generate

    def recording(self, *args, **kwargs):
        seen.append(torch.is_autocast_enabled("cpu"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(decoding.LineGenerator, "generate", recording)
    for root, precision in (("fp32", "fp32"), ("bf16", "bf16")):
        cfg, paths = setup(root, f"generate.precision={precision}")
        seen.clear()
        manifest = execute("generate", cfg, paths, variant="inpars")
        assert seen and set(seen) == {precision == "bf16"}
        assert manifest["summary"]["queries"] + manifest["summary"]["dropped"] == 12


def test_kill_and_resume_equals_an_uninterrupted_run(setup, monkeypatch):
    cfg, reference = setup("reference")
    execute("generate", cfg, reference, variant="sptar")
    cfg, paths = setup("resumed")
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupt):
        execute("generate", cfg, paths, variant="sptar")
    folder = paths.stage("generate", "sptar")
    assert sorted(p.name for p in (folder / "parts").glob("chunk-*")) == ["chunk-000000.jsonl"]
    assert not (folder / "manifest.json").exists()
    monkeypatch.undo()
    manifest = execute("generate", cfg, paths, variant="sptar")
    assert manifest["summary"]["this_run"]["chunks"] == 2  # only the missing chunks
    assert outputs(paths, "sptar") == outputs(reference, "sptar")  # byte for byte, stable ids


def test_shards_merge_to_the_unsharded_output(setup, monkeypatch):
    cfg, reference = setup("reference")
    execute("generate", cfg, reference, variant="inpars")
    cfg, paths = setup("sharded")
    first = execute("generate", cfg, paths, variant="inpars", flags={"shard": 1, "num_shards": 2})
    assert PARTIAL in first and not (paths.stage("generate", "inpars") / "manifest.json").exists()
    chunks = sorted(p.name for p in (paths.stage("generate", "inpars") / "parts").glob("chunk-*"))
    assert chunks == ["chunk-000001.jsonl"]
    monkeypatch.setenv("WORLD_SIZE", "2")  # the other shard as torchrun would start it
    monkeypatch.setenv("RANK", "0")
    last = execute("generate", cfg, paths, variant="inpars")
    assert last["summary"]["shards"] == 2 and last["summary"]["this_run"]["chunks"] == 2
    assert outputs(paths, "inpars") == outputs(reference, "inpars")


def test_changed_config_refuses_to_mix_unless_overwrite(setup, monkeypatch, tmp_path, tiny_llm):
    from sptar.cli import main

    cfg, paths = setup("mixed")
    interrupt_after(monkeypatch, 1)
    with pytest.raises(Interrupt):
        execute("generate", cfg, paths, variant="inpars")
    monkeypatch.undo()
    changed, _ = setup("mixed", "generate.max_new_tokens=6")
    with pytest.raises(SptarError, match="another config.*--overwrite"):
        execute("generate", changed, paths, variant="inpars")
    monkeypatch.setenv("SPTAR_DATA_DIR", str(tmp_path / "mixed"))
    args = ["generate", "--variant", "inpars", "--config", "tiny", "--set", f"models.llm={tiny_llm}",
            "--set", "generate.max_new_tokens=6"]
    assert main(args) == 2  # the CLI: one line, exit code 2
    assert main([*args, "--overwrite"]) == 0
    _, fresh = setup("fresh", "generate.max_new_tokens=6")
    execute("generate", changed, fresh, variant="inpars")
    assert outputs(paths, "inpars") == outputs(fresh, "inpars")


def test_decode_attention_equals_sdpa_for_one_query_row():
    """The CPU decode attention gives sdpa's output (grouped heads, padded keys masked out)."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    from sptar.llm.cpu_attention import decode_attention

    class Module(torch.nn.Module):
        num_key_value_groups, is_causal = 3, True

    gen = torch.Generator().manual_seed(0)
    query = torch.randn(4, 6, 1, 8, generator=gen)
    key, value = torch.randn(4, 2, 11, 8, generator=gen), torch.randn(4, 2, 11, 8, generator=gen)
    mask = torch.rand(4, 1, 1, 11, generator=gen) > 0.3
    mask[:, :, :, -1] = True
    for m in (mask, None):
        ours, _ = decode_attention(Module(), query, key, value, m, scaling=0.3)
        theirs, _ = sdpa_attention_forward(Module(), query, key, value, m, scaling=0.3)
        assert ours.shape == theirs.shape == (4, 1, 6, 8)
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_banned_ngrams_never_appear_in_a_line(tiny_llm):
    """generate.ban_example_ngrams: the decoder never completes a banned token n-gram, so lines
    that wrote one without the ban write something else with it."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sptar.llm.decoding import LineGenerator, stop_token_ids
    from sptar.llm.prompts import PromptFormat

    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm).eval()
    fmt = PromptFormat(tokenizer, "sptar", max_doc_tokens=40)
    texts = [doc_text(doc) for doc in read_corpus("tests/fixtures/beir/tiny/corpus.jsonl").values()]
    docs = [fmt.doc_ids(text, 0) for text in texts[:12]]

    def lines(banned=()):
        gen = LineGenerator(model, fmt.prefix_ids([]), stop_ids=stop_token_ids(tokenizer),
                            pad_id=2, max_new_tokens=8, slots=4, banned=banned)
        return [line.token_ids for line in gen.generate(docs)]

    free = lines()
    bigrams = {tuple(line[i:i + 2]) for line in free for i in range(len(line) - 1)}
    assert len(bigrams) > 5
    banned = sorted(bigrams)[: len(bigrams) // 2]
    kept = lines([list(b) for b in banned])
    assert kept != free
    for line in kept:
        assert not {tuple(line[i:i + 2]) for i in range(len(line) - 1)} & set(banned)


def test_likelihoods_with_and_without_the_document_equal_whole_prompt_scores(setup, tiny_llm):
    """generate.score_without_doc: ll_doc / ll_nodoc of each query equal the mean log-probability
    of its tokens (end of line included) after the whole prompt, with its document or an empty
    one, computed without any cache."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sptar.llm.prompts import IGNORE_INDEX, prompt_format
    from sptar.llm.scoring import target_nll
    from sptar.outputs.dataset import load_corpus
    from sptar.stages.generate import inpars_examples

    cfg, paths = setup("a", "generate.score_without_doc=true", "generate.precision=fp32")
    execute("generate", cfg, paths, variant="inpars")
    queries, metadata = read_queries(paths.stage("generate", "inpars") / "queries.jsonl",
                                     with_metadata=True)
    corpus = load_corpus(paths)
    prompt = inpars_examples(cfg, paths, corpus)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llm)
    model = AutoModelForCausalLM.from_pretrained(tiny_llm).eval()
    fmt = prompt_format(prompt, tokenizer, cfg.generate.max_doc_tokens)
    prefix = fmt.prefix_ids(prompt.examples)
    for qid, text in list(queries.items())[:4]:
        doc = fmt.doc_ids(doc_text(corpus[metadata[qid]["doc_id"]]), len(prompt.examples))
        for key, block in (("ll_doc", doc), ("ll_nodoc", fmt.doc_ids("", len(prompt.examples)))):
            target = fmt.target_ids(text)
            ids = torch.tensor([prefix + block + target])
            labels = torch.tensor([[IGNORE_INDEX] * (len(prefix) + len(block)) + target])
            with torch.no_grad():
                nll, count = target_nll(model, ids, torch.ones_like(ids), labels)
            assert metadata[qid][key] == pytest.approx(-nll.item() / count.item(), abs=1e-4)
    assert any(m["ll_doc"] != m["ll_nodoc"] for m in metadata.values())
