"""Pure image operations (numpy, OpenCV, scikit-image). No Kedro, no I/O.

Conventions: images are ``HxW`` (gray) or ``HxWx3`` (RGB) arrays, ``uint8`` 0..255 unless a
docstring says otherwise; label maps are ``HxW`` ``uint16`` with 0 for background and 1..N for
nuclei; binary masks are ``HxW`` ``uint8`` in {0, 1}.
"""
