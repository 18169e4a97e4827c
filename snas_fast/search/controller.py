"""The LSTM controller of MONAS (Hsu et al. 2018) and ENAS (Pham et al. 2018): an architecture emitted one
categorical decision at a time, trained by REINFORCE.

:class:`Controller` knows only the sizes of its decisions (a space's
:meth:`~snas_fast.spaces.SearchSpace.decisions`): at step ``n`` the LSTM cell reads the embedding of the previous
choice (a learned start token at step 0), and head ``n`` (a linear layer to ``sizes[n]`` logits) gives that
decision's softmax. :class:`Reinforce` is the update: ``loss = -(R - b) * log p(choices) - beta * H``, with ``b`` an
exponential moving average of the rewards (``b <- decay * b + (1 - decay) * R``, starting at the first reward) and
``H`` the summed entropy of the decisions' softmaxes (an exploration bonus).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor, nn

__all__ = ["Controller", "Reinforce"]


class Controller(nn.Module):
    """An LSTM policy over ``sizes`` categorical decisions (``hidden`` units)."""

    def __init__(self, sizes: Sequence[int], hidden: int = 64):
        super().__init__()
        sizes = [int(n) for n in sizes]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"sizes: expected decisions of at least 1 choice each, got {sizes}")
        self.sizes = sizes
        self.hidden = hidden
        offsets = [0]
        for n in sizes[:-1]:
            offsets.append(offsets[-1] + n)
        self.offsets = offsets
        self.embed = nn.Embedding(sum(sizes) + 1, hidden)  # one token per choice of each decision, then start
        self.cell = nn.LSTMCell(hidden, hidden)
        self.heads = nn.ModuleList(nn.Linear(hidden, n) for n in sizes)

    def _run(self, pick: Callable[[int, Tensor], int]) -> Tuple[List[int], Tensor, Tensor]:
        """Runs the decisions, ``pick(n, logits [sizes[n]])`` choosing each; ``(choices, log p, entropy)``."""
        device = self.embed.weight.device
        token = torch.tensor([self.embed.num_embeddings - 1], device=device)
        state, taken, log_p, entropy = None, [], [], []
        for n in range(len(self.sizes)):
            state = self.cell(self.embed(token), state)
            logp = torch.log_softmax(self.heads[n](state[0])[0], -1)
            choice = pick(n, logp)
            taken.append(choice)
            log_p.append(logp[choice])
            entropy.append(-(logp.exp() * logp).sum())
            token = torch.tensor([self.offsets[n] + choice], device=device)
        return taken, torch.stack(log_p).sum(), torch.stack(entropy).sum()

    def sample(self, generator: Optional[torch.Generator] = None) -> Tuple[List[int], Tensor, Tensor]:
        """``(choices, log p(choices) [], entropy [])``: one architecture drawn from the policy (``generator``: a
        CPU ``torch.Generator``; None: torch's default one). Both tensors carry gradients to the parameters."""
        def draw(n: int, logp: Tensor) -> int:
            return int(torch.multinomial(logp.detach().float().exp().cpu(), 1, generator=generator))

        return self._run(draw)

    def evaluate(self, choices: Sequence[int]) -> Tuple[List[int], Tensor, Tensor]:
        """``(choices, log p, entropy)`` of given ``choices``."""
        if len(choices) != len(self.sizes):
            raise ValueError(f"choices: expected {len(self.sizes)} decisions, got {len(choices)}")
        return self._run(lambda n, logp: int(choices[n]))

    @torch.no_grad()
    def greedy(self) -> List[int]:
        """The most likely choice at every step (given the previous ones)."""
        return self._run(lambda n, logp: int(logp.argmax()))[0]


class Reinforce:
    """REINFORCE with a moving-average baseline and an entropy bonus for ``controller`` (Adam at ``lr``)."""

    def __init__(self, controller: Controller, lr: float = 5e-3, baseline_decay: float = 0.95,
                 entropy_weight: float = 1e-3):
        if not 0.0 <= baseline_decay < 1.0:
            raise ValueError(f"baseline_decay: expected a number in [0, 1), got {baseline_decay}")
        self.controller = controller
        self.optimizer = torch.optim.Adam(controller.parameters(), lr)
        self.baseline_decay, self.entropy_weight = baseline_decay, entropy_weight
        self.baseline: Optional[float] = None

    def step(self, reward: float, log_p: Tensor, entropy: Tensor) -> float:
        """One update from one sample's ``reward``; returns its advantage ``R - b`` (``b`` before this reward)."""
        if self.baseline is None:
            self.baseline = float(reward)
        advantage = float(reward) - self.baseline
        loss = -advantage * log_p - self.entropy_weight * entropy
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * float(reward)
        return advantage

    def state_dict(self) -> dict:
        return dict(controller=self.controller.state_dict(), optimizer=self.optimizer.state_dict(),
                    baseline=self.baseline)

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state["controller"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.baseline = state["baseline"]
