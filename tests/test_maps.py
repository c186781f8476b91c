"""Codebook maps (lib/analysis/maps/) and the image-patch SOM demo (lib/analysis/patches.py)."""
import pickle

import matplotlib.image
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from PIL import Image

from lib.build import build_codec
from lib.config import load_config
from lib.analysis.maps import (CORNER_COLOURS, animation_html, band_edges, code_counts, code_thumbnails, decode_alone, fit_rvq,
                      grid_colours, grid_label, layout_grid, level_inputs, level_u_matrix, map_explorer,
                      path_animation, plot_code_mosaic, plot_paths, plot_pca_comparison, plot_topography,
                      plot_u_matrices, plot_usage_maps, save_gif, shuffled, spectrogram_thumbnails, tile_mosaic,
                      to_grid, topography_table)
from lib.analysis.patches import (extract_patches, load_cifar_batch, mean_colour_baseline, patch_dataset, patch_metrics,
                         patches_to_image, plot_codebook_mosaic, plot_reconstructions, quantize_patches,
                         sklearn_images, train_patch_vq)
from lib.analysis.plots import save_figure
from lib.model.quantize import ResidualVQ, VectorQuantizer
from lib.model.som import SOMGrid, neighbour_distance_ratio, topographic_error


@pytest.fixture(scope="module")
def codec():
    """A tiny untrained codec with SOM codebooks (8x8 grids of 64 codes, 4 levels)."""
    torch.manual_seed(0)
    return build_codec(load_config("tiny", ["model.quantizer.som=true"])).eval()


@pytest.fixture(scope="module")
def clip():
    """0.4 s of a chirp with a noise burst, [1, 1, T] at 24 kHz."""
    t = torch.arange(int(0.4 * 24000)) / 24000
    wav = 0.3 * torch.sin(2 * torch.pi * (200 + 2000 * t) * t)
    wav[4000:5000] += 0.2 * torch.randn(1000, generator=torch.Generator().manual_seed(1))
    return wav.view(1, 1, -1)


def assert_not_blank(path, min_std=0.05):
    image = matplotlib.image.imread(str(path))[..., :3]
    assert image.std() > min_std, f"{path} looks blank (pixel std {image.std():.4f})"


# ----------------------------------------------------------------------------- grid layout


def test_u_matrix_by_hand_on_2x3_grid():
    level = VectorQuantizer(1, 6, som=SOMGrid(6, shape=(2, 3)))
    level.embed.copy_(torch.tensor([[0.0], [1.0], [3.0], [0.0], [2.0], [7.0]]))
    # grid  0 1 3 / 0 2 7; each cell: mean |difference| to its 4-neighbours
    expected = np.array([[(1 + 0) / 2, (1 + 2 + 1) / 3, (2 + 4) / 2],
                         [(0 + 2) / 2, (2 + 5 + 1) / 3, (5 + 4) / 2]])
    np.testing.assert_allclose(level_u_matrix(level), expected, rtol=1e-6)


def test_plain_codebook_gets_near_square_index_layout():
    plain = VectorQuantizer(2, 6)
    assert layout_grid(plain).shape == (3, 2)
    assert "index order" in grid_label(plain)
    assert grid_label(VectorQuantizer(2, 6, som=SOMGrid(6, shape=(2, 3)))) == "SOM 2x3"
    np.testing.assert_array_equal(to_grid(torch.arange(6.0), layout_grid(plain)), [[0, 1], [2, 3], [4, 5]])
    with pytest.raises(ValueError, match="values"):
        to_grid(torch.arange(5.0), layout_grid(plain))


def test_code_counts_ignores_switched_off_frames():
    codes = torch.tensor([[[0, 2, 2, -1], [1, 1, 1, 1]]])  # [B=1, n_q=2, F=4]
    np.testing.assert_array_equal(code_counts(codes, 0, 4).numpy(), [1, 0, 2, 0])
    np.testing.assert_array_equal(code_counts(codes, 1, 4).numpy(), [0, 4, 0, 0])
    with pytest.raises(ValueError):
        code_counts(codes, 2, 4)


def test_grid_colours_corners_and_mosaic_layout():
    colours = grid_colours(SOMGrid(12, shape=(3, 4)))
    np.testing.assert_allclose(colours[[0, 3, 8, 11]], CORNER_COLOURS)
    tiles = np.arange(6 * 2 * 3, dtype=float).reshape(6, 2, 3)  # 6 tiles of 2x3 on a 2x3 grid
    mosaic = tile_mosaic(tiles, (2, 3), gap=1, flip=False)
    assert mosaic.shape == (2 * 3 - 1, 3 * 4 - 1)
    np.testing.assert_array_equal(mosaic[3:5, 4:7], tiles[4])  # tile 4 = row 1, col 1
    assert np.isnan(mosaic[2]).all() and np.isnan(mosaic[:, 3]).all()
    np.testing.assert_array_equal(tile_mosaic(tiles, (2, 3))[0:2, 0:3], tiles[0, ::-1])


