"""The reference reduction steps against independent, loop-by-loop implementations of the rules."""

from __future__ import annotations

import math

import pytest
import torch

from pumer_export import ops, reduce  # noqa: F401  (ops registers torch.ops.pumer)


# ----------------------------------------------------------------- naive versions
def naive_text_attention(q, k, key_mask, masking):
    """Per (b, h, t) row: the probabilities over all keys, by the written rule (float64 loops)."""
    batch, heads, rows, dim = q.shape
    n = k.shape[2]
    out = []
    for b in range(batch):
        per_head = []
        for h in range(heads):
            per_row = []
            for t in range(rows):
                s = [sum(float(q[b, h, t, c]) * float(k[b, h, j, c]) for c in range(dim)) / math.sqrt(dim)
                     for j in range(n)]
                m = [float(key_mask[b, j]) for j in range(n)]
                if masking == reduce.STANDARD:
                    logits = [s[j] + math.log(m[j]) if m[j] > 0 else -math.inf for j in range(n)]
                    top = max(logits)
                    e = [math.exp(v - top) for v in logits]
                    per_row.append([v / sum(e) for v in e])
                else:  # official P7: a masked query attends to its own key; + 1e-6 smoothing
                    w = [m[j] + (1 - m[j]) * (1.0 if j == t else 0.0) for j in range(n)]
                    top = max(s)
                    e = [math.exp(s[j] - top) * w[j] for j in range(n)]
                    per_row.append([(v + 1e-6 / n) / (sum(e) + 1e-6) for v in e])
            per_head.append(per_row)
        out.append(per_head)
    return out


def naive_scores(q, k, key_mask, text_mask, image_start, head, masking):
    probs = naive_text_attention(q, k, key_mask, masking)
    heads, rows, n = q.shape[1], q.shape[2], k.shape[2]
    out = []
    for b in range(q.shape[0]):
        denom = float(text_mask[b].sum())
        row = []
        for j in range(image_start, n):
            total = 0.0
            for t in range(rows):
                if head < 0:
                    total += sum(probs[b][h][t][j] for h in range(heads)) / heads
                else:
                    total += probs[b][head][t][j]
            row.append(total / denom)
        out.append(row)
    return out


def naive_topk(values, k):
    return [i for _, i in sorted(((-v, i) for i, v in enumerate(values)))][:k]


def naive_merge(x, metric, mask, r):
    """ToMe as specified: returns (x_out, mask_out, slots) for one sample (lists)."""
    t = len(x)
    if r == 0:
        return [list(v) for v in x], list(mask), list(range(t))
    norm = [[v / math.sqrt(sum(c * c for c in row)) for v in row] for row in metric]
    a_pos, b_pos = list(range(0, t, 2)), list(range(1, t, 2))
    best = []
    for ai, p in enumerate(a_pos):
        if ai == 0:
            best.append((-math.inf, 0))
            continue
        sims = [sum(u * v for u, v in zip(norm[p], norm[q])) for q in b_pos]
        top = max(sims)
        best.append((top, sims.index(top)))  # first (lowest) index of the maximum
    order = sorted(range(len(a_pos)), key=lambda ai: (-best[ai][0], ai))
    src, unm = order[:r], sorted(order[r:])
    groups = {bj: [b_pos[bj]] for bj in range(len(b_pos))}
    for ai in src:
        groups[best[ai][1]].append(a_pos[ai])
    out_x = [list(x[a_pos[ai]]) for ai in unm]
    out_m = [mask[a_pos[ai]] for ai in unm]
    slots = [0] * t
    for k, ai in enumerate(unm):
        slots[a_pos[ai]] = k
    for bj in range(len(b_pos)):
        members = groups[bj]
        out_x.append([sum(x[p][c] for p in members) / len(members) for c in range(len(x[0]))])
        out_m.append(sum(mask[p] for p in members) / len(members))
        for p in members:
            slots[p] = len(unm) + bj
    return out_x, out_m, slots


