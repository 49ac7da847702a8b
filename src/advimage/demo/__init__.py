"""advimage.demo: ``advimage demo``, the top floor beside the CLI.

Attacks the bundled digits model and writes an HTML report (:func:`run_demo`), then runs each
capability's section: the cache model (Orhan, 2018) and the noise-signature detector (Hu, Yu
et al., NeurIPS 2019). Sections import downward only (the defenses, detectors and the eval
harness); the runner lists them in :data:`SECTIONS`.
"""

from advimage.demo.context import DemoContext, Section
from advimage.demo.runner import SECTIONS, run_demo

__all__ = ["SECTIONS", "DemoContext", "Section", "run_demo"]
