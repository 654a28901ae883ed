"""One run of phase 1 (XRM) or phase 2 (ERM, GroupDRO, IRM, RWG, SUBG, MAT).

``run(run_args)`` is idempotent and resumable: a finished run returns at once, and with
``resume`` an interrupted run continues from its last checkpoint and writes the same
records as an uninterrupted one. Every input is checked before anything is written.
"""
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from XRM import records
from XRM.algorithms import Algorithm, TrainingSet, build_algorithm, check_group_labels, get_algorithm_class
from XRM.backbones import BackboneSpec
from XRM.data.base import InputOptions, SplitTensors
from XRM.data.registry import get_dataset
from XRM.devices import resolve_device
from XRM.errors import UserError
from XRM.fileio import append_jsonl, atomic_torch_save, atomic_write_text
from XRM.group_inference import cross_mistakes, is_degenerate, load_phase_1_artifact
from XRM.groups import accuracy_metrics, group_ids
from XRM.hparams_registry import check_hparams, default_hparams, random_hparams
from XRM.networks import build_network
from XRM.batches import evaluation_batches, input_shape, training_batches
from XRM.sampling import StepSampler, group_balancing_weights, subsample_to_smallest_group

#: steps of a --quick_run (debugging: default hyper-parameters, short)
QUICK_RUN_STEPS = 201
#: examples per evaluation batch: linear heads and MLPs take many at once; a backbone's
#: activations (ResNet-50 at 224 px, BERT at 220 tokens) need small batches to fit the GPU
EVALUATION_BATCH = 8192
BACKBONE_EVALUATION_BATCH = 256


def resolve_hparams(run_args: dict, family: str, num_steps: int, eval_every: int) -> dict[str, Any]:
    """The run's hyper-parameters: a random draw (or defaults for --quick_run), then overrides."""
    algorithm, comb = run_args["algorithm"], run_args["hparams_comb"]
    hparams = default_hparams(family, algorithm) if run_args.get("quick_run") else random_hparams(family, algorithm, comb)
    if run_args.get("adam"):
        hparams["optimizer"] = "adam"
    hparams["num_steps"] = min(num_steps, QUICK_RUN_STEPS) if run_args.get("quick_run") else num_steps
    hparams["eval_every"] = eval_every
    overrides = run_args.get("hparams_overrides") or {}
    unknown = sorted(set(overrides) - set(hparams))
    if unknown:
        raise UserError(f"unknown hyper-parameter(s) {', '.join(unknown)}; valid: {', '.join(sorted(hparams))}")
    hparams.update(overrides)
    check_hparams(hparams)
    return hparams


@dataclass
class RunInputs:
    """Everything a run needs, loaded and checked, on the run's device."""

    splits: dict[str, SplitTensors]
    num_classes: int
    family: str
    hparams: dict[str, Any]
    train_attributes: torch.Tensor
    inferred_validation_attributes: torch.Tensor | None
    held_out_logits: torch.Tensor | None
    num_workers: int = 4
    inputs: str = "features"
    backbone: BackboneSpec | None = None
    balanced_batches: bool = False


def load_run_inputs(run_args: dict, device: torch.device) -> RunInputs:
    """Load the dataset, the group labels and phase-1 outputs of a run; raises UserError on bad input."""
    algorithm_cls = get_algorithm_class(run_args["algorithm"])
    dataset = get_dataset(run_args["dataset"]).resolve(
        run_args["data_path"], algorithm_cls.phase, InputOptions.from_run_args(run_args))
    splits = dataset.load_splits(run_args["data_path"])
    n_train, n_validation = len(splits["tr"]), len(splits["va"])
    group_labels = run_args["group_labels"]
    check_group_labels(algorithm_cls, group_labels)

    def artifact(path: str) -> dict[str, torch.Tensor]:
        return load_phase_1_artifact(Path(path), n_train, n_validation, dataset.num_classes)

    inferred_validation = None
    if group_labels == "yes":
        train_attributes = splits["tr"].a
    elif group_labels == "no":
        train_attributes = torch.zeros_like(splits["tr"].y)
    else:
        labels = artifact(group_labels)
        train_attributes, inferred_validation = labels["tr"], labels["va"]
    held_out = None
    if algorithm_cls.needs_held_out_logits:
        if not run_args.get("phase_1_file"):
            raise UserError(f"{algorithm_cls.name} needs phase-1 outputs; run phase 1 first: python main.py --phase 1 ...")
        outputs = artifact(run_args["phase_1_file"])
        if "tr_ho" not in outputs:
            raise UserError(f"{run_args['phase_1_file']} has no held-out logits ('tr_ho'); re-run phase 1 with this toolkit")
        held_out, inferred_validation = outputs["tr_ho"], outputs["va"]
    hparams = resolve_hparams(run_args, dataset.family, dataset.num_steps, dataset.eval_every)

    def on_device(tensor: torch.Tensor | None) -> torch.Tensor | None:
        return None if tensor is None else tensor.to(device)

    return RunInputs(
        splits={name: split.to(device) for name, split in splits.items()},
        num_classes=dataset.num_classes,
        family=dataset.family,
        hparams=hparams,
        train_attributes=on_device(train_attributes),
        inferred_validation_attributes=on_device(inferred_validation),
        held_out_logits=on_device(held_out),
        num_workers=run_args.get("num_workers", 4),
        inputs=dataset.inputs,
        backbone=dataset.backbone,
        balanced_batches=dataset.balanced_batches,
    )


