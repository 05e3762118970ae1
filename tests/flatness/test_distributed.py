"""Data-parallel measuring: two gloo processes on the CPU, each holding a shard (1,000 and 1,001
samples), against one process holding all 2,001 samples."""

import json

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

import flatness

N, SPLIT = 2001, 1000


def problem():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))
    x, y = torch.randn(N, 5), torch.randint(0, 3, (N,))
    return model, x, y


def measured(hessian):
    obj = hessian.objective
    lam = hessian.eigenvalues(2, tol=1e-6, max_iter=60)
    trace = hessian.trace(min_probes=8, max_probes=8, seed=3)  # the same 8 probes everywhere
    v = {k: torch.ones_like(p) for k, p in obj.params.items()}
    hv = torch.cat([t.reshape(-1) for t in hessian.hvp(v).values()])
    with flatness.distributed.sharded(hessian.distributed):
        loss, evaluation = obj.value(), obj.evaluation()
    return {
        "lam": lam.value,
        "trace": trace.value,
        "hv": hv.tolist(),
        "loss": loss,
        "accuracy": evaluation.accuracy,
        "n": evaluation.n,
        "path": obj.hvp_mode,
    }


def rank_main(rank, world, store_file, out_dir):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store_file}", rank=rank, world_size=world)
    try:
        model, x, y = problem()
        shard = slice(0, SPLIT) if rank == 0 else slice(SPLIT, N)
        hessian = flatness.Hessian(
            model, (x[shard], y[shard]), batch_size=300, distributed=True, progress=False
        )
        if rank == 1:  # one rank without cached graphs: the ranks take different product paths
            hessian.objective._cache = False  # (double backward: quicker to set up than a jvp)
            hessian.objective.hvp_mode = "reverse-over-reverse"
        result = measured(hessian)
        with open(f"{out_dir}/rank{rank}.json", "w") as f:
            json.dump(result, f)
    finally:
        dist.destroy_process_group()


def test_two_ranks_with_unequal_shards_agree_with_one_process_on_the_whole_data(tmp_path):
    # fork, not spawn: the children need not import torch again (seconds each on a loaded machine)
    mp.start_processes(
        rank_main, args=(2, str(tmp_path / "store"), str(tmp_path)), nprocs=2, start_method="fork"
    )
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert {r["path"] for r in ranks} == {"cached-graph", "reverse-over-reverse"}
    model, x, y = problem()
    whole = measured(flatness.Hessian(model, (x, y), batch_size=300, progress=False))
    for r in ranks:
        assert r["lam"] == pytest.approx(whole["lam"], rel=1e-5)
        assert r["trace"] == pytest.approx(whole["trace"], rel=1e-5)
        torch.testing.assert_close(
            torch.tensor(r["hv"]), torch.tensor(whole["hv"]), rtol=1e-4, atol=1e-6
        )
        assert r["loss"] == pytest.approx(whole["loss"], rel=1e-6)
        assert r["accuracy"] == whole["accuracy"] and r["n"] == N
    assert ranks[0]["lam"] == ranks[1]["lam"]  # the ranks agree exactly, not only approximately


def test_distributed_without_a_process_group_says_what_to_do():
    model, x, y = problem()
    with pytest.raises(RuntimeError, match="init_process_group"):
        flatness.Hessian(model, (x, y), distributed=True)
