"""H text runs' BERT classifiers trained as one stack, behind the interface ModuleStack gives one run.

``TextStack`` holds H runs' ``TextClassifier``s as a StackedBert (XRM/networks/stacked_bert.py):
one forward and one backward pass for all runs. Everything else stays each run's own: its
optimiser (torch.optim, fused on CUDA, over views of its slices of the stacked tensors, with its
learning rate and weight decay; a fused AdamW's update runs its kernel with the gradients handed
over, XRM/engine/fused_adamw.py), its learning-rate schedule, its dropout generator (seeded from
the run's seed), its best model. A run's model, optimiser and schedule states are in the layout
ModuleStack writes for the run alone (its classifier's state_dict; the optimiser's state_dict
over its parameters in decay_parameter_groups' order; the scheduler's), plus its dropout
generator's state, so a run's checkpoint reads back whether it trained alone or stacked.

Evaluation takes what ModuleStack.predict takes (a split's token rows), prepared once by
XRM/engine/evaluation_inputs.py, through ``EveryRun``: the stack seen there as one network.
"""
import torch

from XRM.engine.evaluation_inputs import EvaluationInputs, TokenNetwork
from XRM.engine.fused_adamw import fused_adamw_step
from XRM.engine.model_stacks import BACKBONE_EVALUATION_BATCH
from XRM.engine.optimizers import SGD_MOMENTUM, build_lr_scheduler, decay_groups, optimizer_of_groups
from XRM.networks.classifiers import TextClassifier, bf16_on_cuda
from XRM.networks.per_run_ops import grouped_products_run
from XRM.networks.stacked_bert import StackedBert
from XRM.networks.stacked_bert_graphs import StackedGraphs
from XRM.networks.stacked_tokens import StackedTokens
from XRM.networks.token_batches import TokenBatch

#: the key of a run's dropout generator state in its optimiser state
DROPOUT_GENERATOR = "dropout_generator"


