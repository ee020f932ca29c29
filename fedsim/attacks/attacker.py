"""The attack harness: the run's adversaries (fedsim/attacks/adversaries.py), attacked and scored.

Each configured adversary is built through the adversary registry and subscribes to the
:class:`~fedsim.network.Network`. After the run, :meth:`AttackHarness.finish` builds each
adversary's observations from the captured bytes alone (plus public knowledge: architecture, lr,
batching, and what its class declares it holds), attacks them, and only then scores the
reconstructions against the private data, which adversaries never touch. What the harness needs
from the codec and the weight domain is typed in :mod:`fedsim.attacks.contracts`.

Under secure aggregation nobody sees a single update: an adversary that saw round ``r``'s and
round ``r + 1``'s global models attacks their difference, the aggregate of round ``r``'s
survivors (the ``sa_unmask`` message names them), as one SGD step on their images together
(:mod:`fedsim.attacks.aggregate`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
from collections import defaultdict
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

from fedsim.attacks import adapters, aggregate
from fedsim.attacks.adversaries import Adversary
from fedsim.attacks.contracts import KeyedDomain, LinearCode, SlotDecoder
from fedsim.attacks.inverting import cosine_distance
from fedsim.attacks.metrics import evaluate, psnr
from fedsim.attacks.observation import Normalization, Observation, ProjectedForwardModel
from fedsim.attacks.plotting import save_reconstruction_grid
from fedsim.attacks.result import AttackResult
from fedsim.codecs.base import UpdateCodec
from fedsim.config import RunConfig
from fedsim.config.registry import ADVERSARIES, ATTACKS
from fedsim.data import Dataset
from fedsim.encryption import EncryptionSetup
from fedsim.keynet.plan import NetworkPlan, plan_network
from fedsim.network import Network
from fedsim.rng import seed_for, torch_generator
from fedsim.trainers import LocalWork
from fedsim.training import batch_schedule
from fedsim.wire import unpack_vector


class AttackHarness:
    """Runs the configured adversaries of one simulation and scores them (engine-facing).

    Parameters
    ----------
    cfg
        The run config (its ``attack`` block must be set).
    network
        The simulated network; every adversary subscribes to it.
    data
        The run's dataset (private samples are read only for scoring).
    parts
        Client index arrays (the partition).
    model
        The initial model (copied as the public architecture).
    codec, crypto
        The run's codec (ENN decoder for server-side adversaries) and encryption set-up (keys
        only for a compromised key agent; keyless adversaries use the KeyNet layout only if they
        captured its ``keynet_layout`` message, and keys only if they captured a ``key``).
    """

    def __init__(self, cfg: RunConfig, network: Network, data: Dataset, parts: list[np.ndarray],
                 model: nn.Module, codec: UpdateCodec, crypto: EncryptionSetup) -> None:
        assert cfg.attack is not None
        self.cfg, self.a = cfg, cfg.attack
        self.data, self.parts, self.codec, self.crypto = data, parts, codec, crypto
        self.template = copy.deepcopy(model).cpu()
        self.norm = Normalization(tuple(data.mean), tuple(data.std))
        self.mean_image = self.norm.denormalize(data.x_train.double()).mean(dim=0).clamp(0, 1)
        self.keyed = crypto.eval_domain if isinstance(crypto.eval_domain, KeyedDomain) else None
        self.adversaries: list[Adversary] = [ADVERSARIES.factory(s.kind)(s)
                                             for s in self.a.adversaries]
        for adv in self.adversaries:
            network.subscribe(adv.on_arrival)
        self._memo: dict[str, AttackResult] = {}
        self._plan: NetworkPlan | None = None  # the KeyNet plan of the architecture, when needed

    def targeted(self, cid: int) -> bool:
        """Whether client ``cid`` may be a target."""
        return self.a.clients is None or cid in self.a.clients

    def client_work(self, cid: int, work: LocalWork) -> LocalWork:
        """Attack-friendly mode: targeted clients take one SGD step on ``batch_size`` images."""
        if self.a.mode != "friendly" or not self.targeted(cid):
            return work
        return type(work)(None, 1, self.a.batch_size, work.lr, 0.0, 0.0)

    # -- ground truth (harness side only) --------------------------------------------------
    def _truth(self, cid: int, rnd: int) -> tuple[Tensor, Tensor, list[Tensor], LocalWork]:
        """Private inputs (first-use order), labels, per-step rows, and the client's work."""
        base = self.cfg.training
        work = self.client_work(cid, LocalWork(base.local_epochs, base.local_steps, base.batch_size,
                                               base.lr, base.momentum, base.weight_decay))
        indices = torch.as_tensor(self.parts[cid], dtype=torch.long)
        batches = batch_schedule(len(indices), batch_size=work.batch_size, epochs=work.epochs,
                                 steps=work.steps,
                                 generator=torch_generator(self.cfg.seed, "client", cid, "batches", rnd))
        used = [indices[b] for b in batches]
        order = list(dict.fromkeys(int(i) for b in used for i in b))
        pos = {s: k for k, s in enumerate(order)}
        schedule = [torch.tensor([pos[int(i)] for i in b]) for b in used]
        rows = torch.tensor(order)
        return self.data.x_train[rows].double(), self.data.y_train[rows], schedule, work

    # -- observations from captured bytes (adversary side) -----------------------------------
    def _observations(self, adv: Adversary, cid: int, rnd: int, shape: tuple[int, ...],
                      schedule: list[Tensor]) -> list[tuple[str, Observation | str, str]]:
        """``(isolation, observation or reason, domain)`` for one target."""
        wire0 = unpack_vector(adv.models[(rnd, cid)])
        arrivals = adv.updates[rnd]
        payload = dict(arrivals)[cid]
        numel = wire0.numel()
        lr = self.cfg.training.lr
        k = self.data.num_classes
        updates: list[tuple[str, Tensor]]
        if isinstance(self.codec, SlotDecoder):  # never decoded one by one: isolate a slot
            if not adv.holds_decoder:
                return [("none", f"no {self.codec.name.upper()} decoder (held by the server)",
                         "none")]
            accepted = [p for _, p in arrivals[: self.cfg.clients_per_round()]]
            index = [c for c, _ in arrivals].index(cid)
            updates = [(m, adapters.enn_isolate(self.codec, accepted, index, m, numel))
                       for m in adv.isolations(self.a.enn_isolation)]
        else:
            try:
                updates = [("none", self.codec.decode(payload, numel=numel))]
            except NotImplementedError:
                return [("none", f"codec {self.codec.name!r} cannot decode a single update", "none")]
            if isinstance(self.codec, LinearCode) and adv.tunes_to_scheme:
                updates.append(("code_aware", updates[0][1]))
        out = []
        for iso, delta in updates:
            if self.keyed is not None and not adv.holds_keys and adv.key_payload is None:
                if len(schedule) != 1:
                    out.append((iso, "encrypted-domain attack needs one local step", "encrypted"))
                    continue
                if self.keyed.relative:
                    out.append((iso, "relative ciphertext (init_by: server)", "encrypted"))
                    continue
                if adv.layout_payload is None:
                    out.append((iso, "no KeyNet layout captured (it goes to the server)",
                                "encrypted"))
                    continue
                if self._plan is None:  # public: the architecture alone
                    self._plan = plan_network(self.template, shape[1:], lower=True)
                layout = adapters.EncryptedLayout.from_message(adv.layout_payload, self._plan)
                obs = adapters.encrypted_observation(layout, wire0, delta, lr, shape, k, self.norm)
                out.append((iso, obs, "encrypted"))
                continue
            model = copy.deepcopy(self.template)
            if self.keyed is not None:  # the key agent generated the keys, or they were captured
                dom = (self.crypto.eval_domain
                       if adv.key_payload is None or self.crypto.domain_from_key is None else
                       self.crypto.domain_from_key(adv.key_payload, adv.init_payload))
                s0, s1 = dom.from_wire(wire0), dom.from_wire(wire0 + delta)
                delta = torch.cat([(s1[n] - s0[n]).reshape(-1).float() for n in s0])
                model.load_state_dict(s0, strict=False)
            else:
                model.load_state_dict(self.crypto.eval_domain.from_wire(wire0), strict=False)
            obs = adapters.update_observation(model, delta, lr, schedule, shape, k, self.norm)
            if iso == "code_aware":  # match candidates through the code the payload was sent in
                projected = ProjectedForwardModel(obs.forward_model, model,
                                                  self.codec.entry_codes(payload))
                obs = dataclasses.replace(obs, forward_model=projected)
            out.append((iso, obs, "plain"))
        return out

    def _attack(self, obs: Observation, strategy: str, encrypted: bool, seed: int,
                labels: Tensor) -> AttackResult:
        h = hashlib.sha1(repr((strategy, encrypted, seed, obs.forward_model.describe())).encode())
        for t in obs.target:
            h.update(t.detach().numpy().tobytes())
        key = h.hexdigest()
        if key not in self._memo:
            method = ATTACKS.factory(self.a.method)
            known = labels if strategy == "known" else None
            conf = method.settings(self.a, strategy, encrypted)
            self._memo[key] = method.run(obs, conf, seed=seed, labels=known)
        return self._memo[key]

    def _strategy(self, batch: int) -> str:
        if self.a.labels == "known":
            return "known"
        if ATTACKS.factory(self.a.method).joint_labels:
            return "joint"
        return "idlg" if batch == 1 else "bias"

    def finish(self) -> tuple[pd.DataFrame, dict[str, bytes]]:
        """Attack every adversary's targets; the ``attacks`` table rows and PNG grids."""
        rows: list[dict[str, Any]] = []
        grids: dict[str, list[tuple[Tensor, Tensor, float]]] = defaultdict(list)
        for adv in self.adversaries:
            if self.cfg.secure_aggregation.kind != "none":
                scored = [self._score(adv, "aggregate", "plain", obs, inputs, labels, rnd, -1,
                                      t, aggregate_clients=r)
                          for t, (rnd, r, obs, inputs, labels) in
                          enumerate(aggregate.observations(self, adv))]
                grids[f"{adv.kind}_aggregate"] += [row.pop("_images") for row in scored
                                                   if "_images" in row]
                rows += scored
                continue
            targets = sorted((r, c) for (r, c) in adv.models
                             if r in self.a.rounds and self.targeted(c)
                             and c in dict(adv.updates.get(r, [])))[: self.a.max_targets]
            for t_index, (rnd, cid) in enumerate(targets):
                inputs, labels, schedule, _ = self._truth(cid, rnd)
                shape = tuple(inputs.shape)
                for iso, obs, domain in self._observations(adv, cid, rnd, shape, schedule):
                    row = self._score(adv, iso, domain, obs, inputs, labels, rnd, cid, t_index)
                    rows.append(row)
                    if "_images" in row:
                        grids[f"{adv.kind}{'' if iso == 'none' else '_' + iso}"].append(
                            row.pop("_images"))
        files = {f"attack_{self.cfg.scheme}_{name}.png": _grid_png(items[: self.a.grid_images])
                 for name, items in grids.items() if self.a.grid_images and items}
        return pd.DataFrame(rows), files

    def _score(self, adv: Adversary, iso: str, domain: str, obs: Observation | str,
               inputs: Tensor, labels: Tensor, rnd: int, cid: int, t_index: int,
               **extra: Any) -> dict[str, Any]:
        """One attacks-table row (``cid`` -1: an aggregate; ``extra``: more columns)."""
        row: dict[str, Any] = {
            "scheme": self.cfg.scheme, "seed": self.cfg.seed, "adversary": adv.kind,
            "adversary_view": adv.name, "isolation": iso, "domain": domain, "round": rnd,
            "client": cid, "target": t_index, "n_images": int(inputs.shape[0]),
            "keys_captured": adv.key_payload is not None,
            "mode": self.a.mode, "method": self.a.method, **extra,
        }
        if isinstance(obs, str):
            return {**row, "status": f"not attacked: {obs}"}
        truth = inputs
        if domain == "encrypted":  # the harness encrypts the truth only to score x̂
            from fedsim.keynet import encrypt_input

            assert self.keyed is not None  # the encrypted domain exists only with keys
            truth = encrypt_input(self.keyed.input_key(), inputs).reshape(inputs.shape)
        with torch.enable_grad():
            sim = [s.detach() for s in obs.forward_model(truth.clone(), labels)]
        cos = 1.0 - float(cosine_distance(sim, obs.target))
        err = float(torch.sqrt(sum(((s - o) ** 2).sum() for s, o in zip(sim, obs.target))
                               / sum((s**2).sum() for s in sim)))
        strategy = self._strategy(int(inputs.shape[0]))
        result = self._attack(obs, strategy, domain == "encrypted",
                              seed_for(self.cfg.seed, "attack", rnd,
                                       cid if cid >= 0 else "aggregate"), labels)
        metrics = evaluate(result.reconstruction, inputs, self.norm, result.labels, labels,
                           self.mean_image)
        row.update(status="attacked",
                   knowledge=adv.knowledge(domain, strategy),
                   obs_cosine=cos, obs_rel_error=err, **result.record(), **metrics.summary())
        row["psnr_db"] = row.pop("psnr_mean_db")
        row["ssim"] = row.pop("ssim_mean")
        rec01 = self.norm.denormalize(result.reconstruction).clamp(0, 1)
        if domain == "encrypted":
            row["psnr_encrypted_db"] = float(np.mean(psnr(rec01, self.norm.denormalize(truth))))
        orig = self.norm.denormalize(inputs).clamp(0, 1)
        row["_images"] = (orig[0], rec01[int(metrics.order[0])], row["psnr_db"])
        return row


def _grid_png(items: list[tuple[Tensor, Tensor, float]]) -> bytes:
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "grid.png"
        save_reconstruction_grid(torch.stack([o for o, _, _ in items]),
                                 torch.stack([r for _, r, _ in items]), path,
                                 [p for _, _, p in items])
        return path.read_bytes()
