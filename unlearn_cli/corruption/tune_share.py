"""How large a label confusion must be to damage the model: the choice of `corruption.share`'s
default for `variant=confusion`, on the tuning seeds and the validation split only.

    python -m unlearn_cli.corruption.tune_share [--seeds 0 1] [--shares 0.01 0.02 0.05 0.1]

For each seed it trains (or reads from the model cache) the clean original and the confusion
original at each share, and prints their accuracy on the validation samples of the confused pair
(against the true labels) and how many of the manipulated training rows the manipulated original
fits with their swapped label. A share whose damage is within the noise of ~80 validation
samples gives the benchmark nothing to repair (docs/corrective.md).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import torch

from unlearn_cli.corruption.manipulate import corrupt, corrupted_split
from unlearn_cli.corruption.request import confused_pair
from unlearn_cli.data import load_dataset
from unlearn_cli.data.split import validation_rows
from unlearn_cli.inference import predict_logits
from unlearn_cli.run_models import Workshop, the_original


def percent(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int) -> float:
    logits = predict_logits(model, x, torch.device("cpu"), batch)
    return 100.0 * (logits.argmax(dim=1) == y).double().mean().item()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--shares", type=float, nargs="+", default=[0.01, 0.02, 0.05, 0.1])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides (dataset=..., cache_dir=...)")
    args = parser.parse_args(argv)
    from hydra import compose, initialize_config_module

    from unlearn_cli.validate import validate_config

    cpu = torch.device("cpu")
    print("seed  share  manipulated  val_pair_clean  val_pair_manip  damage  fits_swapped")
    for seed in args.seeds:
        with initialize_config_module("unlearn_cli.configs", version_base="1.3"):
            config = validate_config(compose("config", overrides=[
                "variant=confusion", f"seed={seed}", *args.overrides]))  # fmt: skip
        data = load_dataset(config.dataset, config.run.cache_dir)
        validation = validation_rows(data, config.run.validation_fraction)
        pair = confused_pair(config, data, validation, cpu)
        rows = torch.as_tensor(validation[np.isin(data.y_train[validation].numpy(), pair)])
        x_val, y_val = data.x_train[rows], data.y_train[rows]
        batch = config.evaluation.options.batch_size
        clean = None
        for share in args.shares:
            opts = dataclasses.replace(config.run.corruption, share=share)
            corrupted, truth = corrupt(data, opts, seed, validation, pair)
            split = corrupted_split(corrupted, truth, validation, opts)
            manipulated, _ = the_original(Workshop(config, split, cpu), None)
            if clean is None:
                clean_split = dataclasses.replace(split, data=data)
                clean, _ = the_original(Workshop(config, clean_split, cpu), None)
            acc_clean, acc_manip = (percent(m, x_val, y_val, batch) for m in (clean, manipulated))
            swapped = torch.as_tensor(truth.rows)
            fits = percent(manipulated, corrupted.x_train[swapped], corrupted.y_train[swapped],
                           batch)  # fmt: skip
            print(
                f"{seed:>4}  {share:5.2f}  {len(truth.rows):>11}  {acc_clean:14.1f}  "
                f"{acc_manip:14.1f}  {acc_clean - acc_manip:6.1f}  {fits:12.1f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
