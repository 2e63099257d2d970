"""Image data: what a data set is (``spec``), its readers of real formats (``readers``), the disk cache of decoded
images (``cache``), the proxy subset and held-out split (``split``), loading (``load``) and what loading gives
(``sets``). Below ``training/`` and ``evaluators/``, which both read data through it; imports inside run one way:
spec <- readers <- cache <- split <- sets <- load.
"""