# ------------------------------------------------------------------------ inputs
def make_qk(batch, heads, rows, n, dim, seed, ties=False):
    """Text-row queries [B, H, rows, d] and keys [B, H, n, d]; with ``ties`` the last image keys repeat one key
    (equal logits, so equal scores), on a coarse grid."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, heads, rows, dim, generator=gen)
    k = torch.randn(batch, heads, n, dim, generator=gen)
    if ties:
        q, k = (q * 2).round() / 2, (k * 2).round() / 2
        k[:, :, -3:] = k[:, :, -4:-3]
    return q, k


CASES = [
    # batch, heads, text_len, n, keep, head
    (2, 4, 5, 17, 9, -1),
    (1, 3, 1, 8, 8, 0),
    (3, 2, 6, 21, 1, -1),
    (2, 4, 7, 30, 20, 2),
]


@pytest.mark.parametrize("batch, heads, text_len, n, keep, head", CASES)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("masking", [reduce.STANDARD, reduce.OFFICIAL])
def test_prune_follows_the_rules(batch, heads, text_len, n, keep, head, ties, masking):
    """ViLT's joint sequence: keys = text + image tokens, the image keys start after the text."""
    gen = torch.Generator().manual_seed(1)
    q, k = make_qk(batch, heads, text_len, n, 4, seed=batch + n, ties=ties)
    key_mask = (torch.rand(batch, n, generator=gen) > 0.3).float()
    key_mask[:, 0] = 1.0
    key_mask[:, text_len] = 1.0  # image CLS
    text_mask = key_mask[:, :text_len]  # heavy padding, text CLS always valid
    x = torch.randn(batch, n, 6, generator=gen)
    metric = torch.randn(batch, n, 4, generator=gen)

    kept_x, kept_metric, keep_idx = reduce.prune(x, metric, q, k, key_mask, text_mask, keep, head, text_len, masking)

    scores = reduce.text_informed_scores(q, k, key_mask, text_mask, text_len, head, masking)
    expected = torch.tensor(naive_scores(q.double(), k.double(), key_mask, text_mask, text_len, head, masking),
                            dtype=torch.float64)
    torch.testing.assert_close(scores.double(), expected, atol=1e-6, rtol=1e-5)
    for b in range(batch):
        assert keep_idx[b].tolist() == naive_topk(scores[b].tolist(), keep)
        assert torch.equal(kept_x[b], x[b, text_len:][keep_idx[b]])
        assert torch.equal(kept_metric[b], metric[b, text_len:][keep_idx[b]])


