"""Resources: out-of-memory becomes a one-line error naming the key to lower; free disk space is
checked before large outputs; a full disk while writing is a one-line error; leftovers of killed
writes are cleaned."""

from __future__ import annotations

import errno
import json
import os
from collections import namedtuple

import pytest
import torch

import sptar.run.resources
from sptar.cli import main
from sptar.errors import SptarError
from sptar.io.formats import write_json
from sptar.run.resources import (
    check_disk_space,
    decoding_rows,
    is_out_of_memory,
    kv_bytes_per_token,
    memory_guard,
)
from sptar.run.runner import execute, paths_for
from tests.test_generate import tiny_llm  # noqa: F401  (a fixture)

Usage = namedtuple("Usage", "total used free")


@pytest.mark.parametrize("exc, oom", [
    (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory:"
                  " you tried to allocate 8589934592 bytes. Error code 12"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"), True),
    (MemoryError(), True),
    (RuntimeError("mat1 and mat2 shapes cannot be multiplied"), False),
    (ValueError("out of memory"), False),  # only memory errors and torch's RuntimeErrors
])
def test_out_of_memory_is_recognised(exc, oom):
    assert is_out_of_memory(exc) is oom


def test_memory_guard_names_the_keys_and_a_smaller_value():
    with pytest.raises(SptarError) as err, memory_guard("generate sptar", {"generate.batch_size": 16}):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore")
    text = str(err.value)
    assert text == ("generate sptar: out of memory with generate.batch_size=16 (OutOfMemoryError:"
                    " CUDA out of memory. Tried to allocate 2.00 GiB) (fix: lower it, e.g."
                    " --set generate.batch_size=8)")
    assert isinstance(err.value.__cause__, torch.cuda.OutOfMemoryError)  # --debug shows it
    with pytest.raises(RuntimeError, match="shapes"), memory_guard("x", {"a.b": 2}):
        raise RuntimeError("shapes cannot be multiplied")  # anything else passes unchanged


def test_disk_space_check_names_folder_and_bytes(tmp_path, monkeypatch):
    monkeypatch.setattr(sptar.run.resources.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 5000, 5000))
    check_disk_space(tmp_path / "not" / "yet", 4000, "small output")  # fits; missing folders ok
    with pytest.raises(SptarError) as err:
        check_disk_space(tmp_path / "cache", 2_500_000, "the corpus-embedding cache")
    assert str(err.value) == (f"{tmp_path / 'cache'}: the corpus-embedding cache needs about 2.5 MB"
                              " (2500000 bytes), but only 5.0 KB is free (fix: free disk space, or"
                              " move the data folder with SPTAR_DATA_DIR)")


def test_a_full_disk_while_writing_is_one_line_and_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "stats.json"
    write_json(target, {"old": 1})

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(SptarError, match=r"stats.json: no space left on the device while writing"):
        write_json(target, {"new": 2})
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stats.json"]  # no temporary left


def test_a_rerun_removes_what_a_killed_run_was_writing(tiny_cfg, tiny_paths):
    cfg = tiny_cfg()
    execute("data", cfg, tiny_paths)
    split = tiny_paths.stage("split")
    split.mkdir(parents=True)
    (split / ".queries.jsonl.k1ll3d.tmp").write_text('{"_id": "half')
    (tiny_paths.beir.parent / ".tiny.x1y2.tmp").mkdir()  # a killed atomic_dir of the data stage
    (tiny_paths.beir.parent / ".other.x1y2.tmp").mkdir()  # another dataset's: not ours to touch
    execute("split", cfg, tiny_paths)
    execute("data", cfg, tiny_paths, force=True)
    assert not list(split.glob(".*.tmp"))
    assert sorted(p.name for p in tiny_paths.beir.parent.iterdir()) == [".other.x1y2.tmp", "tiny"]


# ---------------------------------------------------------------- the stages, through the CLI


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_encoder, tiny_llm):  # noqa: F811
    """A data root with data and split done, and the CLI arguments that use the tiny models."""
    from sptar.config import load_config

    root = tmp_path_factory.mktemp("resources") / "data"
    models = ["--set", f"models.llm={tiny_llm}", "--set", f"models.encoder={tiny_encoder}"]
    cfg = load_config("tiny", [f"models.llm={tiny_llm}", f"models.encoder={tiny_encoder}"])
    paths = paths_for(cfg, root)
    execute("data", cfg, paths)
    execute("split", cfg, paths)
    return root, models, paths


