"""A stacked BERT training pass (XRM/networks/stacked_bert.py) replayed from CUDA graphs, stage by stage.

Eight BERT-base runs' stacked step launches thousands of kernels, and the host launching them sets the
pace. A graph replays them in one launch, but it replays fixed shapes on fixed memory, and a stack's
tokens number differently at every step. So a step's tokens are laid out in ``T`` rows, their count
rounded up to a multiple of ``STACK_TOKEN_BUCKET``: the rows past the runs' own are fillers of the last
run (they attend to nothing, no text reads them, and their gradients are zero), and a stack meets only
a few ``T``. For each, every stage of the pass (what lies between two attentions: the embeddings, each
layer's output projection, feed-forward block and norms with the next layer's queries, keys and values,
and at the end the pooler and the head) is captured once and then replayed.

Attention runs eagerly between the replays, as in an eager pass: each run's texts attend in a call of
their own, drawing their attention dropout from the run's own generator (flash attention's kernel
draws only from the device's default generator, and a run's rows sit elsewhere at each step, which a
graph cannot follow). The hidden and head dropout masks are drawn eagerly too, each run's from its own
generator into the layout's buffers, in the eager pass's order: a run's dropout stays its own whatever
its stack, and a graphed pass draws what an eager one draws.

The layout's buffers (which run each row belongs to, the masks) are shared by every ``T`` (views of
buffers sized for the largest ``T`` met, with room to spare; a larger one drops the captures and makes
new buffers).
"""
import torch
from torch import nn

from XRM.networks.graphed_passes import AutocastPass, compiled_or_not
from XRM.networks.stacked_bert import PassRows, StackedBert
from XRM.networks.stacked_tokens import RowGroups, StackedTokens

#: a step's packed tokens are laid out in rows of a multiple of this: each multiple a stack meets is one capture
#: of every stage
STACK_TOKEN_BUCKET = 1024
#: the layout's buffers hold this many times the rows of the largest layout met when they are made
SPARE_ROWS = 1.25
#: the first passes' stage inputs kept for captures: of this many layouts at most (the oldest go first, ~1 GB
#: each for 8 BERT-base runs at batch 32; a layout whose inputs went is recorded again at its next pass)
PENDING_LAYOUTS = 2
#: the dtypes a gradient of a per-run table (each_rows_run) may come in: the layout holds a one-hot matrix in each
ONE_HOT_DTYPES = (torch.bfloat16, torch.float16, torch.float32, torch.float64)


