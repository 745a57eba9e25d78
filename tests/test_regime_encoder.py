"""The smollm2-135m alias as the bi-encoder (models.encoder, encoder_pooling, encoder_layers): a
tiny Llama stands in for the converted SmolLM2, the encoder folders go to a temporary model cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pydantic import ValidationError

import sptar.models
from sptar.config import DenseConfig, ModelsConfig, load_config
from sptar.errors import SptarError
from sptar.io.formats import read_json
from sptar.io.paths import MODEL_CACHE_ENV
from sptar.models import encoder_folder_name, load_encoder, model_fingerprint, resolve_encoder
from sptar.run.runner import execute, paths_for

ALIAS = "smollm2-135m"
LAYERS = 3
TEXTS = ["fake meat", "x", "vitamin d deficiency and the heart " * 6, "a much longer text " * 30,
         "cells divide"]


@pytest.fixture(scope="module")
def tiny_decoder(tmp_path_factory):
    """A 3-layer Llama (hidden 32) with the SmolLM2 tokenizer, its pad token removed (the
    encoder must fall back to EOS), as ``_converted_smollm2`` would leave the real one."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(sptar.models.resolve_model(ALIAS))
    tokenizer.pad_token = None
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                         num_hidden_layers=LAYERS, num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=1024, bos_token_id=1, eos_token_id=2,
                         tie_word_embeddings=True, initializer_range=0.3)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-decoder")
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def alias_cache(tiny_decoder, tmp_path, monkeypatch):
    """The alias machinery pointed at the tiny decoder, with an empty model cache; counts builds."""
    builds = []
    build = sptar.models._decoder_as_encoder

    def counted(*args):
        builds.append(args[1:])
        return build(*args)

    monkeypatch.setattr(sptar.models, "_converted_smollm2", lambda: tiny_decoder)
    monkeypatch.setattr(sptar.models, "_decoder_as_encoder", counted)
    monkeypatch.setenv(MODEL_CACHE_ENV, str(tmp_path / "models"))
    return builds


def test_the_alias_is_a_sentence_transformers_folder_with_its_pooling_and_layers(alias_cache, tiny_decoder):
    folder = resolve_encoder(ALIAS, "lasttoken", 2)
    assert folder.endswith(encoder_folder_name("lasttoken", 2))
    assert read_json(f"{folder}/1_Pooling/config.json")["pooling_mode"] == "lasttoken"
    assert read_json(f"{folder}/config.json")["num_hidden_layers"] == 2
    assert read_json(f"{folder}/tokenizer_config.json")["padding_side"] == "right"
    assert [m["type"].rsplit(".", 1)[-1] for m in read_json(f"{folder}/modules.json")] == ["Transformer", "Pooling"]
    model = load_encoder(ALIAS, "cpu", 64, pooling="lasttoken", layers=2)
    assert len(model[0].auto_model.layers) == 2 and model.max_seq_length == 64
    tokenizer = model[0].tokenizer
    assert tokenizer.padding_side == "right" and tokenizer.pad_token == tokenizer.eos_token
    assert len(load_encoder(ALIAS, "cpu", pooling="mean")[0].auto_model.layers) == LAYERS
    # the LLM role is untouched: the causal LM folder
    assert sptar.models.resolve_model(ALIAS) == str(tiny_decoder)


def test_each_setting_is_built_once_into_its_own_folder(alias_cache):
    settings = [("mean", None), ("mean", 2), ("lasttoken", None), ("lasttoken", 2), ("mean", 1)]
    folders = [resolve_encoder(ALIAS, *setting) for setting in settings]
    again = [resolve_encoder(ALIAS, *setting) for setting in settings]
    assert folders == again and len(set(folders)) == len(settings)
    assert alias_cache == settings  # built once each
    assert len({model_fingerprint(folder) for folder in folders}) == len(settings)
    cache = sptar.models.model_cache_root()
    assert not [p.name for p in cache.iterdir() if p.name.endswith(".tmp")]


def test_more_layers_than_the_model_has_is_a_one_line_error(alias_cache):
    with pytest.raises(SptarError, match=r"encoder_layers 5: .* only 3 layers \(fix: set models.encoder_layers to 1..3"):
        resolve_encoder(ALIAS, "mean", 5)
    assert not any(sptar.models.model_cache_root().glob("*encoder*layers"))