def error_lines(capsys) -> list[str]:
    """The CLI's error lines on stderr (progress bars and logging aside): exactly one, no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("sptar: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines


def _oom_cuda(*args, **kwargs):
    raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB")


def _oom_cpu(*args, **kwargs):
    raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate "
                       "memory: you tried to allocate 8589934592 bytes. Error code 12")


def test_decoding_rows_auto_fit_half_the_free_gpu_memory(monkeypatch):
    """generate.batch_size: a number is kept; auto is 16 on CPU and, on CUDA, the rows whose
    key/value caches fill half the free memory (1 to 512)."""
    from types import SimpleNamespace

    config = SimpleNamespace(num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                             hidden_size=576)  # SmolLM2-135M: head_dim 64
    weight = torch.zeros(2, 2, dtype=torch.bfloat16)
    model = SimpleNamespace(config=config, get_input_embeddings=lambda: SimpleNamespace(weight=weight))
    assert kv_bytes_per_token(config, 2) == 2 * 30 * 3 * 64 * 2
    per_row = kv_bytes_per_token(config, 2) * 700
    assert decoding_rows(7, model, "cuda:0", 700) == 7
    assert decoding_rows("auto", model, "cpu", 700) == 16
    for free, rows in ((8 * 2**30, 8 * 2**30 // 2 // per_row), (2**20, 1), (2**40, 512)):
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device, free=free: (free, 2 * free))
        assert decoding_rows("auto", model, "cuda:0", 700) == rows
    assert 8 * 2**30 // 2 // per_row == 266


OOM_CASES = [  # stage argv, what to break, the expected advice
    (["evaluate", "--system", "zero-shot"], "sptar.retrieval.dense.encode_texts", _oom_cuda,
     "evaluate zero-shot: encoding with", "dense.batch_size=16", "--set dense.batch_size=8"),
    (["generate", "--variant", "inpars"], "sptar.stages.generate.generate_items", _oom_cpu,
     "generate inpars", "generate.batch_size=3", "--set generate.batch_size=1"),
    (["tune"], "sptar.llm.scoring.target_nll", _oom_cuda,
     "tune", "tune.batch_size=2, tune.eval_batch_size=8",
     "--set tune.batch_size=1 or --set tune.eval_batch_size=4"),
    (["train", "--variant", "wo-aug"], "sentence_transformers.SentenceTransformerTrainer.train",
     _oom_cuda, "train wo-aug", "train.batch_size=4, train.max_seq_length=64",
     "--set train.batch_size=2 or --set train.max_seq_length=32"),
]


@pytest.mark.parametrize("argv, target, fake, what, settings, advice", OOM_CASES,
                         ids=[case[0][0] for case in OOM_CASES])
def test_out_of_memory_in_a_stage_is_exit_2_naming_the_key(prepared, monkeypatch, capsys, argv,
                                                            target, fake, what, settings, advice):
    root, models, paths = prepared
    monkeypatch.setenv("SPTAR_DATA_DIR", str(root))
    monkeypatch.setattr(target, fake)
    assert main([*argv, "--config", "tiny", *models]) == 2
    err = error_lines(capsys)
    assert err[0].startswith(f"sptar: error: {what}")
    assert f"out of memory with {settings} (" in err[0] and f"(fix: lower it, e.g. {advice})" in err[0]
    folder = paths.stage(argv[0], argv[2] if len(argv) > 2 else None)
    assert not (folder / "manifest.json").exists()
    assert not list(folder.glob("parts/chunk-*"))  # generation wrote no chunk


DISK_CASES = [  # stage argv, the output named in the error
    (["data"], "the dataset copy"),
    (["generate", "--variant", "inpars"], "the generated queries"),
    (["train", "--variant", "wo-aug"], "the trained model (and checkpoints)"),
    (["evaluate", "--system", "zero-shot"], "the corpus-embedding cache"),
]


@pytest.mark.parametrize("argv, what", DISK_CASES, ids=[case[0][0] for case in DISK_CASES])
def test_a_full_disk_stops_a_stage_before_its_work(prepared, tmp_path, monkeypatch, capsys, argv,
                                                   what):
    root, models, paths = prepared
    if argv == ["data"]:
        root = tmp_path / "data"  # nothing there yet
    monkeypatch.setenv("SPTAR_DATA_DIR", str(root))
    monkeypatch.setattr(sptar.run.resources.shutil, "disk_usage", lambda p: Usage(10**9, 10**9 - 100, 100))
    monkeypatch.setattr("sptar.models.load_causal_lm", _oom_cpu)  # never reached
    monkeypatch.setattr("sentence_transformers.SentenceTransformerTrainer.train", _oom_cpu)
    assert main([*argv, "--config", "tiny", *models]) == 2
    err = error_lines(capsys)
    assert f": {what} needs about " in err[0] and "but only 100 B is free" in err[0]
    if argv == ["data"]:
        assert not (root / "beir").exists()
    else:
        assert not list(root.glob(f"runs/tiny/{argv[0]}/**/manifest.json"))
