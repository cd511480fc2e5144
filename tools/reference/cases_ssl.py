"""SSL losses, written as the official code computes them (the repositories are named beside
each function). C++ twins: tests/ops_ssl.cpp (same names). A case whose name ends in
_composite runs the same formula; the C++ side checks its composite implementation on it,
while the plain name checks the fused kernel.

Inputs behind a stop-gradient (BYOL / SimSiam targets, DINO's teacher and centre) are marked
constant with `constant(...)`: gen_ops.py then stores no gradient for them, and the C++ case
skips them in gradcheck."""
import numpy as np
import torch
import torch.nn.functional as F

from gen_ops import Case, const, randn, uniform


def constant(fn, *indices):
    """Wraps fn so the inputs at `indices` take no gradient (gen_ops stores no grad.i for them)."""
    def wrapped(*xs):
        for i in indices:
            xs[i].requires_grad_(False)
        return fn(*xs)
    return wrapped


def unit_rows(*shape):
    """Rows of unit L2 norm (f32): a MoCo queue holds normalised keys."""
    def make(g):
        a = g.standard_normal(shape)
        return (a / np.linalg.norm(a, axis=-1, keepdims=True)).astype(np.float32)
    return make


def mask(rows):
    return const(np.array(rows, dtype=bool))


# ---------------------------------------------------------------- NT-Xent

