"""Training throughput of H BERT-base runs trained as one stack, in real tokens per second (all runs together).

python benchmarks/stacked_text_training.py --device cuda                     # H = 1, 4, 8 stacked, then one run today's way
python benchmarks/stacked_text_training.py --device cpu --tiny --steps 3 --warmup 1 --texts 512   (checks that it runs)

Each run is a BERT-base classifier (random weights from bert-base-uncased's config, as
benchmarks/text_training.py builds them) training on texts of CivilComments-like lengths
(log-normal, median 50, sigma 0.8, clipped to [3, 220]; benchmarks/text_training.py), each run
drawing its own batches. A stacked step (XRM/networks/stacked_bert.py) is: every run's batch
packed into the stack's token count, the forward pass of all runs at once in bf16 autocast, each
run's mean cross-entropy (summed: each run's gradient is its own), the backward pass, and each
run's AdamW (torch's fused kernel on CUDA) with its own learning rate, weight decay and schedule,
over views of the stacked tensors (XRM/engine/text_stack.py). Dropout as BERT's (0.1), each run
drawing from its own generator. ``--cuda_graphs``: the stack's pass replayed from CUDA graphs, stage by
stage, on fixed layouts (XRM/networks/stacked_bert_graphs.py), warmed up until no new layout is captured;
``--compile_stack``: each stage compiled by torch.compile before its capture.
``--single`` times today's path for one run instead: TextClassifier's packed
pass replayed from CUDA graphs (XRM/networks/packed_bert_graphs.py), fused AdamW, timed once its token
counts are captured (a run's steady state: its first steps capture, the rest replay).

Runs of different batch sizes (``--paper_batch_sizes``: each drawn 2^U(4, 6), 16 to 64 texts, as
the paper draws them) share a stack without padding to the largest: each run's packed tokens are
its real ones rounded up to a multiple of 16 (the share of fillers is printed).
"""
import argparse
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without PYTHONPATH
sys.path.insert(0, str(Path(__file__).resolve().parent))
from text_training import MAX_LENGTH, TINY_BERT_SIZES, civilcomments_like_lengths  # noqa: E402

from XRM.common.devices import resolve_device  # noqa: E402
from XRM.engine.memory_budget import network_bytes  # noqa: E402
from XRM.engine.optimizers import build_optimizer  # noqa: E402
from XRM.networks.classifiers import TextClassifier  # noqa: E402
from XRM.engine.text_stack import TextStack  # noqa: E402
from XRM.networks.jagged_attention import jagged_attention_runs  # noqa: E402
from XRM.networks.stacked_tokens import packed_count  # noqa: E402
from XRM.networks.token_batches import TokenRows  # noqa: E402

CLASSES = 2
LR, WEIGHT_DECAY = 1e-5, 1e-4


def token_rows(count: int, vocabulary: int, device: torch.device) -> TokenRows:
    """``count`` random texts of CivilComments-like lengths as a token cache holds them: [count, 220, 3]."""
    lengths = torch.from_numpy(civilcomments_like_lengths(count))
    mask = torch.arange(MAX_LENGTH)[None] < lengths[:, None]
    ids = torch.randint(1000, vocabulary, (count, MAX_LENGTH)) * mask
    return TokenRows(torch.stack([ids, mask.long(), torch.zeros_like(ids)], dim=-1).int().to(device))


def draw_batch(rows: TokenRows, size: int, generator: torch.Generator):
    """A run's batch of ``size`` texts drawn uniformly (its own generator, on the CPU)."""
    index = torch.randint(len(rows.lengths), (size,), generator=generator)
    return rows.batch(_to_device(index, rows.tokens.device), index)


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor`` copied to ``device`` without waiting for it (from pinned memory)."""
    return tensor.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else tensor


def classifiers(count: int, config, device: torch.device) -> list[TextClassifier]:
    """``count`` classifiers with random BERT weights (each its own draw), as the runs of a sweep; dropout
    before the head as BERT's own (``config.hidden_dropout_prob``)."""
    from transformers import BertModel

    return [TextClassifier(BertModel(config), CLASSES, config.hidden_dropout_prob).to(device) for _ in range(count)]


