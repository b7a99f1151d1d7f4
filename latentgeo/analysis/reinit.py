"""Layer re-initialisation robustness of a trained run (Zhang, Bengio & Singer 2019, "Are All
Layers Created Equal?", as HP implements it: HP@867d0fd:reinit_layers.py, reference §3.4).

    python -m latentgeo.analysis.reinit RUN_DIR [--from init,epoch_0001,...] [--rand]
        [--layers conv|conv+linear] [--seed S] [--device D]

For every init source (a checkpoint of the run such as ``init`` = epoch 0 or an early
``epoch_XXXX`` snapshot, and with ``--rand`` an independent fresh random initialisation) and
for every included layer, one at a time: copy that layer's weight and bias from the source into
the trained model, measure test top-1 (and top-5 when there are at least 5 classes; HP always
takes top-5 and crashes below 5), restore the trained values exactly. BN parameters and running
statistics are never touched. Layers (``included_layers``, module order): ``conv`` = every
conv except 1×1 ones (HP skips them; HP never touches the classifier); ``conv+linear`` adds
every ``nn.Linear``, the head's included.

Writes ``reinit.json`` = ``{"layers": [names], "sources": {source: [top1 per layer]},
"top5": {source: [...]} (K ≥ 5 only), "baseline": {"top1", "top5" (null when K < 5)},
"rand_seed": int | null}`` and ``reinit.png`` (heatmap of the relative drop
(baseline − top1)/baseline, rows = sources, columns = layers). An existing ``reinit.json``
(training's ``metrics.reinit``, or an earlier command) is added to, never cut: the sources
measured again replace their rows, the others stay (over the same layers only).

A snapshot at or after the trained epoch holds the trained weights (zero drop everywhere), so
the default ``--from`` (``init`` plus every ``epoch_XXXX`` snapshot) leaves those out.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from latentgeo.build import load_run, owning
from latentgeo.config import TrainConfig, with_changes
from latentgeo.metrics.features import collect_features
from latentgeo.metrics.hyperplanes import LAYER_SETS, included_layers
from latentgeo.metrics.reinit import relative_drop
from latentgeo.models import build_model
from latentgeo.records import RunDir
from latentgeo.runtime import load_checkpoint
from latentgeo.tracking import add_to_summary

# () -> one pass over the test split as (x, y) batches on the model's device, e.g.
# ``loaders.eval["test"].epoch``.
BatchesFactory = Callable[[], Iterable[tuple[Tensor, Tensor]]]
StateDict = dict[str, Tensor]

# The fresh random init of ``--rand`` uses trainer.seed + this offset unless --seed is given:
# far from the small seeds of sweep repeats, so it is not another run's own initialisation.
RAND_SEED_OFFSET = 1_000_003
SNAPSHOT = re.compile(r"epoch_(\d+)")


# ---------------------------------------------------------------------------- measuring


def topk_accuracy(logits: Tensor, labels: Tensor, k: int) -> float:
    """Fraction of samples whose label is among the ``k`` largest logits."""
    top = logits.topk(k, dim=1).indices
    return (top == labels.view(-1, 1)).any(dim=1).double().mean().item()


def evaluate_accuracy(model: nn.Module, test_batches: BatchesFactory, num_classes: int
                  ) -> tuple[float, float | None]:
    """(top-1, top-5) of ``model`` in eval mode over one pass; top-5 is None when K < 5."""
    features = collect_features(model, test_batches())
    top5 = topk_accuracy(features.logits, features.labels, 5) if num_classes >= 5 else None
    return features.accuracy, top5


def reinit_layer_names(model: nn.Module, layers: str = "conv") -> list[str]:
    """HP's layer set: ``conv`` = conv layers except 1×1; ``conv+linear`` adds nn.Linear."""
    if layers not in LAYER_SETS:
        raise ValueError(f"layers={layers!r} is not one of {LAYER_SETS}")
    return [name for name, _ in included_layers(model, with_linear=layers == "conv+linear")]


