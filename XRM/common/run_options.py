"""The options every run of a sweep shares, declared once (importable without torch).

:class:`TrainingOptions` is their one declaration: a run (XRM.runs.spec.RunSpec) and a sweep
(XRM.runs.sweep.SweepSpec) inherit it, the command lines' arguments are made from it
(:func:`add_option_arguments`: main.py and reproduce.py), and a sweep hands them to its runs
by name (:func:`shared_options`). Adding an option here gives it to all of them. The option
values the core reads too (input kinds, default backbones, precisions) are declared here first.
"""
import argparse
import dataclasses
from dataclasses import dataclass, field
from typing import Any

#: what a run may ask a dataset to train on; "auto" lets the dataset choose
INPUT_CHOICES = ("auto", "features", "images")
DEFAULT_IMAGE_BACKBONE = "resnet50"
DEFAULT_TEXT_MODEL = "bert-base-uncased"
#: environment variable naming the default text model (a hub name or a local folder)
TEXT_MODEL_VARIABLE = "XRM_TEXT_MODEL"
#: the floating-point precisions a run can train in
DTYPES = ("float32", "float64")
#: seconds between two checkpoints of a run (0: at every evaluation)
DEFAULT_CHECKPOINT_SECONDS = 60.0


def _option(default: Any, help: str, flag: str | None = None, cli_default: Any = dataclasses.MISSING,
            **argparse_options: Any) -> Any:
    """A field with its command-line form: ``--<name>`` (or ``flag``), the help, and argparse's
    options; ``cli_default`` where the command line's default is spelled otherwise (resolved later)."""
    metadata = {"help": help, "flag": flag, "argparse": argparse_options,
                "cli_default": default if cli_default is dataclasses.MISSING else cli_default}
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class TrainingOptions:
    """How the runs of a sweep train: data, device, precision, inputs, backbones and checkpoints."""

    data_path: str = _option("./data", "folder holding the datasets (see download.py)")
    quick_run: bool = _option(False, "debugging: default hyper-parameters and at most 201 steps",
                              action="store_true")
    adam: bool = _option(False, "train with Adam instead of the dataset's optimiser", action="store_true")
    device: str = _option("auto", "auto (CUDA when available), cpu, cuda, cuda:1, ...")
    inputs: str = _option("auto", "image datasets: train on precomputed 'features' or fine-tune on 'images'; 'auto' "
                                  "as the reference: features in phase 1 (when features.pt exists), images in phase 2, "
                                  "Waterbirds features in both", choices=INPUT_CHOICES)
    image_backbone: str | None = _option(None, "torchvision model fine-tuned on images (default resnet50; resnet18 for "
                                               "quick checks)", cli_default=DEFAULT_IMAGE_BACKBONE, metavar="NAME")
    text_model: str | None = _option(None, f"text model and tokenizer: a Hugging Face name or a local folder "
                                           f"(default: ${TEXT_MODEL_VARIABLE}, else bert-base-uncased)",
                                     metavar="NAME_OR_DIR")
    backbone_weights: str = _option("pretrained", "'none' starts the backbone from random weights (debugging, "
                                                  "benchmarks; no download)", choices=["pretrained", "none"])
    # DataLoader workers; None: chosen where the run executes (XRM.engine.batches)
    num_workers: int | None = _option(None, "DataLoader worker processes reading images from disk (default auto: on a "
                                            "GPU the run's CPU cores less 4, at least 1; on the CPU 4)",
                                      cli_default="auto", metavar="N|auto")
    dtype: str = _option("float32", "precision of the small models' training (float64: exact comparisons, on the CPU)",
                         choices=DTYPES)
    # on a GPU, replay a small stack's step / a packed BERT's pass / a ResNet's pass as CUDA graphs
    cuda_graphs: bool = _option(True, "on a GPU, launch every kernel of each step (default: replay a small stack's "
                                      "step, and a packed BERT's or a ResNet's forward and backward pass, as CUDA "
                                      "graphs)",
                                flag="--no_cuda_graphs", action="store_false")
    compile_backbone: bool = _option(False, "on a GPU, compile a ResNet's training pass with torch.compile before "
                                            "its CUDA graphs are captured: a compilation once per run, then 1.4x "
                                            "the images a second at batch 128 on an H100; where compilation fails, "
                                            "the uncompiled pass with a warning (default: captured uncompiled)",
                                     action="store_true")
    checkpoint_seconds: float = _option(DEFAULT_CHECKPOINT_SECONDS, "save each run's checkpoint at the first evaluation "
                                        "S seconds after the last one (0: at every evaluation); a resumed run loses at "
                                        "most S seconds of training", type=float, metavar="S")
    test_every_evaluation: bool = _option(False, "evaluate the test split at every evaluation (full test curves); by "
                                                 "default only at the evaluations a selection rule may pick (where "
                                                 "va_wga, va_gi_wga or va_avg_acc reaches its best so far), the "
                                                 "other records holding null test metrics", action="store_true")
    tensorboard: bool = _option(False, "also write each run's records as TensorBoard scalars, one folder per run: "
                                       "<run folder>/tensorboard/hpcomb_<k>_seed<s>/ (needs the tensorboard package)",
                                action="store_true")
    stack_text_runs: bool = _option(False, "experimental, no faster yet on an H100 than runs alone: train the "
                                           "BERT runs of one text dataset and algorithm kind together as one stack "
                                           "(one network per run, or XRM's twins; not the two-network algorithms "
                                           "that freeze one network), each with its own hyper-parameters, batches "
                                           "and dropout generators (split by --stack_size and memory); by default "
                                           "each text run trains alone", action="store_true")
    # the command line's --hparams JSON object, parsed (XRM.cli.entry_point.parse_hparams)
    hparams_overrides: dict[str, Any] = field(default_factory=dict, hash=False)
    resume: bool = False  # main.py --resume; reproduce.py always resumes
    pair_phase_1_seeds: bool = False  # phase-1 outputs from this seed's phase-1 run (else seed 0's)


def command_line_options() -> list[dataclasses.Field]:
    """The options both sweep commands take as arguments of their own name, in declaration order."""
    return [f for f in dataclasses.fields(TrainingOptions) if "help" in f.metadata]


def add_option_arguments(parser: argparse.ArgumentParser | Any) -> None:
    """One argument per command-line option of :class:`TrainingOptions` (``--<name>``)."""
    for option in command_line_options():
        flag = option.metadata["flag"] or f"--{option.name}"
        parser.add_argument(flag, dest=option.name, default=option.metadata["cli_default"],
                            help=option.metadata["help"], **option.metadata["argparse"])


def shared_options(source: Any) -> dict[str, Any]:
    """Every :class:`TrainingOptions` field's value in ``source`` (parsed arguments, a SweepSpec, ...)
    that has one, by name (the overrides copied)."""
    values = {f.name: getattr(source, f.name) for f in dataclasses.fields(TrainingOptions) if hasattr(source, f.name)}
    if "hparams_overrides" in values:
        values["hparams_overrides"] = dict(values["hparams_overrides"])
    return values