def time_stack(runs: int, batch_sizes: list[int], config, rows: TokenRows, steps: int, warmup: int,
               grouped: bool, profile: bool = False, cuda_graphs: bool = False,
               compiled: bool = False) -> tuple[float, float, int]:
    """Real tokens per second of ``runs`` stacked runs, the mean share of filler tokens in their stack, and the
    layouts captured (``cuda_graphs``: the training pass replayed from CUDA graphs where it can be, its stages
    compiled first where ``compiled``; warmed up as
    ``warm_up`` says); ``profile``: also print where the timed steps' time went (torch.profiler, top operators)."""
    device = rows.tokens.device
    hparams = {"optimizer": "adamw", "lr": LR, "weight_decay": WEIGHT_DECAY, "num_steps": 60001, "lr_schedule": "text"}
    stack = TextStack(classifiers(runs, config, device), [hparams] * runs, list(range(100, 100 + runs)), device,
                      grouped, cuda_graphs or compiled, compiled)
    draws = [torch.Generator().manual_seed(run) for run in range(runs)]

    def step() -> tuple[int, float]:
        batches = [draw_batch(rows, size, generator) for size, generator in zip(batch_sizes, draws)]
        labels = [_to_device(torch.randint(CLASSES, (size,), generator=generator), device)
                  for size, generator in zip(batch_sizes, draws)]
        logits = stack.forward(batches)
        stack.step(sum(F.cross_entropy(logits[run, : len(y)], y) for run, y in enumerate(labels)))
        real = sum(batch.real_tokens for batch in batches)
        return real, 1 - real / sum(packed_count(batch.real_tokens) for batch in batches)

    captures = lambda: stack.graphs.captures if stack.graphs is not None else 0  # noqa: E731
    warm_up(step, captures, warmup, stack.graphs is not None)
    profiler = torch.profiler.profile(activities=_activities(device)) if profile else nullcontext()
    _synchronize(device)
    profiler.__enter__()
    start, tokens, fillers = time.perf_counter(), 0.0, 0.0
    for _ in range(steps):
        real, filler_share = step()
        tokens += real
        fillers += filler_share
    _synchronize(device)
    seconds = time.perf_counter() - start
    profiler.__exit__(None, None, None)
    if profile:
        _print_profile(profiler, device, steps)
        _print_phases(stack, batch_sizes, rows, draws, steps)
        _print_update_floor(stack, tokens / steps, device)
    return tokens / seconds, fillers / steps, captures()


def _print_phases(stack: TextStack, batch_sizes: list[int], rows: TokenRows, draws: list[torch.Generator],
                  steps: int) -> None:
    """Each phase of a step alone, the device idle at its start: the host's time to launch its work, and the
    time until the device has done it (mean of ``steps`` steps). A phase whose two times are close is set by the
    host's launches; one that takes the device much longer than its launches, by the device's arithmetic."""
    device = rows.tokens.device
    totals: dict[str, list[float]] = {}

    def phase(name: str, work: Callable[[], object]) -> object:
        _synchronize(device)
        start = time.perf_counter()
        result = work()
        launched = time.perf_counter()
        _synchronize(device)
        done = time.perf_counter()
        total = totals.setdefault(name, [0.0, 0.0])
        total[0] += (launched - start) * 1e3 / steps
        total[1] += (done - start) * 1e3 / steps
        return result

    no_loss = torch.zeros((), device=device, requires_grad=True)  # the update alone: the gradients are there
    for _ in range(steps):
        batches = phase("draw batches", lambda: [draw_batch(rows, size, g) for size, g in zip(batch_sizes, draws)])
        labels = [_to_device(torch.randint(CLASSES, (size,), generator=g), device)
                  for size, g in zip(batch_sizes, draws)]
        logits = phase("forward", lambda: stack.forward(batches))
        loss = phase("loss", lambda: sum(F.cross_entropy(logits[run, : len(y)], y) for run, y in enumerate(labels)))
        phase("backward", loss.backward)
        phase("update", lambda: stack.step(no_loss))
    print("phase: host ms launching it (device idle at its start) / ms until the device has done it")
    for name, (launched, done) in totals.items():
        print(f"  {name:14s} {launched:7.1f} {done:7.1f}")


#: the issue's target for 8 stacked BERT-base runs at batch 32, in real tokens a second
TARGET_TOKENS_PER_SECOND = 400_000
#: bytes a fused AdamW moves per float32 parameter: value, gradient and both moments read; value and moments written
ADAMW_BYTES_PER_PARAMETER = 7 * 4


