"""H text runs' BERT classifiers trained as one stack, behind the interface ModuleStack gives one run.

``TextStack`` holds H runs' ``TextClassifier``s as a StackedBert (XRM/networks/stacked_bert.py):
one forward and one backward pass for all runs. A run may have two networks (XRM's twins: both see
the run's batch, each with its own dropout), held as two classifiers of the StackedBert. Everything
else stays each run's own: its optimiser (torch.optim, fused on CUDA, over views of its networks'
slices of the stacked tensors, with its learning rate and weight decay; a fused AdamW's update runs
its kernel with the gradients handed over, XRM/engine/fused_adamw.py), its learning-rate schedule,
its networks' dropout generators (seeded from the run's seed), its best model. A run's model,
optimiser and schedule states are in the layout ModuleStack writes for the run alone (its
classifier's state_dict, or its TwinNetwork's; the optimiser's state_dict over its parameters in
decay_parameter_groups' order; the scheduler's), plus its dropout generators' states, so a run's
checkpoint reads back whether it trained alone or stacked.

Evaluation takes what ModuleStack.predict takes (a split's token rows), prepared once by
XRM/engine/evaluation_inputs.py, through ``EveryRun``: the stack seen there as one network.
"""
import torch

from XRM.engine.evaluation_inputs import EvaluationInputs, TokenNetwork
from XRM.engine.fused_adamw import fused_adamw_step
from XRM.engine.model_stacks import BACKBONE_EVALUATION_BATCH
from XRM.engine.optimizers import SGD_MOMENTUM, build_lr_scheduler, decay_groups, optimizer_of_groups
from XRM.networks.classifiers import TextClassifier, bf16_on_cuda, network_prefixes
from XRM.networks.per_run_ops import grouped_products_run
from XRM.networks.stacked_bert import StackedBert
from XRM.networks.stacked_bert_graphs import StackedGraphs
from XRM.networks.stacked_tokens import StackedTokens
from XRM.networks.token_batches import TokenBatch

