"""Tests for lib/som.py and the SOM codebook update in lib/quantize.py."""
import math

import pytest
import torch

from lib.model.quantize import VectorQuantizer
from lib.model.som import SOMGrid, neighbour_distance_ratio, topographic_error, u_matrix


def test_default_shapes_are_near_square():
    assert SOMGrid(512).shape == (32, 16)
    assert SOMGrid(1024).shape == (32, 32)
    assert SOMGrid(64).shape == (8, 8)
    assert SOMGrid(7).shape == (7, 1)
    grid = SOMGrid(512)
    assert grid.coords.shape == (512, 2)
    # code k sits at (k // cols, k % cols)
    assert grid.coords[17].tolist() == [1.0, 1.0]
    assert grid.coords[511].tolist() == [31.0, 15.0]
    assert grid.sigma_start == 32 / 4


def test_shape_errors():
    with pytest.raises(ValueError, match="codebook_size"):
        SOMGrid(512, shape=(20, 20))
    with pytest.raises(ValueError, match="shape"):
        SOMGrid(4, shape=(0, 4))
    with pytest.raises(ValueError, match="neighbourhood"):
        SOMGrid(4, neighbourhood="mexican-hat")
    with pytest.raises(ValueError, match="schedule"):
        SOMGrid(4, schedule="cosine")
    with pytest.raises(ValueError, match="som"):
        VectorQuantizer(2, 8, som=SOMGrid(16))


@pytest.mark.parametrize("schedule", ["exp", "linear"])
def test_sigma_schedule(schedule):
    grid = SOMGrid(64, sigma_start=3.0, sigma_end=0.0, anneal_steps=100, schedule=schedule)
    sigmas = [grid.sigma_at(s) for s in range(0, 101)]
    assert sigmas[0] == pytest.approx(3.0)
    assert sigmas[100] == 0.0  # exactly 0, not just small
    assert grid.sigma_at(10_000) == 0.0
    assert all(a > b for a, b in zip(sigmas[:-1], sigmas[1:]))  # strictly decreasing
    if schedule == "linear":
        assert grid.sigma_at(50) == pytest.approx(1.5)
    else:  # the exponential schedule shrinks faster early on
        assert grid.sigma_at(50) < 1.5
    ended = SOMGrid(64, sigma_start=3.0, sigma_end=0.7, anneal_steps=10, schedule=schedule)
    assert ended.sigma_at(10) == 0.7 and ended.sigma_at(9) > 0.7


@pytest.mark.parametrize("neighbourhood", ["gaussian", "box"])
def test_kernel_is_exact_identity_at_zero(neighbourhood):
    grid = SOMGrid(12, shape=(3, 4), neighbourhood=neighbourhood)
    assert torch.equal(grid.kernel(0.0), torch.eye(12))
    assert torch.equal(grid.kernel(0.0, normalize=False), torch.eye(12))


def test_kernel_values():
    grid = SOMGrid(9, shape=(3, 3))  # code 4 is the centre, code 0 a corner
    raw = grid.kernel(1.0, normalize=False)
    assert raw[0, 0].item() == pytest.approx(1.0)
    assert raw[0, 1].item() == pytest.approx(math.exp(-1 / 2))  # grid distance 1
    assert raw[0, 4].item() == pytest.approx(math.exp(-2 / 2))  # diagonal: d^2 = 2
    assert raw[0, 8].item() == pytest.approx(math.exp(-8 / 2))
    assert torch.allclose(raw, raw.t())
    norm = grid.kernel(1.0)
    assert torch.allclose(norm.sum(dim=1), torch.ones(9))
    corner_row_sum = 1 + 2 * math.exp(-0.5) + math.exp(-1) + 2 * math.exp(-2) + 2 * math.exp(-2.5) + math.exp(-4)
    assert norm[0, 1].item() == pytest.approx(math.exp(-0.5) / corner_row_sum)

    box = SOMGrid(9, shape=(3, 3), neighbourhood="box")
    assert torch.equal(box.kernel(1.0, normalize=False)[4], torch.ones(9))  # centre sees all 8 neighbours
    corner = box.kernel(1.0, normalize=False)[0].reshape(3, 3)
    assert torch.equal(corner, torch.tensor([[1.0, 1, 0], [1, 1, 0], [0, 0, 0]]))
    assert torch.equal(box.kernel(0.9), torch.eye(9))  # Chebyshev distance <= 0.9 is only the code itself