@pytest.mark.parametrize("masking", [reduce.STANDARD, reduce.OFFICIAL])
def test_prune_over_a_separate_key_sequence(masking):
    """A cross-attention (METER): the keys are the image tokens only (image_start 0), x aligned with them."""
    gen = torch.Generator().manual_seed(2)
    q, k = make_qk(2, 2, 5, 13, 4, seed=9)
    key_mask = torch.ones(2, 13)
    text_mask = torch.tensor([[1.0, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    x = torch.randn(2, 13, 3, generator=gen)
    kept_x, _, keep_idx = reduce.prune(x, x, q, k, key_mask, text_mask, 6, -1, 0, masking)
    scores = reduce.text_informed_scores(q, k, key_mask, text_mask, 0, -1, masking)
    expected = torch.tensor(naive_scores(q.double(), k.double(), key_mask, text_mask, 0, -1, masking),
                            dtype=torch.float64)
    torch.testing.assert_close(scores.double(), expected, atol=1e-6, rtol=1e-5)
    for b in range(2):
        assert keep_idx[b].tolist() == naive_topk(scores[b].tolist(), 6)
        assert torch.equal(kept_x[b], x[b][keep_idx[b]])


def test_equal_scores_keep_lower_indices_first():
    q = torch.zeros(1, 2, 2, 4)  # every logit 0: every image key scores the same
    k = torch.randn(1, 2, 6, 4)
    _, _, keep_idx = reduce.prune(torch.zeros(1, 6, 3), torch.zeros(1, 6, 3), q, k, torch.ones(1, 6), torch.ones(1, 2),
                                  3, -1, 2, reduce.STANDARD)
    assert keep_idx.tolist() == [[0, 1, 2]]


@pytest.mark.parametrize("tokens", [1, 2, 3, 4, 9, 10, 31])
@pytest.mark.parametrize("kind", ["random", "ties", "all_equal"])
def test_merge_follows_the_rules(tokens, kind):
    gen = torch.Generator().manual_seed(tokens)
    batch = 2
    metric = torch.randn(batch, tokens, 5, generator=gen)
    if kind == "ties":
        metric[:, 1::3] = metric[:, 1:2]  # repeated b/a rows give equal similarities
    elif kind == "all_equal":
        metric = torch.ones(batch, tokens, 5)
    x = torch.randn(batch, tokens, 3, generator=gen)
    mask = (torch.rand(batch, tokens, generator=gen) > 0.3).float()
    cap = (tokens - 1) // 2
    for r in sorted({0, 1, cap} & set(range(cap + 1))):
        out_x, out_mask, slots = reduce.merge(x, metric, mask, r)
        assert out_x.shape == (batch, tokens - r, 3) and slots.shape == (batch, tokens)
        for b in range(batch):
            exp_x, exp_m, exp_slots = naive_merge(x[b].tolist(), metric[b].tolist(), mask[b].tolist(), r)
            assert slots[b].tolist() == exp_slots, (kind, tokens, r)
            torch.testing.assert_close(out_x[b], torch.tensor(exp_x), atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(out_mask[b], torch.tensor(exp_m), atol=1e-6, rtol=1e-6)


def test_first_token_is_never_merged():
    metric = torch.ones(3, 11, 4)  # everything is equally similar
    _, _, slots = reduce.merge(torch.randn(3, 11, 2), metric, torch.ones(3, 11), 5)
    assert (slots[:, 0] == 0).all()


def test_merge_keeps_dtype_and_accumulates_in_float32():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 9, 8, generator=gen)
    metric = torch.randn(2, 9, 4, generator=gen)
    ref_x, _, ref_slots = reduce.merge(x, metric, torch.ones(2, 9), 3)
    for dtype in (torch.float16, torch.bfloat16):
        out_x, _, slots = reduce.merge(x.to(dtype), metric.to(dtype), torch.ones(2, 9), 3)
        assert out_x.dtype == dtype
        torch.testing.assert_close(out_x.float(), ref_x, atol=2e-2, rtol=2e-2)


def test_custom_ops_are_the_reference_steps():
    gen = torch.Generator().manual_seed(5)
    x, metric = torch.randn(2, 12, 6, generator=gen), torch.randn(2, 12, 4, generator=gen)
    q, k = make_qk(2, 3, 4, 12, 4, seed=5)
    key_mask, mask = torch.ones(2, 12), torch.ones(2, 4)
    args = (x, metric, q, k, key_mask, mask, 4, 5, -1, 4, reduce.OFFICIAL)
    for got, want in zip(torch.ops.pumer.prune(*args),
                         reduce.prune(x, metric, q, k, key_mask, mask, 5, -1, 4, reduce.OFFICIAL)):
        assert torch.equal(got, want)
    for got, want in zip(torch.ops.pumer.merge(x, metric, torch.ones(2, 12), 4),
                         reduce.merge(x, metric, torch.ones(2, 12), 4)):
        assert torch.equal(got, want)
    torch.library.opcheck(torch.ops.pumer.merge.default, (x, metric, torch.ones(2, 12), 4))
    torch.library.opcheck(torch.ops.pumer.prune.default, args)


@pytest.mark.parametrize("image_start", [0, 5])
def test_prune_op_gradient_is_the_reference_gradient(image_start):
    """Fine-tuning with the reducers in place: the op's registered gradient equals autograd through the plain
    reference steps (gather), and the discrete inputs (queries, keys) get none."""
    gen = torch.Generator().manual_seed(1)
    batch, heads, n, dim, text = 3, 2, 17, 4, 5
    x = torch.randn(batch, n, 8, generator=gen, dtype=torch.float64)
    metric = torch.randn(batch, n, dim, generator=gen, dtype=torch.float64)
    queries = torch.randn(batch, heads, text, dim, generator=gen)
    keys = torch.randn(batch, heads, n, dim, generator=gen)
    key_mask = torch.ones(batch, n)
    text_mask = torch.ones(batch, text)
    keep = 7
    weights = [torch.randn(batch, keep, 8, generator=gen, dtype=torch.float64),
               torch.randn(batch, keep, dim, generator=gen, dtype=torch.float64)]

    def grads(fn):
        a, b = x.clone().requires_grad_(), metric.clone().requires_grad_()
        out_x, out_m, _ = fn(a, b)
        ((out_x * weights[0]).sum() + (out_m * weights[1]).sum()).backward()
        return a.grad, b.grad

    via_op = grads(lambda a, b: torch.ops.pumer.prune(a, b, queries, keys, key_mask, text_mask, text, keep, -1,
                                                      image_start, reduce.STANDARD))
    via_reference = grads(lambda a, b: reduce.prune(a, b, queries, keys, key_mask, text_mask, keep, -1, image_start,
                                                    reduce.STANDARD))
    for got, want in zip(via_op, via_reference):
        torch.testing.assert_close(got, want, rtol=0, atol=0)
    assert via_op[0][:, :image_start].abs().sum() == 0  # tokens before the image part are not pruned, no gradient
    assert (via_op[0][:, image_start:].abs().sum(-1) > 0).sum() == batch * keep  # exactly the kept tokens


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_merge_op_gradient_is_the_reference_gradient(dtype):
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(2, 15, 6, generator=gen).to(dtype)
    metric = torch.randn(2, 15, 4, generator=gen)
    metric[:, 3] = metric[:, 4]  # a certain merge
    mask = torch.ones(2, 15)
    weight = torch.randn(2, 15 - 5, 6, generator=gen).to(dtype)

    def grad(fn):
        a = x.clone().requires_grad_()
        (fn(a)[0] * weight).sum().backward()
        return a.grad

    via_op = grad(lambda a: torch.ops.pumer.merge(a, metric, mask, 5))
    via_reference = grad(lambda a: reduce.merge(a, metric, mask, 5))
    torch.testing.assert_close(via_op, via_reference)
    assert via_op.dtype == dtype