class EveryRun(TokenNetwork):
    """A StackedBert as evaluation_inputs.py sees one network: token rows [n, L, 3] (or a TokenBatch) in,
    every run's logits [n, H, classes] out, without dropout. A batch's rows are cut into H parts, each
    passed through every run: a pass holds as many tokens as one run's pass over the whole batch."""

    def __init__(self, model: StackedBert) -> None:
        super().__init__()
        self.stacked = model

    def forward(self, x: torch.Tensor | TokenBatch) -> torch.Tensor:
        """Every run's logits on the rows of ``x`` (a tensor is measured first: one synchronisation)."""
        batch = x if isinstance(x, TokenBatch) else TokenBatch.measured(x)
        runs, rows = self.stacked.num_runs, len(batch.lengths)
        size = max(1, -(-rows // runs))
        logits = []
        for start in range(0, rows, size):
            part = slice(start, start + size)
            texts = TokenBatch(batch.tokens[part], batch.lengths[part], batch.device_lengths[part], batch.right_padded)
            with bf16_on_cuda(texts.tokens):
                logits.append(self.stacked(StackedTokens.of([texts] * runs))[:, : len(texts.lengths)])
        return torch.cat(logits, dim=1).transpose(0, 1)


class TextStack:
    """H runs' BERT text classifiers trained as one stack (see the module docstring); ``hparams[h]`` and
    ``seeds[h]`` are run h's (optimizer, lr, weight_decay, num_steps, lr_schedule; the seed of its dropout);
    ``grouped_products``: StackedBert's; ``cuda_graphs``: on a GPU where grouped products run, the training
    pass replayed from CUDA graphs (XRM/networks/stacked_bert_graphs.py), its stages compiled first where
    ``compiled``."""

    def __init__(self, classifiers: list[TextClassifier], hparams: list[dict], seeds: list[int],
                 device: torch.device, grouped_products: bool = True, cuda_graphs: bool = False,
                 compiled: bool = False) -> None:
        self.model = StackedBert([classifier.to(device) for classifier in classifiers], grouped_products)
        # graphs replay the layout's group ends from the device: only where grouped products take them from there
        graphed = cuda_graphs and device.type == "cuda" and grouped_products and grouped_products_run(device, torch.bfloat16)
        self.graphs = StackedGraphs(self.model, compiled=compiled) if graphed else None
        self.every_run = EveryRun(self.model)
        self.evaluation_inputs = EvaluationInputs(device, None)
        self.num_runs = len(classifiers)
        self.generators = [torch.Generator(device).manual_seed(seed) for seed in seeds]
        stacked = list(self.model.parameters.values())
        self.views = [[parameter.detach()[run] for parameter in stacked] for run in range(self.num_runs)]
        self.optimizers, self.schedulers = [], []
        for views, run_hparams in zip(self.views, hparams):
            groups = decay_groups(views, run_hparams["weight_decay"])
            optimizer = optimizer_of_groups(groups, run_hparams["optimizer"], run_hparams["lr"],
                                            run_hparams.get("sgd_momentum", SGD_MOMENTUM))
            self.optimizers.append(optimizer)
            self.schedulers.append(build_lr_scheduler(optimizer, run_hparams.get("lr_schedule", "constant"),
                                                      run_hparams["num_steps"]))
        self.best = [self.model_state(run) for run in range(self.num_runs)]

    def forward(self, batches: list[TokenBatch]) -> torch.Tensor:
        """Training logits [H, B, classes] of each run's batch (``batches[h]``: run h's; B: the largest batch,
        run h's rows past its own batch mean nothing)."""
        self.model.train(True)
        tokens = StackedTokens.of(batches)
        if self.graphs is not None:  # captured with their own autocast
            return self.graphs(tokens, self.generators)[:, : max(tokens.run_rows)]
        with bf16_on_cuda(batches[0].tokens):
            return self.model(tokens, self.generators)[:, : max(tokens.run_rows)]

    @torch.inference_mode()
    def predict(self, inputs: torch.Tensor, once: bool = False) -> torch.Tensor:
        """Logits [H, n, classes] of every run on the token rows ``inputs`` [n, L, 3], without dropout: as
        ModuleStack.predict, the rows prepared at their first evaluation and reused, unless ``once``."""
        self.model.train(False)
        logits = self.evaluation_inputs.predict(inputs, self.every_run, BACKBONE_EVALUATION_BATCH, once)
        return logits.transpose(0, 1)

    def step(self, loss: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Backpropagate ``loss`` (the sum of the runs' own losses) and update every run with its own
        optimiser and schedule (``active``: ModuleStack's twins mask; a text run has one network, so None)."""
        if active is not None:
            raise ValueError("a TextStack's runs have one network each: no twins to freeze")
        loss.backward()
        stacked = list(self.model.parameters.values())
        # each stacked gradient cut into its runs' by one call, not one indexing per run
        gradients = [[None] * self.num_runs if parameter.grad is None else parameter.grad.unbind(0)
                     for parameter in stacked]
        for run, (views, optimizer, scheduler) in enumerate(zip(self.views, self.optimizers, self.schedulers)):
            given = {id(view): run_gradients[run] for view, run_gradients in zip(views, gradients)
                     if run_gradients[run] is not None}
            if not fused_adamw_step(optimizer, given):  # else (a first step, another optimiser) torch's own step
                for view, run_gradients in zip(views, gradients):
                    view.grad = run_gradients[run]
                optimizer.step()
                for view in views:
                    view.grad = None
            scheduler.step()
        for parameter in stacked:
            parameter.grad = None

    def learning_rates(self) -> list[float]:
        """Each run's learning rate now, as its schedule has set it."""
        return [float(scheduler.get_last_lr()[0]) for scheduler in self.schedulers]

    def model_state(self, member: int) -> dict[str, torch.Tensor]:
        """Run ``member``'s classifier as its own state_dict (CPU copies)."""
        return {name: value.cpu() for name, value in self.model.run_state(member).items()}

    def best_model_state(self, member: int) -> dict[str, torch.Tensor]:
        """Run ``member``'s classifier at its best evaluation so far."""
        return self.best[member]

    def keep_best(self, improved: torch.Tensor) -> None:
        """Remember the classifiers of the runs set in ``improved`` [H]."""
        for run in torch.nonzero(improved.cpu()).flatten().tolist():
            self.best[run] = self.model_state(run)

    def optimizer_state(self, member: int) -> dict:
        """Run ``member``'s optimiser, schedule and dropout generator states."""
        return {"optimizer": self.optimizers[member].state_dict(), "lr_scheduler": self.schedulers[member].state_dict(),
                DROPOUT_GENERATOR: self.generators[member].get_state()}

    def load_member(self, member: int, model: dict, optimizer: dict, best_model: dict | None) -> None:
        """Restore run ``member`` from its checkpoint (and its best classifier); ``optimizer`` is
        :meth:`optimizer_state`'s dict."""
        self.model.load_run(member, model)
        self.optimizers[member].load_state_dict(optimizer["optimizer"])
        self.schedulers[member].load_state_dict(optimizer["lr_scheduler"])
        if DROPOUT_GENERATOR in optimizer:
            self.generators[member].set_state(optimizer[DROPOUT_GENERATOR])
        self.best[member] = best_model or self.model_state(member)
