"""A trained codec as a tool: the ``.vqc`` file format (``vqc``), entropy models of the codes and range coding
(``entropy``), a prior over codes as the payload's model (``prior_file``, ``prior_fit``, ``prior_coding``), and the
command line ``python -m lib compress/decompress/info/fit-entropy/fit-prior`` (``cli``)."""
