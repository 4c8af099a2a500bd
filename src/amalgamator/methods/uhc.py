"""Unifying Heterogeneous Classifiers (UHC).

Vongkulbhisal, Vinayavekhin & Visentini-Scarzanella (2019), "Unifying Heterogeneous
Classifiers with Distillation" (CVPR), as described in MUKI (`002`) §3.1 and the thesis (`000`)
§3.6, and as SPEC Family A settles it. The original paper is not among the project's papers and
neither description prints a UHC equation, so its own equation numbers are not cited; the
equations below are those of `002` and `000` that state the same relations.

- Teacher i's softmax is the union distribution conditioned on its label set Y_i:
  T_i(y|x) = T(y | x, y ∈ Y_i) = T(y, y ∈ Y_i | x) / T(y ∈ Y_i | x)  (`002` Eq. 2–3; `000` Eq. 10–11).
- UHC applies that relation to the student S: its softmax restricted to Y_i and renormalised,
  S(y | x, y ∈ Y_i) = S(y|x) / Σ_{y' ∈ Y_i} S(y'|x), which is exactly softmax(s[Y_i]), the softmax
  of the student's logits at Y_i's union positions (in teacher i's own label order).
- Each restriction is matched to its teacher by cross-entropy, the form of `000` Eq. 14,
  −Σ_{y ∈ Y_i} T_i(y|x) log S(y | x, y ∈ Y_i) (= KL(T_i ‖ S(·| x, Y_i)) up to the teacher's entropy;
  `002` Eq. 1 writes the KL the other way round), and the per-teacher terms are summed (SPEC):

      L = τ² · Σ_i mean_x [ −Σ_{y ∈ Y_i} softmax(z_i / τ)_y · log softmax(s[Y_i] / τ)_y ]

No teacher's output is ever compared against labels it does not know, which is what
distinguishes UHC from KD over concatenated logits. A label named by several teachers lies in
several restrictions and receives a term from each.

Beyond the sources: the temperature τ (option ``tau``, default 1) is not in either description
or the SPEC. τ = 1 is the loss above with no temperature; τ ≠ 1 softens both sides and scales by
τ², as KD does (Hinton et al. 2015). Rows are averaged (`002` Eq. 1 sums over the data set; a
constant factor, the batch size).
"""

from __future__ import annotations

import torch

from .base import Context, Method, Positive, StudentOutput, register, soft_cross_entropy


@register
class UHC(Method):
    name = "uhc"
    paper = (
        "Vongkulbhisal et al. 2019, Unifying Heterogeneous Classifiers with Distillation (CVPR); "
        "as the baseline in Li et al. 2022 (MUKI) §3.1 and Thadajarassiri 2023 §3.6"
    )
    family = "A: multi-class union"
    summary = "student's softmax restricted to each teacher's labels matches that teacher"
    defaults = {"tau": 1.0}
    rules = {"tau": Positive}

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        self._positions = [ctx.positions(i) for i in range(len(ctx.teachers))]
        tau = float(self.options["tau"])
        # T_i(y|x) = T(y | x, y ∈ Y_i), teacher i's softmax at τ (`002` Eq. 2; `000` Eq. 10)
        return {f"teacher_prob_{i}": (ctx.logits(i) / tau).softmax(-1) for i in range(len(ctx.teachers))}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        tau = float(self.options["tau"])
        total = out.logits.new_zeros(())
        for i, pos in enumerate(self._positions):
            # softmax(s[Y_i]) = S(y | x, y ∈ Y_i), `002` Eq. 2–3 applied to the student; cross-entropy to
            # T_i(y|x) in the form of `000` Eq. 14, averaged over rows; summed over teachers (SPEC)
            total = total + soft_cross_entropy(batch[f"teacher_prob_{i}"], out.logits[:, pos] / tau)
        return (tau**2) * total  # τ² as in KD (not in the sources; τ = 1 by default)
