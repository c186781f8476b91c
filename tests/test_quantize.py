"""Tests for lib/quantize.py: EMA VQ, residual VQ, gradients, dropout, distributed sync."""
import copy
import os
import socket
import tempfile

import pytest
import torch
import torch.nn.functional as F

from lib.model.codebook import beam_search_codes, nearest_codes, rotation_estimator
from lib.model.quantize import ResidualVQ, VectorQuantizer, kmeans


def _blobs(n_clusters: int, dim: int, n: int, spread: float = 0.05, scale: float = 3.0) -> torch.Tensor:
    """`[1, dim, n]` points around `n_clusters` random centres."""
    centres = torch.randn(n_clusters, dim) * scale
    labels = torch.randint(0, n_clusters, (n,))
    points = centres[labels] + spread * torch.randn(n, dim)
    return points.t()[None]


def _set_codebook(vq: VectorQuantizer, embed: torch.Tensor, cluster_size: torch.Tensor | None = None) -> None:
    if cluster_size is None:
        cluster_size = torch.ones(embed.shape[0])
    vq.embed.copy_(embed)
    vq.cluster_size.copy_(cluster_size)
    vq.embed_sum.copy_(embed * cluster_size[:, None])
    vq.initted.fill_(True)


def test_vq_picks_nearest_code():
    vq = VectorQuantizer(4, 32).eval()
    codebook = torch.randn(32, 4)
    _set_codebook(vq, codebook)
    x = torch.randn(3, 4, 50)
    q, codes = vq.quantize(x)
    vectors = x.transpose(1, 2).reshape(-1, 4)
    expected = torch.cdist(vectors, codebook).argmin(dim=1).view(3, 50)
    assert codes.shape == (3, 50) and torch.equal(codes, expected)
    assert torch.allclose(q, codebook[expected].transpose(1, 2))
    assert torch.allclose(vq.dequantize(codes), q)
    out = vq(x)
    assert torch.equal(out.codes, expected) and torch.allclose(out.quantized, q)


def test_one_ema_step_matches_hand_computation():
    decay, eps = 0.5, 0.1
    vq = VectorQuantizer(2, 3, decay=decay, epsilon=eps, dead_code_threshold=0.0).train()
    start = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]
    _set_codebook(vq, torch.tensor(start), torch.tensor([1.0, 1.0, 1.0]))
    points = [[0.1, 0.1], [0.9, 0.1], [0.8, -0.1], [0.2, 0.0]]  # nearest codes: 0, 1, 1, 0
    x = torch.tensor(points).t()[None]  # [1, 2, 4]
    out = vq(x)
    assert out.codes.tolist() == [[0, 1, 1, 0]]
    assert torch.allclose(out.quantized, torch.tensor([start[c] for c in [0, 1, 1, 0]]).t()[None])  # old codebook

    # EMA by hand: N_k <- d N_k + (1-d) n_k ; S_k <- d S_k + (1-d) sum_k
    n = [2.0, 2.0, 0.0]
    sums = [[0.1 + 0.2, 0.1 + 0.0], [0.9 + 0.8, 0.1 - 0.1], [0.0, 0.0]]
    size = [decay * 1.0 + (1 - decay) * n[k] for k in range(3)]  # [1.5, 1.5, 0.5]
    embed_sum = [[decay * start[k][j] * 1.0 + (1 - decay) * sums[k][j] for j in range(2)] for k in range(3)]
    total = sum(size)
    smoothed = [(size[k] + eps) / (total + 3 * eps) * total for k in range(3)]  # Laplace smoothing
    embed = [[embed_sum[k][j] / smoothed[k] for j in range(2)] for k in range(3)]
    assert torch.allclose(vq.cluster_size, torch.tensor(size))
    assert torch.allclose(vq.embed_sum, torch.tensor(embed_sum))
    assert torch.allclose(vq.embed, torch.tensor(embed), atol=1e-6)
    assert abs(embed[1][0] - 1.35 / (1.6 * 3.5 / 3.8)) < 1e-9  # one value written out in full
    assert int(vq.step) == 1
    # statistics of that batch: 2 of 3 codes used, equal use -> perplexity 2
    assert out.stats["usage"] == pytest.approx(2 / 3)
    assert out.stats["perplexity"] == pytest.approx(2.0)
    assert out.stats["dead_codes"] == 0
    mse = sum((p[j] - start[c][j]) ** 2 for p, c in zip(points, [0, 1, 1, 0]) for j in range(2)) / 8
    assert out.stats["quant_error"] == pytest.approx(mse)
    assert out.commit_loss.item() == pytest.approx(mse)