#: the key of a run's dropout generator state in its optimiser state (a run of two networks: a list of two)
DROPOUT_GENERATOR = "dropout_generator"
#: network t of a run of seed s draws its dropout from a generator seeded s + t x TWIN_SEED_STRIDE (a run of
#: one network: from s)
TWIN_SEED_STRIDE = 2 ** 32


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
    """H runs' BERT text classifiers trained as one stack (see the module docstring): ``classifiers`` run after
    run, ``networks_per_run`` each (1, or XRM's 2 twins); ``hparams[h]`` and ``seeds[h]`` are run h's (optimizer,
    lr, weight_decay, num_steps, lr_schedule; the seed of its dropout); ``grouped_products``: StackedBert's;
    ``cuda_graphs``: on a GPU where grouped products run, the training pass replayed from CUDA graphs
    (XRM/networks/stacked_bert_graphs.py), its stages compiled first where ``compiled``."""

    def __init__(self, classifiers: list[TextClassifier], hparams: list[dict], seeds: list[int],
                 device: torch.device, grouped_products: bool = True, cuda_graphs: bool = False,
                 compiled: bool = False, networks_per_run: int = 1) -> None:
        if networks_per_run not in (1, 2):
            raise ValueError(f"a TextStack's runs have one network or two twins, not {networks_per_run}")
        if len(classifiers) != networks_per_run * len(hparams) or len(seeds) != len(hparams):
            raise ValueError(f"{len(hparams)} runs of {networks_per_run} networks take as many classifiers, hparams "
                             f"and seeds; given {len(classifiers)}, {len(hparams)} and {len(seeds)}")
        self.per_run = networks_per_run
        self.prefixes = network_prefixes(networks_per_run)  # each network's keys in its run's state_dict
        self.model = StackedBert([classifier.to(device) for classifier in classifiers], grouped_products)
        # graphs replay the layout's group ends from the device: only where grouped products take them from there
        graphed = cuda_graphs and device.type == "cuda" and grouped_products and grouped_products_run(device, torch.bfloat16)
        self.graphs = StackedGraphs(self.model, compiled=compiled) if graphed else None
        self.every_run = EveryRun(self.model)
        self.evaluation_inputs = EvaluationInputs(device, None)
        self.num_runs = len(hparams)
        self.generators = [torch.Generator(device).manual_seed(seed + twin * TWIN_SEED_STRIDE)
                           for seed in seeds for twin in range(networks_per_run)]  # one per network
        stacked = list(self.model.parameters.values())
        # each run's networks' slices, network after network (a TwinNetwork's parameters' order)
        self.views = [[parameter.detach()[network] for network in self._networks(run) for parameter in stacked]
                      for run in range(self.num_runs)]
        self.optimizers, self.schedulers = [], []
        for views, run_hparams in zip(self.views, hparams):
            groups = decay_groups(views, run_hparams["weight_decay"])
            optimizer = optimizer_of_groups(groups, run_hparams["optimizer"], run_hparams["lr"],
                                            run_hparams.get("sgd_momentum", SGD_MOMENTUM))
            self.optimizers.append(optimizer)
            self.schedulers.append(build_lr_scheduler(optimizer, run_hparams.get("lr_schedule", "constant"),
                                                      run_hparams["num_steps"]))
        self.best = [self.model_state(run) for run in range(self.num_runs)]

    def _networks(self, run: int) -> range:
        """The StackedBert's indices of run ``run``'s networks."""
        return range(run * self.per_run, (run + 1) * self.per_run)

    def _by_run(self, logits: torch.Tensor) -> torch.Tensor:
        """Every network's logits [H x m, n, classes] as ModuleStack gives a run's: [H, n, classes] for runs of one
        network, [H, n, classes, 2] (twin index last, as TwinNetwork's) for runs of two."""
        if self.per_run == 1:
            return logits
        return logits.view(self.num_runs, self.per_run, *logits.shape[1:]).movedim(1, -1)

    def forward(self, batches: list[TokenBatch]) -> torch.Tensor:
        """Training logits of each run's batch (``batches[h]``: run h's, which each of its networks passes),
        [H, B, classes] or, for twins, [H, B, classes, 2] (B: the largest batch; run h's rows past its own batch
        mean nothing)."""
        self.model.train(True)
        tokens = StackedTokens.of([batch for batch in batches for _ in range(self.per_run)])
        if self.graphs is not None:  # captured with their own autocast
            return self._by_run(self.graphs(tokens, self.generators)[:, : max(tokens.run_rows)])
        with bf16_on_cuda(batches[0].tokens):
            return self._by_run(self.model(tokens, self.generators)[:, : max(tokens.run_rows)])

    @torch.inference_mode()
    def predict(self, inputs: torch.Tensor, once: bool = False) -> torch.Tensor:
        """Logits [H, n, classes] (twins: [H, n, classes, 2]) of every run on the token rows ``inputs`` [n, L, 3],
        without dropout: as ModuleStack.predict, the rows prepared at their first evaluation and reused, unless
        ``once``."""
        self.model.train(False)
        logits = self.evaluation_inputs.predict(inputs, self.every_run, BACKBONE_EVALUATION_BATCH, once)
        return self._by_run(logits.transpose(0, 1))

    def step(self, loss: torch.Tensor, active: torch.Tensor | None = None) -> None:
        """Backpropagate ``loss`` (the sum of the runs' own losses) and update every run with its own
        optimiser and schedule (``active``: ModuleStack's mask of the networks to train, which a TextStack does
        not take: its runs' networks all train at every step, as XRM's twins do)."""
        if active is not None:
            raise ValueError("a TextStack trains every network of its runs at every step: none to freeze")
        loss.backward()
        stacked = list(self.model.parameters.values())
        # each stacked gradient cut into its runs' by one call, not one indexing per run
        cut = [[None] * self.model.num_runs if parameter.grad is None else parameter.grad.unbind(0)
               for parameter in stacked]
        for run, (views, optimizer, scheduler) in enumerate(zip(self.views, self.optimizers, self.schedulers)):
            gradients = [network_gradients[network] for network in self._networks(run) for network_gradients in cut]
            given = {id(view): gradient for view, gradient in zip(views, gradients) if gradient is not None}
            if not fused_adamw_step(optimizer, given):  # else (a first step, another optimiser) torch's own step
                for view, gradient in zip(views, gradients):
                    view.grad = gradient
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
        """Run ``member``'s classifier as its own state_dict, or its twins' as a TwinNetwork's (CPU copies)."""
        return {prefix + name: value.cpu() for prefix, network in zip(self.prefixes, self._networks(member))
                for name, value in self.model.run_state(network).items()}

    def best_model_state(self, member: int) -> dict[str, torch.Tensor]:
        """Run ``member``'s classifier at its best evaluation so far."""
        return self.best[member]

    def keep_best(self, improved: torch.Tensor) -> None:
        """Remember the classifiers of the runs set in ``improved`` [H]."""
        for run in torch.nonzero(improved.cpu()).flatten().tolist():
            self.best[run] = self.model_state(run)

    def optimizer_state(self, member: int) -> dict:
        """Run ``member``'s optimiser, schedule and dropout generator states (twins: a list of the two)."""
        states = [self.generators[network].get_state() for network in self._networks(member)]
        return {"optimizer": self.optimizers[member].state_dict(), "lr_scheduler": self.schedulers[member].state_dict(),
                DROPOUT_GENERATOR: states[0] if self.per_run == 1 else states}

    def load_member(self, member: int, model: dict, optimizer: dict, best_model: dict | None) -> None:
        """Restore run ``member`` from its checkpoint (and its best classifier); ``optimizer`` is
        :meth:`optimizer_state`'s dict."""
        networks = self._networks(member)
        for prefix, network in zip(self.prefixes, networks):
            self.model.load_run(network, {name[len(prefix):]: value for name, value in model.items()
                                          if name.startswith(prefix)})
        self.optimizers[member].load_state_dict(optimizer["optimizer"])
        self.schedulers[member].load_state_dict(optimizer["lr_scheduler"])
        if DROPOUT_GENERATOR in optimizer:
            states = optimizer[DROPOUT_GENERATOR]
            for network, state in zip(networks, [states] if self.per_run == 1 else states):
                self.generators[network].set_state(state)
        self.best[member] = best_model or self.model_state(member)