def nt_xent_simclr(z, temperature):
    """SimCLR's NT-Xent as cross-entropy: the partner (i + M/2) mod M is the label, the anchor's
    own similarity is masked out (google-research/simclr objective.py, written on 2N rows)."""
    m = z.shape[0]
    zn = F.normalize(z, dim=1)
    logits = zn @ zn.T / temperature
    logits = logits.masked_fill(torch.eye(m, dtype=torch.bool), float("-inf"))
    labels = (torch.arange(m) + m // 2) % m
    return F.cross_entropy(logits, labels)


def nt_xent_supcon(z, positives, temperature):
    """SupConLoss (HobbitLong/SupContrast losses.py, 'all' contrast mode, base_temperature =
    temperature) on L2-normalised embeddings with an explicit positive mask."""
    m = z.shape[0]
    features = F.normalize(z, dim=1)
    anchor_dot_contrast = features @ features.T / temperature
    logits_max, _ = torch.max(anchor_dot_contrast, dim=1, keepdim=True)
    logits = anchor_dot_contrast - logits_max.detach()
    logits_mask = 1.0 - torch.eye(m, dtype=z.dtype)
    pos = positives.to(z.dtype) * logits_mask
    exp_logits = torch.exp(logits) * logits_mask
    log_prob = logits - torch.log(exp_logits.sum(1, keepdim=True))
    mean_log_prob_pos = (pos * log_prob).sum(1) / pos.sum(1)
    return -mean_log_prob_pos.mean()


def groups_mask(groups):
    g = np.array(groups)
    return (g[:, None] == g[None, :]) & ~np.eye(len(g), dtype=bool)


# 4 images, 2 views: images 0 and 2 share a class (semantic positives).
GROUPS = [0, 1, 0, 2, 0, 1, 0, 2]
# Pairs plus mined neighbours that are not symmetric: 0 -> 5, 3 -> 1 and 3 -> 6.
MINED = groups_mask([0, 1, 2, 3, 0, 1, 2, 3])
MINED[0, 5] = MINED[3, 1] = MINED[3, 6] = True

# ---------------------------------------------------------------- MoCo v2


def info_nce_moco(q, k, queue, temperature):
    """facebookresearch/moco builder.py: normalised q, k; l_pos, l_neg; CE towards index 0.
    The queue is stored (dim, K) there; here its transpose (K, dim)."""
    q = F.normalize(q, dim=1)
    k = F.normalize(k, dim=1)
    l_pos = torch.einsum("nc,nc->n", [q, k]).unsqueeze(-1)
    l_neg = torch.einsum("nc,ck->nk", [q, queue.T])
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(logits.shape[0], dtype=torch.long)
    return F.cross_entropy(logits, labels)


# ---------------------------------------------------------------- BYOL, SimSiam


def byol_ref(p1, p2, z1, z2):
    """deepmind byol: regression_loss = sum((l2_normalize(x) - l2_normalize(y))^2) = 2 - 2 cos,
    the two directions summed, then the batch mean."""
    def regression_loss(x, y):
        return torch.sum((F.normalize(x, dim=-1) - F.normalize(y, dim=-1)) ** 2, dim=-1)
    return (regression_loss(p1, z2.detach()) + regression_loss(p2, z1.detach())).mean()


def simsiam_ref(p1, p2, z1, z2):
    """facebookresearch/simsiam main_simsiam.py: criterion = nn.CosineSimilarity(dim=1)."""
    criterion = torch.nn.CosineSimilarity(dim=1)
    return -(criterion(p1, z2.detach()).mean() + criterion(p2, z1.detach()).mean()) * 0.5


# ---------------------------------------------------------------- DINO


def dino_ref(ncrops, student_temp, teacher_temp):
    """facebookresearch/dino main_dino.py DINOLoss.forward (the centre update is separate)."""
    def loss(student_output, teacher_output, center):
        student_out = (student_output / student_temp).chunk(ncrops)
        teacher_out = F.softmax((teacher_output - center) / teacher_temp, dim=-1).detach()
        teacher_out = teacher_out.chunk(teacher_output.shape[0] // student_out[0].shape[0])
        total_loss, n_loss_terms = 0, 0
        for iq, q in enumerate(teacher_out):
            for v in range(len(student_out)):
                if v == iq:
                    continue
                total_loss += torch.sum(-q * F.log_softmax(student_out[v], dim=-1), dim=-1).mean()
                n_loss_terms += 1
        return total_loss / n_loss_terms
    return constant(loss, 1, 2)


def weight_norm_linear(x, g, v):
    """DINOHead.last_layer = nn.utils.weight_norm(nn.Linear(in, out, bias=False)): its weight is
    torch._weight_norm(weight_v, weight_g, dim=0)."""
    return x @ torch._weight_norm(v, g, 0).T


# ---------------------------------------------------------------- VICReg, Barlow Twins


def off_diagonal(x):
    n, m = x.shape
    return x.flatten()[:-1].view(n - 1, n + 1)[:, 1:].flatten()


def vicreg_terms(x, y, sim_coeff=25.0, std_coeff=25.0, cov_coeff=1.0):
    """facebookresearch/vicreg main_vicreg.py VICReg.forward on one device (no gather)."""
    n, d = x.shape
    repr_loss = F.mse_loss(x, y)
    x = x - x.mean(dim=0)
    y = y - y.mean(dim=0)
    std_x = torch.sqrt(x.var(dim=0) + 0.0001)
    std_y = torch.sqrt(y.var(dim=0) + 0.0001)
    std_loss = torch.mean(F.relu(1 - std_x)) / 2 + torch.mean(F.relu(1 - std_y)) / 2
    cov_x = (x.T @ x) / (n - 1)
    cov_y = (y.T @ y) / (n - 1)
    cov_loss = off_diagonal(cov_x).pow(2).sum() / d + off_diagonal(cov_y).pow(2).sum() / d
    loss = sim_coeff * repr_loss + std_coeff * std_loss + cov_coeff * cov_loss
    return loss, repr_loss, std_loss, cov_loss


def barlow_terms(z1, z2, lambd=0.0051):
    """facebookresearch/barlowtwins main.py BarlowTwins.forward on one device: a non-affine
    BatchNorm1d in training mode on each branch."""
    bn = torch.nn.BatchNorm1d(z1.shape[1], affine=False).double()
    c = bn(z1).T @ bn(z2)
    c = c / z1.shape[0]
    on_diag = torch.diagonal(c).add(-1).pow(2).sum()
    off_diag = off_diagonal(c).pow(2).sum()
    return on_diag + lambd * off_diag, on_diag, off_diag


def both(name, inputs, fn):
    """The case for the fused kernel and its _composite twin (different seeds, same formula)."""
    return [Case(name, inputs, fn), Case(name + "_composite", inputs, fn)]


CASES = [
    *both("ntxent_pairs", [randn(8, 5)], lambda z: nt_xent_simclr(z, 0.5)),
    *both("ntxent_pairs_cold", [randn(6, 4, scale=3.0)], lambda z: nt_xent_simclr(z, 0.1)),
    *both("ntxent_groups", [randn(8, 5), mask(groups_mask(GROUPS))], lambda z, p: nt_xent_supcon(z, p, 0.2)),
    *both("ntxent_mined", [randn(8, 3), mask(MINED)], lambda z, p: nt_xent_supcon(z, p, 0.3)),
    *both("infonce_queue", [randn(4, 5), randn(4, 5), unit_rows(6, 5)],
          lambda q, k, queue: info_nce_moco(q, k, queue, 0.2)),
    *both("infonce_queue_warm", [randn(3, 4, scale=2.0), randn(3, 4), unit_rows(9, 4)],
          lambda q, k, queue: info_nce_moco(q, k, queue, 1.0)),
    *both("byol_loss", [randn(5, 4), randn(5, 4), randn(5, 4), randn(5, 4)], constant(byol_ref, 2, 3)),
    *both("simsiam_loss", [randn(5, 4), randn(5, 4), randn(5, 4), randn(5, 4)], constant(simsiam_ref, 2, 3)),
    *both("dino_loss_2crops", [randn(6, 7), randn(6, 7), randn(1, 7, scale=0.3)], dino_ref(2, 0.1, 0.04)),
    *both("dino_loss_multicrop", [randn(10, 6), randn(4, 6), randn(1, 6, scale=0.3)], dino_ref(5, 0.1, 0.07)),
    Case("dino_weight_norm_linear", [randn(3, 4), uniform(0.5, 1.5, 5, 1), randn(5, 4)], weight_norm_linear),
    *both("vicreg_loss", [randn(6, 4, scale=0.7), randn(6, 4, scale=2.0)], lambda x, y: vicreg_terms(x, y)[0]),
    *both("vicreg_terms", [randn(6, 4, scale=0.7), randn(6, 4, scale=2.0)],
          lambda x, y: torch.stack(vicreg_terms(x, y, 10.0, 5.0, 2.0))),
    *both("barlow_loss", [randn(6, 4), randn(6, 4)], lambda a, b: barlow_terms(a, b)[0]),
    *both("barlow_terms", [randn(6, 4), randn(6, 4)], lambda a, b: torch.stack(barlow_terms(a, b, 0.5))),
]