def layout_rows(tokens: int) -> int:
    """The rows of the fixed layout of ``tokens`` packed tokens."""
    return -(-max(tokens, 1) // STACK_TOKEN_BUCKET) * STACK_TOKEN_BUCKET


class _Stage(nn.Module):
    """Stage ``index`` of ``model``'s pass (StackedBert.stage) as a module holding the parameters it reads, on
    the layout ``rows`` (set before each eager call and each capture: a capture bakes in the layout's buffers)."""

    def __init__(self, model: StackedBert, index: int) -> None:
        super().__init__()
        self.stacked = model
        self.index = index
        self.weights = nn.ParameterList([model.parameters[name] for name in model.stage_parameter_names(index)])
        self.rows: PassRows | None = None

    def forward(self, *inputs: torch.Tensor):
        """The stage's outputs on ``inputs``."""
        return self.stacked.stage(self.index, self.rows, *inputs)


class _Buffers:
    """Flat buffers the layouts of up to ``capacity`` rows are views of: each row's run, the runs' one-hot
    matrices (each_rows_run's backward, in every floating dtype a gradient may have) and the hidden dropout
    masks; and the runs' indices."""

    def __init__(self, model: StackedBert, capacity: int) -> None:
        head = model.parameters["head.weight"]
        runs, device = model.num_runs, head.device
        self.capacity = capacity
        self.runs = torch.arange(runs, device=device)
        self.run_of_row = torch.zeros(capacity, dtype=torch.int64, device=device)
        self.one_hots = {dtype: torch.zeros(runs * capacity, dtype=dtype, device=device) for dtype in ONE_HOT_DTYPES}
        self.mask_shape = (1 + 2 * model.config.num_hidden_layers, head.shape[-1])
        self.mask_row = self.mask_shape[0] * self.mask_shape[1]
        self.masks = (torch.zeros(capacity * self.mask_row, dtype=head.dtype, device=device)
                      if model.probabilities[0] else None)


class StackedGraphs:
    """``model``'s training pass on StackedTokens, its stages replayed from CUDA graphs (see the module
    docstring). A layout's first pass runs its stages eagerly and keeps their inputs; its next pass captures
    every stage at once (forward passes in order, backward passes in reverse, in one memory pool: as a pass
    replays them) and replays them from then on; ``compiled``: each stage compiled by torch.compile before it
    is captured (where the compiler fails: one warning, the stages captured uncompiled). ``replay=False``: the
    stages on the fixed layouts, eagerly, always (the layouts' arithmetic checked where no GPU is)."""

    def __init__(self, model: StackedBert, replay: bool = True, compiled: bool = False) -> None:
        self.model = model
        self.replay = replay
        self.compiled = compiled
        self.buffers: _Buffers | None = None
        self.layouts: dict[int, PassRows] = {}
        self.stages = [_Stage(model, index) for index in range(model.num_stages)]
        self.eager = [AutocastPass(stage) for stage in self.stages]  # never captured: a capture replaces a forward
        self.samples: dict[int, list] = {}  # by layout rows: each stage's inputs in the layout's first pass
        self.graphed: dict[int, tuple] = {}  # by layout rows: each stage's graphed callable
        self.pool = None
        self.starts = self.head_masks = None  # the pooled rows' buffers, made at the first pass
        self.pooled_groups: RowGroups | None = None  # the first pass's (the same at every step of a stack)

    @property
    def captures(self) -> int:
        """How many layouts have been captured (every stage of each)."""
        return len(self.graphed)

    def __call__(self, tokens: StackedTokens, generators: list[torch.Generator] | None = None) -> torch.Tensor:
        """Training logits [H, B, classes] of ``tokens`` (as ``model(tokens, generators)`` gives them)."""
        rows = layout_rows(len(tokens.positions))
        layout = self._layout(rows, tokens)
        self._load(layout, tokens, rows)  # first: a capture's warm-up passes read the layout (the last step's
        # text starts could point past this layout's rows)
        if self.replay and None not in self.samples.get(rows, [None]):  # a whole first pass recorded: capture
            for stage in self.stages:
                stage.rows = layout
            if self.pool is None:
                self.pool = torch.cuda.graph_pool_handle()
            self.graphed[rows], self.compiled = compiled_or_not(tuple(self.stages), tuple(self.samples.pop(rows)),
                                                                self.pool, self.compiled, "--compile_stack")
        self.model.hidden_masks(tokens, generators, out=layout.masks)
        extra = rows - len(tokens.positions)
        first_inputs = (torch.cat([tokens.tokens, tokens.tokens.new_zeros(extra, 3)]),
                        torch.cat([tokens.positions, tokens.positions.new_zeros(extra)]))
        return self.model.run_stages(self._stage, layout, tokens, generators, first_inputs)

    def _stage(self, index: int, layout: PassRows, *inputs: torch.Tensor):
        rows = len(layout.groups.run_of_row)
        if rows in self.graphed:
            return self.graphed[rows][index](*inputs)
        if self.replay:  # the layout's first pass: its inputs kept for the capture (which copies them)
            if rows not in self.samples and len(self.samples) == PENDING_LAYOUTS:
                del self.samples[next(iter(self.samples))]
            self.samples.setdefault(rows, [None] * len(self.stages))[index] = tuple(
                tensor.detach().requires_grad_(tensor.requires_grad) for tensor in inputs)
        self.stages[index].rows = layout
        return self.eager[index](*inputs)

    def _layout(self, rows: int, tokens: StackedTokens) -> PassRows:
        """The fixed layout of ``rows`` rows (views of the shared buffers; made, with the buffers, where new)."""
        if self.buffers is None or rows > self.buffers.capacity:
            # the old captures and buffers go before the new ones are made
            self.layouts, self.samples, self.graphed, self.pool, self.buffers = {}, {}, {}, None, None
            self.buffers = _Buffers(self.model, layout_rows(int(rows * SPARE_ROWS)))
        if self.starts is None:  # the pooled rows: the same at every step of a stack
            head = self.model.parameters["head.weight"]
            self.starts, self.pooled_groups = torch.zeros_like(tokens.starts), tokens.pooled_groups
            self.head_masks = torch.zeros(len(tokens.starts), 1, head.shape[-1], dtype=head.dtype,
                                          device=head.device) if self.model.probabilities[2] else None
        if rows not in self.layouts:
            buffers, runs = self.buffers, self.model.num_runs
            one_hots = {dtype: flat[: runs * rows].view(runs, rows) for dtype, flat in buffers.one_hots.items()}
            groups = RowGroups([], torch.zeros_like(tokens.groups.offsets), buffers.run_of_row[:rows], one_hots)
            masks = None if buffers.masks is None else buffers.masks[: rows * buffers.mask_row].view(rows, *buffers.mask_shape)
            self.layouts[rows] = PassRows(groups, self.starts, self.pooled_groups, masks, self.head_masks)
        return self.layouts[rows]

    def _load(self, layout: PassRows, tokens: StackedTokens, rows: int) -> None:
        """Put ``tokens``' rows in ``layout``: the fillers past them are the last run's."""
        real, groups = len(tokens.positions), layout.groups
        groups.ends = [*tokens.groups.ends[:-1], rows]
        groups.run_of_row[:real].copy_(tokens.groups.run_of_row)
        groups.run_of_row[real:].fill_(self.model.num_runs - 1)
        groups.offsets.copy_(tokens.groups.offsets)
        groups.offsets[-1:].fill_(rows)
        ones = self.buffers.runs[:, None] == groups.run_of_row[None]
        for one_hot in groups._one_hots.values():
            one_hot.copy_(ones)
        layout.starts.copy_(tokens.starts)
        # the masks' rows no run draws (the fillers', the pooled rows past a run's batch) are 0, as in an eager pass
        if layout.masks is not None:
            layout.masks[real:].zero_()
        if layout.head_masks is not None:
            layout.head_masks.zero_()
