"""Per-run operations on stacked weights [H, ...] over the packed rows of H runs (XRM/networks/stacked_tokens.py's
RowGroups says whose each row is): each run's linear layer on its own rows by one grouped matrix product
(``torch._grouped_mm``; one product per run where it cannot run), each row's run's entry of a per-run table
(a gather whose gradient is one product with the runs' one-hot rows), and a pass's weights cast to
autocast's dtype together (one multi-tensor copy each way). XRM/networks/stacked_bert.py builds BERT's pass on
them."""
import functools

import torch

from XRM.networks.stacked_tokens import RowGroups

#: the dtypes torch._grouped_mm multiplies on the CPU and on CUDA (compute capability 9.0 and later:
#: H100, H200), for rows of a multiple of 16 bytes; other cases (float64, a head of 2 classes, a torch or
#: GPU where a trial product fails: grouped_products_run) take one product per run
GROUPED_DTYPES = {"cpu": (torch.bfloat16, torch.float16, torch.float32), "cuda": (torch.bfloat16,)}


def compute_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matrix product of ``x`` runs in: autocast's where it is on, else ``x``'s."""
    kind = x.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else x.dtype


@functools.cache
def grouped_products_run(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether this torch multiplies ``dtype`` rows by grouped weights on ``device`` (a trial product of two
    groups): torch._grouped_mm is private, absent from older releases, and takes a GPU of compute capability
    9.0 or later and, on the CPU, a newer torch."""
    if dtype not in GROUPED_DTYPES.get(device.type, ()) or not hasattr(torch, "_grouped_mm"):
        return False
    try:
        rows = torch.ones(32, 16, dtype=dtype, device=device)
        weights = torch.ones(2, 16, 16, dtype=dtype, device=device)
        offsets = torch.tensor([16, 32], dtype=torch.int32, device=device)
        return bool((torch._grouped_mm(rows, weights, offs=offsets) == 16).all())
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def _grouped_products_known(device: torch.device, dtype: torch.dtype) -> bool:
    """grouped_products_run's answer, which torch.compile takes as a constant (its trial product is not traced)."""
    return grouped_products_run(device, dtype)


if hasattr(torch, "compiler") and hasattr(torch.compiler, "assume_constant_result"):
    _grouped_products_known = torch.compiler.assume_constant_result(_grouped_products_known)


def _groupable(rows: torch.Tensor, weights: torch.Tensor) -> bool:
    """Whether torch._grouped_mm multiplies ``rows`` by ``weights`` here (see grouped_products_run)."""
    aligned = all(size * rows.element_size() % 16 == 0 for size in weights.shape[1:])
    return aligned and _grouped_products_known(rows.device, rows.dtype)


class _EachRowsRun(torch.autograd.Function):
    """Each row's run's entry of a per-run table: a gather forward; backward, each run's rows summed by one
    matrix product with the runs' one-hot rows (the gather's own backward adds every row into its run's entry
    atomically: thousands of rows into a few entries contend, and bf16 atomics round at every addition)."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, run_of_row: torch.Tensor, one_hot: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(one_hot)
        return table.index_select(0, run_of_row)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (one_hot,) = ctx.saved_tensors
        return one_hot.to(gradient.dtype) @ gradient, None, None


def each_rows_run(table: torch.Tensor, groups: RowGroups) -> torch.Tensor:
    """Rows [N, ...] of a per-run table [H, ...]: row i is the entry of row i's run (``groups``)."""
    needed = table.requires_grad and torch.is_grad_enabled()  # the one-hot rows serve the backward pass only
    return _EachRowsRun.apply(table, groups.run_of_row, groups.one_hot(table.dtype) if needed else None)


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, groups: RowGroups,
                   grouped: bool = True) -> torch.Tensor:
    """Each run's linear layer on its own rows: x [N, in] (run h's rows as ``groups`` says), weight
    [H, out, in], bias [H, out] -> [N, out], in autocast's dtype where it is on. One grouped product
    where it can (``grouped``), else one product per run."""
    dtype = compute_dtype(x)
    rows, weights = x.to(dtype), weight.to(dtype).transpose(1, 2)
    if grouped and _groupable(rows, weights):
        product = torch._grouped_mm(rows, weights, offs=groups.offsets)
    else:
        product = torch.cat([rows[part] @ weights[run] for run, part in enumerate(groups.slices())])
    return product + each_rows_run(bias.to(dtype), groups)


class CastTogether(torch.autograd.Function):
    """Tensors cast to ``dtype`` by one multi-tensor copy; backward, their gradients cast back the same way
    (cast one by one, every weight of a stack costs a kernel launch forward and another back)."""

    @staticmethod
    def forward(ctx, dtype: torch.dtype, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        ctx.dtypes = [tensor.dtype for tensor in tensors]
        casts = [torch.empty_like(tensor, dtype=dtype, memory_format=torch.contiguous_format) for tensor in tensors]
        torch._foreach_copy_(casts, [tensor.contiguous() for tensor in tensors])
        return tuple(casts)

    @staticmethod
    def backward(ctx, *gradients: torch.Tensor | None) -> tuple[torch.Tensor | None, ...]:
        # contiguous gradients in one copy; others (a weight's, transposed by its product) each by its own,
        # straight into the contiguous layout its parameter's gradient keeps (no second copy to reorder it)
        casts: list[torch.Tensor | None] = [None] * len(gradients)
        together = []
        for index, gradient in enumerate(gradients):
            if gradient is not None and gradient.is_contiguous():
                together.append(index)
            elif gradient is not None:
                casts[index] = gradient.to(ctx.dtypes[index], memory_format=torch.contiguous_format)
        if together:
            copies = [torch.empty_like(gradients[index], dtype=ctx.dtypes[index]) for index in together]
            torch._foreach_copy_(copies, [gradients[index] for index in together])
            for index, copy in zip(together, copies):
                casts[index] = copy
        return None, *casts


def cast_together(dtype: torch.dtype, tensors: list[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """``tensors`` cast to ``dtype`` by one multi-tensor copy, their gradients cast back likewise (CastTogether)."""
    return CastTogether.apply(dtype, *tensors)
