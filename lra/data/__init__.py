"""Task data: each task turns its config and a data root into tokenised train/val/test splits.

``data_dir`` is one root laid out like the unpacked ``lra_release/lra_release`` folder (shared/specs/lra.md,
section 7); our generators write the same layout, so generated and official files go through the same reader.
"""

from lra.data.tasks import Split, Splits, load_splits

__all__ = ["Split", "Splits", "load_splits"]
