"""A trained codec as a tool: the ``.vqc`` file format (``vqc``), entropy models of the codes and range coding
(``entropy``), and the command line ``python -m lib compress/decompress/info/fit-entropy`` (``cli``)."""
