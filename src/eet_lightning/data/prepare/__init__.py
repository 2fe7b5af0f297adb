"""`eet-prepare`'s readers: one module per dataset turns its raw download into faces with labels, and
`common.run_prepare` aligns, writes and summarises them."""

from eet_lightning.data.prepare import cfd, disfa, folder, mmi, rafd
from eet_lightning.data.prepare.common import Options, PrepareError, Result, run_prepare

READERS = {
    "disfa": disfa.read,
    "rafd": rafd.read,
    "mmi": mmi.read,
    "cfd": cfd.read,
    "folder": folder.read,
}
# Datasets without AU labels of their own: --openface is required.
NEEDS_OPENFACE = frozenset({"rafd", "mmi", "cfd"})

__all__ = ["NEEDS_OPENFACE", "READERS", "Options", "PrepareError", "Result", "run_prepare"]
