#!/usr/bin/env python3
"""Writes the references of siam's evaluation tests (tests/test_eval.cpp, tests/test_eval_emd.cpp).

Usage: gen_eval.py OUT_DIR

knn.safetensors     Features of 5 noisy Gaussian clusters (train 240 x 16, test 80 x 16, f32)
                    and, for k in {20, 200} and T in {0.07, 0.1}, the predictions of DINO's
                    weighted kNN (eval_knn.py's knn_classifier) computed by PyTorch in f64:
                    pred.k<k>.t<T>, plus per test row the vote margin (top class minus
                    runner-up, relative to the top) and the similarity gap between neighbour
                    k and k + 1, so the f32 test can leave out rows a rounding could flip.
linear.safetensors  Features of 4 overlapping clusters (train 300 x 12, test 100 x 12, f32),
                    initial weight (4, 12) and bias, and two linear-probe runs by PyTorch in f64
                    with siam's recipe: cross-entropy, torch.optim.SGD (momentum 0.9, weight
                    decay 1e-3), cosine learning rate per step from 0.5 to 0, batch 64 (the last
                    one short), 5 epochs, epoch e in the order of the e-th siam randperm of
                    Generator(7) (philox.py); run "std" standardises the features with the
                    training mean and population std, run "raw" does not. Per run: final weight
                    and bias, the mean loss of each epoch, train and test top-1. When
                    scikit-learn is installed, sklearn.test_top1 is the test top-1 of its
                    LogisticRegression on the standardised features: a second, independent
                    reference for the probe trained to convergence.
emd.safetensors     Cost matrices and their optimal values: assignment.<name> (scipy.optimize.
                    linear_sum_assignment; square and rectangular) and transport.<name>
                    (scipy.optimize.linprog, HiGHS, on the transportation problem with masses
                    1/n and 1/m); and features emd_a / emd_b whose EMD (cost 1 - cosine) is
                    emd_value. Without SciPy no emd.safetensors is written.
Metadata: format_version, torch_version (and scipy_version, sklearn_version).
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import philox  # noqa: E402
import st  # noqa: E402

FORMAT_VERSION = 1


def clusters(g, n, dim, classes, spread):
    centres = g.standard_normal((classes, dim)) * 1.5
    y = np.arange(n) % classes
    g.shuffle(y)
    x = centres[y] + spread * g.standard_normal((n, dim))
    return x.astype(np.float32), y.astype(np.int64)


# ---------------------------------------------------------------- kNN

def knn_reference(train, train_y, test, k, t, classes):
    """DINO eval_knn.py knn_classifier, one batch, in f64."""
    train = torch.nn.functional.normalize(torch.from_numpy(train).double(), dim=1)
    test = torch.nn.functional.normalize(torch.from_numpy(test).double(), dim=1)
    sim = test @ train.T
    dist, idx = sim.topk(k + 1 if k < train.shape[0] else k, largest=True, sorted=True)
    gap = (dist[:, k - 1] - dist[:, k]) if k < train.shape[0] else torch.full((test.shape[0],), np.inf, dtype=torch.float64)
    dist, idx = dist[:, :k], idx[:, :k]
    retrieved = torch.from_numpy(train_y)[idx]
    one_hot = torch.zeros(test.shape[0] * k, classes, dtype=torch.float64)
    one_hot.scatter_(1, retrieved.reshape(-1, 1), 1)
    probs = (one_hot.view(test.shape[0], k, classes) * dist.div(t).exp().view(test.shape[0], k, 1)).sum(1)
    top2 = probs.topk(2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]) / top2[:, 0]
    return probs.argmax(1).numpy(), margin.numpy(), gap.numpy()


def write_knn(out_dir):
    g = np.random.default_rng(1001)
    x, y = clusters(g, 320, 16, 5, 1.6)
    train, train_y, test, test_y = x[:240], y[:240], x[240:], y[240:]
    tensors = {"train": train, "train_labels": train_y, "test": test, "test_labels": test_y}
    for k in (20, 200):
        for t in (0.07, 0.1):
            pred, margin, gap = knn_reference(train, train_y, test, k, t, 5)
            key = f"k{k}.t{t}"
            tensors["pred." + key] = pred
            tensors["margin." + key] = margin
            tensors["gap." + key] = gap
            print(f"gen_eval.py: kNN {key}: top-1 {100 * np.mean(pred == test_y):.2f}%")
    st.save(os.path.join(out_dir, "knn.safetensors"), tensors,
            {"format_version": FORMAT_VERSION, "torch_version": torch.__version__})


# ---------------------------------------------------------------- linear probe

EPOCHS, BATCH, LR, MOMENTUM, WD, SEED = 5, 64, 0.5, 0.9, 1e-3, 7


def randperm(n, seed, offset):
    """siam's randperm: Fisher-Yates from the top, word i of the stream decides position i."""
    w = philox.words(seed, offset, n).astype(np.uint64)
    p = np.arange(n)
    for i in range(n - 1, 0, -1):
        j = int(w[i] % np.uint64(i + 1))
        p[i], p[j] = p[j], p[i]
    return p


def standardise(train, test):
    mu = train.mean(0, keepdim=True)
    sd = train.std(0, unbiased=False, keepdim=True)
    sd = torch.where(sd == 0, torch.ones_like(sd), sd)
    return (train - mu) / sd, (test - mu) / sd