def test_band_edges_cover_bins_and_are_increasing():
    edges = band_edges(257, 16)
    assert edges[0] == 1 and edges[-1] == 257 and len(edges) == 17
    assert (np.diff(edges) >= 1).all()
    with pytest.raises(ValueError):
        band_edges(8, 8)


def test_thumbnail_of_a_sine_peaks_in_its_band():
    t = torch.arange(2560) / 24000
    wav = torch.sin(2 * torch.pi * 3000 * t).view(1, 1, -1)
    thumbs, hz = spectrogram_thumbnails(wav, 24000, n_fft=512, n_bands=16)
    band = int(np.searchsorted(hz, 3000, side="right") - 1)  # band j holds [hz[j], hz[j + 1])
    assert thumbs.shape[:2] == (1, 16)
    assert thumbs[0].mean(axis=1).argmax() == band
    assert abs(thumbs[0, band].max() - thumbs.max()) < 1e-6


# ----------------------------------------------------------------------------- topography


def test_trained_som_beats_its_shuffled_copy():
    points = torch.rand(3000, 3)  # uniform colours: a 3-D cube mapped onto an 8x8 grid
    vq = train_patch_vq(points, codebook_size=64, som=True, steps=120, batch_size=512)
    grid = vq.som
    trained = topographic_error(vq.embed, points, grid)
    mixed = topographic_error(shuffled(vq.embed), points, grid)
    assert trained < 0.5 * mixed
    assert neighbour_distance_ratio(vq.embed, grid) < 0.6
    assert neighbour_distance_ratio(shuffled(vq.embed), grid) > 0.8


def test_topography_table_som_vs_plain_on_2d_latents():
    latents = torch.rand(1, 2, 4000)
    som = fit_rvq(latents, n_q=2, codebook_size=36, steps=120, batch_frames=512, som=True)
    plain = fit_rvq(latents, n_q=2, codebook_size=36, steps=120, batch_frames=512, som=False)
    table = topography_table({"SOM": som, "EMA": plain}, latents, [0, 1])
    assert [(row["codebook"], row["level"]) for row in table] == [("SOM", 0), ("SOM", 1), ("EMA", 0), ("EMA", 1)]
    som0, ema0 = table[0], table[2]
    assert som0["topographic_error"] < 0.5 * som0["topographic_error_shuffled"]
    assert som0["neighbour_distance_ratio"] < 0.6 < ema0["neighbour_distance_ratio"]
    assert som0["codes_used"] <= 36 and som0["perplexity"] > 10


def test_level_inputs_are_the_residuals_each_level_sees():
    torch.manual_seed(0)
    rvq = ResidualVQ(3, 2, 8, quantizer_dropout=False).eval()
    x = torch.randn(2, 3, 5)
    first, second = level_inputs(rvq, x)
    q0, _ = rvq.levels[0].quantize(x)
    torch.testing.assert_close(first, x.transpose(1, 2).reshape(-1, 3))
    torch.testing.assert_close(second, (x - q0).transpose(1, 2).reshape(-1, 3))
    rvq.train()(torch.randn(4, 3, 200))  # k-means init, so that a beam finds other codes than greedy search
    rvq.eval()
    rvq.beam_width = 4
    x = torch.randn(2, 3, 50)
    codes = rvq.encode(x)
    greedy_first = rvq.levels[0].quantize(x)[1]
    assert not torch.equal(codes[:, 0], greedy_first)  # the beam chose other first-level codes somewhere
    _, second = level_inputs(rvq, x)  # level 1 sees what the chosen level-0 codes left
    torch.testing.assert_close(second, (x - rvq.levels[0].dequantize(codes[:, 0])).transpose(1, 2).reshape(-1, 3))


# ----------------------------------------------------------------------------- codec views


def test_decode_alone_uses_only_that_level(codec):
    hop, n_frames = codec.hop_length, 3
    wav = decode_alone(codec, 1, torch.tensor([5, 9]), n_frames)
    assert wav.shape == (2, 1, n_frames * hop)
    code_vector = codec.quantizer.levels[1].dequantize(torch.full((1, n_frames), 9))  # [1, D, F]
    with torch.no_grad():
        expected = codec.decoder(code_vector)
    torch.testing.assert_close(wav[1:], expected)
    with pytest.raises(ValueError, match="level"):
        decode_alone(codec, 4, torch.tensor([0]))


