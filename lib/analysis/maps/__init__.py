"""Codebook maps, in three modules: `statistics` (clips, latents, codes, topography), `figures` (every plot and
the path animation) and `explorer` (the ipywidgets listening panel). Their public names, and the SOM grid
tooling of `lib.model.som` they build on, are re-exported here: `from lib.analysis import maps`, then
`maps.plot_usage_maps(...)`."""
from lib.analysis.maps.explorer import MapExplorer, explorer_html, map_explorer  # noqa: F401
from lib.analysis.maps.figures import (CORNER_COLOURS, PathArtists, SharedPaletteGifWriter,  # noqa: F401
                                       animation_html, band_edges, code_thumbnails, decode_alone, grid_colours,
                                       path_animation, path_segments, plot_code_mosaic, plot_path, plot_paths,
                                       plot_pca, plot_pca_comparison, plot_topography, plot_u_matrices, plot_usage,
                                       plot_usage_maps, save_gif, spectrogram_thumbnails, tile_mosaic)
from lib.analysis.maps.statistics import (code_counts, encoder_latents, fit_rvq, format_table,  # noqa: F401
                                          level_inputs, level_u_matrix, pick_clip, to_grid, topography_table,
                                          training_clips, utterance_codes)
from lib.model.som import grid_label, layout_grid, shuffled, topography  # noqa: F401
from lib.analysis.maps.grids import (fit_fsq, fsq_usage_image, jump_distances, jump_summary,  # noqa: F401
                                     plot_fsq_usage, plot_jumps, random_jump_distance)