@torch.inference_mode()
def predict_all(algorithm: Algorithm, inputs: RunInputs, split: str) -> torch.Tensor:
    """Logits of every example of ``split``, in order, in batches, in evaluation mode (float32)."""
    device = inputs.splits[split].y.device
    batch_size = EVALUATION_BATCH if inputs.backbone is None else BACKBONE_EVALUATION_BATCH
    algorithm.network.eval()
    logits = [algorithm.predict(x).float() for x in evaluation_batches(
        inputs.splits[split].x, batch_size, device, inputs.num_workers)]
    algorithm.network.train()
    return torch.cat(logits)


def evaluate(algorithm: Algorithm, inputs: RunInputs) -> dict[str, float]:
    """Phase 1: the flip rate. Phase 2: accuracy and worst-group accuracy on va and te (+ va_gi_wga)."""
    if algorithm.phase == 1:
        return {records.FLIP_RATE: algorithm.flip_rate().item()}
    metrics: dict[str, float] = {}
    for split in ("va", "te"):
        data = inputs.splits[split]
        predictions = predict_all(algorithm, inputs, split).argmax(dim=1)
        for name, value in accuracy_metrics(predictions, data.y, data.a).items():
            metrics[records.metric_key(split, name)] = value
        if split == "va" and inputs.inferred_validation_attributes is not None:
            inferred = accuracy_metrics(predictions, data.y, inputs.inferred_validation_attributes)
            metrics[records.VA_GI_WGA] = inferred["wga"]
    return metrics


def best_model_metric(inputs: RunInputs) -> str:
    """The metric the best checkpoint is chosen by: va_gi_wga with inferred validation groups, else va_wga."""
    return records.VA_GI_WGA if inputs.inferred_validation_attributes is not None else records.VA_WGA


def build_sampler(algorithm: Algorithm, groups: torch.Tensor, batch_size: int, seed: int,
                  classes: torch.Tensor | None = None) -> StepSampler:
    """The training batch sampler the algorithm asks for; with ``classes`` (a dataset that
    wants class-balanced batches), uniform sampling draws every class equally often."""
    pool = torch.arange(len(groups), device=groups.device)
    if algorithm.sampling == "group_balanced":
        return StepSampler(pool, batch_size, seed, weights=group_balancing_weights(groups))
    if algorithm.sampling == "group_subsampled":
        subset_generator = torch.Generator(device=groups.device).manual_seed(seed)
        return StepSampler(subsample_to_smallest_group(groups, subset_generator), batch_size, seed)
    if classes is not None:
        return StepSampler(pool, batch_size, seed, weights=group_balancing_weights(classes))
    return StepSampler(pool, batch_size, seed)