def test_saved_map_figures_are_not_blank(codec, clip, tmp_path):
    codes = codec.encode(clip)
    levels = [0, 1]
    latents = torch.randn(1, codec.dim, 300)
    plain = fit_rvq(latents, n_q=2, codebook_size=64, steps=5, batch_frames=128)
    table = topography_table({"codec": codec.quantizer, "plain": plain}, latents, levels)
    fig, axes = plt.subplots(1, 2)
    thumbnails = code_thumbnails(codec, 0, block=(2, 2, 4, 5), n_frames=8)
    assert thumbnails["thumbs"].shape[0] == 4 * 5
    mosaic = plot_code_mosaic(axes[0], codec, 0, thumbnails=thumbnails)
    relative = plot_code_mosaic(axes[1], codec, 0, relative=True, thumbnails=thumbnails)
    assert mosaic.shape == relative.shape
    np.testing.assert_allclose(np.nanmean(relative.reshape(-1)), 0.0, atol=1e-3)  # deviations from the mean tile
    figures = {
        "usage": plot_usage_maps(codec.quantizer, levels, codes, codec.frame_rate),
        "usage_ema": plot_usage_maps(codec.quantizer, levels),
        "umatrix": plot_u_matrices(codec.quantizer, levels),
        "mosaic": fig,
        "path": plot_paths(codec, clip, levels),
        "pca": plot_pca_comparison({"codec": codec.quantizer, "plain": plain}, 0),
        "topography": plot_topography(table),
    }
    for name, figure in figures.items():
        path = save_figure(figure, tmp_path / f"03_{name}.png", dpi=60)
        plt.close(figure)
        assert_not_blank(path)
    with pytest.raises(ValueError, match="block"):
        code_thumbnails(codec, 0, block=(6, 0, 4, 4))
    with pytest.raises(ValueError, match="levels"):
        plot_u_matrices(codec.quantizer, [7])


def test_animation_writes_a_gif_with_several_frames(codec, clip, tmp_path):
    anim = path_animation(codec, clip, 0, max_frames=4, dpi=40)
    path = save_gif(anim, tmp_path / "03_path.gif")
    with Image.open(path) as gif:
        assert gif.n_frames > 1
    assert "<script" in animation_html(path_animation(codec, clip, 1, max_frames=3, dpi=30))


def test_map_explorer_builds_headless_and_updates(codec, clip):
    explorer = map_explorer(codec, clip, 24000, alone_seconds=0.1)
    before = explorer.alone_player.value
    explorer.level_picker.value = 1
    explorer.row_slider.value, explorer.col_slider.value = 2, 3
    assert explorer.code == 2 * 8 + 3
    assert explorer.alone_player.value != before and explorer.context_player.value
    assert "code <b>19</b>" in explorer.info.value
    with pytest.raises(ValueError, match="sample_rate"):
        map_explorer(codec, clip, 16000)


# ----------------------------------------------------------------------------- image patches


def test_patch_extraction_shapes_and_round_trip():
    image = np.random.default_rng(0).random((10, 13, 3)).astype(np.float32)
    patches = extract_patches(image, 4)
    assert patches.shape == (2 * 3, 48)
    np.testing.assert_array_equal(patches[1], image[0:4, 4:8].reshape(-1))  # raster order, (row, col, ch)
    np.testing.assert_array_equal(patches_to_image(patches, (2, 3), 4), image[:8, :12])
    with pytest.raises(ValueError, match="image"):
        extract_patches(image[..., :2], 4)


def test_som_and_ema_patch_codebooks_beat_mean_colour(tmp_path):
    images = sklearn_images()
    patches = patch_dataset([image[::2, ::2] for image in images], 4)  # half resolution: faster, same content
    baseline = (mean_colour_baseline(patches) - patches).pow(2).mean().item()
    som = train_patch_vq(patches, codebook_size=64, som=True, steps=80, batch_size=1024)
    ema = train_patch_vq(patches, codebook_size=64, som=False, steps=80, batch_size=1024)
    for vq in (som, ema):
        recon, codes = quantize_patches(vq, patches)
        assert recon.shape == patches.shape and codes.shape == (patches.shape[0],)
        assert (recon - patches).pow(2).mean().item() < 0.15 * baseline
    som_row, ema_row = patch_metrics(som, patches, "SOM"), patch_metrics(ema, patches, "EMA")
    assert som_row["baseline_mse"] == pytest.approx(baseline)
    assert som_row["topographic_error"] < ema_row["topographic_error"]
    assert som_row["neighbour_distance_ratio"] < 0.6 < ema_row["neighbour_distance_ratio"]
    fig, ax = plt.subplots()
    plot_codebook_mosaic(ax, som)
    assert_not_blank(save_figure(fig, tmp_path / "03_patches_som.png", dpi=60))
    recon_fig = plot_reconstructions(images[0][:64, :64], {"SOM": som, "EMA": ema})
    assert_not_blank(save_figure(recon_fig, tmp_path / "03_patches_recon.png", dpi=60))
    plt.close("all")


def test_cifar_batch_loads_planes_and_refuses_code(tmp_path):
    data = np.zeros((2, 3072), dtype=np.uint8)
    data[0, :1024] = 255  # image 0: red plane full
    data[1, 2048:] = 7  # image 1: blue plane 7
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({b"data": data, b"labels": [0, 1]}, f)
    images = load_cifar_batch(path)
    assert images.shape == (2, 32, 32, 3) and images.dtype == np.uint8
    assert (images[0, ..., 0] == 255).all() and (images[0, ..., 1:] == 0).all()
    assert (images[1, ..., 2] == 7).all() and (images[1, ..., :2] == 0).all()

    class Evil:
        def __reduce__(self):
            return (print, ("this must not run",))

    with open(tmp_path / "data_batch_2", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(ValueError, match="not a CIFAR"):
        load_cifar_batch(tmp_path / "data_batch_2")
    with pytest.raises(ValueError, match="does not exist"):
        load_cifar_batch(tmp_path / "missing")
