"""Fine-tuning of the action-token rows and LoRA adapters on :class:`~training.sequences.DecisionSample` s.

Trainable: action-token rows of the tied embedding / lm_head (their logits *are* the runtime's decision:
:class:`~runtime.policies.ModelPolicy` takes the softmax over them) and LoRA adapters (peft). Everything else, the
visual towers and projectors included, is frozen. Two adapter sets (``adapters``):

* ``query`` (the CPU default): LoRA on the **last** decoder layer's ``q_proj``, ``o_proj`` and MLP; the action rows
  are fixed (see below). Nothing trained changes a context position's keys or values (the last layer's come from
  frozen layers through its frozen ``k_proj`` / ``v_proj``, and the rows, which the system prompt and the closing
  tokens feed as inputs, do not move), so each sample's context KV is computed once and every step runs only the
  query part: an exact forward *and* an exact gradient, at a few tokens per step;
* ``all``: LoRA on every decoder layer's attention and MLP projections and all three rows trained; the context is
  recomputed at every step (see ``context_grad``).

Freshly added action rows are identical (mean-initialised), so their logits tie whatever the hidden state. Before
training they are split (:func:`split_action_rows`): row ``a`` moves to ``mean + s u_a`` with ``u_a`` seeded
orthonormal directions and ``s`` the table's RMS row norm; the decision then depends on the query's hidden state
along those directions, which the adapters learn to move. Rows that already differ are kept.

Loss per sample:

* **action**: cross-entropy over the three action logits at the action query (the runtime's restricted softmax),
  weighted per class by ``N / (classes * n_class)`` over the training targets: silence (``<next>``) outnumbers
  feedback by far, and an unweighted loss would learn to stay silent;
* **text** (``<feedback>`` samples): full-vocabulary cross-entropy of the correction ids and the stop id after the
  ``<feedback>`` token, weighted by ``text_weight``.

Context gradient (``adapters="all"``): with ``context_grad="none"`` the decoder context up to the window's question
is run without gradient into a KV cache and only the query part (question, assistant header, ``<feedback>`` and
text) is back-propagated: the forward is exact, the gradient does not flow into the earlier positions' keys and
values (a stop-gradient on the context). ``"full"`` back-propagates through the whole sequence (GPU; combine with
``gradient_checkpointing``).
"""

from __future__ import annotations

import inspect
import logging
import math
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from peft import LoraConfig, get_peft_model
from transformers import DynamicCache, Qwen2Model

from engine_format.vocab import ACTION_TOKENS, FEEDBACK, ActionTokenIds
from mobile_videogpt.model import MobileVideoGPT
from training.sequences import DecisionSample
from training.symbolic import Entries

logger = logging.getLogger(__name__)

#: The decoder projections LoRA adapts (full module names inside ``model.lm``; the vision tower is never matched).
LORA_TARGETS = r"model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"
ADAPTERS = ("query", "all")
CONTEXT_GRADS = ("none", "full")


def query_lora_targets(last_layer: int) -> str:
    """LoRA targets of ``adapters="query"``: the last layer's query-side projections (module docstring)."""
    return rf"model\.layers\.{last_layer}\.(self_attn\.(q|o)_proj|mlp\.(gate|up|down)_proj)"

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# transformers 5.24 renamed the cache kwarg of the forward (``past_key_values`` -> ``cache``); older 5.x has the old one.
_CACHE_KWARG = "cache" if "cache" in inspect.signature(Qwen2Model.forward).parameters else "past_key_values"