@pytest.mark.parametrize("pooling", ["mean", "lasttoken"])
def test_an_embedding_does_not_depend_on_the_other_texts_of_its_batch(alias_cache, pooling):
    from sptar.retrieval.dense import encode_texts

    model = load_encoder(ALIAS, "cpu", 128, pooling=pooling)
    dense = DenseConfig(backend="torch", precision="fp32", batch_size=len(TEXTS))
    together = encode_texts(model, TEXTS, dense)
    alone = np.stack([encode_texts(model, [text], dense)[0] for text in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert np.abs(together[0] - together[1]).max() > 1e-3  # texts do differ


def test_lasttoken_pools_the_last_real_token_and_differs_from_mean(alias_cache):
    import torch

    mean, last = (load_encoder(ALIAS, "cpu", 64, pooling=p) for p in ("mean", "lasttoken"))
    features = last.preprocess(TEXTS[:2])
    with torch.no_grad():
        states = last[0].auto_model(input_ids=features["input_ids"],
                                    attention_mask=features["attention_mask"]).last_hidden_state
        pooled = last(features)["sentence_embedding"]
    length = int(features["attention_mask"][1].sum())
    assert length < features["attention_mask"].shape[1]  # the short text is padded on the right
    torch.testing.assert_close(pooled[1], states[1, length - 1])
    assert not np.allclose(mean.encode(TEXTS[:1]), last.encode(TEXTS[:1]), atol=1e-4)


def test_the_settings_apply_to_the_alias_only_and_hash_only_when_set():
    from sptar.stages import evaluate, filter, train

    with pytest.raises(ValidationError, match="encoder_pooling and encoder_layers shape encoder smollm2-135m only"):
        ModelsConfig(encoder="all-minilm-l6-v2", encoder_layers=8)
    with pytest.raises(ValidationError, match="fix: remove them"):
        ModelsConfig(encoder="all-minilm-l6-v2", encoder_pooling="lasttoken")
    with pytest.raises(ValidationError):
        ModelsConfig(encoder=ALIAS, encoder_layers=0)
    plain = load_config("tiny", [f"models.encoder={ALIAS}"])
    assert plain.section_hash("models") == load_config("tiny").model_copy(
        update={"models": ModelsConfig(encoder=ALIAS)}).section_hash("models")
    for names in (evaluate.sections("zero-shot"), evaluate.sections("sptar"), train.sections("sptar"),
                  filter.sections("sptar")):
        assert {"models.encoder_pooling", "models.encoder_layers"} <= set(names)
        before = tuple(n for n in names if n not in ("models.encoder_pooling", "models.encoder_layers"))
        assert plain.section_hash(*names) == plain.section_hash(*before)  # neutral: as before
        hashes = {load_config("tiny", [f"models.encoder={ALIAS}", *extra]).section_hash(*names)
                  for extra in ([], ["models.encoder_layers=8"], ["models.encoder_pooling=lasttoken"])}
        assert len(hashes) == 3


def test_train_and_evaluate_round_trip_with_the_alias(alias_cache, tmp_path):
    """wo-aug trains from the 2-layer last-token encoder; zero-shot and wo-aug evaluate with it
    (dense.backend auto: OpenVINO on CPU), and the trained folder keeps its pooling and layers."""
    cfg = load_config("tiny", [f"models.encoder={ALIAS}", "models.encoder_layers=2",
                               "models.encoder_pooling=lasttoken", "evaluate.splits=[test]"])
    paths = paths_for(cfg, tmp_path / "data")
    for stage in ("data", "split"):
        execute(stage, cfg, paths)
    execute("train", cfg, paths, variant="wo-aug")
    trained = paths.stage("train", "wo-aug") / "model"
    assert read_json(trained / "config.json")["num_hidden_layers"] == 2
    assert read_json(trained / "1_Pooling" / "config.json")["pooling_mode"] == "lasttoken"
    for system in ("zero-shot", "wo-aug"):
        execute("evaluate", cfg, paths, system=system)
    metrics = {s: read_json(paths.stage("evaluate", s) / "test" / "metrics.json")["NDCG@10"]
               for s in ("zero-shot", "wo-aug")}
    assert all(0.0 <= value <= 1.0 for value in metrics.values())
    manifest = json.loads((paths.stage("evaluate", "zero-shot") / "manifest.json").read_text())
    assert manifest["config"]["models.encoder_layers"] == 2
    assert alias_cache == [("lasttoken", 2)]  # one build, shared by train and evaluate