def test_eval_mode_does_not_update_or_modify_input():
    vq = VectorQuantizer(4, 8)
    vq.train()(torch.randn(2, 4, 20))  # k-means init
    vq.eval()
    before = {k: v.clone() for k, v in vq.state_dict().items()}
    x = torch.randn(2, 4, 20)
    x_copy = x.clone()
    vq(x)
    assert torch.equal(x, x_copy)
    for key, value in vq.state_dict().items():
        assert torch.equal(value, before[key]), key
    vq.train()(x)
    assert torch.equal(x, x_copy)  # training update never edits the input in place
    assert not torch.equal(vq.embed, before["embed"])


def test_dead_codes_are_replaced():
    data = _blobs(4, 2, 400, spread=0.3)
    start = torch.cat([data[0, :, :4].t(), 100.0 + torch.randn(12, 2)])  # 12 codes far from the data

    def train(threshold: float) -> VectorQuantizer:
        vq = VectorQuantizer(2, 16, decay=0.9, dead_code_threshold=threshold)
        _set_codebook(vq, start.clone())
        vq.train()
        for _ in range(20):
            out = vq(data)
        return vq.eval()

    before = VectorQuantizer(2, 16).eval()
    _set_codebook(before, start)
    assert before(data).stats["usage"] == pytest.approx(4 / 16)

    kept = train(threshold=0.0)  # replacement off: the far codes stay unused
    assert kept(data).stats["usage"] == pytest.approx(4 / 16)
    assert (kept.embed.norm(dim=1) > 50).sum() == 12

    replaced = train(threshold=2.0)
    stats = replaced(data).stats
    assert stats["usage"] > 0.9, stats
    assert (replaced.embed.norm(dim=1) > 50).sum() == 0
    assert stats["quant_error"] < kept(data).stats["quant_error"]


def test_kmeans_init_beats_random_init():
    data = _blobs(8, 4, 512, spread=0.1)

    def error_after_first_step(kmeans_init: bool) -> float:
        vq = VectorQuantizer(4, 16, kmeans_init=kmeans_init, dead_code_threshold=0.0).train()
        vq(data)
        return vq.eval()(data).stats["quant_error"]

    kmeans_error, random_error = error_after_first_step(True), error_after_first_step(False)
    assert kmeans_error < 0.1 * random_error, (kmeans_error, random_error)
    # deterministic given the torch seed
    torch.manual_seed(3)
    a = VectorQuantizer(4, 8).train()
    a(data)
    torch.manual_seed(3)
    b = VectorQuantizer(4, 8).train()
    b(data)
    assert torch.equal(a.embed, b.embed)
    centroids, bins = kmeans(data[0].t(), 8, iters=10)
    assert centroids.shape == (8, 4) and bins.sum().item() == 512


def _fit_rvq(rvq: ResidualVQ, data: torch.Tensor, steps: int) -> ResidualVQ:
    rvq.train()
    for _ in range(steps):
        rvq(data)
    return rvq.eval()