def _layer_tensors(model: nn.Module, layer: str) -> dict[str, Tensor]:
    """The weight and (when present) bias parameters of ``layer``, keyed by state_dict key."""
    module = model.get_submodule(layer)
    return {f"{layer}.{name}": getattr(module, name) for name in ("weight", "bias")
            if getattr(module, name, None) is not None}


@contextmanager
def reinitialised(model: nn.Module, layer: str, source: StateDict) -> Iterator[None]:
    """Within the block, ``layer``'s weight and bias hold ``source``'s values; afterwards the
    previous values, bit for bit. Copies in place, so the Parameter objects (and any optimizer
    holding them) stay the same."""
    tensors = _layer_tensors(model, layer)
    saved = {key: tensor.detach().clone() for key, tensor in tensors.items()}
    try:
        with torch.no_grad():
            for key, tensor in tensors.items():
                tensor.copy_(source[key])
        yield
    finally:
        with torch.no_grad():
            for key, tensor in tensors.items():
                tensor.copy_(saved[key])


def _check_sources(model: nn.Module, sources: dict[str, StateDict], layers: Sequence[str]
                   ) -> None:
    """Fail before the first evaluation when a source lacks a key or has another shape."""
    for layer in layers:
        for key, tensor in _layer_tensors(model, layer).items():
            for name, state in sources.items():
                if key not in state:
                    raise KeyError(f"reinit source {name!r} has no {key!r}")
                if state[key].shape != tensor.shape:
                    raise ValueError(f"reinit source {name!r}: {key!r} has shape "
                                     f"{tuple(state[key].shape)}, the model {tuple(tensor.shape)}")


def reinit_robustness(model: nn.Module, test_batches_factory: BatchesFactory,
                      sources: dict[str, StateDict], layers: Sequence[str], num_classes: int,
                      rand_seed: int | None = None) -> dict[str, Any]:
    """Test accuracy after re-initialising one layer at a time from each source (HP §3.4).

    ``sources``: name -> state_dict with the model's keys (only ``<layer>.weight`` and
    ``<layer>.bias`` are read). ``layers``: module names, e.g. ``reinit_layer_names(model)``.
    Returns the ``reinit.json`` structure (module docstring); ``rand_seed`` is recorded as
    given. The model is left exactly as it was (values, Parameter objects, train/eval mode).
    Cost: 1 + len(sources)·len(layers) passes over the test split.
    """
    _check_sources(model, sources, layers)
    top1, top5 = evaluate_accuracy(model, test_batches_factory, num_classes)
    result: dict[str, Any] = {"layers": list(layers), "sources": {},
                              "baseline": {"top1": top1, "top5": top5}, "rand_seed": rand_seed}
    if top5 is not None:
        result["top5"] = {}
    for name, state in sources.items():
        result["sources"][name] = []
        if top5 is not None:
            result["top5"][name] = []
        for layer in layers:
            with reinitialised(model, layer, state):
                accuracy, accuracy5 = evaluate_accuracy(model, test_batches_factory, num_classes)
            result["sources"][name].append(accuracy)
            if top5 is not None:
                result["top5"][name].append(accuracy5)
    return result


def reinit_events(result: dict[str, Any]) -> dict[str, float]:
    """``{"reinit/<source>/<layer>": top1}`` for metrics.jsonl and wandb."""
    return {f"reinit/{source}/{layer}": accuracy
            for source, accuracies in result["sources"].items()
            for layer, accuracy in zip(result["layers"], accuracies, strict=True)}


# ---------------------------------------------------------------------------- sources


