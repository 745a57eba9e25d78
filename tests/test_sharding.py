"""Sharded corpus encoding, DDP training and FAISS across GPUs.

- ``--shard/--num-shards`` without a process group: sequential shards give the unsharded output.
- Two processes under torchrun (gloo on CPU): the file itself is the worker (``__main__`` below),
  so three stages run in one launch: ``evaluate`` initialising the process group, ``train`` (DDP)
  on it, and ``evaluate`` joining it.
- FAISS: a fake ``faiss`` module shows which GPU calls ``build_index`` makes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
OVERRIDES = ["train.batch_size=2"]  # 7 labeled pairs: one whole batch per process under DDP
STEPS = [["evaluate", "--system", "zero-shot"], ["train", "--variant", "wo-aug"],
         ["evaluate", "--system", "wo-aug"]]


def _cfg(encoder):
    from sptar.config import load_config

    return load_config("tiny", [f"models.encoder={encoder}", *OVERRIDES])


def _prepared(root: Path, encoder):
    """The tiny pipeline's data stage done under ``root``: (cfg, paths)."""
    from sptar.run.runner import execute, paths_for

    cfg = _cfg(encoder)
    paths = paths_for(cfg, root)
    execute("data", cfg, paths)
    execute("split", cfg, paths)
    return cfg, paths


def _outputs(paths, system: str) -> dict[str, bytes]:
    folder = paths.stage("evaluate", system)
    return {f"{split}/{name}": (folder / split / name).read_bytes() for split in ("validation", "test")
            for name in ("run.trec", "metrics.json", "per_query.json")}


def _embeddings(paths) -> dict[str, np.ndarray]:
    """Every complete corpus-embedding cache, by key; no chunk left behind."""
    caches = sorted((paths.cache / "embeddings").iterdir())
    assert not [p for cache in caches for p in cache.glob("chunk-*")]
    return {cache.name: np.load(cache / "embeddings.npy") for cache in caches}


@pytest.fixture(scope="module")
def reference(tiny_encoder, tmp_path_factory):
    """zero-shot evaluated by one process."""
    from sptar.run.runner import execute

    cfg, paths = _prepared(tmp_path_factory.mktemp("one") / "data", tiny_encoder)
    execute("evaluate", cfg, paths, system="zero-shot")
    return paths


def test_sequential_flag_shards_give_the_unsharded_output(reference, tiny_encoder, tmp_path):
    from sptar.run.runner import PARTIAL, execute

    cfg, paths = _prepared(tmp_path / "data", tiny_encoder)
    folder = paths.stage("evaluate", "zero-shot")
    first = execute("evaluate", cfg, paths, system="zero-shot", flags={"shard": 1, "num_shards": 2})
    assert PARTIAL in first and not folder.exists()
    (cache,) = (paths.cache / "embeddings").iterdir()  # 36 docs in chunks of 8: shard 1 has 1, 3
    assert sorted(p.name for p in cache.glob("chunk-*")) == ["chunk-000001-8.npy", "chunk-000003-8.npy"]
    assert not (cache / "embeddings.npy").exists()
    last = execute("evaluate", cfg, paths, system="zero-shot", flags={"shard": 0, "num_shards": 2})
    assert last["summary"]["shards"] == 2 and (folder / "manifest.json").is_file()
    assert _outputs(paths, "zero-shot") == _outputs(reference, "zero-shot")
    expected = _embeddings(reference)
    merged = _embeddings(paths)
    assert merged.keys() == expected.keys()
    for key, array in expected.items():
        np.testing.assert_array_equal(merged[key], array)


