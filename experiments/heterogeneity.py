"""How far apart the honest nodes' gradients and updates lie, against how long their mean is.

    python experiments/heterogeneity.py --data-dir ../shared/data --seeds 0 1 2 --write-results

A Byzantine-robust rule that judges received models by their geometry cannot tell an attacker
from an honest node that lies as far from the others as honest nodes do. The measure of that room
is the ratio rho = mean_i ||g_i - g||^2 / ||g||^2 of the honest nodes' spread to their mean g. In
the (G, B)-gradient dissimilarity model (mean_i ||g_i - g||^2 <= G^2 + B^2 ||g||^2), Allouah et
al. ("Robust Distributed Learning: Tight Error Bounds and Breakdown Point under Data
Heterogeneity", NeurIPS 2023) show that no aggregation rule tolerates a share of attackers of
1 / (2 + B^2) or more. rho, measured at a model, is the B^2 that the bound needs there with G = 0;
the share 1 / (2 + rho) is printed beside it as the breakdown point that B^2 would give. It is a
measurement of these shards, not a proof about them: a pair with G > 0 can hold with a smaller B.

The honest nodes are nodes 0-6 of the main job's partition (the attackers, 7-9, and their shards
left out, as in the attack matrix's "removed" runs). They run plain FedAvg from the main job's
genesis model, one local epoch a round with the main job's SGD settings. At the listed rounds the
script takes, at the round's start model, each node's full-batch gradient on its training split
(g_i) and the update of that round's local epoch (u_i, the vector the attacks of the project see),
and prints rho for both with the model's test accuracy.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch
from torch import nn

from dfl_ray.config import config_from_dict
from dfl_ray.data import NAMED_PARTITIONS, DataNotFoundError, Dataset, load_dataset, partition
from dfl_ray.models.flat import model_to_vector, vector_to_model
from dfl_ray.models.registry import build_model
from dfl_ray.models.training import evaluate, make_optimizer, to_input, train_steps
from dfl_ray.node.build import local_steps, sgd_settings
from dfl_ray.results import Tee, add_results_argument, record_output

PARTITIONS = NAMED_PARTITIONS
HONEST = 7
"""Nodes 0-6: the main job's ten nodes without its three attackers."""


def spread_ratio(vectors: np.ndarray) -> float:
    """mean_i ||v_i - mean||^2 / ||mean||^2 over the rows of `vectors` (inf for a zero mean)."""
    rows = vectors.astype(np.float64)
    mean = rows.mean(axis=0)
    spread = float(((rows - mean) ** 2).sum(axis=1).mean())
    length = float(mean @ mean)
    return spread / length if length > 0.0 else float("inf")


def full_gradient(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """The gradient of the mean cross-entropy over all of (images, labels), flattened."""
    model.train()  # as in training (LeNet has no dropout or batch norm; kept for other models)
    model.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(model(to_input(images)), labels)
    loss.backward()
    grad = torch.cat([p.grad.reshape(-1) for p in model.parameters() if p.grad is not None])
    model.zero_grad(set_to_none=True)
    return grad.detach().numpy().astype(np.float64)


def measure(part: str, seed: int, rounds: list[int], data: Dataset) -> list[dict[str, float]]:
    """rho of gradients and updates, and test accuracy, at the start of each round in `rounds`."""
    cfg = config_from_dict({"data": {"dataset": data.name, **PARTITIONS[part]},
                            "experiment": {"seed": seed}})
    shards = partition(data.train_labels.numpy(), cfg.topology.nodes, kind=cfg.data.partition,
                       seed=seed, val_fraction=cfg.data.val_fraction, alpha=cfg.data.alpha,
                       labels_per_node=cfg.data.labels_per_node)[:HONEST]
    torch.manual_seed(seed)
    shape = data.image_shape
    model = build_model(cfg.model.name, in_channels=1 if len(shape) == 2 else shape[0],
                        num_classes=data.num_classes, image_size=shape[-1])  # the genesis model
    sgd = sgd_settings(cfg)
    rng = np.random.default_rng(seed)
    weights = np.array([len(s.train) for s in shards], dtype=np.float64)
    start = model_to_vector(model)
    out = []
    for r in range(max(rounds) + 1):
        updates, grads = [], []
        for shard in shards:
            vector_to_model(start, model)
            if r in rounds:
                idx = torch.from_numpy(shard.train)
                grads.append(full_gradient(model, data.train_images[idx], data.train_labels[idx]))
            train_steps(model, make_optimizer(model, sgd), data.train_images, data.train_labels,
                        batch_size=cfg.training.batch_size,
                        steps=local_steps(cfg, len(shard.train)), rng=rng,
                        indices=shard.train)
            updates.append(model_to_vector(model).astype(np.float64) - start)
        if r in rounds:
            vector_to_model(start, model)
            out.append({"round": r, "accuracy": evaluate(model, data.test_images, data.test_labels),
                        "rho_gradient": spread_ratio(np.stack(grads)),
                        "rho_update": spread_ratio(np.stack(updates))})
        # FedAvg of the honest nodes, weighted by shard size: the attacker-free protocol's mean.
        mean_update = np.tensordot(weights / weights.sum(), np.stack(updates), axes=1)
        start = (start + mean_update).astype(np.float32)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", default=None,
                        help="data folder (default: $DFL_DATA_DIR, else the user cache folder)")
    parser.add_argument("--partitions", nargs="+", default=list(PARTITIONS),
                        choices=list(PARTITIONS), help="partitions (default: all three)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0],
                        help="seeds of the partition and genesis model (default: 0)")
    parser.add_argument("--rounds", type=int, nargs="+", default=[0, 1, 5, 10, 20, 40],
                        help="FedAvg rounds at whose start to measure (default: 0 1 5 10 20 40)")
    add_results_argument(parser)
    args = parser.parse_args(argv)
    if min(args.rounds) < 0:
        parser.error("--rounds must be >= 0")
    torch.set_num_threads(1)
    try:
        data = load_dataset("mnist", args.data_dir)
    except DataNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    with Tee() as tee:
        print(f"{HONEST} honest nodes (0-6 of the main job's 10), FedAvg, one local epoch a round.")
        print("rho = mean_i ||v_i - mean||^2 / ||mean||^2 over the honest nodes' full-batch "
              "gradients (g) and one-epoch updates (u); 1/(2+rho): the breakdown share "
              "B^2 = rho would give.\n")
        print(f"{'partition':<13}{'seed':>5}{'round':>6}{'test acc':>10}{'rho g':>9}"
              f"{'1/(2+rho g)':>13}{'rho u':>9}{'1/(2+rho u)':>13}")
        for part in args.partitions:
            for seed in args.seeds:
                for row in measure(part, seed, sorted(set(args.rounds)), data):
                    rg, ru = row["rho_gradient"], row["rho_update"]
                    print(f"{part:<13}{seed:>5}{row['round']:>6}{row['accuracy']:>10.3f}"
                          f"{rg:>9.2f}{1 / (2 + rg):>13.3f}{ru:>9.2f}{1 / (2 + ru):>13.3f}",
                          flush=True)
    if args.write_results:
        print(f"wrote {record_output('heterogeneity', 'Heterogeneity of the honest nodes', tee.text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
