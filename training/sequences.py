"""Training samples in exactly the runtime's streaming conversation.

Labels (:func:`label_windows`): each ground-truth correction goes to the window whose end is nearest to it (the
earliest on a tie), the window at which the runtime decides; that window's action is ``<feedback>`` followed by the
correction text, every other window's is ``<next>``. Windows the runtime's :class:`~runtime.policies.FeedbackGate`
would decide by itself, those less than ``decision.min_feedback_interval_s`` after a feedback, get ``<next>`` but no
action loss (whatever the model says there, the gate feeds ``<next>``).

Samples (:func:`build_samples`): the runtime's own :class:`~runtime.context.DecoderContext` runs over a
:class:`~training.symbolic.SymbolicBackend`, driven the way :class:`~runtime.session.StreamSession` drives it: per
window ``append_window``; then ``close_turn(<next>)`` (the closing tokens deferred to the next append), or for
``<feedback>`` ``extend`` with ``<feedback>`` and each text token (what greedy generation feeds: every generated
token before the stop token) and ``end_feedback``. So the system prefix, the per-window turn layout, deferred
closings, eviction with re-based positions, clearing after feedback and on a timeout are the runtime's by
construction; the symbolic cache's entries at each action query are the sample's decoder context.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine_format.geometry import ModelFacts
from engine_format.prompt import StreamingPromptIds
from engine_format.vocab import FEEDBACK, NEXT, ActionTokenIds
from evaluation.matching import TimedText
from runtime.config import ConfigError, StreamingConfig
from runtime.context import DecoderContext
from runtime.generation import resolve_generation
from runtime.windowing import Window
from training.symbolic import Entries, SymbolicBackend, VisualRef

#: The token that ends an assistant turn in the chat template, and so a trained feedback.
TURN_END = "<|im_end|>"

logger = logging.getLogger(__name__)


class LabelError(ValueError):
    """Ground truth that cannot be turned into window labels (the message names the episode and time)."""


@dataclass(frozen=True)
class WindowLabel:
    """What the conversation says after one window.

    Attributes:
        action: ``<next>`` or ``<feedback>`` (fed into the context).
        text: The correction after ``<feedback>`` ('' otherwise).
        train_action: Whether the action is a training target (False where the gate decides).
        gt_t: The ground-truth time the feedback answers, if any.
    """

    action: str
    text: str = ""
    train_action: bool = True
    gt_t: float | None = None


@dataclass
class DecisionSample:
    """One window's decision as the decoder sees it.

    Attributes:
        episode: Episode id.
        window: The window.
        context: Decoder entries at the action query (system prefix ... this window's question and assistant header).
        query_start: Index of the window's question tokens (``window_suffix_ids``) in ``context``.
        action: The label's action.
        train_action: Whether the action counts in the loss.
        text_ids: For ``<feedback>``: the text ids followed by the stop id (the targets after ``<feedback>``).
    """

    episode: str
    window: Window
    context: Entries
    query_start: int
    action: str
    train_action: bool
    text_ids: list[int] = field(default_factory=list)


def label_windows(
    episode: str,
    windows: Sequence[Window],
    gt: Sequence[TimedText],
    cfg: StreamingConfig,
    tolerance_s: float = 3.0,
) -> list[WindowLabel]:
    """Window labels from the ground truth (see the module docstring).

    Raises:
        LabelError: For a correction with no window within ``tolerance_s / 2``, two corrections on one window, or a
            correction the gate's minimum interval would always suppress.
    """
    ends = np.asarray([w.t_end for w in windows], dtype=np.float64)
    by_window: dict[int, TimedText] = {}
    for item in gt:
        k = int(np.argmin(np.abs(ends - item.t)))
        if abs(ends[k] - item.t) >= tolerance_s / 2:
            raise LabelError(f"{episode}: correction at {item.t:.2f} s has no window end within {tolerance_s / 2} s")
        if k in by_window:
            raise LabelError(f"{episode}: corrections at {by_window[k].t:.2f} s and {item.t:.2f} s share window {k}")
        by_window[k] = item
    interval = cfg.decision.min_feedback_interval_s
    labels: list[WindowLabel] = []
    last_feedback: float | None = None
    for k, window in enumerate(windows):
        gated = last_feedback is not None and window.t_end - last_feedback < interval
        item = by_window.get(k)
        if item is not None and gated:
            raise LabelError(
                f"{episode}: correction at {item.t:.2f} s comes {window.t_end - last_feedback:.2f} s after the previous "
                f"one; decision.min_feedback_interval_s = {interval} would suppress it"
            )
        if item is not None:
            labels.append(WindowLabel(FEEDBACK, item.text, True, item.t))
            last_feedback = window.t_end
        else:
            labels.append(WindowLabel(NEXT, "", not gated))
    return labels


def build_samples(
    episode: str,
    windows: Sequence[Window],
    labels: Sequence[WindowLabel],
    prompt: StreamingPromptIds,
    encode: Callable[[str], list[int]],
    cfg: StreamingConfig,
    facts: ModelFacts,
    action_ids: ActionTokenIds,
    stop_id: int,
) -> list[DecisionSample]:
    """One :class:`DecisionSample` per window (see the module docstring).

    Args:
        episode: Episode id.
        windows: The episode's windows in processing order (visual rows are referenced by list position).
        labels: One per window.
        prompt: The streaming prompt ids (``streaming_prompt_ids`` of ``cfg.generation.instruction``).
        encode: The tokenizer's text -> ids.
        cfg: The streaming configuration the runtime will run with.
        facts: The model's facts.
        action_ids: Ids of the action tokens.
        stop_id: The id that ends a feedback (:func:`feedback_stop_id`).

    Raises:
        ConfigError: If a window does not fit ``context.max_tokens``, or a correction's ids plus the stop id exceed
            ``generation.max_new_tokens``.
    """
    if len(windows) != len(labels):
        raise ValueError(f"{episode}: {len(windows)} windows but {len(labels)} labels")
    gen = cfg.generation
    backend = SymbolicBackend(facts, action_ids)
    rows = facts.num_visual_tokens
    context = DecoderContext(backend, prompt, cfg.context, reserve_tokens=1 + gen.max_new_tokens + len(prompt.turn_end_ids))
    context.check_fits(rows)
    feedback_id = action_ids.id_of(FEEDBACK)
    samples: list[DecisionSample] = []
    for key, (window, label) in enumerate(zip(windows, labels)):
        context.append_window(window, [VisualRef(key, rows)], rows)
        assert backend.last_kv is not None
        snapshot = backend.last_kv.snapshot()
        sample = DecisionSample(episode, window, snapshot, len(snapshot) - len(prompt.window_suffix_ids), label.action,
                                label.train_action)
        if label.action == FEEDBACK:
            text_ids = list(encode(label.text))
            if len(text_ids) + 1 > gen.max_new_tokens:
                raise ConfigError(
                    f"generation.max_new_tokens = {gen.max_new_tokens}: the correction {label.text!r} of {episode} "
                    f"needs {len(text_ids)} tokens plus the stop token"
                )
            sample.text_ids = text_ids + [stop_id]
            context.extend([feedback_id])
            for token in text_ids:  # greedy generation feeds every token it yields before the stop token
                context.extend([token])
            context.end_feedback(None, window.index)
        else:
            context.close_turn(action_ids.id_of(label.action))
        samples.append(sample)
    return samples


def feedback_stop_id(backend: Any, tokenizer: Any, cfg: StreamingConfig) -> int:
    """The token a trained feedback ends with: ``<|im_end|>``, the chat turn's end, which must stop the runtime.

    Args:
        backend: The model backend (its checkpoint generation config and stop ids).
        tokenizer: The model's tokenizer.
        cfg: The streaming configuration the runtime will run.

    Raises:
        ConfigError: If the runtime's stop ids (``generation.stop_tokens``, else the checkpoint's) do not include it:
            the runtime would never stop where the model learned to.
    """
    settings = resolve_generation(cfg.generation, backend.generation, backend.facts.eos_token_ids, tokenizer)
    stop_id = tokenizer.single_token_id(TURN_END, "the chat turn end")
    if stop_id not in settings.stop_ids:
        raise ConfigError(f"generation.stop_tokens: the runtime's stop ids {sorted(settings.stop_ids)} do not include "
                          f"{TURN_END} ({stop_id}), the token a trained feedback ends with")
    return stop_id