@dataclass(frozen=True)
class TrainSettings:
    """Optimisation settings.

    Attributes:
        adapters: ``query`` or ``all`` (module docstring).
        epochs: Passes over the samples.
        lr: AdamW peak learning rate of the LoRA adapters (cosine decay to 0 over the run).
        rows_lr: Learning rate of the action-token rows (``adapters="all"``).
        lora_rank: LoRA rank r (0 trains the action rows only).
        lora_alpha: LoRA alpha.
        text_weight: Weight of the text loss.
        batch: Samples per optimiser step (gradient accumulation).
        seed: Shuffling seed.
        context_grad: ``none`` or ``full`` (module docstring).
        precision: Autocast dtype of the forward: ``fp32`` (CPU), ``bf16`` or ``fp16`` (CUDA).
        gradient_checkpointing: Recompute decoder activations in the backward pass (``context_grad="full"``).
    """

    adapters: str = "query"
    epochs: int = 20
    lr: float = 3e-3
    rows_lr: float = 2e-2
    lora_rank: int = 4
    lora_alpha: float = 16.0
    text_weight: float = 0.5
    batch: int = 8
    seed: int = 0
    context_grad: str = "none"
    precision: str = "fp32"
    gradient_checkpointing: bool = False

    def check(self) -> None:
        """Raises ValueError naming the first bad setting."""
        if self.epochs < 1 or self.batch < 1 or self.lora_rank < 0:
            raise ValueError(f"epochs {self.epochs}, batch {self.batch} must be >= 1 and lora_rank {self.lora_rank} >= 0")
        if not (self.lr > 0 and self.rows_lr > 0 and self.text_weight >= 0):
            raise ValueError("lr and rows_lr must be > 0 and text_weight >= 0")
        if self.adapters not in ADAPTERS:
            raise ValueError(f"adapters {self.adapters!r}: must be one of {ADAPTERS}")
        if self.context_grad not in CONTEXT_GRADS:
            raise ValueError(f"context_grad {self.context_grad!r}: must be one of {CONTEXT_GRADS}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision {self.precision!r}: must be one of {sorted(PRECISIONS)}")


def split_action_rows(rows: torch.Tensor, table: torch.Tensor, seed: int) -> torch.Tensor:
    """Splits identical action rows ``[3, H]`` (module docstring); returns them unchanged when they already differ."""
    if not bool(torch.all(rows == rows[0])):
        return rows
    generator = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(rows.shape[1], rows.shape[0], generator=generator, dtype=torch.float32))
    scale = table.float().pow(2).sum(dim=1).mean().sqrt()  # RMS row norm of the embedding table
    return rows + scale * u.T.to(rows.device, rows.dtype)  # one orthonormal direction per action


def rank_auc(positives: Sequence[float], negatives: Sequence[float]) -> float:
    """Probability that a positive scores above a negative (ties count half); NaN without both."""
    if not positives or not negatives:
        return math.nan
    pos, neg = np.asarray(positives)[:, None], np.asarray(negatives)[None, :]
    return float(np.mean((pos > neg) + 0.5 * (pos == neg)))


def class_weights(samples: Iterable[DecisionSample]) -> dict[str, float]:
    """``N / (classes present * n_class)`` over the samples whose action is a target."""
    counts = Counter(s.action for s in samples if s.train_action)
    total = sum(counts.values())
    return {a: total / (len(counts) * n) for a, n in counts.items()}


