"""Mini-batch index draws made on the training device, with a resumable state."""
import torch


class BatchSampler:
    """Draws batches of example indices from a fixed pool.

    Without ``weights`` it walks through random permutations of the pool (every example once
    per epoch, full batches only); with ``weights`` it draws with replacement in proportion
    to them (group- or class-balanced batches). All draws use ``generator`` on the pool's
    device, so there is no host synchronisation and the state can be checkpointed.
    """

    def __init__(
        self,
        pool: torch.Tensor,
        batch_size: int,
        generator: torch.Generator,
        weights: torch.Tensor | None = None,
    ) -> None:
        if len(pool) == 0:
            raise ValueError("cannot draw batches from an empty training set")
        self.pool = pool
        self.batch_size = min(batch_size, len(pool)) if weights is None else batch_size
        self.generator = generator
        self.weights = None if weights is None else weights.double() / weights.sum()
        self._permutation = pool[:0]
        self._position = 0

    def next(self) -> torch.Tensor:
        """The next batch of indices (a 1-D long tensor on the pool's device)."""
        if self.weights is not None:
            drawn = torch.multinomial(self.weights, self.batch_size, replacement=True, generator=self.generator)
            return self.pool[drawn]
        if self._position + self.batch_size > len(self._permutation):
            order = torch.randperm(len(self.pool), generator=self.generator, device=self.pool.device)
            self._permutation = self.pool[order]
            self._position = 0
        batch = self._permutation[self._position : self._position + self.batch_size]
        self._position += self.batch_size
        return batch

    def state_dict(self) -> dict:
        """Everything needed to continue the same sequence of batches."""
        return {
            "generator": self.generator.get_state(),
            "permutation": self._permutation,
            "position": self._position,
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue from a :meth:`state_dict`."""
        self.generator.set_state(state["generator"].cpu() if hasattr(state["generator"], "cpu") else state["generator"])
        self._permutation = state["permutation"].to(self.pool.device)
        self._position = int(state["position"])


def group_balancing_weights(groups: torch.Tensor) -> torch.Tensor:
    """Per-example weights 1 / |group|, so each group is drawn equally often."""
    _, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    return 1.0 / counts[inverse].double()


def subsample_to_smallest_group(groups: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Indices of a random subset with as many examples of each group as the smallest has."""
    present, inverse, counts = torch.unique(groups, return_inverse=True, return_counts=True)
    smallest = int(counts.min().item())
    order = torch.randperm(len(groups), generator=generator, device=groups.device)
    kept = []
    for group in range(len(present)):
        members = order[inverse[order] == group]
        kept.append(members[:smallest])
    return torch.sort(torch.cat(kept)).values