def snapshot_names(checkpoints_dir: Path, before_epoch: int | None = None) -> list[str]:
    """``init`` (when present) and the ``epoch_XXXX`` snapshots in epoch order; with
    ``before_epoch``, only snapshots of earlier epochs."""
    checkpoints_dir = Path(checkpoints_dir)
    names = ["init"] if (checkpoints_dir / "init.pt").is_file() else []
    epochs = []
    for path in checkpoints_dir.glob("epoch_*.pt"):
        match = SNAPSHOT.fullmatch(path.stem)
        if match and (before_epoch is None or int(match.group(1)) < before_epoch):
            epochs.append((int(match.group(1)), path.stem))
    return names + [stem for _, stem in sorted(epochs)]


def random_init_state(cfg: TrainConfig, input_shape: tuple[int, int, int], num_classes: int,
                      seed: int) -> StateDict:
    """A fresh initialisation of the run's architecture drawn with ``seed`` (never pretrained
    weights), without touching the global RNG state."""
    cfg = with_changes(cfg, model={"pretrained": False})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(cfg, input_shape, num_classes)
    return model.state_dict()


def default_rand_seed(run_seed: int) -> int:
    return run_seed + RAND_SEED_OFFSET


def gather_sources(cfg: TrainConfig, checkpoints_dir: Path, input_shape: tuple[int, int, int],
                   num_classes: int, device: torch.device, names: Sequence[str] | None = None,
                   trained_epoch: int | None = None, rand: bool = False,
                   rand_seed: int | None = None) -> tuple[dict[str, StateDict], int | None]:
    """The init sources of a run: ``names`` (checkpoint stems in ``checkpoints_dir``; default
    ``init`` and the snapshots before ``trained_epoch``) plus, with ``rand``, a fresh random
    init under the name ``rand``. Returns ``(sources, seed of rand or None)``; ``rand_seed``
    must differ from ``trainer.seed`` (that seed reproduces ``init.pt``)."""
    checkpoints_dir = Path(checkpoints_dir)
    if names is None:
        names = snapshot_names(checkpoints_dir, trained_epoch)
    sources: dict[str, StateDict] = {}
    for name in names:
        path = checkpoints_dir / f"{name}.pt"
        if not path.is_file():
            available = sorted(p.stem for p in checkpoints_dir.glob("*.pt"))
            raise FileNotFoundError(f"--from: no checkpoint {name!r} ({path}); available: "
                                    f"{available}")
        sources[name] = load_checkpoint(path, device)["model"]
    seed = None
    if rand:
        seed = default_rand_seed(cfg.trainer.seed) if rand_seed is None else rand_seed
        if seed == cfg.trainer.seed:
            raise ValueError(f"the seed of the random re-init ({seed}) is the run's "
                             "trainer.seed, which reproduces init.pt; allowed: any other integer")
        sources["rand"] = random_init_state(cfg, input_shape, num_classes, seed)
    return sources, seed


# ---------------------------------------------------------------------------- outputs


def write_reinit(run: RunDir, result: dict[str, Any]) -> tuple[Path, Path]:
    """``reinit.json`` (atomic) and ``reinit.png`` in the run dir; returns both paths."""
    from latentgeo.figures.analyses import plot_reinit_heatmap  # matplotlib: when a figure is drawn

    json_path = run.write_artifact("reinit", result)
    png_path = run.artifact("reinit_plot")
    plot_reinit_heatmap(result, png_path)
    return json_path, png_path


def merge_reinit(previous: dict[str, Any] | None, result: dict[str, Any]) -> dict[str, Any]:
    """``result`` added to a run's earlier ``reinit.json`` (training's, or an earlier command's):
    rows of sources measured again are replaced, every other row is kept, and so is the
    ``rand`` seed when ``rand`` is not measured again. A post-hoc command adds to the record."""
    if not isinstance(previous, dict) or not isinstance(previous.get("sources"), dict):
        return result
    merged = {**result, "sources": {**previous["sources"], **result["sources"]}}
    if "top5" in result:
        merged["top5"] = {**(previous.get("top5") or {}), **result["top5"]}
    if "rand" not in result["sources"] and "rand" in previous["sources"]:
        merged["rand_seed"] = previous.get("rand_seed")
    return merged