def probe(train, train_y, test, test_y, w0, b0, std):
    x, xt = torch.from_numpy(train).double(), torch.from_numpy(test).double()
    y, yt = torch.from_numpy(train_y), torch.from_numpy(test_y)
    if std:
        x, xt = standardise(x, xt)
    w = torch.from_numpy(w0).double().requires_grad_(True)
    b = torch.from_numpy(b0).double().requires_grad_(True)
    opt = torch.optim.SGD([w, b], lr=LR, momentum=MOMENTUM, weight_decay=WD)
    n = x.shape[0]
    steps = (n + BATCH - 1) // BATCH
    total = EPOCHS * steps
    losses, step = [], 0
    for e in range(EPOCHS):
        order = randperm(n, SEED, e * ((n + 3) // 4))
        run = 0.0
        for s in range(steps):
            idx = torch.from_numpy(order[s * BATCH:(s + 1) * BATCH])
            for group in opt.param_groups:
                group["lr"] = LR * 0.5 * (1 + np.cos(np.pi * step / total))
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(x[idx] @ w.T + b, y[idx])
            loss.backward()
            opt.step()
            run += loss.item()
            step += 1
        losses.append(run / steps)
    with torch.no_grad():
        train_top1 = 100 * ((x @ w.T + b).argmax(1) == y).double().mean().item()
        test_top1 = 100 * ((xt @ w.T + b).argmax(1) == yt).double().mean().item()
    return w.detach().numpy(), b.detach().numpy(), np.array(losses), train_top1, test_top1


def write_linear(out_dir):
    g = np.random.default_rng(2002)
    x, y = clusters(g, 400, 12, 4, 2.2)
    x[:, 3] = 0.25  # a constant feature: standardisation must leave it at 0, not divide by 0
    x[:, 5] *= 6    # a badly scaled one: what standardisation is for
    train, train_y, test, test_y = x[:300], y[:300], x[300:], y[300:]
    w0 = (g.standard_normal((4, 12)) * 0.01).astype(np.float32)
    b0 = (g.standard_normal(4) * 0.01).astype(np.float32)
    tensors = {"train": train, "train_labels": train_y, "test": test, "test_labels": test_y,
               "init_weight": w0, "init_bias": b0}
    meta = {"format_version": FORMAT_VERSION, "torch_version": torch.__version__}
    for name, std in (("std", True), ("raw", False)):
        w, b, losses, tr, te = probe(train, train_y, test, test_y, w0, b0, std)
        tensors.update({f"{name}.weight": w, f"{name}.bias": b, f"{name}.epoch_loss": losses,
                        f"{name}.train_top1": np.array(tr), f"{name}.test_top1": np.array(te)})
        print(f"gen_eval.py: linear probe {name}: train {tr:.2f}%, test {te:.2f}%, last loss {losses[-1]:.4f}")
    try:
        import sklearn
        from sklearn.linear_model import LogisticRegression
        xs, xts = standardise(torch.from_numpy(train).double(), torch.from_numpy(test).double())
        clf = LogisticRegression(C=1.0, max_iter=5000).fit(xs.numpy(), train_y)
        tensors["sklearn.test_top1"] = np.array(100 * clf.score(xts.numpy(), test_y))
        meta["sklearn_version"] = sklearn.__version__
        print(f"gen_eval.py: scikit-learn logistic regression: test {tensors['sklearn.test_top1']:.2f}%")
    except ImportError:
        print("gen_eval.py: scikit-learn not installed: no second linear-probe reference")
    st.save(os.path.join(out_dir, "linear.safetensors"), tensors, meta)


# ---------------------------------------------------------------- EMD

def write_emd(out_dir):
    try:
        import scipy
        from scipy.optimize import linear_sum_assignment, linprog
    except ImportError:
        print("gen_eval.py: SciPy not installed (apt-get install python3-scipy): emd.safetensors not written")
        return
    g = np.random.default_rng(3003)
    tensors = {}
    for n, m in ((1, 1), (2, 2), (5, 5), (9, 9), (40, 40), (3, 7), (12, 30)):
        c = g.random((n, m))
        r, k = linear_sum_assignment(c)
        tensors[f"assignment.{n}x{m}.cost"] = c
        tensors[f"assignment.{n}x{m}.value"] = np.array(c[r, k].sum())
    for n, m in ((2, 3), (3, 5), (7, 4), (12, 9), (49, 36)):
        c = g.random((n, m)) * 2
        a_eq = np.zeros((n + m, n * m))
        for i in range(n):
            a_eq[i, i * m:(i + 1) * m] = 1
        for j in range(m):
            a_eq[n + j, j::m] = 1
        b_eq = np.concatenate([np.full(n, 1 / n), np.full(m, 1 / m)])
        res = linprog(c.reshape(-1), A_eq=a_eq, b_eq=b_eq, bounds=(0, None), method="highs")
        assert res.status == 0, res.message
        tensors[f"transport.{n}x{m}.cost"] = c
        tensors[f"transport.{n}x{m}.value"] = np.array(res.fun)
    a = g.standard_normal((16, 32)).astype(np.float32)
    b = (a[g.permutation(16)] + 0.3 * g.standard_normal((16, 32))).astype(np.float32)
    an = a.astype(np.float64) / np.linalg.norm(a.astype(np.float64), axis=1, keepdims=True)
    bn = b.astype(np.float64) / np.linalg.norm(b.astype(np.float64), axis=1, keepdims=True)
    c = 1 - an @ bn.T
    r, k = linear_sum_assignment(c)
    tensors.update({"emd_a": a, "emd_b": b, "emd_value": np.array(c[r, k].mean())})
    st.save(os.path.join(out_dir, "emd.safetensors"), tensors,
            {"format_version": FORMAT_VERSION, "torch_version": torch.__version__, "scipy_version": scipy.__version__})
    print(f"gen_eval.py: EMD: {len(tensors) - 3} reference values (scipy {scipy.__version__})")


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    os.makedirs(sys.argv[1], exist_ok=True)
    write_knn(sys.argv[1])
    write_linear(sys.argv[1])
    write_emd(sys.argv[1])


if __name__ == "__main__":
    main()