def test_rvq_error_falls_with_n_q_and_decode_matches():
    data = torch.randn(8, 6, 64)
    rvq = _fit_rvq(ResidualVQ(6, 4, 16, quantizer_dropout=False), data, steps=15)
    errors = [F.mse_loss(rvq(data, n_q=n).quantized, data).item() for n in range(1, 5)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.5 * errors[0]
    for n in (1, 3, 4):
        out = rvq(data, n_q=n)
        codes = rvq.encode(data, n_q=n)
        assert codes.shape == (8, n, 64) and out.codes.shape == (8, n, 64)
        assert torch.equal(codes, out.codes)
        assert torch.allclose(rvq.decode(codes), out.quantized, atol=1e-6)
        assert out.n_q == n and len(out.stats) == n
    assert rvq.codebooks.shape == (4, 16, 6)
    assert (rvq.n_q, rvq.codebook_size, rvq.dim) == (4, 16, 6)
    for level_stats in rvq(data).stats:
        assert set(level_stats) == {"usage", "perplexity", "dead_codes", "quant_error"}
        assert 0 < level_stats["usage"] <= 1 and 1 <= level_stats["perplexity"] <= 16


def test_commit_loss_of_every_level_reaches_the_input():
    data = torch.randn(2, 6, 32)
    rvq = _fit_rvq(ResidualVQ(6, 4, 8, quantizer_dropout=False), data, steps=2)
    x = data.clone().requires_grad_(True)
    mean_losses = [rvq(x, n_q=n).commit_loss for n in range(1, 5)]  # mean over the first n levels
    for k in range(4):
        level_loss = (k + 1) * mean_losses[k] - (k * mean_losses[k - 1] if k else 0.0)
        (grad,) = torch.autograd.grad(level_loss, x, retain_graph=True)
        assert grad.abs().sum() > 0, f"level {k + 1} gives the input no gradient"
    # level 1's loss is mse(x, sg(q_1)): its gradient is 2 (x - q_1) / numel
    q1 = rvq.decode(rvq.encode(data, n_q=1))
    (grad1,) = torch.autograd.grad(mean_losses[0], x, retain_graph=True)
    assert torch.allclose(grad1, 2 * (data - q1) / data.numel(), atol=1e-7)


def test_straight_through_gradient_is_identity():
    data = torch.randn(2, 6, 16)
    for module in (_fit_rvq(ResidualVQ(6, 3, 8), data, 2), _fit_rvq(ResidualVQ(6, 3, 8, codebook_dim=2), data, 2)):
        x = data.clone().requires_grad_(True)
        out = module(x)
        upstream = torch.randn_like(data)
        out.quantized.backward(upstream)
        assert torch.equal(x.grad, upstream)  # exactly the identity, not scaled by n_q
        assert torch.allclose(out.quantized, module.decode(out.codes), atol=1e-6)
    vq = VectorQuantizer(6, 8).eval()
    x = data.clone().requires_grad_(True)
    vq(x).quantized.backward(upstream)
    assert torch.equal(x.grad, upstream)


def test_quantizer_dropout_per_item_in_training_and_fixed_in_eval():
    rvq = ResidualVQ(4, 4, 8, dead_code_threshold=0.0)
    data = torch.randn(32, 4, 10)
    rvq.train()
    rvq(data)  # k-means init of every level
    before_update = copy.deepcopy(rvq)  # a training forward quantises with the codebook before its EMA step
    out = rvq(data)
    item_n_q = out.n_q
    assert item_n_q.shape == (32,) and item_n_q.min() >= 1 and item_n_q.max() <= 4
    assert len(item_n_q.unique()) >= 3  # items draw their own count
    assert out.codes.shape == (32, 4, 10)
    for b in range(32):
        used = int(item_n_q[b])
        assert (out.codes[b, :used] >= 0).all() and (out.codes[b, used:] == -1).all()
        expected = before_update.decode(out.codes[b : b + 1, :used])
        assert torch.allclose(out.quantized[b : b + 1], expected, atol=1e-6)  # upper levels add nothing

    # the top level learns only from the items that kept it
    top = rvq.levels[3]
    size_before = top.cluster_size.clone()
    torch.manual_seed(5)
    out = rvq(data)
    active = out.n_q > 3
    counts = torch.bincount(out.codes[:, 3][active].reshape(-1), minlength=8).float()
    assert torch.allclose(top.cluster_size, 0.99 * size_before + 0.01 * counts)

    rvq.eval()
    out = rvq(data, n_q=2)
    assert out.n_q == 2 and out.codes.shape == (32, 2, 10) and (out.codes >= 0).all()
    assert rvq(data).codes.shape == (32, 4, 10)
    rvq.train()
    out = rvq(data, n_q=3)  # an explicit n_q in training applies to every item
    assert out.n_q == 3 and (out.codes >= 0).all()


def test_factorised_and_cosine_codes():
    data = torch.randn(4, 16, 32)
    rvq = ResidualVQ(16, 2, 8, codebook_dim=4, cosine=True)
    rvq.train()
    x = data.clone().requires_grad_(True)
    out = rvq(x)
    assert rvq.codebooks.shape == (2, 8, 4)
    assert torch.allclose(rvq.codebooks.norm(dim=-1), torch.ones(2, 8), atol=1e-5)
    (out.commit_loss + out.quantized.pow(2).mean()).backward()
    level = rvq.levels[0]
    assert level.in_proj.weight.grad.abs().sum() > 0  # trained by the commitment loss
    assert level.out_proj.weight.grad.abs().sum() > 0  # trained through the quantized output
    assert x.grad.abs().sum() > 0


def test_code_gradient_reaches_the_in_projection_and_x_through_each_level():
    torch.manual_seed(0)
    data = torch.randn(4, 16, 24)
    upstream = torch.randn_like(data)
    in_grads = {}
    for flag in (False, True):
        torch.manual_seed(1)
        rvq = ResidualVQ(16, 2, 8, codebook_dim=4, code_gradient=flag, kmeans_frames_per_code=0)
        rvq.train()(data)  # k-means init of both levels
        rvq.eval()
        x = data.clone().requires_grad_(True)
        out = rvq(x)
        assert torch.allclose(out.quantized, rvq.decode(rvq.encode(data)), atol=1e-6)  # the value is the codes'
        out.quantized.backward(upstream)  # no commitment loss: the reconstruction's gradient alone
        in_grads[flag] = rvq.levels[0].in_proj.weight.grad
        if flag:  # d q_i / d x = W_out_i W_in_i for every level (the residual's previous levels are detached)
            expected = sum(torch.einsum("dc,ed,bet->bct", lv.in_proj.weight[:, :, 0], lv.out_proj.weight[:, :, 0],
                                        upstream) for lv in rvq.levels)
            assert torch.allclose(x.grad, expected, atol=1e-5)
        else:
            assert torch.equal(x.grad, upstream)  # one identity straight-through on the sum
    assert in_grads[False] is None  # without it the in-projection learns from the commitment loss only
    assert in_grads[True].abs().sum() > 0
    with pytest.raises(ValueError, match="code_gradient needs factorised codes"):
        VectorQuantizer(8, 4, code_gradient=True)


def test_rotation_estimator_returns_the_code_and_turns_the_gradient_by_the_rotation_to_it():
    torch.manual_seed(0)
    x, q, g = torch.randn(2, 5, 3).requires_grad_(True), torch.randn(2, 5, 3), torch.randn(2, 5, 3)
    out = rotation_estimator(x, q)
    assert torch.equal(out, q)
    out.backward(g)
    for b in range(2):
        for t in range(3):  # by hand: R = I - 2 w w^T + 2 v u^T takes u = x / |x| to v = q / |q|
            e, c = x[b, :, t].detach(), q[b, :, t]
            u, v = e / e.norm(), c / c.norm()
            w = (u + v) / (u + v).norm()
            rot, scale = torch.eye(5) - 2 * torch.outer(w, w) + 2 * torch.outer(v, u), c.norm() / e.norm()
            assert torch.allclose(rot.T @ rot, torch.eye(5), atol=1e-5)  # a rotation ...
            assert torch.allclose(scale * rot @ e, c, atol=1e-5)  # ... that, scaled, takes x to its code
            assert torch.allclose(x.grad[b, :, t], scale * rot.T @ g[b, :, t], atol=1e-5)
    assert not torch.allclose(x.grad, g)  # not the straight-through identity
    x.grad = None
    rotation_estimator(x, torch.zeros_like(q)).backward(g)  # no code yet: no gradient, and no NaN
    assert torch.equal(x.grad, torch.zeros_like(g))


def test_residual_vq_with_the_rotation_trick_gives_the_same_codes_and_a_turned_gradient():
    from lib.config import ConfigError, load_config

    torch.manual_seed(0)
    data, upstream = torch.randn(4, 16, 24), torch.randn(4, 16, 24)
    outs, grads = {}, {}
    for flag in (False, True):
        torch.manual_seed(1)
        rvq = ResidualVQ(16, 3, 8, rotation_trick=flag, kmeans_frames_per_code=0)
        rvq.train()(data)  # k-means init of all levels
        rvq.eval()
        x = data.clone().requires_grad_(True)
        outs[flag] = rvq(x)
        outs[flag].quantized.backward(upstream)
        grads[flag] = x.grad
    assert torch.equal(outs[True].codes, outs[False].codes)
    assert torch.equal(outs[True].quantized, outs[False].quantized)
    assert torch.equal(grads[False], upstream)
    # a rotation keeps each frame's gradient norm up to the scale |q| / |x|
    scale = outs[True].quantized.norm(dim=1) / data.norm(dim=1)
    assert torch.allclose(grads[True].norm(dim=1), scale * upstream.norm(dim=1), rtol=1e-4)
    assert not torch.allclose(grads[True], grads[False], atol=1e-3)
    assert ResidualVQ.from_config(load_config("cpu", ["model.quantizer.rotation_trick=true"])).rotation_trick
    factorised = ["model.quantizer.codebook_dim=8", "model.quantizer.code_gradient=true", "model.quantizer.beam_width=1"]
    for bad in (["model.quantizer.kind=fsq", "model.quantizer.som=false"], factorised):
        with pytest.raises(ConfigError, match="rotation_trick"):
            load_config("cpu", ["model.quantizer.rotation_trick=true", *bad])
    with pytest.raises(ValueError, match="rotation_trick"):
        ResidualVQ(16, 2, 8, rotation_trick=True, codebook_dim=4, code_gradient=True)


def test_normalized_search_picks_by_angle_and_keeps_magnitudes():
    embed = torch.tensor([[10.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.1]])
    x = torch.tensor([[[1.0, 0.1], [0.9, 0.0], [0.0, 0.2]]])  # [1, 3, 2]: two frames
    chosen = {}
    for flag in (False, True):
        vq = VectorQuantizer(3, 3, kmeans_init=False, normalized_search=flag).eval()
        vq.embed.copy_(embed)
        q, codes = vq.quantize(x)
        chosen[flag] = codes[0].tolist()
        assert torch.equal(q[0].t(), embed[codes[0]])  # values are the stored codes, magnitudes kept
    # frame 0 points nearer code 0 (cosine 0.74 against 0.67) but lies nearer code 1 (distance^2 1.01 against 81.8)
    assert chosen == {False: [1, 2], True: [0, 2]}


def test_beam_search_finds_the_pair_greedy_search_misses():
    # x = 1: greedy takes 1.1 (nearest), then -0.5 for the residual -0.1, ending 0.4 away; 0.6 + 0.4 is exact
    books = [torch.tensor([[0.6], [1.1]]), torch.tensor([[0.4], [-0.5]])]
    x = torch.tensor([[1.0]])
    assert beam_search_codes(x, books, 1).tolist() == [[1, 1]]
    assert beam_search_codes(x, books, 2).tolist() == [[0, 0]]


def test_beam_search_is_greedy_at_width_one_and_exhaustive_when_wide():
    torch.manual_seed(0)
    books = [torch.randn(4, 3) / (i + 1) for i in range(3)]
    x = torch.randn(200, 3)
    residual, greedy = x.clone(), []
    for book in books:
        greedy.append(nearest_codes(residual, book))
        residual = residual - book[greedy[-1]]
    assert torch.equal(beam_search_codes(x, books, 1), torch.stack(greedy, dim=1))
    # every one of the 4^3 sums, against a beam wide enough (16 = 4^2) never to prune
    combos = torch.cartesian_prod(*[torch.arange(4)] * 3)  # [64, 3]
    sums = sum(book[combos[:, i]] for i, book in enumerate(books))  # [64, 3]
    best = combos[torch.cdist(x, sums).argmin(dim=1)]
    assert torch.equal(beam_search_codes(x, books, 16), best)
    greedy_err = (x - sum(b[c] for b, c in zip(books, greedy))).pow(2).sum(1)
    beam_err = (x - sums[torch.cdist(x, sums).argmin(dim=1)]).pow(2).sum(1)
    assert (beam_err <= greedy_err + 1e-6).all() and beam_err.mean() < 0.9 * greedy_err.mean()


def test_residual_vq_with_a_beam_trains_and_encodes_on_the_beam_codes():
    torch.manual_seed(0)
    data = torch.randn(4, 8, 50)
    errors = {}  # width -> [error of its codes, error of greedy codes], same codebooks
    for width in (1, 4):
        torch.manual_seed(1)
        rvq = ResidualVQ(8, 3, 16, quantizer_dropout=0.0, beam_width=width, kmeans_frames_per_code=0)
        rvq.train()(data)  # k-means init, level by level
        planned = beam_search_codes(data.transpose(1, 2).reshape(-1, 8), [lv.embed for lv in rvq.levels], width)
        out = rvq.train()(data)  # the EMA step learns from the codes the beam chose before it
        assert torch.equal(out.codes, planned.view(4, 50, 3).transpose(1, 2))
        rvq.eval()
        codes = rvq.encode(data)
        assert torch.equal(rvq(data).codes, codes)  # eval forward and encode agree
        assert torch.equal(rvq.encode(data, n_q=2), rvq._beam_codes(data, 2))  # searched for 2 levels, not cut
        rvq.beam_width = 1  # the same codebooks searched greedily
        errors[width] = [(data - rvq.decode(c)).pow(2).mean().item() for c in (codes, rvq.encode(data))]
    assert errors[1][0] == errors[1][1]
    assert errors[4][0] < 0.98 * errors[4][1]  # the beam's sums lie nearer the latents than greedy search's
    # beam_in_training=False: training searches greedily (codes and EMA as with width 1), evaluation with the beam
    torch.manual_seed(1)
    greedy = ResidualVQ(8, 3, 16, quantizer_dropout=0.0, kmeans_frames_per_code=0)
    greedy.train()(data)
    encoder_only = copy.deepcopy(greedy)
    encoder_only.beam_width, encoder_only.beam_in_training = 4, False
    assert torch.equal(encoder_only.train()(data).codes, greedy.train()(data).codes)
    assert torch.equal(encoder_only.codebooks, greedy.codebooks)
    assert torch.equal(encoder_only.eval()(data).codes, encoder_only._beam_codes(data, 3))
    assert not torch.equal(encoder_only.eval()(data).codes, greedy.eval()(data).codes)
    with pytest.raises(ValueError, match="beam_width > 1 needs Euclidean codes"):
        ResidualVQ(8, 2, 16, beam_width=2, codebook_dim=4)
    with pytest.raises(ValueError, match="beam_width must be an integer >= 1"):
        ResidualVQ(8, 2, 16, beam_width=0)


def test_bad_input_errors():
    vq = VectorQuantizer(4, 8)
    with pytest.raises(ValueError, match="x must be"):
        vq(torch.randn(2, 5, 10))
    with pytest.raises(ValueError, match="x must be"):
        vq(torch.randn(4, 10))
    with pytest.raises(ValueError, match="codes"):
        vq.dequantize(torch.full((1, 3), 8))
    rvq = ResidualVQ(4, 2, 8)
    with pytest.raises(ValueError, match="n_q"):
        rvq(torch.randn(1, 4, 5), n_q=3)
    with pytest.raises(ValueError, match="codes"):
        rvq.decode(torch.zeros(1, 3, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="decay"):
        VectorQuantizer(4, 8, decay=1.0)


# ----------------------------------------------------------------------------- distributed (gloo, 2 processes)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        full = torch.randn(4, 4, 24)
        mine = full[2 * rank : 2 * rank + 2]
        # (a) default settings: k-means and dead codes from rank 0 keep replicas identical
        torch.manual_seed(100 + rank)  # different random streams per rank on purpose
        rvq = ResidualVQ(4, 2, 16, quantizer_dropout=False).train()
        for _ in range(5):
            rvq(mine + 0.01 * torch.randn_like(mine))
        # (b) no random init paths: the all-reduced EMA equals one process on the full batch
        torch.manual_seed(7)
        exact = VectorQuantizer(4, 8, kmeans_init=False, dead_code_threshold=0.0).train()
        for _ in range(3):
            exact(mine)
        torch.save({"rvq": rvq.codebooks, "exact": exact.embed}, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_distributed_replicas_keep_identical_codebooks():
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as out_dir:
        mp.spawn(_ddp_worker, args=(2, _free_port(), out_dir), nprocs=2, join=True)
        results = [torch.load(os.path.join(out_dir, f"rank{r}.pt")) for r in range(2)]
    assert torch.equal(results[0]["rvq"], results[1]["rvq"])
    assert torch.equal(results[0]["exact"], results[1]["exact"])
    torch.manual_seed(0)
    full = torch.randn(4, 4, 24)
    torch.manual_seed(7)
    single = VectorQuantizer(4, 8, kmeans_init=False, dead_code_threshold=0.0).train()
    for _ in range(3):
        single(full)
    assert torch.allclose(results[0]["exact"], single.embed, atol=1e-5)


def test_nearest_codes_stay_exact_under_bf16_autocast():
    from lib.model.codebook import nearest_codes

    torch.manual_seed(0)
    # 128 pairs of codes one unit apart, the pairs far from each other (norms ~40: bf16 rounds the ~1600-sized
    # dot products by several units)
    centres = torch.randn(128, 16) * 10
    offset = F.normalize(torch.randn(128, 16), dim=1)
    codebook = torch.stack([centres, centres + offset], dim=1).reshape(256, 16)
    pair = torch.randint(0, 128, (512,))
    # just off each pair's midpoint, towards its first code: squared distances differ by 0.04, far above fp32 rounding
    vectors = centres[pair] + 0.5 * offset[pair] - 0.02 * offset[pair]
    i = 2 * pair
    exact = nearest_codes(vectors, codebook)
    assert torch.equal(exact, i)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(nearest_codes(vectors, codebook), exact)
        # what the search would give without switching autocast off: bf16 distances pick other codes
        rounded = (vectors.pow(2).sum(1, keepdim=True) - 2 * vectors @ codebook.t() + codebook.pow(2).sum(1)).argmin(1)
    assert (rounded != exact).any()
