"""The VM snapshot tree tool: who descends from whom, which snapshot is current.

A product tool beside the pipeline (``build.py tree``, ``python3 -m snaptree``), standard
library only; the code is in ``tree.py`` (the data, the tree, the text form, the CLI) and
``svg.py`` (the tree as a picture).
"""

from snaptree.svg import render_svg
from snaptree.tree import (
    CURRENT_MARK,
    Node,
    SnapTreeError,
    Tree,
    build,
    device_names,
    from_image,
    from_qmp_socket,
    load,
    main,
    qcow2_current,
    render,
    run,
)

__all__ = ["CURRENT_MARK", "Node", "SnapTreeError", "Tree", "build", "device_names",
           "from_image", "from_qmp_socket", "load", "main", "qcow2_current", "render",
           "render_svg", "run"]