def format_table(result: dict[str, Any]) -> str:
    """One row per layer, one column per source: top-1 and the relative drop."""
    baseline = result["baseline"]
    width = max([len("layer"), *map(len, result["layers"])])
    sources = list(result["sources"])
    lines = [f"baseline test top-1 {baseline['top1']:.4f}"
             + (f"  top-5 {baseline['top5']:.4f}" if baseline["top5"] is not None else ""),
             "layer".ljust(width) + "".join(f"  {s[:20]:>20}" for s in sources)]
    for index, layer in enumerate(result["layers"]):
        cells = []
        for source in sources:
            accuracy = result["sources"][source][index]
            drop = relative_drop(baseline["top1"], accuracy)
            cells.append(f"  {accuracy:.4f} ({drop:+.3f})".rjust(22))
        lines.append(layer.ljust(width) + "".join(cells))
    lines.append("cells: top-1 (relative drop)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m latentgeo.analysis.reinit",
        description="Layer re-initialisation robustness of a trained run (HP §3.4): "
                    "writes reinit.json and reinit.png into the run dir.")
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--from", dest="sources", default=None,
                        help="comma-separated checkpoint names in RUN_DIR/checkpoints "
                             "(default: init and every epoch_XXXX snapshot before the trained "
                             "epoch)")
    parser.add_argument("--rand", action="store_true",
                        help="add a fresh independent random initialisation (source 'rand')")
    parser.add_argument("--layers", choices=LAYER_SETS, default="conv",
                        help="conv: conv layers except 1x1 (HP); conv+linear: plus nn.Linear")
    parser.add_argument("--seed", type=int, default=None,
                        help=f"seed of --rand (default trainer.seed + {RAND_SEED_OFFSET})")
    parser.add_argument("--device", default=None, help="default: the run's trainer.device")
    args = parser.parse_args(argv)
    return owning(args.run_dir, "python -m latentgeo.analysis.reinit", lambda: run_command(args))


def run_command(args: argparse.Namespace) -> int:
    """The command's body, with the run dir's owner lock held."""
    names = None
    if args.sources is not None:
        names = [name.strip() for name in args.sources.split(",") if name.strip()]
    try:
        run = load_run(args.run_dir, "last", args.device)
        sources, seed = gather_sources(run.cfg, run.run.checkpoints, run.data.input_shape,
                                       run.num_classes, run.device, names, run.epoch,
                                       args.rand, args.seed)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if run.run.state != "ok":
        print(f"warning: {run.run.dir} has state {run.run.state!r}; using last.pt "
              f"(epoch {run.epoch})", file=sys.stderr)
    if not sources:
        print("error: no init sources (no init.pt or snapshots before the trained epoch; "
              "use --from or --rand)", file=sys.stderr)
        return 2
    layers = reinit_layer_names(run.model, args.layers)
    if not layers:
        print(f"error: the model has no layers for --layers={args.layers}", file=sys.stderr)
        return 2
    previous = run.run.read_artifact("reinit")
    if isinstance(previous, dict) and previous.get("layers") not in (None, layers):
        print(f"error: {run.run.artifact('reinit')} holds other layers than --layers="
              f"{args.layers} measures ({len(previous['layers'])} vs {len(layers)}); rows "
              "are added only over the same layers: pass the --layers it was made with, or "
              "move it away to start another", file=sys.stderr)
        return 2
    print(f"{run.run.dir}: epoch {run.epoch}, {len(layers)} layers x {len(sources)} sources "
          f"({', '.join(sources)}) on {run.device}")
    result = reinit_robustness(run.model, run.loaders.eval["test"].epoch, sources, layers,
                               run.num_classes, seed)
    result = merge_reinit(previous, result)
    json_path, png_path = write_reinit(run.run, result)
    where = add_to_summary(run.run, run.cfg, reinit_events(result))
    print(format_table(result))
    print(f"wrote {json_path} and {png_path}")
    if where:
        print(f"added to the summary in {' and '.join(where)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
