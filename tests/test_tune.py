"""Soft prompt tuning and the soft prompt filter, on a tiny in-process Llama model."""

from __future__ import annotations

import math
import random

import pytest
import torch

from sptar.config import load_config
from sptar.errors import SptarError
from sptar.io.formats import read_json, read_jsonl
from sptar.llm.prompt_pairs import draw_examples, eval_sets, load_data, sample_candidates
from sptar.llm.prompt_training import _EarlyStopping
from sptar.llm.prompts import IGNORE_INDEX, PromptFormat, pad_batch
from sptar.llm.scoring import Scorer, shared_length, target_nll
from sptar.llm.softprompt import load_tuned
from sptar.outputs.prompt import load_examples
from sptar.run.runner import execute, paths_for
from sptar.stages.tune import choose, output_dir, prompt_format

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")

DOC = "Vitamin D increases calcium absorption in the gut and supports bone density."
QUERY = "does vitamin d help bones"
EXAMPLE = ("Aspirin lowers the risk of a first heart attack.", "aspirin prevents heart attack")


def make_tiny_llm(folder, **config) -> str:
    """A 2-layer Llama (hidden size 32) with the SmolLM2 tokenizer, saved to ``folder``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from sptar.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         pad_token_id=tokenizer.pad_token_id, **config)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="session")
def tiny_llm(tmp_path_factory):
    return make_tiny_llm(tmp_path_factory.mktemp("tiny-llm"))


@pytest.fixture(scope="session")
def model_and_tokenizer(tiny_llm):
    from sptar.models import load_causal_lm

    return load_causal_lm(tiny_llm, "cpu")


def _peft(tiny_llm, n_virtual=5, seed=0):
    """A fresh tiny LLM with a soft prompt moved away from its text initialisation."""
    from peft import PromptTuningConfig, PromptTuningInit, TaskType, get_peft_model

    from sptar.models import load_causal_lm

    model, _ = load_causal_lm(tiny_llm, "cpu")

    config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=n_virtual,
                                prompt_tuning_init=PromptTuningInit.TEXT,
                                prompt_tuning_init_text="please generate query for this document",
                                tokenizer_name_or_path=tiny_llm)
    peft_model = get_peft_model(model, config).eval()
    torch.manual_seed(seed)
    weights = peft_model.prompt_encoder["default"].embedding.weight
    with torch.no_grad():
        weights.add_(torch.randn_like(weights))
    return peft_model


# ---------------------------------------------------------------- labels, padding, scoring


def test_only_query_tokens_carry_loss(model_and_tokenizer):
    _, tokenizer = model_and_tokenizer
    fmt = PromptFormat(tokenizer)
    ids, labels = fmt.training_example(DOC, QUERY, [EXAMPLE])
    assert len(ids) == len(labels)
    target = [token for token in labels if token != IGNORE_INDEX]
    start = len(labels) - len(target)
    assert all(token == IGNORE_INDEX for token in labels[:start])  # examples, document: no loss
    assert target == ids[start:] == fmt.target_ids(QUERY)
    assert tokenizer.decode(target) == f" {QUERY}\n"
    assert tokenizer.decode(ids[:start]).endswith("Relevant Query:")
    # the example's query is in the input but carries no loss
    assert EXAMPLE[1] in tokenizer.decode(ids[:start])


def test_target_nll_matches_the_models_own_loss(model_and_tokenizer, tiny_llm):
    """Our position bookkeeping (soft prompt shift, logits kept on target positions only)."""
    model, tokenizer = model_and_tokenizer
    fmt = PromptFormat(tokenizer)
    ids, labels = fmt.training_example(DOC, QUERY, [EXAMPLE])
    ids_t, labels_t = torch.tensor([ids]), torch.tensor([labels])
    mask = torch.ones_like(ids_t)
    with torch.no_grad():
        nll, count = target_nll(model, ids_t, mask, labels_t)
        expected = model(input_ids=ids_t, attention_mask=mask, labels=labels_t).loss
        assert count.item() == len(fmt.target_ids(QUERY))
        assert nll.item() / count.item() == pytest.approx(expected.item(), rel=1e-5)
        peft_model = _peft(tiny_llm)
        nll, count = target_nll(peft_model, ids_t, mask, labels_t, n_virtual=5)
        expected = peft_model(input_ids=ids_t, attention_mask=mask, labels=labels_t).loss
    assert nll.item() / count.item() == pytest.approx(expected.item(), rel=1e-5)


def test_target_nll_without_logits_to_keep(model_and_tokenizer, monkeypatch):
    model, tokenizer = model_and_tokenizer
    ids, labels = PromptFormat(tokenizer).training_example(DOC, QUERY, [])
    args = torch.tensor([ids]), torch.ones(1, len(ids), dtype=torch.long), torch.tensor([labels])
    with torch.no_grad():
        kept = target_nll(model, *args)
        monkeypatch.setattr("sptar.llm.scoring._supports_logits_to_keep", lambda model: False)
        full = target_nll(model, *args)
    assert kept[1].item() == full[1].item()
    assert kept[0].item() == pytest.approx(full[0].item(), rel=1e-5)


def test_right_padding_leaves_every_rows_loss_unchanged(model_and_tokenizer):
    model, tokenizer = model_and_tokenizer
    fmt = PromptFormat(tokenizer)
    rows = [fmt.training_example(DOC, QUERY, [EXAMPLE]), fmt.training_example("Short.", "x", []),
            fmt.training_example(DOC + " " + DOC, "a longer query about bones and vitamins", [])]
    ids, mask, labels = pad_batch([r[0] for r in rows], tokenizer.pad_token_id, "right",
                                  labels=[r[1] for r in rows])
    short = len(rows[1][0])
    assert ids.shape == (3, max(len(r[0]) for r in rows))
    assert mask[1, :short].all() and not mask[1, short:].any()  # right padding: pads at the end
    assert (ids[1, short:] == tokenizer.pad_token_id).all()
    assert (labels[1, short:] == IGNORE_INDEX).all()
    assert ids[1, :short].tolist() == rows[1][0]
    scorer = Scorer(model, tokenizer.pad_token_id, "cpu", batch_size=3)
    batched = scorer.row_scores(rows)
    alone = Scorer(model, tokenizer.pad_token_id, "cpu", batch_size=1).row_scores(rows)
    for (a, n), (b, m) in zip(batched, alone, strict=True):
        assert n == m
        assert a == pytest.approx(b, rel=1e-4)
    assert scorer.loss(rows) == pytest.approx(sum(a for a, _ in alone) / sum(n for _, n in alone),
                                              rel=1e-4)


def test_scorer_runs_the_shared_prefix_once_and_scores_as_the_whole_prompt(model_and_tokenizer,
                                                                          tiny_llm):
    """The cached prefix (soft prompt + shared examples) gives each row its whole-prompt loss."""
    model, tokenizer = model_and_tokenizer
    fmt = PromptFormat(tokenizer)
    pairs = [(DOC, QUERY), ("Short.", "x"), (DOC + " " + DOC, "a longer query about bones")]
    same = [fmt.training_example(doc, query, [EXAMPLE]) for doc, query in pairs]
    mixed = [fmt.training_example(DOC, QUERY, [EXAMPLE]), fmt.training_example("Short.", "x", [])]
    assert shared_length(same) >= len(fmt.prefix_ids([EXAMPLE]))  # the example block is shared
    assert shared_length(mixed) < len(fmt.prefix_ids([EXAMPLE]))
    assert shared_length(same[:1]) == same[0][1].index(fmt.target_ids(QUERY)[0]) - 1
    for scoring_model, n_virtual in ((model, 0), (_peft(tiny_llm), 5)):
        scorer = Scorer(scoring_model, tokenizer.pad_token_id, "cpu", batch_size=2, n_virtual=n_virtual)
        for rows in (same, mixed, same[:1]):
            with torch.no_grad():
                whole = [target_nll(scoring_model, torch.tensor([ids]), torch.ones(1, len(ids)),
                                    torch.tensor([labels]), n_virtual) for ids, labels in rows]
            for (total, n), (nll, count) in zip(scorer.row_scores(rows), whole, strict=True):
                assert n == count.item()
                assert total == pytest.approx(nll.item(), rel=1e-5)


def test_adapter_save_and_reload_give_identical_logits(model_and_tokenizer, tiny_llm, tmp_path):
    """Save -> reload into a fresh base model gives bit-identical logits (not the text init's)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model, tokenizer = model_and_tokenizer
    ids = torch.tensor([PromptFormat(tokenizer).training_example(DOC, QUERY, [])[0]])
    peft_model = _peft(tiny_llm, seed=3)
    with torch.no_grad():
        before = peft_model(input_ids=ids).logits
    peft_model.save_pretrained(str(tmp_path / "adapter"))
    assert (tmp_path / "adapter" / "adapter_model.safetensors").is_file()
    fresh = AutoModelForCausalLM.from_pretrained(tiny_llm)
    reloaded = PeftModel.from_pretrained(fresh, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        after = reloaded(input_ids=ids).logits
        untuned = reloaded.get_base_model()(input_ids=ids).logits
    assert torch.equal(before, after)
    assert before.shape[1] == ids.shape[1] + 5  # the 5 virtual tokens come first
    assert not torch.allclose(before[:, 5:], untuned)


# ---------------------------------------------------------------- examples and early stopping


def test_draw_examples_and_candidates():
    pairs = [("q1", "d1"), ("q1", "d2"), ("q2", "d3"), ("q3", "d4"), ("q4", "d5")]
    rng = random.Random(0)
    for _ in range(20):
        picked = draw_examples(rng, pairs, 2, exclude_query="q2")
        assert len({qid for qid, _ in picked}) == 2 and "q2" not in {qid for qid, _ in picked}
    with pytest.raises(SptarError, match="tune.n_examples"):
        draw_examples(rng, pairs, 4, exclude_query="q1")
    candidates = sample_candidates(pairs, 2, 6, "seed")
    assert len(candidates) == 6 == len({frozenset(c) for c in candidates})
    assert all(len({qid for qid, _ in c}) == 2 for c in candidates)
    assert candidates == sample_candidates(pairs, 2, 6, "seed")
    assert len(sample_candidates(pairs[:3], 1, 10, "seed")) == 3  # every possible set, no more
    assert sample_candidates(pairs, 0, 5, "seed") == [()]


def test_choose_takes_the_lowest_loss_first_on_ties():
    assert choose([2.5, 1.9, 3.0, 1.95]) == 1
    assert choose([1.0, 0.5, 0.5]) == 1
    assert choose([4.2]) == 0


def test_early_stopping_keeps_the_best_weights():
    stopper = _EarlyStopping(patience=2)
    weights = torch.zeros(3)
    stops = []
    for step, loss in enumerate([3.0, 2.0, 2.5, 1.9, 2.2, 2.1]):
        weights.fill_(step)
        stops.append(stopper.update(loss, step, weights))
    assert stops == [False, False, False, False, False, True]
    assert stopper.best_step == 3 and stopper.best_loss == 1.9
    assert stopper.best_weights.tolist() == [3.0, 3.0, 3.0]


# ---------------------------------------------------------------- config errors


def test_too_many_examples_is_a_config_error(tmp_path):
    with pytest.raises(SptarError, match=r"--set tune.n_examples: key 'tune.n_examples': .*less than or equal to 2"):
        load_config("tiny", ["tune.n_examples=5"])
    path = tmp_path / "exp.yaml"
    path.write_text("dataset:\n  name: tiny\ntune:\n  n_examples: 5\n")
    with pytest.raises(SptarError, match=r"exp.yaml:4: key 'tune.n_examples'"):
        load_config(path)


def test_more_examples_than_the_split_allows_fails_before_loading_a_model(tiny_cfg, tmp_path):
    # 2 prompt-train queries leave 1 example query per training pair; the LLM does not exist,
    # so the error must come before any model is loaded
    cfg = tiny_cfg("split.n_prompt_train=2", "tune.n_examples=2", "models.llm=no/such-model")
    paths = paths_for(cfg, tmp_path / "data")
    execute("data", cfg, paths)
    execute("split", cfg, paths)
    with pytest.raises(SptarError, match=r"tune.n_examples is 2.* 2 prompt-train queries"):
        execute("tune", cfg, paths)
    assert not (output_dir(paths) / "manifest.json").exists()


# ---------------------------------------------------------------- the stage, end to end


@pytest.fixture(scope="module")
def tuned(tiny_llm, tmp_path_factory):
    """The tune stage on the tiny pipeline with the tiny LLM: ``(cfg, paths, manifest)``."""
    cfg = load_config("tiny", [f"models.llm={tiny_llm}"])
    paths = paths_for(cfg, tmp_path_factory.mktemp("tuned") / "data")
    execute("data", cfg, paths)
    execute("split", cfg, paths)
    return cfg, paths, execute("tune", cfg, paths)


def test_stage_writes_every_output(tuned):
    cfg, paths, manifest = tuned
    folder = output_dir(paths)
    assert {p.name for p in (folder / "adapter").iterdir()} >= {"adapter_config.json",
                                                                "adapter_model.safetensors"}
    assert (folder / "loss_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    log_rows = read_jsonl(folder / "train_log.jsonl")
    steps = [r for r in log_rows if r["type"] == "step"]
    evals = [r for r in log_rows if r["type"] == "eval"]
    assert [r["step"] for r in steps] == list(range(1, manifest["summary"]["steps"] + 1))
    assert evals[0]["step"] == 0 and evals[-1]["step"] == steps[-1]["step"]
    for row in evals:
        assert row["eval_perplexity"] == pytest.approx(math.exp(row["eval_loss"]), rel=1e-3)
    best = [r for r in evals if r["best"]]
    assert manifest["summary"]["best_step"] == best[-1]["step"]
    assert best[-1]["eval_loss"] == min(r["eval_loss"] for r in evals)
    assert all(math.isfinite(r["loss"]) and r["target_tokens"] > 0 for r in steps)

    examples = read_json(folder / "examples.json")
    assert examples["n_examples"] == cfg.tune.n_examples == 1
    assert len(examples["candidates"]) == cfg.tune.n_candidates
    assert set(examples["chosen"][0]) == {"query_id", "doc_id", "query", "doc"}
    data = load_data(cfg, paths)
    pair = (examples["chosen"][0]["query_id"], examples["chosen"][0]["doc_id"])
    assert pair in data.train and data.texts[pair] == load_examples(paths)[0]
    losses = examples["losses"]
    assert set(losses) == {"eval_pairs", "untuned_inpars", "untuned_soft_prompt", "tuned_random",
                           "tuned_random_first", "tuned_random_mean", "tuned_chosen"}
    assert losses["eval_pairs"] == cfg.tune.eval_pairs
    evals = [r for r in log_rows if r["type"] == "eval"]
    assert losses["untuned_soft_prompt"]["eval_loss"] == evals[0]["eval_loss"]
    assert losses["tuned_random"]["eval_loss"] == min(r["eval_loss"] for r in evals)
    assert losses["tuned_random_first"]["eval_loss"] == examples["candidates"][0]["eval_loss"]
    assert losses["tuned_random_mean"]["eval_loss"] == pytest.approx(
        sum(c["eval_loss"] for c in examples["candidates"]) / len(examples["candidates"]), abs=1e-5)
    assert examples["heldout"]["eval_pairs"] == cfg.tune.heldout_eval_pairs
    assert set(examples["heldout"]) == {"eval_pairs", "untuned_inpars", "tuned_random", "tuned_chosen"}
    assert manifest["summary"]["seconds_per_step"] > 0
    assert execute("tune", cfg, paths) == manifest  # up to date: skipped


def test_filter_chose_the_lowest_loss_candidate_and_reload_reproduces_it(tuned):
    cfg, paths, _ = tuned
    examples = read_json(output_dir(paths) / "examples.json")
    scores = [c["eval_loss"] for c in examples["candidates"]]
    best = examples["candidates"][choose(scores)]
    assert [[c["query_id"], c["doc_id"]] for c in examples["chosen"]] == best["pairs"]
    assert examples["losses"]["tuned_chosen"]["eval_loss"] == min(scores)
    assert min(scores) < max(scores)  # the examples change the score: the filter has a choice

    # the saved adapter, loaded back, scores every candidate exactly as the stage did
    peft_model, tokenizer = load_tuned(cfg, paths, "cpu")
    data = load_data(cfg, paths)
    fmt = prompt_format(cfg, tokenizer)
    evals, _ = eval_sets(cfg, data)
    assert evals.pairs == data.eval[:cfg.tune.eval_pairs]
    scorer = Scorer(peft_model, tokenizer.pad_token_id, "cpu", 8, cfg.tune.n_virtual_tokens)
    for candidate in examples["candidates"]:
        shots = data.examples([tuple(p) for p in candidate["pairs"]])
        rows = [fmt.training_example(*data.texts[pair], shots) for pair in evals.pairs]
        assert evals.rows(data, fmt, [tuple(p) for p in candidate["pairs"]]) == rows
        assert scorer.loss(rows) == pytest.approx(candidate["eval_loss"], abs=1e-5)
    assert scorer.loss(evals.rows(data, fmt)) == pytest.approx(
        examples["losses"]["tuned_random"]["eval_loss"], abs=1e-5)


def test_load_examples_rejects_a_broken_file(tiny_paths):
    path = output_dir(tiny_paths) / "examples.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"n_examples": 1, "chosen": [{"doc": "a document"}]}')
    with pytest.raises(SptarError, match=r"examples.json: expected a 'chosen' list.*re-run `sptar tune`"):
        load_examples(tiny_paths)
    with pytest.raises(SptarError, match=r"adapter: no tuned soft prompt"):
        load_tuned(load_config("tiny"), tiny_paths, "cpu")


def test_no_examples_means_nothing_to_choose(tiny_llm, tmp_path):
    cfg = load_config("tiny", [f"models.llm={tiny_llm}", "tune.n_examples=0", "tune.max_steps=2",
                               "tune.heldout_eval_pairs=0"])
    paths = paths_for(cfg, tmp_path / "data")
    for stage in ("data", "split", "tune"):
        manifest = execute(stage, cfg, paths)
    examples = read_json(output_dir(paths) / "examples.json")
    assert examples["chosen"] == [] and load_examples(paths) == []
    assert [c["pairs"] for c in examples["candidates"]] == [[]]
    assert examples["heldout"] is None
    assert manifest["summary"]["steps"] == 2


def test_prompt_tuning_lowers_the_loss_it_is_scored_on(tmp_path):
    """Scored on its own training prompts (no examples: the same prompts it trains on), the tuned
    soft prompt must beat the untuned one: a trainer that changes nothing, or steps the wrong
    way, fails here."""
    from sptar.llm.prompt_pairs import EvalSet
    from sptar.llm.prompt_training import train_prompt
    from sptar.llm.softprompt import soft_prompt_weights, wrap_with_soft_prompt
    from sptar.models import load_causal_lm

    # a large init makes the output depend on the input (at the default init it is near uniform)
    llm = make_tiny_llm(tmp_path / "llm", initializer_range=0.3)
    cfg = load_config("tiny", [f"models.llm={llm}", "tune.lr=0.1", "tune.epochs=5",
                               "tune.eval_every=5", "tune.patience=5", "tune.n_examples=0"])
    paths = paths_for(cfg, tmp_path / "data")
    execute("data", cfg, paths)
    execute("split", cfg, paths)
    data = load_data(cfg, paths)
    model, tokenizer = load_causal_lm(llm, "cpu")
    for param in model.parameters():
        param.requires_grad_(False)
    peft_model = wrap_with_soft_prompt(cfg, model)
    before = soft_prompt_weights(peft_model).detach().clone()
    fmt = prompt_format(cfg, tokenizer)
    own = EvalSet(data.train, [()] * len(data.train))
    scorer = Scorer(peft_model, tokenizer.pad_token_id, "cpu", 8, cfg.tune.n_virtual_tokens)
    result = train_prompt(cfg, peft_model, fmt, data, own.rows(data, fmt), scorer, 2, "cpu")
    assert result.steps == 10 and result.best_step > 0
    assert result.best_loss < result.initial_loss - 0.1, (result.initial_loss, result.best_loss)
    assert scorer.loss(own.rows(data, fmt)) == pytest.approx(result.best_loss, abs=1e-5)
    assert not torch.equal(before, soft_prompt_weights(peft_model).detach())


def test_fixed_example_draw_gives_every_prompt_the_same_examples(tiny_cfg, tmp_path):
    from sptar.llm.prompt_pairs import ExampleDraw

    cfg = tiny_cfg("tune.example_draw=fixed", "tune.n_examples=2")
    paths = paths_for(cfg, tmp_path / "data")
    execute("data", cfg, paths)
    execute("split", cfg, paths)
    data = load_data(cfg, paths)
    draw = ExampleDraw.for_config(cfg, data)
    rng = random.Random(0)
    sets = {pair: draw(rng, pair) for pair in data.train}
    assert all(len(s) == 2 and pair[0] not in {q for q, _ in s} for pair, s in sets.items())
    assert len({s for s in sets.values()}) <= 3  # the fixed three, two at a time
    assert draw(rng) == draw.fixed[:2]  # an eval pair (never a prompt-train query): the first two
    randomly = ExampleDraw.for_config(tiny_cfg("tune.n_examples=2"), data)
    assert len({randomly(rng, pair) for pair in data.train for _ in range(3)}) > 3