@pytest.mark.parametrize("neighbourhood", ["gaussian", "box"])
@pytest.mark.parametrize("shape", [(3, 4), (32, 16)])
@pytest.mark.parametrize("sigma", [0.0, 0.3, 1.0, 2.5, 40.0])
def test_spread_equals_the_dense_kernel(neighbourhood, shape, sigma):
    """The per-axis update is the `[K, K]` kernel's, for square and oblong grids and every width."""
    k = shape[0] * shape[1]
    grid = SOMGrid(k, shape=shape, neighbourhood=neighbourhood)
    stats = torch.randn(k, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    dense = grid.kernel(sigma).double().t() @ stats
    torch.testing.assert_close(grid.spread(stats, sigma), dense, rtol=1e-6, atol=1e-6)
    # every winner still hands out unit mass: the counts' total is kept
    counts = torch.rand(k, 1, dtype=torch.float64)
    assert grid.spread(counts, sigma).sum().item() == pytest.approx(counts.sum().item())


def test_spread_rejects_bad_input():
    grid = SOMGrid(12, shape=(3, 4))
    with pytest.raises(ValueError, match="codebook_size=12"):
        grid.spread(torch.zeros(10, 3), 1.0)
    with pytest.raises(ValueError, match="sigma"):
        grid.spread(torch.zeros(12, 3), -1.0)


def test_u_matrix_hand_computation():
    grid = SOMGrid(6, shape=(2, 3))
    # 1-d codes laid out as  [[0, 1, 3],
    #                         [6, 10, 15]]
    codebook = torch.tensor([0.0, 1, 3, 6, 10, 15])[:, None]
    expected = torch.tensor(
        [
            [(1 + 6) / 2, (1 + 2 + 9) / 3, (2 + 12) / 2],
            [(6 + 4) / 2, (4 + 5 + 9) / 3, (5 + 12) / 2],
        ]
    )
    assert torch.allclose(u_matrix(codebook, grid), expected)


def test_neighbour_distance_ratio_and_topographic_error_hand_computation():
    grid = SOMGrid(3, shape=(1, 3))
    ordered = torch.tensor([[0.0], [1.0], [2.0]])
    # adjacent pairs: |0-1|, |1-2| -> mean 1; all pairs: 1, 2, 1 -> mean 4/3
    assert neighbour_distance_ratio(ordered, grid) == pytest.approx(0.75)
    twisted = torch.tensor([[0.0], [5.0], [1.0]])
    # 0.4: best code 0, second code 2 (grid distance 2, an error); 4.9: best code 1, second code 2 (neighbours)
    data = torch.tensor([[0.4], [4.9]])
    assert topographic_error(twisted, data, grid) == pytest.approx(0.5)
    assert topographic_error(ordered, data, grid) == 0.0
    with pytest.raises(ValueError, match="codebook"):
        u_matrix(torch.zeros(4, 2), grid)


def _train(vq: VectorQuantizer, batches: list) -> VectorQuantizer:
    vq.train()
    for batch in batches:
        vq(batch)
    return vq


def test_som_at_zero_width_equals_plain_ema_exactly():
    batches = [torch.randn(4, 3, 32) + torch.randint(0, 3, (4, 1, 1)) * 2.0 for _ in range(8)]
    torch.manual_seed(1)
    plain = _train(VectorQuantizer(3, 16, kmeans_iters=5), batches)
    torch.manual_seed(1)
    grid = SOMGrid(16, sigma_start=0.0, sigma_end=0.0)
    som = _train(VectorQuantizer(3, 16, kmeans_iters=5, som=grid), batches)
    assert torch.equal(plain.embed, som.embed)
    assert torch.equal(plain.cluster_size, som.cluster_size)
    assert torch.equal(plain.embed_sum, som.embed_sum)
    # a non-zero width does change the update (so the check above can fail)
    torch.manual_seed(1)
    wide = _train(VectorQuantizer(3, 16, kmeans_iters=5, som=SOMGrid(16, sigma_start=2.0, anneal_steps=100)), batches)
    assert not torch.allclose(plain.embed, wide.embed)
    assert int(wide.step) == len(batches)


def test_som_orders_codebook_on_uniform_square():
    steps = 300
    # sigma_start 6 on an 8x8 grid: wide enough that no seed in 0..29 left a twisted map
    grid = SOMGrid(64, sigma_start=6.0, sigma_end=0.0, anneal_steps=steps, schedule="exp")
    # random N(0, 1) start and no dead-code replacement: the order has to come from the SOM update
    vq = VectorQuantizer(2, 64, decay=0.8, kmeans_init=False, dead_code_threshold=0.0, som=grid)
    _train(vq, [torch.rand(4, 2, 128) for _ in range(steps + 20)])
    codebook = vq.embed
    data = torch.rand(2000, 2)
    shuffled = codebook[torch.randperm(64)]
    te, ndr = topographic_error(codebook, data, grid), neighbour_distance_ratio(codebook, grid)
    te_shuffled, ndr_shuffled = topographic_error(shuffled, data, grid), neighbour_distance_ratio(shuffled, grid)
    assert te < 0.1, te
    assert ndr < 0.5, ndr
    assert te_shuffled > 0.5 and ndr_shuffled > 0.8, (te_shuffled, ndr_shuffled)
    # the map still quantises well: codes spread over the square (mean squared error ~ 1/(12*64) for a lattice)
    mse = torch.cdist(data, codebook).min(dim=1).values.pow(2).mean().item()
    assert mse < 0.005, mse
    # plain EMA VQ from the same start has no grid order
    torch.manual_seed(0)
    plain = _train(VectorQuantizer(2, 64, decay=0.8, kmeans_init=False, dead_code_threshold=0.0),
                   [torch.rand(4, 2, 128) for _ in range(50)])
    assert neighbour_distance_ratio(plain.embed, grid) > 0.8
