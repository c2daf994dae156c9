"""The typed artifacts that cross task boundaries: the original θ0, a forget set, its gold, the reference ensemble
of retrains and the shadow originals.

Tasks hand these small frozen objects to each other (through Ray's object store).  They become plain
tensors, numbers and dicts only at the store boundary (``to_store`` / ``from_store``), so the stored form
loads with ``torch.load(weights_only=True)`` or ``json`` and never needs unpickling of our classes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sragu_core.evaluate import GoldReference, OriginalFacts, Predictions
from sragu_core.forget import ForgetSet

__all__ = ["OriginalModel", "ForgetArtifact", "GoldModel", "GoldEnsemble", "Shadows", "StepGolds"]


@dataclass(frozen=True)
class OriginalModel:
    """θ0's weights and what every cell of it shares (α table, test accuracy, training cost)."""

    key: str
    state: dict[str, torch.Tensor]
    facts: OriginalFacts
    train_time_s: float
    train_loss: float
    inputs: dict

    def to_store(self) -> dict:
        return {"state": self.state, "meta": {
            "key": self.key, "alpha": self.facts.alpha, "test_acc": self.facts.test_acc,
            "train_time_s": self.train_time_s, "train_loss": self.train_loss, "inputs": self.inputs}}

    @classmethod
    def from_store(cls, d: dict) -> OriginalModel:
        m = d["meta"]
        return cls(m["key"], d["state"], OriginalFacts(dict(m["alpha"]), m["test_acc"]), m["train_time_s"],
                   m["train_loss"], m["inputs"])


@dataclass(frozen=True)
class ForgetArtifact:
    """A selected forget set under its content key, with the membership attack's non-members (indices into
    D_test, ``nonmember_indices``; null when the forget set was selected without held-out data)."""

    key: str
    forget: ForgetSet

    @property
    def manifest(self) -> dict:
        return self.forget.manifest

    def to_store(self) -> dict:
        nonmembers = self.forget.nonmember_indices
        return {"indices": self.forget.indices.tolist(),
                "nonmember_indices": None if nonmembers is None else nonmembers.tolist(),
                "manifest": {**self.forget.manifest, "key": self.key}}

    @classmethod
    def from_store(cls, d: dict) -> ForgetArtifact:
        manifest = {k: v for k, v in d["manifest"].items() if k != "key"}
        nonmembers = d.get("nonmember_indices")
        return cls(d["manifest"]["key"], ForgetSet(
            torch.tensor(d["indices"], dtype=torch.int64), manifest,
            None if nonmembers is None else torch.tensor(nonmembers, dtype=torch.int64)))


@dataclass(frozen=True)
class GoldModel:
    """The gold (θ0's recipe retrained on D_r): its weights, its reference predictions and values, its cost, and how
    its training ended (epochs run, stop reason)."""

    key: str
    forget_key: str
    state: dict[str, torch.Tensor]
    reference: GoldReference
    time_s: float
    epochs_run: int
    stop_reason: str

    def to_store(self) -> dict:
        r = self.reference
        return {"state": self.state, "pred": {"probs": r.pred.probs, "losses": r.pred.losses, "values": r.values},
                "meta": {"key": self.key, "forget_key": self.forget_key, "method_time_s": self.time_s,
                         "epochs_run": self.epochs_run, "stop_reason": self.stop_reason}}

    @classmethod
    def from_store(cls, d: dict) -> GoldModel:
        p, m = d["pred"], d["meta"]
        ref = GoldReference(Predictions(dict(p["probs"]), dict(p["losses"])), dict(p["values"]))
        return cls(m["key"], m["forget_key"], d["state"], ref, m["method_time_s"], m["epochs_run"], m["stop_reason"])


@dataclass(frozen=True)
class GoldEnsemble:
    """``gold.k`` independent retrains of one forget set, as references: each member's predictions and model
    values (no weights: what every cell needs of them is here), their margins on the query points
    (``margins[split]``: (k, points); ``query[split]``: the points' indices into that split), the noise-floor band
    of every gold-distance metric (``band[metric]``: mean, sd, lo, hi, n_pairs) and the wall time of training."""

    key: str
    forget_key: str
    members: tuple[GoldReference, ...]
    margins: dict[str, torch.Tensor]
    query: dict[str, torch.Tensor]
    band: dict[str, dict[str, float]]
    time_s: float

    def to_store(self) -> dict:
        return {"members": [{"probs": m.pred.probs, "losses": m.pred.losses, "values": m.values}
                            for m in self.members],
                "margins": self.margins, "query": self.query, "band": self.band,
                "meta": {"key": self.key, "forget_key": self.forget_key, "time_s": self.time_s}}

    @classmethod
    def from_store(cls, d: dict) -> GoldEnsemble:
        members = tuple(GoldReference(Predictions(dict(m["probs"]), dict(m["losses"])), dict(m["values"]))
                        for m in d["members"])
        m = d["meta"]
        return cls(m["key"], m["forget_key"], members, dict(d["margins"]), dict(d["query"]),
                   {k: dict(v) for k, v in d["band"].items()}, m["time_s"])


@dataclass(frozen=True)
class Shadows:
    """``shadow.n - 1`` more originals beside θ0 (same data and recipe, own seeds): their weights."""

    key: str
    original_key: str
    states: tuple[dict[str, torch.Tensor], ...]
    time_s: float

    def to_store(self) -> dict:
        return {"states": list(self.states),
                "meta": {"key": self.key, "original_key": self.original_key, "time_s": self.time_s}}

    @classmethod
    def from_store(cls, d: dict) -> Shadows:
        m = d["meta"]
        return cls(m["key"], m["original_key"], tuple(d["states"]), m["time_s"])


@dataclass(frozen=True)
class StepGolds:
    """A sequential regime's per-request references: the requests (``chunks``: the forget set's indices removed by
    each, in order) and, after request t, the reference of a retrain on D minus requests 1..t (its predictions
    and model values on that request's evaluation splits; no weights) plus the wall time of training them."""

    key: str
    forget_key: str
    chunks: tuple[torch.Tensor, ...]
    references: tuple[GoldReference, ...]
    time_s: float

    def to_store(self) -> dict:
        return {"chunks": list(self.chunks),
                "references": [{"probs": r.pred.probs, "losses": r.pred.losses, "values": r.values}
                               for r in self.references],
                "meta": {"key": self.key, "forget_key": self.forget_key, "time_s": self.time_s}}

    @classmethod
    def from_store(cls, d: dict) -> StepGolds:
        refs = tuple(GoldReference(Predictions(dict(r["probs"]), dict(r["losses"])), dict(r["values"]))
                     for r in d["references"])
        m = d["meta"]
        return cls(m["key"], m["forget_key"], tuple(d["chunks"]), refs, m["time_s"])