def _print_update_floor(stack: TextStack, real_tokens_per_step: float, device: torch.device) -> None:
    """The least time the runs' AdamW updates can take on this device (their bytes at its copy bandwidth, a
    1 GiB copy timed), beside the step time that the target's real tokens a second allows at this stack's tokens."""
    parameters = sum(parameter.numel() for parameter in stack.model.parameters.values())
    source = torch.empty(2 ** 28, device=device)
    copy = torch.empty_like(source)
    copies = 10
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(copies):
        copy.copy_(source)
    _synchronize(device)
    bandwidth = 2 * source.numel() * source.element_size() * copies / (time.perf_counter() - start)
    moved = parameters * ADAMW_BYTES_PER_PARAMETER
    print(f"the {stack.num_runs} runs' AdamW updates move {moved / 1e9:.1f} GB a step ({parameters / 1e6:.0f}M "
          f"parameters): at least {moved / bandwidth * 1e3:.1f} ms at this device's copy bandwidth "
          f"({bandwidth / 1e9:.0f} GB/s); {TARGET_TOKENS_PER_SECOND / 1000:.0f}k real tokens/s at "
          f"{real_tokens_per_step:.0f} real tokens a step allows {real_tokens_per_step / TARGET_TOKENS_PER_SECOND * 1e3:.1f} "
          f"ms a step")