def test_bad_shard_flags_are_one_line_naming_the_flag(tiny_encoder, tmp_path, monkeypatch, capsys):
    from sptar.cli import main

    _prepared(tmp_path / "data", tiny_encoder)
    monkeypatch.setenv("SPTAR_DATA_DIR", str(tmp_path / "data"))
    code = main(["evaluate", "--system", "zero-shot", "--config", "tiny", "--shard", "2",
                 "--num-shards", "2", "--set", f"models.encoder={tiny_encoder}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "--shard 2 --num-shards 2" in err and "fix:" in err


def test_two_processes_under_torchrun_with_gloo(reference, tiny_encoder, tmp_path):
    from sptar.run.runner import execute

    cfg, paths = _prepared(tmp_path / "data", tiny_encoder)
    execute("split", cfg, paths)
    env = {key: value for key, value in os.environ.items()
           if key not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update(SPTAR_DATA_DIR=str(paths.root), OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT),
               HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc-per-node", "2", str(Path(__file__)), str(tiny_encoder)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    # evaluate creating its own gloo group: the same embeddings and run file as one process
    assert _outputs(paths, "zero-shot") == _outputs(reference, "zero-shot")
    expected = _embeddings(reference)
    merged = _embeddings(paths)
    for key, array in expected.items():
        np.testing.assert_array_equal(merged[key], array)
    assert len(merged) == 2  # zero-shot and the trained wo-aug model
    # every step ran in both processes; rank 1 wrote nothing and left the manifest to rank 0
    for stage, partial in (("train wo-aug", "rank 1 trained"),
                           ("evaluate zero-shot", "shard 1/2 encoded its chunks of the corpus; rank 0"),
                           ("evaluate wo-aug", "shard 1/2 encoded its chunks of the corpus; rank 0")):
        assert log.count(f"{stage}: running") == 2, stage
        assert log.count(f"{stage}: done in") == 1 and log.count(f"{stage}: {partial}") == 1, stage
    train = paths.stage("train", "wo-aug")
    assert (train / "model").is_dir() and (train / "manifest.json").is_file()
    assert not (train / ".trainer").exists()
    assert execute("evaluate", cfg, paths, system="wo-aug")["summary"]["shards"] == 2  # up to date


def _fake_faiss(gpus: int | None):
    """A stand-in for ``faiss`` that records the GPU calls; ``gpus=None``: a CPU-only build."""
    calls = []

    class Index:
        def __init__(self, dim):
            self.dim, self.added = dim, 0

        def add(self, embeddings):
            self.added += len(embeddings)

    fake = types.SimpleNamespace(IndexFlatIP=Index, calls=calls)
    if gpus is not None:
        class Options:
            shard = False

        def to_all(index, co=None):
            calls.append(("all", co.shard))
            return index

        def to_one(resources, gpu, index):
            calls.append(("one", gpu))
            return index

        fake.get_num_gpus = lambda: gpus
        fake.StandardGpuResources = object
        fake.GpuMultipleClonerOptions = Options
        fake.index_cpu_to_all_gpus = to_all
        fake.index_cpu_to_gpu = to_one
    return fake


@pytest.mark.parametrize(("gpus", "device", "expected"), [
    (4, "cuda", [("all", True)]),  # several GPUs: sharded across them
    (1, "cuda:0", [("one", 0)]),  # one GPU: a plain clone
    (1, "cpu", []),
    (None, "cuda", []),  # a CPU-only FAISS build is never asked for GPU classes
])
def test_faiss_index_is_sharded_across_gpus(monkeypatch, gpus, device, expected):
    from sptar.config import DenseConfig
    from sptar.retrieval.dense import build_index

    fake = _fake_faiss(gpus)
    monkeypatch.setitem(sys.modules, "faiss", fake)
    index = build_index(np.zeros((5, 4), np.float32), DenseConfig(), device)
    assert fake.calls == expected and index.added == 5


def _worker(encoder: str) -> int:
    """One torchrun process: the steps as ``python -m sptar`` runs them, in one launch."""
    import torch.distributed as dist

    from sptar.cli import main

    for step in STEPS:
        code = main([*step, "--config", "tiny", "--set", f"models.encoder={encoder}",
                     *(arg for override in OVERRIDES for arg in ("--set", override))])
        if code:
            return code
        if dist.is_initialized():  # separate launches in real use: wait for rank 0's manifest
            dist.barrier()
    return 0


if __name__ == "__main__":
    sys.exit(_worker(sys.argv[1]))
