"""``cluster-route``: route whole clusters of the pool, not single rows, under an equal-share constraint.

One row says little about which teacher owns it; a cluster of similar rows says more, and the pool
as a whole must spread over the union's classes. With the pool cut into *perfect* class clusters,
assigning clusters to labels by the teachers' mean log-probability under the constraint that every
label receives one cluster recovers 24 of Letters' 26 letters from 13 two-letter teachers (measured),
where per-row confidence routing gets a third of the rows right. This method is that idea with
clusters found without labels:

1. **Signature** of a row: for every union label y, the mean log-probability its owners give it,
   s(x)_y = mean_{k ∋ y} log p_k(y | x), standardised per label (rows of one class share it).
2. **Clusters**: k-means (Lloyd; scikit-learn, fixed seed) on the signatures, ``clusters_per_label``
   × |Y| clusters (over-segmenting keeps clusters purer).
3. **Equipartition** (Asano et al. 2020, "Self-labelling via simultaneous clustering and
   representation learning", ICLR, Eq. 4–5: the label assignment as optimal transport solved by
   Sinkhorn–Knopp, Cuturi 2013): maximise Σ_{c,y} T_{c,y} S_{c,y} with S_{c,y} the cluster's mean
   s_y (unstandardised), rows of T summing to the cluster's share of the pool and columns to the
   class prior (uniform), entropic weight ``epsilon``.
4. **Gate and target**: the cluster's label distribution T_c / Σ T_c gives each teacher its mass
   P(k | c) = Σ_{y ∈ Y_k} T_{c,y} / Σ T_c (labels shared by several owners split evenly), and every
   row learns the gated mixture Σ_k P(k | c(x)) softmax(z_k(x)) placed in the union.

On Letters the clusters are the bottleneck (k-means purity 0.44 at 26 clusters, 0.81 at 400), and
the method does not beat ``calibrated``: see bench/results/experts.md.
"""

from __future__ import annotations

import torch

from .base import Context, Count, Method, Positive, StudentOutput, register, soft_cross_entropy
from .mahalanobis import routed_mixture


def signatures(ctx: Context) -> torch.Tensor:
    """(rows, union): each label's mean log-probability over the teachers that name it (step 1)."""
    total = torch.zeros(len(ctx), len(ctx.union), dtype=torch.float64)
    for i in range(len(ctx.teachers)):
        total[:, ctx.positions(i)] += ctx.logits(i).double().log_softmax(-1)
    return total / ctx.owners.double().sum(0).clamp(min=1)


def sinkhorn(score: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, epsilon: float,
             iterations: int = 500) -> torch.Tensor:  # fmt: skip
    """Entropic optimal transport maximising Σ T·score with row sums ``rows`` and column sums ``cols``
    (Cuturi 2013), in the log domain so a small ``epsilon`` does not underflow."""
    log_k = (score - score.max()) / epsilon
    log_u, log_v = torch.zeros(len(rows), dtype=score.dtype), torch.zeros(len(cols), dtype=score.dtype)
    for _ in range(iterations):
        log_u = rows.log() - torch.logsumexp(log_k + log_v[None, :], 1)
        log_v = cols.log() - torch.logsumexp(log_k + log_u[:, None], 0)
    return (log_u[:, None] + log_k + log_v[None, :]).exp()


@register
class ClusterRoute(Method):
    name = "cluster-route"
    paper = (
        "ours: pool clusters assigned to labels by equipartition optimal transport (Asano et al. 2020, "
        "Self-labelling via simultaneous clustering and representation learning, Eq. 4-5; Cuturi 2013)"
    )
    family = "A: multi-class union"
    summary = "clusters the pool on the teachers' outputs and routes whole clusters, every label an equal share"
    defaults = {"clusters_per_label": 2, "epsilon": 0.05}
    rules = {"clusters_per_label": Count, "epsilon": Positive}

    def prepare(self, ctx: Context) -> dict[str, torch.Tensor]:
        from sklearn.cluster import KMeans

        sig = signatures(ctx)
        z = ((sig - sig.mean(0)) / sig.std(0).clamp(min=1e-9)).numpy()
        k = min(len(ctx), int(self.options["clusters_per_label"]) * len(ctx.union))
        cluster = torch.as_tensor(KMeans(k, n_init=2, random_state=0).fit_predict(z)).long()
        sizes = torch.bincount(cluster, minlength=k).double()
        used = sizes > 0
        onehot = torch.nn.functional.one_hot(cluster, k).double()[:, used]
        mean_sig = onehot.T @ sig / sizes[used][:, None]
        prior = torch.full((len(ctx.union),), 1 / len(ctx.union), dtype=torch.float64)
        plan = sinkhorn(mean_sig, sizes[used] / sizes.sum(), prior, float(self.options["epsilon"]))
        label_given_cluster = plan / plan.sum(1, keepdim=True)
        split = ctx.owners.double() / ctx.owners.double().sum(0, keepdim=True).clamp(min=1)
        teacher_given_cluster = label_given_cluster @ split.T  # (clusters, teachers)
        gate = onehot @ teacher_given_cluster
        target = routed_mixture(ctx, gate).float()
        self.diagnostics = {"routing": gate.float(), "target": target, "cluster": cluster}
        return {"target": target}

    def loss(self, batch: dict[str, torch.Tensor], out: StudentOutput) -> torch.Tensor:
        return soft_cross_entropy(batch["target"], out.logits)
