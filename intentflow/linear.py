"""A linear model of the examples, folded into the network: its logits mixed with the MLP's, in the MLP's own shape.

A bag-of-words MLP trained on hundreds of paraphrases per outcome and a logistic regression on the examples alone
make different mistakes, so the mean of their logits scores better than either (docs/decisions.md).

The mixture needs no second model at serving time. ``share * z + (1 - share) * mlp(x)``, with ``z = W x + b`` the
linear logits, is a wider network of the same shape: ``z = relu(z) - relu(-z)``, so ``W`` and ``-W`` become
``2 x labels`` more hidden units that pass the linear logits through every ReLU (identity weights in deeper
layers), and the output layer adds them at ``share``. PyTorch, NumPy and ONNX serving read it as any other network.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from intentflow.features import Vocabulary
from intentflow.model import IntentMLP, val_scores

if TYPE_CHECKING:
    from intentflow.trained import TrainedModel

logger = logging.getLogger(__name__)

# Inverse L2 strength of the logistic regression, as scikit-learn's C: the loss summed over rows plus half the
# squared weights over C. Accuracy is flat from 30 to 300 (docs/decisions.md).
LINEAR_C = 100.0
# L-BFGS iterations at most; the 1,350 examples of CLINC150 10-shot converge in fewer.
MAX_ITERATIONS = 500
# Pairs of vectors L-BFGS keeps (scipy's default), each as large as the weights, [used features, labels]: 10 reach
# the objective 20 do, in a third less memory and time.
HISTORY = 10


def fit_linear(vocab: Vocabulary, texts: Sequence[str], targets: torch.Tensor, num_labels: int,
               device: torch.device, c: float = LINEAR_C) -> tuple[torch.Tensor, torch.Tensor]:
    """L2-regularised softmax regression on the bags of ``texts``: weights ``[len(vocab), labels]`` and bias.

    Only features the texts hold get a non-zero row (the others have no gradient and the penalty keeps them at 0),
    so L-BFGS works on those rows alone. Deterministic: full batch, zero start.
    """
    indices, weights, lengths = (tensor.to(device) for tensor in vocab.encode_flat(list(texts)))
    targets = targets.to(device)
    used, renumbered = torch.unique(indices, return_inverse=True)
    offsets = torch.cumsum(lengths, dim=0) - lengths
    rows = torch.zeros((len(used), num_labels), device=device, requires_grad=True)
    bias = torch.zeros(num_labels, device=device, requires_grad=True)
    penalty = 1.0 / (2.0 * c * max(len(texts), 1))
    optimizer = torch.optim.LBFGS([rows, bias], lr=1.0, max_iter=MAX_ITERATIONS, history_size=HISTORY,
                                  tolerance_grad=1e-6, tolerance_change=1e-9, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = F.embedding_bag(renumbered, rows, offsets=offsets, per_sample_weights=weights, mode="sum") + bias
        loss = F.cross_entropy(logits, targets) + penalty * rows.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    full = torch.zeros((len(vocab), num_labels), device=device)
    full[used] = rows.detach()
    full[0] = 0.0  # padding
    return full, bias.detach()


def fold_linear(model: IntentMLP, weight: torch.Tensor, bias: torch.Tensor, share: float) -> IntentMLP:
    """``model`` widened by the linear model ``(weight [vocab, labels], bias)``: logits ``share`` linear, the rest
    the MLP's. The same function for every input, in one network of hidden width ``hidden + 2 x labels``."""
    if model.dense_input:
        raise ValueError("fold_linear takes a bag-of-words network")
    state = {name: value.detach() for name, value in model.state_dict().items()}
    hidden, labels = state["input_bias"].shape[0], bias.shape[0]
    extra = 2 * labels
    device = state["input_bias"].device
    weight, bias = weight.to(device), bias.to(device)
    folded = IntentMLP(weight.shape[0], labels, hidden + extra, len(model.hidden) + 1, model.dropout.p).to(device)
    state["input.weight"] = torch.cat([state["input.weight"], weight, -weight], dim=1)
    state["input_bias"] = torch.cat([state["input_bias"], torch.zeros(extra, device=device)])
    identity = torch.eye(extra, device=device)
    for index in range(len(model.hidden)):
        old = state[f"hidden.{index}.weight"]
        state[f"hidden.{index}.weight"] = torch.block_diag(old, identity)
        state[f"hidden.{index}.bias"] = torch.cat([state[f"hidden.{index}.bias"], torch.zeros(extra, device=device)])
    eye = torch.eye(labels, device=device) * share
    state["output.weight"] = torch.cat([state["output.weight"] * (1.0 - share), eye, -eye], dim=1)
    state["output.bias"] = state["output.bias"] * (1.0 - share) + bias * share
    folded.load_state_dict(state)
    return folded.train(model.training)


def fold_into(result: TrainedModel, texts: Sequence[str], labels: Sequence[str], label_index: dict[str, int],
                 val: tuple[list[torch.Tensor], torch.Tensor] | None) -> None:
    """Fit the linear model of ``texts`` and fold it into ``result.model`` at ``linear_share`` (bag-of-words only).

    With validation rows the folded network is scored on them, and kept only if it scores at least the MLP's
    validation accuracy; its loss and accuracy then become the model's (``metrics``), ``history`` keeps the MLP's.
    Otherwise the MLP stays alone and ``result.linear`` None: on data whose validation rows hold words the examples
    never did (the bundled outcomes' synonyms) the mixture scores worse than the MLP (docs/decisions.md).
    """
    share = result.config.linear_share
    if not share or result.model.dense_input or not texts:
        return
    device = torch.device(result.device)
    targets = torch.tensor([label_index[label] for label in labels], device=device)
    weight, bias = fit_linear(result.vocab, texts, targets, len(result.labels), device)
    alone = result.model
    folded = fold_linear(alone, weight, bias, share).eval()
    if val is not None and result.history:
        scores = val_scores(folded, val, result.config.label_smoothing)
        mlp_accuracy = result.history[result.best_epoch - 1].val_accuracy
        if mlp_accuracy is not None and scores["val_accuracy"] < mlp_accuracy:
            logger.info("linear model of %d examples not folded in: validation accuracy %.4f with it at share %.2f, "
                        "%.4f without", len(texts), scores["val_accuracy"], share, mlp_accuracy)
            return
        result.folded_scores = scores
    result.model = folded
    result.linear = {"share": share, "c": LINEAR_C, "examples": len(texts),
                     "hidden_units": folded.input_bias.shape[0] - alone.input_bias.shape[0]}
    logger.info("linear model of %d examples folded in at share %.2f (%d hidden units more)", len(texts), share,
                result.linear["hidden_units"])