def _activities(device: torch.device) -> list:
    """What the profiler records: the host's operators, and the GPU's kernels on CUDA."""
    cuda = [torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else []
    return [torch.profiler.ProfilerActivity.CPU, *cuda]


def _print_profile(profiler, device: torch.device, steps: int) -> None:
    """The top operators by device time (host time on a CPU), and the kernels launched per step."""
    averages = profiler.key_averages()
    sort = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(averages.table(sort_by=sort, row_limit=30, max_name_column_width=60))
    if device.type == "cuda":
        kernels = sum(event.count for event in averages if event.device_type == torch.autograd.DeviceType.CUDA)
        print(f"kernels on the GPU: {kernels / steps:.0f} a step")


#: one run today's way warms up until this many steps in a row captured no new token count (at most
#: MAX_CAPTURE_WARMUP steps): its timed steps then replay graphs only, as a run does after its first steps
QUIET_STEPS, MAX_CAPTURE_WARMUP = 20, 400


def warm_up(step: Callable[[], object], captures: Callable[[], int], warmup: int, graphed: bool) -> None:
    """``warmup`` steps, then, where the training pass is ``graphed``, steps until QUIET_STEPS in a row captured
    nothing new (at most MAX_CAPTURE_WARMUP): the timed steps replay graphs only, as a run's do after its first."""
    for _ in range(warmup):
        step()
    quiet = 0
    for _ in range(MAX_CAPTURE_WARMUP if graphed else 0):
        before = captures()
        step()
        quiet = quiet + 1 if captures() == before else 0
        if quiet == QUIET_STEPS:
            break


def time_single(batch_size: int, config, rows: TokenRows, steps: int, warmup: int) -> tuple[float, int]:
    """Real tokens per second of one run trained today's way (packed tokens, CUDA graphs on a GPU), after
    ``warmup`` steps and, with graphs, until no new token count has been captured for QUIET_STEPS steps; and
    how many counts it captured."""
    device = rows.tokens.device
    network = classifiers(1, config, device)[0]
    network.use_cuda_graphs()
    optimizer = build_optimizer(network, "adamw", LR, WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(0)

    def step() -> int:
        batch = draw_batch(rows, batch_size, generator)
        labels = _to_device(torch.randint(CLASSES, (batch_size,), generator=generator), device)
        F.cross_entropy(network(batch), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch.real_tokens

    captures = lambda: network.graphs.captures if network.graphs is not None else 0  # noqa: E731
    warm_up(step, captures, warmup, network.graphs is not None and device.type == "cuda")
    _synchronize(device)
    start, tokens = time.perf_counter(), 0
    for _ in range(steps):
        tokens += step()
    _synchronize(device)
    return tokens / (time.perf_counter() - start), captures()


def _attention_path(device: torch.device) -> str:
    """How the stack attends on ``device`` (XRM/networks/stacked_bert.py): packed texts where this torch runs
    jagged attention in the stack's compute dtype, else texts spread to the token cache's width."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    return "packed (jagged)" if jagged_attention_runs(device, dtype) else "spread to the token cache's width"


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    """Print real tokens per second for each stack size (or one run today's way)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="cuda, cpu or auto")
    parser.add_argument("--runs", default="1,4,8", help="stack sizes to time, comma-separated")
    parser.add_argument("--batch_size", type=int, default=32, help="texts per run per step")
    parser.add_argument("--paper_batch_sizes", action="store_true", help="each run's batch size drawn as the paper "
                        "draws it (2^U(4, 6)) instead of --batch_size")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=8, help="untimed steps first")
    parser.add_argument("--texts", type=int, default=16384, help="generated texts to draw batches from")
    parser.add_argument("--single", action="store_true", help="also time one run on today's path (packed, CUDA graphs)")
    parser.add_argument("--no_dropout", action="store_true", help="train without dropout (BERT's is 0.1): attention "
                        "of all runs in one call")
    parser.add_argument("--per_run_products", action="store_true", help="every linear layer as one matrix product "
                        "per run instead of one grouped product")
    parser.add_argument("--cuda_graphs", action="store_true", help="on a GPU, the stack's training pass replayed "
                        "from CUDA graphs, stage by stage (XRM/networks/stacked_bert_graphs.py; not yet run on a GPU, "
                        "so main.py's stacks stay eager)")
    parser.add_argument("--compile_stack", action="store_true", help="with --cuda_graphs (implied): each stage "
                        "compiled by torch.compile before it is captured (the capture's seconds include it)")
    parser.add_argument("--tiny", action="store_true", help="a 1-layer, 32-wide BERT: checks the script on a CPU")
    parser.add_argument("--profile", action="store_true", help="print where the largest stack's timed steps spend "
                        "their time (torch.profiler's top operators), then each phase of a step timed alone (host "
                        "launches against the device's work)")
    args = parser.parse_args()
    from transformers import BertConfig

    device = resolve_device(args.device)
    dropout = {"hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0} if args.no_dropout else {}
    config = BertConfig(**(TINY_BERT_SIZES if args.tiny else {}), **dropout)
    rows = token_rows(args.texts, config.vocab_size, device)
    print(f"device {device}, {'tiny BERT' if args.tiny else 'BERT-base'}, {args.texts} texts (mean "
          f"{rows.lengths.float().mean():.1f} tokens), {args.steps} timed steps after {args.warmup}, dropout "
          f"{config.hidden_dropout_prob}, linear layers {'per run' if args.per_run_products else 'grouped'}, "
          f"attention {_attention_path(device)}")
    stack_sizes = [int(value) for value in args.runs.split(",")]
    # the engine's memory estimate of a run (XRM/engine/memory_budget.py), beside the measured peak on CUDA
    template, host_rows = (classifiers(1, config, torch.device("cpu"))[0], rows.tokens.cpu()) \
        if device.type == "cuda" else (None, None)
    for runs in stack_sizes:
        rng = np.random.default_rng(runs)
        sizes = ([int(2 ** rng.uniform(4, 6)) for _ in range(runs)] if args.paper_batch_sizes
                 else [args.batch_size] * runs)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        profile = args.profile and runs == max(stack_sizes)
        speed, fillers, captured = time_stack(runs, sizes, config, rows, args.steps, args.warmup,
                                              not args.per_run_products, profile, args.cuda_graphs,
                                              args.compile_stack)
        memory = ""
        if device.type == "cuda":
            estimate = sum(network_bytes(template, 1, size, host_rows, torch.float32, device) for size in sizes)
            memory = (f", GPU memory at most {torch.cuda.max_memory_allocated(device) / 2 ** 30:.1f} GiB (the "
                      f"engine's estimate: {estimate / 2 ** 30:.1f} GiB)")
        graphs = (f"CUDA graphs{', compiled' if args.compile_stack else ''}, {captured} layouts captured"
                  if captured else "eager")
        print(f"{runs} stacked runs ({graphs}), batch sizes {sizes}: {speed / 1000:.1f}k real tokens/s together, "
              f"{speed / runs / 1000:.1f}k per run; filler tokens {fillers:.1%} of the packed ones{memory}")
        torch.cuda.empty_cache() if device.type == "cuda" else None
    if args.single:
        speed, captured = time_single(args.batch_size, config, rows, args.steps, args.warmup)
        graphs = f"CUDA graphs on, {captured} token counts captured before the timed steps" \
            if device.type == "cuda" else "CUDA graphs off"
        print(f"one run today's way (packed, {graphs}), batch {args.batch_size}: {speed / 1000:.1f}k real tokens/s")


if __name__ == "__main__":
    main()