class ActionTokenTrainer:
    """Holds the trainable model (see the module docstring).

    Args:
        model: The reference model with the action-token rows (``load_model(..., extend_vocab=True)``).
        action_ids: Ids of the action tokens (the last three embedding rows).
        settings: Optimisation settings.
    """

    def __init__(self, model: MobileVideoGPT, action_ids: ActionTokenIds, settings: TrainSettings) -> None:
        settings.check()
        self.settings = settings
        self.model = model
        self.action_ids = action_ids
        vocab = model.vocab_size
        if sorted(action_ids.ids) != list(range(vocab - 3, vocab)):
            raise ValueError(f"action-token ids {action_ids.as_dict()} must be the last three of {vocab} rows")
        self.first_action = vocab - 3
        self.order = [action_ids.id_of(t) - self.first_action for t in ACTION_TOKENS]  # row of each action, in order
        lm = model.lm
        for p in model.parameters():
            p.requires_grad_(False)
        self.table = lm.model.embed_tokens.weight  # frozen [V, H]
        self.frozen_context = settings.adapters == "query"
        initial = split_action_rows(self.table[self.first_action :].detach().float(), self.table, settings.seed)
        self.rows = torch.nn.Parameter(initial.clone(), requires_grad=not self.frozen_context)
        self.lora = None
        if settings.lora_rank > 0:
            last = lm.config.num_hidden_layers - 1
            targets = query_lora_targets(last) if self.frozen_context else LORA_TARGETS
            config = LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=0.0,
                                target_modules=targets, bias="none")
            self.lora = get_peft_model(lm, config)
            self.decoder = self.lora.base_model.model.model
        else:
            self.decoder = lm.model
        if settings.gradient_checkpointing:
            self.decoder.gradient_checkpointing_enable()
        self.decoder.train()
        groups: list[dict[str, Any]] = [{"params": [self.rows], "lr": settings.rows_lr}] if self.rows.requires_grad else []
        adapters = [p for p in self.decoder.parameters() if p.requires_grad]
        if adapters:
            groups.append({"params": adapters, "lr": settings.lr})
        if not groups:
            raise ValueError("nothing to train: adapters 'query' needs lora_rank > 0")
        self.optimizer = torch.optim.AdamW(groups, weight_decay=0.0)
        self.device = model.device
        self.autocast = PRECISIONS[settings.precision]
        self._contexts: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    # ------------------------------------------------------------------ forward
    def embed_ids(self, ids: Sequence[int]) -> torch.Tensor:
        """Embeddings ``[S, H]`` with the trainable action rows in place of the table's."""
        index = torch.as_tensor(list(ids), dtype=torch.long, device=self.device)
        out = self.table[index].float()
        is_action = index >= self.first_action
        if bool(is_action.any()):
            out = torch.where(is_action[:, None], self.rows[(index - self.first_action).clamp(min=0)], out)
        return out

    def embed_entries(self, entries: Entries, rows: np.ndarray) -> torch.Tensor:
        """The decoder input ``[P, H]`` of symbolic entries (visual rows from ``rows [n_windows, 2402, H]``)."""
        parts = []
        for kind, start, stop, key in entries.runs():
            if kind == "tokens":
                parts.append(self.embed_ids(entries.code[start:stop].tolist()))
            else:
                r0, r1 = int(entries.row[start]), int(entries.row[stop - 1]) + 1
                parts.append(torch.from_numpy(np.ascontiguousarray(rows[key, r0:r1])).to(self.device, torch.float32))
        return torch.cat(parts, dim=0)

    def _run(self, embeds: torch.Tensor, start: int, cache: DynamicCache | None) -> torch.Tensor:
        positions = torch.arange(start, start + embeds.shape[0], device=self.device)[None]
        with torch.autocast(self.device.type, dtype=self.autocast, enabled=self.autocast != torch.float32):
            out = self.decoder(inputs_embeds=embeds[None], position_ids=positions, use_cache=cache is not None,
                               **{_CACHE_KWARG: cache})
        return out.last_hidden_state[0].float()

    def forward(self, sample: DecisionSample, rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(action logits [3] in ACTION_TOKENS order, text logits [T, V] or None)`` of one sample."""
        full = self.embed_entries(sample.context, rows) if not self._has_context(sample) else None
        if full is None:
            full = self.embed_entries(Entries(sample.context.code[sample.query_start :],
                                              sample.context.row[sample.query_start :]), rows)
            full = torch.cat([full.new_zeros(sample.query_start, full.shape[1]), full], dim=0)  # context is cached
        fed = [self.action_ids.id_of(FEEDBACK), *sample.text_ids[:-1]] if sample.text_ids else []
        query = full[sample.query_start :]
        if fed:
            query = torch.cat([query, self.embed_ids(fed)], dim=0)
        if self.frozen_context:
            cache = self._frozen_cache(sample, full)
            hidden = self._run(query, sample.query_start, cache)
        elif self.settings.context_grad == "full":
            hidden = self._run(torch.cat([full[: sample.query_start], query], dim=0), 0, None)[sample.query_start :]
        else:
            cache = DynamicCache()
            with torch.no_grad():
                self._run(full[: sample.query_start].detach(), 0, cache)
            hidden = self._run(query, sample.query_start, cache)
        q = len(sample.context) - sample.query_start - 1
        action_logits = hidden[q] @ self.rows.T  # [3] in row order
        action_logits = action_logits[self.order]
        text_logits = None
        if fed:
            h = hidden[q + 1 :]
            text_logits = torch.cat([h @ self.table[: self.first_action].float().T, h @ self.rows.T], dim=-1)
        return action_logits, text_logits

    def _has_context(self, sample: DecisionSample) -> bool:
        return self.frozen_context and id(sample) in self._contexts

    def _frozen_cache(self, sample: DecisionSample, full: torch.Tensor) -> DynamicCache:
        """A fresh cache holding the sample's context KV, computed once (``adapters="query"``)."""
        key = id(sample)
        if key not in self._contexts:
            tmp = DynamicCache()
            with torch.no_grad():
                self._run(full[: sample.query_start], 0, tmp)
            self._contexts[key] = [(layer.keys, layer.values) for layer in tmp.layers]
        cache = DynamicCache()
        for i, (k, v) in enumerate(self._contexts[key]):
            cache.update(k, v, i)
        return cache

    def loss(self, sample: DecisionSample, rows: np.ndarray, weights: Mapping[str, float]) -> tuple[torch.Tensor, dict[str, float]]:
        """The sample's loss and its parts."""
        action_logits, text_logits = self.forward(sample, rows)
        total = action_logits.new_zeros(())
        parts: dict[str, float] = {}
        if sample.train_action:
            target = torch.tensor(ACTION_TOKENS.index(sample.action), device=self.device)
            ce = torch.nn.functional.cross_entropy(action_logits[None], target[None])
            total = total + weights[sample.action] * ce
            parts["action"] = float(ce.detach())
        if text_logits is not None and self.settings.text_weight > 0:
            target = torch.as_tensor(sample.text_ids, device=self.device)
            ce = torch.nn.functional.cross_entropy(text_logits, target)
            total = total + self.settings.text_weight * ce
            parts["text"] = float(ce.detach())
        return total, parts

    # ------------------------------------------------------------------ loop
    def fit(self, samples: Sequence[DecisionSample], features: Mapping[str, np.ndarray]) -> list[dict[str, float]]:
        """Trains for ``settings.epochs``; returns one summary row per epoch."""
        weights = class_weights(samples)
        logger.info("class weights %s over %d samples", {k: round(v, 3) for k, v in weights.items()}, len(samples))
        useful = [s for s in samples if s.train_action or s.text_ids]
        rng = np.random.default_rng(self.settings.seed)
        steps = self.settings.epochs * math.ceil(len(useful) / self.settings.batch)
        # Cosine decay to zero: the last epochs settle instead of jumping between calibrations.
        schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda k: 0.5 * (1 + math.cos(math.pi * k / steps)))
        history = []
        for epoch in range(self.settings.epochs):
            started = time.perf_counter()
            order = rng.permutation(len(useful))
            sums: Counter[str] = Counter()
            counts: Counter[str] = Counter()
            self.optimizer.zero_grad(set_to_none=True)
            for step, i in enumerate(order, start=1):
                sample = useful[int(i)]
                loss, parts = self.loss(sample, features[sample.episode], weights)
                (loss / self.settings.batch).backward()
                for key, value in parts.items():
                    sums[key] += value
                    counts[key] += 1
                if step % self.settings.batch == 0 or step == len(order):
                    self.optimizer.step()
                    schedule.step()
                    self.optimizer.zero_grad(set_to_none=True)
            row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - started, 1)}
            row.update({f"{k}_loss": round(sums[k] / counts[k], 4) for k in sums})
            every = max(1, self.settings.epochs // 4)
            if (epoch + 1) % every == 0 or epoch + 1 == self.settings.epochs:  # a full pass costs as much as an epoch
                row.update(self.evaluate(samples, features))
            logger.info("epoch %s", row)
            history.append(row)
        return history

    @torch.no_grad()
    def evaluate(self, samples: Sequence[DecisionSample], features: Mapping[str, np.ndarray]) -> dict[str, float]:
        """Teacher-forced p(<feedback>) on the action targets: mean on feedback / next windows, accuracy and AUC."""
        p_fb: dict[str, list[float]] = {a: [] for a in ACTION_TOKENS}
        correct = []
        for sample in samples:
            if not sample.train_action:
                continue
            logits, _ = self.forward(sample, features[sample.episode])
            probs = torch.softmax(logits, dim=-1)
            p_fb[sample.action].append(float(probs[ACTION_TOKENS.index(FEEDBACK)]))
            correct.append(ACTION_TOKENS[int(torch.argmax(probs))] == sample.action)
        out = {f"p_feedback_on_{a.strip('<>')}": round(float(np.mean(v)), 4) for a, v in p_fb.items() if v}
        out["accuracy"] = round(float(np.mean(correct)), 4) if correct else math.nan
        out["auc"] = round(rank_auc(p_fb[FEEDBACK], p_fb[ACTION_TOKENS[0]]), 4)
        return out

    def merged_state(self) -> dict[str, torch.Tensor]:
        """The checkpoint's tensors: adapters merged into the decoder, the trained action rows in the embedding."""
        lm = self.lora.merge_and_unload() if self.lora is not None else self.model.lm
        self.model.lm = lm
        state = {k: v.detach().clone() for k, v in lm.state_dict().items() if k != "lm_head.weight"}
        embed = state["model.embed_tokens.weight"]
        embed[self.first_action :] = self.rows.detach().to(embed.dtype)
        return state

    def settings_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self.settings)