def _rng_states(generator: torch.Generator) -> dict[str, Any]:
    states = {"torch": torch.get_rng_state(), "run": generator.get_state()}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def _restore_rng_states(states: dict[str, Any], generator: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    generator.set_state(states["run"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _load_checkpoint(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"checkpoint {path} is unreadable ({type(exc).__name__}); delete it to restart the run from step 0") from None


def run(run_args: dict) -> None:
    """Train one run to completion (see the module docstring)."""
    files = records.RunFiles(Path(run_args["out_dir"]), run_args["hparams_comb"], run_args["seed"])
    if files.done.exists():
        return
    device = resolve_device(run_args.get("device", "auto"))
    inputs = load_run_inputs(run_args, device)
    checkpoint = None
    if run_args.get("resume") and files.checkpoint.exists():
        checkpoint = _load_checkpoint(files.checkpoint)
    hparams = inputs.hparams

    torch.manual_seed(run_args["seed"])
    generator = torch.Generator(device=device).manual_seed(run_args["seed"])
    train = inputs.splits["tr"]
    train_groups = group_ids(train.y, inputs.train_attributes)
    training_set = TrainingSet(
        y=train.y,
        groups=train_groups,
        num_classes=inputs.num_classes,
        num_attributes=int(inputs.train_attributes.max().item()) + 1,
        generator=generator,
        held_out_logits=inputs.held_out_logits,
    )
    shape = input_shape(train.x)

    def make_network() -> torch.nn.Module:
        return build_network(inputs.family, shape, inputs.num_classes, hparams, inputs.backbone)

    algorithm = build_algorithm(run_args["algorithm"], make_network, training_set, hparams).to(device)
    # Inputs read through a DataLoader take their index batches on the CPU, in the loader's
    # main process: a sampler on the GPU would make every prefetch wait for the GPU.
    sampler_device = train.y.device if isinstance(train.x, torch.Tensor) else torch.device("cpu")
    sampler = build_sampler(algorithm, train_groups.to(sampler_device), hparams["batch_size"], run_args["seed"],
                            train.y.to(sampler_device) if inputs.balanced_batches else None)
    best = {"metric": best_model_metric(inputs), "value": -1.0, "step": -1}

    start = 0
    if checkpoint is not None:
        if checkpoint["hparams"] != hparams:
            raise UserError(f"{files.checkpoint} was trained with other hyper-parameters ({checkpoint['hparams']}); "
                            "resume with the same --hparams/--quick_run/--adam, or delete it to start over")
        algorithm.load_state_dict(checkpoint["algorithm"])
        algorithm.optimizer.load_state_dict(checkpoint["optimizer"])
        _restore_rng_states(checkpoint["rng"], generator)
        best = checkpoint["best"]
        start = checkpoint["step"] + 1
        records.truncate_records(files.results, checkpoint["step"])
        print(f"resuming {run_args.get('run_name', files.tag)} from step {start}", file=sys.stderr)
    else:
        files.directory.mkdir(parents=True, exist_ok=True)
        header = {"hparams": hparams, **{k: v for k, v in run_args.items() if k != "hparams_overrides"},
                  "inputs_used": inputs.inputs, "backbone_used": None if inputs.backbone is None else inputs.backbone.name}
        records.write_header(files.results, header)

    num_steps, eval_every = hparams["num_steps"], hparams["eval_every"]
    show = run_args.get("progress", True) and sys.stderr.isatty()
    bar = tqdm(total=num_steps, initial=start, desc=run_args.get("run_name", files.tag), disable=not show, file=sys.stderr)
    batches = training_batches(train.x, sampler, start, num_steps, device, inputs.num_workers)
    for step, (index, x) in zip(range(start, num_steps), batches):
        algorithm.update(index, x, train.y[index], train_groups[index])
        bar.update()
        if step % eval_every == 0 or step == num_steps - 1:
            metrics = evaluate(algorithm, inputs)
            append_jsonl(files.results, {records.STEP: step, **metrics})
            bar.set_postfix({key: round(value, 3) for key, value in metrics.items()})
            if algorithm.phase == 2 and metrics[best["metric"]] >= best["value"]:
                best = {"metric": best["metric"], "value": metrics[best["metric"]], "step": step}
                atomic_torch_save({"model": algorithm.network.state_dict(), **best, "hparams": hparams}, files.best_checkpoint)
            atomic_torch_save(
                {
                    "step": step,
                    "algorithm": algorithm.state_dict(),
                    "optimizer": algorithm.optimizer.state_dict(),
                    "rng": _rng_states(generator),
                    "best": best,
                    "hparams": hparams,
                },
                files.checkpoint,
            )
    bar.close()
    if algorithm.phase == 1:
        _finish_phase_1(algorithm, inputs, files, num_steps)
    atomic_write_text("", files.done)


def _finish_phase_1(algorithm: Algorithm, inputs: RunInputs, files: records.RunFiles, num_steps: int) -> None:
    """Infer groups by cross-mistakes over every training and validation example; save them or flag degeneracy."""
    train, validation = inputs.splits["tr"], inputs.splits["va"]
    train_logits = predict_all(algorithm, inputs, "tr")
    validation_logits = predict_all(algorithm, inputs, "va")
    _, held_out = algorithm.split_logits(train_logits, torch.arange(len(train), device=train.y.device))
    train_attributes = cross_mistakes(train_logits, train.y)
    validation_attributes = cross_mistakes(validation_logits, validation.y)
    if is_degenerate(train.y, train_attributes) or is_degenerate(validation.y, validation_attributes):
        # reported as a zero flip rate at the end so that selection by flip_rate passes it over
        append_jsonl(files.results, {records.STEP: num_steps, records.FLIP_RATE: 0.0, records.DEGENERATE: True})
        print(f"warning: {files.directory / files.tag}: degenerate inferred groups (a class not split in two); "
              "no phase-1 file written", file=sys.stderr)
        return
    inferred = {"tr": train_attributes.cpu(), "va": validation_attributes.cpu(), "tr_ho": held_out.float().cpu()}
    atomic_torch_save(inferred, files.inferred)


def check_runs(runs: list[dict]) -> None:
    """Load and check the inputs of every distinct (dataset, algorithm, group labels, phase-1 file) once.

    Raises the first UserError before any run writes a file.
    """
    seen = set()
    for run_args in runs:
        # hyper-parameter names do not depend on the combination: one check per data source suffices
        key = (run_args["dataset"], run_args["algorithm"], run_args["group_labels"], run_args.get("phase_1_file"),
               run_args["data_path"], InputOptions.from_run_args(run_args))
        if key not in seen:
            seen.add(key)
            inputs = load_run_inputs(run_args, torch.device("cpu"))
            if inputs.backbone is not None:  # missing pretrained weights surface now, not mid-sweep
                build_network(inputs.family, input_shape(inputs.splits["tr"].x), inputs.num_classes, inputs.hparams,
                              inputs.backbone)
