"""The playbook's training loop as its user would have written it: the reference intentflow is measured against.

Dense bag-of-words tensors, ``TensorDataset`` + ``DataLoader``, ``nn.Dropout``, default AdamW, a ``.item()``
per step for logging, and validation every epoch. Kept deliberately plain; do not optimise it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def dense_bag_of_words(texts: list[str], vocab: dict[str, int], tokenize) -> torch.Tensor:
    features = torch.zeros(len(texts), len(vocab))
    for row, text in enumerate(texts):
        for token in tokenize(text):
            if token in vocab:
                features[row, vocab[token]] = 1.0
    return features


def build_model(vocab_size: int, num_labels: int, hidden_size: int, hidden_layers: int, dropout: float) -> nn.Module:
    layers: list[nn.Module] = []
    width = vocab_size
    for _ in range(hidden_layers):
        layers += [nn.Linear(width, hidden_size), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden_size
    layers.append(nn.Linear(width, num_labels))
    return nn.Sequential(*layers)


def train_reference(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor, val_y: torch.Tensor,
                    num_labels: int, epochs: int, lr: float, batch_size: int, hidden_size: int, hidden_layers: int,
                    dropout: float, weight_decay: float, seed: int,
                    label_smoothing: float = 0.0) -> list[dict[str, float]]:
    torch.manual_seed(seed)
    model = build_model(train_x.shape[1], num_labels, hidden_size, hidden_layers, dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
    loader = DataLoader(TensorDataset(train_x, train_y), batch_size=batch_size, shuffle=True)
    history = []
    for epoch in range(epochs):
        model.train()
        total_loss, correct, seen = 0.0, 0, 0
        for features, labels in loader:
            optimizer.zero_grad()
            logits = model(features)
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        model.eval()
        with torch.no_grad():
            val_logits = model(val_x)
            val_loss = loss_fn(val_logits, val_y).item()
            val_acc = (val_logits.argmax(1) == val_y).float().mean().item()
        history.append({"epoch": epoch + 1, "train_loss": total_loss / seen, "train_accuracy": correct / seen,
                        "val_loss": val_loss, "val_accuracy": val_acc})
    return history
